//! Schema, migrations and connection set-up.
//!
//! Owns the numbered migrations (`MIGRATIONS[i]` brings the schema from version `i` to `i + 1`,
//! recorded in SQLite's `user_version`) and the pragmas every connection gets. Migrations run
//! once, at open, in one `BEGIN IMMEDIATE` transaction, before the writer thread starts: a
//! failed migration leaves the file exactly as it was. A database whose version is higher than
//! ours was written by a newer packd and is refused rather than misread.
//!
//! Rules for adding a migration: append, never edit a shipped entry; keep each one idempotent
//! only through `user_version` (no `IF NOT EXISTS` games); every status column carries a CHECK
//! with the same words as the enums in `model.rs`.
//!
//! This file must not contain queries that serve the API.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::Synchronous;
use super::error::StoreError;

/// WAL size kept on disk after a checkpoint. Without a limit a burst leaves a WAL file as large
/// as the burst forever; 64 MiB covers minutes of peak ingest while bounding disk use on a
/// small device.
pub const WAL_SIZE_LIMIT_BYTES: i64 = 64 * 1024 * 1024;

/// Every migration, in order. Index `i` upgrades version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: the initial schema. AUTOINCREMENT on the event tables so an id is never reused after
    // retention deletes the newest rows (ids appear in logs and in the CLI).
    r#"
CREATE TABLE executions (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    action_ref     TEXT    NOT NULL,
    runner         TEXT    NOT NULL,
    status         TEXT    NOT NULL CHECK (status IN ('requested','scheduled','delayed','running',
                        'succeeded','failed','timeout','canceling','canceled','abandoned')),
    parameters     TEXT    NOT NULL DEFAULT '{}',
    context        TEXT    NOT NULL DEFAULT '{}',
    result         TEXT,
    stdout         TEXT    NOT NULL DEFAULT '',
    stderr         TEXT    NOT NULL DEFAULT '',
    exit_code      INTEGER,
    error          TEXT,
    parent_id      INTEGER REFERENCES executions(id) ON DELETE SET NULL,
    enforcement_id INTEGER REFERENCES enforcements(id) ON DELETE SET NULL,
    created_at     INTEGER NOT NULL,
    started_at     INTEGER,
    finished_at    INTEGER,
    log            TEXT    NOT NULL DEFAULT '[]'
);
CREATE INDEX executions_created ON executions(created_at DESC);
CREATE INDEX executions_status ON executions(status, id);
CREATE INDEX executions_action ON executions(action_ref, id);
CREATE INDEX executions_parent ON executions(parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX executions_enforcement ON executions(enforcement_id) WHERE enforcement_id IS NOT NULL;
CREATE INDEX executions_finished ON executions(finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE trigger_instances (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    trigger_ref  TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    occurred_at  INTEGER NOT NULL,
    status       TEXT    NOT NULL CHECK (status IN ('pending','processing','processed','failed')),
    source       TEXT    NOT NULL CHECK (source IN ('timer','webhook','sensor','internal')),
    processed_at INTEGER
);
CREATE INDEX trigger_instances_status ON trigger_instances(status, id);
CREATE INDEX trigger_instances_ref ON trigger_instances(trigger_ref, id);
CREATE INDEX trigger_instances_processed ON trigger_instances(processed_at)
    WHERE processed_at IS NOT NULL;

CREATE TABLE enforcements (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    rule_ref            TEXT    NOT NULL,
    trigger_instance_id INTEGER NOT NULL REFERENCES trigger_instances(id) ON DELETE CASCADE,
    execution_id        INTEGER REFERENCES executions(id) ON DELETE SET NULL,
    status              TEXT    NOT NULL CHECK (status IN ('succeeded','failed')),
    failure_reason      TEXT,
    created_at          INTEGER NOT NULL,
    UNIQUE (rule_ref, trigger_instance_id)
);
CREATE INDEX enforcements_trigger_instance ON enforcements(trigger_instance_id);
CREATE INDEX enforcements_execution ON enforcements(execution_id) WHERE execution_id IS NOT NULL;

CREATE TABLE kv (
    scope      TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    secret     INTEGER NOT NULL DEFAULT 0 CHECK (secret IN (0, 1)),
    expires_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (scope, name)
) WITHOUT ROWID;
CREATE INDEX kv_expires ON kv(expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE packs (
    ref        TEXT    PRIMARY KEY,
    version    TEXT    NOT NULL,
    dialect    TEXT    NOT NULL,
    path       TEXT    NOT NULL,
    digest     TEXT    NOT NULL,
    status     TEXT    NOT NULL CHECK (status IN ('loaded','failed','stale')),
    load_error TEXT,
    loaded_at  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE reloads (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    at            INTEGER NOT NULL,
    packs_changed TEXT    NOT NULL,
    result        TEXT    NOT NULL
);

CREATE TABLE sensors (
    ref            TEXT    PRIMARY KEY,
    state          TEXT    NOT NULL CHECK (state IN ('starting','running','backoff','stopped','failed')),
    pid            INTEGER,
    restarts       INTEGER NOT NULL DEFAULT 0,
    last_exit_code INTEGER,
    last_signal    INTEGER,
    last_stderr    TEXT,
    updated_at     INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    // 2: which instance of a parameterised trigger an event belongs to (the webhook url, the
    // rule a timer belongs to), and rule enable/disable overrides set from the CLI.
    r#"
ALTER TABLE trigger_instances ADD COLUMN target TEXT;
CREATE TABLE rule_overrides (
    rule_ref   TEXT    PRIMARY KEY,
    enabled    INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
"#,
];

/// The schema version this build writes.
pub fn current_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Opens the write connection: WAL, the chosen durability, explicit busy timeout, foreign keys.
pub fn open_writer(path: &Path, sync: Synchronous, busy_timeout: Duration) -> Result<Connection, StoreError> {
    let open_err = |source| StoreError::Open { path: path.to_owned(), source };
    let conn = Connection::open(path).map_err(open_err)?;
    // rusqlite already sets 5 s; set it anyway so the value is ours and visible here. The
    // writer uses BEGIN IMMEDIATE, so it only waits here when another process (a CLI
    // `packd key set` against the same file, a backup) holds the write lock.
    conn.busy_timeout(busy_timeout).map_err(open_err)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)).map_err(open_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Invalid {
            field: "journal_mode",
            reason: format!("{} refused WAL mode (got {mode}); is it on a network filesystem?", path.display()),
        });
    }
    // NORMAL in WAL: a commit survives a crash of packd; a power cut may lose the last
    // transactions but never corrupts. FULL also fsyncs every commit (the group commit keeps
    // that affordable).
    conn.pragma_update(None, "synchronous", sync.as_pragma()).map_err(open_err)?;
    common_pragmas(&conn).map_err(open_err)?;
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT_BYTES).map_err(open_err)?;
    // The writer's statements are few and hot; keep them all prepared.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Opens a read-only connection for the reader pool and backups.
pub fn open_reader(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    let open_err = |source| StoreError::Open { path: path.to_owned(), source };
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
    conn.busy_timeout(busy_timeout).map_err(open_err)?;
    common_pragmas(&conn).map_err(open_err)?;
    Ok(conn)
}

fn common_pragmas(conn: &Connection) -> rusqlite::Result<()> {
    // The bundled SQLite defaults this on, but a connection must not depend on build flags.
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}

/// Brings the schema to [`current_version`] in one transaction. Returns the version found.
pub fn migrate(conn: &mut Connection, path: &Path) -> Result<i64, StoreError> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|source| StoreError::Open { path: path.to_owned(), source })?;
    let found: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|source| StoreError::Open { path: path.to_owned(), source })?;
    let supported = current_version();
    if found > supported {
        return Err(StoreError::SchemaTooNew { path: path.to_owned(), found, supported });
    }
    let start = usize::try_from(found).map_err(|_| StoreError::Invalid {
        field: "user_version",
        reason: format!("negative schema version {found}"),
    })?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(start) {
        let version = index + 1;
        tx.execute_batch(sql)
            .and_then(|()| tx.pragma_update(None, "user_version", version as i64))
            .map_err(|source| StoreError::Migration { version, source })?;
    }
    tx.commit()?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_idempotent_and_too_new_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut conn = open_writer(&path, Synchronous::Normal, Duration::from_secs(1)).unwrap();
        assert_eq!(migrate(&mut conn, &path).unwrap(), 0);
        assert_eq!(migrate(&mut conn, &path).unwrap(), current_version());
        let fk: bool = conn.pragma_query_value(None, "foreign_keys", |r| r.get(0)).unwrap();
        assert!(fk);

        conn.pragma_update(None, "user_version", current_version() + 1).unwrap();
        let err = migrate(&mut conn, &path).unwrap_err();
        assert!(matches!(err, StoreError::SchemaTooNew { .. }));
        assert!(err.to_string().contains("written by a newer packd"), "{err}");
    }

    #[test]
    fn not_a_database_is_an_open_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        std::fs::write(&path, vec![b'x'; 4096]).unwrap();
        let err = open_writer(&path, Synchronous::Normal, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, StoreError::Open { .. }), "{err}");
    }
}
