//! A bearer token read from a file, and read again whenever the file changes.
//!
//! The file's identity (device, inode, size, modification time) is checked on every request
//! (one `stat`); the file is read again, trimmed, when it changed. If it cannot be read, the
//! last token read is kept, as client-go does.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use http::HeaderValue;

/// A token file and the `Authorization` header of its last good content.
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    state: Mutex<TokenState>,
}

#[derive(Debug)]
struct TokenState {
    stamp: Option<FileStamp>,
    header: HeaderValue,
}

/// What tells one version of a file from the next: a kubelet-style atomic swap changes the
/// inode, an in-place rewrite the modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        let m = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        })
    }
}

impl TokenFile {
    /// Reads the token now; an unreadable, empty or invalid token file is an error.
    pub fn open(path: PathBuf) -> Result<TokenFile, String> {
        let stamp = FileStamp::of(&path);
        let header = read_bearer(&path)?;
        Ok(TokenFile {
            path,
            state: Mutex::new(TokenState { stamp, header }),
        })
    }

    /// The `Authorization` header for the file's current token.
    pub fn header(&self) -> HeaderValue {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let stamp = FileStamp::of(&self.path);
        if stamp.is_some() && stamp != state.stamp {
            match read_bearer(&self.path) {
                Ok(header) => {
                    state.header = header;
                    state.stamp = stamp;
                }
                Err(e) => tracing::warn!("keeping the last token: {e}"),
            }
        }
        state.header.clone()
    }
}

/// `Bearer <token>` for the trimmed content of the token file.
fn read_bearer(path: &Path) -> Result<HeaderValue, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("the token file {} is empty", path.display()));
    }
    let mut header = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| format!("the token file {} holds an invalid token", path.display()))?;
    header.set_sensitive(true);
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_is_trimmed_and_reread_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let file = TokenFile::open(path.clone()).unwrap();
        assert_eq!(file.header(), "Bearer first");
        assert!(file.header().is_sensitive());

        // An atomic swap, as the kubelet does it: new inode.
        let next = dir.path().join("token.new");
        std::fs::write(&next, "second").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert_eq!(file.header(), "Bearer second");

        // A vanished or emptied file keeps the last token.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(file.header(), "Bearer second");
        std::fs::write(&path, "").unwrap();
        assert_eq!(file.header(), "Bearer second");
        std::fs::write(&path, "third").unwrap();
        assert_eq!(file.header(), "Bearer third");
    }

    #[test]
    fn unusable_token_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let missing = TokenFile::open(dir.path().join("none")).unwrap_err();
        assert!(missing.contains("cannot read the token file"), "{missing}");
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        let empty = TokenFile::open(dir.path().join("empty")).unwrap_err();
        assert!(empty.contains("is empty"), "{empty}");
        std::fs::write(dir.path().join("bad"), "a\u{1}b").unwrap();
        let bad = TokenFile::open(dir.path().join("bad")).unwrap_err();
        assert!(bad.contains("invalid token"), "{bad}");
    }
}
