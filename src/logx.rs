//! Log macros used across the agent: `log_error!`, `log_warn!`, `log_info!`, `log_debug!`.
//! They format lazily (nothing is built when the level is off) and hand the line to
//! `deploy::logging`, which writes one line per event to stderr (journald priorities under
//! systemd, timestamps otherwise). Never pass a secret to them: callers log masked values.

pub use crate::deploy::logging::Level;

#[macro_export]
macro_rules! log_at {
    ($lvl:expr, $($t:tt)*) => {
        if $crate::deploy::logging::enabled($lvl) {
            $crate::deploy::logging::log($lvl, format_args!($($t)*));
        }
    };
}
#[macro_export]
macro_rules! log_error { ($($t:tt)*) => { $crate::log_at!($crate::logx::Level::Error, $($t)*) }; }
#[macro_export]
macro_rules! log_warn { ($($t:tt)*) => { $crate::log_at!($crate::logx::Level::Warn, $($t)*) }; }
#[macro_export]
macro_rules! log_info { ($($t:tt)*) => { $crate::log_at!($crate::logx::Level::Info, $($t)*) }; }
#[macro_export]
macro_rules! log_debug { ($($t:tt)*) => { $crate::log_at!($crate::logx::Level::Debug, $($t)*) }; }
