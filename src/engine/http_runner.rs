//! The `http-request` runner (`core.http`, `core.http_request`): one HTTP request with a
//! maintained client, TLS verified by default, redirects off by default (as StackStorm), a
//! timeout, and a capped response body. The blocking client runs on the blocking pool; no child
//! process is involved, so that is safe.

use std::io::Read;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::pack::Action;
use crate::store::{Completion, ExecStatus};

/// Largest response body kept. Larger bodies are cut and the result says so; an edge device
/// should not buffer a download because an action asked for it.
pub const MAX_RESPONSE_BYTES: u64 = 4 * 1024 * 1024;

/// StackStorm's success codes for this runner (`range(200, 207)`).
const SUCCESS: std::ops::RangeInclusive<u16> = 200..=206;

use super::exec::completion as done;

fn fail(msg: String) -> Completion {
    done(ExecStatus::Failed, json!({"error": msg}), Some(msg))
}

fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit_once('@').map(|x| x.1).unwrap_or(authority);
    let host =
        if host.starts_with('[') { host.split(']').next()?.trim_start_matches('[') } else { host.split(':').next()? };
    Some(host.to_ascii_lowercase())
}

fn str_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_ascii_lowercase).collect())
        .unwrap_or_default()
}

pub async fn run(
    action: &Action,
    params: &Map<String, Value>,
    default_timeout: u64,
    cancel: smol::channel::Receiver<()>,
) -> Completion {
    let Some(url) = params.get("url").and_then(Value::as_str).map(str::to_string) else {
        return fail("parameter \"url\" is required".into());
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return fail(format!("url {url:?} must start with http:// or https://"));
    }
    let host = host_of(&url).unwrap_or_default();
    let black = str_list(params.get("url_hosts_blacklist"));
    let white = str_list(params.get("url_hosts_whitelist"));
    if !black.is_empty() && !white.is_empty() {
        return fail("url_hosts_blacklist and url_hosts_whitelist are mutually exclusive".into());
    }
    if black.contains(&host) || (!white.is_empty() && !white.contains(&host)) {
        return fail(format!("URL host {host:?} is not allowed by url_hosts_blacklist/whitelist"));
    }
    let timeout = params.get("timeout").and_then(Value::as_f64).filter(|t| *t > 0.0).unwrap_or(default_timeout as f64);
    let params = params.clone();
    let name = action.name.clone();
    let request = smol::unblock(move || send(&url, &params, &name, timeout));
    let canceled = async {
        // A closed channel means "never canceled".
        if cancel.recv().await.is_err() {
            std::future::pending::<()>().await;
        }
        done(ExecStatus::Canceled, json!({"error": "Execution canceled"}), Some("Execution canceled".into()))
    };
    smol::future::or(request, canceled).await
}

fn send(url: &str, p: &Map<String, Value>, action_name: &str, timeout: f64) -> Completion {
    let verify = p.get("verify_ssl_cert").and_then(Value::as_bool).unwrap_or(true);
    let redirects = if p.get("allow_redirects").and_then(Value::as_bool) == Some(true) { 10 } else { 0 };
    let mut cfg = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs_f64(timeout.min(86_400.0))))
        .max_redirects(redirects)
        .max_redirects_will_error(false)
        .http_status_as_error(false)
        .tls_config(ureq::tls::TlsConfig::builder().disable_verification(!verify).build());
    let proxy = if url.starts_with("https://") { p.get("https_proxy") } else { p.get("http_proxy") };
    if let Some(px) = proxy.and_then(Value::as_str).filter(|s| !s.is_empty()) {
        match ureq::Proxy::new(px) {
            Ok(px) => cfg = cfg.proxy(Some(px)),
            Err(e) => return fail(format!("invalid proxy {px:?}: {e}")),
        }
    }
    let agent: ureq::Agent = cfg.build().into();
    let method = p.get("method").and_then(Value::as_str).unwrap_or("GET").to_ascii_uppercase();
    let mut headers: Vec<(String, String)> = vec![
        ("User-Agent".into(), format!("packd/{}", env!("CARGO_PKG_VERSION"))),
        ("X-Stanley-Action".into(), action_name.to_string()),
    ];
    if let Some(Value::Object(h)) = p.get("headers") {
        for (k, v) in h {
            headers.push((k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())));
        }
    }
    if let Some(Value::Object(c)) = p.get("cookies") {
        let cookie: Vec<String> = c
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
            .collect();
        if !cookie.is_empty() {
            headers.push(("Cookie".into(), cookie.join("; ")));
        }
    }
    if let (Some(u), pw) = (p.get("username").and_then(Value::as_str), p.get("password").and_then(Value::as_str)) {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{}", pw.unwrap_or("")));
        headers.push(("Authorization".into(), format!("Basic {token}")));
    }
    let json_body =
        headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("content-type") && v.contains("application/json"));
    let body: Vec<u8> = match p.get("body") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.clone().into_bytes(),
        Some(other) if json_body => other.to_string().into_bytes(),
        Some(other) => other.to_string().into_bytes(),
    };
    let mut full_url = url.to_string();
    if let Some(Value::Object(q)) = p.get("params") {
        let pairs: Vec<String> = q
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    urlencode(k),
                    urlencode(&v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
                )
            })
            .collect();
        if !pairs.is_empty() {
            full_url.push(if full_url.contains('?') { '&' } else { '?' });
            full_url.push_str(&pairs.join("&"));
        }
    }
    let mut req = ureq::http::Request::builder().method(method.as_str()).uri(&full_url);
    for (k, v) in &headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = match req.body(body) {
        Ok(r) => r,
        Err(e) => return fail(format!("invalid request: {e}")),
    };
    let mut resp = match agent.run(req) {
        Ok(r) => r,
        Err(ureq::Error::Timeout(_)) => {
            let msg = format!("Request timed out after {timeout} seconds");
            return done(ExecStatus::Timeout, json!({"error": msg}), Some(msg));
        }
        Err(e) => return fail(format!("request to {url} failed: {e}")),
    };
    let status = resp.status().as_u16();
    let mut resp_headers = Map::new();
    for (k, v) in resp.headers() {
        resp_headers.insert(k.as_str().to_string(), Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()));
    }
    let is_json = resp_headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("content-type") && v.as_str().is_some_and(|v| v.contains("json")));
    let mut bytes = Vec::new();
    let reader = resp.body_mut().as_reader();
    if let Err(e) = reader.take(MAX_RESPONSE_BYTES).read_to_end(&mut bytes) {
        return fail(format!("reading the response from {url} failed: {e}"));
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (body, parsed) = match is_json.then(|| serde_json::from_str::<Value>(&text)) {
        Some(Ok(v)) => (v, true),
        _ => (Value::String(text), false),
    };
    let result = json!({"status_code": status, "body": body, "parsed": parsed, "headers": resp_headers});
    if SUCCESS.contains(&status) {
        done(ExecStatus::Succeeded, result, None)
    } else {
        let mut result = result;
        let msg = format!("HTTP {status}");
        result["error"] = Value::String(msg.clone());
        done(ExecStatus::Failed, result, Some(msg))
    }
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
