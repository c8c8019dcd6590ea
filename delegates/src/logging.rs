//! Logging for a CNI plugin process, from the `logLevel`/`log_level` and `logFile`/`log_file`
//! keys that Multus and Whereabouts use. Stdout carries the protocol, so logs go to the file or,
//! without one, to stderr.

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Mutex;

use tracing::Level;

/// The level a level name asks for: Multus's and Whereabouts's names (`debug`, `verbose`,
/// `error`, `panic`) plus `info` and `warn`. `panic` turns logging off (`None`); an unknown or
/// missing name means `error`.
pub fn level(name: Option<&str>) -> Option<Level> {
    match name.map(str::to_ascii_lowercase).as_deref() {
        Some("debug") => Some(Level::DEBUG),
        Some("verbose") | Some("info") => Some(Level::INFO),
        Some("warn") | Some("warning") => Some(Level::WARN),
        Some("panic") => None,
        _ => Some(Level::ERROR),
    }
}

/// Starts logging for this process at the level `level_name` names, to `file` (appended to)
/// or, when there is none or it cannot be opened, to stderr. Later calls change nothing.
pub fn init(level_name: Option<&str>, file: Option<&Path>) {
    let Some(level) = level(level_name) else {
        return;
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .with_ansi(false);
    let file = file.and_then(|p| OpenOptions::new().create(true).append(true).open(p).ok());
    let _ = match file {
        Some(f) => builder.with_writer(Mutex::new(f)).try_init(),
        None => builder.with_writer(std::io::stderr).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_names() {
        assert_eq!(level(Some("DEBUG")), Some(Level::DEBUG));
        assert_eq!(level(Some("verbose")), Some(Level::INFO));
        assert_eq!(level(Some("warning")), Some(Level::WARN));
        assert_eq!(level(Some("panic")), None);
        assert_eq!(level(Some("")), Some(Level::ERROR));
        assert_eq!(level(Some("loud")), Some(Level::ERROR));
        assert_eq!(level(None), Some(Level::ERROR));
    }
}
