//! The `trigger_instances` and `enforcements` tables: durable ingest and exactly-once rule
//! enforcement.
//!
//! Owns two guarantees of DESIGN.md's "Nothing acknowledged is lost":
//! * [`Store::insert_trigger_instance`](super::Store::insert_trigger_instance) resolves only
//!   after COMMIT, so whoever answers "accepted" may do so when it returns; after a crash,
//!   [`Store::pending_trigger_instances`](super::Store::pending_trigger_instances) hands back
//!   every instance not yet marked processed.
//! * An enforcement and the execution it requests are inserted in one transaction, and
//!   UNIQUE(rule_ref, trigger_instance_id) turns a replay into [`Enforced::AlreadyEnforced`]
//!   instead of a second execution.
//!
//! It must not evaluate rules.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::error::StoreError;
use super::executions;
use super::model::*;
use super::sql::{Listing, check_len, check_name, clamp_limit, json_col, to_json};
use super::{Env, MAX_DOC_BYTES, Work};

api! {
    /// The durable half of ingest: inserts a `pending` trigger instance and resolves after
    /// COMMIT. Waits for room when the write queue is full.
    write insert_trigger_instance / insert_trigger_instance_blocking
        (new: NewTriggerInstance) -> i64 = insert;
    /// Marks an instance processing/processed/failed (`processed_at` is set for the last two).
    write set_trigger_instance_status / set_trigger_instance_status_blocking
        (id: i64, status: TiStatus) -> () = set_status;
    /// Inserts a rule enforcement and, in the same transaction, its execution (`requested`,
    /// linked both ways). A second call for the same rule and trigger instance inserts nothing
    /// and returns [`Enforced::AlreadyEnforced`].
    write create_enforcement_with_execution / create_enforcement_with_execution_blocking
        (new: NewEnforcement) -> Enforced = enforce;
    read get_trigger_instance / get_trigger_instance_blocking
        (id: i64) -> Option<TriggerInstance> = get;
    /// Newest first.
    read list_trigger_instances / list_trigger_instances_blocking
        (filter: TriggerInstanceFilter) -> Vec<TriggerInstance> = list;
    /// Instances still `pending` or `processing` with id > `after_id`, oldest first: the
    /// crash-recovery queue. Page by passing the last id seen.
    read pending_trigger_instances / pending_trigger_instances_blocking
        (after_id: i64, limit: usize) -> Vec<TriggerInstance> = pending;
    read get_enforcement / get_enforcement_blocking (id: i64) -> Option<Enforcement> = get_enf;
    /// Newest first.
    read list_enforcements / list_enforcements_blocking
        (filter: EnforcementFilter) -> Vec<Enforcement> = list_enf;
}

impl super::Store {
    /// Like [`Store::insert_trigger_instance`](super::Store::insert_trigger_instance), but when
    /// the write queue is full it fails at once with [`StoreError::Busy`] (a webhook answers
    /// 503) instead of waiting.
    pub async fn try_insert_trigger_instance(&self, new: NewTriggerInstance) -> Result<i64, StoreError> {
        let work = insert(&self.inner.env, new)?;
        self.try_write(work).await
    }
}

const TI_COLUMNS: &str = "id, trigger_ref, payload, occurred_at, status, source, processed_at, target";
const ENF_COLUMNS: &str = "id, rule_ref, trigger_instance_id, execution_id, status, failure_reason, created_at";

fn insert(env: &Env, new: NewTriggerInstance) -> Result<impl Work<i64>, StoreError> {
    check_name("trigger_ref", &new.trigger_ref)?;
    let payload = to_json("payload", &new.payload)?;
    let occurred_at = new.occurred_at.unwrap_or_else(|| env.now());
    let trigger_ref = new.trigger_ref;
    let source = new.source;
    let target = new.target;
    Ok(move |c: &Connection| {
        c.prepare_cached(
            "INSERT INTO trigger_instances (trigger_ref, payload, occurred_at, status, source, target) \
             VALUES (?1, ?2, ?3, 'pending', ?4, ?5)",
        )?
        .execute(params![trigger_ref, payload, occurred_at, source, target])?;
        Ok(c.last_insert_rowid())
    })
}

fn set_status(env: &Env, id: i64, status: TiStatus) -> Result<impl Work<()>, StoreError> {
    let now = env.now();
    let processed_at = matches!(status, TiStatus::Processed | TiStatus::Failed).then_some(now);
    Ok(move |c: &Connection| {
        let n = c
            .prepare_cached("UPDATE trigger_instances SET status = ?2, processed_at = ?3 WHERE id = ?1")?
            .execute(params![id, status, processed_at])?;
        if n == 0 {
            return Err(StoreError::NotFound { what: "trigger instance", key: id.to_string() });
        }
        Ok(())
    })
}

fn enforce(env: &Env, new: NewEnforcement) -> Result<impl Work<Enforced>, StoreError> {
    check_name("rule_ref", &new.rule_ref)?;
    if let Some(reason) = &new.failure_reason {
        check_len("failure_reason", reason, MAX_DOC_BYTES)?;
    }
    let now = env.now();
    let execution = new.execution.map(|e| executions::prepare(e, now)).transpose()?;
    let (rule_ref, ti, status, reason) = (new.rule_ref, new.trigger_instance_id, new.status, new.failure_reason);
    Ok(move |c: &Connection| {
        let inserted = c
            .prepare_cached(
                "INSERT INTO enforcements (rule_ref, trigger_instance_id, status, \
                 failure_reason, created_at) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (rule_ref, trigger_instance_id) DO NOTHING",
            )?
            .execute(params![rule_ref, ti, status, reason, now])?;
        if inserted == 0 {
            let (enforcement_id, execution_id) = c
                .prepare_cached(
                    "SELECT id, execution_id FROM enforcements \
                     WHERE rule_ref = ?1 AND trigger_instance_id = ?2",
                )?
                .query_row(params![rule_ref, ti], |r| Ok((r.get(0)?, r.get(1)?)))?;
            return Ok(Enforced::AlreadyEnforced { enforcement_id, execution_id });
        }
        let enforcement_id = c.last_insert_rowid();
        let execution_id = match &execution {
            Some(e) => {
                let id = executions::insert(c, e, Some(enforcement_id), now)?;
                c.prepare_cached("UPDATE enforcements SET execution_id = ?2 WHERE id = ?1")?
                    .execute(params![enforcement_id, id])?;
                Some(id)
            }
            None => None,
        };
        Ok(Enforced::Created { enforcement_id, execution_id })
    })
}

fn ti_row(row: &Row<'_>) -> rusqlite::Result<TriggerInstance> {
    Ok(TriggerInstance {
        id: row.get(0)?,
        trigger_ref: row.get(1)?,
        payload: json_col(row, 2)?,
        occurred_at: row.get(3)?,
        status: row.get(4)?,
        source: row.get(5)?,
        processed_at: row.get(6)?,
        target: row.get(7)?,
    })
}

fn enf_row(row: &Row<'_>) -> rusqlite::Result<Enforcement> {
    Ok(Enforcement {
        id: row.get(0)?,
        rule_ref: row.get(1)?,
        trigger_instance_id: row.get(2)?,
        execution_id: row.get(3)?,
        status: row.get(4)?,
        failure_reason: row.get(5)?,
        created_at: row.get(6)?,
    })
}

fn get(_env: &Env, id: i64) -> Result<impl Work<Option<TriggerInstance>>, StoreError> {
    Ok(move |c: &Connection| {
        let sql = format!("SELECT {TI_COLUMNS} FROM trigger_instances WHERE id = ?1");
        Ok(c.prepare_cached(&sql)?.query_row([id], ti_row).optional()?)
    })
}

fn list(_env: &Env, filter: TriggerInstanceFilter) -> Result<impl Work<Vec<TriggerInstance>>, StoreError> {
    Ok(move |c: &Connection| {
        let mut q = Listing::new(&format!("SELECT {TI_COLUMNS} FROM trigger_instances"));
        q.filter("trigger_ref = ?", filter.trigger_ref);
        q.filter("status = ?", filter.status.map(|s| s.as_str().to_owned()));
        q.filter("id < ?", filter.before_id);
        q.run(c, "id DESC", filter.limit, ti_row)
    })
}

fn pending(_env: &Env, after_id: i64, limit: usize) -> Result<impl Work<Vec<TriggerInstance>>, StoreError> {
    let limit = clamp_limit(limit);
    Ok(move |c: &Connection| {
        let sql = format!(
            "SELECT {TI_COLUMNS} FROM trigger_instances \
             WHERE status IN ('pending', 'processing') AND id > ?1 ORDER BY id LIMIT ?2"
        );
        let mut stmt = c.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![after_id, limit], ti_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    })
}

fn get_enf(_env: &Env, id: i64) -> Result<impl Work<Option<Enforcement>>, StoreError> {
    Ok(move |c: &Connection| {
        let sql = format!("SELECT {ENF_COLUMNS} FROM enforcements WHERE id = ?1");
        Ok(c.prepare_cached(&sql)?.query_row([id], enf_row).optional()?)
    })
}

fn list_enf(_env: &Env, filter: EnforcementFilter) -> Result<impl Work<Vec<Enforcement>>, StoreError> {
    Ok(move |c: &Connection| {
        let mut q = Listing::new(&format!("SELECT {ENF_COLUMNS} FROM enforcements"));
        q.filter("rule_ref = ?", filter.rule_ref);
        q.filter("trigger_instance_id = ?", filter.trigger_instance_id);
        q.filter("id < ?", filter.before_id);
        q.run(c, "id DESC", filter.limit, enf_row)
    })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::temp_store;
    use super::super::*;
    use serde_json::json;

    fn ti(trigger: &str) -> NewTriggerInstance {
        NewTriggerInstance {
            trigger_ref: trigger.into(),
            payload: json!({"body": {"x": 1}}),
            source: TiSource::Webhook,
            occurred_at: None,
            target: None,
        }
    }

    fn enforcement(rule: &str, ti: i64) -> NewEnforcement {
        NewEnforcement {
            rule_ref: rule.into(),
            trigger_instance_id: ti,
            status: EnforcementStatus::Succeeded,
            failure_reason: None,
            execution: Some(NewExecution {
                action_ref: "core.local".into(),
                runner: "local-shell-cmd".into(),
                context: json!({"rule": rule, "trigger_instance": ti}),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn enforcement_replay_is_already_enforced() {
        let (_dir, store) = temp_store();
        let t = store.insert_trigger_instance_blocking(ti("a.hook")).unwrap();
        let first = store.create_enforcement_with_execution_blocking(enforcement("a.rule", t)).unwrap();
        let Enforced::Created { enforcement_id, execution_id: Some(execution_id) } = first else {
            panic!("{first:?}");
        };
        let e = store.get_execution_blocking(execution_id).unwrap().unwrap();
        assert_eq!(e.enforcement_id, Some(enforcement_id));
        assert_eq!(e.status, ExecStatus::Requested);
        let enf = store.get_enforcement_blocking(enforcement_id).unwrap().unwrap();
        assert_eq!(enf.execution_id, Some(execution_id));

        // Replay after a "crash": nothing new, the earlier ids come back.
        let again = store.create_enforcement_with_execution_blocking(enforcement("a.rule", t)).unwrap();
        assert_eq!(again, Enforced::AlreadyEnforced { enforcement_id, execution_id: Some(execution_id) });
        assert_eq!(store.list_executions_blocking(ExecutionFilter::default()).unwrap().len(), 1);
        // Another rule on the same instance is a separate enforcement.
        let other = store
            .create_enforcement_with_execution_blocking(NewEnforcement {
                status: EnforcementStatus::Failed,
                failure_reason: Some("parameter 'cmd' did not render".into()),
                execution: None,
                ..enforcement("b.rule", t)
            })
            .unwrap();
        assert!(matches!(other, Enforced::Created { execution_id: None, .. }));
        let by_ti = store
            .list_enforcements_blocking(EnforcementFilter { trigger_instance_id: Some(t), ..Default::default() })
            .unwrap();
        assert_eq!(by_ti.len(), 2);
        // An enforcement for an instance that does not exist is refused (foreign key) and
        // inserts no execution.
        let err = store.create_enforcement_with_execution_blocking(enforcement("a.rule", 999)).unwrap_err();
        assert!(matches!(err, StoreError::Sqlite(_)), "{err}");
        assert_eq!(store.list_executions_blocking(ExecutionFilter::default()).unwrap().len(), 1);
    }

    #[test]
    fn pending_instances_for_recovery() {
        let (_dir, store) = temp_store();
        let ids: Vec<i64> = (0..4).map(|_| store.insert_trigger_instance_blocking(ti("t.x")).unwrap()).collect();
        store.set_trigger_instance_status_blocking(ids[0], TiStatus::Processed).unwrap();
        store.set_trigger_instance_status_blocking(ids[1], TiStatus::Processing).unwrap();
        store.set_trigger_instance_status_blocking(ids[3], TiStatus::Failed).unwrap();
        let pending: Vec<i64> = store.pending_trigger_instances_blocking(0, 10).unwrap().iter().map(|t| t.id).collect();
        assert_eq!(pending, vec![ids[1], ids[2]]);
        let page2 = store.pending_trigger_instances_blocking(ids[1], 10).unwrap();
        assert_eq!(page2.len(), 1);
        let done = store.get_trigger_instance_blocking(ids[0]).unwrap().unwrap();
        assert!(done.processed_at.is_some());
        assert_eq!(done.payload, json!({"body": {"x": 1}}));
        assert!(matches!(
            store.set_trigger_instance_status_blocking(77, TiStatus::Processed),
            Err(StoreError::NotFound { .. })
        ));
    }

    #[test]
    fn ingest_is_visible_to_a_fresh_open_once_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let id = smol::block_on(store.insert_trigger_instance(ti("w.h"))).unwrap();
        // A second, independent handle (as after a restart) sees it without any close/flush.
        let other = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let pending = smol::block_on(other.pending_trigger_instances(0, 0)).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].id, id);
        let got = smol::block_on(other.get_trigger_instance(id)).unwrap().unwrap();
        assert_eq!(got.source, TiSource::Webhook);
    }

    #[test]
    fn listings_are_clamped_to_max_list_limit() {
        let (_dir, store) = temp_store();
        let n = MAX_LIST_LIMIT + 5;
        Blocking(&store)
            .write(move |c| {
                for i in 0..n {
                    c.execute(
                        "INSERT INTO trigger_instances (trigger_ref, payload, occurred_at, \
                         status, source) VALUES ('t.x', '{}', ?1, 'pending', 'timer')",
                        [i as i64],
                    )?;
                }
                Ok(())
            })
            .unwrap();
        let all = store
            .list_trigger_instances_blocking(TriggerInstanceFilter { limit: n * 2, ..Default::default() })
            .unwrap();
        assert_eq!(all.len(), MAX_LIST_LIMIT);
        let pending = store.pending_trigger_instances_blocking(0, 0).unwrap();
        assert_eq!(pending.len(), MAX_LIST_LIMIT);
        let rest = store.pending_trigger_instances_blocking(pending[MAX_LIST_LIMIT - 1].id, 0).unwrap();
        assert_eq!(rest.len(), 5);
    }
}
