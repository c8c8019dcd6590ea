//! A throwaway control plane on loopback: etcd plus the cached kube-apiserver.
//!
//! For the Kubernetes-backed tests and demos:
//!
//! ```ignore
//! let cluster = LocalCluster::start(&apiserver::ensure()?)?;
//! // talk to cluster.url with `Authorization: Bearer {cluster.token}`
//! // (or hand cluster.kubeconfig to a client), then:
//! cluster.stop();
//! ```
//!
//! Everything lives in one temp dir (etcd's data, keys, certs, logs) that goes
//! away with the cluster. Only the API server runs: no controller-manager, no
//! scheduler, so nothing creates service accounts or schedules pods; the
//! `ServiceAccount` admission plugin is off so pods can still be created.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cmd::{self, Result};
use crate::packages::ensure_debian_packages;

/// How long etcd and the API server get to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// A running etcd + kube-apiserver on 127.0.0.1; stopped on [`stop`](Self::stop) or drop.
pub struct LocalCluster {
    /// The API server's base URL, e.g. `https://127.0.0.1:40123` (self-signed cert).
    pub url: String,
    /// A bearer token of a `system:masters` user (full access under RBAC).
    pub token: String,
    /// A kubeconfig for that user (TLS verification off).
    pub kubeconfig: PathBuf,
    /// etcd's client URL.
    pub etcd_url: String,
    etcd: Option<Child>,
    apiserver: Option<Child>,
    dir: tempfile::TempDir,
}

impl LocalCluster {
    /// Starts etcd, then the kube-apiserver at `apiserver`, and waits until
    /// `/readyz` answers `ok`.
    pub fn start(apiserver: &Path) -> Result<Self> {
        ensure_debian_packages(&[
            ("etcd-server", "/usr/bin/etcd"),
            ("openssl", "/usr/bin/openssl"),
            ("curl", "/usr/bin/curl"),
        ])?;
        let dir = tempfile::Builder::new()
            .prefix("plexus-cluster-")
            .tempdir()?;
        let d = dir.path();
        let (etcd_port, peer_port, api_port) = (free_port()?, free_port()?, free_port()?);
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let token = random_hex(16)?;
        let mut cluster = LocalCluster {
            url: format!("https://127.0.0.1:{api_port}"),
            token,
            kubeconfig: d.join("kubeconfig"),
            etcd_url: etcd_url.clone(),
            etcd: None,
            apiserver: None,
            dir,
        };
        let d = cluster.dir.path().to_path_buf();

        cmd::step(&format!("etcd on {etcd_url}"));
        let mut etcd = Command::new("/usr/bin/etcd");
        etcd.arg("--name=plexus")
            .arg(format!("--data-dir={}", d.join("etcd").display()))
            .arg(format!("--listen-client-urls={etcd_url}"))
            .arg(format!("--advertise-client-urls={etcd_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=plexus={peer_url}"));
        cluster.etcd = Some(spawn_logged(&mut etcd, &d.join("etcd.log"))?);
        wait_until(
            "etcd",
            READY_TIMEOUT,
            &mut cluster.etcd,
            &d.join("etcd.log"),
            || Ok(TcpStream::connect(("127.0.0.1", etcd_port)).is_ok()),
        )?;

        cmd::step(&format!("kube-apiserver on {}", cluster.url));
        std::fs::write(
            d.join("tokens.csv"),
            format!("{},admin,admin,\"system:masters\"\n", cluster.token),
        )?;
        let key = d.join("sa.key");
        let public = d.join("sa.pub");
        cmd::run(
            Command::new("openssl")
                .arg("genrsa")
                .arg("-out")
                .arg(&key)
                .arg("2048"),
        )?;
        cmd::run(
            Command::new("openssl")
                .args(["rsa", "-pubout", "-in"])
                .arg(&key)
                .arg("-out")
                .arg(&public),
        )?;
        let mut api = Command::new(apiserver);
        api.args(apiserver_flags(&d, &etcd_url, api_port));
        let log = d.join("apiserver.log");
        cluster.apiserver = Some(spawn_logged(&mut api, &log)?);
        let (url, token) = (cluster.url.clone(), cluster.token.clone());
        wait_until(
            "kube-apiserver",
            READY_TIMEOUT,
            &mut cluster.apiserver,
            &log,
            || Ok(get(&url, &token, "/readyz")?.as_deref() == Some("ok")),
        )?;
        std::fs::write(
            &cluster.kubeconfig,
            kubeconfig(&cluster.url, &cluster.token),
        )?;
        eprintln!("kube-apiserver ready at {}", cluster.url);
        Ok(cluster)
    }

    /// `GET path` with the admin token; the body, if the status was 2xx.
    pub fn get(&self, path: &str) -> Result<Option<String>> {
        get(&self.url, &self.token, path)
    }

    /// The directory holding the logs (`etcd.log`, `apiserver.log`) and keys.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the API server, then etcd, and removes the temp dir.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        for child in [self.apiserver.take(), self.etcd.take()]
            .into_iter()
            .flatten()
        {
            terminate(child);
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The kube-apiserver flags that work here (1.20.2, 2 cores, loopback only).
fn apiserver_flags(dir: &Path, etcd_url: &str, port: u16) -> Vec<String> {
    let p = |name: &str| dir.join(name).display().to_string();
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
        format!("--service-account-key-file={}", p("sa.pub")),
        format!("--service-account-signing-key-file={}", p("sa.key")),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        "--service-cluster-ip-range=10.96.0.0/16".into(),
        // No controller-manager creates the `default` service account.
        "--disable-admission-plugins=ServiceAccount".into(),
    ]
}

/// A kubeconfig for `url` with a bearer `token` and no TLS verification.
fn kubeconfig(url: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: plexus\n  cluster:\n    server: {url}\n    insecure-skip-tls-verify: true\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: plexus\n  context:\n    cluster: plexus\n    user: admin\ncurrent-context: plexus\n"
    )
}

/// `curl -k` `GET url+path` with a bearer token; the body if the status was 2xx.
fn get(url: &str, token: &str, path: &str) -> Result<Option<String>> {
    let out = Command::new("curl")
        .args(["-sSk", "--fail", "--max-time", "5", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("{url}{path}"))
        .stderr(Stdio::null())
        .output()?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// Spawns `cmd` with stdout and stderr going to `log`.
fn spawn_logged(cmd: &mut Command, log: &Path) -> Result<Child> {
    eprintln!("+ {}  (log: {})", cmd::display(cmd), log.display());
    let file = std::fs::File::create(log)?;
    Ok(cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()?)
}

/// Polls `ready` until it holds, failing (with the log's tail) if `child`
/// exits or `timeout` passes.
fn wait_until(
    what: &str,
    timeout: Duration,
    child: &mut Option<Child>,
    log: &Path,
    mut ready: impl FnMut() -> Result<bool>,
) -> Result {
    let started = Instant::now();
    loop {
        if ready()? {
            eprintln!("{what} ready after {:.1}s", started.elapsed().as_secs_f64());
            return Ok(());
        }
        let exited = match child.as_mut() {
            Some(c) => c.try_wait()?,
            None => None,
        };
        if let Some(status) = exited {
            return Err(format!("{what} exited ({status}):\n{}", tail(log)).into());
        }
        if started.elapsed() > timeout {
            return Err(format!("{what} not ready after {timeout:?}:\n{}", tail(log)).into());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The last lines of a log file, for error messages.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// SIGTERM, up to 10 s of grace, then SIGKILL.
fn terminate(mut child: Child) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let pid = Pid::from_raw(child.id() as i32);
    if kill(pid, Signal::SIGTERM).is_ok() {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `bytes` random bytes from `/dev/urandom`, as hex.
fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
