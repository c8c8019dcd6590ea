//! Logging set-up from `logFile`, `logLevel` and `logToStderr`. Plugin stdout is reserved for
//! the protocol, so logs go to stderr or a file.

use std::fs::OpenOptions;
use std::sync::Mutex;

use tracing::Level;

use crate::config::PlexusConfig;

/// Multus's level names (`debug`, `verbose`, `error`, `panic`) plus `info` and `warn`.
fn level(name: Option<&str>) -> Option<Level> {
    match name.map(str::to_ascii_lowercase).as_deref() {
        Some("debug") => Some(Level::DEBUG),
        Some("verbose") | Some("info") => Some(Level::INFO),
        Some("warn") | Some("warning") => Some(Level::WARN),
        Some("error") | None | Some("") => Some(Level::ERROR),
        Some("panic") => None,
        Some(_) => Some(Level::ERROR),
    }
}

/// Starts logging for this process as the configuration says. Called once per process; a log
/// file that cannot be opened falls back to stderr.
pub fn init(config: &PlexusConfig) {
    let Some(level) = level(config.log_level.as_deref()) else {
        return;
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .with_ansi(false);
    let file = config
        .log_file
        .as_ref()
        .and_then(|p| OpenOptions::new().create(true).append(true).open(p).ok());
    let _ = match file {
        Some(f) => builder.with_writer(Mutex::new(f)).try_init(),
        None => builder.with_writer(std::io::stderr).try_init(),
    };
}
