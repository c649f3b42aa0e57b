//! Retention and backup.
//!
//! Owns deleting old completed records in small batches (each batch its own short write, so
//! ingest interleaves with a large purge) and online backup with `VACUUM INTO` on a reader
//! connection (WAL lets it copy a consistent snapshot while the writer keeps going).
//!
//! What retention deletes, when older than the cut-off:
//! * executions in a terminal status, by `finished_at`;
//! * trigger instances `processed` or `failed`, by `processed_at` (their enforcements go with
//!   them: ON DELETE CASCADE; executions that pointed at those enforcements keep running
//!   with `enforcement_id` NULL);
//! * reload records, by `at`.
//!
//! Pending trigger instances and in-flight executions are never deleted, whatever their age.
//! This file must not decide the retention age (configuration does).

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, params};

use super::error::StoreError;
use super::model::*;
use super::{Blocking, PURGE_BATCH, Store, Work};

/// One batch of one table.
#[derive(Debug, Clone, Copy)]
enum Target {
    Executions,
    TriggerInstances,
    Reloads,
}

const TARGETS: [Target; 3] = [Target::Executions, Target::TriggerInstances, Target::Reloads];

fn purge_step(target: Target, cutoff: Micros) -> impl Work<u64> {
    move |c: &Connection| {
        let sql = match target {
            Target::Executions => {
                "DELETE FROM executions WHERE id IN (SELECT id FROM executions \
                 WHERE finished_at < ?1 AND status IN \
                 ('succeeded','failed','timeout','canceled','abandoned') LIMIT ?2)"
            }
            Target::TriggerInstances => {
                "DELETE FROM trigger_instances WHERE id IN (SELECT id FROM trigger_instances \
                 WHERE processed_at < ?1 AND status IN ('processed','failed') LIMIT ?2)"
            }
            Target::Reloads => "DELETE FROM reloads WHERE id IN (SELECT id FROM reloads WHERE at < ?1 LIMIT ?2)",
        };
        let n = c.prepare_cached(sql)?.execute(params![cutoff, PURGE_BATCH as i64])?;
        Ok(n as u64)
    }
}

fn tally(report: &mut PurgeReport, target: Target, n: u64) {
    report.batches += 1;
    match target {
        Target::Executions => report.executions += n,
        Target::TriggerInstances => report.trigger_instances += n,
        Target::Reloads => report.reloads += n,
    }
}

fn cutoff(store: &Store, age: Duration) -> Micros {
    let age = i64::try_from(age.as_micros()).unwrap_or(i64::MAX);
    store.now().saturating_sub(age)
}

impl Store {
    /// Deletes completed records older than `age`, at most [`PURGE_BATCH`] rows per write.
    pub async fn purge_completed_older_than(&self, age: Duration) -> Result<PurgeReport, StoreError> {
        let cutoff = cutoff(self, age);
        let mut report = PurgeReport::default();
        for target in TARGETS {
            loop {
                let n = self.write(purge_step(target, cutoff)).await?;
                tally(&mut report, target, n);
                if n < PURGE_BATCH as u64 {
                    break;
                }
            }
        }
        Ok(report)
    }

    /// Blocking form of [`Store::purge_completed_older_than`].
    pub fn purge_completed_older_than_blocking(&self, age: Duration) -> Result<PurgeReport, StoreError> {
        let cutoff = cutoff(self, age);
        let mut report = PurgeReport::default();
        for target in TARGETS {
            loop {
                let n = Blocking(self).write(purge_step(target, cutoff))?;
                tally(&mut report, target, n);
                if n < PURGE_BATCH as u64 {
                    break;
                }
            }
        }
        Ok(report)
    }

    /// Writes a consistent, compacted copy of the database to `dest` (which must not exist),
    /// created with mode 0600. The key file is not included: back it up separately, and keep
    /// it apart from the database copies.
    pub async fn backup_to(&self, dest: &Path) -> Result<(), StoreError> {
        let store = self.clone();
        let dest = dest.to_owned();
        smol::unblock(move || store.backup_to_blocking(&dest)).await
    }

    /// Blocking form of [`Store::backup_to`].
    pub fn backup_to_blocking(&self, dest: &Path) -> Result<(), StoreError> {
        let dest_text = dest.to_str().ok_or_else(|| StoreError::Invalid {
            field: "backup path",
            reason: format!("{} is not UTF-8", dest.display()),
        })?;
        // Create it ourselves, exclusively and private: VACUUM INTO accepts an existing empty
        // file and would otherwise create it with the umask's mode.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dest)
            .map_err(|source| StoreError::Io { action: "create backup", path: dest.to_owned(), source })?;
        let result = self.inner.readers.run(|c| Ok(c.execute("VACUUM INTO ?1", [dest_text])?));
        if result.is_err() {
            let _ = std::fs::remove_file(dest);
        }
        result.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::temp_store_with_clock;
    use super::super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn retention_deletes_old_completed_records_in_batches() {
        let (_dir, store, clock) = temp_store_with_clock();
        let n = PURGE_BATCH + 7;
        let old = store.now();
        // Old and finished: n executions, n processed trigger instances (each enforced).
        Blocking(&store)
            .write(move |c| {
                for _ in 0..n {
                    c.execute(
                        "INSERT INTO executions (action_ref, runner, status, created_at, \
                         finished_at) VALUES ('a.b', 'noop', 'succeeded', ?1, ?1)",
                        [old],
                    )?;
                    let execution = c.last_insert_rowid();
                    c.execute(
                        "INSERT INTO trigger_instances (trigger_ref, payload, occurred_at, \
                         status, source, processed_at) VALUES ('t', '{}', ?1, 'processed', \
                         'timer', ?1)",
                        [old],
                    )?;
                    c.execute(
                        "INSERT INTO enforcements (rule_ref, trigger_instance_id, status, \
                         created_at, execution_id) VALUES ('r', ?1, 'succeeded', ?2, ?3)",
                        [c.last_insert_rowid(), old, execution],
                    )?;
                }
                Ok(())
            })
            .unwrap();
        store.record_reload_blocking(vec![], "ok".into()).unwrap();
        // Old but in flight or pending: never purged.
        let running = store
            .create_execution_blocking(NewExecution {
                action_ref: "a.b".into(),
                runner: "noop".into(),
                status: ExecStatus::Running,
                ..Default::default()
            })
            .unwrap();
        let pending = store
            .insert_trigger_instance_blocking(NewTriggerInstance {
                trigger_ref: "t".into(),
                payload: serde_json::json!({}),
                source: TiSource::Timer,
                occurred_at: None,
                target: None,
            })
            .unwrap();
        clock.advance(8 * DAY);
        // New and finished: kept.
        let recent = store
            .create_execution_blocking(NewExecution {
                action_ref: "a.b".into(),
                runner: "noop".into(),
                status: ExecStatus::Running,
                ..Default::default()
            })
            .unwrap();
        store
            .complete_execution_blocking(
                recent,
                Completion {
                    status: ExecStatus::Succeeded,
                    result: None,
                    stdout: String::new(),
                    stderr: String::new(),
                    exit_code: Some(0),
                    error: None,
                    finished_at: None,
                },
            )
            .unwrap();

        let report = store.purge_completed_older_than_blocking(7 * DAY).unwrap();
        assert_eq!(report.executions, n as u64);
        assert_eq!(report.trigger_instances, n as u64);
        assert_eq!(report.reloads, 1);
        // 2 + 1 batches for each of the two big tables, 1 for reloads.
        assert_eq!(report.batches, 5, "{report:?}");
        let left: Vec<i64> =
            store.list_executions_blocking(ExecutionFilter::default()).unwrap().iter().map(|e| e.id).collect();
        assert_eq!(left, vec![recent, running]);
        assert!(store.get_trigger_instance_blocking(pending).unwrap().is_some());
        assert!(
            store.list_enforcements_blocking(EnforcementFilter::default()).unwrap().is_empty(),
            "enforcements went with their trigger instances"
        );
        let again = smol::block_on(store.purge_completed_older_than(7 * DAY)).unwrap();
        assert_eq!(again.executions + again.trigger_instances + again.reloads, 0);
    }

    #[test]
    fn backup_is_a_private_consistent_copy() {
        let (dir, store, _clock) = temp_store_with_clock();
        store
            .kv_set_blocking(KvSet { scope: "s".into(), name: "k".into(), value: "v".into(), ..Default::default() })
            .unwrap();
        let dest = dir.path().join("snap.db");
        smol::block_on(store.backup_to(&dest)).unwrap();
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let copy = rusqlite::Connection::open(&dest).unwrap();
        let n: i64 = copy.query_row("SELECT count(*) FROM kv", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 1);
        // An existing destination is refused, and left alone.
        let err = store.backup_to_blocking(&dest).unwrap_err();
        assert!(matches!(err, StoreError::Io { .. }), "{err}");
        assert!(dest.exists());
    }
}
