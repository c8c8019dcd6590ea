//! Logging set-up from `logFile` and `logLevel` (Multus's keys), through
//! [`plexus_cni::logging`]. Plugin stdout is reserved for the protocol, so logs go to stderr or a
//! file.

use crate::config::PlexusConfig;

/// Starts logging for this process as the configuration says. Called once per process; a log
/// file that cannot be opened falls back to stderr.
pub fn init(config: &PlexusConfig) {
    plexus_cni::logging::init(config.log_level.as_deref(), config.log_file.as_deref());
}
