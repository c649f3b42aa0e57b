//! Encryption at rest for secret key/value entries.
//!
//! Owns the key file (`<data_dir>/packd.key`) and the value format. AES-256-GCM with a fresh
//! random 96-bit nonce per value; the stored text is `v1:` followed by the standard base64 of
//! `nonce || ciphertext || tag`. GCM authenticates, so a wrong key or a tampered value is a
//! clean [`CryptoError::Decrypt`], never garbage or a panic. The version prefix leaves room for
//! a later format (or key rotation) without guessing.
//!
//! The key file holds 32 random bytes as 64 hex digits. It is created with `O_EXCL` and mode
//! 0600 in the same `open(2)` call, so it is never readable by anyone else, not even briefly,
//! and a key file that group or other can read is refused (it may have been copied).
//!
//! This file must not log, print or `Debug` a key or a plaintext.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::aead::Aead;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

/// Name of the key file inside the data directory.
pub const KEY_FILE_NAME: &str = "packd.key";
/// AES-256 key length.
pub const KEY_LEN: usize = 32;
/// GCM's standard nonce size; random nonces of this size are safe for far more values than a
/// key/value store will ever hold (the birthday bound is around 2^32 encryptions per key).
pub const NONCE_LEN: usize = 12;
/// GCM authentication tag length.
const TAG_LEN: usize = 16;
/// Prefix of every stored ciphertext.
pub const CIPHERTEXT_PREFIX: &str = "v1:";
/// Largest key file we read: 64 hex digits plus a line ending, with slack. Anything bigger is
/// not a packd key, and the cap keeps a mistaken path (say, a log file) from being slurped.
pub const MAX_KEY_FILE_BYTES: u64 = 256;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("cannot {action} key file {}: {source}", path.display())]
    KeyIo {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "key file {} has mode {mode:04o}: it must not be readable or writable by group or \
         other (run `chmod 600 {}`)",
        path.display(),
        path.display()
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("key file {} is invalid: {reason}", path.display())]
    KeyFormat { path: PathBuf, reason: String },
    #[error("the system random number generator failed: {0}")]
    Random(String),
    #[error("encrypted value is malformed: {0}")]
    Malformed(&'static str),
    #[error("secret value could not be decrypted: wrong key file, or the value was altered")]
    Decrypt,
}

/// The loaded key. `Debug` never shows it.
pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    /// A box from raw key bytes (tests, and after the key file is read).
    pub fn from_key(key: &[u8; KEY_LEN]) -> Self {
        SecretBox { cipher: Aes256Gcm::new(&(*key).into()) }
    }

    /// Loads `<dir>/packd.key`, creating it with a fresh random key if it does not exist.
    pub fn load_or_create(dir: &Path) -> Result<Self, CryptoError> {
        let path = dir.join(KEY_FILE_NAME);
        match File::open(&path) {
            Ok(file) => Self::read_key(file, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(&path),
            Err(source) => Err(CryptoError::KeyIo { action: "open", path, source }),
        }
    }

    fn create(path: &Path) -> Result<Self, CryptoError> {
        let mut key = [0u8; KEY_LEN];
        getrandom::getrandom(&mut key).map_err(|e| CryptoError::Random(e.to_string()))?;
        // create_new = O_CREAT|O_EXCL: never reuse or truncate an existing file; mode 0600 is
        // applied by open(2) itself (the umask can only remove bits), so there is no window in
        // which the key is readable by others.
        let opened = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path);
        let mut file = match opened {
            Ok(f) => f,
            // Another process created it between our open and create: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let file = File::open(path).map_err(|source| CryptoError::KeyIo {
                    action: "open",
                    path: path.to_owned(),
                    source,
                })?;
                return Self::read_key(file, path);
            }
            Err(source) => {
                return Err(CryptoError::KeyIo { action: "create", path: path.to_owned(), source });
            }
        };
        let mut text = hex_encode(&key);
        text.push('\n');
        let io = |action| move |source| CryptoError::KeyIo { action, path: path.to_owned(), source };
        file.write_all(text.as_bytes()).map_err(io("write"))?;
        // The key must survive a power cut together with the secrets encrypted under it.
        file.sync_all().map_err(io("sync"))?;
        if let Some(parent) = path.parent() {
            File::open(parent).and_then(|d| d.sync_all()).map_err(io("sync the directory of"))?;
        }
        Ok(Self::from_key(&key))
    }

    fn read_key(file: File, path: &Path) -> Result<Self, CryptoError> {
        let io = |action| move |source| CryptoError::KeyIo { action, path: path.to_owned(), source };
        // Check the file we actually opened (no check-then-open race).
        let meta = file.metadata().map_err(io("inspect"))?;
        if !meta.is_file() {
            return Err(CryptoError::KeyFormat { path: path.to_owned(), reason: "not a regular file".into() });
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(CryptoError::KeyPermissions { path: path.to_owned(), mode });
        }
        let mut text = String::new();
        file.take(MAX_KEY_FILE_BYTES + 1).read_to_string(&mut text).map_err(io("read"))?;
        if text.len() as u64 > MAX_KEY_FILE_BYTES {
            return Err(CryptoError::KeyFormat {
                path: path.to_owned(),
                reason: format!("larger than {MAX_KEY_FILE_BYTES} bytes"),
            });
        }
        let key = hex_decode_key(text.trim()).ok_or_else(|| CryptoError::KeyFormat {
            path: path.to_owned(),
            reason: format!("expected {} hex digits", KEY_LEN * 2),
        })?;
        Ok(Self::from_key(&key))
    }

    /// Encrypts a plaintext into the stored `v1:` form.
    pub fn encrypt(&self, plaintext: &str) -> Result<String, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::getrandom(&mut nonce).map_err(|e| CryptoError::Random(e.to_string()))?;
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext.as_bytes())
            // Only fails for plaintexts near 64 GiB, far beyond the store's value limit.
            .map_err(|_| CryptoError::Malformed("plaintext too long to encrypt"))?;
        let mut raw = Vec::with_capacity(NONCE_LEN + sealed.len());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&sealed);
        Ok(format!("{CIPHERTEXT_PREFIX}{}", B64.encode(raw)))
    }

    /// Decrypts a stored `v1:` value.
    pub fn decrypt(&self, stored: &str) -> Result<String, CryptoError> {
        let body = stored.strip_prefix(CIPHERTEXT_PREFIX).ok_or(CryptoError::Malformed("missing the v1: prefix"))?;
        let raw = B64.decode(body).map_err(|_| CryptoError::Malformed("not base64"))?;
        if raw.len() < NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Malformed("too short"));
        }
        let (nonce, sealed) = raw.split_first_chunk::<NONCE_LEN>().ok_or(CryptoError::Malformed("too short"))?;
        let plain = self.cipher.decrypt(Nonce::from_slice(nonce), sealed).map_err(|_| CryptoError::Decrypt)?;
        String::from_utf8(plain).map_err(|_| CryptoError::Malformed("plaintext is not UTF-8"))
    }
}

fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

fn hex_decode_key(text: &str) -> Option<[u8; KEY_LEN]> {
    let digits = text.as_bytes();
    if digits.len() != KEY_LEN * 2 {
        return None;
    }
    let mut key = [0u8; KEY_LEN];
    for (slot, pair) in key.iter_mut().zip(digits.chunks_exact(2)) {
        let hi = char::from(*pair.first()?).to_digit(16)?;
        let lo = char::from(*pair.get(1)?).to_digit(16)?;
        *slot = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{Expect, expect};

    fn check_decrypt(stored: &str, expect: Expect) {
        let sb = SecretBox::from_key(&[7u8; KEY_LEN]);
        let got = match sb.decrypt(stored) {
            Ok(p) => format!("ok {p:?}"),
            Err(e) => format!("err {e}"),
        };
        expect.assert_eq(&got);
    }

    #[test]
    fn round_trip_uses_fresh_nonces() {
        let sb = SecretBox::from_key(&[7u8; KEY_LEN]);
        let a = sb.encrypt("hunter2").unwrap();
        let b = sb.encrypt("hunter2").unwrap();
        assert_ne!(a, b, "each value gets its own nonce");
        assert!(a.starts_with("v1:"));
        assert_eq!(sb.decrypt(&a).unwrap(), "hunter2");
        assert_eq!(sb.decrypt(&sb.encrypt("").unwrap()).unwrap(), "");
    }

    #[test]
    fn bad_values_are_clean_errors() {
        let good = SecretBox::from_key(&[7u8; KEY_LEN]).encrypt("x").unwrap();
        check_decrypt(&good, expect![[r#"ok "x""#]]);
        check_decrypt("hunter2", expect![[r#"err encrypted value is malformed: missing the v1: prefix"#]]);
        check_decrypt("v1:!!!", expect![[r#"err encrypted value is malformed: not base64"#]]);
        check_decrypt("v1:AAAA", expect![[r#"err encrypted value is malformed: too short"#]]);
        // Flip one character of the ciphertext body: GCM's tag catches it.
        let mut tampered: Vec<char> = good.chars().collect();
        if let Some(c) = tampered.get_mut(10) {
            *c = if *c == 'A' { 'B' } else { 'A' };
        }
        let tampered: String = tampered.into_iter().collect();
        check_decrypt(
            &tampered,
            expect![[r#"err secret value could not be decrypted: wrong key file, or the value was altered"#]],
        );
        // Another key.
        let other = SecretBox::from_key(&[8u8; KEY_LEN]);
        assert!(matches!(other.decrypt(&good), Err(CryptoError::Decrypt)));
    }

    #[test]
    fn key_file_created_0600_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let a = SecretBox::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE_NAME);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim().len(), 64);
        let b = SecretBox::load_or_create(dir.path()).unwrap();
        assert_eq!(b.decrypt(&a.encrypt("same key").unwrap()).unwrap(), "same key");
    }

    #[test]
    fn key_file_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        SecretBox::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE_NAME);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = SecretBox::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, CryptoError::KeyPermissions { mode: 0o640, .. }));
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn key_file_format_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE_NAME);
        let write = |text: &str| {
            let _ = std::fs::remove_file(&path);
            let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).unwrap();
            f.write_all(text.as_bytes()).unwrap();
        };
        write("abcd\n");
        let e = SecretBox::load_or_create(dir.path()).unwrap_err();
        assert!(e.to_string().contains("expected 64 hex digits"), "{e}");
        write(&"zz".repeat(32));
        assert!(matches!(SecretBox::load_or_create(dir.path()), Err(CryptoError::KeyFormat { .. })));
        // Over MAX_KEY_FILE_BYTES.
        write(&"a".repeat(MAX_KEY_FILE_BYTES as usize + 1));
        let e = SecretBox::load_or_create(dir.path()).unwrap_err();
        assert!(e.to_string().contains("larger than 256 bytes"), "{e}");
    }

    #[test]
    fn hex_round_trip() {
        let key: [u8; KEY_LEN] = std::array::from_fn(|i| (i * 37) as u8);
        assert_eq!(hex_decode_key(&hex_encode(&key)), Some(key));
        assert_eq!(hex_decode_key("é".repeat(32).as_str()), None);
    }
}
