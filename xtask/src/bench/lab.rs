//! The node and its pods: a throwaway node network namespace or the host, the macvlan master
//! and bridge, a state directory, and pod sandboxes.

use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{setns, CloneFlags};
use plexus::{links, netns};
use plexus_cni::config::NetworkConfigList;
use plexus_tests::unique_name;
use serde_json::{json, Value};

use super::{Binaries, CNI_ARGS, CNI_VERSION, DELEGATE_TIMEOUT_SECONDS};
use crate::cmd::Result;

/// A throwaway "node" network namespace that the calling thread has entered: every process the
/// bench starts, and every netlink helper called with `netns: None`, works in it instead of on
/// the host. Dropping it returns the thread to its namespace and deletes this one.
///
/// It must be dropped on the thread that entered it, so it is neither `Send` nor `Sync`.
pub(super) struct Node {
    pub(super) path: PathBuf,
    pub(super) original: File,
    _not_send: PhantomData<*const ()>,
}

impl Node {
    /// Creates the namespace `/run/netns/pxbench-<pid>` and moves the calling thread into it.
    pub(super) fn enter() -> Result<Node> {
        let original = File::open(netns::THREAD_NETNS)?;
        let path = netns::create_named(&format!("pxbench-{}", std::process::id()))?;
        let entered = File::open(&path)
            .and_then(|target| setns(&target, CloneFlags::CLONE_NEWNET).map_err(io::Error::from));
        if let Err(e) = entered {
            let _ = netns::delete(&path);
            return Err(format!("cannot enter {}: {e}", path.display()).into());
        }
        Ok(Node {
            path,
            original,
            _not_send: PhantomData,
        })
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Err(e) = setns(&self.original, CloneFlags::CLONE_NEWNET) {
            eprintln!("bench: cannot return to the original network namespace: {e}");
        }
        if let Err(e) = netns::delete(&self.path) {
            eprintln!("bench: cannot delete {}: {e}", self.path.display());
        }
    }
}

/// The node's side of the benchmark pod: the macvlan master, the bridge's name, a state
/// directory (host-local data, Plexus's cache, logs) and the binaries. Either in a throwaway node
/// namespace that the calling thread has entered ([`Lab::in_node`]), or on the host with names of
/// its own ([`Lab::on_host`]).
pub(super) struct Lab {
    pub(super) plexus: PathBuf,
    pub(super) plugin_dir: PathBuf,
    pub(super) master: String,
    pub(super) bridge: String,
    pub(super) dir: tempfile::TempDir,
    /// The node namespace, `None` on the host. Declared last, so that it is dropped after the
    /// rest (which lives in it).
    pub(super) node: Option<Node>,
}

impl Lab {
    /// Enters a new node namespace and creates the veth pair whose one end is the macvlan
    /// master there; the bridge is `pxbr0`, the gateway of its pods.
    pub(super) fn in_node(binaries: &Binaries) -> Result<Lab> {
        let node = Node::enter()?;
        let pid = std::process::id();
        Lab::create(
            binaries,
            format!("pxbm{pid}"),
            format!("pxbp{pid}"),
            "pxbr0".into(),
            Some(node),
        )
    }

    /// Works in the host's own namespace, with a uniquely named macvlan master (a veth pair)
    /// and bridge, both removed on drop. The bridge gets no address (`isGateway: false`), so the
    /// host's addresses and routes do not change.
    pub(super) fn on_host(binaries: &Binaries) -> Result<Lab> {
        Lab::create(
            binaries,
            unique_name("pxbm"),
            unique_name("pxbp"),
            unique_name("pxbbr"),
            None,
        )
    }

    pub(super) fn create(
        binaries: &Binaries,
        master: String,
        peer: String,
        bridge: String,
        node: Option<Node>,
    ) -> Result<Lab> {
        let lab = Lab {
            plexus: binaries.plexus.clone(),
            plugin_dir: binaries.plugin_dir.clone(),
            master,
            bridge,
            dir: tempfile::tempdir()?,
            node,
        };
        // On failure, dropping `lab` removes whatever was created.
        links::create_veth(None, &lab.master, &peer)?;
        Ok(lab)
    }

    /// The delegates, primary first: a bridge and two macvlan networks. In a node namespace the
    /// bridge is the pods' gateway; on the host it gets no address and the pods no route.
    pub(super) fn delegates(&self) -> Vec<Value> {
        let ipam_dir = self.dir.path().join("ipam");
        let gateway = self.node.is_some();
        let routes = if gateway {
            json!([{"dst": "0.0.0.0/0"}])
        } else {
            json!([])
        };
        let macvlan = |name: &str, octet: u8| {
            json!({
                "cniVersion": CNI_VERSION, "name": name,
                "plugins": [{
                    "type": "macvlan", "master": self.master, "mode": "bridge",
                    "ipam": {"type": "host-local", "subnet": format!("10.{octet}.0.0/24"),
                             "dataDir": ipam_dir}
                }]
            })
        };
        vec![
            json!({
                "cniVersion": CNI_VERSION, "name": "pods", "type": "bridge", "bridge": self.bridge,
                "isGateway": gateway,
                "ipam": {"type": "host-local", "subnet": "10.10.0.0/24",
                         "routes": routes, "dataDir": ipam_dir}
            }),
            macvlan("storage", 20),
            macvlan("backup", 30),
        ]
    }

    /// The delegates with the interface names Plexus gives them.
    pub(super) fn networks(&self) -> Result<Vec<(String, NetworkConfigList)>> {
        ["eth0", "net1", "net2"]
            .into_iter()
            .zip(self.delegates())
            .map(|(ifname, value)| Ok((ifname.to_string(), NetworkConfigList::from_value(value)?)))
            .collect()
    }

    /// Plexus's configuration for the pod; with `debug_log`, it logs at debug level there.
    pub(super) fn plexus_config(&self, debug_log: Option<&Path>) -> Value {
        let mut config = json!({
            "cniVersion": CNI_VERSION, "name": "plexus", "type": "plexus",
            "cniDir": self.dir.path().join("cache"), "binDir": self.plugin_dir,
            "delegateTimeoutSeconds": DELEGATE_TIMEOUT_SECONDS,
            "delegates": self.delegates()
        });
        if let Some(log) = debug_log {
            config["logLevel"] = json!("debug");
            config["logFile"] = json!(log);
        }
        config
    }

    /// A pod sandbox never used before: a new container ID and network namespace, and the
    /// usual `CNI_ARGS`.
    pub(super) fn fresh_pod(&self) -> Result<Pod> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        Ok(Pod {
            id: format!("bench-{pid}-{n}"),
            netns: netns::create_named(&format!("pxbench-{pid}-pod{n}"))?,
            cni_args: CNI_ARGS.to_string(),
        })
    }

    /// A fresh sandbox of the Kubernetes pod `namespace/name` with this UID, with the
    /// `CNI_ARGS` the kubelet's runtime passes.
    pub(super) fn fresh_kube_pod(&self, namespace: &str, name: &str, uid: &str) -> Result<Pod> {
        let mut pod = self.fresh_pod()?;
        pod.cni_args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};\
             K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={uid}",
            pod.id
        );
        Ok(pod)
    }
}

impl Drop for Lab {
    /// On the host, removes the macvlan master's veth pair and the bridge (which the bridge
    /// plugin created); a node namespace takes them with it.
    fn drop(&mut self) {
        if self.node.is_none() {
            for link in [&self.master, &self.bridge] {
                if let Err(e) = links::delete_link(None, link) {
                    eprintln!("bench: cannot delete {link}: {e}");
                }
            }
        }
    }
}

/// A pod sandbox: a container ID, its network namespace (deleted on drop), and the `CNI_ARGS`
/// of its calls.
pub(super) struct Pod {
    pub(super) id: String,
    pub(super) netns: PathBuf,
    pub(super) cni_args: String,
}

impl Drop for Pod {
    fn drop(&mut self) {
        if let Err(e) = netns::delete(&self.netns) {
            eprintln!("bench: cannot delete {}: {e}", self.netns.display());
        }
    }
}
