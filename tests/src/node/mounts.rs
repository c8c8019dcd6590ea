//! The node's file system view: K3s's paths as they are on a K3s node, kept under the node's
//! temporary root, in the node thread's private mount namespace ([`super::thread`]).
//!
//! The host's `/var/lib`, `/var/log` and `/run` are covered by overlays whose upper layers are
//! under the root, so that whatever the node writes there (the kubelet's logs, containerd's
//! pod namespaces, the shims' state) stays out of the host's; then K3s's directories
//! ([`BOUND`]) are bind-mounted from the same paths under the root. Manifests naming
//! `/var/lib/rancher/k3s/...` in hostPath volumes, the conflist `plexusctl install --k3s`
//! writes and NADs naming its kubeconfig all work unchanged, and the tests read the same files
//! under the root from the host. The host sees none of these mounts, and they end with the
//! namespace.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::Result;

/// Host directories the node gets a private, writable copy of.
const OVERLAID: &[&str] = &["/var/lib", "/var/log", "/run"];

/// The node's paths that are kept under its root, at the same path: K3s's directory, the CNI
/// state (host-local's leases, Plexus's cache), Flannel's readiness file's directory and the
/// node agent's socket directory (so that the node's `/run/plexus/plexusd.sock` is its own,
/// never the host's).
pub const BOUND: &[&str] = &[
    "/var/lib/rancher/k3s",
    "/var/lib/cni",
    "/run/flannel",
    "/run/plexus",
];

/// Where `path` (one of [`BOUND`]) is kept under `root`.
pub fn under_root(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// Sets up the overlays and bind mounts; must run on the node thread.
pub(super) fn set_up(root: &Path) -> Result {
    for (i, dir) in OVERLAID.iter().enumerate() {
        let layers = root.join(format!("overlay/{i}"));
        let (upper, work) = (layers.join("upper"), layers.join("work"));
        std::fs::create_dir_all(&upper)?;
        std::fs::create_dir_all(&work)?;
        let options = format!(
            "lowerdir={dir},upperdir={},workdir={}",
            upper.display(),
            work.display()
        );
        mount(
            Some("overlay"),
            *dir,
            Some("overlay"),
            MsFlags::empty(),
            Some(options.as_str()),
        )
        .map_err(|e| format!("cannot mount an overlay on {dir}: {e}"))?;
    }
    for path in BOUND {
        let source = under_root(root, path);
        std::fs::create_dir_all(&source)?;
        std::fs::create_dir_all(path)?;
        mount(
            Some(&source),
            *path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("cannot bind {} to {path}: {e}", source.display()))?;
    }
    Ok(())
}

/// Unmounts what [`set_up`] mounted (and anything mounted below); must run on the node
/// thread. Returns what could not be unmounted.
pub(super) fn tear_down() -> Vec<String> {
    let mut left = Vec::new();
    for path in BOUND.iter().chain(OVERLAID.iter().rev()) {
        if let Err(e) = umount2(*path, MntFlags::MNT_DETACH) {
            if e != nix::errno::Errno::EINVAL {
                left.push(format!("{path}: {e}"));
            }
        }
    }
    left
}
