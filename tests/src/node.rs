//! A real Kubernetes node for end-to-end tests and the demo: etcd and the API server
//! ([`LocalCluster`]), containerd's CRI ([`Containerd`]) and a kubelet registered as a node,
//! with Plexus installed by `plexusctl install` into a directory laid out like a K3s node's.
//! Pods are applied with Debian's `kubectl` and started by the kubelet, as on K3s.
//!
//! ```ignore
//! let Some(binaries) = plexus_tests::node::binaries_or_skip() else { return };
//! let node = KubeNode::start(&binaries)?;
//! node.apply_file("example-nads.yaml")?;
//! node.kubectl(&["get", "pods", "-o", "wide"])?;
//! node.stop()?; // checks that nothing is left
//! ```
//!
//! What [`KubeNode::start`] sets up, in this order:
//!
//! 1. a network namespace for the node, with a veth `eth1` standing in for a second NIC (the
//!    master of the example macvlan network). Everything below runs inside it, on a thread
//!    that entered it ([`NodeThread`]): etcd, the API server, containerd, the kubelet, the CNI
//!    plugins and `kubectl`; the host's links, routes and iptables are never touched. The API
//!    server is started from that thread so that it listens on the node's loopback; it must be
//!    the first [`LocalCluster`] of the process (the cluster's spawner thread keeps the
//!    namespace of its first caller);
//! 2. a temporary root holding K3s's directories: `var/lib/rancher/k3s/data/cni` (the reference
//!    plugins, as links to `/usr/lib/cni`) and `var/lib/rancher/k3s/agent/etc/cni/net.d`, where
//!    `10-flannel.conflist` stands in for Flannel: the bridge plugin on `cni0` with host-local
//!    addresses from [`PRIMARY_SUBNET`];
//! 3. `plexusctl install` with that bin dir, conf dir and a cache dir under the root, the
//!    service account's token and CA bundle in a directory as the kubelet mounts them, and the
//!    API server's address: it copies the binaries, writes the kubeconfig and
//!    `00-plexus.conflist`;
//! 4. containerd with the CRI plugin reading those two directories, the pause image and a
//!    busybox image imported into its `k8s.io` namespace;
//! 5. `examples/k3s/rbac.yaml` and `crds.yaml` applied with `kubectl apply`;
//! 6. the kubelet ([`kubelet_flags`]) registered as node [`NODE_NAME`], waited for until the
//!    node is Ready.
//!
//! The kubelet changes kernel settings when it starts ([`KUBELET_SYSCTLS`]): they are recorded
//! before and written back once it is up (also after a [`KubeNode::restart_kubelet`]).
//!
//! Paths of the K3s layout in example files (`/var/lib/rancher/k3s/...`) are rewritten to the
//! temporary root ([`KubeNode::localize`]), and pods get `nodeName` and
//! `imagePullPolicy: Never` ([`bind_to_node`]): there is no scheduler and no registry.
//!
//! [`KubeNode::stop`] deletes every pod, stops the kubelet, containerd and the cluster, then
//! removes the kubelet's mounts, the pods' cgroups (all under [`KubeNode::cgroup_root`]), the
//! files the kubelet leaves in host paths it does not let one choose ([`KUBELET_HOST_PATHS`]),
//! the namespace and the root, restores the kernel settings, and fails if any of these was left
//! or changed. [`shared`] gives the tests of one binary a single node, stopped at exit.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};
use plexus::links;
use plexus::netns;
use serde_json::{json, Value};

use crate::cluster::{self, LocalCluster, Result, APISERVER_VERSION};
use crate::cri::Containerd;
use crate::{cni_plugin_dir, plexus_bin_dir};

/// The environment variable that names the kubelet binary to use.
pub const KUBELET_ENV: &str = "PLEXUS_KUBELET";
/// The environment variable that names the `kubectl` binary to use.
pub const KUBECTL_ENV: &str = "PLEXUS_KUBECTL";
/// The node's name.
pub const NODE_NAME: &str = "plexus-node";
/// The node's address (its InternalIP), on the loopback device of its network namespace.
pub const NODE_IP: &str = "10.255.255.1";
/// The namespace of the example NADs and pods.
pub const NAMESPACE: &str = "default";
/// The node's second NIC: a veth, the master of the example macvlan network.
pub const SECOND_NIC: &str = "eth1";
/// The other end of [`SECOND_NIC`]'s veth, also on the node.
const SECOND_NIC_PEER: &str = "eth1-peer";
/// The primary network's bridge (Flannel's is `cni0` too).
pub const PRIMARY_BRIDGE: &str = "cni0";
/// The primary network's subnet (pods' `eth0`).
pub const PRIMARY_SUBNET: &str = "10.42.0.0/24";
/// K3s's directory, as example files name it.
const K3S_DIR: &str = "/var/lib/rancher/k3s/";
/// K3s's CNI bin dir, relative to the root.
const K3S_BIN_DIR: &str = "var/lib/rancher/k3s/data/cni";
/// K3s's CNI conf dir, relative to the root.
const K3S_CONF_DIR: &str = "var/lib/rancher/k3s/agent/etc/cni/net.d";
/// Plexus's cache dir, relative to the root.
const CNI_DIR: &str = "var/lib/cni/plexus";
/// host-local's leases of the primary network, relative to the root.
const LEASES_DIR: &str = "var/lib/cni/networks";

/// The kernel settings the kubelet 1.20 changes when it starts (`setupKernelTunables`), with
/// the values it sets.
pub const KUBELET_SYSCTLS: &[(&str, &str)] = &[
    ("vm.overcommit_memory", "1"),
    ("vm.panic_on_oom", "0"),
    ("kernel.panic", "10"),
    ("kernel.panic_on_oops", "1"),
    ("kernel.keys.root_maxkeys", "1000000"),
    ("kernel.keys.root_maxbytes", "25000000"),
];

/// Host paths the kubelet 1.20 writes whatever its flags (`/var/log/pods`, with links in
/// `/var/log/containers`), and a few it would with other flags (the device plugin socket in
/// `/var/lib/kubelet/device-plugins` without `DevicePlugins=false`). What it adds there is
/// removed when the node stops.
pub const KUBELET_HOST_PATHS: &[&str] = &[
    "/var/lib/kubelet",
    "/var/log/pods",
    "/var/log/containers",
    "/usr/libexec/kubernetes",
    "/etc/kubernetes",
];

/// How long the node's parts get to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// A `kubectl` call that takes longer is reported.
const SLOW_KUBECTL: Duration = Duration::from_secs(5);
/// How often states are polled.
const POLL: Duration = Duration::from_millis(200);

/// Where `cargo xtask apiserver` caches the kubelet.
pub fn cached_kubelet_path() -> PathBuf {
    cluster::cache_dir().join(format!("kubelet-{APISERVER_VERSION}"))
}

/// Where `cargo xtask apiserver` caches Debian's `kubectl`.
pub fn cached_kubectl_path() -> PathBuf {
    cluster::cache_dir().join(format!("kubectl-{APISERVER_VERSION}"))
}

/// The directory of the K3s examples (`examples/k3s` of the workspace).
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/k3s")
}

/// The Kubernetes binaries a node runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// kube-apiserver.
    pub apiserver: PathBuf,
    /// kubelet.
    pub kubelet: PathBuf,
    /// Debian's kubectl.
    pub kubectl: PathBuf,
}

/// The binaries, from their environment variables or the cache; an error saying to run
/// `cargo xtask apiserver` if one is missing.
pub fn binaries() -> Result<Binaries> {
    let pick = |env: &str, cached: PathBuf| -> Result<PathBuf> {
        let path = std::env::var_os(env)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or(cached);
        if is_executable(&path) {
            Ok(path)
        } else {
            Err(format!(
                "no {} (from {env} or the cache): run `cargo xtask apiserver` to build and cache it",
                path.display()
            )
            .into())
        }
    };
    Ok(Binaries {
        apiserver: cluster::apiserver_binary()?,
        kubelet: pick(KUBELET_ENV, cached_kubelet_path())?,
        kubectl: pick(KUBECTL_ENV, cached_kubectl_path())?,
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

/// A thread inside the node's network namespace that runs jobs for the node. Processes it
/// spawns live in the namespace, and die with it (`PR_SET_PDEATHSIG`) if the test process dies.
pub struct NodeThread {
    jobs: mpsc::Sender<Box<dyn FnOnce() + Send>>,
}

impl NodeThread {
    /// Starts the thread and moves it into the namespace at `netns`.
    fn start(netns: &Path) -> Result<NodeThread> {
        let file = File::open(netns)?;
        let (jobs, queue) = mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let (entered_tx, entered) = mpsc::channel();
        std::thread::Builder::new()
            .name("plexus-node".into())
            .spawn(move || {
                let result = setns(&file, CloneFlags::CLONE_NEWNET);
                let ok = result.is_ok();
                let _ = entered_tx.send(result);
                if ok {
                    for job in queue {
                        job();
                    }
                }
            })?;
        entered
            .recv()
            .map_err(|_| "the node thread died")?
            .map_err(|e| format!("cannot enter the node namespace: {e}"))?;
        Ok(NodeThread { jobs })
    }

    /// Runs `f` on the thread and returns its result; a panic in `f` is resumed here.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        let job = move || {
            let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
        };
        self.jobs
            .send(Box::new(job))
            .expect("the node thread is running");
        match rx.recv().expect("the node thread answers") {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

/// The kernel settings named by [`KUBELET_SYSCTLS`], by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysctls(pub BTreeMap<String, String>);

impl Sysctls {
    /// Reads the current values (settings this kernel lacks are left out).
    pub fn read() -> Sysctls {
        Sysctls(
            KUBELET_SYSCTLS
                .iter()
                .filter_map(|(name, _)| {
                    let value = std::fs::read_to_string(sysctl_path(name)).ok()?;
                    Some((name.to_string(), value.trim().to_string()))
                })
                .collect(),
        )
    }

    /// Whether these are the values the kubelet sets when it starts (it sets all of them at
    /// once).
    pub fn as_kubelet_sets(&self) -> bool {
        KUBELET_SYSCTLS
            .iter()
            .all(|(name, value)| self.0.get(*name).is_none_or(|v| v == value))
    }

    /// Writes back every value that differs now; returns the settings written.
    pub fn restore(&self) -> Result<Vec<String>> {
        let now = Sysctls::read();
        let mut written = Vec::new();
        for (name, value) in &self.0 {
            if now.0.get(name) != Some(value) {
                std::fs::write(sysctl_path(name), value)
                    .map_err(|e| format!("cannot restore {name}={value}: {e}"))?;
                written.push(format!("{name}={value}"));
            }
        }
        Ok(written)
    }

    /// The settings whose value differs from `before`, as `name: before -> now`.
    pub fn changes_since(&self, before: &Sysctls) -> Vec<String> {
        before
            .0
            .iter()
            .filter(|(name, value)| self.0.get(*name) != Some(value))
            .map(|(name, value)| {
                let now = self.0.get(name).map_or("(missing)", String::as_str);
                format!("{name}: {value} -> {now}")
            })
            .collect()
    }
}

fn sysctl_path(name: &str) -> PathBuf {
    Path::new("/proc/sys").join(name.replace('.', "/"))
}

/// A running node. Stop it with [`stop`](Self::stop), which checks that nothing is left.
pub struct KubeNode {
    binaries: Binaries,
    thread: NodeThread,
    netns: PathBuf,
    root: Option<tempfile::TempDir>,
    cluster: Option<LocalCluster>,
    containerd: Option<Containerd>,
    kubelet: Option<Child>,
    kubelet_port: u16,
    sysctls: Sysctls,
    host_paths: BTreeMap<PathBuf, Option<BTreeSet<OsString>>>,
    startup: Duration,
    stopped: bool,
}

impl Drop for KubeNode {
    fn drop(&mut self) {
        if let Err(e) = self.shut_down() {
            eprintln!("kubelet node: left behind: {e}");
        }
    }
}

impl KubeNode {
    /// Starts the node (see the module documentation). On failure, whatever was started is
    /// stopped and removed again.
    pub fn start(binaries: &Binaries) -> Result<KubeNode> {
        let started = Instant::now();
        let sysctls = Sysctls::read();
        let host_paths = KUBELET_HOST_PATHS
            .iter()
            .map(|p| (PathBuf::from(p), dir_entries(Path::new(p))))
            .collect();
        let name = crate::unique_name("pxnode-");
        let netns = netns::create_named(&name)?;
        let thread = match NodeThread::start(&netns) {
            Ok(thread) => thread,
            Err(e) => {
                let _ = netns::delete(&netns);
                return Err(e);
            }
        };
        let root = tempfile::Builder::new().prefix("plexus-node-").tempdir()?;
        let mut node = KubeNode {
            binaries: binaries.clone(),
            thread,
            netns,
            root: Some(root),
            cluster: None,
            containerd: None,
            kubelet: None,
            kubelet_port: cluster::free_port()?,
            sysctls,
            host_paths,
            startup: Duration::ZERO,
            stopped: false,
        };
        match node.set_up() {
            Ok(()) => {
                node.startup = started.elapsed();
                eprintln!(
                    "kubelet node: {NODE_NAME} ready after {:.1}s; files in {}",
                    node.startup.as_secs_f64(),
                    node.root().display()
                );
                Ok(node)
            }
            Err(e) => {
                let log = node.kubelet_log_tail();
                if let Err(left) = node.stop() {
                    eprintln!("kubelet node: left behind: {left}");
                }
                Err(format!("the node did not start: {e}\n--- kubelet log ---\n{log}").into())
            }
        }
    }

    fn set_up(&mut self) -> Result {
        self.thread.run(|| -> Result {
            links::add_address(None, "lo", format!("{NODE_IP}/32").parse()?)?;
            links::create_veth(None, SECOND_NIC, SECOND_NIC_PEER)?;
            links::set_up(None, SECOND_NIC)?;
            links::set_up(None, SECOND_NIC_PEER)?;
            Ok(())
        })?;
        let apiserver = self.binaries.apiserver.clone();
        let cluster = self
            .thread
            .run(move || LocalCluster::start_with(&apiserver))?;
        self.cluster = Some(cluster);

        self.write_layout()?;
        self.install_plexus()?;
        let (bin, conf) = (self.bin_dir(), self.conf_dir());
        let containerd = self.thread.run(move || {
            let containerd = Containerd::start(&bin, &conf);
            containerd.import_busybox_image();
            containerd
        });
        self.containerd = Some(containerd);

        let examples = examples_dir();
        for file in ["rbac.yaml", "crds.yaml"] {
            self.kubectl(&["apply", "-f", &examples.join(file).display().to_string()])?;
        }
        self.start_kubelet()
    }

    /// The node's temporary root (the K3s directories, the kubelet's, the logs).
    pub fn root(&self) -> &Path {
        self.root.as_ref().expect("the node has a root").path()
    }

    /// The CNI bin dir (K3s's `data/cni`, under the root).
    pub fn bin_dir(&self) -> PathBuf {
        self.root().join(K3S_BIN_DIR)
    }

    /// The CNI conf dir (K3s's `agent/etc/cni/net.d`, under the root).
    pub fn conf_dir(&self) -> PathBuf {
        self.root().join(K3S_CONF_DIR)
    }

    /// Plexus's cache dir (`cniDir`).
    pub fn cni_dir(&self) -> PathBuf {
        self.root().join(CNI_DIR)
    }

    /// host-local's leases of the primary network.
    pub fn leases_dir(&self) -> PathBuf {
        self.root().join(LEASES_DIR)
    }

    /// The node's network namespace.
    pub fn netns(&self) -> &Path {
        &self.netns
    }

    /// The local cluster (its API server listens on the node's loopback only).
    pub fn cluster(&self) -> &LocalCluster {
        self.cluster.as_ref().expect("the node has a cluster")
    }

    /// How long [`start`](Self::start) took.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The cgroup (in every hierarchy) the kubelet puts the pods under (`--cgroup-root`).
    pub fn cgroup_root(&self) -> String {
        format!("/{}", self.netns_name())
    }

    fn netns_name(&self) -> String {
        self.netns
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    }

    /// K3s's directories, the reference plugins, and Flannel's stand-in.
    fn write_layout(&self) -> Result {
        let (bin, conf) = (self.bin_dir(), self.conf_dir());
        std::fs::create_dir_all(&bin)?;
        std::fs::create_dir_all(&conf)?;
        for plugin in std::fs::read_dir(cni_plugin_dir())?.flatten() {
            std::os::unix::fs::symlink(plugin.path(), bin.join(plugin.file_name()))?;
        }
        let flannel = json!({
            "name": "cbr0",
            "cniVersion": "1.0.0",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": PRIMARY_BRIDGE,
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "subnet": PRIMARY_SUBNET,
                        "dataDir": self.leases_dir(),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": true}},
            ],
        });
        std::fs::write(
            conf.join("10-flannel.conflist"),
            serde_json::to_vec_pretty(&flannel)?,
        )?;
        Ok(())
    }

    /// `plexusctl install`, as the DaemonSet's init container runs it, with the node's
    /// directories named explicitly (they are under a temporary root).
    fn install_plexus(&self) -> Result {
        let cluster = self.cluster();
        let sa = self.root().join("serviceaccount");
        std::fs::create_dir_all(&sa)?;
        std::fs::copy(cluster.sa_token_file(), sa.join("token"))?;
        std::fs::copy(cluster.dir().join("certs/apiserver.crt"), sa.join("ca.crt"))?;
        let out = Command::new(plexus_bin_dir().join("plexusctl"))
            .args(["install", "--k3s"])
            .arg("--bin-dir")
            .arg(self.bin_dir())
            .arg("--conf-dir")
            .arg(self.conf_dir())
            .arg("--cni-dir")
            .arg(self.cni_dir())
            .arg("--sa-dir")
            .arg(&sa)
            .args(["--server", &cluster.url])
            .arg("--log-file")
            .arg(self.root().join("plexus.log"))
            .args(["--log-level", "verbose"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run plexusctl: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "plexusctl install failed ({}): {stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        eprint!("{stdout}");
        Ok(())
    }

    /// The kubelet's command line flags ([`kubelet_flags`] for this node).
    pub fn kubelet_flags(&self) -> Vec<String> {
        kubelet_flags(
            self.root(),
            &self.cluster().kubeconfig,
            &self.containerd.as_ref().expect("containerd runs").socket(),
            self.kubelet_port,
            &self.cgroup_root(),
        )
    }

    /// Starts the kubelet and waits until the node is Ready; then writes back the kernel
    /// settings it changed.
    fn start_kubelet(&mut self) -> Result {
        let flags = self.kubelet_flags();
        std::fs::create_dir_all(self.root().join("kubelet"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.kubelet_log())?;
        let kubelet = self.binaries.kubelet.clone();
        let child = self.thread.run(move || {
            let mut cmd = Command::new(kubelet);
            cmd.args(&flags)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
            unsafe {
                cmd.pre_exec(|| {
                    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                        .map_err(std::io::Error::from)
                });
            }
            cmd.spawn()
        })?;
        self.kubelet = Some(child);
        let started = Instant::now();
        // The kubelet changes the kernel settings once its runtime is up, before it reports the
        // node Ready; a node still Ready from an earlier kubelet proves nothing, so wait for the
        // settings too (unless they were the kubelet's already), and for its port.
        let address = format!("{NODE_IP}:{}", self.kubelet_port);
        let mut changed = self.sysctls.as_kubelet_sets();
        let mut listening = false;
        loop {
            changed = changed || Sysctls::read().as_kubelet_sets();
            if !listening {
                let address = address.clone();
                listening = self
                    .thread
                    .run(move || std::net::TcpStream::connect(address).is_ok());
            }
            let ready = self
                .kubectl(&[
                    "get",
                    "node",
                    NODE_NAME,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ])
                .unwrap_or_default();
            if changed && listening && ready == "True" {
                break;
            }
            if let Some(status) = self
                .kubelet
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!("the kubelet exited ({status})").into());
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(format!("node {NODE_NAME} not Ready after {READY_TIMEOUT:?}").into());
            }
            std::thread::sleep(POLL);
        }
        let written = self.sysctls.restore()?;
        eprintln!(
            "kubelet node: Ready {:.1}s after the kubelet started; kernel settings written back: {}",
            started.elapsed().as_secs_f64(),
            if written.is_empty() {
                "none".to_string()
            } else {
                written.join(", ")
            }
        );
        Ok(())
    }

    /// Stops the kubelet (SIGTERM, as systemd would) and starts it again with the same flags;
    /// returns once the node is Ready again.
    pub fn restart_kubelet(&mut self) -> Result {
        self.stop_kubelet();
        self.start_kubelet()
    }

    fn stop_kubelet(&mut self) {
        if let Some(mut child) = self.kubelet.take() {
            crate::terminate(&mut child, Duration::from_secs(10));
        }
    }

    /// The kubelet's log.
    pub fn kubelet_log(&self) -> PathBuf {
        self.root().join("kubelet.log")
    }

    fn kubelet_log_tail(&self) -> String {
        self.root
            .as_ref()
            .map(|_| cluster::tail(&self.kubelet_log()))
            .unwrap_or_default()
    }

    /// The kernel settings recorded before the kubelet first started.
    pub fn recorded_sysctls(&self) -> &Sysctls {
        &self.sysctls
    }

    /// `text` with K3s's paths (`/var/lib/rancher/k3s/...`) moved under the node's root.
    pub fn localize(&self, text: &str) -> String {
        text.replace(K3S_DIR, &format!("{}{K3S_DIR}", self.root().display()))
    }

    /// The objects of an example file of [`examples_dir`], localized, with every pod bound to
    /// the node ([`bind_to_node`]).
    pub fn example_objects(&self, file: &str) -> Result<Vec<Value>> {
        let path = examples_dir().join(file);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut objects = Vec::new();
        for object in cluster::yaml_objects(&self.localize(&text))? {
            let mut value = serde_json::to_value(object)?;
            bind_to_node(&mut value);
            objects.push(value);
        }
        Ok(objects)
    }

    /// `kubectl apply` of the objects of an example file ([`example_objects`](Self::example_objects)).
    pub fn apply_file(&self, file: &str) -> Result<String> {
        self.apply(&self.example_objects(file)?)
    }

    /// `kubectl apply -f -` of `objects` (as a `List`).
    pub fn apply(&self, objects: &[Value]) -> Result<String> {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
        self.kubectl_with_input(&["apply", "-f", "-"], &list.to_string())
    }

    /// Runs Debian's `kubectl` with the admin kubeconfig, inside the node; its stdout, or an
    /// error with its stderr.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.run_kubectl(args, None)
    }

    /// [`kubectl`](Self::kubectl) with `input` on its stdin.
    pub fn kubectl_with_input(&self, args: &[&str], input: &str) -> Result<String> {
        self.run_kubectl(args, Some(input))
    }

    fn run_kubectl(&self, args: &[&str], input: Option<&str>) -> Result<String> {
        let mut cmd = Command::new(&self.binaries.kubectl);
        cmd.env("KUBECONFIG", &self.cluster().kubeconfig)
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let input = input.map(str::to_string);
        let line = format!("kubectl {}", args.join(" "));
        self.thread.run(move || -> Result<String> {
            let started = Instant::now();
            let mut child = cmd
                .spawn()
                .map_err(|e| format!("cannot run kubectl: {e}"))?;
            if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
                stdin.write_all(input.as_bytes())?;
            }
            let out = child.wait_with_output()?;
            if started.elapsed() > SLOW_KUBECTL {
                eprintln!(
                    "kubelet node: {line} took {:.1}s",
                    started.elapsed().as_secs_f64()
                );
            }
            if out.status.success() {
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            } else {
                Err(format!(
                    "{line} failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )
                .into())
            }
        })
    }

    /// A pod as JSON (`kubectl get pod -o json`).
    pub fn pod(&self, name: &str) -> Result<Value> {
        let text = self.kubectl(&["get", "pod", name, "-n", NAMESPACE, "-o", "json"])?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Waits until every pod of `names` is Running; how long it took. Fails early, with the
    /// pods' events, if one of them failed or the time is up.
    pub fn wait_running(&self, names: &[String], timeout: Duration) -> Result<Duration> {
        let started = Instant::now();
        loop {
            let text = self.kubectl(&["get", "pods", "-n", NAMESPACE, "-o", "json"])?;
            let list: Value = serde_json::from_str(&text)?;
            let phases: BTreeMap<&str, &str> = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    Some((
                        p["metadata"]["name"].as_str()?,
                        p["status"]["phase"].as_str().unwrap_or("?"),
                    ))
                })
                .collect();
            let waiting: Vec<&String> = names
                .iter()
                .filter(|n| phases.get(n.as_str()) != Some(&"Running"))
                .collect();
            if waiting.is_empty() {
                return Ok(started.elapsed());
            }
            let failed: Vec<&&String> = waiting
                .iter()
                .filter(|n| matches!(phases.get(n.as_str()), Some(&"Failed")))
                .collect();
            if !failed.is_empty() || started.elapsed() > timeout {
                let first = waiting[0];
                return Err(format!(
                    "pods not Running after {:.1}s: {waiting:?}; events of {first}: {}",
                    started.elapsed().as_secs_f64(),
                    self.events(first).unwrap_or_default().join(" | ")
                )
                .into());
            }
            std::thread::sleep(POLL);
        }
    }

    /// The events of pod `name`, as `reason: message`, oldest first.
    pub fn events(&self, name: &str) -> Result<Vec<String>> {
        let selector = format!("involvedObject.name={name}");
        let text = self.kubectl(&[
            "get",
            "events",
            "-n",
            NAMESPACE,
            "--field-selector",
            &selector,
            "-o",
            "json",
        ])?;
        let list: Value = serde_json::from_str(&text)?;
        Ok(list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                format!(
                    "{}: {}",
                    e["reason"].as_str().unwrap_or("?"),
                    e["message"].as_str().unwrap_or("")
                )
            })
            .collect())
    }

    /// Deletes every pod of [`NAMESPACE`] (a grace period of 1 s) and waits until they are
    /// gone: the kubelet has stopped their sandboxes, so their networks are detached.
    pub fn delete_all_pods(&self) -> Result {
        self.kubectl(&[
            "delete",
            "pods",
            "--all",
            "-n",
            NAMESPACE,
            "--grace-period=1",
            "--wait=true",
            "--timeout=120s",
        ])
        .map(drop)
    }

    /// Deletes every pod of [`NAMESPACE`] at once (`--force --grace-period=0`: the API objects
    /// go first) and waits until the kubelet has stopped every pod sandbox, so that their
    /// networks are detached; the kubelet removes the stopped sandboxes later. Much faster than
    /// [`delete_all_pods`](Self::delete_all_pods), whose wait is paced by the kubelet's status
    /// sync (every 10 s): for clearing the node between tests.
    pub fn force_delete_all_pods(&self) -> Result {
        self.kubectl(&[
            "delete",
            "pods",
            "--all",
            "-n",
            NAMESPACE,
            "--force",
            "--grace-period=0",
            "--wait=false",
        ])?;
        let containerd = self.containerd.as_ref().expect("containerd runs");
        let started = Instant::now();
        loop {
            let ready: Vec<String> = self
                .sandboxes()?
                .into_iter()
                .filter(|id| containerd.pod_sandbox_status(id).is_ok_and(|s| s.ready))
                .collect();
            if ready.is_empty() {
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(
                    format!("sandboxes still ready after {READY_TIMEOUT:?}: {ready:?}").into(),
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// The ids of the pod sandboxes containerd still knows (ready or not), sorted.
    pub fn sandboxes(&self) -> Result<Vec<String>> {
        let mut ids = self
            .containerd
            .as_ref()
            .expect("containerd runs")
            .list_pod_sandboxes()
            .map_err(|e| format!("ListPodSandbox: {}", e.message()))?;
        ids.sort();
        Ok(ids)
    }

    /// Waits until containerd knows no pod sandbox any more (the kubelet removes a stopped
    /// sandbox of a deleted pod within a few seconds).
    pub fn wait_no_sandboxes(&self, timeout: Duration) -> Result {
        let started = Instant::now();
        loop {
            let left = self.sandboxes()?;
            if left.is_empty() {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(format!("sandboxes still there after {timeout:?}: {left:?}").into());
            }
            std::thread::sleep(POLL);
        }
    }

    /// The links of the node (inside its namespace).
    pub fn node_links(&self) -> Result<Vec<links::LinkInfo>> {
        let netns = self.netns.clone();
        Ok(links::links(Some(&netns))?)
    }

    /// Stops and removes everything (see the module documentation); an error lists what was
    /// left behind or changed, after everything was tried.
    pub fn stop(mut self) -> Result {
        self.shut_down()
    }

    fn shut_down(&mut self) -> Result {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let mut problems = Vec::new();
        if self.kubelet.is_some() {
            if let Err(e) = self.force_delete_all_pods() {
                problems.push(format!("deleting the pods: {e}"));
            }
        }
        self.stop_kubelet();
        // containerd removes the sandboxes the kubelet left (running their CNI DEL).
        drop(self.containerd.take());
        drop(self.cluster.take());
        let root = self.root.take();
        if let Some(root) = &root {
            let left = crate::unmount_under(root.path());
            if !left.is_empty() {
                problems.push(format!("mounts left: {left:?}"));
            }
        }
        problems.extend(remove_cgroups(&self.cgroup_root()));
        for (path, before) in &self.host_paths {
            if let Some(problem) = restore_dir(path, before.as_ref()) {
                problems.push(problem);
            }
        }
        if let Err(e) = netns::delete(&self.netns) {
            problems.push(format!("deleting the node namespace: {e}"));
        }
        if let Some(root) = root {
            let path = root.path().display().to_string();
            if std::thread::panicking() {
                eprintln!(
                    "kubelet node: keeping its files in {}",
                    root.keep().display()
                );
            } else if let Err(e) = root.close() {
                problems.push(format!("removing {path}: {e}"));
            }
        }
        let changed = Sysctls::read().changes_since(&self.sysctls);
        if !changed.is_empty() {
            problems.push(format!("kernel settings changed: {}", changed.join(", ")));
            let _ = self.sysctls.restore();
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; ").into())
        }
    }
}

/// The kubelet's flags: a remote runtime (containerd), cgroupfs with no QoS cgroups and no
/// node allocatable enforcement, the pods' cgroups under `cgroup_root`, no iptables chains,
/// no swap check, no eviction or image GC, listening on [`NODE_IP`] in the node's network
/// namespace only (`port`) with no read-only or healthz port and every request allowed
/// (nothing but the API server reaches it there), and every directory it lets one choose under
/// `root`.
pub fn kubelet_flags(
    root: &Path,
    kubeconfig: &Path,
    containerd_socket: &Path,
    port: u16,
    cgroup_root: &str,
) -> Vec<String> {
    let p = |name: &str| root.join(name).display().to_string();
    vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        "--container-runtime=remote".into(),
        format!(
            "--container-runtime-endpoint=unix://{}",
            containerd_socket.display()
        ),
        "--cgroup-driver=cgroupfs".into(),
        "--cgroups-per-qos=false".into(),
        "--enforce-node-allocatable=".into(),
        format!("--cgroup-root={cgroup_root}"),
        "--fail-swap-on=false".into(),
        "--make-iptables-util-chains=false".into(),
        format!("--address={NODE_IP}"),
        format!("--port={port}"),
        "--read-only-port=0".into(),
        "--healthz-port=0".into(),
        // The API server calls the kubelet (exec) with no credentials; the kubelet 1.20 refuses
        // to start with no way to authenticate at all. It listens on the node's loopback only.
        "--anonymous-auth=true".into(),
        "--authentication-token-webhook=false".into(),
        "--authorization-mode=AlwaysAllow".into(),
        // The device manager's socket is at a fixed host path (/var/lib/kubelet/device-plugins).
        "--feature-gates=DevicePlugins=false".into(),
        "--image-gc-high-threshold=100".into(),
        "--eviction-hard=".into(),
        format!("--hostname-override={NODE_NAME}"),
        // The node's status is written only when it changes (there is a Lease for the
        // heartbeat), so checking every second costs nothing and shows Ready ~10 s sooner.
        "--node-status-update-frequency=1s".into(),
        // Not 127.0.0.1: the kubelet refuses a loopback node IP and then reports no address.
        format!("--node-ip={NODE_IP}"),
        format!("--root-dir={}", p("kubelet")),
        format!("--cert-dir={}", p("kubelet-pki")),
        format!("--volume-plugin-dir={}", p("volume-plugins")),
        "--v=2".into(),
    ]
}

/// Binds a pod to the node (`nodeName`, as a scheduler would) and keeps the kubelet from
/// pulling its images (`imagePullPolicy: Never`: they are imported). Other objects are left as
/// they are.
pub fn bind_to_node(object: &mut Value) {
    if object["kind"] != "Pod" {
        return;
    }
    object["spec"]["nodeName"] = json!(NODE_NAME);
    for list in ["containers", "initContainers"] {
        if let Some(containers) = object["spec"][list].as_array_mut() {
            for container in containers {
                container["imagePullPolicy"] = json!("Never");
            }
        }
    }
}

/// The node shared by the tests of this process, started by the first call (`None`, with a
/// message, when the binaries are missing outside CI). Holding the guard gives a test the node
/// to itself. The node is stopped when the process exits; if anything is left then, the
/// process exits with status 1, so that `cargo test` fails.
pub fn shared() -> Option<SharedNode> {
    static NODE: OnceLock<Option<Mutex<Option<KubeNode>>>> = OnceLock::new();
    extern "C" fn stop_at_exit() {
        let Some(Some(node)) = NODE.get() else { return };
        let node = node.lock().unwrap_or_else(PoisonError::into_inner).take();
        let Some(node) = node else { return };
        match node.stop() {
            Ok(()) => eprintln!("kubelet node: stopped, nothing left behind"),
            Err(e) => {
                eprintln!("kubelet node: left behind: {e}");
                // SAFETY: ends the process at once, with a failing status.
                unsafe { libc::_exit(1) };
            }
        }
    }
    let node = NODE.get_or_init(|| {
        let binaries = binaries_or_skip()?;
        let node = KubeNode::start(&binaries).unwrap_or_else(|e| panic!("{e}"));
        // SAFETY: registers a plain function, once.
        unsafe { libc::atexit(stop_at_exit) };
        Some(Mutex::new(Some(node)))
    });
    let guard = node
        .as_ref()?
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    guard.is_some().then_some(SharedNode(guard))
}

/// The shared node, held by one test at a time ([`shared`]).
pub struct SharedNode(MutexGuard<'static, Option<KubeNode>>);

impl std::ops::Deref for SharedNode {
    type Target = KubeNode;
    fn deref(&self) -> &KubeNode {
        self.0.as_ref().expect("the shared node runs")
    }
}

impl std::ops::DerefMut for SharedNode {
    fn deref_mut(&mut self) -> &mut KubeNode {
        self.0.as_mut().expect("the shared node runs")
    }
}

/// Removes `cgroup` (and what is below it) from every cgroup hierarchy; returns what could not
/// be removed.
fn remove_cgroups(cgroup: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return problems;
    };
    for hierarchy in hierarchies.flatten() {
        let dir = hierarchy.path().join(cgroup.trim_start_matches('/'));
        if !dir.is_dir() {
            continue;
        }
        let mut dirs = vec![dir.clone()];
        let mut i = 0;
        while i < dirs.len() {
            if let Ok(entries) = std::fs::read_dir(&dirs[i]) {
                dirs.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
            i += 1;
        }
        for dir in dirs.iter().rev() {
            if let Err(e) = std::fs::remove_dir(dir) {
                problems.push(format!("cgroup {}: {e}", dir.display()));
            }
        }
    }
    problems
}

/// The names in `dir`, or `None` if it does not exist.
fn dir_entries(dir: &Path) -> Option<BTreeSet<OsString>> {
    let entries = std::fs::read_dir(dir).ok()?;
    Some(entries.flatten().map(|e| e.file_name()).collect())
}

/// Removes what was added to `dir` since `before` (the whole directory if it did not exist);
/// a message if that fails.
fn restore_dir(dir: &Path, before: Option<&BTreeSet<OsString>>) -> Option<String> {
    let now = dir_entries(dir)?;
    let result = match before {
        None => std::fs::remove_dir_all(dir),
        Some(before) => now.difference(before).try_for_each(|name| {
            let path = dir.join(name);
            if path.is_dir() && !path.is_symlink() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            }
        }),
    };
    result
        .err()
        .map(|e| format!("cannot clean {}: {e}", dir.display()))
}

/// Whether `path` is a regular file with an execute bit.
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_are_bound_and_never_pull() {
        let mut pod = json!({"kind": "Pod", "spec": {"containers": [{"name": "a", "image": "busybox:1.36"}]}});
        bind_to_node(&mut pod);
        assert_eq!(pod["spec"]["nodeName"], NODE_NAME);
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Never");
        let mut nad = json!({"kind": "NetworkAttachmentDefinition", "spec": {}});
        bind_to_node(&mut nad);
        assert_eq!(nad["spec"], json!({}));
    }

    #[test]
    fn kubelet_flags_keep_to_the_root() {
        let flags = kubelet_flags(
            Path::new("/tmp/n"),
            Path::new("/tmp/c/kubeconfig"),
            Path::new("/tmp/d/containerd.sock"),
            10250,
            "/pxnode-x",
        );
        assert!(flags.contains(&"--make-iptables-util-chains=false".to_string()));
        assert!(flags.contains(&"--root-dir=/tmp/n/kubelet".to_string()));
        assert!(flags.contains(&"--cgroup-root=/pxnode-x".to_string()));
        assert!(flags
            .contains(&"--container-runtime-endpoint=unix:///tmp/d/containerd.sock".to_string()));
    }

    #[test]
    fn sysctl_names_map_to_proc_sys() {
        assert_eq!(
            sysctl_path("kernel.keys.root_maxkeys"),
            Path::new("/proc/sys/kernel/keys/root_maxkeys")
        );
    }
}
