//! The web dashboard and `/metrics`: a subscriber of the run's events, served over HTTP on
//! loopback (`dagstart run --dashboard 127.0.0.1:PORT`).
//!
//! `/` is a self-contained page: the DAG coloured by state, a Gantt chart filling in as nodes
//! start, each node's recent lines. Updates are pushed over server-sent events (`/events`,
//! which first replays the run so far). `/metrics` is the Prometheus text format. With a
//! token, `POST /action` starts, stops or restarts a node, or reloads, from the page. Who may
//! ask is [`crate::views::dashboard_access`]'s to decide.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::{Value, json};

use crate::engine::control::{ReloadSource, Request};
use crate::engine::event::EventKind;
use crate::engine::lifecycle::Control;
use crate::engine::record::EventRecord;
use crate::views::dag_layout::{LayoutNode, layout};
use crate::views::dashboard_access::{Access, Guard, guard, same_origin};
use tokio::sync::broadcast;
use tokio_stream::StreamExt as _;

const PAGE: &str = include_str!("dashboard.html");
/// Recent output lines kept per node for the page.
const LINES: usize = 30;
/// Events kept for replay after startup; those of the startup itself are all kept (a few per
/// node), so the Gantt chart is whole however long the run goes on restarting.
const LATER_EVENTS: usize = 2000;

/// Binds the dashboard's address and says where it is.
pub async fn bind(
    address: std::net::SocketAddr,
    note: &str,
) -> Result<tokio::net::TcpListener, crate::Error> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| crate::Error::io(format!("binding the dashboard to {address}"), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| crate::Error::io("the dashboard address", e))?;
    eprintln!("dagstart: dashboard on http://{bound}/ ({note})");
    Ok(listener)
}

/// What the dashboard knows, built only from events.
#[derive(Debug, Default)]
struct View {
    /// The startup's events but output lines (those are in `lines`), for replay.
    events: Vec<EventRecord>,
    /// The latest events since startup ended, for replay.
    later: VecDeque<EventRecord>,
    startup_over: bool,
    lines: BTreeMap<String, VecDeque<EventRecord>>,
    states: BTreeMap<String, String>,
    ready_seconds: BTreeMap<String, f64>,
    restarts: BTreeMap<String, u64>,
    startup_seconds: Option<f64>,
}

impl View {
    /// Keeps an event for replay: all of the startup's, then a ring of the latest.
    fn keep(&mut self, event: &EventRecord) {
        if !self.startup_over {
            return self.events.push(event.clone());
        }
        if self.later.len() == LATER_EVENTS {
            self.later.pop_front();
        }
        self.later.push_back(event.clone());
    }
}

#[derive(Debug)]
pub struct Dashboard {
    view: Mutex<View>,
    live: broadcast::Sender<String>,
    graph: Value,
    /// Where the run records are, for the startup history (`/history`).
    project_dir: Option<std::path::PathBuf>,
}

/// Runs shown in the startup history.
const HISTORY: usize = 20;

/// What the page's actions are sent to: the running scheduler, as the control socket's
/// requests are.
#[derive(Debug, Clone)]
pub struct Steering {
    pub control: tokio::sync::mpsc::UnboundedSender<Control>,
    pub source: ReloadSource,
}

/// A node as the page draws it.
#[derive(Debug, Serialize)]
struct PageNode {
    name: String,
    kind: String,
    depends_on: Vec<PageEdge>,
    /// In a cluster run: the host it runs on.
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
}

/// An edge as the page draws it: dashed when optional, marked when it restarts or is a
/// milestone.
#[derive(Debug, Serialize)]
struct PageEdge {
    name: String,
    condition: String,
    required: bool,
    restart: bool,
    milestone: bool,
}

/// What the routes share.
#[derive(Debug)]
struct Served {
    dashboard: Arc<Dashboard>,
    /// Present only with a token: without one nobody may act.
    steering: Option<Steering>,
}

impl Dashboard {
    /// A dashboard for `config` (its DAG is served as `/graph`).
    pub fn new(config: &crate::engine::config::Config, selected: &[bool]) -> Arc<Self> {
        let nodes: Vec<PageNode> = config
            .nodes
            .iter()
            .enumerate()
            .zip(selected)
            .filter(|(_, on)| **on)
            .map(|((i, n), _)| PageNode {
                name: n.name.clone(),
                kind: n.kind.as_str().to_owned(),
                host: config.host_of(i).map(str::to_owned),
                depends_on: n
                    .depends_on
                    .iter()
                    .filter(|d| selected[d.node])
                    .map(|d| PageEdge {
                        name: d.name.clone(),
                        condition: d.condition.as_str().to_owned(),
                        required: d.required,
                        restart: d.restart,
                        milestone: d.milestone,
                    })
                    .collect(),
            })
            .collect();
        Self::with_nodes(&nodes, Some(config.base_dir.clone()))
    }

    /// The nodes placed by [`crate::views::dag_layout`], for the page.
    fn with_nodes(nodes: &[PageNode], project_dir: Option<std::path::PathBuf>) -> Arc<Self> {
        let index: BTreeMap<&str, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.as_str(), i))
            .collect();
        let for_layout: Vec<LayoutNode> = nodes
            .iter()
            .map(|n| LayoutNode {
                name: n.name.clone(),
                depends_on: n
                    .depends_on
                    .iter()
                    .filter_map(|d| index.get(d.name.as_str()).copied())
                    .collect(),
            })
            .collect();
        let (places, _) = layout(&for_layout);
        let served: Vec<Value> = nodes
            .iter()
            .zip(&places)
            .map(|(n, place)| {
                let mut v = json!(n);
                v["layer"] = json!(place.layer);
                v["row"] = json!(place.row);
                v
            })
            .collect();
        let (live, _) = broadcast::channel(4096);
        Arc::new(Self {
            view: Mutex::default(),
            live,
            graph: json!({ "nodes": served }),
            project_dir,
        })
    }

    /// The same page for a finished run from the history.
    pub fn from_record(record: &crate::views::history::RunRecord) -> Arc<Self> {
        let nodes: Vec<PageNode> = record
            .nodes
            .iter()
            .map(|n| PageNode {
                name: n.name.clone(),
                kind: n.kind.clone(),
                host: None,
                depends_on: n
                    .depends_on
                    .iter()
                    .map(|(d, condition)| PageEdge {
                        name: d.clone(),
                        condition: condition.clone(),
                        // Records keep conditions only: drawn as plain edges.
                        required: true,
                        restart: false,
                        milestone: false,
                    })
                    .collect(),
            })
            .collect();
        let dashboard = Self::with_nodes(&nodes, None);
        for event in &record.events {
            dashboard.observe(event);
        }
        dashboard
    }

    /// Takes in one event.
    pub fn observe(&self, event: &EventRecord) {
        let mut view = self.view.lock().unwrap_or_else(PoisonError::into_inner);
        match (&event.kind, &event.node) {
            (EventKind::Output { .. }, Some(node)) => {
                let lines = view.lines.entry(node.clone()).or_default();
                if lines.len() == LINES {
                    lines.pop_front();
                }
                lines.push_back(event.clone());
            }
            (kind, Some(node)) => {
                // The core's own state name; records of older runs only have the kind.
                let state = event.state.as_deref().or_else(|| state_after(kind));
                if let Some(state) = state {
                    view.states.insert(node.clone(), state.to_owned());
                }
                if let EventKind::Ready { took, .. } = kind {
                    view.ready_seconds.insert(node.clone(), took.as_secs_f64());
                }
                if let EventKind::Restarting { .. } = kind {
                    *view.restarts.entry(node.clone()).or_default() += 1;
                }
                view.keep(event);
            }
            (EventKind::StartupComplete(summary), None) => {
                view.startup_seconds = Some(summary.ready_after.as_secs_f64());
                view.keep(event);
                view.startup_over = true;
            }
            (EventKind::StartupFailed { .. }, None) => {
                view.keep(event);
                view.startup_over = true;
            }
            _ => view.keep(event),
        }
        drop(view);
        let _ = self.live.send(event.to_json());
    }

    /// Serves the page, `/events`, `/graph`, `/metrics` (and `/action` with a token and a
    /// run to steer) behind `access`, until the runtime ends.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        access: Access,
        steering: Option<Steering>,
    ) {
        let Ok(bound) = listener.local_addr() else {
            return;
        };
        let steering = steering.filter(|_| access.token.is_some());
        let served = Arc::new(Served {
            dashboard: self,
            steering,
        });
        let guard_state = Arc::new(Guard { access, bound });
        let app = Router::new()
            .route("/", get(|| async { Html(PAGE) }))
            .route("/graph", get(graph))
            .route("/metrics", get(metrics))
            .route("/events", get(events))
            .route("/action", post(action))
            .route("/history", get(history))
            .with_state(served)
            .layer(axum::middleware::from_fn_with_state(guard_state, guard));
        let _ = axum::serve(listener, app).await;
    }

    fn replay(&self) -> Vec<String> {
        let view = self.view.lock().unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<&EventRecord> = view
            .events
            .iter()
            .chain(&view.later)
            .chain(view.lines.values().flatten())
            .collect();
        all.sort_by(|a, b| a.t.total_cmp(&b.t));
        all.into_iter().map(EventRecord::to_json).collect()
    }
}

/// The state a node is in after an event of this kind, for records written before events
/// carried the state.
fn state_after(kind: &EventKind) -> Option<&'static str> {
    Some(match kind {
        EventKind::Launched | EventKind::Spawned { .. } => "starting",
        EventKind::Ready { .. } => "ready",
        EventKind::Failed { .. } => "failed",
        EventKind::Skipped { .. } => "skipped",
        EventKind::Exited { .. } => "exited",
        EventKind::Restarting { .. } => "restarting",
        EventKind::Stopping => "stopping",
        EventKind::Stopped { .. } => "stopped",
        _ => return None,
    })
}

/// The DAG, and whether the page may offer actions.
async fn graph(State(served): State<Arc<Served>>) -> impl IntoResponse {
    let mut graph = served.dashboard.graph.clone();
    graph["actions"] = json!(served.steering.is_some());
    (
        [(header::CONTENT_TYPE, "application/json")],
        graph.to_string(),
    )
}

/// The startup of the last runs recorded in `.dagstart/runs` (this one included, once ready).
async fn history(State(served): State<Arc<Served>>) -> impl IntoResponse {
    let dir = served.dashboard.project_dir.clone();
    let runs = tokio::task::spawn_blocking(move || {
        dir.map(|d| crate::views::history::startups(&d, HISTORY))
            .unwrap_or_default()
    })
    .await
    .unwrap_or_default();
    (
        [(header::CONTENT_TYPE, "application/json")],
        Value::from(runs).to_string(),
    )
}

/// `POST /action` `{"action": "start|stop|restart|reload", "node": NAME}` from the page.
async fn action(
    State(served): State<Arc<Served>>,
    headers: HeaderMap,
    body: String,
) -> impl IntoResponse {
    let Some(steering) = &served.steering else {
        let why = "actions need a dashboard token (--dashboard-token)\n";
        return (StatusCode::NOT_FOUND, why.to_owned());
    };
    if !same_origin(&headers) {
        let why = "an action must come from the dashboard's own page (Origin)\n";
        return (StatusCode::FORBIDDEN, why.to_owned());
    }
    let asked: Value = serde_json::from_str(&body).unwrap_or_default();
    let nodes = || vec![asked["node"].as_str().unwrap_or_default().to_owned()];
    let request = match asked["action"].as_str() {
        Some("start") => Request::Start { nodes: nodes() },
        Some("stop") => Request::Stop { nodes: nodes() },
        Some("restart") => Request::Restart { nodes: nodes() },
        Some("reload") => Request::Reload,
        _ => {
            let why = "the action is one of start, stop, restart, reload\n";
            return (StatusCode::BAD_REQUEST, why.to_owned());
        }
    };
    let response =
        crate::engine::control::handle(request, &steering.control, &steering.source).await;
    let status = if response.ok {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    let text = json!({ "ok": response.ok, "message": response.message }).to_string();
    (status, text)
}

/// The run so far, then every event as it happens. `?once` ends the stream after the replay:
/// a snapshot, for clients that cannot hold a connection open (headless screenshots).
async fn events(State(served): State<Arc<Served>>, uri: axum::http::Uri) -> impl IntoResponse {
    let dashboard = &served.dashboard;
    let once = uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "once"));
    // Subscribe before the replay, so nothing falls between the two.
    let live = tokio_stream::wrappers::BroadcastStream::new(dashboard.live.subscribe());
    let replay = tokio_stream::iter(dashboard.replay()).map(Ok::<_, std::convert::Infallible>);
    let live = live.filter_map(|item| item.ok()).map(Ok);
    let stream: std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<String, std::convert::Infallible>> + Send>,
    > = if once {
        Box::pin(replay)
    } else {
        Box::pin(replay.chain(live))
    };
    let stream = stream.map(|data| data.map(|d| SseEvent::default().data(d)));
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn metrics(State(served): State<Arc<Served>>) -> impl IntoResponse {
    let view = served
        .dashboard
        .view
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let mut out = String::new();
    out.push_str("# HELP dagstart_node_state The state of each node (1 for its current state).\n# TYPE dagstart_node_state gauge\n");
    for (node, state) in &view.states {
        out.push_str(&format!(
            "dagstart_node_state{{node=\"{node}\",state=\"{state}\"}} 1\n"
        ));
    }
    out.push_str("# HELP dagstart_node_ready_seconds Time from spawn to ready of each node.\n# TYPE dagstart_node_ready_seconds gauge\n");
    for (node, seconds) in &view.ready_seconds {
        out.push_str(&format!(
            "dagstart_node_ready_seconds{{node=\"{node}\"}} {seconds}\n"
        ));
    }
    out.push_str("# HELP dagstart_node_restarts_total Restarts of each node.\n# TYPE dagstart_node_restarts_total counter\n");
    for node in view.states.keys() {
        out.push_str(&format!(
            "dagstart_node_restarts_total{{node=\"{node}\"}} {}\n",
            view.restarts.get(node).copied().unwrap_or(0)
        ));
    }
    out.push_str("# HELP dagstart_startup_seconds Time from the start of the run to ready.\n# TYPE dagstart_startup_seconds gauge\n");
    if let Some(seconds) = view.startup_seconds {
        out.push_str(&format!("dagstart_startup_seconds {seconds}\n"));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
