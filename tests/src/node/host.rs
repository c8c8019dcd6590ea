//! What the node leaves on the host that its namespaces do not contain: the pods' cgroups and
//! files in host paths the kubelet writes whatever its flags; found and removed at the end.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::Path;

/// Host paths the kubelet 1.20 writes whatever its flags (`/var/log/pods`, with links in
/// `/var/log/containers`), and a few it would with other flags (the device plugin socket in
/// `/var/lib/kubelet/device-plugins` without `DevicePlugins=false`). Those under `/var/lib`
/// and `/var/log` are private to the node ([`super::mounts`]); what is added to any of them on
/// the host is removed when the node stops.
pub const KUBELET_HOST_PATHS: &[&str] = &[
    "/var/lib/kubelet",
    "/var/log/pods",
    "/var/log/containers",
    "/usr/libexec/kubernetes",
    "/etc/kubernetes",
];

/// Removes `cgroup` (and what is below it) from every cgroup hierarchy; returns what could not
/// be removed.
pub(super) fn remove_cgroups(cgroup: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return problems;
    };
    for hierarchy in hierarchies.flatten() {
        let dir = hierarchy.path().join(cgroup.trim_start_matches('/'));
        if !dir.is_dir() {
            continue;
        }
        let mut dirs = vec![dir.clone()];
        let mut i = 0;
        while i < dirs.len() {
            if let Ok(entries) = std::fs::read_dir(&dirs[i]) {
                dirs.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
            i += 1;
        }
        for dir in dirs.iter().rev() {
            if let Err(e) = std::fs::remove_dir(dir) {
                problems.push(format!("cgroup {}: {e}", dir.display()));
            }
        }
    }
    problems
}

/// The names in `dir`, or `None` if it does not exist.
pub(super) fn dir_entries(dir: &Path) -> Option<BTreeSet<OsString>> {
    let entries = std::fs::read_dir(dir).ok()?;
    Some(entries.flatten().map(|e| e.file_name()).collect())
}

/// Removes what was added to `dir` since `before` (the whole directory if it did not exist);
/// a message if that fails.
pub(super) fn restore_dir(dir: &Path, before: Option<&BTreeSet<OsString>>) -> Option<String> {
    let now = dir_entries(dir)?;
    let result = match before {
        None => std::fs::remove_dir_all(dir),
        Some(before) => now.difference(before).try_for_each(|name| {
            let path = dir.join(name);
            if path.is_dir() && !path.is_symlink() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            }
        }),
    };
    result
        .err()
        .map(|e| format!("cannot clean {}: {e}", dir.display()))
}

/// Whether `path` is a regular file with an execute bit.
pub(super) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
