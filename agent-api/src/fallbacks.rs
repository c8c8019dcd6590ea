//! The fallback log: a CNI binary that could not reach the agent (and did the work itself)
//! appends one line to a small file beside the agent's socket, and the agent counts the lines
//! when its metrics are read. A dead agent cannot count anything itself; the file survives it.
//!
//! A line is `<binary> <verb> <reason>\n` (each a word). The file stops growing at
//! [`MAX_LOG_BYTES`] (about a thousand lines): fallbacks beyond that, while nobody counts
//! them, are logged by the binary only. A missing socket directory (no agent ever ran on the
//! node) is never created. Recording is best effort and never fails a CNI call.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::AgentError;

/// The size at which the log stops growing.
pub const MAX_LOG_BYTES: u64 = 64 * 1024;

/// The fallback log of the agent at `socket`: `fallbacks.log` in the socket's directory.
pub fn log_path(socket: &Path) -> PathBuf {
    socket
        .parent()
        .unwrap_or(Path::new("."))
        .join("fallbacks.log")
}

/// The reason word of a failure to reach the agent.
pub fn reason(e: &AgentError) -> &'static str {
    match e {
        AgentError::Missing(_) => "missing",
        AgentError::Connect { .. } => "refused",
        AgentError::Timeout { .. } => "timeout",
        AgentError::Call(_) => "broken",
    }
}

/// Records that `binary` did `verb` without the agent at `socket`, because of `why`.
pub fn record(socket: &Path, binary: &str, verb: &str, why: &AgentError) {
    let path = log_path(socket);
    if !path.parent().is_some_and(Path::is_dir) {
        return;
    }
    if std::fs::metadata(&path).is_ok_and(|m| m.len() >= MAX_LOG_BYTES) {
        return;
    }
    let line = format!("{} {} {}\n", word(binary), word(verb), reason(why));
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&path);
    if let Ok(mut file) = file {
        // One write of a short line with O_APPEND: lines of concurrent writers never mix.
        let _ = file.write_all(line.as_bytes());
    }
}

/// The fallbacks recorded at `socket` since the last take, as `(binary, verb, reason)`
/// lines; the log is emptied (renamed away first, so that a line appended meanwhile lands in
/// a new log and is counted next time).
pub fn take(socket: &Path) -> Vec<(String, String, String)> {
    let path = log_path(socket);
    let taken = path.with_extension("log.taken");
    if std::fs::rename(&path, &taken).is_err() {
        return Vec::new();
    }
    let text = std::fs::read_to_string(&taken).unwrap_or_default();
    let _ = std::fs::remove_file(&taken);
    text.lines()
        .filter_map(|line| {
            let mut words = line.split(' ');
            let (binary, verb, reason) = (words.next()?, words.next()?, words.next()?);
            Some((binary.to_string(), verb.to_string(), reason.to_string()))
        })
        .collect()
}

/// `s` as one word of a line (no spaces or line breaks), at most 32 bytes.
fn word(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_lines_are_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("plexusd.sock");
        let why = AgentError::Missing(socket.clone());
        record(&socket, "plexus-ipam", "ADD", &why);
        record(&socket, "plexus ipam", "DEL\n", &why);
        let taken = take(&socket);
        assert_eq!(
            taken,
            vec![
                ("plexus-ipam".into(), "ADD".into(), "missing".into()),
                ("plexusipam".into(), "DEL".into(), "missing".into()),
            ]
        );
        assert!(take(&socket).is_empty());
    }

    #[test]
    fn no_directory_is_created_and_the_log_is_capped() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("none/plexusd.sock");
        record(&gone, "plexus", "ADD", &AgentError::Call("x".into()));
        assert!(!dir.path().join("none").exists());

        let socket = dir.path().join("plexusd.sock");
        std::fs::write(log_path(&socket), vec![b'x'; MAX_LOG_BYTES as usize]).unwrap();
        record(&socket, "plexus", "ADD", &AgentError::Call("x".into()));
        let len = std::fs::metadata(log_path(&socket)).unwrap().len();
        assert_eq!(len, MAX_LOG_BYTES);
    }
}
