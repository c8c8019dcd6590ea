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
//! NetworkAttachmentDefinition API is served, applies `examples/k3s/rbac.yaml` (which creates
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

use std::future::Future;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use kube::core::ObjectMeta;

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
pub const RBAC_YAML: &str = include_str!("../../examples/k3s/rbac.yaml");
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

/// The API groups the API server serves (`--runtime-config`). The API server builds its
/// OpenAPI document from every served type before it answers anything, so fewer groups start it
/// about 2 s faster. The groups its own informers watch (networking, node, storage,
/// admissionregistration, flowcontrol) must stay.
pub const API_GROUPS: &[&str] = &[
    "api/v1",
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

/// The prefix of etcd's data directories (in `/dev/shm`).
pub(crate) const ETCD_DIR_PREFIX: &str = "plexus-etcd-";
/// The file in etcd's data directory that holds the owning process's id.
pub(crate) const OWNER_FILE: &str = "owner.pid";

/// How long etcd and the API server get to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(50);

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
            match LocalCluster::try_start(apiserver) {
                Err(e) if attempt < 3 && e.to_string().contains("address already in use") => {
                    eprintln!("local cluster: a port was taken, starting again");
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    fn try_start(apiserver: &Path) -> Result<Self> {
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("plexus-cluster-")
            .tempdir()?;
        let shm = Path::new("/dev/shm");
        let etcd_dir = if shm.is_dir() {
            remove_stale_etcd_dirs(shm);
            tempfile::Builder::new()
                .prefix(ETCD_DIR_PREFIX)
                .tempdir_in(shm)?
        } else {
            tempfile::Builder::new().prefix(ETCD_DIR_PREFIX).tempdir()?
        };
        std::fs::write(
            etcd_dir.path().join(OWNER_FILE),
            std::process::id().to_string(),
        )?;
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
            api_port,
            procs: Mutex::new(Vec::new()),
            dir: Some(dir),
            etcd_dir: None,
        };

        let mut etcd = Command::new("/usr/bin/etcd");
        etcd.arg("--name=plexus")
            .arg(format!(
                "--data-dir={}",
                etcd_dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={etcd_url}"))
            .arg(format!("--advertise-client-urls={etcd_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=plexus={peer_url}"))
            .arg("--log-level=warn");
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
        api.args(apiserver_flags(&d, &etcd_url, api_port));
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
        let mut config = kube::Config::new(self.url.parse().expect("the cluster URL parses"));
        config.accept_invalid_certs = true;
        config.auth_info.token = Some(self.token.clone().into());
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

    /// Replaces the service account's token: requests a new token (bound to a new Secret),
    /// swaps it into [`sa_token_file`](Self::sa_token_file) atomically as the kubelet does
    /// with projected tokens, deletes the old token's Secret, which invalidates the old token,
    /// and waits until the API server refuses the old token (it caches successful
    /// authentications for up to 10 s). Returns the old and the new token.
    pub fn rotate_sa_token(&self) -> Result<(String, String)> {
        self.block_on(async {
            let client = self.admin_client();
            let old = std::fs::read_to_string(&self.sa_token_file)?;
            let (generation, old_secret) = self
                .sa_token
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let new = self.new_sa_token(&client, generation + 1).await?;
            write_atomically(&self.sa_token_file, &new)?;
            let secrets: Api<Secret> = Api::namespaced(client.clone(), SA_NAMESPACE);
            secrets
                .delete(&old_secret, &DeleteParams::default())
                .await?;
            let deadline = Instant::now() + Duration::from_secs(30);
            while self.token_accepted(&old).await? {
                if Instant::now() > deadline {
                    return Err("the old service-account token is still accepted after 30 s".into());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok((old, new))
        })
    }

    /// Whether the API server accepts `token` (a GET of a pod that does not exist is 404 for
    /// an accepted token with `get pods`, 401 for a refused one).
    async fn token_accepted(&self, token: &str) -> Result<bool> {
        let mut config = kube::Config::new(self.url.parse()?);
        config.accept_invalid_certs = true;
        config.auth_info.token = Some(token.to_string().into());
        config.headers.push((
            http::header::USER_AGENT,
            http::HeaderValue::from_static(ADMIN_USER_AGENT),
        ));
        let client = kube::Client::try_from(config)?;
        match get_text(
            &client,
            "/api/v1/namespaces/default/pods/plexus-token-probe",
        )
        .await
        {
            Err(kube::Error::Api(status)) if status.code == 401 => Ok(false),
            Ok(_) | Err(kube::Error::Api(_)) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// A token of Plexus's service account from the TokenRequest API, bound to a new Secret
    /// `plexus-token-<generation>` so that deleting the Secret invalidates it.
    async fn new_sa_token(&self, client: &kube::Client, generation: u32) -> Result<String> {
        let name = format!("{SA_NAME}-token-{generation}");
        let secrets: Api<Secret> = Api::namespaced(client.clone(), SA_NAMESPACE);
        let secret = secrets
            .create(
                &PostParams::default(),
                &Secret {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        ..ObjectMeta::default()
                    },
                    ..Secret::default()
                },
            )
            .await?;
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), SA_NAMESPACE);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Secret".into()),
                    name: Some(name.clone()),
                    uid: secret.metadata.uid.clone(),
                }),
                expiration_seconds: Some(3600),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let answer = accounts
            .create_token_request(SA_NAME, &PostParams::default(), &request)
            .await
            .map_err(|e| format!("TokenRequest for {SA_NAMESPACE}/{SA_NAME}: {e}"))?;
        let token = answer
            .status
            .and_then(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or("the TokenRequest answer holds no token")?;
        *self.sa_token.lock().unwrap_or_else(PoisonError::into_inner) = (generation, name);
        Ok(token)
    }

    /// Freezes the API server (SIGSTOP): connections are still accepted by the kernel, but
    /// nothing answers, as with a hung or overloaded server.
    pub fn pause(&self) {
        signal(self.apiserver_pid, nix::sys::signal::Signal::SIGSTOP);
    }

    /// Lets a [`pause`](Self::pause)d API server run again (SIGCONT).
    pub fn resume(&self) {
        signal(self.apiserver_pid, nix::sys::signal::Signal::SIGCONT);
    }

    /// Stops the API server and etcd, and removes the cluster's files.
    pub fn stop(self) {}

    /// Kills the API server (SIGKILL, as a crash would), keeping etcd and its data running.
    pub fn kill_apiserver(&self) {
        let mut procs = self.procs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(child) = procs.get_mut(1) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the API server again after [`kill_apiserver`](Self::kill_apiserver), on the same
    /// port, etcd and keys, and waits until it is ready (`/readyz`).
    pub fn start_apiserver_again(&mut self) -> Result {
        let d = self.dir().to_path_buf();
        let api_log = d.join("apiserver.log");
        let log = std::fs::OpenOptions::new().append(true).open(&api_log)?;
        let mut api = Command::new(&self.apiserver);
        api.args(apiserver_flags(&d, &self.etcd_url, self.api_port))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = spawn_tied(&mut api)
            .map_err(|e| format!("cannot start {}: {e}", self.apiserver.display()))?;
        self.apiserver_pid = child.id();
        {
            let mut procs = self.procs.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(old) = procs.get_mut(1) {
                let _ = old.kill();
                let _ = old.wait();
                *old = child;
            } else {
                procs.push(child);
            }
        }
        let this = &*self;
        this.block_on(async {
            let client = this.admin_client();
            this.wait_async(
                "kube-apiserver /readyz after a restart",
                &api_log,
                || async { get_text(&client, "/readyz").await.is_ok_and(|t| t == "ok") },
            )
            .await
        })
    }

    /// Spawns `cmd` with stdout and stderr going to `log`; it dies with this process.
    fn spawn(&self, cmd: &mut Command, log: &Path) -> Result<u32> {
        let file = std::fs::File::create(log)?;
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = spawn_tied(cmd)
            .map_err(|e| format!("cannot start {}: {e}", cmd.get_program().to_string_lossy()))?;
        let pid = child.id();
        self.procs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(child);
        Ok(pid)
    }

    /// The exit status of process number `index`, if it has exited.
    fn exited(&self, index: usize) -> Option<std::process::ExitStatus> {
        let mut procs = self.procs.lock().unwrap_or_else(PoisonError::into_inner);
        procs
            .get_mut(index)
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Polls `ready` until it holds; fails, with the log's tail, if process `index` exits or
    /// the time is up.
    fn wait_until(
        &self,
        what: &str,
        log: &Path,
        index: usize,
        mut ready: impl FnMut() -> bool,
    ) -> Result {
        let started = Instant::now();
        loop {
            if ready() {
                return Ok(());
            }
            self.check_running(what, log, index, started)?;
            std::thread::sleep(POLL);
        }
    }

    /// [`wait_until`](Self::wait_until) for the API server, async.
    async fn wait_async<F: Future<Output = bool>>(
        &self,
        what: &str,
        log: &Path,
        mut ready: impl FnMut() -> F,
    ) -> Result {
        let started = Instant::now();
        loop {
            if ready().await {
                return Ok(());
            }
            self.check_running(what, log, 1, started)?;
            tokio::time::sleep(POLL).await;
        }
    }

    fn check_running(&self, what: &str, log: &Path, index: usize, started: Instant) -> Result {
        if let Some(status) = self.exited(index) {
            return Err(format!("waiting for {what}: it exited ({status}):\n{}", tail(log)).into());
        }
        if started.elapsed() > READY_TIMEOUT {
            return Err(format!("{what} not ready after {READY_TIMEOUT:?}:\n{}", tail(log)).into());
        }
        Ok(())
    }

    /// Runs `future` to completion on a fresh single-threaded runtime on another thread, so
    /// that it works whether or not the caller is inside a runtime.
    fn block_on<T: Send>(&self, future: impl Future<Output = T> + Send) -> T {
        std::thread::scope(|scope| {
            let thread = scope.spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a Tokio runtime")
                    .block_on(future)
            });
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    fn kill(&mut self) {
        let procs = std::mem::take(&mut *self.procs.lock().unwrap_or_else(PoisonError::into_inner));
        // The API server first, then etcd; nothing of a throwaway cluster is worth a graceful stop.
        for mut child in procs.into_iter().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
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

/// The audit policy: every request, once (when answered), at level Metadata.
const AUDIT_POLICY: &str = "\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [\"RequestReceived\", \"ResponseStarted\"]
rules:
  - level: Metadata
";

/// The kube-apiserver flags that work here (1.20.2, 2 cores, loopback only).
fn apiserver_flags(dir: &Path, etcd_url: &str, port: u16) -> Vec<String> {
    let p = |name: &str| dir.join(name).display().to_string();
    let runtime_config = std::iter::once("api/all=false".to_string())
        .chain(API_GROUPS.iter().map(|g| format!("{g}=true")))
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
fn kubeconfig_yaml(url: &str, ca: Option<&Path>, user: &str, credential: &str) -> String {
    let tls = match ca {
        Some(ca) => format!("certificate-authority: {}", ca.display()),
        None => "insecure-skip-tls-verify: true".into(),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: plexus\n  cluster:\n    server: {url}\n    {tls}\nusers:\n- name: {user}\n  user:\n    {credential}\ncontexts:\n- name: plexus\n  context:\n    cluster: plexus\n    user: {user}\ncurrent-context: plexus\n"
    )
}

/// `GET path`; the body of a 2xx answer.
async fn get_text(client: &kube::Client, path: &str) -> kube::Result<String> {
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(kube::Error::HttpError)?;
    client.request_text(request).await
}

/// Creates every object of the multi-document `yaml` (ServiceAccounts, ClusterRoles, CRDs, ...);
/// objects that exist already are left as they are.
pub async fn apply_yaml(client: &kube::Client, yaml: &str) -> Result {
    for object in yaml_objects(yaml)? {
        let types = object
            .types
            .clone()
            .ok_or("a YAML document without apiVersion/kind")?;
        let (group, version) = match types.api_version.split_once('/') {
            Some((group, version)) => (group, version),
            None => ("", types.api_version.as_str()),
        };
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &types.kind));
        let api: Api<DynamicObject> = match object.metadata.namespace.as_deref() {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_already_exists() => {}
            Err(e) => {
                let name = object.metadata.name.as_deref().unwrap_or("?");
                return Err(format!("create {} {name}: {e}", types.kind).into());
            }
        }
    }
    Ok(())
}

/// The objects of a multi-document YAML stream (empty documents skipped).
pub fn yaml_objects(yaml: &str) -> Result<Vec<DynamicObject>> {
    use serde::Deserialize;
    let mut objects = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = serde_json::Value::deserialize(doc)?;
        if !value.is_null() {
            objects.push(serde_json::from_value(value)?);
        }
    }
    Ok(objects)
}

/// Whether every Plexus CRD is Established and its API answers a list.
async fn crds_served(client: &kube::Client) -> bool {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in plexus_crds::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let Ok(current) = api.get(&name).await else {
            return false;
        };
        let established = current
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        let Some(version) = crd.spec.versions.first() else {
            return false;
        };
        let list = format!(
            "/apis/{}/{}/{}",
            crd.spec.group, version.name, crd.spec.names.plural
        );
        if !established || get_text(client, &list).await.is_err() {
            return false;
        }
    }
    true
}

/// Removes the etcd data directories in `shm` left behind by processes that are gone (killed
/// before they could drop their cluster): each holds over 100 MB of memory (etcd preallocates
/// its write-ahead log).
pub(crate) fn remove_stale_etcd_dirs(shm: &Path) {
    let Ok(entries) = std::fs::read_dir(shm) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with(ETCD_DIR_PREFIX)
        {
            continue;
        }
        let stale = match std::fs::read_to_string(path.join(OWNER_FILE)) {
            Ok(pid) => !Path::new("/proc").join(pid.trim()).exists(),
            // No owner yet: being created right now, unless it is old.
            Err(_) => entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(60)),
        };
        if stale {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// Writes `content` to `path` through a temporary file and a rename, so readers see the old or
/// the new content, never a partial one (what the kubelet does for projected volumes).
fn write_atomically(path: &Path, content: &str) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, path)
}

/// Runs `cmd` to completion; an error with its stderr if it fails.
fn run(cmd: &mut Command) -> Result {
    let out = cmd.stdin(Stdio::null()).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed ({}): {}",
            cmd.get_program().to_string_lossy(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into())
    }
}

/// Spawns `cmd` from a thread that lives as long as the process, with `PR_SET_PDEATHSIG` set
/// to SIGKILL: the child dies with this process even if nothing stops it. (The death signal
/// follows the spawning *thread*, so it cannot be a test's thread, which ends with the test.)
pub(crate) fn spawn_tied(cmd: &mut Command) -> io::Result<Child> {
    type Job = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("plexus-cluster-spawner".into())
            .spawn(move || {
                for (mut cmd, answer) in queue {
                    let _ = answer.send(cmd.spawn());
                }
            })
            .expect("the spawner thread starts");
        Mutex::new(jobs)
    });
    // Move the command (with its stdio) to the spawner thread, leaving a bare one behind.
    let program = cmd.get_program().to_owned();
    let mut owned = std::mem::replace(cmd, Command::new(program));
    // SAFETY: prctl is async-signal-safe, and the closure touches nothing else.
    unsafe {
        owned.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(io::Error::from)
        });
    }
    let (answer, result) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .send((owned, answer))
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    result
        .recv()
        .map_err(|_| io::Error::other("the spawner thread is gone"))?
}

/// Sends `sig` to process `pid` (0: none).
fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    if pid != 0 {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
    }
}

/// The last lines of a log file, for error messages.
pub(crate) fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Whether `path` is a regular file with an execute bit.
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub(crate) fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `bytes` random bytes from `/dev/urandom`, as hex.
fn random_hex(bytes: usize) -> io::Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
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
        // Cluster-wide: reading pods and NADs, patching pods' annotations and IPAMClaims' status.
        assert_eq!(
            grants(&objects[2]),
            [
                grant("", "pods", &["get", "patch"]),
                grant(
                    "k8s.cni.cncf.io",
                    "network-attachment-definitions",
                    &["get", "list", "watch"]
                ),
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
