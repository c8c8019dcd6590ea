//! Plexus's kubeconfig on the node, from the installer pod's service account.
//!
//! The service account token the kubelet mounts into the pod is a bound token that expires and
//! is rotated in place, inside the pod only; the node never sees the new one. So the token and
//! the CA bundle are copied to `<confDir>/plexus.d/{token,ca.crt}` and the kubeconfig
//! `<confDir>/plexus.d/plexus.kubeconfig` refers to them by path (`tokenFile`,
//! `certificate-authority`) instead of embedding them. `plexusctl install --watch` copies them
//! again whenever they change, and `plexus` re-reads the token file on every call, so the
//! credentials never go stale (Multus #852: a kubeconfig written once stops working with
//! `Unauthorized` when its token expires).

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::atomic::{self, Change};
use super::layout::Layout;
use super::InstallError;

/// Where Kubernetes mounts the pod's service account.
pub const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The kubeconfig's file name in `plexus.d`.
pub const KUBECONFIG_FILE: &str = "plexus.kubeconfig";
/// The token's file name (in the service account dir and in `plexus.d`).
pub const TOKEN_FILE: &str = "token";
/// The CA bundle's file name (in the service account dir and in `plexus.d`).
pub const CA_FILE: &str = "ca.crt";

/// The API server of the in-cluster environment: `https://$KUBERNETES_SERVICE_HOST:$PORT`.
pub fn server_from_env() -> Option<String> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let host = var("KUBERNETES_SERVICE_HOST")?;
    let port = var("KUBERNETES_SERVICE_PORT")?;
    Some(server_url(&host, &port))
}

/// `https://host:port`, with an IPv6 address in brackets.
pub fn server_url(host: &str, port: &str) -> String {
    if host.contains(':') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    }
}

/// The kubeconfig's node path.
pub fn kubeconfig_path(layout: &Layout) -> PathBuf {
    layout.plexus_dir().join(KUBECONFIG_FILE)
}

/// Copies the token (mode 0600) and CA bundle (0644) of `sa_dir` into `plexus.d`, then writes
/// the kubeconfig (0600) naming them and `server`; each only when it changed. Returns every
/// file (as this process sees it) with what happened to it.
pub fn sync(
    layout: &Layout,
    sa_dir: &Path,
    server: &str,
) -> Result<Vec<(PathBuf, Change)>, InstallError> {
    let node_dir = layout.plexus_dir();
    let dir = layout.host(&node_dir);
    let conf_dir = layout.host(&layout.conf_dir);
    std::fs::create_dir_all(&conf_dir).map_err(InstallError::io("create", &conf_dir))?;
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(InstallError::io("create", &dir))?;
    }

    let token = read(&sa_dir.join(TOKEN_FILE))?;
    if String::from_utf8_lossy(&token).trim().is_empty() {
        return Err(InstallError::EmptyCredential(sa_dir.join(TOKEN_FILE)));
    }
    let ca = read(&sa_dir.join(CA_FILE))?;
    if ca.iter().all(u8::is_ascii_whitespace) {
        return Err(InstallError::EmptyCredential(sa_dir.join(CA_FILE)));
    }
    let kubeconfig = render(server, &node_dir.join(CA_FILE), &node_dir.join(TOKEN_FILE));

    let mut done = Vec::new();
    for (name, contents, mode) in [
        (TOKEN_FILE, token.as_slice(), 0o600),
        (CA_FILE, ca.as_slice(), 0o644),
        (KUBECONFIG_FILE, kubeconfig.as_bytes(), 0o600),
    ] {
        let path = dir.join(name);
        let change = atomic::write_if_changed(&path, contents, mode)
            .map_err(InstallError::io("write", &path))?;
        done.push((path, change));
    }
    Ok(done)
}

fn read(path: &Path) -> Result<Vec<u8>, InstallError> {
    std::fs::read(path).map_err(InstallError::io("read", path))
}

/// The kubeconfig: one cluster, user and context, all named `plexus`; the CA bundle and token
/// by path. Strings are written as JSON strings, which are valid YAML double-quoted scalars.
pub fn render(server: &str, ca: &Path, token: &Path) -> String {
    let quote = |s: &str| serde_json::to_string(s).expect("a string serializes");
    let path = |p: &Path| quote(&p.to_string_lossy());
    format!(
        "# Written by `plexusctl install`: Plexus's credentials on this node.\n\
         # The token file is refreshed by `plexusctl install --watch`; do not edit.\n\
         apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: plexus\n  \
           cluster:\n    \
             server: {server}\n    \
             certificate-authority: {ca}\n\
         users:\n\
         - name: plexus\n  \
           user:\n    \
             tokenFile: {token}\n\
         contexts:\n\
         - name: plexus\n  \
           context:\n    \
             cluster: plexus\n    \
             user: plexus\n\
         current-context: plexus\n",
        server = quote(server),
        ca = path(ca),
        token = path(token),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install::layout::LayoutOptions;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn renders_paths_not_secrets() {
        let text = render(
            "https://10.43.0.1:443",
            Path::new("/etc/cni/net.d/plexus.d/ca.crt"),
            Path::new("/etc/cni/net.d/plexus.d/token"),
        );
        assert!(text.contains("server: \"https://10.43.0.1:443\"\n"));
        assert!(text.contains("tokenFile: \"/etc/cni/net.d/plexus.d/token\"\n"));
        assert!(text.contains("certificate-authority: \"/etc/cni/net.d/plexus.d/ca.crt\"\n"));
        assert!(text.contains("\ncurrent-context: plexus\n"));
    }

    #[test]
    fn copies_credentials_and_rewrites_only_changes() {
        let root = tempfile::tempdir().unwrap();
        let sa = tempfile::tempdir().unwrap();
        let layout = Layout::detect(root.path(), &LayoutOptions::default());
        std::fs::write(sa.path().join(TOKEN_FILE), "").unwrap();
        std::fs::write(sa.path().join(CA_FILE), "CA").unwrap();
        assert!(matches!(
            sync(&layout, sa.path(), "https://s"),
            Err(InstallError::EmptyCredential(_))
        ));
        std::fs::write(sa.path().join(TOKEN_FILE), "t1").unwrap();
        let first = sync(&layout, sa.path(), "https://s").unwrap();
        assert!(first.iter().all(|(_, c)| *c == Change::Written));
        let dir = root.path().join("etc/cni/net.d/plexus.d");
        assert_eq!(std::fs::read_to_string(dir.join(TOKEN_FILE)).unwrap(), "t1");
        let mode = |name: &str| {
            std::fs::metadata(dir.join(name))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!((mode(TOKEN_FILE), mode(KUBECONFIG_FILE)), (0o600, 0o600));
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        std::fs::write(sa.path().join(TOKEN_FILE), "t2").unwrap();
        let second = sync(&layout, sa.path(), "https://s").unwrap();
        let changes: Vec<Change> = second.iter().map(|(_, c)| *c).collect();
        assert_eq!(
            changes,
            [Change::Written, Change::Unchanged, Change::Unchanged]
        );
    }

    #[test]
    fn server_urls_bracket_ipv6() {
        assert_eq!(server_url("10.43.0.1", "443"), "https://10.43.0.1:443");
        assert_eq!(server_url("fd00::1", "443"), "https://[fd00::1]:443");
    }
}
