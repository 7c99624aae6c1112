//! A small etcd v3 client over etcd's JSON gateway (`POST /v3/kv/range` and friends, the same
//! API as gRPC with JSON bodies: keys and values in base64, 64-bit numbers as strings).
//!
//! Why not the `etcd-client` crate: it compiles etcd's protobuf files at build time and needs
//! `protoc`, so `cargo run` would no longer work on a machine with only the Rust toolchain.
//! The gateway is served on every etcd client port (3.4 and later), and the handful of calls a
//! run needs (range, put, transactions, leases, one watch stream) fit in this file.
//!
//! Every call tries the endpoints in turn, starting with the one that answered last; an error
//! that names every endpoint tried is returned only when none answered.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::{Value, json};

/// How long one call may take on one endpoint before the next is tried.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// What went wrong talking to etcd.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EtcdError {
    /// No endpoint answered: each with why.
    #[error("no etcd endpoint answered ({})", tried.iter().map(|(e, why)| format!("{e}: {why}")).collect::<Vec<_>>().join("; "))]
    Unreachable { tried: Vec<(String, String)> },
    /// An endpoint answered with an error (no quorum, a lease that expired, ...).
    #[error("etcd refused: {0}")]
    Refused(String),
    /// An answer that is not what the API documents.
    #[error("etcd answered something unexpected: {0}")]
    Malformed(String),
}

/// One key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub lease: i64,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put(Kv),
    Delete { key: String, revision: i64 },
}

/// One message of a watch stream.
#[derive(Debug)]
pub enum WatchMessage {
    Events(Vec<WatchEvent>),
    /// The revision asked for was compacted away: list again.
    Compacted,
}

/// An etcd client: the endpoints and the HTTP connection pool.
#[derive(Debug)]
pub struct Etcd {
    http: reqwest::Client,
    endpoints: Vec<String>,
    /// The endpoint that answered last: tried first.
    preferred: AtomicUsize,
}

impl Etcd {
    pub fn new(endpoints: Vec<String>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .build()
            .unwrap_or_default();
        let endpoints = endpoints
            .into_iter()
            .map(|e| e.trim_end_matches('/').to_owned())
            .collect();
        Self {
            http,
            endpoints,
            preferred: AtomicUsize::new(0),
        }
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The endpoints in the order to try them: the last that answered first.
    fn order(&self) -> impl Iterator<Item = usize> + '_ {
        let first = self.preferred.load(Ordering::Relaxed);
        (0..self.endpoints.len()).map(move |i| (first + i) % self.endpoints.len())
    }

    /// One unary call: `path` with a JSON body, on the first endpoint that answers.
    async fn call(&self, path: &str, body: &Value) -> Result<Value, EtcdError> {
        let body = body.to_string();
        let mut tried = Vec::new();
        for i in self.order() {
            let endpoint = &self.endpoints[i];
            let sent = self
                .http
                .post(format!("{endpoint}{path}"))
                .timeout(CALL_TIMEOUT)
                .body(body.clone())
                .send()
                .await;
            let answer = match sent {
                Ok(response) => {
                    let status = response.status();
                    match response.bytes().await {
                        Ok(bytes) => (status, bytes),
                        Err(e) => {
                            tried.push((endpoint.clone(), short(&e)));
                            continue;
                        }
                    }
                }
                Err(e) => {
                    tried.push((endpoint.clone(), short(&e)));
                    continue;
                }
            };
            let (status, bytes) = answer;
            let value: Value = serde_json::from_slice(&bytes)
                .map_err(|e| EtcdError::Malformed(format!("{path}: {e}")))?;
            if status.is_success() {
                self.preferred.store(i, Ordering::Relaxed);
                return Ok(value);
            }
            let message = error_message(&value);
            // A member without a leader (cut off from its peers) cannot answer; another may.
            if status.is_server_error() {
                tried.push((endpoint.clone(), message));
                continue;
            }
            return Err(EtcdError::Refused(message));
        }
        Err(EtcdError::Unreachable { tried })
    }

    /// Every key under `prefix`, and the store's revision they were read at.
    pub async fn range_prefix(&self, prefix: &str) -> Result<(Vec<Kv>, i64), EtcdError> {
        let answer = self
            .call(
                "/v3/kv/range",
                &json!({ "key": b64(prefix), "range_end": b64_bytes(&prefix_end(prefix)) }),
            )
            .await?;
        Ok((kvs(&answer)?, header_revision(&answer)))
    }

    /// The key, if it exists.
    pub async fn get(&self, key: &str) -> Result<Option<Kv>, EtcdError> {
        let answer = self
            .call("/v3/kv/range", &json!({ "key": b64(key) }))
            .await?;
        Ok(kvs(&answer)?.into_iter().next())
    }

    /// Writes `key`; with a lease, the key goes when the lease does.
    pub async fn put(&self, key: &str, value: &[u8], lease: Option<i64>) -> Result<(), EtcdError> {
        let mut body = json!({ "key": b64(key), "value": b64_bytes(value) });
        if let Some(lease) = lease {
            body["lease"] = json!(lease.to_string());
        }
        self.call("/v3/kv/put", &body).await.map(drop)
    }

    pub async fn delete(&self, key: &str) -> Result<(), EtcdError> {
        self.call("/v3/kv/deleterange", &json!({ "key": b64(key) }))
            .await
            .map(drop)
    }

    /// Writes `key` only if it does not exist; otherwise returns what is there.
    pub async fn create(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<i64>,
    ) -> Result<Result<(), Kv>, EtcdError> {
        let mut put = json!({ "key": b64(key), "value": b64_bytes(value) });
        if let Some(lease) = lease {
            put["lease"] = json!(lease.to_string());
        }
        let answer = self
            .call(
                "/v3/kv/txn",
                &json!({
                    "compare": [{ "key": b64(key), "result": "EQUAL", "target": "CREATE", "create_revision": "0" }],
                    "success": [{ "request_put": put }],
                    "failure": [{ "request_range": { "key": b64(key) } }],
                }),
            )
            .await?;
        if answer.get("succeeded").and_then(Value::as_bool) == Some(true) {
            return Ok(Ok(()));
        }
        let range = answer
            .pointer("/responses/0/response_range")
            .cloned()
            .unwrap_or(Value::Null);
        match kvs(&range)?.into_iter().next() {
            Some(kv) => Ok(Err(kv)),
            // Deleted between the compare and the read: try again.
            None => Box::pin(self.create(key, value, lease)).await,
        }
    }

    /// Writes `key` only while `guard` still has create revision `revision` (a leader's write:
    /// it lands only if the writer still leads). False when the guard no longer holds.
    pub async fn put_guarded(
        &self,
        guard: &str,
        revision: i64,
        key: &str,
        value: &[u8],
    ) -> Result<bool, EtcdError> {
        let answer = self
            .call(
                "/v3/kv/txn",
                &json!({
                    "compare": [{ "key": b64(guard), "result": "EQUAL", "target": "CREATE", "create_revision": revision.to_string() }],
                    "success": [{ "request_put": { "key": b64(key), "value": b64_bytes(value) } }],
                }),
            )
            .await?;
        Ok(answer.get("succeeded").and_then(Value::as_bool) == Some(true))
    }

    /// A new lease of `ttl` (whole seconds).
    pub async fn grant(&self, ttl: Duration) -> Result<i64, EtcdError> {
        let answer = self
            .call(
                "/v3/lease/grant",
                &json!({ "TTL": ttl.as_secs().to_string() }),
            )
            .await?;
        int(answer.get("ID"))
            .ok_or_else(|| EtcdError::Malformed("lease grant without an ID".into()))
    }

    /// Renews the lease; false when it has expired (its keys are gone).
    pub async fn keep_alive(&self, lease: i64) -> Result<bool, EtcdError> {
        let answer = self
            .call("/v3/lease/keepalive", &json!({ "ID": lease.to_string() }))
            .await?;
        let ttl = answer.get("result").and_then(|r| int(r.get("TTL")));
        Ok(ttl.unwrap_or(0) > 0)
    }

    /// Ends the lease now: its keys are deleted at once.
    pub async fn revoke(&self, lease: i64) -> Result<(), EtcdError> {
        self.call("/v3/lease/revoke", &json!({ "ID": lease.to_string() }))
            .await
            .map(drop)
    }

    /// Watches every key under `prefix` from `revision` on. The stream ends (an error or
    /// `None`) when the connection does; the caller lists again and watches from there.
    pub async fn watch_prefix(&self, prefix: &str, revision: i64) -> Result<Watch, EtcdError> {
        let body = json!({ "create_request": {
            "key": b64(prefix),
            "range_end": b64_bytes(&prefix_end(prefix)),
            "start_revision": revision.to_string(),
        }})
        .to_string();
        let mut tried = Vec::new();
        for i in self.order() {
            let endpoint = &self.endpoints[i];
            match self
                .http
                .post(format!("{endpoint}/v3/watch"))
                .body(body.clone())
                .send()
                .await
            {
                Ok(response) if response.status().is_success() => {
                    return Ok(Watch {
                        response,
                        buffer: Vec::new(),
                    });
                }
                Ok(response) => tried.push((endpoint.clone(), response.status().to_string())),
                Err(e) => tried.push((endpoint.clone(), short(&e))),
            }
        }
        Err(EtcdError::Unreachable { tried })
    }
}

/// An open watch: newline-separated JSON messages on one HTTP response.
#[derive(Debug)]
pub struct Watch {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl Watch {
    /// The next message; `None` when the stream ended.
    pub async fn next(&mut self) -> Result<Option<WatchMessage>, EtcdError> {
        loop {
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let value: Value = serde_json::from_slice(&line)
                    .map_err(|e| EtcdError::Malformed(format!("watch: {e}")))?;
                if let Some(message) = watch_message(&value)? {
                    return Ok(Some(message));
                }
                continue;
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk),
                Ok(None) => return Ok(None),
                Err(e) => return Err(EtcdError::Refused(short(&e))),
            }
        }
    }
}

fn watch_message(value: &Value) -> Result<Option<WatchMessage>, EtcdError> {
    if let Some(error) = value.get("error") {
        return Err(EtcdError::Refused(error_message(error)));
    }
    let Some(result) = value.get("result") else {
        return Ok(None);
    };
    if int(result.get("compact_revision")).unwrap_or(0) > 0 {
        return Ok(Some(WatchMessage::Compacted));
    }
    if result.get("canceled").and_then(Value::as_bool) == Some(true) {
        return Err(EtcdError::Refused("the watch was canceled".into()));
    }
    let Some(events) = result.get("events").and_then(Value::as_array) else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        let kv = event
            .get("kv")
            .map(kv)
            .transpose()?
            .ok_or_else(|| EtcdError::Malformed("a watch event without a key".into()))?;
        if event.get("type").and_then(Value::as_str) == Some("DELETE") {
            out.push(WatchEvent::Delete {
                key: kv.key,
                revision: kv.mod_revision,
            });
        } else {
            out.push(WatchEvent::Put(kv));
        }
    }
    Ok(Some(WatchMessage::Events(out)))
}

/// The first line of an error, without the URL reqwest puts in it.
fn short(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "connection refused or unreachable".to_owned()
    } else {
        error.to_string()
    };
    text.truncate(200);
    text
}

fn error_message(value: &Value) -> String {
    ["message", "error"]
        .iter()
        .find_map(|k| value.get(k).and_then(Value::as_str))
        .map_or_else(|| value.to_string(), str::to_owned)
}

fn b64(text: &str) -> String {
    B64.encode(text.as_bytes())
}

fn b64_bytes(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// The end of the range of keys that start with `prefix` (etcd's `range_end`).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A 64-bit number, which the gateway writes as a string.
fn int(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

fn header_revision(answer: &Value) -> i64 {
    int(answer.pointer("/header/revision")).unwrap_or(0)
}

fn kvs(answer: &Value) -> Result<Vec<Kv>, EtcdError> {
    match answer.get("kvs").and_then(Value::as_array) {
        Some(items) => items.iter().map(kv).collect(),
        None => Ok(Vec::new()),
    }
}

#[derive(Deserialize)]
struct RawKv {
    key: String,
    #[serde(default)]
    value: String,
}

fn kv(value: &Value) -> Result<Kv, EtcdError> {
    let raw: RawKv = serde_json::from_value(value.clone())
        .map_err(|e| EtcdError::Malformed(format!("a key: {e}")))?;
    let decode = |s: &str| {
        B64.decode(s)
            .map_err(|e| EtcdError::Malformed(format!("base64: {e}")))
    };
    let key = String::from_utf8_lossy(&decode(&raw.key)?).into_owned();
    Ok(Kv {
        key,
        value: decode(&raw.value)?,
        create_revision: int(value.get("create_revision")).unwrap_or(0),
        mod_revision: int(value.get("mod_revision")).unwrap_or(0),
        lease: int(value.get("lease")).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_at_the_next_byte() {
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(""), vec![0]);
    }

    #[test]
    fn watch_messages_are_read_as_the_gateway_writes_them() {
        let put = json!({"result": {"header": {"revision": "5"}, "events": [
            {"kv": {"key": b64("/k"), "value": b64("v"), "create_revision": "3", "mod_revision": "5"}},
            {"type": "DELETE", "kv": {"key": b64("/j"), "mod_revision": "5"}}
        ]}});
        let Some(WatchMessage::Events(events)) = watch_message(&put).unwrap() else {
            panic!("events expected");
        };
        assert!(
            matches!(&events[0], WatchEvent::Put(kv) if kv.key == "/k" && kv.value == b"v" && kv.mod_revision == 5)
        );
        assert!(matches!(&events[1], WatchEvent::Delete { key, revision: 5 } if key == "/j"));
        let compacted = json!({"result": {"compact_revision": "9", "canceled": true}});
        assert!(matches!(
            watch_message(&compacted).unwrap(),
            Some(WatchMessage::Compacted)
        ));
        let created = json!({"result": {"header": {}, "created": true}});
        assert!(watch_message(&created).unwrap().is_none());
    }
}
