//! The workflow conductor for Orquesta (StackStorm) and Attune workflows: a pure state machine
//! the agent drives. `Workflow::parse_orquesta` / `parse_attune` turn a definition into a
//! validated graph; `Conductor::start` begins one run; the agent takes `ready()` task requests,
//! executes the actions itself, reports each with `completed()`, and reads `status()` and
//! `output()` (`{"output": …}` plus `"errors"` on failure, as st2's orquesta runner returns).
//!
//! Expressions: YAQL `<% %>` (the subset in `yaql.rs`) and Jinja `{{ }}` through
//! `crate::expr::TemplateEnv`, with Orquesta's functions pre-translated (see `jinja.rs`).
//!
//! This module must not start processes, touch the database, sleep or spawn tasks: delays are
//! returned in the requests, the datastore is read through the `KvSource` lent to `start`.
//! Definitions and results are untrusted, so every structure is bounded (`MAX_*` constants)
//! and every failure is a value (`WorkflowError`, an `errors` entry), never a panic.

mod conductor;
mod jinja;
mod spec;
mod tpl;
mod yaql;

use std::time::Duration;

use serde_json::{Map, Value};

pub use conductor::{
    Conductor, ENGINE_RETRY_COUNT, MAX_ACTION_EXECUTIONS, MAX_DELAY_SECS, MAX_ERRORS, MAX_ITEMS, MAX_TASK_RUNS,
};
pub use jinja::MAX_CALL_NESTING;
pub use spec::{MAX_RETRY_COUNT, MAX_TASKS, RESERVED_TASK_NAMES, Workflow};
pub use yaql::{MAX_YAQL_BYTES, YAQL_FUEL, YAQL_MAX_DEPTH, YAQL_MAX_LIST, YAQL_MAX_STRING};

/// A definition that cannot run, with the path of the offending field
/// (`tasks.task2.next[0].do`), or a start the conductor refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkflowError {
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("{0}")]
    Start(String),
}

/// How one action execution ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    Succeeded,
    Failed,
    Timeout,
    Canceled,
}

impl TaskStatus {
    /// Orquesta's name for the status (`task_status()`, `task().status`).
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Timeout => "timeout",
            TaskStatus::Canceled => "canceled",
        }
    }

    /// Failed or timed out: the statuses that fail the workflow unless a transition handles
    /// them.
    pub fn abended(self) -> bool {
        matches!(self, TaskStatus::Failed | TaskStatus::Timeout)
    }
}

/// Where a run stands. A terminal status is reported only when no request is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Canceled,
}

/// One action execution the agent should start.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRequest {
    /// Unique within the run; pass it back to `Conductor::completed`.
    pub id: u64,
    pub task: String,
    pub action: String,
    pub input: Map<String, Value>,
    /// The item's position for `with`/`with_items` tasks.
    pub item_index: Option<usize>,
    /// Wait this long before starting (task `delay`, retry delay).
    pub delay: Option<Duration>,
    /// Attune task `timeout` (the action's own timeout otherwise).
    pub timeout: Option<Duration>,
}
