//! Installing Plexus's binaries into the CNI bin dir: `plexus` (required), `plexus-ipam` and
//! `plexus-sriov` (each when it is next to `plexus`), each replaced atomically with mode 0755 (see [`super::atomic`]),
//! so a runtime executing the old binary meanwhile is never in the way.

use std::path::{Path, PathBuf};

use super::atomic::{self, Change};
use super::InstallError;

/// The binaries, and whether each is required.
pub const BINARIES: [(&str, bool); 3] = [
    ("plexus", true),
    ("plexus-ipam", false),
    ("plexus-sriov", false),
];

/// The mode of an installed binary.
const MODE: u32 = 0o755;

/// What happened to one binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// Copied, or already identical.
    Done {
        /// The binary's name.
        name: &'static str,
        /// Where it went (as this process sees it).
        dest: PathBuf,
        /// Whether it was rewritten.
        change: Change,
    },
    /// An optional binary that is not in the source directory.
    Absent {
        /// The binary's name.
        name: &'static str,
    },
}

/// Where the binaries come from by default: the directory of the running executable.
pub fn default_source_dir() -> Result<PathBuf, InstallError> {
    let exe =
        std::env::current_exe().map_err(InstallError::io("find", "the running executable"))?;
    Ok(exe.parent().map(Path::to_path_buf).unwrap_or_default())
}

/// Copies each binary of `source_dir` into `bin_dir` (a path this process opens), creating it.
/// With `only_if_missing`, a binary is copied only when the installed one is missing or of a
/// different size (the cheap check `--watch` repeats).
pub fn install(
    source_dir: &Path,
    bin_dir: &Path,
    only_if_missing: bool,
) -> Result<Vec<Installed>, InstallError> {
    std::fs::create_dir_all(bin_dir).map_err(InstallError::io("create", bin_dir))?;
    let mut done = Vec::new();
    for (name, required) in BINARIES {
        let source = source_dir.join(name);
        if !source.is_file() {
            if required {
                return Err(InstallError::MissingBinary(source));
            }
            done.push(Installed::Absent { name });
            continue;
        }
        let dest = bin_dir.join(name);
        let change = if only_if_missing && !differs_in_size(&source, &dest) {
            Change::Unchanged
        } else {
            atomic::copy_if_changed(&source, &dest, MODE)
                .map_err(InstallError::io("install", &dest))?
        };
        done.push(Installed::Done { name, dest, change });
    }
    Ok(done)
}

/// True when `dest` is missing or its size differs from `source`'s.
fn differs_in_size(source: &Path, dest: &Path) -> bool {
    match (std::fs::metadata(source), std::fs::metadata(dest)) {
        (Ok(s), Ok(d)) => s.len() != d.len(),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn copies_plexus_and_skips_a_missing_ipam() {
        let src = tempfile::tempdir().unwrap();
        let bin = tempfile::tempdir().unwrap();
        let dest = bin.path().join("sub");
        assert!(matches!(
            install(src.path(), &dest, false),
            Err(InstallError::MissingBinary(_))
        ));
        std::fs::write(src.path().join("plexus"), "v1").unwrap();
        let done = install(src.path(), &dest, false).unwrap();
        assert_eq!(
            done,
            [
                Installed::Done {
                    name: "plexus",
                    dest: dest.join("plexus"),
                    change: Change::Written
                },
                Installed::Absent {
                    name: "plexus-ipam"
                },
                Installed::Absent {
                    name: "plexus-sriov"
                }
            ]
        );
        let mode = std::fs::metadata(dest.join("plexus"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        std::fs::write(src.path().join("plexus-ipam"), "ipam").unwrap();
        let again = install(src.path(), &dest, false).unwrap();
        assert!(matches!(
            again[0],
            Installed::Done {
                change: Change::Unchanged,
                ..
            }
        ));
        assert!(matches!(
            again[1],
            Installed::Done {
                change: Change::Written,
                ..
            }
        ));
        // The watch's cheap check: same size counts as installed.
        std::fs::write(src.path().join("plexus"), "v2").unwrap();
        let cheap = install(src.path(), &dest, true).unwrap();
        assert!(matches!(
            cheap[0],
            Installed::Done {
                change: Change::Unchanged,
                ..
            }
        ));
        std::fs::remove_file(dest.join("plexus")).unwrap();
        let cheap = install(src.path(), &dest, true).unwrap();
        assert!(matches!(
            cheap[0],
            Installed::Done {
                change: Change::Written,
                ..
            }
        ));
        assert_eq!(std::fs::read(dest.join("plexus")).unwrap(), b"v2");
    }
}
