//! The `kv` table: StackStorm's datastore (st2kv) with scopes, TTLs and secrets.
//!
//! Owns three rules:
//! * **Expired is gone.** A key whose `expires_at` has passed is invisible to every read at
//!   once, and a set over it counts as a create; [`Store::purge_expired_kv`] reclaims the rows
//!   later in batches of [`PURGE_BATCH`].
//! * **Secrets are ciphertext before they leave the caller's thread.** The value is encrypted
//!   in the prepare step, so the plaintext never reaches the writer's SQL, the WAL or the file.
//!   Reads return the ciphertext unless `decrypt` is asked for (st2's `--decrypt`).
//! * **Writes say what changed** ([`KvChange`]) so the engine can emit
//!   `core.st2.key_value_pair.{create,update,value_change,delete}`.
//!
//! Scope names are stored as given (`st2kv.system`, `system`, `user:<name>`…); normalising
//! them is the caller's job. This file must not render templates.

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::crypto::SecretBox;
use super::error::StoreError;
use super::model::*;
use super::sql::{Listing, check_len, check_name};
use super::{Env, MAX_KV_VALUE_BYTES, PURGE_BATCH, Store, Work};

api! {
    /// Creates or replaces a key. A secret's value is encrypted before it is queued.
    write kv_set / kv_set_blocking (set: KvSet) -> KvChange = set_op;
    /// Deletes a key; returns the deleted entry (as stored) if it existed and had not expired.
    write kv_delete / kv_delete_blocking (scope: &str, name: &str) -> Option<KvEntry> = delete_op;
    /// Reads a key; `None` if absent or expired. A secret is returned as ciphertext unless
    /// `decrypt`.
    read kv_get / kv_get_blocking (scope: &str, name: &str, decrypt: bool) -> Option<KvEntry>
        = get_op;
    /// Lists live keys by scope and name prefix, ordered by scope, name.
    read kv_list / kv_list_blocking (filter: KvFilter) -> Vec<KvEntry> = list_op;
}

impl Store {
    /// Deletes expired keys, [`PURGE_BATCH`] per transaction, until none are left. Returns how
    /// many were deleted.
    pub async fn purge_expired_kv(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let n = self.write(purge_step(self.inner.env.now())).await?;
            total += n;
            if n < PURGE_BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// Blocking form of [`Store::purge_expired_kv`].
    pub fn purge_expired_kv_blocking(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let n = super::Blocking(self).write(purge_step(self.inner.env.now()))?;
            total += n;
            if n < PURGE_BATCH as u64 {
                return Ok(total);
            }
        }
    }
}

const COLUMNS: &str = "scope, name, value, secret, expires_at, created_at, updated_at";

fn entry_row(row: &Row<'_>) -> rusqlite::Result<KvEntry> {
    Ok(KvEntry {
        scope: row.get(0)?,
        name: row.get(1)?,
        value: row.get(2)?,
        secret: row.get(3)?,
        expires_at: row.get(4)?,
        created_at: row.get(5)?,
        updated_at: row.get(6)?,
    })
}

fn live(entry: &KvEntry, now: Micros) -> bool {
    entry.expires_at.is_none_or(|at| at > now)
}

fn set_op(env: &Env, set: KvSet) -> Result<impl Work<KvChange>, StoreError> {
    check_name("scope", &set.scope)?;
    check_name("key name", &set.name)?;
    let secret = set.secret || set.encrypted;
    // `plain` is kept only to tell whether a secret's value changed (ciphertexts always
    // differ); it stays in memory and is never bound into SQL.
    let (stored, plain) = if set.encrypted {
        let plain = env.secrets.decrypt(&set.value)?;
        check_len("value", &plain, MAX_KV_VALUE_BYTES)?;
        (set.value, plain)
    } else {
        check_len("value", &set.value, MAX_KV_VALUE_BYTES)?;
        if secret { (env.secrets.encrypt(&set.value)?, set.value) } else { (set.value.clone(), set.value) }
    };
    let now = env.now();
    let expires_at = set.ttl.map(|ttl| now.saturating_add(i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX)));
    let secrets = env.secrets.clone();
    let (scope, name) = (set.scope, set.name);
    Ok(move |c: &Connection| {
        let sql = format!("SELECT {COLUMNS} FROM kv WHERE scope = ?1 AND name = ?2");
        let previous =
            c.prepare_cached(&sql)?.query_row(params![scope, name], entry_row).optional()?.filter(|e| live(e, now));
        c.prepare_cached(
            "INSERT INTO kv (scope, name, value, secret, expires_at, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) \
             ON CONFLICT (scope, name) DO UPDATE SET value = excluded.value, \
               secret = excluded.secret, expires_at = excluded.expires_at, \
               updated_at = excluded.updated_at, \
               created_at = CASE WHEN ?7 THEN kv.created_at ELSE excluded.created_at END",
        )?
        .execute(params![scope, name, stored, secret, expires_at, now, previous.is_some()])?;
        Ok(match previous {
            None => KvChange::Created,
            Some(previous) => {
                let value_changed = value_changed(&secrets, &previous, secret, &plain);
                KvChange::Updated { previous, value_changed }
            }
        })
    })
}

fn value_changed(secrets: &Arc<SecretBox>, previous: &KvEntry, secret: bool, plain: &str) -> bool {
    if previous.secret != secret {
        return true;
    }
    if !secret {
        return previous.value != plain;
    }
    // An old value that no longer decrypts is certainly not the new one.
    !matches!(secrets.decrypt(&previous.value), Ok(old) if old == plain)
}

fn delete_op(env: &Env, scope: &str, name: &str) -> Result<impl Work<Option<KvEntry>>, StoreError> {
    let now = env.now();
    let (scope, name) = (scope.to_owned(), name.to_owned());
    Ok(move |c: &Connection| {
        let sql = format!("DELETE FROM kv WHERE scope = ?1 AND name = ?2 RETURNING {COLUMNS}");
        let gone = c.prepare_cached(&sql)?.query_row(params![scope, name], entry_row).optional()?;
        Ok(gone.filter(|e| live(e, now)))
    })
}

fn reveal(secrets: &SecretBox, mut entry: KvEntry, decrypt: bool) -> Result<KvEntry, StoreError> {
    if decrypt && entry.secret {
        entry.value = secrets.decrypt(&entry.value)?;
    }
    Ok(entry)
}

fn get_op(env: &Env, scope: &str, name: &str, decrypt: bool) -> Result<impl Work<Option<KvEntry>>, StoreError> {
    let now = env.now();
    let secrets = env.secrets.clone();
    let (scope, name) = (scope.to_owned(), name.to_owned());
    Ok(move |c: &Connection| {
        let sql = format!(
            "SELECT {COLUMNS} FROM kv WHERE scope = ?1 AND name = ?2 \
             AND (expires_at IS NULL OR expires_at > ?3)"
        );
        c.prepare_cached(&sql)?
            .query_row(params![scope, name, now], entry_row)
            .optional()?
            .map(|e| reveal(&secrets, e, decrypt))
            .transpose()
    })
}

fn list_op(env: &Env, filter: KvFilter) -> Result<impl Work<Vec<KvEntry>>, StoreError> {
    let now = env.now();
    let secrets = env.secrets.clone();
    Ok(move |c: &Connection| {
        let mut q = Listing::new(&format!("SELECT {COLUMNS} FROM kv"));
        q.filter("(expires_at IS NULL OR expires_at > ?)", Some(now));
        q.filter("scope = ?", filter.scope);
        // substr/length count characters on both sides, so any UTF-8 prefix matches exactly
        // (LIKE would need escaping of % and _ and is case-insensitive for ASCII).
        q.filter("substr(name, 1, length(?)) = ?", filter.prefix.filter(|p| !p.is_empty()));
        let rows = q.run(c, "scope, name", filter.limit, entry_row)?;
        rows.into_iter().map(|e| reveal(&secrets, e, filter.decrypt)).collect()
    })
}

fn purge_step(now: Micros) -> impl Work<u64> {
    move |c: &Connection| {
        let n = c
            .prepare_cached(
                "DELETE FROM kv WHERE (scope, name) IN \
                 (SELECT scope, name FROM kv WHERE expires_at <= ?1 LIMIT ?2)",
            )?
            .execute(params![now, PURGE_BATCH as i64])?;
        Ok(n as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{temp_store, temp_store_with_clock};
    use super::super::*;
    use expect_test::expect;
    use std::time::Duration;

    fn kv(name: &str, value: &str) -> KvSet {
        KvSet { scope: "st2kv.system".into(), name: name.into(), value: value.into(), ..Default::default() }
    }

    fn change(c: &KvChange) -> String {
        match c {
            KvChange::Created => "created".into(),
            KvChange::Updated { previous, value_changed } => {
                format!("updated(prev={:?}, changed={value_changed})", previous.value)
            }
        }
    }

    #[test]
    fn set_get_delete_report_changes() {
        let (_dir, store) = temp_store();
        let out = [("1"), ("1"), ("2")].map(|v| change(&store.kv_set_blocking(kv("a", v)).unwrap()));
        expect![[r#"["created", "updated(prev=\"1\", changed=false)", "updated(prev=\"1\", changed=true)"]"#]]
            .assert_eq(&format!("{out:?}"));
        let got = store.kv_get_blocking("st2kv.system", "a", false).unwrap().unwrap();
        assert_eq!(got.value, "2");
        assert!(store.kv_get_blocking("st2kv.user", "a", false).unwrap().is_none());
        let gone = store.kv_delete_blocking("st2kv.system", "a").unwrap();
        assert_eq!(gone.map(|e| e.value), Some("2".to_owned()));
        assert!(store.kv_delete_blocking("st2kv.system", "a").unwrap().is_none());
    }

    #[test]
    fn ttl_expiry_is_immediately_invisible() {
        let (_dir, store, clock) = temp_store_with_clock();
        store.kv_set_blocking(KvSet { ttl: Some(Duration::from_secs(10)), ..kv("tmp", "v") }).unwrap();
        store.kv_set_blocking(kv("keep", "v")).unwrap();
        clock.advance(Duration::from_secs(9));
        assert!(store.kv_get_blocking("st2kv.system", "tmp", false).unwrap().is_some());
        clock.advance(Duration::from_secs(1));
        assert!(store.kv_get_blocking("st2kv.system", "tmp", false).unwrap().is_none());
        let names: Vec<String> =
            store.kv_list_blocking(KvFilter::default()).unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, vec!["keep"]);
        // Setting over an expired key is a create; deleting it reports nothing.
        assert_eq!(
            store.kv_set_blocking(KvSet { ttl: Some(Duration::from_secs(1)), ..kv("tmp", "w") }).unwrap(),
            KvChange::Created
        );
        clock.advance(Duration::from_secs(2));
        assert!(store.kv_delete_blocking("st2kv.system", "tmp").unwrap().is_none());
    }

    #[test]
    fn purge_expired_in_batches() {
        let (_dir, store, clock) = temp_store_with_clock();
        let n = PURGE_BATCH + 3;
        let expires = store.now() + 1;
        Blocking(&store)
            .write(move |c| {
                for i in 0..n {
                    c.execute(
                        "INSERT INTO kv VALUES ('s', ?1, 'v', 0, ?2, 0, 0)",
                        rusqlite::params![format!("k{i}"), expires],
                    )?;
                }
                Ok(())
            })
            .unwrap();
        store.kv_set_blocking(kv("stays", "v")).unwrap();
        clock.advance(Duration::from_secs(1));
        let before = store.stats().commits;
        assert_eq!(store.purge_expired_kv_blocking().unwrap(), n as u64);
        assert_eq!(store.stats().commits - before, 2, "two batches");
        assert_eq!(smol::block_on(store.purge_expired_kv()).unwrap(), 0);
        assert_eq!(store.kv_list_blocking(KvFilter::default()).unwrap().len(), 1);
    }

    #[test]
    fn list_by_scope_and_prefix() {
        let (_dir, store) = temp_store();
        for (scope, name) in [
            ("st2kv.system", "app.a"),
            ("st2kv.system", "app.b"),
            ("st2kv.system", "apple"),
            ("st2kv.system", "ap%_"),
            ("st2kv.user", "app.c"),
        ] {
            store.kv_set_blocking(KvSet { scope: scope.into(), ..kv(name, "v") }).unwrap();
        }
        let names = |f: KvFilter| -> Vec<String> {
            store.kv_list_blocking(f).unwrap().into_iter().map(|e| format!("{}/{}", e.scope, e.name)).collect()
        };
        expect![[r#"["st2kv.system/app.a", "st2kv.system/app.b", "st2kv.user/app.c"]"#]]
            .assert_eq(&format!("{:?}", names(KvFilter { prefix: Some("app.".into()), ..Default::default() })));
        expect![[r#"["st2kv.system/ap%_"]"#]].assert_eq(&format!(
            "{:?}",
            names(KvFilter { scope: Some("st2kv.system".into()), prefix: Some("ap%".into()), ..Default::default() })
        ));
        assert_eq!(names(KvFilter { limit: 2, ..Default::default() }).len(), 2);
    }

    #[test]
    fn secrets_are_encrypted_and_decrypt_on_request() {
        let (_dir, store) = temp_store();
        store.kv_set_blocking(KvSet { secret: true, ..kv("token", "s3cr3t-value") }).unwrap();
        let raw = store.kv_get_blocking("st2kv.system", "token", false).unwrap().unwrap();
        assert!(raw.secret);
        assert!(raw.value.starts_with(CIPHERTEXT_PREFIX), "{}", raw.value);
        let plain = store.kv_get_blocking("st2kv.system", "token", true).unwrap().unwrap();
        assert_eq!(plain.value, "s3cr3t-value");
        let listed = store.kv_list_blocking(KvFilter { decrypt: true, ..Default::default() }).unwrap();
        assert_eq!(listed[0].value, "s3cr3t-value");

        // Same plaintext again: not a value change even though the ciphertext differs.
        let c = store.kv_set_blocking(KvSet { secret: true, ..kv("token", "s3cr3t-value") }).unwrap();
        assert!(matches!(c, KvChange::Updated { value_changed: false, .. }), "{c:?}");

        // st2 --encrypted: a ciphertext from this key is accepted as is...
        let c = store.kv_set_blocking(KvSet { encrypted: true, ..kv("copy", &raw.value) }).unwrap();
        assert_eq!(c, KvChange::Created);
        let copy = store.kv_get_blocking("st2kv.system", "copy", true).unwrap().unwrap();
        assert_eq!(copy.value, "s3cr3t-value");
        // ...and garbage is refused before it is stored.
        let err = store
            .kv_set_blocking(KvSet { encrypted: true, ..kv("bad", "v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA") })
            .unwrap_err();
        assert!(matches!(err, StoreError::Crypto(CryptoError::Decrypt)), "{err}");
    }

    #[test]
    fn tampered_secret_is_a_clean_error() {
        let (_dir, store) = temp_store();
        store.kv_set_blocking(KvSet { secret: true, ..kv("token", "abc") }).unwrap();
        Blocking(&store)
            .write(|c| Ok(c.execute("UPDATE kv SET value = 'v1:' || substr(value, 5) WHERE name = 'token'", [])?))
            .unwrap();
        let err = store.kv_get_blocking("st2kv.system", "token", true).unwrap_err();
        assert!(matches!(err, StoreError::Crypto(_)), "{err}");
        // Without decrypt the stored value is still readable.
        assert!(store.kv_get_blocking("st2kv.system", "token", false).is_ok());
    }

    #[test]
    fn secret_plaintext_never_reaches_the_database_files() {
        let dir = tempfile::tempdir().unwrap();
        let plaintext = "PLAINTEXT-CANARY-7f3a9c";
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        store.kv_set_blocking(KvSet { secret: true, ..kv("canary", plaintext) }).unwrap();
        // Overwrite it too, so an old page image could exist in the WAL.
        store.kv_set_blocking(KvSet { secret: true, ..kv("canary", &format!("{plaintext}-2")) }).unwrap();
        let contains = |path: &std::path::Path| -> bool {
            std::fs::read(path)
                .map(|bytes| bytes.windows(plaintext.len()).any(|w| w == plaintext.as_bytes()))
                .unwrap_or(false)
        };
        let db = dir.path().join(DB_FILE_NAME);
        let wal = dir.path().join(format!("{DB_FILE_NAME}-wal"));
        assert!(std::fs::metadata(&wal).is_ok(), "WAL exists while open");
        assert!(!contains(&wal), "plaintext in the live WAL");
        assert!(!contains(&db), "plaintext in the live database");
        store.close();
        drop(store);
        assert!(!contains(&db), "plaintext in the database after close");
        assert!(!contains(&wal), "plaintext in the WAL after close");
        // Positive control: the search does find a non-secret value.
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        store.kv_set_blocking(kv("open", plaintext)).unwrap();
        drop(store);
        assert!(contains(&db) || contains(&wal));
    }

    #[test]
    fn limits_on_names_and_values() {
        let (_dir, store) = temp_store();
        let err = store.kv_set_blocking(kv("big", &"x".repeat(MAX_KV_VALUE_BYTES + 1))).unwrap_err();
        expect![["value is 1048577 bytes, over the limit of 1048576 bytes"]].assert_eq(&err.to_string());
        let err = store.kv_set_blocking(kv(&"n".repeat(MAX_NAME_BYTES + 1), "v")).unwrap_err();
        assert!(matches!(err, StoreError::TooLarge { what: "key name", .. }));
        let err = store.kv_set_blocking(kv("", "v")).unwrap_err();
        expect![["invalid key name: must not be empty"]].assert_eq(&err.to_string());
    }
}
