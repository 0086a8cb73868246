//! Logging into the router's log (the WIT `log` interface), where lines are
//! tagged with the plugin's name. Use the macros, which take `format!`
//! arguments:
//!
//! ```ignore
//! switchyard_plugin::log::info!("projected {noms}: {status}");
//! ```

pub use crate::bindings::switchyard::plugin::log::Level;

/// Writes one log line at `level`.
pub fn write(level: Level, message: &str) {
    crate::bindings::switchyard::plugin::log::log(level, message)
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log_at {
    ($level:ident, $($arg:tt)+) => {
        $crate::log::write($crate::log::Level::$level, &::std::format!($($arg)+))
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log_trace { ($($arg:tt)+) => { $crate::__log_at!(Trace, $($arg)+) }; }
#[doc(hidden)]
#[macro_export]
macro_rules! __log_debug { ($($arg:tt)+) => { $crate::__log_at!(Debug, $($arg)+) }; }
#[doc(hidden)]
#[macro_export]
macro_rules! __log_info { ($($arg:tt)+) => { $crate::__log_at!(Info, $($arg)+) }; }
#[doc(hidden)]
#[macro_export]
macro_rules! __log_warn { ($($arg:tt)+) => { $crate::__log_at!(Warn, $($arg)+) }; }
#[doc(hidden)]
#[macro_export]
macro_rules! __log_error { ($($arg:tt)+) => { $crate::__log_at!(Error, $($arg)+) }; }

/// `log::debug!(...)`: like `format!`, logged at debug level.
pub use crate::__log_debug as debug;
/// `log::error!(...)`: like `format!`, logged at error level.
pub use crate::__log_error as error;
/// `log::info!(...)`: like `format!`, logged at info level.
pub use crate::__log_info as info;
/// `log::trace!(...)`: like `format!`, logged at trace level.
pub use crate::__log_trace as trace;
/// `log::warn!(...)`: like `format!`, logged at warn level.
pub use crate::__log_warn as warn;
