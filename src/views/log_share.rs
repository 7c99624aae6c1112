//! Serves this host's node logs to the other hosts of a cluster, for `dagstart logs` there:
//! `GET /logs/NODE?lines=N` answers the last lines of `<log_dir>/NODE.log` (stamps kept, so
//! that lines of several hosts merge by time), `?from=OFFSET` the lines written since (for
//! `logs -f`). The address and a token drawn for this run are published in etcd with the
//! host's key ([`LogShare`]): whoever may read the run's keys may read its logs, nobody else.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;

use crate::engine::cluster::{LogShare, remote_logs};

/// The most lines one request is answered with.
const MOST_LINES: usize = 10_000;

struct Shared {
    log_dir: PathBuf,
    nodes: Vec<String>,
    token: String,
}

/// Binds `address` (port chosen by the system) and serves the logs of `nodes` until the run
/// ends; what to publish about it.
pub async fn serve(
    address: IpAddr,
    log_dir: PathBuf,
    nodes: Vec<String>,
) -> std::io::Result<LogShare> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(address, 0)).await?;
    let bound = listener.local_addr()?;
    let token = random_token()?;
    let shared = Arc::new(Shared {
        log_dir,
        nodes,
        token: token.clone(),
    });
    let app = axum::Router::new()
        .route("/logs/{node}", get(lines))
        .with_state(shared);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(LogShare {
        url: format!("http://{bound}"),
        token,
    })
}

/// `?lines=N` (the last N lines, 100 by default) or `?from=OFFSET` (the whole lines written
/// after byte OFFSET).
async fn lines(
    State(shared): State<Arc<Shared>>,
    Path(node): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !crate::views::dashboard_access::same_secret(given, &shared.token) {
        return (StatusCode::UNAUTHORIZED, "a token is needed").into_response();
    }
    if !shared.nodes.contains(&node) {
        return (StatusCode::NOT_FOUND, format!("no node `{node}` here")).into_response();
    }
    let query = query.unwrap_or_default();
    let parameter = |name: &str| -> Option<u64> {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            .and_then(|n| n.parse().ok())
    };
    let path = shared.log_dir.join(format!("{node}.log"));
    let read = match parameter("from") {
        Some(offset) => {
            tokio::task::spawn_blocking(move || crate::views::logfiles::lines_since(&path, offset))
        }
        None => {
            let count = parameter("lines")
                .map_or(100, |n| n as usize)
                .min(MOST_LINES);
            tokio::task::spawn_blocking(move || crate::views::logfiles::last_lines(&path, count))
        }
    };
    match read.await {
        Ok((lines, end)) => (
            StatusCode::OK,
            [(remote_logs::END_HEADER, end.to_string())],
            lines.join("\n"),
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "reading the log failed").into_response(),
    }
}

/// 128 random bits, in hex.
fn random_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
