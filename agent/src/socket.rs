//! The agent's socket: its directory made with mode 0700, a stale socket file replaced, the
//! socket itself mode 0600 (root only, like the CNI binaries that call it).

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use tokio::net::UnixListener;

use crate::AgentdError;

/// Listens on `path`.
pub fn listen(path: &Path) -> Result<UnixListener, AgentdError> {
    let failed = |what: &str, e: std::io::Error| AgentdError::Socket {
        path: path.to_path_buf(),
        what: what.to_string(),
        source: e,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| failed("create its directory", e))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(failed("remove the stale socket", e)),
    }
    let listener = UnixListener::bind(path).map_err(|e| failed("bind", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| failed("set mode 0600 on", e))?;
    Ok(listener)
}
