//! The `packs`, `reloads` and `sensors` tables: what is loaded, how reloads went, and how each
//! sensor process is doing.
//!
//! These are status records the CLI and `/metrics` read; the in-memory registry stays the
//! source of truth while the agent runs. Upserts replace the whole row. A sensor's stderr tail
//! is cut to its last [`MAX_SENSOR_STDERR_BYTES`] here, so a crash-looping sensor cannot grow
//! the row. This file must not read packs from disk or touch processes.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::error::StoreError;
use super::model::*;
use super::sql::{check_len, check_name, clamp_limit, json_col, to_json};
use super::{Env, MAX_DOC_BYTES, MAX_SENSOR_STDERR_BYTES, Work};

api! {
    /// Inserts or replaces a pack's row.
    write upsert_pack / upsert_pack_blocking (pack: PackRecord) -> () = upsert_pack_op;
    /// Removes a pack's row; whether it existed.
    write delete_pack / delete_pack_blocking (pack_ref: &str) -> bool = delete_pack_op;
    read get_pack / get_pack_blocking (pack_ref: &str) -> Option<PackRecord> = get_pack_op;
    /// Every pack, by ref.
    read list_packs / list_packs_blocking () -> Vec<PackRecord> = list_packs_op;
    /// Records one reload (its time is now); returns its id.
    write record_reload / record_reload_blocking
        (packs_changed: Vec<String>, result: String) -> i64 = record_reload_op;
    /// The most recent reloads, newest first.
    read list_reloads / list_reloads_blocking (limit: usize) -> Vec<Reload> = list_reloads_op;
    /// Inserts or replaces a sensor's row, stamping `updated_at`.
    write upsert_sensor / upsert_sensor_blocking (sensor: SensorUpdate) -> () = upsert_sensor_op;
    /// Removes a sensor's row; whether it existed.
    write delete_sensor / delete_sensor_blocking (sensor_ref: &str) -> bool = delete_sensor_op;
    read get_sensor / get_sensor_blocking (sensor_ref: &str) -> Option<SensorRecord>
        = get_sensor_op;
    /// Every sensor, by ref.
    read list_sensors / list_sensors_blocking () -> Vec<SensorRecord> = list_sensors_op;
}

const PACK_COLUMNS: &str = "ref, version, dialect, path, digest, status, load_error, loaded_at";
const SENSOR_COLUMNS: &str = "ref, state, pid, restarts, last_exit_code, last_signal, last_stderr, updated_at";

fn pack_row(row: &Row<'_>) -> rusqlite::Result<PackRecord> {
    Ok(PackRecord {
        pack_ref: row.get(0)?,
        version: row.get(1)?,
        dialect: row.get(2)?,
        path: row.get(3)?,
        digest: row.get(4)?,
        status: row.get(5)?,
        load_error: row.get(6)?,
        loaded_at: row.get(7)?,
    })
}

fn upsert_pack_op(_env: &Env, p: PackRecord) -> Result<impl Work<()>, StoreError> {
    check_name("pack ref", &p.pack_ref)?;
    for (what, text) in [("pack version", &p.version), ("pack dialect", &p.dialect), ("pack digest", &p.digest)] {
        check_len(what, text, super::MAX_NAME_BYTES)?;
    }
    check_len("pack path", &p.path, MAX_DOC_BYTES)?;
    if let Some(e) = &p.load_error {
        check_len("load_error", e, MAX_DOC_BYTES)?;
    }
    Ok(move |c: &Connection| {
        c.prepare_cached(
            "INSERT INTO packs (ref, version, dialect, path, digest, status, load_error, \
             loaded_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT (ref) DO UPDATE SET version = excluded.version, \
               dialect = excluded.dialect, path = excluded.path, digest = excluded.digest, \
               status = excluded.status, load_error = excluded.load_error, \
               loaded_at = excluded.loaded_at",
        )?
        .execute(params![
            p.pack_ref,
            p.version,
            p.dialect,
            p.path,
            p.digest,
            p.status,
            p.load_error,
            p.loaded_at
        ])?;
        Ok(())
    })
}

fn delete_pack_op(_env: &Env, pack_ref: &str) -> Result<impl Work<bool>, StoreError> {
    let pack_ref = pack_ref.to_owned();
    Ok(move |c: &Connection| Ok(c.prepare_cached("DELETE FROM packs WHERE ref = ?1")?.execute([pack_ref])? > 0))
}

fn get_pack_op(_env: &Env, pack_ref: &str) -> Result<impl Work<Option<PackRecord>>, StoreError> {
    let pack_ref = pack_ref.to_owned();
    Ok(move |c: &Connection| {
        let sql = format!("SELECT {PACK_COLUMNS} FROM packs WHERE ref = ?1");
        Ok(c.prepare_cached(&sql)?.query_row([pack_ref], pack_row).optional()?)
    })
}

fn list_packs_op(_env: &Env) -> Result<impl Work<Vec<PackRecord>>, StoreError> {
    Ok(move |c: &Connection| {
        let sql = format!("SELECT {PACK_COLUMNS} FROM packs ORDER BY ref");
        let mut stmt = c.prepare_cached(&sql)?;
        let rows = stmt.query_map([], pack_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    })
}

fn record_reload_op(env: &Env, packs_changed: Vec<String>, result: String) -> Result<impl Work<i64>, StoreError> {
    let changed = to_json("packs_changed", &serde_json::json!(packs_changed))?;
    check_len("reload result", &result, MAX_DOC_BYTES)?;
    let now = env.now();
    Ok(move |c: &Connection| {
        c.prepare_cached("INSERT INTO reloads (at, packs_changed, result) VALUES (?1, ?2, ?3)")?
            .execute(params![now, changed, result])?;
        Ok(c.last_insert_rowid())
    })
}

fn list_reloads_op(_env: &Env, limit: usize) -> Result<impl Work<Vec<Reload>>, StoreError> {
    let limit = clamp_limit(limit);
    Ok(move |c: &Connection| {
        let mut stmt =
            c.prepare_cached("SELECT id, at, packs_changed, result FROM reloads ORDER BY id DESC LIMIT ?1")?;
        let rows = stmt.query_map([limit], |r| {
            Ok(Reload { id: r.get(0)?, at: r.get(1)?, packs_changed: json_col(r, 2)?, result: r.get(3)? })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    })
}

/// The last `max` bytes of `text`, starting on a character boundary.
fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text.get(start..).unwrap_or("")
}

fn sensor_row(row: &Row<'_>) -> rusqlite::Result<SensorRecord> {
    Ok(SensorRecord {
        sensor_ref: row.get(0)?,
        state: row.get(1)?,
        pid: row.get(2)?,
        restarts: row.get(3)?,
        last_exit_code: row.get(4)?,
        last_signal: row.get(5)?,
        last_stderr: row.get(6)?,
        updated_at: row.get(7)?,
    })
}

fn upsert_sensor_op(env: &Env, s: SensorUpdate) -> Result<impl Work<()>, StoreError> {
    check_name("sensor ref", &s.sensor_ref)?;
    let stderr = s.last_stderr.as_deref().map(|e| tail(e, MAX_SENSOR_STDERR_BYTES).to_owned());
    let now = env.now();
    Ok(move |c: &Connection| {
        c.prepare_cached(
            "INSERT INTO sensors (ref, state, pid, restarts, last_exit_code, last_signal, \
             last_stderr, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT (ref) DO UPDATE SET state = excluded.state, pid = excluded.pid, \
               restarts = excluded.restarts, last_exit_code = excluded.last_exit_code, \
               last_signal = excluded.last_signal, last_stderr = excluded.last_stderr, \
               updated_at = excluded.updated_at",
        )?
        .execute(params![
            s.sensor_ref,
            s.state,
            s.pid,
            s.restarts,
            s.last_exit_code,
            s.last_signal,
            stderr,
            now
        ])?;
        Ok(())
    })
}

fn delete_sensor_op(_env: &Env, sensor_ref: &str) -> Result<impl Work<bool>, StoreError> {
    let sensor_ref = sensor_ref.to_owned();
    Ok(move |c: &Connection| Ok(c.prepare_cached("DELETE FROM sensors WHERE ref = ?1")?.execute([sensor_ref])? > 0))
}

fn get_sensor_op(_env: &Env, sensor_ref: &str) -> Result<impl Work<Option<SensorRecord>>, StoreError> {
    let sensor_ref = sensor_ref.to_owned();
    Ok(move |c: &Connection| {
        let sql = format!("SELECT {SENSOR_COLUMNS} FROM sensors WHERE ref = ?1");
        Ok(c.prepare_cached(&sql)?.query_row([sensor_ref], sensor_row).optional()?)
    })
}

fn list_sensors_op(_env: &Env) -> Result<impl Work<Vec<SensorRecord>>, StoreError> {
    Ok(move |c: &Connection| {
        let sql = format!("SELECT {SENSOR_COLUMNS} FROM sensors ORDER BY ref");
        let mut stmt = c.prepare_cached(&sql)?;
        let rows = stmt.query_map([], sensor_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::temp_store;
    use super::super::*;
    use super::tail;
    use expect_test::expect;

    fn pack(r: &str, status: PackStatus) -> PackRecord {
        PackRecord {
            pack_ref: r.into(),
            version: "1.0.0".into(),
            dialect: "st2".into(),
            path: format!("/etc/packd/packs/{r}"),
            digest: "sha256:00".into(),
            status,
            load_error: None,
            loaded_at: 1,
        }
    }

    #[test]
    fn packs_upsert_get_list_delete() {
        let (_dir, store) = temp_store();
        store.upsert_pack_blocking(pack("core", PackStatus::Loaded)).unwrap();
        store.upsert_pack_blocking(pack("aws", PackStatus::Loaded)).unwrap();
        store
            .upsert_pack_blocking(PackRecord {
                load_error: Some("actions/x.yaml:3: unknown runner".into()),
                ..pack("aws", PackStatus::Stale)
            })
            .unwrap();
        let aws = store.get_pack_blocking("aws").unwrap().unwrap();
        assert_eq!(aws.status, PackStatus::Stale);
        let refs: Vec<String> = store.list_packs_blocking().unwrap().into_iter().map(|p| p.pack_ref).collect();
        assert_eq!(refs, vec!["aws", "core"]);
        assert!(store.delete_pack_blocking("aws").unwrap());
        assert!(!store.delete_pack_blocking("aws").unwrap());
    }

    #[test]
    fn reloads_newest_first() {
        let (_dir, store) = temp_store();
        store.record_reload_blocking(vec!["core".into()], "ok".into()).unwrap();
        let id = store.record_reload_blocking(vec!["aws".into(), "st2".into()], "1 pack failed".into()).unwrap();
        let reloads = store.list_reloads_blocking(1).unwrap();
        assert_eq!(reloads.len(), 1);
        assert_eq!(reloads[0].id, id);
        assert_eq!(reloads[0].packs_changed, vec!["aws", "st2"]);
    }

    #[test]
    fn sensors_keep_only_a_stderr_tail() {
        let (_dir, store) = temp_store();
        let long = format!("{}\nTraceback: the end", "é".repeat(MAX_SENSOR_STDERR_BYTES));
        store
            .upsert_sensor_blocking(SensorUpdate {
                sensor_ref: "git.GitCommitSensor".into(),
                state: SensorState::Backoff,
                pid: None,
                restarts: 3,
                last_exit_code: Some(1),
                last_signal: None,
                last_stderr: Some(long),
            })
            .unwrap();
        let s = store.get_sensor_blocking("git.GitCommitSensor").unwrap().unwrap();
        let kept = s.last_stderr.unwrap();
        assert!(kept.len() <= MAX_SENSOR_STDERR_BYTES);
        assert!(kept.ends_with("Traceback: the end"));
        assert_eq!(s.state, SensorState::Backoff);
        assert_eq!(store.list_sensors_blocking().unwrap().len(), 1);
        assert!(store.delete_sensor_blocking("git.GitCommitSensor").unwrap());
    }

    #[test]
    fn tail_cuts_on_char_boundaries() {
        expect![["éf"]].assert_eq(tail("abcdéf", 3));
        expect![["abc"]].assert_eq(tail("abc", 3));
        expect![[""]].assert_eq(tail("é", 1));
    }
}
