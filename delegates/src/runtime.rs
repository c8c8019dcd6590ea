//! The async runtime of a plugin process: one command, one single-threaded Tokio runtime.

use std::future::Future;

use crate::{CniError, ErrorCode};

/// Runs `f` to completion on a new single-threaded runtime with time and I/O enabled, then logs
/// (at debug level) the process's peak memory, which `cargo xtask bench` reads. A runtime that
/// cannot start is an I/O failure (code 5).
pub fn block_on<T>(f: impl Future<Output = Result<T, CniError>>) -> Result<T, CniError> {
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            CniError::new(
                ErrorCode::IoFailure,
                format!("cannot start the async runtime: {e}"),
            )
        })?
        .block_on(f);
    if let Ok(usage) = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF) {
        tracing::debug!(peak_rss_kib = usage.max_rss(), "done");
    }
    outcome
}
