//! Replacing a file so that nobody ever sees half of it, and a running program is never in the
//! way.
//!
//! The new content goes into a temporary file in the same directory (named
//! `.<name>.plexus-tmp-<pid>`: hidden, and without a `.conf`/`.conflist`/`.json` extension, so
//! a runtime scanning the directory never loads it), which is fsynced, given its mode and then
//! renamed over the target; the directory is fsynced last. Writing into a binary that is being
//! executed fails with "Text file busy" (Multus #1221); renaming over it does not: the running
//! process keeps the old inode, the next exec gets the new file.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The file was (re)written.
    Written,
    /// The file already had this content and mode.
    Unchanged,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Change::Written => "wrote",
            Change::Unchanged => "unchanged",
        })
    }
}

/// Writes `contents` to `path` with `mode` unless it already holds exactly that.
pub fn write_if_changed(path: &Path, contents: &[u8], mode: u32) -> io::Result<Change> {
    if has_mode(path, mode) && fs::read(path).is_ok_and(|old| old == contents) {
        return Ok(Change::Unchanged);
    }
    replace(path, mode, |f| f.write_all(contents))?;
    Ok(Change::Written)
}

/// Copies `source` to `dest` with `mode` unless `dest` already holds the same bytes.
pub fn copy_if_changed(source: &Path, dest: &Path, mode: u32) -> io::Result<Change> {
    if has_mode(dest, mode) && same_content(source, dest)? {
        return Ok(Change::Unchanged);
    }
    let mut input = File::open(source)?;
    replace(dest, mode, |f| io::copy(&mut input, f).map(drop))?;
    Ok(Change::Written)
}

/// Replaces `path` by a file that `fill` writes, atomically (see the module documentation).
pub fn replace(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = temp_path(path);
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        fill(&mut file)?;
        file.set_permissions(Permissions::from_mode(mode))?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The temporary file next to `path`.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.plexus-tmp-{}", std::process::id()))
}

/// True when `path` is a regular file with exactly the permission bits `mode`.
fn has_mode(path: &Path, mode: u32) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o7777 == mode)
}

/// True when both files exist and hold the same bytes.
pub fn same_content(a: &Path, b: &Path) -> io::Result<bool> {
    let (Ok(fa), Ok(fb)) = (File::open(a), File::open(b)) else {
        return Ok(false);
    };
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ra, mut rb) = (BufReader::new(fa), BufReader::new(fb));
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = read_full(&mut ra, &mut ba)?;
        let m = read_full(&mut rb, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the end of the input.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_only_changes_with_the_mode_and_no_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.conflist");
        assert_eq!(write_if_changed(&p, b"a", 0o600).unwrap(), Change::Written);
        assert_eq!(
            write_if_changed(&p, b"a", 0o600).unwrap(),
            Change::Unchanged
        );
        assert_eq!(write_if_changed(&p, b"a", 0o644).unwrap(), Change::Written);
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert_eq!(write_if_changed(&p, b"b", 0o644).unwrap(), Change::Written);
        assert_eq!(fs::read(&p).unwrap(), b"b");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn copies_and_compares() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        fs::write(&a, &big).unwrap();
        assert!(!same_content(&a, &b).unwrap());
        assert_eq!(copy_if_changed(&a, &b, 0o755).unwrap(), Change::Written);
        assert!(same_content(&a, &b).unwrap());
        assert_eq!(copy_if_changed(&a, &b, 0o755).unwrap(), Change::Unchanged);
        let mut other = big.clone();
        other[150_000] ^= 1;
        fs::write(&a, &other).unwrap();
        assert!(!same_content(&a, &b).unwrap());
        assert_eq!(copy_if_changed(&a, &b, 0o755).unwrap(), Change::Written);
        assert_eq!(fs::read(&b).unwrap(), other);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, "old").unwrap();
        let err = replace(&p, 0o644, |_| Err(io::Error::other("boom"))).unwrap_err();
        assert_eq!(err.to_string(), "boom");
        assert_eq!(fs::read_to_string(&p).unwrap(), "old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
