//! Actions as child processes: everything between "this action should run now with these
//! parameters" and "here is its status and result object".
//!
//! * [`process`] runs one child process on smol: own process group, stdin, capped stdout/stderr,
//!   timeout and cancellation with SIGTERM → grace → SIGKILL to the whole group.
//! * [`st2`] and [`attune`] are pure functions for the two dialects: how parameters become argv,
//!   stdin or environment, and how a finished process becomes a status and a result object.
//! * [`script`] decides how a script file is started (executable bit, shebang, `/bin/sh`).
//! * [`shim`] holds the embedded StackStorm Python shim (`st2common`, `st2reactor`, the action
//!   wrapper) and writes it to the state directory.
//!
//! This module must not decide *whether* an action runs (policies, rules, the scheduler do), must
//! not touch the database, and must not know about other packd modules: callers hand it plain
//! values and get plain values back.

pub mod attune;
pub mod process;
pub mod script;
pub mod shim;
pub mod st2;

/// Final status of one action execution, as both dialects report it.
///
/// StackStorm has more statuses (`abandoned`, `pending`, ...), but those are decided by the
/// engine, never by a finished process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExecStatus {
    Succeeded,
    Failed,
    Timeout,
    Canceled,
}

impl ExecStatus {
    /// The StackStorm status string (`st2:st2common/st2common/constants/action.py`).
    pub fn as_str(self) -> &'static str {
        match self {
            ExecStatus::Succeeded => "succeeded",
            ExecStatus::Failed => "failed",
            ExecStatus::Timeout => "timeout",
            ExecStatus::Canceled => "canceled",
        }
    }
}
