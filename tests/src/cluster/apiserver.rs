//! The kube-apiserver binary (cached by `cargo xtask apiserver`), its flags, and kubeconfigs.

use std::path::{Path, PathBuf};

use super::{Result, APISERVER_ENV, APISERVER_VERSION};
use crate::process::is_executable;

/// The API groups the API server serves (`--runtime-config`). The API server builds its
/// OpenAPI document from every served type before it answers anything, so fewer groups start it
/// about 2 s faster. The groups its own informers watch (networking, node, storage,
/// admissionregistration, flowcontrol) must stay; events.k8s.io is where the node agent's
/// Events go.
pub const API_GROUPS: &[&str] = &[
    "api/v1",
    "events.k8s.io/v1",
    "apiextensions.k8s.io/v1",
    "apiregistration.k8s.io/v1",
    "authentication.k8s.io/v1",
    "authorization.k8s.io/v1",
    "coordination.k8s.io/v1",
    "rbac.authorization.k8s.io/v1",
    "scheduling.k8s.io/v1",
    "flowcontrol.apiserver.k8s.io/v1beta1",
    "networking.k8s.io/v1",
    "node.k8s.io/v1",
    "storage.k8s.io/v1",
    "admissionregistration.k8s.io/v1",
];

/// `$XDG_CACHE_HOME/plexus`, else `~/.cache/plexus`: where `cargo xtask apiserver` caches.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache")
        });
    base.join("plexus")
}

/// Where `cargo xtask apiserver` caches the kube-apiserver binary.
pub fn cached_apiserver_path() -> PathBuf {
    cache_dir().join(format!("kube-apiserver-{APISERVER_VERSION}"))
}

/// The kube-apiserver binary: `$PLEXUS_KUBE_APISERVER`, else the cached one. An error (saying to
/// run `cargo xtask apiserver`) if there is none.
pub fn apiserver_binary() -> Result<PathBuf> {
    let (path, from) = match std::env::var_os(APISERVER_ENV).filter(|v| !v.is_empty()) {
        Some(path) => (PathBuf::from(path), APISERVER_ENV),
        None => (cached_apiserver_path(), "the cache"),
    };
    if is_executable(&path) {
        Ok(path)
    } else {
        Err(format!(
            "no kube-apiserver at {} (from {from}): run `cargo xtask apiserver` to build and cache it",
            path.display()
        )
        .into())
    }
}

/// The kube-apiserver binary, if there is one. Otherwise prints why the test is skipped and
/// returns `None`, unless `CI` is set: Kubernetes tests must never be skipped silently in CI,
/// so this panics there.
pub fn apiserver_or_skip() -> Option<PathBuf> {
    match apiserver_binary() {
        Ok(path) => Some(path),
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("{e}; Kubernetes tests must not be skipped in CI")
        }
        Err(e) => {
            eprintln!("skipped: {e}");
            None
        }
    }
}

/// The audit policy: every request, once (when answered), at level Metadata.
pub(super) const AUDIT_POLICY: &str = "\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [\"RequestReceived\", \"ResponseStarted\"]
rules:
  - level: Metadata
";

/// The kube-apiserver flags that work here (1.20.2, 2 cores, loopback only), serving
/// [`API_GROUPS`] and `extra_groups`.
pub(super) fn apiserver_flags(
    dir: &Path,
    etcd_url: &str,
    port: u16,
    extra_groups: &[String],
) -> Vec<String> {
    let p = |name: &str| dir.join(name).display().to_string();
    let runtime_config = std::iter::once("api/all=false".to_string())
        .chain(API_GROUPS.iter().map(|g| format!("{g}=true")))
        .chain(extra_groups.iter().map(|g| format!("{g}=true")))
        .collect::<Vec<_>>()
        .join(",");
    vec![
        format!("--etcd-servers={etcd_url}"),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        // 1.20 still opens an unauthenticated port 8080 unless told not to.
        "--insecure-port=0".into(),
        format!("--cert-dir={}", p("certs")),
        format!("--token-auth-file={}", p("tokens.csv")),
        "--authorization-mode=RBAC".into(),
        // One EC key signs service-account tokens and (its public half) verifies them.
        format!("--service-account-key-file={}", p("sa.key")),
        format!("--service-account-signing-key-file={}", p("sa.key")),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        "--service-cluster-ip-range=10.96.0.0/16".into(),
        // No controller-manager creates the `default` service account.
        "--disable-admission-plugins=ServiceAccount".into(),
        // No endpoints for the `kubernetes` service: 127.0.0.1 is refused as an endpoint.
        "--endpoint-reconciler-type=none".into(),
        format!("--runtime-config={runtime_config}"),
        format!("--audit-log-path={}", p("audit.log")),
        format!("--audit-policy-file={}", p("audit-policy.yaml")),
        "--profiling=false".into(),
        // `kubectl exec` to a kubelet of `plexus_tests::node`: reach it at its --node-ip, not by
        // resolving its node name.
        "--kubelet-preferred-address-types=InternalIP,Hostname".into(),
    ]
}

/// A kubeconfig for `url` with one user; `ca` verifies the server, else verification is off.
pub(super) fn kubeconfig_yaml(
    url: &str,
    ca: Option<&Path>,
    user: &str,
    credential: &str,
) -> String {
    let tls = match ca {
        Some(ca) => format!("certificate-authority: {}", ca.display()),
        None => "insecure-skip-tls-verify: true".into(),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: plexus\n  cluster:\n    server: {url}\n    {tls}\nusers:\n- name: {user}\n  user:\n    {credential}\ncontexts:\n- name: plexus\n  context:\n    cluster: plexus\n    user: {user}\ncurrent-context: plexus\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfigs_parse() {
        let with_ca = kubeconfig_yaml(
            "https://127.0.0.1:6443",
            Some(Path::new("/x/ca.crt")),
            "plexus",
            "tokenFile: /x/token",
        );
        let parsed = kube::config::Kubeconfig::from_yaml(&with_ca).unwrap();
        let user = parsed.auth_infos[0].auth_info.as_ref().unwrap();
        assert_eq!(user.token_file.as_deref(), Some("/x/token"));
        let cluster = parsed.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.certificate_authority.as_deref(), Some("/x/ca.crt"));
        let insecure = kubeconfig_yaml("https://127.0.0.1:6443", None, "admin", "token: t");
        let parsed = kube::config::Kubeconfig::from_yaml(&insecure).unwrap();
        let cluster = parsed.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.insecure_skip_tls_verify, Some(true));
    }
}
