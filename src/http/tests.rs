//! End-to-end tests of the endpoint over real loopback sockets: a server thread runs `serve` on
//! its own executor with a fake `Ingest` that records calls; clients are plain std `TcpStream`s
//! writing raw HTTP/1.1, so the exact bytes on the wire (chunked bodies, half-sent heads) are
//! under the test's control.
//!
//! Tests take a shared lock; the thread-count test takes it exclusively so no other test starts
//! threads while it counts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use expect_test::expect;
use serde_json::{Value, json};

use super::*;

static LOCK: RwLock<()> = RwLock::new(());

fn shared_lock() -> std::sync::RwLockReadGuard<'static, ()> {
    LOCK.read().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
struct Record {
    calls: Mutex<Vec<(String, String, Value)>>,
    not_ready: AtomicBool,
}

struct Fake(Arc<Record>);

impl Ingest for Fake {
    fn webhook(&self, hook: &str, payload: Value) -> IngestFuture<'_> {
        let hook = hook.to_owned();
        Box::pin(async move {
            let mut calls = self.0.calls.lock().unwrap();
            calls.push(("webhook".into(), hook, payload));
            Ok(format!("ev-{}", calls.len()))
        })
    }

    fn trigger(&self, trigger: &str, payload: Value) -> IngestFuture<'_> {
        let trigger = trigger.to_owned();
        Box::pin(async move {
            match trigger.as_str() {
                "nope.missing" => return Err(IngestError::UnknownTrigger(trigger)),
                "pk.strict" => {
                    return Err(IngestError::Invalid("'n' is a required property".into()));
                }
                _ => {}
            }
            let mut calls = self.0.calls.lock().unwrap();
            calls.push(("trigger".into(), trigger, payload));
            Ok(format!("ev-{}", calls.len()))
        })
    }

    fn hook_exists(&self, hook: &str) -> bool {
        matches!(hook, "sample" | "github/push" | "locked")
    }

    fn health(&self) -> Health {
        if self.0.not_ready.load(Ordering::SeqCst) {
            Health::NotReady("packs not loaded yet".into())
        } else {
            Health::Ready
        }
    }

    fn metrics(&self) -> String {
        "packd_events_total 7".into()
    }
}

struct Server {
    addr: SocketAddr,
    record: Arc<Record>,
    stop: Option<smol::channel::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start(cfg: HttpConfig) -> Server {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = std_listener.local_addr().unwrap();
    let record = Arc::new(Record::default());
    let (stop_tx, stop_rx) = smol::channel::bounded(1);
    let rec = record.clone();
    let thread = std::thread::spawn(move || {
        let listener = smol::net::TcpListener::try_from(std_listener).unwrap();
        let ingest: Rc<dyn Ingest> = Rc::new(Fake(rec));
        smol::block_on(serve(listener, ingest, cfg, stop_rx));
    });
    Server { addr, record, stop: Some(stop_tx), thread: Some(thread) }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: String,
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Read one response until the server closes (requests send `Connection: close`).
fn read_reply(mut s: TcpStream) -> Reply {
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Reply { status, head: head.to_owned(), body: body.to_owned() }
}

fn raw(addr: SocketAddr, bytes: &[u8]) -> Reply {
    let mut s = connect(addr);
    let _ = s.write_all(bytes);
    read_reply(s)
}

fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    raw(addr, &bytes)
}

fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    request(addr, "POST", path, headers, body.as_bytes())
}

fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, &[], b"")
}

fn calls(server: &Server) -> Vec<(String, String, Value)> {
    server.record.calls.lock().unwrap().clone()
}

#[test]
fn json_webhook_is_recorded_and_echoed() {
    let _l = shared_lock();
    let srv = start(HttpConfig::default());
    let r = post(
        srv.addr,
        "/api/v1/webhooks/sample/",
        &[("Content-Type", "application/json"), ("X-GitHub-Event", "push"), ("Cookie", "s=1")],
        r#"{"a": [1, 2], "b": {"c": "d"}}"#,
    );
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(r.body, r#"{"a":[1,2],"b":{"c":"d"}}"#);
    assert!(r.head.to_ascii_lowercase().contains("x-packd-event-id: ev-1"), "{}", r.head);
    let got = calls(&srv);
    assert_eq!(got.len(), 1);
    let (kind, hook, payload) = &got[0];
    assert_eq!((kind.as_str(), hook.as_str()), ("webhook", "sample"));
    expect![[r#"
        {
          "headers": {
            "Host": "test",
            "Connection": "close",
            "Content-Type": "application/json",
            "X-Github-Event": "push",
            "Content-Length": "30"
          },
          "headers_lower": {
            "host": "test",
            "connection": "close",
            "content-type": "application/json",
            "x-github-event": "push",
            "content-length": "30"
          },
          "body": {
            "a": [
              1,
              2
            ],
            "b": {
              "c": "d"
            }
          }
        }"#]]
    .assert_eq(&serde_json::to_string_pretty(payload).unwrap());

    // Slashes in the hook name, and st2api's direct `/v1` path.
    let r = post(srv.addr, "/v1/webhooks//github/push", &[], "[1]");
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(calls(&srv)[1].1, "github/push");
}

#[test]
fn form_and_multipart_bodies_become_dicts_of_lists() {
    let _l = shared_lock();
    let srv = start(HttpConfig::default());
    let r = post(
        srv.addr,
        "/api/v1/webhooks/sample",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        "a=1&a=2&b=hello+there",
    );
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(r.body, r#"{"a":["1","2"],"b":["hello there"]}"#);
    assert_eq!(calls(&srv)[0].2["body"], json!({"a": ["1", "2"], "b": ["hello there"]}));

    let body = "--b0\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n\
                --b0\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.txt\"\r\n\
                Content-Type: text/plain\r\n\r\nfile body\r\n--b0--\r\n";
    let r = post(srv.addr, "/api/v1/webhooks/sample", &[("Content-Type", "multipart/form-data; boundary=b0")], body);
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(calls(&srv)[1].2["body"], json!({"x": ["1"], "f": ["file body"]}));
}

#[test]
fn bad_requests_get_clear_errors() {
    let _l = shared_lock();
    let srv = start(HttpConfig::default());
    let r = post(srv.addr, "/api/v1/webhooks/sample", &[("Content-Type", "application/json")], "{\"a\": ");
    assert_eq!(r.status, 400);
    expect![[
        r#"{"faultstring":"Failed to parse request body as JSON: EOF while parsing a value at line 1 column 6"}"#
    ]]
    .assert_eq(&r.body);

    let r = get(srv.addr, "/api/v1/webhooks/sample");
    assert_eq!(r.status, 405);
    assert!(r.head.to_ascii_lowercase().contains("allow: post"), "{}", r.head);
    assert_eq!(post(srv.addr, "/health", &[], "").status, 405);
    assert_eq!(get(srv.addr, "/nowhere").status, 404);
    assert_eq!(post(srv.addr, "/api/v1/webhooks/", &[], "{}").status, 404);
    assert!(calls(&srv).is_empty());
}

#[test]
fn unknown_hook_is_404_without_reading_the_body() {
    let _l = shared_lock();
    let srv = start(HttpConfig::default());
    // Announce a body and never send it: the answer must come anyway.
    let r = raw(srv.addr, b"POST /api/v1/webhooks/nope HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n");
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.body, r#"{"faultstring":"Webhook nope not registered"}"#);
}

#[test]
fn body_limits() {
    let _l = shared_lock();
    let srv = start(HttpConfig::default());
    // Declared too large: refused from the head alone (no body is ever sent).
    let head =
        format!("POST /api/v1/webhooks/sample HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", MAX_BODY_BYTES + 1);
    let r = raw(srv.addr, head.as_bytes());
    assert_eq!(r.status, 413, "{r:?}");

    // Chunked, no length announced: cut off while reading.
    let mut s = connect(srv.addr);
    s.write_all(b"POST /api/v1/webhooks/sample HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent <= MAX_BODY_BYTES {
        if s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).is_err()
            || s.write_all(&chunk).is_err()
            || s.write_all(b"\r\n").is_err()
        {
            break;
        }
        sent += chunk.len();
    }
    let r = read_reply(s);
    assert_eq!(r.status, 413, "{r:?}");

    // Exactly at the limit is fine (JSON may have trailing whitespace).
    let mut body = vec![b' '; MAX_BODY_BYTES];
    body[..2].copy_from_slice(b"{}");
    let r = request(srv.addr, "POST", "/api/v1/webhooks/sample", &[], &body);
    assert_eq!(r.status, 202, "{}", r.head);
    assert!(calls(&srv).len() == 1);
}

#[test]
fn head_limit() {
    let _l = shared_lock();
    let srv = start(HttpConfig::default());
    let big = "x".repeat(MAX_HEAD_BYTES + 1);
    let r = post(srv.addr, "/api/v1/webhooks/sample", &[("X-Big", &big)], "{}");
    assert_eq!(r.status, 431, "{r:?}");
    let ok = "x".repeat(MAX_HEAD_BYTES / 2);
    assert_eq!(post(srv.addr, "/api/v1/webhooks/sample", &[("X-Big", &ok)], "{}").status, 202);
}

#[test]
fn token_auth() {
    let _l = shared_lock();
    let cfg = HttpConfig { auth: HookAuth { token: Some("t0k".into()), secret: None }, ..HttpConfig::default() };
    let srv = start(cfg);
    let path = "/api/v1/webhooks/sample";
    let r = post(srv.addr, path, &[], "{}");
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.head.to_ascii_lowercase().contains("www-authenticate: bearer"));
    assert_eq!(post(srv.addr, path, &[("X-Packd-Token", "t0K")], "{}").status, 403);
    assert_eq!(post(srv.addr, path, &[("Authorization", "Bearer nope")], "{}").status, 403);
    assert_eq!(post(srv.addr, path, &[("X-Packd-Token", "t0k")], "{}").status, 202);
    assert_eq!(post(srv.addr, path, &[("Authorization", "Bearer t0k")], "{}").status, 202);
    assert_eq!(post(srv.addr, path, &[("St2-Api-Key", "t0k")], "{}").status, 202);
    // Auth is checked before the hook is looked up: strangers cannot probe hook names.
    assert_eq!(post(srv.addr, "/api/v1/webhooks/nope", &[], "{}").status, 401);
    // The token never reaches the stored payload.
    let stored = calls(&srv);
    assert_eq!(stored.len(), 3);
    for (_, _, payload) in stored {
        let lower = payload["headers_lower"].as_object().unwrap();
        assert!(!lower.contains_key("x-packd-token") && !lower.contains_key("authorization"));
        assert!(!lower.contains_key("st2-api-key"));
    }
    // Health and metrics stay open on loopback.
    assert_eq!(get(srv.addr, "/health").status, 200);
    assert_eq!(get(srv.addr, "/metrics").status, 200);
}

fn signed(secret: &str, body: &str) -> String {
    let mac = auth::hmac_sha256(secret.as_bytes(), body.as_bytes());
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

#[test]
fn hmac_auth_global_and_per_hook() {
    let _l = shared_lock();
    let mut hooks = HashMap::new();
    hooks.insert("github/push".to_owned(), HookAuth { token: None, secret: Some("gh-secret".into()) });
    let cfg =
        HttpConfig { auth: HookAuth { token: None, secret: Some("global".into()) }, hooks, ..HttpConfig::default() };
    let srv = start(cfg);
    let body = r#"{"ref":"refs/heads/main"}"#;
    let path = "/api/v1/webhooks/sample";
    let sig = signed("global", body);
    assert_eq!(post(srv.addr, path, &[("X-Hub-Signature-256", &sig)], body).status, 202);
    assert_eq!(post(srv.addr, path, &[], body).status, 401);
    let wrong = signed("other", body);
    assert_eq!(post(srv.addr, path, &[("X-Hub-Signature-256", &wrong)], body).status, 403);
    assert_eq!(post(srv.addr, path, &[("X-Hub-Signature-256", "sha256=00")], body).status, 403);
    // Signature over a different body.
    assert_eq!(post(srv.addr, path, &[("X-Hub-Signature-256", &sig)], "{}").status, 403);
    // The per-hook secret replaces the global one.
    let gh = "/api/v1/webhooks/github/push";
    assert_eq!(post(srv.addr, gh, &[("X-Hub-Signature-256", &sig)], body).status, 403);
    let gh_sig = signed("gh-secret", body);
    assert_eq!(post(srv.addr, gh, &[("X-Hub-Signature-256", &gh_sig)], body).status, 202);
    assert_eq!(calls(&srv).len(), 2);
    // The signature header is kept in the payload (it is not a secret, rules may check it).
    assert_eq!(calls(&srv)[1].2["headers"]["X-Hub-Signature-256"], json!(gh_sig));
}

#[test]
fn generic_st2_hook() {
    let _l = shared_lock();
    let srv = start(HttpConfig::default());
    let path = "/api/v1/webhooks/st2";
    let body = r#"{"trigger": "pk.event", "payload": {"n": 1}}"#;
    let r = post(srv.addr, path, &[], body);
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(r.body, r#"{"trigger":"pk.event","payload":{"n":1}}"#);
    assert_eq!(calls(&srv), vec![("trigger".to_owned(), "pk.event".to_owned(), json!({"n": 1}))]);
    let r = post(srv.addr, "/api/v1/webhooks/st2/", &[], r#"{"payload": {}}"#);
    assert_eq!((r.status, r.body.as_str()), (400, r#"{"faultstring":"Trigger not specified."}"#));
    let r = post(srv.addr, path, &[], r#"{"trigger": "nope.missing"}"#);
    assert_eq!((r.status, r.body.as_str()), (404, r#"{"faultstring":"Trigger nope.missing not found"}"#));
    let r = post(srv.addr, path, &[], r#"{"trigger": "pk.strict"}"#);
    assert_eq!((r.status, r.body.as_str()), (400, r#"{"faultstring":"'n' is a required property"}"#));
    assert_eq!(calls(&srv).len(), 1);
}

#[test]
fn health_and_metrics() {
    let _l = shared_lock();
    let srv = start(HttpConfig::default());
    let r = get(srv.addr, "/health");
    assert_eq!((r.status, r.body.as_str()), (200, r#"{"status":"ok"}"#));
    srv.record.not_ready.store(true, Ordering::SeqCst);
    let r = get(srv.addr, "/health");
    assert_eq!((r.status, r.body.as_str()), (503, r#"{"status":"unavailable","reason":"packs not loaded yet"}"#));
    assert_eq!(get(srv.addr, "/nope").status, 404);
    let r = get(srv.addr, "/metrics");
    assert_eq!(r.status, 200);
    assert!(r.head.contains("text/plain; version=0.0.4"), "{}", r.head);
    assert!(r.body.starts_with("packd_events_total 7\n"), "{}", r.body);
    for line in [
        "packd_http_requests_total{code=\"200\"} 1",
        "packd_http_requests_total{code=\"503\"} 1",
        "packd_http_requests_total{code=\"404\"} 1",
        // This request's own connection is open while metrics are rendered.
        "packd_http_connections_open 1",
        "packd_http_connections_total 4",
    ] {
        assert!(r.body.lines().any(|l| l == line), "missing {line}:\n{}", r.body);
    }
    let received = r
        .body
        .lines()
        .find_map(|l| l.strip_prefix("packd_http_received_bytes_total "))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap();
    assert!(received > 100, "{received}");
}

/// A 300 ms header timeout; the idle watchdog is longer so it does not race it on heads.
fn short_timeouts() -> HttpConfig {
    HttpConfig {
        header_read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(600),
        ..HttpConfig::default()
    }
}

#[test]
fn slow_header_is_dropped_while_others_are_served() {
    let _l = shared_lock();
    let srv = start(short_timeouts());
    let mut slow = connect(srv.addr);
    slow.write_all(b"POST /api/v1/webhooks/sample HTTP/1.1\r\nHost: t\r\nX-Half: ").unwrap();
    let started = Instant::now();
    // Served meanwhile, well before the slow client's deadline.
    let r = post(srv.addr, "/api/v1/webhooks/sample", &[], "{}");
    assert_eq!(r.status, 202);
    assert!(started.elapsed() < Duration::from_millis(300), "{:?}", started.elapsed());
    let mut buf = [0u8; 64];
    let n = slow.read(&mut buf).unwrap_or(0);
    let took = started.elapsed();
    assert!(n == 0 || String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"));
    assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(3), "{took:?}");
    let m = get(srv.addr, "/metrics").body;
    assert!(m.contains("packd_http_header_timeouts_total 1"), "{m}");
}

#[test]
fn stalled_body_is_dropped_after_idle_timeout() {
    let _l = shared_lock();
    let srv = start(short_timeouts());
    let mut s = connect(srv.addr);
    s.write_all(b"POST /api/v1/webhooks/sample HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n{\"a").unwrap();
    let started = Instant::now();
    let r = read_reply(s);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(550) && took < Duration::from_secs(3), "{took:?}");
    assert_ne!(r.status, 202, "{r:?}");
    assert!(calls(&srv).is_empty());
    let m = get(srv.addr, "/metrics").body;
    assert!(m.contains("packd_http_idle_timeouts_total 1"), "{m}");
}

#[test]
fn connections_beyond_the_limit_wait_for_a_slot() {
    let _l = shared_lock();
    let srv = start(HttpConfig { max_connections: 2, ..short_timeouts() });
    let mut hogs = Vec::new();
    for _ in 0..2 {
        let mut s = connect(srv.addr);
        s.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
        hogs.push(s);
    }
    std::thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    // The third connection is not accepted until the header timeout frees a slot.
    let r = get(srv.addr, "/health");
    let took = started.elapsed();
    assert_eq!(r.status, 200);
    assert!(took >= Duration::from_millis(200) && took < Duration::from_secs(3), "{took:?}");
}

fn thread_count() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok()).unwrap()
}

#[test]
fn half_open_connections_do_not_add_threads() {
    let _l = LOCK.write().unwrap_or_else(|e| e.into_inner());
    let srv = start(HttpConfig { header_read_timeout: Duration::from_secs(3), ..HttpConfig::default() });
    assert_eq!(get(srv.addr, "/health").status, 200);
    let before = thread_count();
    let mut clients = Vec::new();
    for _ in 0..200 {
        let mut s = connect(srv.addr);
        s.write_all(b"POST /api/v1/webhooks/sample HTTP/1.1\r\nHost: t\r\n").unwrap();
        clients.push(s);
    }
    std::thread::sleep(Duration::from_millis(200));
    let m = get(srv.addr, "/metrics").body;
    assert!(m.contains("packd_http_connections_open 201"), "{m}");
    let after = thread_count();
    assert!(after <= before + 1, "threads {before} → {after}");
    drop(clients);
}

#[test]
fn shutdown_stops_the_server() {
    let _l = shared_lock();
    let mut srv = start(HttpConfig::default());
    let addr = srv.addr;
    assert_eq!(get(addr, "/health").status, 200);
    // An idle connection must not hold shutdown up for long.
    let _idle = connect(addr);
    let started = Instant::now();
    srv.stop.take();
    srv.thread.take().unwrap().join().unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn bind_checks() {
    let check = |addr: &str, auth: bool, insecure: bool| match check_bind(addr.parse().unwrap(), auth, insecure) {
        Ok(()) => "ok".to_owned(),
        Err(e) => e.to_string(),
    };
    assert_eq!(check("127.0.0.1:9101", false, false), "ok");
    assert_eq!(check("127.8.0.1:9101", false, false), "ok");
    assert_eq!(check("[::1]:9101", false, false), "ok");
    assert_eq!(check("[::ffff:127.0.0.1]:9101", false, false), "ok");
    assert_eq!(check("0.0.0.0:9101", true, false), "ok");
    assert_eq!(check("192.168.1.5:9101", false, true), "ok");
    expect![[r#"refusing to serve webhooks on 0.0.0.0:9101 without authentication: anyone who can reach this address could fire your rules. Configure a shared webhook token (callers send `X-Packd-Token: <token>` or `Authorization: Bearer <token>`) or an HMAC-SHA256 webhook secret (callers send `X-Hub-Signature-256: sha256=<hex>`, GitHub style), or listen on 127.0.0.1, or explicitly allow an insecure listener"#]]
        .assert_eq(&check("0.0.0.0:9101", false, false));
    assert_ne!(check("[::]:9101", false, false), "ok");
    assert_ne!(check("10.0.0.1:9101", false, false), "ok");
}

#[test]
fn config_debug_masks_secrets() {
    let cfg = HttpConfig {
        auth: HookAuth { token: Some("t0k".into()), secret: Some("s3c".into()) },
        ..HttpConfig::default()
    };
    let shown = format!("{cfg:?}");
    assert!(!shown.contains("t0k") && !shown.contains("s3c"), "{shown}");
    assert!(cfg.auth_configured());
    assert!(!HttpConfig::default().auth_configured());
}
