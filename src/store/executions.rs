//! The `executions` table: create, status changes, completion, cancel, start-up abandonment,
//! reads.
//!
//! Owns the one transition rule: a terminal status (succeeded, failed, timeout, canceled,
//! abandoned) is final, so a late completion cannot overwrite a cancel and vice versa. Every
//! status change appends `{status, at}` to the `log` JSON array in the same UPDATE.
//!
//! Parameters arrive already masked by the caller; this file never sees a secret parameter.
//! It must not decide scheduling or retries.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::error::StoreError;
use super::model::*;
use super::sql::{Listing, check_len, check_name, json_col, opt_json_col, to_json};
use super::{Env, MAX_DOC_BYTES, Work};

api! {
    /// Inserts an execution (normally `requested`) and returns its id.
    write create_execution / create_execution_blocking (new: NewExecution) -> i64 = create;
    /// Changes the status (not out of a terminal one). `started_at` is set when given, or to
    /// now on the first move to `running`.
    write set_execution_status / set_execution_status_blocking
        (id: i64, status: ExecStatus, started_at: Option<Micros>) -> () = set_status;
    /// Records the end of an execution; `completion.status` must be terminal.
    write complete_execution / complete_execution_blocking
        (id: i64, completion: Completion) -> () = complete;
    /// Cancels an execution that has no process yet, or marks a running one `canceling`.
    write request_cancel / request_cancel_blocking (id: i64) -> CancelOutcome = cancel;
    /// At start-up: every execution that was in flight when the agent stopped (requested,
    /// scheduled, delayed, running, canceling) has no process any more and becomes
    /// `abandoned`, as StackStorm does. Returns their ids, ascending.
    write abandon_running / abandon_running_blocking () -> Vec<i64> = abandon;
    read get_execution / get_execution_blocking (id: i64) -> Option<Execution> = get;
    /// Newest first, without the large columns.
    read list_executions / list_executions_blocking
        (filter: ExecutionFilter) -> Vec<ExecutionSummary> = list;
    /// Count per status, every status listed (zeros included), in `ExecStatus::ALL` order.
    read count_executions_by_status / count_executions_by_status_blocking
        () -> Vec<(ExecStatus, u64)> = count_by_status;
}

const COLUMNS: &str = "id, action_ref, runner, status, parameters, context, result, stdout, \
    stderr, exit_code, error, parent_id, enforcement_id, created_at, started_at, finished_at, log";

const SUMMARY_COLUMNS: &str = "id, action_ref, runner, status, exit_code, parent_id, \
    enforcement_id, created_at, started_at, finished_at";

/// Statuses that have no process behind them after a restart.
const IN_FLIGHT: &str = "('requested','scheduled','delayed','running','canceling')";

/// Whether `from → to` is allowed: anything except leaving a terminal status.
pub(super) fn transition_allowed(from: ExecStatus, _to: ExecStatus) -> bool {
    !from.is_terminal()
}

/// A validated `NewExecution`, serialised and ready to insert.
pub(super) struct PreparedExecution {
    action_ref: String,
    runner: String,
    status: ExecStatus,
    parameters: String,
    context: String,
    parent_id: Option<i64>,
    log: String,
}

pub(super) fn prepare(new: NewExecution, now: Micros) -> Result<PreparedExecution, StoreError> {
    check_name("action_ref", &new.action_ref)?;
    check_name("runner", &new.runner)?;
    let log = serde_json::to_string(&[StatusChange { status: new.status.as_str().to_owned(), at: now }])
        .unwrap_or_else(|_| "[]".to_owned());
    Ok(PreparedExecution {
        parameters: to_json("parameters", &new.parameters)?,
        context: to_json("context", &new.context)?,
        action_ref: new.action_ref,
        runner: new.runner,
        status: new.status,
        parent_id: new.parent_id,
        log,
    })
}

pub(super) fn insert(
    conn: &Connection,
    new: &PreparedExecution,
    enforcement_id: Option<i64>,
    now: Micros,
) -> Result<i64, StoreError> {
    let started_at = (new.status == ExecStatus::Running).then_some(now);
    conn.prepare_cached(
        "INSERT INTO executions (action_ref, runner, status, parameters, context, parent_id, \
         enforcement_id, created_at, started_at, log) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        new.action_ref,
        new.runner,
        new.status,
        new.parameters,
        new.context,
        new.parent_id,
        enforcement_id,
        now,
        started_at,
        new.log
    ])?;
    Ok(conn.last_insert_rowid())
}

fn create(env: &Env, new: NewExecution) -> Result<impl Work<i64>, StoreError> {
    let now = env.now();
    let new = prepare(new, now)?;
    Ok(move |c: &Connection| insert(c, &new, None, now))
}

fn current_status(conn: &Connection, id: i64) -> Result<ExecStatus, StoreError> {
    conn.prepare_cached("SELECT status FROM executions WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?
        .ok_or_else(|| StoreError::NotFound { what: "execution", key: id.to_string() })
}

fn checked_status(conn: &Connection, id: i64, to: ExecStatus) -> Result<(), StoreError> {
    let from = current_status(conn, id)?;
    if transition_allowed(from, to) { Ok(()) } else { Err(StoreError::InvalidTransition { id, from, to }) }
}

fn set_status(env: &Env, id: i64, status: ExecStatus, started_at: Option<Micros>) -> Result<impl Work<()>, StoreError> {
    let now = env.now();
    Ok(move |c: &Connection| {
        checked_status(c, id, status)?;
        let first_start = (status == ExecStatus::Running).then_some(now);
        let finished = status.is_terminal().then_some(now);
        c.prepare_cached(
            "UPDATE executions SET status = ?2, \
               started_at = COALESCE(?3, started_at, ?4), \
               finished_at = COALESCE(finished_at, ?5), \
               log = json_insert(log, '$[#]', json_object('status', ?2, 'at', ?6)) \
             WHERE id = ?1",
        )?
        .execute(params![id, status, started_at, first_start, finished, now])?;
        Ok(())
    })
}

fn complete(env: &Env, id: i64, done: Completion) -> Result<impl Work<()>, StoreError> {
    if !done.status.is_terminal() {
        return Err(StoreError::Invalid { field: "status", reason: format!("{} is not a final status", done.status) });
    }
    check_len("stdout", &done.stdout, MAX_DOC_BYTES)?;
    check_len("stderr", &done.stderr, MAX_DOC_BYTES)?;
    if let Some(error) = &done.error {
        check_len("error", error, MAX_DOC_BYTES)?;
    }
    let result = done.result.as_ref().map(|r| to_json("result", r)).transpose()?;
    let finished = done.finished_at.unwrap_or_else(|| env.now());
    Ok(move |c: &Connection| {
        checked_status(c, id, done.status)?;
        c.prepare_cached(
            "UPDATE executions SET status = ?2, result = ?3, stdout = ?4, stderr = ?5, \
               exit_code = ?6, error = ?7, finished_at = ?8, \
               log = json_insert(log, '$[#]', json_object('status', ?2, 'at', ?8)) \
             WHERE id = ?1",
        )?
        .execute(params![
            id,
            done.status,
            result,
            done.stdout,
            done.stderr,
            done.exit_code,
            done.error,
            finished
        ])?;
        Ok(())
    })
}

fn cancel(env: &Env, id: i64) -> Result<impl Work<CancelOutcome>, StoreError> {
    let now = env.now();
    Ok(move |c: &Connection| {
        let from = current_status(c, id)?;
        let (to, outcome) = match from {
            s if s.is_terminal() => return Ok(CancelOutcome::AlreadyFinished(s)),
            ExecStatus::Canceling => return Ok(CancelOutcome::Canceling),
            ExecStatus::Running => (ExecStatus::Canceling, CancelOutcome::Canceling),
            _ => (ExecStatus::Canceled, CancelOutcome::Canceled),
        };
        let finished = to.is_terminal().then_some(now);
        c.prepare_cached(
            "UPDATE executions SET status = ?2, finished_at = COALESCE(finished_at, ?3), \
               log = json_insert(log, '$[#]', json_object('status', ?2, 'at', ?4)) \
             WHERE id = ?1",
        )?
        .execute(params![id, to, finished, now])?;
        Ok(outcome)
    })
}

fn abandon(env: &Env) -> Result<impl Work<Vec<i64>>, StoreError> {
    let now = env.now();
    Ok(move |c: &Connection| {
        let sql = format!(
            "UPDATE executions SET status = 'abandoned', finished_at = COALESCE(finished_at, ?1), \
               error = COALESCE(error, 'packd stopped while this execution was in progress'), \
               log = json_insert(log, '$[#]', json_object('status', 'abandoned', 'at', ?1)) \
             WHERE status IN {IN_FLIGHT} RETURNING id"
        );
        let mut stmt = c.prepare(&sql)?;
        let mut ids = stmt.query_map([now], |r| r.get::<_, i64>(0))?.collect::<Result<Vec<_>, _>>()?;
        ids.sort_unstable();
        Ok(ids)
    })
}

fn execution_row(row: &Row<'_>) -> rusqlite::Result<Execution> {
    Ok(Execution {
        id: row.get(0)?,
        action_ref: row.get(1)?,
        runner: row.get(2)?,
        status: row.get(3)?,
        parameters: json_col(row, 4)?,
        context: json_col(row, 5)?,
        result: opt_json_col(row, 6)?,
        stdout: row.get(7)?,
        stderr: row.get(8)?,
        exit_code: row.get(9)?,
        error: row.get(10)?,
        parent_id: row.get(11)?,
        enforcement_id: row.get(12)?,
        created_at: row.get(13)?,
        started_at: row.get(14)?,
        finished_at: row.get(15)?,
        log: json_col(row, 16)?,
    })
}

fn summary_row(row: &Row<'_>) -> rusqlite::Result<ExecutionSummary> {
    Ok(ExecutionSummary {
        id: row.get(0)?,
        action_ref: row.get(1)?,
        runner: row.get(2)?,
        status: row.get(3)?,
        exit_code: row.get(4)?,
        parent_id: row.get(5)?,
        enforcement_id: row.get(6)?,
        created_at: row.get(7)?,
        started_at: row.get(8)?,
        finished_at: row.get(9)?,
    })
}

fn get(_env: &Env, id: i64) -> Result<impl Work<Option<Execution>>, StoreError> {
    Ok(move |c: &Connection| {
        let sql = format!("SELECT {COLUMNS} FROM executions WHERE id = ?1");
        Ok(c.prepare_cached(&sql)?.query_row([id], execution_row).optional()?)
    })
}

fn list(_env: &Env, filter: ExecutionFilter) -> Result<impl Work<Vec<ExecutionSummary>>, StoreError> {
    Ok(move |c: &Connection| {
        let mut q = Listing::new(&format!("SELECT {SUMMARY_COLUMNS} FROM executions"));
        q.filter("action_ref = ?", filter.action_ref);
        q.filter("status = ?", filter.status.map(|s| s.as_str().to_owned()));
        q.filter("parent_id = ?", filter.parent_id);
        q.filter("id < ?", filter.before_id);
        q.run(c, "id DESC", filter.limit, summary_row)
    })
}

fn count_by_status(_env: &Env) -> Result<impl Work<Vec<(ExecStatus, u64)>>, StoreError> {
    Ok(move |c: &Connection| {
        let mut counts: Vec<(ExecStatus, u64)> = ExecStatus::ALL.iter().map(|s| (*s, 0)).collect();
        let mut stmt = c.prepare_cached("SELECT status, count(*) FROM executions GROUP BY status")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, ExecStatus>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (status, n) = row?;
            if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == status) {
                slot.1 = u64::try_from(n).unwrap_or(0);
            }
        }
        Ok(counts)
    })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{temp_store, temp_store_with_clock};
    use super::super::*;
    use super::transition_allowed;
    use expect_test::expect;
    use serde_json::json;
    use std::time::Duration;

    fn new(action: &str) -> NewExecution {
        NewExecution {
            action_ref: action.into(),
            runner: "local-shell-cmd".into(),
            parameters: json!({"cmd": "echo hi", "password": "********"}),
            context: json!({"user": "stanley"}),
            ..Default::default()
        }
    }

    #[test]
    fn transition_table() {
        use ExecStatus::*;
        let mut out = String::new();
        for from in [Requested, Running, Canceling, Succeeded, Abandoned] {
            let allowed: Vec<&str> = [Running, Succeeded, Canceled]
                .iter()
                .filter(|to| transition_allowed(from, **to))
                .map(|to| to.as_str())
                .collect();
            out.push_str(&format!("{from} -> {allowed:?}\n"));
        }
        expect![[r#"
            requested -> ["running", "succeeded", "canceled"]
            running -> ["running", "succeeded", "canceled"]
            canceling -> ["running", "succeeded", "canceled"]
            succeeded -> []
            abandoned -> []
        "#]]
        .assert_eq(&out);
    }

    #[test]
    fn lifecycle_with_history() {
        let (_dir, store, clock) = temp_store_with_clock();
        let t0 = store.now();
        let id = store.create_execution_blocking(new("core.local")).unwrap();
        clock.advance(Duration::from_secs(1));
        store.set_execution_status_blocking(id, ExecStatus::Scheduled, None).unwrap();
        clock.advance(Duration::from_secs(1));
        store.set_execution_status_blocking(id, ExecStatus::Running, None).unwrap();
        clock.advance(Duration::from_secs(1));
        store
            .complete_execution_blocking(
                id,
                Completion {
                    status: ExecStatus::Succeeded,
                    result: Some(json!({"stdout": "hi"})),
                    stdout: "hi\n".into(),
                    stderr: String::new(),
                    exit_code: Some(0),
                    error: None,
                    finished_at: None,
                },
            )
            .unwrap();
        let e = store.get_execution_blocking(id).unwrap().unwrap();
        assert_eq!(e.status, ExecStatus::Succeeded);
        assert_eq!(e.started_at, Some(t0 + 2_000_000));
        assert_eq!(e.finished_at, Some(t0 + 3_000_000));
        assert_eq!(e.parameters["password"], "********");
        let history: Vec<String> =
            e.log.iter().map(|c| format!("{}@+{}s", c.status, (c.at - t0) / 1_000_000)).collect();
        expect![[r#"["requested@+0s", "scheduled@+1s", "running@+2s", "succeeded@+3s"]"#]]
            .assert_eq(&format!("{history:?}"));

        // Terminal is final.
        let err = store.set_execution_status_blocking(id, ExecStatus::Running, None).unwrap_err();
        expect![["execution 1 is succeeded; it cannot become running"]].assert_eq(&err.to_string());
        // Completing with a non-final status is refused before anything is queued.
        let err = store
            .complete_execution_blocking(
                id,
                Completion {
                    status: ExecStatus::Running,
                    result: None,
                    stdout: String::new(),
                    stderr: String::new(),
                    exit_code: None,
                    error: None,
                    finished_at: None,
                },
            )
            .unwrap_err();
        expect![["invalid status: running is not a final status"]].assert_eq(&err.to_string());
        let err = store.set_execution_status_blocking(404, ExecStatus::Running, None).unwrap_err();
        expect![["execution 404 not found"]].assert_eq(&err.to_string());
    }

    #[test]
    fn cancel_outcomes() {
        let (_dir, store) = temp_store();
        let queued = store.create_execution_blocking(new("a.b")).unwrap();
        let running = store.create_execution_blocking(new("a.b")).unwrap();
        store.set_execution_status_blocking(running, ExecStatus::Running, None).unwrap();
        let out = [queued, running, running, queued]
            .iter()
            .map(|id| format!("{:?}", store.request_cancel_blocking(*id).unwrap()))
            .collect::<Vec<_>>()
            .join(" ");
        expect![["Canceled Canceling Canceling AlreadyFinished(Canceled)"]].assert_eq(&out);
        assert!(matches!(store.request_cancel_blocking(99), Err(StoreError::NotFound { .. })));
    }

    #[test]
    fn abandon_running_at_startup() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let mut ids = Vec::new();
        for status in [ExecStatus::Requested, ExecStatus::Running, ExecStatus::Scheduled] {
            ids.push(store.create_execution_blocking(NewExecution { status, ..new("x.y") }).unwrap());
        }
        let done = store.create_execution_blocking(new("x.y")).unwrap();
        store
            .complete_execution_blocking(
                done,
                Completion {
                    status: ExecStatus::Failed,
                    result: None,
                    stdout: String::new(),
                    stderr: "boom".into(),
                    exit_code: Some(1),
                    error: None,
                    finished_at: None,
                },
            )
            .unwrap();
        drop(store);
        // "Restart".
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(store.abandon_running_blocking().unwrap(), ids);
        assert_eq!(store.abandon_running_blocking().unwrap(), Vec::<i64>::new());
        let e = store.get_execution_blocking(ids[1]).unwrap().unwrap();
        assert_eq!(e.status, ExecStatus::Abandoned);
        assert!(e.finished_at.is_some());
        assert!(e.error.unwrap().contains("packd stopped"));
        let f = store.get_execution_blocking(done).unwrap().unwrap();
        assert_eq!(f.status, ExecStatus::Failed);
        let counts = store.count_executions_by_status_blocking().unwrap();
        let nonzero: Vec<String> = counts.iter().filter(|(_, n)| *n > 0).map(|(s, n)| format!("{s}={n}")).collect();
        expect![[r#"["failed=1", "abandoned=3"]"#]].assert_eq(&format!("{nonzero:?}"));
    }

    #[test]
    fn list_filters_and_limit() {
        let (_dir, store) = temp_store();
        let parent = store.create_execution_blocking(new("wf.main")).unwrap();
        for i in 0..4 {
            store
                .create_execution_blocking(NewExecution {
                    parent_id: Some(parent),
                    ..new(if i % 2 == 0 { "a.even" } else { "a.odd" })
                })
                .unwrap();
        }
        let list = |f: ExecutionFilter| -> Vec<i64> {
            store.list_executions_blocking(f).unwrap().iter().map(|e| e.id).collect()
        };
        assert_eq!(list(ExecutionFilter::default()), vec![5, 4, 3, 2, 1]);
        assert_eq!(list(ExecutionFilter { action_ref: Some("a.even".into()), ..Default::default() }), vec![4, 2]);
        assert_eq!(list(ExecutionFilter { parent_id: Some(parent), limit: 2, ..Default::default() }), vec![5, 4]);
        assert_eq!(
            list(ExecutionFilter { before_id: Some(3), status: Some(ExecStatus::Requested), ..Default::default() }),
            vec![2, 1]
        );
    }

    #[test]
    fn oversized_documents_are_refused() {
        let (_dir, store) = temp_store();
        let err = store
            .create_execution_blocking(NewExecution {
                parameters: json!({"blob": "x".repeat(MAX_DOC_BYTES)}),
                ..new("a.b")
            })
            .unwrap_err();
        assert!(matches!(err, StoreError::TooLarge { what: "parameters", .. }), "{err}");
        let id = store.create_execution_blocking(new("a.b")).unwrap();
        let err = store
            .complete_execution_blocking(
                id,
                Completion {
                    status: ExecStatus::Succeeded,
                    result: None,
                    stdout: "x".repeat(MAX_DOC_BYTES + 1),
                    stderr: String::new(),
                    exit_code: Some(0),
                    error: None,
                    finished_at: None,
                },
            )
            .unwrap_err();
        assert!(matches!(err, StoreError::TooLarge { what: "stdout", .. }), "{err}");
    }
}
