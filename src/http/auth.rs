//! Webhook caller authentication: shared tokens in headers and GitHub-style HMAC-SHA256 body
//! signatures, both compared in constant time.
//!
//! Owns only the checks; which credentials apply to which hook is decided by the caller
//! (`HttpConfig::auth_for`). Must never log or echo a credential, and must never compare secrets
//! with `==` (its early exit leaks how many leading bytes matched).

use hmac::{Hmac, Mac};
use hyper::HeaderMap;
use sha2::Sha256;

/// Header carrying the GitHub-style signature `sha256=<64 hex digits>`.
pub(super) const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// Headers that may carry the shared token, in the order they are consulted.
/// `st2-api-key` lets StackStorm webhook senders keep their configuration.
const TOKEN_HEADERS: [&str; 2] = ["x-packd-token", "st2-api-key"];

/// Why a caller was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum AuthError {
    /// No credential of the required kind → 401.
    #[error("{0}")]
    Missing(&'static str),
    /// A credential was presented and is wrong or malformed → 403.
    #[error("{0}")]
    Wrong(&'static str),
}

/// Check the shared token against `expected`.
pub(super) fn check_token(expected: &str, headers: &HeaderMap) -> Result<(), AuthError> {
    let presented = presented_token(headers)
        .ok_or(AuthError::Missing("Missing webhook token (send X-Packd-Token or Authorization: Bearer)"))?;
    if constant_time_eq(expected.as_bytes(), presented) {
        Ok(())
    } else {
        Err(AuthError::Wrong("Invalid webhook token"))
    }
}

fn presented_token(headers: &HeaderMap) -> Option<&[u8]> {
    for name in TOKEN_HEADERS {
        if let Some(value) = headers.get(name) {
            return Some(value.as_bytes());
        }
    }
    let auth = headers.get(hyper::header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = split_once(auth, b' ')?;
    scheme.eq_ignore_ascii_case(b"bearer").then(|| rest.trim_ascii())
}

fn split_once(s: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let at = s.iter().position(|&b| b == sep)?;
    Some((s.get(..at)?, s.get(at + 1..)?))
}

/// Read the signature header before the body is read, so a caller without one is refused
/// without us buffering its body.
pub(super) fn presented_signature(headers: &HeaderMap) -> Result<[u8; 32], AuthError> {
    let value = headers
        .get(SIGNATURE_HEADER)
        .ok_or(AuthError::Missing("Missing X-Hub-Signature-256 header (sha256=<hex HMAC of the body>)"))?;
    parse_signature(value.as_bytes())
        .ok_or(AuthError::Wrong("Malformed X-Hub-Signature-256 header (expected sha256=<64 hex digits>)"))
}

fn parse_signature(value: &[u8]) -> Option<[u8; 32]> {
    let hex = value.trim_ascii().strip_prefix(b"sha256=")?;
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let [hi, lo] = pair else { return None };
        *byte = (hex_digit(*hi)? << 4) | hex_digit(*lo)?;
    }
    Some(out)
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Verify `HMAC-SHA256(secret, body)` against the presented signature.
pub(super) fn verify_signature(secret: &str, body: &[u8], presented: &[u8; 32]) -> Result<(), AuthError> {
    let expected = hmac_sha256(secret.as_bytes(), body);
    if constant_time_eq(&expected, presented) {
        Ok(())
    } else {
        Err(AuthError::Wrong("Invalid X-Hub-Signature-256 signature"))
    }
}

pub(super) fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail; the fallback only
    // keeps this free of `expect`.
    match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            mac.finalize().into_bytes().into()
        }
        Err(_) => [0u8; 32],
    }
}

/// Compare a secret with a presented value in time that depends only on `expected.len()`:
/// every byte is visited, differences are OR-ed together, and a length mismatch is folded in
/// rather than returned early.
pub fn constant_time_eq(expected: &[u8], presented: &[u8]) -> bool {
    let mut diff = u8::from(expected.len() != presented.len());
    for (i, &e) in expected.iter().enumerate() {
        let p = presented.get(i).copied().unwrap_or(!e);
        diff |= e ^ p;
    }
    // Keep the optimiser from turning the loop back into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{Expect, expect};
    use hyper::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        map
    }

    fn check_tok(pairs: &[(&str, &str)], expect: Expect) {
        let got = check_token("s3cret", &headers(pairs));
        expect.assert_eq(&format!("{got:?}"));
    }

    #[test]
    fn tokens() {
        check_tok(&[("X-Packd-Token", "s3cret")], expect![[r#"Ok(())"#]]);
        check_tok(&[("St2-Api-Key", "s3cret")], expect![[r#"Ok(())"#]]);
        check_tok(&[("Authorization", "Bearer s3cret")], expect![[r#"Ok(())"#]]);
        check_tok(&[("Authorization", "bearer  s3cret ")], expect![[r#"Ok(())"#]]);
        check_tok(&[("X-Packd-Token", "s3cre")], expect![[r#"Err(Wrong("Invalid webhook token"))"#]]);
        check_tok(&[("X-Packd-Token", "s3cret2")], expect![[r#"Err(Wrong("Invalid webhook token"))"#]]);
        check_tok(
            &[("Authorization", "Basic czNjcmV0")],
            expect![[r#"Err(Missing("Missing webhook token (send X-Packd-Token or Authorization: Bearer)"))"#]],
        );
        check_tok(
            &[],
            expect![[r#"Err(Missing("Missing webhook token (send X-Packd-Token or Authorization: Bearer)"))"#]],
        );
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(!constant_time_eq(b"a", b""));
        // `presented` shorter than `expected` with the missing byte being 0 must still differ.
        assert!(!constant_time_eq(b"a\0", b"a"));
    }

    #[test]
    fn signatures() {
        // RFC 4231 test case 2.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        expect![[r#"5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"#]].assert_eq(&hex);
        let good = format!("sha256={hex}");
        let sig = presented_signature(&headers(&[("X-Hub-Signature-256", &good)])).unwrap();
        assert_eq!(verify_signature("Jefe", b"what do ya want for nothing?", &sig), Ok(()));
        assert_eq!(
            verify_signature("Jefe", b"what do ya want for nothing!", &sig),
            Err(AuthError::Wrong("Invalid X-Hub-Signature-256 signature"))
        );
        let upper = format!("sha256={}", hex.to_uppercase());
        assert_eq!(parse_signature(upper.as_bytes()), Some(mac));
        for bad in ["sha1=abcd", "sha256=zz", "sha256=", &good[..good.len() - 1]] {
            assert!(parse_signature(bad.as_bytes()).is_none(), "{bad}");
        }
        assert!(matches!(presented_signature(&headers(&[])), Err(AuthError::Missing(_))));
    }
}
