//! A throwaway Kubernetes control plane on loopback: etcd plus the cached kube-apiserver
//! (`cargo xtask apiserver` builds it), set up the way Plexus expects a cluster to be.
//!
//! ```ignore
//! let Some(apiserver) = plexus_tests::cluster::apiserver_or_skip() else { return };
//! let cluster = LocalCluster::start_with(&apiserver)?;
//! // cluster.sa_kubeconfig(): the `plexus-system/plexus` service account, as Plexus runs;
//! // cluster.admin_client(): a `system:masters` kube client, for set-up and checks;
//! // cluster.audit_events(): every request the API server answered.
//! // Dropping the cluster stops it and removes its files.
//! ```
//!
//! [`LocalCluster::start`] takes a few seconds (most of it the API server's own start): it
//! starts etcd (its data on `/dev/shm` when there is one), then the API server with RBAC, token
//! authentication, service-account token signing and an audit log of every request at level
//! `Metadata`; it applies Plexus's CRDs ([`plexus_crds::crd_yaml`]) and waits until the
//! NetworkAttachmentDefinition API is served, applies `examples/k3s/01-rbac.yaml` (which creates
//! the [`SA_NAMESPACE`] namespace, the IPAM's [`IPAM_NAMESPACE`]), and gets a real token of the
//! `plexus-system/plexus` service account through the TokenRequest API, written to a file that
//! [`sa_kubeconfig`](LocalCluster::sa_kubeconfig) refers to as its `tokenFile`. A plexus-ipam
//! configuration with the Kubernetes store must name [`IPAM_NAMESPACE`]
//! (`"kubernetes": {"namespace": ...}`): the service account may touch IPAM objects there only.
//!
//! Every cluster has its own ports (free ones) and directory, so test processes can run
//! clusters side by side. Only the API server runs: no controller-manager and no scheduler,
//! so nothing schedules pods or creates service-account tokens by itself; the `ServiceAccount`
//! admission plugin is off so pods without a service account can be created. To start faster,
//! the API server serves only the API groups in [`API_GROUPS`].
//!
//! etcd and the API server die with the test process even if the cluster is never dropped
//! (they get `PR_SET_PDEATHSIG`); the directory then stays behind in the temp dir. The
//! directory is also kept, and its path printed, when the cluster is dropped during a panic, so
//! that the logs of a failed test can be read.
//!
//! The cluster's parts: `apiserver` (the binary, its flags, kubeconfigs), `processes` (starting,
//! watching and stopping etcd and the API server), `tokens` (the service account's token),
//! `api` (requests and YAML as admin).

mod api;
mod apiserver;
mod processes;
mod tokens;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use api::{apply_yaml, yaml_objects};
use api::{crds_served, get_text};
pub use apiserver::{
    apiserver_binary, apiserver_or_skip, cache_dir, cached_apiserver_path, API_GROUPS,
};
use apiserver::{apiserver_flags, kubeconfig_yaml, AUDIT_POLICY};

pub(crate) use crate::process::{free_port, tail};
use crate::process::{is_executable, random_hex, run, write_atomically};

/// The error type of the cluster helpers.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
/// Shorthand for `Result<T, Error>`.
pub type Result<T = ()> = std::result::Result<T, Error>;

/// The environment variable that names the kube-apiserver binary to use.
pub const APISERVER_ENV: &str = "PLEXUS_KUBE_APISERVER";
/// The Kubernetes version `cargo xtask apiserver` builds and caches.
pub const APISERVER_VERSION: &str = "1.20.2";
/// Plexus's RBAC: its namespace, service account, ClusterRole and ClusterRoleBinding, and the
/// IPAM's Role and RoleBinding.
pub const RBAC_YAML: &str = include_str!("../../../examples/k3s/01-rbac.yaml");
/// The namespace of Plexus's service account.
pub const SA_NAMESPACE: &str = "plexus-system";
/// The namespace of plexus-ipam's objects, where the shipped RBAC grants them
/// (`kubernetes.namespace`).
pub const IPAM_NAMESPACE: &str = "plexus-system";
/// The name of Plexus's service account.
pub const SA_NAME: &str = "plexus";
/// The user name the API server gives Plexus's service account.
pub const SA_USER: &str = "system:serviceaccount:plexus-system:plexus";
/// The User-Agent of [`LocalCluster::admin_client`], to tell its requests apart in the audit log.
pub const ADMIN_USER_AGENT: &str = "plexus-tests-admin";

/// A running etcd + kube-apiserver on 127.0.0.1, set up for Plexus; stopped on drop.
pub struct LocalCluster {
    /// The API server's base URL, e.g. `https://127.0.0.1:40123`.
    pub url: String,
    /// A bearer token of a `system:masters` user (full access).
    pub token: String,
    /// A kubeconfig for that user (TLS verification off).
    pub kubeconfig: PathBuf,
    /// etcd's client URL.
    pub etcd_url: String,
    startup: Duration,
    sa_kubeconfig: PathBuf,
    sa_token_file: PathBuf,
    /// The generation of the service-account token and the Secret it is bound to.
    sa_token: Mutex<(u32, String)>,
    apiserver_pid: u32,
    /// The kube-apiserver binary and its port, to start it again after [`Self::kill_apiserver`].
    apiserver: PathBuf,
    /// API groups served beyond [`API_GROUPS`].
    extra_groups: Vec<String>,
    api_port: u16,
    procs: Mutex<Vec<Child>>,
    dir: Option<tempfile::TempDir>,
    etcd_dir: Option<tempfile::TempDir>,
}

impl LocalCluster {
    /// Starts a cluster on [`apiserver_binary`].
    pub fn start() -> Result<Self> {
        LocalCluster::start_with(&apiserver_binary()?)
    }

    /// Starts a cluster on the kube-apiserver at `apiserver`: etcd, the API server, Plexus's
    /// CRDs and RBAC, and a token of Plexus's service account. Retries (twice) if a port it
    /// picked was taken by someone else in the meantime.
    pub fn start_with(apiserver: &Path) -> Result<Self> {
        LocalCluster::start_serving(apiserver, &[])
    }

    /// Like [`Self::start_with`], with the API server also serving `extra_groups`
    /// (`apps/v1`, ...) besides [`API_GROUPS`].
    pub fn start_serving(apiserver: &Path, extra_groups: &[&str]) -> Result<Self> {
        for tool in ["/usr/bin/etcd", "/usr/bin/openssl"] {
            if !is_executable(Path::new(tool)) {
                return Err(format!(
                    "{tool} is missing: run `cargo xtask apiserver` (it installs etcd-server and openssl)"
                )
                .into());
            }
        }
        let mut attempt = 1;
        loop {
            match LocalCluster::try_start(apiserver, extra_groups) {
                Err(e) if attempt < 3 && e.to_string().contains("address already in use") => {
                    eprintln!("local cluster: a port was taken, starting again");
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    fn try_start(apiserver: &Path, extra_groups: &[&str]) -> Result<Self> {
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("plexus-cluster-")
            .tempdir()?;
        let etcd_dir = crate::etcd::data_dir()?;
        let d = dir.path().to_path_buf();
        let (etcd_port, peer_port, api_port) = (free_port()?, free_port()?, free_port()?);
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let url = format!("https://127.0.0.1:{api_port}");
        let token = random_hex(16)?;
        let kubeconfig = d.join("kubeconfig");
        let mut cluster = LocalCluster {
            url: url.clone(),
            token: token.clone(),
            kubeconfig: kubeconfig.clone(),
            etcd_url: etcd_url.clone(),
            startup: Duration::ZERO,
            sa_kubeconfig: d.join("plexus.kubeconfig"),
            sa_token_file: d.join("plexus.token"),
            sa_token: Mutex::new((0, String::new())),
            apiserver_pid: 0,
            apiserver: apiserver.to_path_buf(),
            extra_groups: extra_groups.iter().map(|g| g.to_string()).collect(),
            api_port,
            procs: Mutex::new(Vec::new()),
            dir: Some(dir),
            etcd_dir: None,
        };

        let mut etcd = crate::etcd::command(
            Path::new("/usr/bin/etcd"),
            etcd_dir.path(),
            &etcd_url,
            &peer_url,
        );
        cluster.etcd_dir = Some(etcd_dir);
        let etcd_log = d.join("etcd.log");
        cluster.spawn(&mut etcd, &etcd_log)?;

        // While etcd starts: the service-account signing key (EC, generated in milliseconds),
        // the admin token, the audit policy.
        run(Command::new("/usr/bin/openssl")
            .args([
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
            ])
            .arg(d.join("sa.key")))?;
        std::fs::write(
            d.join("tokens.csv"),
            format!("{token},admin,admin,\"system:masters\"\n"),
        )?;
        std::fs::write(d.join("audit-policy.yaml"), AUDIT_POLICY)?;
        std::fs::write(
            &kubeconfig,
            kubeconfig_yaml(&url, None, "admin", &format!("token: {token}")),
        )?;

        cluster.wait_until("etcd", &etcd_log, 0, || {
            TcpStream::connect(("127.0.0.1", etcd_port)).is_ok()
        })?;
        let mut phases = vec![("etcd", started.elapsed())];

        let mut api = Command::new(apiserver);
        api.args(apiserver_flags(
            &d,
            &etcd_url,
            api_port,
            &cluster.extra_groups,
        ));
        let api_log = d.join("apiserver.log");
        cluster.apiserver_pid = cluster.spawn(&mut api, &api_log)?;
        cluster.wait_until("kube-apiserver", &api_log, 1, || {
            TcpStream::connect(("127.0.0.1", api_port)).is_ok()
        })?;
        phases.push(("API server listening", started.elapsed()));

        phases.extend(cluster.block_on(cluster.set_up(&api_log, started))?);
        cluster.startup = started.elapsed();
        let phases = phases
            .iter()
            .map(|(what, at)| format!("{what} {:.1}s", at.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ");
        eprintln!(
            "local cluster: ready at {} after {:.1}s ({phases}); files in {}",
            cluster.url,
            cluster.startup.as_secs_f64(),
            d.display()
        );
        Ok(cluster)
    }

    /// What the API server needs before tests use it: CRDs, RBAC, a service-account token,
    /// and `/readyz`.
    /// Returns when each step was done, counted from `started`.
    async fn set_up(
        &self,
        api_log: &Path,
        started: Instant,
    ) -> Result<Vec<(&'static str, Duration)>> {
        let mut phases = Vec::new();
        let client = self.admin_client();
        // Serving, though perhaps not ready (the RBAC bootstrap runs for a second or two more):
        // apply the CRDs in the meantime. `system:masters` is authorized regardless.
        self.wait_async("kube-apiserver to serve", api_log, || async {
            get_text(&client, "/version").await.is_ok()
        })
        .await?;
        phases.push(("serving", started.elapsed()));
        apply_yaml(&client, &plexus_crds::crd_yaml()).await?;
        phases.push(("CRDs applied", started.elapsed()));
        self.wait_async("kube-apiserver /readyz", api_log, || async {
            get_text(&client, "/readyz").await.is_ok_and(|t| t == "ok")
        })
        .await?;
        phases.push(("ready", started.elapsed()));
        // The file creates its namespace first, then the objects in it.
        apply_yaml(&client, RBAC_YAML).await?;
        self.wait_async("the NetworkAttachmentDefinition CRD", api_log, || async {
            crds_served(&client).await
        })
        .await?;
        phases.push(("CRDs served", started.elapsed()));

        let token = self.new_sa_token(&client, 1).await?;
        write_atomically(&self.sa_token_file, &token)?;
        std::fs::write(
            &self.sa_kubeconfig,
            kubeconfig_yaml(
                &self.url,
                Some(&self.dir().join("certs/apiserver.crt")),
                SA_NAME,
                &format!("tokenFile: {}", self.sa_token_file.display()),
            ),
        )?;
        phases.push(("service-account token", started.elapsed()));
        Ok(phases)
    }

    /// How long [`start`](Self::start) took.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The directory holding the logs (`etcd.log`, `apiserver.log`, `audit.log`), keys,
    /// kubeconfigs and the service-account token.
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("the cluster has a directory")
            .path()
    }

    /// A kubeconfig for Plexus's service account `plexus-system/plexus`. It verifies the
    /// server's certificate, and reads the token from [`sa_token_file`](Self::sa_token_file)
    /// (`tokenFile`), which [`rotate_sa_token`](Self::rotate_sa_token) replaces.
    pub fn sa_kubeconfig(&self) -> &Path {
        &self.sa_kubeconfig
    }

    /// The file holding the current token of Plexus's service account.
    pub fn sa_token_file(&self) -> &Path {
        &self.sa_token_file
    }

    /// A kube [`Config`](kube::Config) of the `system:masters` user (TLS verification off,
    /// User-Agent [`ADMIN_USER_AGENT`]).
    pub fn admin_config(&self) -> kube::Config {
        self.config_with_token(&self.token)
    }

    /// A kube [`Config`](kube::Config) that authenticates with `token` (TLS verification off,
    /// User-Agent [`ADMIN_USER_AGENT`]).
    fn config_with_token(&self, token: &str) -> kube::Config {
        let mut config = kube::Config::new(self.url.parse().expect("the cluster URL parses"));
        config.accept_invalid_certs = true;
        config.auth_info.token = Some(token.to_string().into());
        config.headers.push((
            http::header::USER_AGENT,
            http::HeaderValue::from_static(ADMIN_USER_AGENT),
        ));
        config
    }

    /// A kube client of the `system:masters` user. Call it inside a Tokio runtime (the client
    /// spawns its connection task there) and use it on that runtime.
    pub fn admin_client(&self) -> kube::Client {
        plexus::k8s::client::install_crypto_provider();
        kube::Client::try_from(self.admin_config()).expect("an admin client")
    }

    /// `GET path` as admin; the body if the status was 2xx, `None` for an error status.
    pub fn get(&self, path: &str) -> Result<Option<String>> {
        self.block_on(async {
            match get_text(&self.admin_client(), path).await {
                Ok(text) => Ok(Some(text)),
                Err(kube::Error::Api(_)) => Ok(None),
                Err(e) => Err(e.into()),
            }
        })
    }

    /// Every audit event the API server has written so far (one per answered request, stage
    /// `ResponseComplete`, level `Metadata`: `user.username`, `userAgent`, `verb`, `objectRef`,
    /// `responseStatus.code`, ...). The API server writes an event just after it answers, so
    /// poll for the last request's event rather than expect it at once.
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir().join("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Stops the API server and etcd, and removes the cluster's files.
    pub fn stop(self) {}
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                eprintln!(
                    "local cluster: keeping its files in {}",
                    dir.keep().display()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::api::DynamicObject;

    use super::*;

    /// `(group, resource, verbs)` of each resource a role's rules grant.
    fn grants(role: &DynamicObject) -> Vec<(String, String, Vec<String>)> {
        let strings = |v: &serde_json::Value| -> Vec<String> {
            serde_json::from_value(v.clone()).expect("a list of strings")
        };
        let mut grants = Vec::new();
        for rule in role.data["rules"].as_array().expect("rules") {
            let verbs = strings(&rule["verbs"]);
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    grants.push((group.clone(), resource, verbs.clone()));
                }
            }
        }
        grants
    }

    fn grant(group: &str, resource: &str, verbs: &[&str]) -> (String, String, Vec<String>) {
        let verbs = verbs.iter().map(|v| v.to_string()).collect();
        (group.to_string(), resource.to_string(), verbs)
    }

    #[test]
    fn rbac_yaml_is_least_privilege() {
        let objects = yaml_objects(RBAC_YAML).unwrap();
        let described: Vec<(&str, Option<&str>, Option<&str>)> = objects
            .iter()
            .map(|o| {
                (
                    o.types.as_ref().unwrap().kind.as_str(),
                    o.metadata.namespace.as_deref(),
                    o.metadata.name.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            described,
            [
                ("Namespace", None, Some(SA_NAMESPACE)),
                ("ServiceAccount", Some(SA_NAMESPACE), Some(SA_NAME)),
                ("ClusterRole", None, Some("plexus")),
                ("ClusterRoleBinding", None, Some("plexus")),
                ("Role", Some(IPAM_NAMESPACE), Some("plexus-ipam")),
                ("RoleBinding", Some(IPAM_NAMESPACE), Some("plexus-ipam")),
            ]
        );
        // Cluster-wide: reading pods and NADs (the node agent lists and watches both), patching
        // pods' annotations and IPAMClaims' status, the node agent's Events.
        assert_eq!(
            grants(&objects[2]),
            [
                grant("", "pods", &["get", "list", "watch", "patch"]),
                grant(
                    "k8s.cni.cncf.io",
                    "network-attachment-definitions",
                    &["get", "list", "watch"]
                ),
                grant("", "events", &["create"]),
                grant("whereabouts.cni.cncf.io", "ippools", &["list"]),
                grant("", "nodes", &["list"]),
                grant("k8s.cni.cncf.io", "ipamclaims", &["get"]),
                grant("k8s.cni.cncf.io", "ipamclaims/status", &["patch"]),
            ]
        );
        // In the IPAM namespace only: its blocks and Leases (deleted only when reclaimed).
        assert_eq!(
            grants(&objects[4]),
            [
                grant(
                    "ipam.plexus.cni.dev",
                    "ipamblocks",
                    &["get", "list", "create", "update", "delete"]
                ),
                grant(
                    "coordination.k8s.io",
                    "leases",
                    &["get", "list", "create", "update", "delete"]
                ),
            ]
        );
        // Both bindings name the service account and their role.
        for (binding, kind, role) in [
            (&objects[3], "ClusterRole", "plexus"),
            (&objects[5], "Role", "plexus-ipam"),
        ] {
            assert_eq!(binding.data["roleRef"]["kind"], kind);
            assert_eq!(binding.data["roleRef"]["name"], role);
            let subjects = binding.data["subjects"].as_array().unwrap();
            assert_eq!(subjects.len(), 1);
            assert_eq!(subjects[0]["kind"], "ServiceAccount");
            assert_eq!(subjects[0]["name"], SA_NAME);
            assert_eq!(subjects[0]["namespace"], SA_NAMESPACE);
        }
        assert_eq!(
            SA_USER,
            format!("system:serviceaccount:{SA_NAMESPACE}:{SA_NAME}")
        );
    }
}
