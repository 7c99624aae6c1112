//! Who may see and steer the dashboard: the `Host` header, the token, the origin of actions.
//!
//! Services print secrets, so the page, `/events` and `/metrics` are as private as the logs:
//! - every request must name the dashboard in its `Host` header (the bound address,
//!   `localhost` for a loopback bind, or a name given with `--dashboard-host`), so a web page
//!   elsewhere cannot reach it through a name it points at 127.0.0.1 (DNS rebinding);
//! - with a token, every request must carry it: `Authorization: Bearer TOKEN` (Prometheus), a
//!   `?token=` on the page's address (which sets a same-site cookie for what the page then
//!   fetches), or that cookie;
//! - actions (`POST /action`) exist only with a token, and only from the dashboard's own page
//!   (`Origin`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The cookie the page's own requests carry the token in.
const COOKIE: &str = "dagstart_token";

/// The dashboard's access rules.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Every request must carry it; actions exist only with one.
    pub token: Option<String>,
    /// Host names accepted besides the bound address (and `localhost` on loopback).
    pub hosts: Vec<String>,
}

/// Why a bind is refused before anything is served.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("the dashboard on {address} would be open to the network without a token")]
#[diagnostic(
    code(dagstart::dashboard::open),
    help(
        "give it a token (--dashboard-token or DAGSTART_DASHBOARD_TOKEN), bind it to 127.0.0.1, or pass --dashboard-public if anyone who can reach {address} may read every line the services print"
    )
)]
pub struct OpenToTheNetwork {
    pub address: SocketAddr,
}

impl Access {
    /// Refuses a non-loopback address without a token, unless `public` says it is meant.
    pub fn check_bind(&self, address: SocketAddr, public: bool) -> Result<(), OpenToTheNetwork> {
        if address.ip().is_loopback() || self.token.is_some() || public {
            Ok(())
        } else {
            Err(OpenToTheNetwork { address })
        }
    }
}

/// What the guard needs: the rules and where the dashboard is bound.
#[derive(Debug, Clone)]
pub struct Guard {
    pub access: Access,
    pub bound: SocketAddr,
}

impl Guard {
    /// Whether the `Host` header names this dashboard. For an address bound to all interfaces
    /// any IP literal names it (a rebinding attack needs a name).
    fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host);
        if self
            .access
            .hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name))
        {
            return true;
        }
        let bound = self.bound.ip();
        if bound.is_loopback() && name.eq_ignore_ascii_case("localhost") {
            return true;
        }
        match name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(ip) => ip == bound || bound.is_unspecified(),
            Err(_) => false,
        }
    }

    /// The token the request carries, if any: bearer header, `?token=`, or the cookie.
    fn offered<'r>(request: &'r Request) -> Option<std::borrow::Cow<'r, str>> {
        let headers = request.headers();
        if let Some(bearer) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        {
            return Some(bearer.trim().into());
        }
        if let Some(token) = query_token(request.uri().query()) {
            return Some(token);
        }
        cookie(headers).map(Into::into)
    }
}

/// `host:port` or `[v6]:port` without the port.
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..=h.len()]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

fn query_token(query: Option<&str>) -> Option<std::borrow::Cow<'_, str>> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .map(percent_decode)
}

fn percent_decode(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains('%') && !text.contains('+') {
        return text.into();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned().into()
}

fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// Equal in time independent of where they differ: a token must not leak by timing.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = u8::from(a.len() != b.len());
    for (x, y) in a.iter().zip(b.iter().cycle()) {
        diff |= x ^ y;
    }
    diff == 0
}

/// The middleware in front of every route: Host, then token; a page opened with `?token=`
/// gets the cookie its own requests then carry.
pub async fn guard(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if !guard.host_allowed(&host) {
        let text = format!(
            "dagstart: the Host `{host}` is not this dashboard's address ({}); a name of your own can be allowed with --dashboard-host\n",
            guard.bound
        );
        return (StatusCode::FORBIDDEN, text).into_response();
    }
    let Some(token) = &guard.access.token else {
        return next.run(request).await;
    };
    let offered = Guard::offered(&request).map(std::borrow::Cow::into_owned);
    if !offered.as_deref().is_some_and(|o| same_secret(o, token)) {
        let mut response = (
            StatusCode::UNAUTHORIZED,
            "dagstart: this dashboard needs its token: open it as /?token=TOKEN, or send Authorization: Bearer TOKEN\n",
        )
            .into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    let from_query = query_token(request.uri().query()).is_some();
    let mut response = next.run(request).await;
    if from_query {
        let cookie = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
    }
    response
}

/// Whether a request that changes something comes from the dashboard's own page: its
/// `Origin` is `http://` + the `Host` it was sent to (browsers always send it with a POST).
pub fn same_origin(headers: &HeaderMap) -> bool {
    let get = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    match (get(header::ORIGIN), get(header::HOST)) {
        (Some(origin), Some(host)) => origin == format!("http://{host}"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(bound: &str, hosts: &[&str]) -> Guard {
        Guard {
            access: Access {
                token: None,
                hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            },
            bound: bound.parse().unwrap(),
        }
    }

    #[test]
    fn the_host_must_name_the_dashboard() {
        let g = guard("127.0.0.1:8080", &["dash.internal"]);
        for ok in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "localhost:8080",
            "LOCALHOST",
            "dash.internal:8080",
        ] {
            assert!(g.host_allowed(ok), "{ok}");
        }
        for refused in [
            "evil.example:8080",
            "",
            "10.0.0.1:8080",
            "localhost.evil.example",
        ] {
            assert!(!g.host_allowed(refused), "{refused}");
        }
        let all = guard("0.0.0.0:8080", &[]);
        assert!(all.host_allowed("192.168.1.5:8080"));
        assert!(!all.host_allowed("localhost:8080"), "not a loopback bind");
        assert!(!all.host_allowed("rebind.example:8080"));
        let v6 = guard("[::1]:8080", &[]);
        assert!(v6.host_allowed("[::1]:8080") && v6.host_allowed("localhost"));
    }

    #[test]
    fn a_non_loopback_bind_needs_a_token_or_public() {
        let open = Access::default();
        let any: SocketAddr = "0.0.0.0:80".parse().unwrap();
        assert!(open.check_bind(any, false).is_err());
        assert!(open.check_bind(any, true).is_ok());
        assert!(
            open.check_bind("127.0.0.1:80".parse().unwrap(), false)
                .is_ok()
        );
        let with_token = Access {
            token: Some("t".into()),
            hosts: Vec::new(),
        };
        assert!(with_token.check_bind(any, false).is_ok());
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
        assert!(!same_secret("", "a"));
        assert_eq!(percent_decode("a%2Bb+c"), "a+b c");
    }

    #[test]
    fn actions_come_from_the_page_itself() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(!same_origin(&headers), "no Origin");
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(!same_origin(&headers));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_origin(&headers));
    }
}
