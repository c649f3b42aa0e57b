//! The local HTTP endpoint: StackStorm-compatible webhooks, `/health` and `/metrics`, served by
//! hyper 1 on the caller's smol executor thread (no tokio, no thread per connection).
//!
//! This module owns HTTP only: routing, limits, timeouts, authentication of webhook callers,
//! body parsing into StackStorm's payload shape and the HTTP counters. It must not know about
//! packs, rules, trigger schemas or the database: everything past "a webhook arrived" goes through
//! the [`Ingest`] trait, which the agent implements. The admin API is not here (it lives on a Unix
//! socket, never TCP).
//!
//! Files: `rt.rs` adapts smol's `TcpStream` and `Timer` to hyper's runtime traits; `service.rs`
//! routes and answers requests and keeps the counters; `body.rs` turns bodies and headers into
//! JSON; `auth.rs` checks tokens and HMAC signatures.

mod auth;
mod body;
mod rt;
mod service;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use smol::LocalExecutor;
use smol::channel::{Receiver, Sender};
use smol::lock::{Semaphore, SemaphoreGuardArc};
use smol::net::{TcpListener, TcpStream};

pub use auth::constant_time_eq;

/// Largest request head (request line plus headers). Real webhook senders (GitHub, GitLab,
/// Alertmanager) send 1–4 KiB of headers; 16 KiB leaves room for long cookies or signatures
/// while bounding what one connection can make us buffer (tiny_http grew to 300 MB on one endless
/// header line). Enforced by hyper (`max_buf_size`/`max_header_size`): it answers 431.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Largest request body. GitHub caps its webhook payloads at 25 MB but typical events are a few
/// KiB; every accepted body is parsed into memory and stored in the database, so 1 MiB bounds the
/// memory one request can pin (×`MAX_CONNECTIONS`) and the row size. Checked against
/// `Content-Length` before reading and enforced while reading chunked bodies → 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Time a client has to send a complete request head. Stops slowloris clients from holding a
/// connection slot with a half-sent header. hyper restarts this clock whenever a keep-alive
/// connection turns idle, so it is also how long an idle keep-alive connection is kept.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest time a connection may make no I/O progress while the server waits to read or write
/// (a client stalling in the middle of a body, or not reading our response). The header timeout
/// does not cover those; 30 s is generous for any sender on a working network.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Most connections served at once. Each costs one task, two buffers of at most
/// `MAX_HEAD_BYTES` and at most one body of `MAX_BODY_BYTES`. Beyond it the accept loop stops
/// accepting: new connections wait in the kernel's listen backlog (and are served as slots free
/// up, which the header timeout guarantees within seconds) rather than being reset, because
/// webhook senders treat a reset as a failed delivery.
pub const MAX_CONNECTIONS: usize = 256;

/// On shutdown, how long connections get to finish the request in flight (a webhook waiting for
/// its commit should still get its 202) before they are dropped.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Pause after a failed `accept` (e.g. EMFILE) so a persistent error does not spin the executor.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The future returned by [`Ingest::webhook`] and [`Ingest::trigger`]: the stored event's id.
pub type IngestFuture<'a> = Pin<Box<dyn Future<Output = Result<String, IngestError>> + 'a>>;

/// What the agent provides to the HTTP endpoint. Called on the executor thread, so nothing here
/// needs to be `Send`.
pub trait Ingest: 'static {
    /// Store a webhook event for the custom hook `hook` durably; resolve only once it is
    /// committed (a 202 promises the event is not lost). `payload` is
    /// `{"headers", "headers_lower", "body"}`. The future may be dropped if the client goes away,
    /// so it must be cancellation-safe (e.g. the write is already queued).
    fn webhook(&self, hook: &str, payload: serde_json::Value) -> IngestFuture<'_>;
    /// Generic hook `POST /api/v1/webhooks/st2` with body `{trigger, payload}`: dispatch `payload`
    /// to trigger type `trigger` (validated against its payload schema by the agent).
    fn trigger(&self, trigger: &str, payload: serde_json::Value) -> IngestFuture<'_>;
    /// Whether a rule registered webhook `hook` (slashes already stripped). Checked before the
    /// body is read, so unknown hooks cost nothing.
    fn hook_exists(&self, hook: &str) -> bool;
    /// Ready only when packs are loaded and the store is open.
    fn health(&self) -> Health;
    /// The agent's Prometheus text; the HTTP counters are appended after it.
    fn metrics(&self) -> String;
}

/// Answer of [`Ingest::health`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ready,
    /// Not ready, with the reason shown to the caller (503).
    NotReady(String),
}

/// Why an event was not accepted; decides the status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// No such trigger type (generic hook) or the hook vanished in a reload → 404.
    #[error("Trigger {0} not found")]
    UnknownTrigger(String),
    /// Payload failed the trigger's payload schema → 400 with this reason.
    #[error("{0}")]
    Invalid(String),
    /// Store queue full or shutting down → 503 with `Retry-After`; the sender should retry.
    #[error("{0}")]
    Overloaded(String),
    /// Anything else → 500. The text is not sent to the client (it may hold paths); the agent
    /// should log it before returning.
    #[error("{0}")]
    Internal(String),
}

/// Credentials a webhook caller must present. When both are set, both are required.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HookAuth {
    /// Shared token, sent as `X-Packd-Token: T`, `Authorization: Bearer T` or StackStorm's
    /// `St2-Api-Key: T`.
    pub token: Option<String>,
    /// HMAC-SHA256 key; the caller sends `X-Hub-Signature-256: sha256=<hex of HMAC(body)>`
    /// (GitHub's scheme).
    pub secret: Option<String>,
}

impl HookAuth {
    pub fn is_configured(&self) -> bool {
        self.token.is_some() || self.secret.is_some()
    }
}

// Secrets never reach logs through `{:?}`.
impl fmt::Debug for HookAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mask = |s: &Option<String>| s.as_ref().map(|_| "********");
        f.debug_struct("HookAuth").field("token", &mask(&self.token)).field("secret", &mask(&self.secret)).finish()
    }
}

/// Endpoint settings. `Default` gives the named limits and no authentication.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Credentials for every webhook without an entry in `hooks`.
    pub auth: HookAuth,
    /// Per-hook credentials (key: hook name with slashes stripped, `st2` for the generic hook).
    /// An entry replaces `auth` entirely for that hook.
    pub hooks: HashMap<String, HookAuth>,
    /// Defaults to [`HEADER_READ_TIMEOUT`]; a field so tests can shorten it.
    pub header_read_timeout: Duration,
    /// Defaults to [`IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// Defaults to [`MAX_CONNECTIONS`] (at least 1 is used).
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            auth: HookAuth::default(),
            hooks: HashMap::new(),
            header_read_timeout: HEADER_READ_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

impl HttpConfig {
    /// Whether hooks without their own entry require credentials (what [`check_bind`] needs).
    pub fn auth_configured(&self) -> bool {
        self.auth.is_configured()
    }

    /// The credentials that apply to `hook`.
    fn auth_for(&self, hook: &str) -> &HookAuth {
        self.hooks.get(hook).unwrap_or(&self.auth)
    }
}

/// Refusal to listen where strangers can reach an unauthenticated endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    #[error(
        "refusing to serve webhooks on {0} without authentication: anyone who can reach this \
         address could fire your rules. Configure a shared webhook token (callers send \
         `X-Packd-Token: <token>` or `Authorization: Bearer <token>`) or an HMAC-SHA256 webhook \
         secret (callers send `X-Hub-Signature-256: sha256=<hex>`, GitHub style), or listen on \
         127.0.0.1, or explicitly allow an insecure listener"
    )]
    Insecure(SocketAddr),
}

/// Check a listen address before binding: loopback is always fine; anything else needs
/// authentication for webhooks unless the operator explicitly allowed it.
pub fn check_bind(addr: SocketAddr, auth_configured: bool, allow_insecure: bool) -> Result<(), BindError> {
    if is_loopback(addr.ip()) || auth_configured || allow_insecure { Ok(()) } else { Err(BindError::Insecure(addr)) }
}

/// Loopback, including IPv4 loopback written as an IPv4-mapped IPv6 address.
fn is_loopback(ip: std::net::IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Serve HTTP on `listener` until `shutdown` yields a message or is closed.
///
/// Runs on the caller's thread: connections are tasks on a `LocalExecutor` owned by this future
/// (so `Rc` state works and no thread is started), driven whenever the caller's executor polls
/// `serve`. On shutdown it stops accepting, lets each connection finish its request in flight
/// for up to [`SHUTDOWN_GRACE`], then returns; connections still open are dropped with it.
pub async fn serve(listener: TcpListener, ingest: Rc<dyn Ingest>, cfg: HttpConfig, shutdown: Receiver<()>) {
    let ex = LocalExecutor::new();
    ex.run(accept_loop(&ex, listener, ingest, cfg, shutdown)).await;
}

async fn accept_loop(
    ex: &LocalExecutor<'_>,
    listener: TcpListener,
    ingest: Rc<dyn Ingest>,
    cfg: HttpConfig,
    shutdown: Receiver<()>,
) {
    let slots = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
    let shared = Rc::new(service::Shared::new(ingest, cfg));
    // Dropping `stop_tx` wakes every connection (all receivers see the channel closed); every
    // connection holds a `done_tx` clone, so `done_rx` closes when the last one has finished.
    let (stop_tx, stop_rx) = smol::channel::bounded::<()>(1);
    let (done_tx, done_rx) = smol::channel::bounded::<()>(1);
    loop {
        // Shutdown first: `or` prefers its first future, and a busy listener must not starve it.
        let stop = async {
            let _ = shutdown.recv().await;
            None
        };
        let next = async {
            let slot = slots.acquire_arc().await;
            Some((slot, listener.accept().await))
        };
        match smol::future::or(stop, next).await {
            None => break,
            Some((slot, Ok((stream, peer)))) => {
                let conn =
                    Connection { shared: shared.clone(), stop: stop_rx.clone(), _done: done_tx.clone(), _slot: slot };
                ex.spawn(conn.run(stream, peer)).detach();
            }
            Some((_, Err(_))) => {
                shared.stats.accept_error();
                smol::Timer::after(ACCEPT_BACKOFF).await;
            }
        }
    }
    drop(listener);
    drop(stop_tx);
    drop(done_tx);
    let _ = done_rx.recv().await;
}

/// One accepted connection and the resources it holds until it ends.
struct Connection {
    shared: Rc<service::Shared>,
    stop: Receiver<()>,
    _done: Sender<()>,
    _slot: SemaphoreGuardArc,
}

impl Connection {
    async fn run(self, stream: TcpStream, peer: SocketAddr) {
        let stats = self.shared.stats.clone();
        let _open = stats.connection_opened();
        // Responses are small and written at once; don't let Nagle hold the last segment.
        let _ = stream.set_nodelay(true);
        let io = rt::Io::new(stream, self.shared.cfg.idle_timeout, stats.clone());
        let shared = self.shared.clone();
        let svc = hyper::service::service_fn(move |req| {
            let shared = shared.clone();
            async move { Ok::<_, std::convert::Infallible>(shared.handle(peer, req).await) }
        });
        let mut builder = http1::Builder::new();
        builder
            .timer(rt::SmolTimer)
            .header_read_timeout(self.shared.cfg.header_read_timeout)
            .max_buf_size(MAX_HEAD_BYTES)
            .max_header_size(MAX_HEAD_BYTES);
        let conn = builder.serve_connection(io, svc);
        let mut conn = std::pin::pin!(conn);
        let first = smol::future::or(async { Some(conn.as_mut().await) }, async {
            let _ = self.stop.recv().await;
            None
        })
        .await;
        let result = match first {
            Some(result) => result,
            None => {
                conn.as_mut().graceful_shutdown();
                let grace = async {
                    smol::Timer::after(SHUTDOWN_GRACE).await;
                    Ok(())
                };
                smol::future::or(conn.as_mut(), grace).await
            }
        };
        if let Err(err) = result {
            stats.connection_error(&err);
        }
    }
}
