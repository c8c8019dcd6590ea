//! A throwaway single-member etcd on loopback, for the etcd IPAM backend's tests and bench.
//!
//! ```ignore
//! let etcd = plexus_tests::etcd::LocalEtcd::start()?;
//! // etcd.url(): `http://127.0.0.1:<port>`, for `etcd_endpoints`.
//! // etcd.stop() / etcd.start_again(): kill it (SIGKILL) and start it again on the same
//! // ports and data, for fault tests; etcd.pause() / etcd.resume(): freeze it (SIGSTOP).
//! // Dropping it kills it and removes its data.
//! ```
//!
//! [`LocalEtcd::start_tls`] starts one that serves only TLS and requires client certificates
//! (a throwaway CA, made with `openssl`): [`LocalEtcd::tls`] names the CA, client
//! certificate and key files.
//!
//! It runs Debian's `/usr/bin/etcd` (override with `PLEXUS_ETCD`) on free loopback ports,
//! with its data directory on `/dev/shm` when there is one (etcd fsyncs every write, which is
//! then nearly free). Like [`crate::cluster::LocalCluster`]'s etcd it gets `PR_SET_PDEATHSIG`,
//! so it dies with the test process even if it is never dropped, and data directories left by
//! killed test processes are removed by the next start.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::cluster::Result;
use crate::process::{free_port, spawn_tied, tail};

/// The environment variable naming the etcd binary (default `/usr/bin/etcd`).
pub const ETCD_ENV: &str = "PLEXUS_ETCD";
/// How long etcd gets to become healthy.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How often its health is polled.
const POLL: Duration = Duration::from_millis(20);

/// The etcd binary: `$PLEXUS_ETCD`, else `/usr/bin/etcd`.
pub fn etcd_binary() -> PathBuf {
    std::env::var_os(ETCD_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"))
}

/// The etcd binary if it exists. Otherwise prints why the test is skipped and returns `None`,
/// unless `CI` is set: etcd tests must never be skipped silently in CI, so this panics there.
pub fn etcd_or_skip() -> Option<PathBuf> {
    let path = etcd_binary();
    if path.is_file() {
        return Some(path);
    }
    let why = format!(
        "no etcd at {} (install Debian's etcd-server, or set {ETCD_ENV})",
        path.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{why}; etcd tests must not be skipped in CI");
    }
    eprintln!("skipped: {why}");
    None
}

/// The files of a TLS etcd's throwaway PKI.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// A client certificate etcd accepts.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

/// A running single-member etcd; killed, and its data removed, on drop.
pub struct LocalEtcd {
    binary: PathBuf,
    tls: Option<TlsFiles>,
    client_port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
    child: Mutex<Option<Child>>,
}

impl LocalEtcd {
    /// Starts etcd ([`etcd_binary`]) on free loopback ports and waits until it is healthy.
    pub fn start() -> Result<LocalEtcd> {
        LocalEtcd::start_with(false)
    }

    /// [`start`](Self::start), serving TLS only (`https://`) and requiring a client
    /// certificate signed by its own CA ([`tls`](Self::tls)).
    pub fn start_tls() -> Result<LocalEtcd> {
        LocalEtcd::start_with(true)
    }

    fn start_with(tls: bool) -> Result<LocalEtcd> {
        let dir = data_dir()?;
        let tls = if tls {
            Some(make_pki(dir.path())?)
        } else {
            None
        };
        let etcd = LocalEtcd {
            binary: etcd_binary(),
            tls,
            client_port: free_port()?,
            peer_port: free_port()?,
            dir,
            child: Mutex::new(None),
        };
        etcd.start_again()?;
        Ok(etcd)
    }

    /// The client URL, `http://127.0.0.1:<port>` (`https://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The CA, client certificate and key, when it serves TLS.
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// [`url`](Self::url) as the one-element endpoint list the IPAM configuration takes.
    pub fn endpoints(&self) -> Vec<String> {
        vec![self.url()]
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.client_port
    }

    /// etcd's log file.
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// The process id of the running etcd, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.lock().as_ref().map(Child::id)
    }

    /// Kills etcd (SIGKILL, as a crash would), keeping its data. Nothing if it is stopped.
    pub fn stop(&self) {
        if let Some(mut child) = self.lock().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd (again, after [`stop`](Self::stop)) on the same ports and data, and waits
    /// until it is healthy. Nothing if it runs.
    pub fn start_again(&self) -> Result {
        let mut child = self.lock();
        if child.is_some() {
            return Ok(());
        }
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())?;
        let mut cmd = command(&self.binary, self.dir.path(), &client, &peer);
        if let Some(tls) = &self.tls {
            let dir = self.dir.path();
            cmd.arg(format!("--cert-file={}", dir.join("server.crt").display()))
                .arg(format!("--key-file={}", dir.join("server.key").display()))
                .arg(format!("--trusted-ca-file={}", tls.ca.display()))
                .arg("--client-cert-auth");
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let spawned = spawn_tied(&mut cmd)
            .map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
        *child = Some(spawned);
        let started = Instant::now();
        loop {
            if healthy(self.client_port, self.tls.as_ref()) {
                return Ok(());
            }
            if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                *child = None;
                return Err(format!("etcd exited ({status}):\n{}", tail(&self.log())).into());
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(format!(
                    "etcd not healthy after {READY_TIMEOUT:?}:\n{}",
                    tail(&self.log())
                )
                .into());
            }
            std::thread::sleep(POLL);
        }
    }

    /// Kills etcd and starts it again on the same ports and data.
    pub fn restart(&self) -> Result {
        self.stop();
        self.start_again()
    }

    /// Freezes etcd (SIGSTOP): the kernel still accepts connections but nothing answers, as
    /// with a hung server.
    pub fn pause(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    /// Lets a [`pause`](Self::pause)d etcd run again (SIGCONT).
    pub fn resume(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        if let Some(pid) = self.pid() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        // A paused etcd dies of SIGKILL too.
        self.stop();
        if std::thread::panicking() {
            eprintln!("local etcd: its log:\n{}", tail(&self.log()));
        }
    }
}

/// Whether etcd on `port` answers `GET /health` with `"health":"true"` (it does once it has a
/// leader and serves requests); through `openssl s_client` with TLS.
fn healthy(port: u16, tls: Option<&TlsFiles>) -> bool {
    if let Some(tls) = tls {
        let probe = || -> io::Result<String> {
            let mut child = Command::new("openssl")
                .args(["s_client", "-quiet", "-connect"])
                .arg(format!("127.0.0.1:{port}"))
                .arg("-CAfile")
                .arg(&tls.ca)
                .arg("-cert")
                .arg(&tls.cert)
                .arg("-key")
                .arg(&tls.key)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()?;
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
            }
            let out = child.wait_with_output()?;
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        return probe().is_ok_and(|answer| answer.contains("\"health\":\"true\""));
    }
    let probe = || -> io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    };
    probe().is_ok_and(|answer| answer.contains("\"health\":\"true\""))
}

/// The etcd command of a one-member cluster `plexus` with its data under `dir`, serving
/// clients at `client_url` and its peer at `peer_url`.
pub(crate) fn command(binary: &Path, dir: &Path, client_url: &str, peer_url: &str) -> Command {
    let mut cmd = Command::new(binary);
    cmd.arg("--name=plexus")
        .arg(format!("--data-dir={}", dir.join("data").display()))
        .arg(format!("--listen-client-urls={client_url}"))
        .arg(format!("--advertise-client-urls={client_url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=plexus={peer_url}"))
        .arg("--log-level=warn");
    cmd
}

/// A new directory for etcd's data, in `/dev/shm` when there is one (after removing the stale
/// ones there), owned by this process (its id in [`OWNER_FILE`]).
pub(crate) fn data_dir() -> io::Result<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        remove_stale_etcd_dirs(shm);
        tempfile::Builder::new()
            .prefix(ETCD_DIR_PREFIX)
            .tempdir_in(shm)?
    } else {
        tempfile::Builder::new().prefix(ETCD_DIR_PREFIX).tempdir()?
    };
    std::fs::write(dir.path().join(OWNER_FILE), std::process::id().to_string())?;
    Ok(dir)
}

/// The prefix of etcd's data directories (in `/dev/shm`).
const ETCD_DIR_PREFIX: &str = "plexus-etcd-";
/// The file in etcd's data directory that holds the owning process's id.
const OWNER_FILE: &str = "owner.pid";

/// Removes the etcd data directories in `shm` left behind by processes that are gone (killed
/// before they could drop their cluster): each holds over 100 MB of memory (etcd preallocates
/// its write-ahead log).
fn remove_stale_etcd_dirs(shm: &Path) {
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

/// A throwaway CA in `dir` (`ca.crt`), with a server certificate for 127.0.0.1
/// (`server.crt`, `server.key`) and a client certificate (`client.crt`, `client.key`), all
/// P-256 and valid for a day.
fn make_pki(dir: &Path) -> Result<TlsFiles> {
    let p = |name: &str| dir.join(name).display().to_string();
    let ca_key = p("ca.key");
    openssl(
        &[
            &["req", "-x509"][..],
            &new_key(&ca_key),
            &[
                "-out",
                &p("ca.crt"),
                "-days",
                "1",
                "-subj",
                "/CN=plexus-test-ca",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ]
        .concat(),
    )?;
    for (name, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
        let ext = dir.join(format!("{name}.ext"));
        std::fs::write(
            &ext,
            format!(
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"
            ),
        )?;
        let key = p(&format!("{name}.key"));
        openssl(
            &[
                &["req"][..],
                &new_key(&key),
                &[
                    "-out",
                    &p(&format!("{name}.csr")),
                    "-subj",
                    &format!("/CN=plexus-test-{name}"),
                ],
            ]
            .concat(),
        )?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &p(&format!("{name}.csr")),
            "-CA",
            &p("ca.crt"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-out",
            &p(&format!("{name}.crt")),
            "-days",
            "1",
            "-extfile",
            &ext.display().to_string(),
        ])?;
    }
    Ok(TlsFiles {
        ca: dir.join("ca.crt"),
        cert: dir.join("client.crt"),
        key: dir.join("client.key"),
    })
}

/// The `openssl req` arguments that make a new, unencrypted P-256 key written to `key`.
fn new_key(key: &str) -> [&str; 7] {
    [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        key,
    ]
}

/// Runs `openssl` with `args`; an error with its stderr if it fails.
fn openssl(args: &[&str]) -> Result {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run openssl: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {} failed: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into())
    }
}
