//! Request handling: routing, the order of checks on a webhook (auth headers → known hook →
//! size → body → signature → parse → ingest), JSON error bodies, and the HTTP counters shown on
//! `/metrics`.
//!
//! Must not parse HTTP itself (hyper does, including Transfer-Encoding) and must not decide
//! anything about triggers or rules: it hands payloads to `Ingest` and maps its errors to status
//! codes.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::rc::Rc;

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use super::auth::{self, AuthError};
use super::body;
use super::{Health, HttpConfig, Ingest, IngestError, MAX_BODY_BYTES, is_loopback};

/// Path prefixes of the webhook API: StackStorm's public one (`/api/v1`, via its proxy) and the
/// one st2api answers directly on port 9101 (`/v1`), so senders configured for either work.
const WEBHOOK_PREFIXES: [&str; 2] = ["/api/v1/webhooks/", "/v1/webhooks/"];

/// The generic hook name: body `{trigger, payload}`.
const GENERIC_HOOK: &str = "st2";

type Reply = Response<Full<Bytes>>;

/// State shared by all connections of one `serve` call (single thread, hence `Rc`/`Cell`).
pub(super) struct Shared {
    pub(super) ingest: Rc<dyn Ingest>,
    pub(super) cfg: HttpConfig,
    pub(super) stats: Rc<Stats>,
}

impl Shared {
    pub(super) fn new(ingest: Rc<dyn Ingest>, cfg: HttpConfig) -> Self {
        Shared { ingest, cfg, stats: Rc::new(Stats::default()) }
    }

    /// Answer one request and count it.
    pub(super) async fn handle(&self, peer: SocketAddr, req: Request<Incoming>) -> Reply {
        let reply = match self.route(peer, req).await {
            Ok(reply) => reply,
            Err(refusal) => refusal.into_reply(),
        };
        self.stats.answered(reply.status());
        reply
    }

    async fn route(&self, peer: SocketAddr, req: Request<Incoming>) -> Result<Reply, Refusal> {
        let path = req.uri().path();
        if let Some(rest) = WEBHOOK_PREFIXES.iter().find_map(|p| path.strip_prefix(p)) {
            let hook = hook_name(rest);
            if hook.is_empty() {
                return Err(fault(StatusCode::NOT_FOUND, "Not Found"));
            }
            if req.method() != Method::POST {
                return Err(method_not_allowed("POST"));
            }
            return self.webhook(hook, req).await;
        }
        match path {
            "/health" => {
                only_get(&req)?;
                Ok(self.health())
            }
            "/metrics" => {
                only_get(&req)?;
                self.metrics_allowed(peer, req.headers())?;
                Ok(self.metrics())
            }
            _ => Err(fault(StatusCode::NOT_FOUND, "Not Found")),
        }
    }

    fn health(&self) -> Reply {
        match self.ingest.health() {
            Health::Ready => json_reply(StatusCode::OK, &json!({"status": "ok"})),
            Health::NotReady(reason) => {
                json_reply(StatusCode::SERVICE_UNAVAILABLE, &json!({"status": "unavailable", "reason": reason}))
            }
        }
    }

    /// Metrics are open to loopback clients (the usual scraper is a local agent). Remote
    /// clients need the global token, or are refused when none is configured: counters reveal
    /// traffic patterns and hook activity.
    fn metrics_allowed(&self, peer: SocketAddr, headers: &HeaderMap) -> Result<(), Refusal> {
        if is_loopback(peer.ip()) {
            return Ok(());
        }
        match &self.cfg.auth.token {
            Some(token) => auth::check_token(token, headers).map_err(auth_fault),
            None => Err(fault(
                StatusCode::FORBIDDEN,
                "Metrics are served to loopback clients only unless a webhook token is configured",
            )),
        }
    }

    fn metrics(&self) -> Reply {
        let mut text = self.ingest.metrics();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        self.stats.render(&mut text);
        let mut reply = Response::new(Full::new(Bytes::from(text)));
        reply
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
        reply
    }

    async fn webhook(&self, hook: String, req: Request<Incoming>) -> Result<Reply, Refusal> {
        // Credentials that can be checked from the head come first, so an unauthenticated
        // caller learns nothing and costs nothing; the signature needs the body, later.
        let auth = self.cfg.auth_for(&hook);
        if let Some(token) = &auth.token {
            auth::check_token(token, req.headers()).map_err(auth_fault)?;
        }
        let signature = match &auth.secret {
            Some(secret) => Some((secret, auth::presented_signature(req.headers()).map_err(auth_fault)?)),
            None => None,
        };
        let generic = hook == GENERIC_HOOK;
        if !generic && !self.ingest.hook_exists(&hook) {
            return Err(fault(StatusCode::NOT_FOUND, &format!("Webhook {hook} not registered")));
        }
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
            return Err(too_large());
        }
        let (parts, incoming) = req.into_parts();
        let raw = match Limited::new(incoming, MAX_BODY_BYTES).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return Err(too_large()),
            Err(e) => {
                return Err(fault(StatusCode::BAD_REQUEST, &format!("Failed to read request body: {e}")));
            }
        };
        if let Some((secret, presented)) = signature {
            auth::verify_signature(secret, &raw, &presented).map_err(auth_fault)?;
        }
        let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let parsed =
            body::parse_body(content_type, &raw).map_err(|e| fault(StatusCode::BAD_REQUEST, &e.to_string()))?;
        let stored = if generic {
            let (trigger, payload) = generic_parts(&parsed)?;
            self.ingest.trigger(&trigger, payload).await
        } else {
            let (headers, headers_lower) = body::header_maps(&parts.headers);
            let payload = json!({
                "headers": headers,
                "headers_lower": headers_lower,
                "body": parsed.clone(),
            });
            self.ingest.webhook(&hook, payload).await
        };
        match stored {
            Ok(id) => {
                let mut reply = json_reply(StatusCode::ACCEPTED, &parsed);
                if let Ok(v) = HeaderValue::from_str(&id) {
                    reply.headers_mut().insert("x-packd-event-id", v);
                }
                Ok(reply)
            }
            Err(e) => Err(ingest_fault(&e)),
        }
    }
}

/// The hook name from the rest of the path: percent-decoded, leading and trailing slashes
/// stripped (`/sample/` ≡ `sample`, as rules register it).
pub(super) fn hook_name(rest: &str) -> String {
    body::percent_decode(rest.as_bytes()).trim_matches('/').to_owned()
}

/// `{trigger: "<ref>", payload: {...}}` of the generic hook. A missing payload is `{}`.
fn generic_parts(body: &Value) -> Result<(String, Value), Refusal> {
    let bad = |msg: &str| fault(StatusCode::BAD_REQUEST, msg);
    let Value::Object(map) = body else {
        return Err(bad("Body must be an object {\"trigger\": ..., \"payload\": ...}"));
    };
    let trigger = match map.get("trigger") {
        Some(Value::String(t)) if !t.is_empty() => t.clone(),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(bad("Trigger not specified."));
        }
        Some(_) => return Err(bad("Trigger must be a string")),
    };
    let payload = match map.get("payload") {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => return Err(bad("Payload must be an object")),
    };
    Ok((trigger, payload))
}

fn only_get(req: &Request<Incoming>) -> Result<(), Refusal> {
    if req.method() == Method::GET { Ok(()) } else { Err(method_not_allowed("GET")) }
}

fn json_reply(status: StatusCode, value: &Value) -> Reply {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut reply = Response::new(Full::new(Bytes::from(bytes)));
    *reply.status_mut() = status;
    reply.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    reply
}

/// A request refused with an error status: kept small (clippy's `result_large_err`) and turned
/// into StackStorm's error body `{"faultstring": "..."}` once, in `handle`.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    message: String,
    /// One extra response header (`Allow`, `WWW-Authenticate`, `Retry-After`).
    header: Option<(&'static str, &'static str)>,
}

impl Refusal {
    fn with_header(mut self, name: &'static str, value: &'static str) -> Self {
        self.header = Some((name, value));
        self
    }

    fn into_reply(self) -> Reply {
        let mut reply = json_reply(self.status, &json!({ "faultstring": self.message }));
        if let Some((name, value)) = self.header {
            reply.headers_mut().insert(name, HeaderValue::from_static(value));
        }
        reply
    }
}

fn fault(status: StatusCode, message: &str) -> Refusal {
    Refusal { status, message: message.to_owned(), header: None }
}

fn method_not_allowed(allow: &'static str) -> Refusal {
    fault(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed").with_header("allow", allow)
}

fn too_large() -> Refusal {
    fault(StatusCode::PAYLOAD_TOO_LARGE, &format!("Request body exceeds the limit of {MAX_BODY_BYTES} bytes"))
}

fn auth_fault(err: AuthError) -> Refusal {
    match err {
        AuthError::Missing(msg) => fault(StatusCode::UNAUTHORIZED, msg).with_header("www-authenticate", "Bearer"),
        AuthError::Wrong(msg) => fault(StatusCode::FORBIDDEN, msg),
    }
}

fn ingest_fault(err: &IngestError) -> Refusal {
    match err {
        IngestError::UnknownTrigger(_) => fault(StatusCode::NOT_FOUND, &err.to_string()),
        IngestError::Invalid(reason) => fault(StatusCode::BAD_REQUEST, reason),
        IngestError::Overloaded(reason) => {
            fault(StatusCode::SERVICE_UNAVAILABLE, reason).with_header("retry-after", "1")
        }
        IngestError::Internal(_) => fault(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
    }
}

/// HTTP counters. Single-threaded, so plain cells.
#[derive(Default)]
pub(super) struct Stats {
    by_code: RefCell<BTreeMap<u16, u64>>,
    received: Cell<u64>,
    sent: Cell<u64>,
    open: Cell<u64>,
    accepted: Cell<u64>,
    header_timeouts: Cell<u64>,
    idle_timeouts: Cell<u64>,
    head_too_large: Cell<u64>,
    other_errors: Cell<u64>,
    accept_errors: Cell<u64>,
}

fn bump(cell: &Cell<u64>, by: u64) {
    cell.set(cell.get().saturating_add(by));
}

/// Decrements the open-connections gauge when the connection ends, however it ends.
pub(super) struct OpenGuard(Rc<Stats>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.set(self.0.open.get().saturating_sub(1));
    }
}

impl Stats {
    pub(super) fn connection_opened(self: &Rc<Self>) -> OpenGuard {
        bump(&self.open, 1);
        bump(&self.accepted, 1);
        OpenGuard(self.clone())
    }

    pub(super) fn answered(&self, status: StatusCode) {
        let mut map = self.by_code.borrow_mut();
        let n = map.entry(status.as_u16()).or_insert(0);
        *n = n.saturating_add(1);
    }

    pub(super) fn received(&self, n: usize) {
        bump(&self.received, n as u64);
    }

    pub(super) fn sent(&self, n: usize) {
        bump(&self.sent, n as u64);
    }

    pub(super) fn idle_timeout(&self) {
        bump(&self.idle_timeouts, 1);
    }

    pub(super) fn accept_error(&self) {
        bump(&self.accept_errors, 1);
    }

    /// Classify a connection that ended in error (requests hyper refused never reach
    /// `answered`, so this is where slowloris and oversized heads show up).
    pub(super) fn connection_error(&self, err: &hyper::Error) {
        if err.is_timeout() {
            bump(&self.header_timeouts, 1);
        } else if err.is_parse_too_large() {
            bump(&self.head_too_large, 1);
        } else if !idle_caused(err) {
            bump(&self.other_errors, 1);
        }
    }

    pub(super) fn render(&self, out: &mut String) {
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n");
        };
        metric("packd_http_connections_open", "gauge", "HTTP connections currently open.", self.open.get());
        metric("packd_http_connections_total", "counter", "HTTP connections accepted.", self.accepted.get());
        metric("packd_http_received_bytes_total", "counter", "Bytes read from HTTP clients.", self.received.get());
        metric("packd_http_sent_bytes_total", "counter", "Bytes written to HTTP clients.", self.sent.get());
        metric(
            "packd_http_header_timeouts_total",
            "counter",
            "Connections closed because the request head did not arrive in time.",
            self.header_timeouts.get(),
        );
        metric(
            "packd_http_idle_timeouts_total",
            "counter",
            "Connections closed after making no progress for the idle timeout.",
            self.idle_timeouts.get(),
        );
        metric(
            "packd_http_head_too_large_total",
            "counter",
            "Requests refused because the head exceeded the size limit.",
            self.head_too_large.get(),
        );
        metric(
            "packd_http_connection_errors_total",
            "counter",
            "Connections that ended with another protocol or I/O error.",
            self.other_errors.get(),
        );
        metric("packd_http_accept_errors_total", "counter", "Failed accept() calls.", self.accept_errors.get());
        let _ = write!(
            out,
            "# HELP packd_http_requests_total HTTP requests answered, by status code.\n\
             # TYPE packd_http_requests_total counter\n"
        );
        for (code, n) in self.by_code.borrow().iter() {
            let _ = writeln!(out, "packd_http_requests_total{{code=\"{code}\"}} {n}");
        }
    }
}

/// Whether a connection error was our idle watchdog (already counted by `Io`).
fn idle_caused(err: &hyper::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::TimedOut;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{Expect, expect};

    fn check_hook(rest: &str, expect: Expect) {
        expect.assert_eq(&hook_name(rest));
    }

    #[test]
    fn hook_names() {
        check_hook("sample", expect![[r#"sample"#]]);
        check_hook("sample/", expect![[r#"sample"#]]);
        check_hook("//github/push//", expect![[r#"github/push"#]]);
        check_hook("github%2Fpush", expect![[r#"github/push"#]]);
        check_hook("my%20hook", expect![[r#"my hook"#]]);
        check_hook("/", expect![[r#""#]]);
    }

    fn check_generic(body: &str, expect: Expect) {
        let value: Value = serde_json::from_str(body).unwrap();
        let got = match generic_parts(&value) {
            Ok((t, p)) => format!("{t} {p}"),
            Err(refusal) => format!("{}", refusal.status),
        };
        expect.assert_eq(&got);
    }

    #[test]
    fn generic_hook_bodies() {
        check_generic(r#"{"trigger": "pk.t", "payload": {"a": 1}}"#, expect![[r#"pk.t {"a":1}"#]]);
        check_generic(r#"{"trigger": "pk.t"}"#, expect![[r#"pk.t {}"#]]);
        check_generic(r#"{"payload": {}}"#, expect![[r#"400 Bad Request"#]]);
        check_generic(r#"{"trigger": ""}"#, expect![[r#"400 Bad Request"#]]);
        check_generic(r#"{"trigger": 5}"#, expect![[r#"400 Bad Request"#]]);
        check_generic(r#"{"trigger": "a.b", "payload": [1]}"#, expect![[r#"400 Bad Request"#]]);
        check_generic(r#"[1]"#, expect![[r#"400 Bad Request"#]]);
    }

    #[test]
    fn ingest_errors_map_to_status() {
        let codes: Vec<u16> = [
            IngestError::UnknownTrigger("x".into()),
            IngestError::Invalid("bad".into()),
            IngestError::Overloaded("busy".into()),
            IngestError::Internal("/secret/path".into()),
        ]
        .iter()
        .map(|e| ingest_fault(e).status.as_u16())
        .collect();
        assert_eq!(codes, [404, 400, 503, 500]);
    }
}
