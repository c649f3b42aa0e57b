//! Turns a webhook request into StackStorm's payload pieces: headers as `{Title-Case: value}`
//! and `{lower-case: value}`, and the body as JSON (JSON bodies), or as a dict of lists (form
//! and multipart bodies, like Python's `parse_qs`).
//!
//! Pure functions over bytes; no I/O, no size checks (the body is already capped at
//! `MAX_BODY_BYTES` by the caller). Input is untrusted: nothing here may panic on it.

use hyper::HeaderMap;
use serde_json::{Map, Value};

/// Headers that carry credentials. They are dropped from stored payloads: events end up in the
/// database, logs and rule parameters, where secrets must not (StackStorm drops its own auth
/// headers and `Cookie` the same way).
const CREDENTIAL_HEADERS: [&str; 5] = ["authorization", "cookie", "st2-api-key", "x-auth-token", "x-packd-token"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum BodyError {
    #[error("Failed to parse request body as JSON: {0}")]
    Json(String),
    #[error("Webhook body must be a JSON object or array, got {0}")]
    NotContainer(&'static str),
    #[error("Malformed multipart body: {0}")]
    Multipart(&'static str),
}

/// `(headers, headers_lower)` as StackStorm builds them. StackStorm reads headers through WSGI,
/// where `X-GitHub-Event` arrives as `HTTP_X_GITHUB_EVENT` and comes back as `X-Github-Event`
/// (Python's `str.title()`); rules are written against those names, so we produce the same.
/// Repeated headers are joined with ", " (what WSGI servers do). Credential headers are dropped.
pub(super) fn header_maps(headers: &HeaderMap) -> (Value, Value) {
    let mut titled = Map::new();
    let mut lower = Map::new();
    for name in headers.keys() {
        let key = name.as_str();
        if CREDENTIAL_HEADERS.contains(&key) {
            continue;
        }
        let joined = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ");
        titled.insert(title_case(key), Value::String(joined.clone()));
        lower.insert(key.to_owned(), Value::String(joined));
    }
    (Value::Object(titled), Value::Object(lower))
}

/// Python's `str.title()` on ASCII: a letter is upper-cased after a non-letter, lower-cased after
/// a letter (`x-b3-traceid` → `X-B3-Traceid`).
pub(super) fn title_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut after_letter = false;
    for c in name.chars() {
        if c.is_alphabetic() {
            if after_letter {
                out.extend(c.to_lowercase());
            } else {
                out.extend(c.to_uppercase());
            }
            after_letter = true;
        } else {
            out.push(c);
            after_letter = false;
        }
    }
    out
}

/// The media type of a `Content-Type` value, lower-cased, parameters dropped.
fn media_type(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

/// Parse a webhook body by content type. JSON is also tried for a missing or unknown type
/// (many senders omit it); an empty body is `{}` as in StackStorm.
pub(super) fn parse_body(content_type: Option<&str>, raw: &[u8]) -> Result<Value, BodyError> {
    let ct = content_type.unwrap_or_default();
    match media_type(ct).as_str() {
        "application/x-www-form-urlencoded" => Ok(parse_form(raw)),
        "multipart/form-data" => {
            let boundary =
                content_type_param(ct, "boundary").ok_or(BodyError::Multipart("no boundary in Content-Type"))?;
            parse_multipart(raw, &boundary)
        }
        _ => parse_json(raw),
    }
}

fn parse_json(raw: &[u8]) -> Result<Value, BodyError> {
    if raw.is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    // serde_json stops at 128 levels of nesting, so deep bodies are an error, not a crash.
    let value: Value = serde_json::from_slice(raw).map_err(|e| BodyError::Json(e.to_string()))?;
    match value {
        Value::Object(_) | Value::Array(_) => Ok(value),
        Value::Null => Err(BodyError::NotContainer("null")),
        Value::Bool(_) => Err(BodyError::NotContainer("a boolean")),
        Value::Number(_) => Err(BodyError::NotContainer("a number")),
        Value::String(_) => Err(BodyError::NotContainer("a string")),
    }
}

/// A parameter of a header value such as `multipart/form-data; boundary="x y"`.
fn content_type_param(value: &str, param: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|part| {
        let (k, v) = part.split_once('=')?;
        k.trim().eq_ignore_ascii_case(param).then(|| unquote(v.trim()))
    })
}

fn unquote(v: &str) -> String {
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => v.to_owned(),
    }
}

/// Append `value` to the list under `key`, creating it.
fn push(map: &mut Map<String, Value>, key: String, value: String) {
    match map.get_mut(&key) {
        Some(Value::Array(list)) => list.push(Value::String(value)),
        _ => {
            map.insert(key, Value::Array(vec![Value::String(value)]));
        }
    }
}

/// `application/x-www-form-urlencoded` → dict of lists, as Python's `parse_qs` with its
/// defaults: fields split on `&`, `+` is a space, `%XX` decoded (invalid escapes kept, invalid
/// UTF-8 replaced), fields without `=` or with an empty value dropped.
pub(super) fn parse_form(raw: &[u8]) -> Value {
    let mut map = Map::new();
    for field in raw.split(|&b| b == b'&') {
        let Some(eq) = field.iter().position(|&b| b == b'=') else {
            continue;
        };
        let (name, value) = (field.get(..eq), field.get(eq + 1..));
        let (Some(name), Some(value)) = (name, value) else {
            continue;
        };
        if value.is_empty() {
            continue;
        }
        push(&mut map, form_decode(name), form_decode(value));
    }
    Value::Object(map)
}

/// Decode `+` and `%XX` of a form field.
fn form_decode(s: &[u8]) -> String {
    let plus: Vec<u8> = s.iter().map(|&b| if b == b'+' { b' ' } else { b }).collect();
    percent_decode(&plus)
}

/// Decode `%XX` escapes; a `%` not followed by two hex digits is kept as is (like Python's
/// `unquote`). Invalid UTF-8 becomes U+FFFD.
pub(super) fn percent_decode(s: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        if b == b'%' {
            let hi = s.get(i + 1).and_then(|&c| hex(c));
            let lo = s.get(i + 2).and_then(|&c| hex(c));
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let tail = haystack.get(from..)?;
    if needle.is_empty() {
        return Some(from);
    }
    tail.windows(needle.len()).position(|w| w == needle).map(|p| p + from)
}

/// `multipart/form-data` → dict of lists of strings: each part's `name` maps to its content
/// (uploaded files included, as text; non-UTF-8 bytes are replaced). Parts without a name are
/// skipped.
pub(super) fn parse_multipart(raw: &[u8], boundary: &str) -> Result<Value, BodyError> {
    if boundary.is_empty() {
        return Err(BodyError::Multipart("empty boundary"));
    }
    let delimiter = format!("--{boundary}");
    let next_part = format!("\r\n--{boundary}");
    let mut map = Map::new();
    let mut pos =
        find(raw, delimiter.as_bytes(), 0).ok_or(BodyError::Multipart("boundary not found"))? + delimiter.len();
    loop {
        let rest = raw.get(pos..).unwrap_or_default();
        if rest.starts_with(b"--") {
            break; // closing delimiter
        }
        // The rest of the delimiter line (transport padding) ends with CRLF.
        let line_end = find(raw, b"\r\n", pos).ok_or(BodyError::Multipart("unterminated delimiter line"))?;
        let head_start = line_end + 2;
        let (head, content_start) = if raw.get(head_start..).unwrap_or_default().starts_with(b"\r\n") {
            (&[][..], head_start + 2)
        } else {
            let head_end =
                find(raw, b"\r\n\r\n", head_start).ok_or(BodyError::Multipart("part headers not terminated"))?;
            (raw.get(head_start..head_end).unwrap_or_default(), head_end + 4)
        };
        let content_end = find(raw, next_part.as_bytes(), content_start)
            .ok_or(BodyError::Multipart("part not terminated by the boundary"))?;
        let content = raw.get(content_start..content_end).unwrap_or_default();
        if let Some(name) = part_name(head) {
            push(&mut map, name, String::from_utf8_lossy(content).into_owned());
        }
        pos = content_end + next_part.len();
    }
    Ok(Value::Object(map))
}

/// The `name` parameter of a part's `Content-Disposition: form-data; name="..."` header.
fn part_name(head: &[u8]) -> Option<String> {
    let head = String::from_utf8_lossy(head);
    head.split("\r\n").find_map(|line| {
        let (k, v) = line.split_once(':')?;
        if !k.trim().eq_ignore_ascii_case("content-disposition") {
            return None;
        }
        content_type_param(v, "name")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{Expect, expect};
    use hyper::header::{HeaderName, HeaderValue};

    fn check(content_type: Option<&str>, raw: &str, expect: Expect) {
        let got = match parse_body(content_type, raw.as_bytes()) {
            Ok(v) => v.to_string(),
            Err(e) => format!("error: {e}"),
        };
        expect.assert_eq(&got);
    }

    #[test]
    fn json_bodies() {
        check(None, r#"{"a": 1}"#, expect![[r#"{"a":1}"#]]);
        check(Some("application/json"), "[1,2]", expect![[r#"[1,2]"#]]);
        check(Some("application/json; charset=utf-8"), "", expect![[r#"{}"#]]);
        check(Some("text/plain"), r#"{"t":"x"}"#, expect![[r#"{"t":"x"}"#]]);
        check(
            Some("application/json"),
            r#"{"a": }"#,
            expect![[r#"error: Failed to parse request body as JSON: expected value at line 1 column 7"#]],
        );
        check(None, "42", expect![[r#"error: Webhook body must be a JSON object or array, got a number"#]]);
        let deep = "[".repeat(200) + &"]".repeat(200);
        check(
            None,
            &deep,
            expect![[r#"error: Failed to parse request body as JSON: recursion limit exceeded at line 1 column 128"#]],
        );
    }

    #[test]
    fn form_bodies() {
        let form = Some("Application/X-WWW-Form-Urlencoded; charset=utf-8");
        check(form, "a=1&a=2&b=3", expect![[r#"{"a":["1","2"],"b":["3"]}"#]]);
        check(
            form,
            "msg=hello+world%21&x=%zz&flag&empty=&=anon",
            expect![[r#"{"msg":["hello world!"],"x":["%zz"],"":["anon"]}"#]],
        );
        check(form, "k%C3%A9=%FF", expect![[r#"{"ké":["�"]}"#]]);
        check(form, "", expect![[r#"{}"#]]);
    }

    #[test]
    fn multipart_bodies() {
        let body = "preamble\r\n--XyZ\r\n\
            Content-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n\
            --XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nline1\r\nline2\r\n\
            --XyZ\r\nContent-Disposition: form-data; name=\"up\"; filename=\"f.txt\"\r\n\
            Content-Type: text/plain\r\n\r\nfile text\r\n\
            --XyZ\r\n\r\nnameless\r\n\
            --XyZ--\r\nepilogue";
        check(
            Some("multipart/form-data; boundary=XyZ"),
            body,
            expect![[r#"{"a":["1","line1\r\nline2"],"up":["file text"]}"#]],
        );
        check(
            Some("multipart/form-data; boundary=\"XyZ\""),
            "--XyZ\r\ncontent-disposition: form-data; name=q\r\n\r\n\r\n--XyZ--",
            expect![[r#"{"q":[""]}"#]],
        );
        check(
            Some("multipart/form-data"),
            "x",
            expect![[r#"error: Malformed multipart body: no boundary in Content-Type"#]],
        );
        check(
            Some("multipart/form-data; boundary=XyZ"),
            "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nno end",
            expect![[r#"error: Malformed multipart body: part not terminated by the boundary"#]],
        );
        check(
            Some("multipart/form-data; boundary=XyZ"),
            "nothing here",
            expect![[r#"error: Malformed multipart body: boundary not found"#]],
        );
        check(
            Some("multipart/form-data; boundary=XyZ"),
            "--XyZ",
            expect![[r#"error: Malformed multipart body: unterminated delimiter line"#]],
        );
    }

    #[test]
    fn headers_as_stackstorm_sees_them() {
        let mut map = HeaderMap::new();
        for (k, v) in [
            ("x-github-event", "push"),
            ("content-type", "application/json"),
            ("x-b3-traceid", "1"),
            ("accept", "a"),
            ("accept", "b"),
            ("authorization", "Bearer t"),
            ("cookie", "c=1"),
            ("x-packd-token", "t"),
        ] {
            map.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let (titled, lower) = header_maps(&map);
        expect![[r#"{"X-Github-Event":"push","Content-Type":"application/json","X-B3-Traceid":"1","Accept":"a, b"}"#]]
            .assert_eq(&titled.to_string());
        expect![[r#"{"x-github-event":"push","content-type":"application/json","x-b3-traceid":"1","accept":"a, b"}"#]]
            .assert_eq(&lower.to_string());
        assert_eq!(title_case("x-hub-signature-256"), "X-Hub-Signature-256");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode(b"github%2Fpush"), "github/push");
        assert_eq!(percent_decode(b"a%2"), "a%2");
        assert_eq!(percent_decode(b"%"), "%");
        assert_eq!(percent_decode(b"a+b"), "a+b");
    }
}
