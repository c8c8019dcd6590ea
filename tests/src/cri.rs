//! A private containerd driven through the Kubernetes CRI, the way kubelet
//! drives it: the end-to-end client of the CNI plugins.
//!
//! [`Containerd::start`] runs `containerd` with its root, state and socket in
//! a temporary directory and the CRI plugin's CNI `bin_dir` and `conf_dir`
//! set to the caller's, imports a hand-built pause image
//! ([`pause_image`]), and answers CRI calls synchronously. containerd is
//! spawned from the calling thread, so when that thread is inside a
//! [`crate::TestHost`], containerd, and the CNI plugins it runs, live in that
//! throwaway node namespace. Pod namespaces are still created by containerd
//! itself as `/var/run/netns/cni-<uuid>`.
//!
//! ```no_run
//! # use std::collections::BTreeMap;
//! # use std::path::Path;
//! use plexus_tests::cri::Containerd;
//! let containerd = Containerd::start(Path::new("/bin-dir"), Path::new("/conf-dir"));
//! let id = containerd
//!     .run_pod_sandbox("pod", "default", "uid-1", &BTreeMap::new(), &[])
//!     .unwrap();
//! let status = containerd.pod_sandbox_status(&id).unwrap();
//! println!("{:?} in {:?}", status.ip, status.netns);
//! containerd.stop_pod_sandbox(&id).unwrap();
//! containerd.remove_pod_sandbox(&id).unwrap();
//! ```

pub mod pause_image;

use std::collections::BTreeMap;
use std::fs::File;
use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tonic::transport::{Channel, Endpoint, Uri};

/// The CRI `runtime.v1` types, for requests this module has no wrapper for.
pub use k8s_cri::v1 as api;

/// What a failed CRI call returns.
pub type CriResult<T> = Result<T, tonic::Status>;

/// How long containerd may take to answer CRI calls after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one CRI call may take (a RunPodSandbox runs every CNI plugin).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long containerd gets to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Plugins containerd need not load here: other snapshotters, tracing, the
/// `/opt` installer. Fewer plugins make start-up faster and quieter.
const DISABLED_PLUGINS: &[&str] = &[
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.internal.v1.opt",
    "io.containerd.internal.v1.tracing",
    "io.containerd.tracing.processor.v1.otlp",
];

/// The state of a pod sandbox as PodSandboxStatus reports it.
#[derive(Debug, Clone)]
pub struct SandboxStatus {
    /// True while the sandbox is ready (`SANDBOX_READY`).
    pub ready: bool,
    /// The primary IP address (the first address of the CNI result).
    pub ip: Option<IpAddr>,
    /// Further addresses of the primary network (other IP families).
    pub additional_ips: Vec<IpAddr>,
    /// The sandbox's network namespace, from the verbose info's runtime spec.
    pub netns: Option<PathBuf>,
    /// The CNI result containerd keeps (its own JSON form), if any.
    pub cni_result: Option<Value>,
}

/// A running containerd of our own; stopped and cleaned up on drop.
pub struct Containerd {
    dir: tempfile::TempDir,
    child: Child,
    runtime: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
    ready_after: Duration,
}

impl Containerd {
    /// Starts containerd with the CRI plugin's CNI `bin_dir` and `conf_dir`,
    /// waits until its CRI service answers, and imports the pause image.
    /// Panics on failure, showing containerd's log (it is test code).
    ///
    /// containerd loads only the lexically first configuration in
    /// `conf_dir`, when it starts and whenever the directory changes.
    pub fn start(bin_dir: &Path, conf_dir: &Path) -> Containerd {
        let begin = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("plexus-containerd-")
            .tempdir()
            .expect("temp dir for containerd");
        let config = dir.path().join("config.toml");
        std::fs::write(&config, config_toml(dir.path(), bin_dir, conf_dir))
            .expect("write containerd's config");
        let child = spawn(&config, &dir.path().join("containerd.log"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let socket = socket_path(dir.path());
        let containerd = match runtime.block_on(wait_until_ready(&socket)) {
            Ok(client) => Containerd {
                dir,
                child,
                runtime,
                client,
                ready_after: begin.elapsed(),
            },
            Err(e) => {
                let mut child = child;
                let log = log_tail(&dir.path().join("containerd.log"));
                crate::terminate(&mut child, STOP_TIMEOUT);
                crate::unmount_under(dir.path());
                panic!("containerd did not start: {e}\n--- containerd log ---\n{log}");
            }
        };
        containerd.import_pause_image();
        containerd
    }

    /// The path of containerd's gRPC socket.
    pub fn socket(&self) -> PathBuf {
        socket_path(self.dir.path())
    }

    /// containerd's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How long containerd took until its CRI service answered.
    pub fn ready_after(&self) -> Duration {
        self.ready_after
    }

    /// The end of containerd's log.
    pub fn log(&self) -> String {
        log_tail(&self.dir.path().join("containerd.log"))
    }

    /// Imports an image archive (OCI or Docker) into the `k8s.io` namespace,
    /// the one the CRI plugin uses, with `ctr images import`.
    pub fn import_image(&self, archive: &Path) {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(self.socket())
            .args(["-n", "k8s.io", "images", "import"])
            .arg(archive)
            .output()
            .expect("run ctr");
        assert!(
            out.status.success(),
            "ctr images import {} failed: {}{}",
            archive.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Builds the busybox image pods run ([`pause_image::BUSYBOX_IMAGE`]) and imports it.
    pub fn import_busybox_image(&self) {
        let archive = self.dir.path().join("busybox.tar");
        pause_image::write_busybox_archive(&archive).expect("build the busybox image");
        self.import_image(&archive);
        let _ = std::fs::remove_file(archive);
    }

    /// Builds the pause image ([`pause_image::PAUSE_IMAGE`]) and imports it.
    fn import_pause_image(&self) {
        let archive = self.dir.path().join("pause.tar");
        pause_image::write_archive(&archive).expect("build the pause image");
        self.import_image(&archive);
    }

    /// True when the CRI plugin reports `NetworkReady` (it has loaded a CNI
    /// configuration).
    pub fn network_ready(&self) -> CriResult<bool> {
        let status = self
            .call(|mut c| async move { c.status(api::StatusRequest { verbose: false }).await })?;
        Ok(status
            .status
            .into_iter()
            .flat_map(|s| s.conditions)
            .any(|c| c.r#type == "NetworkReady" && c.status))
    }

    /// RunPodSandbox: creates the pod's sandbox, which makes containerd run
    /// CNI ADD, and returns the sandbox id.
    pub fn run_pod_sandbox(
        &self,
        name: &str,
        namespace: &str,
        uid: &str,
        annotations: &BTreeMap<String, String>,
        port_mappings: &[api::PortMapping],
    ) -> CriResult<String> {
        let config = sandbox_config(name, namespace, uid, annotations, port_mappings);
        let request = api::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        };
        let response = self.call(|mut c| async move { c.run_pod_sandbox(request).await })?;
        Ok(response.pod_sandbox_id)
    }

    /// PodSandboxStatus (verbose): the sandbox's state, IPs and namespace.
    pub fn pod_sandbox_status(&self, id: &str) -> CriResult<SandboxStatus> {
        let request = api::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: true,
        };
        let response = self.call(|mut c| async move { c.pod_sandbox_status(request).await })?;
        Ok(sandbox_status(response))
    }

    /// StopPodSandbox: stops the sandbox, which makes containerd run CNI DEL
    /// with the namespace and removes the namespace.
    pub fn stop_pod_sandbox(&self, id: &str) -> CriResult<()> {
        let request = api::StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.call(|mut c| async move { c.stop_pod_sandbox(request).await })?;
        Ok(())
    }

    /// RemovePodSandbox: forgets the sandbox (containerd runs CNI DEL once
    /// more, without a namespace).
    pub fn remove_pod_sandbox(&self, id: &str) -> CriResult<()> {
        let request = api::RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.call(|mut c| async move { c.remove_pod_sandbox(request).await })?;
        Ok(())
    }

    /// ListPodSandbox: the ids of every sandbox containerd knows.
    pub fn list_pod_sandboxes(&self) -> CriResult<Vec<String>> {
        let request = api::ListPodSandboxRequest { filter: None };
        let response = self.call(|mut c| async move { c.list_pod_sandbox(request).await })?;
        Ok(response.items.into_iter().map(|s| s.id).collect())
    }

    /// Runs one CRI call on a clone of the client, with [`CALL_TIMEOUT`].
    fn call<T, F, Fut>(&self, f: F) -> CriResult<T>
    where
        F: FnOnce(RuntimeServiceClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = CriResult<tonic::Response<T>>>,
    {
        let call = f(self.client.clone());
        self.runtime.block_on(async {
            match tokio::time::timeout(CALL_TIMEOUT, call).await {
                Ok(result) => result.map(tonic::Response::into_inner),
                Err(_) => Err(tonic::Status::deadline_exceeded("CRI call timed out")),
            }
        })
    }

    /// Stops and removes every sandbox left (a failed test's), so their CNI
    /// DEL runs and their namespaces and mounts go away.
    fn remove_all_sandboxes(&self) {
        let Ok(ids) = self.list_pod_sandboxes() else {
            return;
        };
        for id in ids {
            if let Err(e) = self
                .stop_pod_sandbox(&id)
                .and_then(|()| self.remove_pod_sandbox(&id))
            {
                eprintln!("Containerd: cannot remove sandbox {id}: {}", e.message());
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- containerd log ---\n{}", self.log());
        }
        self.remove_all_sandboxes();
        let socket = self.socket();
        crate::terminate(&mut self.child, STOP_TIMEOUT);
        kill_shims(&socket);
        crate::unmount_under(self.dir.path());
    }
}

/// containerd's configuration: everything under `dir`, the CRI plugin's CNI
/// directories, and `restrict_oom_score_adj` (these machines lack
/// CAP_SYS_RESOURCE; without it runc fails with "can't get final child's PID
/// from pipe: EOF").
fn config_toml(dir: &Path, bin_dir: &Path, conf_dir: &Path) -> String {
    let quote = |p: &Path| Value::from(p.to_str().expect("UTF-8 path")).to_string();
    let disabled: Vec<String> = DISABLED_PLUGINS
        .iter()
        .map(|p| Value::from(*p).to_string())
        .collect();
    format!(
        r#"version = 2
root = {root}
state = {state}
disabled_plugins = [{disabled}]

[grpc]
  address = {socket}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = {bin_dir}
    conf_dir = {conf_dir}
    max_conf_num = 1
"#,
        root = quote(&dir.join("root")),
        state = quote(&dir.join("state")),
        disabled = disabled.join(", "),
        socket = quote(&socket_path(dir)),
        pause = pause_image::PAUSE_IMAGE,
        bin_dir = quote(bin_dir),
        conf_dir = quote(conf_dir),
    )
}

fn socket_path(dir: &Path) -> PathBuf {
    dir.join("containerd.sock")
}

/// Spawns `containerd --config <config>` with its output in `log`. It gets
/// SIGTERM if the spawning thread dies without dropping [`Containerd`] (the
/// test process was killed).
fn spawn(config: &Path, log: &Path) -> Child {
    let log = File::create(log).expect("create containerd's log");
    let mut command = Command::new("containerd");
    command
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone the log file"))
        .stderr(log);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
        });
    }
    command
        .spawn()
        .expect("run containerd (apt-get install containerd runc)")
}

/// Connects to the socket until the CRI service answers Version. A CRI
/// service that is missing (the plugin failed to load) fails at once.
async fn wait_until_ready(socket: &Path) -> Result<RuntimeServiceClient<Channel>, String> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut last = String::from("no socket yet");
    while Instant::now() < deadline {
        if socket.exists() {
            match cri_version(socket).await {
                Ok(client) => return Ok(client),
                Err(status) if status.code() == tonic::Code::Unimplemented => {
                    return Err(format!("no CRI service: {}", status.message()))
                }
                Err(status) => last = status.message().to_string(),
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!("no answer within {START_TIMEOUT:?}: {last}"))
}

/// A client on the socket, once a Version call succeeded.
async fn cri_version(socket: &Path) -> CriResult<RuntimeServiceClient<Channel>> {
    let channel = connect(socket)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut client = RuntimeServiceClient::new(channel);
    client
        .version(api::VersionRequest {
            version: "v1".into(),
        })
        .await?;
    Ok(client)
}

/// A gRPC channel over the unix socket (the URI is a placeholder).
async fn connect(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let socket = socket.to_path_buf();
    Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
}

/// The sandbox configuration of a pod: metadata, hostname, annotations and
/// port mappings; everything else as kubelet leaves it by default.
fn sandbox_config(
    name: &str,
    namespace: &str,
    uid: &str,
    annotations: &BTreeMap<String, String>,
    port_mappings: &[api::PortMapping],
) -> api::PodSandboxConfig {
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: name.into(),
            uid: uid.into(),
            namespace: namespace.into(),
            attempt: 0,
        }),
        hostname: name.into(),
        annotations: annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        port_mappings: port_mappings.to_vec(),
        linux: Some(api::LinuxPodSandboxConfig::default()),
        ..Default::default()
    }
}

/// Picks the interesting parts out of a verbose PodSandboxStatus answer.
fn sandbox_status(response: api::PodSandboxStatusResponse) -> SandboxStatus {
    let status = response.status.unwrap_or_default();
    let network = status.network.unwrap_or_default();
    let info: Value = response
        .info
        .get("info")
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null);
    SandboxStatus {
        ready: status.state == api::PodSandboxState::SandboxReady as i32,
        ip: network.ip.parse().ok(),
        additional_ips: network
            .additional_ips
            .iter()
            .filter_map(|ip| ip.ip.parse().ok())
            .collect(),
        netns: network_namespace(&info),
        cni_result: info.get("cniResult").filter(|v| !v.is_null()).cloned(),
    }
}

/// The network namespace path in the verbose info's OCI runtime spec.
fn network_namespace(info: &Value) -> Option<PathBuf> {
    info["runtimeSpec"]["linux"]["namespaces"]
        .as_array()?
        .iter()
        .find(|ns| ns["type"] == "network")?
        .get("path")?
        .as_str()
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// The last 60 lines of a log file.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// Kills the shims containerd started for `socket` (shims outlive
/// containerd) and the processes they hold, by process id.
fn kill_shims(socket: &Path) {
    let socket = socket.to_string_lossy();
    for shim in processes().filter(|p| p.args.iter().any(|a| *a == socket)) {
        for child in processes().filter(|p| p.ppid == shim.pid) {
            let _ = kill(Pid::from_raw(child.pid), Signal::SIGKILL);
        }
        let _ = kill(Pid::from_raw(shim.pid), Signal::SIGKILL);
    }
}

/// One process, from `/proc`.
struct Process {
    pid: i32,
    ppid: i32,
    args: Vec<String>,
}

/// Every process visible in `/proc`.
fn processes() -> impl Iterator<Item = Process> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // The fields after the command name, which is in parentheses.
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            Some(Process {
                pid,
                ppid: fields.get(1)?.parse().ok()?,
                args: cmdline
                    .split(|b| *b == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect(),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_the_cni_dirs_and_restricts_oom_score_adj() {
        let toml = config_toml(
            Path::new("/tmp/c"),
            Path::new("/bin dir"),
            Path::new("/conf"),
        );
        assert!(
            toml.contains(r#"address = "/tmp/c/containerd.sock""#),
            "{toml}"
        );
        assert!(toml.contains(r#"bin_dir = "/bin dir""#), "{toml}");
        assert!(toml.contains(r#"conf_dir = "/conf""#), "{toml}");
        assert!(toml.contains("restrict_oom_score_adj = true"), "{toml}");
    }

    #[test]
    fn netns_comes_from_the_runtime_spec() {
        let info = serde_json::json!({"runtimeSpec": {"linux": {"namespaces": [
            {"type": "pid"},
            {"type": "network", "path": "/var/run/netns/cni-1"}
        ]}}});
        assert_eq!(
            network_namespace(&info),
            Some(PathBuf::from("/var/run/netns/cni-1"))
        );
        assert_eq!(network_namespace(&Value::Null), None);
    }
}
