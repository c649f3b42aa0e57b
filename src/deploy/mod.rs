//! Running packd as a service on a device: systemd readiness and watchdog notifications
//! (`notify`), one-line-per-event logging that journald understands (`logging`), and the agent's
//! configuration file and flags (`config`).
//!
//! This module only provides these pieces; it starts nothing and knows nothing about packs,
//! the store or the engine. `packd serve` wires them together.

pub mod config;
pub mod logging;
pub mod notify;
