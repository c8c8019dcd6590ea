//! The readiness indicator file: the default network says it is ready by creating it.

use std::path::Path;
use std::time::{Duration, Instant};

use plexus_cni::{CniError, ErrorCode};

/// How often the file is looked for while waiting.
const POLL: Duration = Duration::from_millis(100);

/// Waits until `path` exists, for at most `timeout`; then fails with an error that names the
/// file.
pub async fn wait_for(path: &Path, timeout: Duration) -> Result<(), CniError> {
    let start = Instant::now();
    loop {
        if path.exists() {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(not_ready(path, Some(timeout)));
        }
        tokio::time::sleep(POLL.min(timeout.saturating_sub(start.elapsed()))).await;
    }
}

/// The error for a missing readiness file.
pub fn not_ready(path: &Path, waited: Option<Duration>) -> CniError {
    let waited = waited
        .map(|t| format!(" after waiting {:.1} s", t.as_secs_f64()))
        .unwrap_or_default();
    CniError::new(
        ErrorCode::NotReady,
        format!(
            "the default network is not ready: readiness indicator file {path:?} does not exist{waited}"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn waits_then_fails_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ready");
        let e = wait_for(&file, Duration::from_millis(250))
            .await
            .unwrap_err();
        assert_eq!(e.code, 105);
        assert!(e.msg.contains("ready"));
        std::fs::write(&file, "").unwrap();
        wait_for(&file, Duration::from_millis(250)).await.unwrap();
    }
}
