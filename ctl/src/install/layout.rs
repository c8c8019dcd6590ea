//! Where Plexus goes on a node: K3s's fixed paths, older K3s's `data/current/bin`, or the usual
//! `/opt/cni/bin` and `/etc/cni/net.d`.
//!
//! Every path here is a *node path* (what `plexus` and the runtime see on the node, and what is
//! written into configurations). [`Layout::host`] turns one into the path this process opens:
//! the same path under `--root`.

use std::path::{Component, Path, PathBuf};

/// Present on every K3s node.
pub const K3S_DATA_DIR: &str = "/var/lib/rancher/k3s";
/// K3s's CNI bin dir since v1.28.15+k3s1, v1.29.10+k3s1, v1.30.6+k3s1 and v1.31.2+k3s1.
pub const K3S_BIN_DIR: &str = "/var/lib/rancher/k3s/data/cni";
/// Older K3s's CNI bin dir: a link to `data/<hash>/bin`, which changes with every upgrade.
pub const K3S_LEGACY_BIN_DIR: &str = "/var/lib/rancher/k3s/data/current/bin";
/// K3s's CNI configuration dir (Flannel writes `10-flannel.conflist` there).
pub const K3S_CONF_DIR: &str = "/var/lib/rancher/k3s/agent/etc/cni/net.d";
/// The usual CNI bin dir.
pub const BIN_DIR: &str = "/opt/cni/bin";
/// The usual CNI configuration dir.
pub const CONF_DIR: &str = "/etc/cni/net.d";
/// The directory under the conf dir holding Plexus's kubeconfig and credentials.
pub const PLEXUS_SUBDIR: &str = "plexus.d";

/// Which kind of node this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// K3s with the fixed bin dir [`K3S_BIN_DIR`].
    K3s,
    /// K3s before the fixed bin dir: [`K3S_LEGACY_BIN_DIR`].
    K3sLegacy,
    /// Any other node.
    Generic,
}

impl std::fmt::Display for Flavor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Flavor::K3s => "K3s",
            Flavor::K3sLegacy => "K3s before v1.28.15 (data/current/bin)",
            Flavor::Generic => "generic",
        })
    }
}

/// What the command line says about the layout.
#[derive(Debug, Clone, Default)]
pub struct LayoutOptions {
    /// Use K3s's paths even if [`K3S_DATA_DIR`] is missing.
    pub k3s: bool,
    /// Use [`K3S_LEGACY_BIN_DIR`] on K3s.
    pub k3s_legacy_bin_dir: bool,
    /// An explicit bin dir (node path).
    pub bin_dir: Option<PathBuf>,
    /// An explicit conf dir (node path).
    pub conf_dir: Option<PathBuf>,
}

/// The node's directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The node's root as this process sees it.
    pub root: PathBuf,
    /// What was detected.
    pub flavor: Flavor,
    /// The CNI bin dir (node path).
    pub bin_dir: PathBuf,
    /// The CNI conf dir (node path).
    pub conf_dir: PathBuf,
}

impl Layout {
    /// Detects the layout under `root`: K3s when `--k3s` is given or [`K3S_DATA_DIR`] exists;
    /// there the legacy bin dir when asked for, or when `data/cni` is missing but
    /// `data/current/bin` exists. Explicit directories win.
    pub fn detect(root: &Path, options: &LayoutOptions) -> Layout {
        let host = |p: &str| under_root(root, Path::new(p));
        let k3s = options.k3s || options.k3s_legacy_bin_dir || host(K3S_DATA_DIR).is_dir();
        let flavor = if !k3s {
            Flavor::Generic
        } else if options.k3s_legacy_bin_dir
            || (!host(K3S_BIN_DIR).is_dir() && host(K3S_LEGACY_BIN_DIR).is_dir())
        {
            Flavor::K3sLegacy
        } else {
            Flavor::K3s
        };
        let (bin, conf) = match flavor {
            Flavor::K3s => (K3S_BIN_DIR, K3S_CONF_DIR),
            Flavor::K3sLegacy => (K3S_LEGACY_BIN_DIR, K3S_CONF_DIR),
            Flavor::Generic => (BIN_DIR, CONF_DIR),
        };
        Layout {
            root: root.to_path_buf(),
            flavor,
            bin_dir: options.bin_dir.clone().unwrap_or_else(|| bin.into()),
            conf_dir: options.conf_dir.clone().unwrap_or_else(|| conf.into()),
        }
    }

    /// The path this process opens for the node path `node`.
    pub fn host(&self, node: &Path) -> PathBuf {
        under_root(&self.root, node)
    }

    /// `<confDir>/plexus.d` (node path).
    pub fn plexus_dir(&self) -> PathBuf {
        self.conf_dir.join(PLEXUS_SUBDIR)
    }
}

/// `node` under `root`: `/var/x` under `/host` is `/host/var/x`.
pub fn under_root(root: &Path, node: &Path) -> PathBuf {
    let relative: PathBuf = node
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_)))
        .collect();
    root.join(relative)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect(root: &Path, options: LayoutOptions) -> Layout {
        Layout::detect(root, &options)
    }

    #[test]
    fn generic_k3s_and_legacy_k3s() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let generic = detect(r, LayoutOptions::default());
        assert_eq!(generic.flavor, Flavor::Generic);
        assert_eq!(generic.bin_dir, Path::new(BIN_DIR));
        assert_eq!(generic.conf_dir, Path::new(CONF_DIR));

        std::fs::create_dir_all(under_root(r, Path::new(K3S_DATA_DIR))).unwrap();
        let fresh = detect(r, LayoutOptions::default());
        assert_eq!(fresh.flavor, Flavor::K3s);
        assert_eq!(fresh.bin_dir, Path::new(K3S_BIN_DIR));
        assert_eq!(fresh.conf_dir, Path::new(K3S_CONF_DIR));

        std::fs::create_dir_all(under_root(r, Path::new(K3S_LEGACY_BIN_DIR))).unwrap();
        assert_eq!(
            detect(r, LayoutOptions::default()).flavor,
            Flavor::K3sLegacy
        );
        std::fs::create_dir_all(under_root(r, Path::new(K3S_BIN_DIR))).unwrap();
        assert_eq!(detect(r, LayoutOptions::default()).flavor, Flavor::K3s);
        let forced = detect(
            r,
            LayoutOptions {
                k3s_legacy_bin_dir: true,
                ..Default::default()
            },
        );
        assert_eq!(forced.bin_dir, Path::new(K3S_LEGACY_BIN_DIR));
    }

    #[test]
    fn flags_and_overrides() {
        let root = tempfile::tempdir().unwrap();
        let k3s = detect(
            root.path(),
            LayoutOptions {
                k3s: true,
                conf_dir: Some("/etc/x".into()),
                ..Default::default()
            },
        );
        assert_eq!(k3s.bin_dir, Path::new(K3S_BIN_DIR));
        assert_eq!(k3s.conf_dir, Path::new("/etc/x"));
        assert_eq!(k3s.plexus_dir(), Path::new("/etc/x/plexus.d"));
        assert_eq!(k3s.host(Path::new("/etc/x/a")), root.path().join("etc/x/a"));
        assert_eq!(
            under_root(Path::new("/"), Path::new("/opt/cni/bin")),
            Path::new("/opt/cni/bin")
        );
    }
}
