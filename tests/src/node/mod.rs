//! A real Kubernetes node for end-to-end tests and the demo: etcd and the API server
//! ([`LocalCluster`]), containerd's CRI ([`Containerd`]) and a kubelet registered as a node,
//! with K3s's paths, and Plexus installed on it either by `plexusctl install` run directly or,
//! as users do, by the DaemonSet of `examples/k3s/` ([`Install`]). Objects are applied with
//! Debian's `kubectl` and pods started by the kubelet, as on K3s.
//!
//! ```ignore
//! let Some(binaries) = plexus_tests::node::binaries_or_skip() else { return };
//! let node = KubeNode::start(&binaries)?;
//! node.apply_file("pods/example-nads.yaml")?;
//! node.kubectl(&["get", "pods", "-o", "wide"])?;
//! node.stop()?; // checks that nothing is left
//! ```
//!
//! What [`KubeNode::start_with`] sets up, in this order:
//!
//! 1. a network namespace for the node, with a veth `eth1` standing in for a second NIC (the
//!    master of the example macvlan network), and a thread that entered it and a mount
//!    namespace of its own ([`NodeThread`]). Everything below runs on that thread: etcd, the
//!    API server, containerd, the kubelet, the CNI plugins and `kubectl`; the host's links,
//!    routes, iptables and mounts are never touched. The API server is started from that
//!    thread so that it listens on the node's loopback; it must be the first [`LocalCluster`]
//!    of the process (the cluster's spawner thread keeps the namespaces of its first caller);
//! 2. the node's file system ([`mounts`]): private copies of `/var/lib`, `/var/log` and `/run`,
//!    and K3s's directories at their real paths, kept under a temporary root:
//!    `/var/lib/rancher/k3s/data/cni` holds the reference plugins (links to `/usr/lib/cni`)
//!    and `/var/lib/rancher/k3s/agent/etc/cni/net.d` the stand-in for Flannel,
//!    `10-flannel.conflist` (the bridge plugin on `cni0`, host-local addresses from
//!    [`PRIMARY_SUBNET`]), and Flannel's readiness file `/run/flannel/subnet.env` exists;
//! 3. with [`Install::Direct`], `plexusctl install --k3s` with the service account's token and
//!    CA bundle in a directory as the kubelet mounts them, and the API server's address: it
//!    copies the binaries, writes the kubeconfig and `00-plexus.conflist`;
//! 4. containerd with the CRI plugin reading K3s's two directories, the pause image and a
//!    busybox image imported into its `k8s.io` namespace, and with [`Install::DaemonSet`]
//!    Plexus's image ([`image::archive`], `cargo xtask image`);
//! 5. `examples/k3s/01-rbac.yaml` and `03-crds.yaml` applied with `kubectl apply`;
//! 6. with [`Install::DaemonSet`], the rest of a control plane ([`control_plane`]):
//!    kube-controller-manager, kube-scheduler, the API server serving DaemonSets, and the
//!    `kubernetes` Service's address relayed to the API server;
//! 7. the kubelet ([`kubelet_flags`]) registered as node [`NODE_NAME`], waited for until the
//!    node is Ready (and, with the controllers, until its `not-ready` taint is lifted).
//!
//! The kubelet changes kernel settings when it starts ([`KUBELET_SYSCTLS`]): they are recorded
//! before and written back once it is up (also after a [`KubeNode::restart_kubelet`]).
//!
//! With [`Install::Direct`] there is no scheduler: pods of example files get `nodeName` and
//! `imagePullPolicy: Never` ([`bind_to_node`]). With [`Install::DaemonSet`] the example files
//! are applied unchanged.
//!
//! [`KubeNode::stop`] deletes every pod, stops the kubelet, the controllers, containerd and
//! the cluster, then removes the kubelet's mounts and the node's file system, the pods' cgroups
//! (all under [`KubeNode::cgroup_root`]), the files the kubelet leaves in host paths it does not
//! let one choose ([`KUBELET_HOST_PATHS`]), the namespace and the root, restores the kernel
//! settings, and fails if any of these was left or changed. [`shared`] gives the tests of one
//! binary a single node, stopped at exit.

mod agent;
mod binaries;
mod control_plane;
mod daemonset;
mod host;
pub mod image;
mod inspect;
mod kubectl;
mod kubelet;
pub mod mounts;
mod shared;
mod sysctls;
mod thread;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use plexus::links;
use plexus::netns;
use serde_json::json;

use crate::cluster::{self, LocalCluster, Result};
use crate::cri::Containerd;
use crate::{cni_plugin_dir, plexus_bin_dir};

pub use agent::AGENT_METRICS_ADDRESS;
pub use binaries::{binaries, binaries_or_skip, cached_path, Binaries};
pub use control_plane::{ControlPlane, KUBERNETES_SERVICE_IP};
pub use daemonset::{INSTALL_FILES, SYSTEM_NAMESPACE};
pub use host::KUBELET_HOST_PATHS;
pub use inspect::{files_under, status_addresses};
pub use kubectl::bind_to_node;
pub use kubelet::kubelet_flags;
pub use shared::{shared, SharedNode};
pub use sysctls::{Sysctls, KUBELET_SYSCTLS};
pub use thread::NodeThread;

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
/// K3s's CNI bin dir.
pub const K3S_BIN_DIR: &str = "/var/lib/rancher/k3s/data/cni";
/// K3s's CNI conf dir.
pub const K3S_CONF_DIR: &str = "/var/lib/rancher/k3s/agent/etc/cni/net.d";
/// Plexus's cache dir.
const CNI_DIR: &str = "/var/lib/cni/plexus";
/// host-local's leases (its default `dataDir`).
const LEASES_DIR: &str = "/var/lib/cni/networks";
/// Flannel's readiness file, which `04-plexus-daemonset.yaml` names.
pub const FLANNEL_READY_FILE: &str = "/run/flannel/subnet.env";

/// How long the node's parts get to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How often states are polled.
const POLL: Duration = Duration::from_millis(200);

/// Calls `check` every [`POLL`] until it gives `Ok(done)`; after `timeout`, the last
/// `Err(state)` it gave becomes the error `timed_out(state)`.
fn poll_until<T, S>(
    timeout: Duration,
    mut check: impl FnMut() -> Result<std::result::Result<T, S>>,
    timed_out: impl FnOnce(S) -> String,
) -> Result<T> {
    let started = Instant::now();
    loop {
        match check()? {
            Ok(done) => return Ok(done),
            Err(state) if started.elapsed() > timeout => return Err(timed_out(state).into()),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// How Plexus gets onto the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Install {
    /// The harness runs `plexusctl install` before the kubelet starts. No controller-manager
    /// or scheduler runs: pods of example files are bound to the node ([`bind_to_node`]).
    Direct,
    /// Nothing is installed: Plexus's image is imported and the controller-manager and the
    /// scheduler run, so that applying `examples/k3s/04-plexus-daemonset.yaml` installs Plexus as
    /// on a cluster, and example files are applied unchanged.
    DaemonSet,
}

/// The directory of the K3s examples (`examples/k3s` of the workspace).
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/k3s")
}

/// A running node. Stop it with [`stop`](Self::stop), which checks that nothing is left.
pub struct KubeNode {
    binaries: Binaries,
    install: Install,
    thread: NodeThread,
    netns: PathBuf,
    root: Option<tempfile::TempDir>,
    mounted: bool,
    cluster: Option<LocalCluster>,
    containerd: Option<Containerd>,
    control_plane: Option<ControlPlane>,
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
    /// Starts a node with Plexus installed directly ([`Install::Direct`]).
    pub fn start(binaries: &Binaries) -> Result<KubeNode> {
        KubeNode::start_with(binaries, Install::Direct)
    }

    /// Starts the node (see the module documentation). On failure, whatever was started is
    /// stopped and removed again.
    pub fn start_with(binaries: &Binaries, install: Install) -> Result<KubeNode> {
        let started = Instant::now();
        let sysctls = Sysctls::read();
        let host_paths = KUBELET_HOST_PATHS
            .iter()
            .map(|p| (PathBuf::from(p), host::dir_entries(Path::new(p))))
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
            install,
            thread,
            netns,
            root: Some(root),
            mounted: false,
            cluster: None,
            containerd: None,
            control_plane: None,
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
        let root = self.root().to_path_buf();
        self.mounted = true;
        let node_root = root.clone();
        self.thread.run(move || -> Result {
            links::add_address(None, "lo", format!("{NODE_IP}/32").parse()?)?;
            links::create_veth(None, SECOND_NIC, SECOND_NIC_PEER)?;
            links::set_up(None, SECOND_NIC)?;
            links::set_up(None, SECOND_NIC_PEER)?;
            mounts::set_up(&node_root)?;
            write_layout()
        })?;
        let apiserver = self.binaries.apiserver.clone();
        let extra_groups = match self.install {
            Install::Direct => &[][..],
            Install::DaemonSet => control_plane::EXTRA_API_GROUPS,
        };
        let cluster = self
            .thread
            .run(move || LocalCluster::start_serving(&apiserver, extra_groups))?;
        self.cluster = Some(cluster);

        if self.install == Install::Direct {
            self.install_plexus()?;
        }
        let image = match self.install {
            Install::Direct => None,
            Install::DaemonSet => Some(image::archive()?),
        };
        let containerd = self.thread.run(move || {
            let containerd = Containerd::start(Path::new(K3S_BIN_DIR), Path::new(K3S_CONF_DIR));
            containerd.import_busybox_image();
            if let Some(image) = image {
                containerd.import_image(&image);
            }
            containerd
        });
        self.containerd = Some(containerd);

        let examples = examples_dir();
        for file in ["01-rbac.yaml", "03-crds.yaml"] {
            self.kubectl(&["apply", "-f", &examples.join(file).display().to_string()])?;
        }
        if self.install == Install::DaemonSet {
            self.control_plane = Some(ControlPlane::start(
                &self.thread,
                &self.binaries,
                self.cluster(),
                &root,
            )?);
        }
        self.start_kubelet()?;
        if self.install == Install::DaemonSet {
            self.wait_untainted()?;
        }
        Ok(())
    }

    /// Waits until the node lifecycle controller has lifted the taints the kubelet registers
    /// the node with (`node.kubernetes.io/not-ready`), so that the scheduler places pods there.
    fn wait_untainted(&self) -> Result {
        poll_until(
            READY_TIMEOUT,
            || {
                let taints =
                    self.kubectl(&["get", "node", NODE_NAME, "-o", "jsonpath={.spec.taints}"])?;
                Ok(if taints.trim().is_empty() {
                    Ok(())
                } else {
                    Err(taints)
                })
            },
            |taints| format!("node {NODE_NAME} still tainted: {taints}"),
        )
    }

    /// The node's temporary root (the K3s directories, the kubelet's, the logs).
    pub fn root(&self) -> &Path {
        self.root.as_ref().expect("the node has a root").path()
    }

    /// The CNI bin dir, K3s's `data/cni`, as the host sees it (under the root).
    pub fn bin_dir(&self) -> PathBuf {
        mounts::under_root(self.root(), K3S_BIN_DIR)
    }

    /// The CNI conf dir, K3s's `agent/etc/cni/net.d`, as the host sees it (under the root).
    pub fn conf_dir(&self) -> PathBuf {
        mounts::under_root(self.root(), K3S_CONF_DIR)
    }

    /// Plexus's cache dir (`cniDir`), as the host sees it.
    pub fn cni_dir(&self) -> PathBuf {
        mounts::under_root(self.root(), CNI_DIR)
    }

    /// host-local's leases of the primary network, as the host sees them.
    pub fn leases_dir(&self) -> PathBuf {
        mounts::under_root(self.root(), LEASES_DIR)
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

    /// `plexusctl install --k3s`, as the DaemonSet's init container runs it, on the node
    /// thread (K3s's paths are the node's), with the service account's token and CA bundle
    /// and the API server's address given.
    fn install_plexus(&self) -> Result {
        let cluster = self.cluster();
        let sa = self.root().join("serviceaccount");
        std::fs::create_dir_all(&sa)?;
        std::fs::copy(cluster.sa_token_file(), sa.join("token"))?;
        std::fs::copy(cluster.dir().join("certs/apiserver.crt"), sa.join("ca.crt"))?;
        let mut cmd = Command::new(plexus_bin_dir().join("plexusctl"));
        cmd.args(["install", "--k3s"])
            .arg("--sa-dir")
            .arg(&sa)
            .args(["--server", &cluster.url])
            .arg("--log-file")
            .arg(self.root().join("plexus.log"))
            .args(["--log-level", "verbose"])
            .stdin(Stdio::null());
        let out = self
            .thread
            .run(move || cmd.output())
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

    /// The kernel settings recorded before the kubelet first started.
    pub fn recorded_sysctls(&self) -> &Sysctls {
        &self.sysctls
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
        if let Some(plane) = self.control_plane.take() {
            // The Service proxy's threads live in the node's namespace: stop it from there.
            self.thread.run(move || drop(plane));
        }
        // containerd removes the sandboxes the kubelet left (running their CNI DEL).
        if let Some(containerd) = self.containerd.take() {
            self.thread.run(move || drop(containerd));
        }
        drop(self.cluster.take());
        let root = self.root.take();
        if let Some(root) = &root {
            let path = root.path().to_path_buf();
            let mounted = self.mounted;
            let (left, unmounted) = self.thread.run(move || {
                let left = crate::unmount_under(&path);
                let unmounted = if mounted {
                    mounts::tear_down()
                } else {
                    Vec::new()
                };
                (left, unmounted)
            });
            if !left.is_empty() {
                problems.push(format!("mounts left: {left:?}"));
            }
            if !unmounted.is_empty() {
                problems.push(format!("node mounts left: {unmounted:?}"));
            }
        }
        problems.extend(host::remove_cgroups(&self.cgroup_root()));
        for (path, before) in &self.host_paths {
            if let Some(problem) = host::restore_dir(path, before.as_ref()) {
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

/// K3s's directories with the reference plugins, Flannel's stand-in and its readiness file;
/// runs on the node thread.
fn write_layout() -> Result {
    let (bin, conf) = (Path::new(K3S_BIN_DIR), Path::new(K3S_CONF_DIR));
    std::fs::create_dir_all(bin)?;
    std::fs::create_dir_all(conf)?;
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
                "ipam": {"type": "host-local", "subnet": PRIMARY_SUBNET},
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    });
    std::fs::write(
        conf.join("10-flannel.conflist"),
        serde_json::to_vec_pretty(&flannel)?,
    )?;
    std::fs::write(
        FLANNEL_READY_FILE,
        format!("FLANNEL_SUBNET={PRIMARY_SUBNET}\nFLANNEL_MTU=1450\n"),
    )?;
    Ok(())
}
