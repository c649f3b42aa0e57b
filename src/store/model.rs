//! The typed rows and status enums the store reads and writes.
//!
//! This file owns the vocabulary shared by the rest of packd and the database: every status is
//! a closed enum that maps to exactly one lower-case word in SQL (the schema's CHECK constraints
//! list the same words), and every row type is a plain struct. It must not contain SQL beyond
//! the `ToSql`/`FromSql` glue, and it never decides anything (transitions live in
//! `executions.rs`).
//!
//! Timestamps everywhere are `i64` **microseconds since the Unix epoch, UTC** ([`Micros`]):
//! integers sort and compare in SQL without parsing, are exact, and cost 8 bytes; the CLI turns
//! them into RFC 3339 text for people.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::Serialize;
use serde_json::Value;

/// Microseconds since the Unix epoch, UTC.
pub type Micros = i64;

/// Declares a closed enum stored as one lower-case word, with `as_str`/`parse`, `Display`,
/// serde and rusqlite conversions generated from one list so they cannot drift apart.
macro_rules! str_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $word:literal,)* }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $word)] $variant,)*
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The word stored in the database and shown to users.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)*
                }
            }

            /// The variant for a stored word; `None` for anything else.
            pub fn parse(word: &str) -> Option<Self> {
                match word {
                    $($word => Some($name::$variant),)*
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let word = value.as_str()?;
                $name::parse(word).ok_or_else(|| {
                    FromSqlError::Other(
                        format!("unknown {} {word:?}", stringify!($name)).into(),
                    )
                })
            }
        }
    };
}

str_enum! {
    /// Execution status, with StackStorm's names (`abandoned` is what an execution becomes when
    /// the agent died while it was in flight).
    pub enum ExecStatus {
        Requested = "requested",
        Scheduled = "scheduled",
        Delayed = "delayed",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Timeout = "timeout",
        Canceling = "canceling",
        Canceled = "canceled",
        Abandoned = "abandoned",
    }
}

impl ExecStatus {
    /// A terminal status is final: the store refuses to change it.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ExecStatus::Succeeded
                | ExecStatus::Failed
                | ExecStatus::Timeout
                | ExecStatus::Canceled
                | ExecStatus::Abandoned
        )
    }
}

str_enum! {
    /// Where a trigger instance is in the rules engine.
    pub enum TiStatus {
        Pending = "pending",
        Processing = "processing",
        Processed = "processed",
        Failed = "failed",
    }
}

str_enum! {
    /// Which input produced a trigger instance.
    pub enum TiSource {
        Timer = "timer",
        Webhook = "webhook",
        Sensor = "sensor",
        Internal = "internal",
    }
}

str_enum! {
    /// Whether a rule enforcement produced an execution (`failed`: e.g. parameters did not
    /// render; `failure_reason` says why).
    pub enum EnforcementStatus {
        Succeeded = "succeeded",
        Failed = "failed",
    }
}

str_enum! {
    /// Load state of a pack.
    pub enum PackStatus {
        /// Loaded and active.
        Loaded = "loaded",
        /// Never loaded successfully; nothing from it is active.
        Failed = "failed",
        /// The last reload failed; the previous good version stays active (`load_error` says why).
        Stale = "stale",
    }
}

str_enum! {
    /// Supervision state of a sensor process.
    pub enum SensorState {
        Starting = "starting",
        Running = "running",
        Backoff = "backoff",
        Stopped = "stopped",
        Failed = "failed",
    }
}

/// One entry of an execution's status history.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct StatusChange {
    pub status: String,
    pub at: Micros,
}

/// A new execution. `parameters` must already have secrets masked by the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct NewExecution {
    pub action_ref: String,
    pub runner: String,
    /// Initial status, normally `requested`.
    pub status: ExecStatus,
    pub parameters: Value,
    /// JSON object: user, rule, trigger_instance, parent, ...
    pub context: Value,
    pub parent_id: Option<i64>,
}

impl Default for NewExecution {
    fn default() -> Self {
        NewExecution {
            action_ref: String::new(),
            runner: String::new(),
            status: ExecStatus::Requested,
            parameters: Value::Object(Default::default()),
            context: Value::Object(Default::default()),
            parent_id: None,
        }
    }
}

/// The end of an execution. `status` must be terminal.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub status: ExecStatus,
    pub result: Option<Value>,
    pub stdout: String,
    pub stderr: String,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    /// Defaults to the store's clock.
    pub finished_at: Option<Micros>,
}

/// A full execution row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Execution {
    pub id: i64,
    pub action_ref: String,
    pub runner: String,
    pub status: ExecStatus,
    pub parameters: Value,
    pub context: Value,
    pub result: Option<Value>,
    pub stdout: String,
    pub stderr: String,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub parent_id: Option<i64>,
    pub enforcement_id: Option<i64>,
    pub created_at: Micros,
    pub started_at: Option<Micros>,
    pub finished_at: Option<Micros>,
    pub log: Vec<StatusChange>,
}

/// An execution without its large columns, for listings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExecutionSummary {
    pub id: i64,
    pub action_ref: String,
    pub runner: String,
    pub status: ExecStatus,
    pub exit_code: Option<i32>,
    pub parent_id: Option<i64>,
    pub enforcement_id: Option<i64>,
    pub created_at: Micros,
    pub started_at: Option<Micros>,
    pub finished_at: Option<Micros>,
}

/// Filters for [`super::Store::list_executions`]; newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecutionFilter {
    pub action_ref: Option<String>,
    pub status: Option<ExecStatus>,
    pub parent_id: Option<i64>,
    /// Only ids below this one (paging backwards).
    pub before_id: Option<i64>,
    /// Clamped to [`super::MAX_LIST_LIMIT`]; 0 means the maximum.
    pub limit: usize,
}

/// What a cancel request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It had no process yet (requested/scheduled/delayed) and is now `canceled`.
    Canceled,
    /// It is running (or already canceling) and is now `canceling`: the caller kills the
    /// process and completes it as `canceled`.
    Canceling,
    /// It had already finished with this status; nothing changed.
    AlreadyFinished(ExecStatus),
}

/// A new trigger instance (the durable part of ingest).
#[derive(Debug, Clone, PartialEq)]
pub struct NewTriggerInstance {
    pub trigger_ref: String,
    pub payload: Value,
    pub source: TiSource,
    /// Defaults to the store's clock.
    pub occurred_at: Option<Micros>,
    /// For parameterised triggers: which instance (webhook url, the timer's rule).
    pub target: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TriggerInstance {
    pub id: i64,
    pub trigger_ref: String,
    pub payload: Value,
    pub occurred_at: Micros,
    pub status: TiStatus,
    pub source: TiSource,
    pub processed_at: Option<Micros>,
    pub target: Option<String>,
}

/// Filters for [`super::Store::list_trigger_instances`]; newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TriggerInstanceFilter {
    pub trigger_ref: Option<String>,
    pub status: Option<TiStatus>,
    pub before_id: Option<i64>,
    pub limit: usize,
}

/// A rule enforcement, optionally with the execution it requests (inserted together).
#[derive(Debug, Clone, PartialEq)]
pub struct NewEnforcement {
    pub rule_ref: String,
    pub trigger_instance_id: i64,
    pub status: EnforcementStatus,
    pub failure_reason: Option<String>,
    /// Inserted in the same transaction, with `enforcement_id` set.
    pub execution: Option<NewExecution>,
}

/// The answer to [`super::Store::create_enforcement_with_execution`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforced {
    Created {
        enforcement_id: i64,
        execution_id: Option<i64>,
    },
    /// This rule already enforced this trigger instance (a replay after a crash): nothing was
    /// inserted; the ids are those of the earlier enforcement.
    AlreadyEnforced {
        enforcement_id: i64,
        execution_id: Option<i64>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Enforcement {
    pub id: i64,
    pub rule_ref: String,
    pub trigger_instance_id: i64,
    pub execution_id: Option<i64>,
    pub status: EnforcementStatus,
    pub failure_reason: Option<String>,
    pub created_at: Micros,
}

/// Filters for [`super::Store::list_enforcements`]; newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnforcementFilter {
    pub rule_ref: Option<String>,
    pub trigger_instance_id: Option<i64>,
    pub before_id: Option<i64>,
    pub limit: usize,
}

/// A key/value write.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KvSet {
    pub scope: String,
    pub name: String,
    /// Plaintext, or (with `encrypted`) a ciphertext produced by this store's key.
    pub value: String,
    pub secret: bool,
    /// `value` is already a `v1:` ciphertext (st2 `--encrypted`, e.g. a restore); implies
    /// `secret`. It is checked to decrypt with this store's key before it is stored.
    pub encrypted: bool,
    /// Time to live; `None` never expires.
    pub ttl: Option<std::time::Duration>,
}

/// A key/value row. For a secret read without decrypt, `value` is the ciphertext.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KvEntry {
    pub scope: String,
    pub name: String,
    pub value: String,
    pub secret: bool,
    pub expires_at: Option<Micros>,
    pub created_at: Micros,
    pub updated_at: Micros,
}

/// What a `kv_set` changed (for `core.st2.key_value_pair.create/update/value_change`).
#[derive(Debug, Clone, PartialEq)]
pub enum KvChange {
    Created,
    Updated {
        /// The previous row as stored (ciphertext for a secret).
        previous: KvEntry,
        /// The plaintext value or the secret flag differs from before.
        value_changed: bool,
    },
}

/// Filters for [`super::Store::kv_list`]; ordered by scope, name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KvFilter {
    pub scope: Option<String>,
    pub prefix: Option<String>,
    pub decrypt: bool,
    pub limit: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PackRecord {
    pub pack_ref: String,
    pub version: String,
    /// `st2`, `attune`, `stackpack` (owned by the pack module; stored as given).
    pub dialect: String,
    pub path: String,
    pub digest: String,
    pub status: PackStatus,
    pub load_error: Option<String>,
    pub loaded_at: Micros,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reload {
    pub id: i64,
    pub at: Micros,
    pub packs_changed: Vec<String>,
    pub result: String,
}

/// A sensor state update (the whole row); `updated_at` is stamped by the store.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorUpdate {
    pub sensor_ref: String,
    pub state: SensorState,
    pub pid: Option<i64>,
    pub restarts: i64,
    pub last_exit_code: Option<i32>,
    pub last_signal: Option<i32>,
    /// Tail of stderr; cut to its last [`super::MAX_SENSOR_STDERR_BYTES`] bytes.
    pub last_stderr: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SensorRecord {
    pub sensor_ref: String,
    pub state: SensorState,
    pub pid: Option<i64>,
    pub restarts: i64,
    pub last_exit_code: Option<i32>,
    pub last_signal: Option<i32>,
    pub last_stderr: Option<String>,
    pub updated_at: Micros,
}

/// What a retention pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeReport {
    pub executions: u64,
    pub trigger_instances: u64,
    pub reloads: u64,
    /// Write transactions used (each deletes at most [`super::PURGE_BATCH`] rows).
    pub batches: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    #[test]
    fn words_round_trip_and_terminal_set() {
        let mut out = String::new();
        for s in ExecStatus::ALL {
            assert_eq!(ExecStatus::parse(s.as_str()), Some(*s));
            out.push_str(&format!("{s}:{} ", s.is_terminal()));
        }
        expect![[r#"requested:false scheduled:false delayed:false running:false succeeded:true failed:true timeout:true canceling:false canceled:true abandoned:true "#]].assert_eq(&out);
        assert_eq!(ExecStatus::parse("Running"), None);
        assert_eq!(TiStatus::parse("processed"), Some(TiStatus::Processed));
        assert_eq!(TiSource::parse("cron"), None);
    }
}
