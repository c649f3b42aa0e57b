//! The admin API: newline-delimited JSON over a Unix socket in the data directory.
//!
//! Why a Unix socket and not TCP: who may talk to the agent is decided by file permissions
//! (the socket lives in the 0700 data directory and is itself 0600), so no token is needed and
//! nothing is exposed to the network. The CLI, and the Python shims (datastore calls from
//! actions and sensors, sensor dispatch), use it. One request per line, one response line per
//! request: `{"op": "...", ...}` → `{"ok": true, "result": ...}` or
//! `{"ok": false, "error": "...", "kind": "..."}`. This module owns framing and limits; what an
//! op does is the agent's business.

use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use serde_json::{Value, json};
use smol::io::{AsyncBufReadExt, AsyncWriteExt, BufReader as AsyncBufReader};
use smol::net::unix::{UnixListener, UnixStream};

/// Longest request line accepted. Parameters of a `run` are the largest thing sent; 1 MiB is
/// far above any real use and keeps one client from making the agent buffer without bound.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// The socket file's name inside the data directory.
pub const SOCKET_NAME: &str = "packd.sock";

/// An error an op returns: a message for people and a kind for scripts.
#[derive(Debug, Clone)]
pub struct OpError {
    pub kind: &'static str,
    pub message: String,
}

impl OpError {
    pub fn new(kind: &'static str, message: impl Into<String>) -> OpError {
        OpError { kind, message: message.into() }
    }
    pub fn invalid(message: impl Into<String>) -> OpError {
        OpError::new("invalid", message)
    }
    pub fn not_found(message: impl Into<String>) -> OpError {
        OpError::new("not_found", message)
    }
    pub fn internal(message: impl Into<String>) -> OpError {
        OpError::new("internal", message)
    }
}

pub type OpFuture = Pin<Box<dyn Future<Output = Result<Value, OpError>>>>;

/// What answers requests: the agent implements this.
pub trait Handler {
    fn handle(self: Rc<Self>, request: Value) -> OpFuture;
}

/// Accept connections until the listener fails; each connection is served by its own task on
/// the current local executor, requests in order.
pub async fn serve<H: Handler + 'static>(ex: Rc<smol::LocalExecutor<'static>>, listener: UnixListener, handler: Rc<H>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // EMFILE and friends: back off instead of spinning.
            smol::Timer::after(Duration::from_millis(100)).await;
            continue;
        };
        let h = handler.clone();
        ex.spawn(connection(stream, h)).detach();
    }
}

async fn connection<H: Handler + 'static>(stream: UnixStream, handler: Rc<H>) {
    let mut reader = AsyncBufReader::new(stream.clone());
    let mut writer = stream;
    loop {
        let mut line = Vec::new();
        // Read one line, refusing lines over the limit without buffering them.
        let mut limited = (&mut reader).take(MAX_REQUEST_BYTES as u64 + 1);
        match limited.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let response = if line.len() > MAX_REQUEST_BYTES {
            let r = error_response(&OpError::invalid(format!("request over {MAX_REQUEST_BYTES} bytes")));
            let _ = writer.write_all(format!("{r}\n").as_bytes()).await;
            return;
        } else {
            match serde_json::from_slice::<Value>(&line) {
                Ok(req) if req.get("op").and_then(Value::as_str).is_some() => match handler.clone().handle(req).await {
                    Ok(result) => json!({"ok": true, "result": result}),
                    Err(e) => error_response(&e),
                },
                Ok(_) => error_response(&OpError::invalid("a request needs an \"op\" string")),
                Err(e) => error_response(&OpError::invalid(format!("request is not JSON: {e}"))),
            }
        };
        if writer.write_all(format!("{response}\n").as_bytes()).await.is_err() {
            return;
        }
    }
}

fn error_response(e: &OpError) -> Value {
    json!({"ok": false, "error": e.message, "kind": e.kind})
}

use smol::io::AsyncReadExt;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the packd agent at {path}: {source} (is `packd serve` running with this --data directory?)")]
    Connect { path: String, source: std::io::Error },
    #[error("lost the connection to the agent: {0}")]
    Io(#[from] std::io::Error),
    #[error("the agent sent an unreadable answer: {0}")]
    Protocol(String),
    #[error("{message}")]
    Op { kind: String, message: String },
}

/// One blocking request/response, for the CLI.
pub fn call(socket: &Path, request: &Value) -> Result<Value, ClientError> {
    let stream = StdUnixStream::connect(socket)
        .map_err(|e| ClientError::Connect { path: socket.display().to_string(), source: e })?;
    let mut w = stream.try_clone()?;
    w.write_all(format!("{request}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    if line.is_empty() {
        return Err(ClientError::Protocol("connection closed without an answer".into()));
    }
    let v: Value = serde_json::from_str(&line).map_err(|e| ClientError::Protocol(e.to_string()))?;
    if v.get("ok") == Some(&Value::Bool(true)) {
        Ok(v.get("result").cloned().unwrap_or(Value::Null))
    } else {
        Err(ClientError::Op {
            kind: v.get("kind").and_then(Value::as_str).unwrap_or("error").to_string(),
            message: v.get("error").and_then(Value::as_str).unwrap_or("unknown error").to_string(),
        })
    }
}
