//! The Kubernetes binaries a node runs: those `cargo xtask apiserver` builds and caches, and
//! Debian's `kubectl`.

use std::path::PathBuf;

use super::{host, Result, KUBECTL_ENV, KUBELET_ENV};
use crate::cluster::{self, APISERVER_VERSION};

/// Where `cargo xtask apiserver` caches the Kubernetes binary `name` (`kubelet`, `kubectl`,
/// `kube-controller-manager`, `kube-scheduler`).
pub fn cached_path(name: &str) -> PathBuf {
    cluster::cache_dir().join(format!("{name}-{APISERVER_VERSION}"))
}

/// The Kubernetes binaries a node runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// kube-apiserver.
    pub apiserver: PathBuf,
    /// kubelet.
    pub kubelet: PathBuf,
    /// kube-controller-manager.
    pub controller_manager: PathBuf,
    /// kube-scheduler.
    pub scheduler: PathBuf,
    /// Debian's kubectl.
    pub kubectl: PathBuf,
}

/// The binaries, from their environment variables (the kubelet's and kubectl's) or the cache;
/// an error saying to run `cargo xtask apiserver` if one is missing.
pub fn binaries() -> Result<Binaries> {
    let pick = |env: Option<&str>, name: &str| -> Result<PathBuf> {
        let path = env
            .and_then(std::env::var_os)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| cached_path(name));
        if host::is_executable(&path) {
            Ok(path)
        } else {
            Err(format!(
                "no {} (from {} or the cache): run `cargo xtask apiserver` to build and cache it",
                path.display(),
                env.unwrap_or("its environment variable")
            )
            .into())
        }
    };
    Ok(Binaries {
        apiserver: cluster::apiserver_binary()?,
        kubelet: pick(Some(KUBELET_ENV), "kubelet")?,
        controller_manager: pick(None, "kube-controller-manager")?,
        scheduler: pick(None, "kube-scheduler")?,
        kubectl: pick(Some(KUBECTL_ENV), "kubectl")?,
    })
}

/// The binaries, if they are there. Otherwise prints why the test is skipped and returns
/// `None`, unless `CI` is set: node tests must never be skipped silently in CI.
pub fn binaries_or_skip() -> Option<Binaries> {
    match binaries() {
        Ok(b) => Some(b),
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("{e}; Kubernetes node tests must not be skipped in CI")
        }
        Err(e) => {
            eprintln!("skipped: {e}");
            None
        }
    }
}
