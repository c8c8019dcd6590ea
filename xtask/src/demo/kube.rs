//! `cargo xtask demo --kube`: Plexus on a Kubernetes node, as kubelet drives
//! it. A local API server holds two macvlan NetworkAttachmentDefinitions and
//! two pods that ask for them in their `k8s.v1.cni.cncf.io/networks`
//! annotation (the short form and the JSON form). `plexus` is run as the
//! container runtime runs it for kubelet (`CNI_ARGS` with the pod's
//! namespace, name and UID), with Plexus's service-account kubeconfig and a
//! bridge network as the cluster network (`eth0`): it reads the pods'
//! networks from the API server, attaches them, and writes each pod's
//! network-status back. The demo shows the API requests `plexus` made, the
//! pods' interfaces and network-status, pings between the pods on every
//! network, then detaches and deletes everything and shows nothing is left.
//!
//! The API server and etcd run inside the throwaway node namespace, on the
//! node's own loopback: [`LocalCluster`] starts them from the calling
//! thread's namespace, and the demo calls it from its thread inside the node.
//! So `plexus` reaches the API server at `127.0.0.1` as on a real node, while
//! the host's loopback, links and routes stay untouched. (The cluster's
//! spawner thread stays in the node namespace for the rest of the process;
//! this process starts no other cluster.)

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Namespace, Pod, PodSpec};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::core::ObjectMeta;
use plexus_crds::{NetworkAttachmentDefinition, NetworkAttachmentDefinitionSpec};
use plexus_tests::cluster::{LocalCluster, SA_USER};
use serde_json::{json, Value};

use super::{show_pod, Names, Node, BRIDGE, CNI_BIN_DIR, MASTER};
use crate::cmd::{self, Result};

/// The node's and the pods' network namespaces (the pods' sandboxes).
pub(super) const NAMES: Names = Names {
    node: "plexus-kube-node",
    pods: ["plexus-kube-web", "plexus-kube-db"],
};
/// The Kubernetes namespace of the NADs and the pods.
const NAMESPACE: &str = "demo";
/// The pods (their sandboxes are [`NAMES`]`.pods`, in order) and the networks they ask for.
const PODS: [(&str, &str); 2] = [
    ("web", "storage, backup"),
    (
        "db",
        r#"[{"name": "storage"}, {"name": "backup", "interface": "backup0"}]"#,
    ),
];
/// The NetworkAttachmentDefinitions: name and subnet, each a macvlan on [`MASTER`].
const NADS: [(&str, &str); 2] = [("storage", "10.124.2.0/24"), ("backup", "10.124.3.0/24")];
const NETWORKS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks";
const STATUS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/network-status";

/// Runs every step inside the node; fails if a ping fails or anything is left.
pub(super) fn run(node: &Node, apiserver: &Path) -> Result {
    node.set_up()?;
    cmd::step("a Kubernetes API server on the node's loopback (etcd + kube-apiserver)");
    let cluster = LocalCluster::start_with(apiserver).map_err(|e| e as cmd::Error)?;
    println!("API server: {}", cluster.url);
    println!(
        "Plexus's kubeconfig (service account {SA_USER}): {}",
        cluster.sa_kubeconfig().display()
    );
    println!("audit log: {}", cluster.dir().join("audit.log").display());
    let kube = Kube::new(cluster)?;
    let config = write_configs(node, &kube.cluster)?;
    kube.create_objects(node)?;

    let mut uids = Vec::new();
    for (sandbox, (name, _)) in node.pods.into_iter().zip(PODS) {
        let uid = kube.uid(name)?;
        let from = kube.audit_len();
        node.attach(sandbox, &config, &cni_args(name, sandbox, &uid))?;
        print_requests(
            "API requests plexus made",
            &kube.plexus_requests(from, true),
        );
        uids.push(uid);
    }
    let mut statuses = Vec::new();
    for (sandbox, (name, _)) in node.pods.into_iter().zip(PODS) {
        show_pod(sandbox)?;
        let status = kube.network_status(name)?;
        println!("network-status of pod {NAMESPACE}/{name}, read back from the API server:");
        println!("{}", serde_json::to_string_pretty(&status)?);
        statuses.push(status);
    }
    ping_on_every_network(node, &statuses[1])?;

    cmd::step("detaching both pods (plexus DEL)");
    node.show_state()?;
    let from = kube.audit_len();
    for ((sandbox, (name, _)), uid) in node.pods.into_iter().zip(PODS).zip(&uids) {
        node.plexus("DEL", sandbox, &config, &cni_args(name, sandbox, uid))?;
    }
    print_requests(
        "API requests plexus made (DEL reads its cache)",
        &kube.plexus_requests(from, false),
    );
    kube.delete_objects()?;
    node.check_nothing_left()?;
    kube.cluster.stop();
    println!("stopped the API server and etcd, and deleted their files");
    Ok(())
}

/// `CNI_ARGS` as containerd passes them for kubelet's pod `name`.
fn cni_args(name: &str, sandbox: &str, uid: &str) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={NAMESPACE};K8S_POD_NAME={name};\
         K8S_POD_INFRA_CONTAINER_ID={sandbox};K8S_POD_UID={uid}"
    )
}

/// Writes the cluster network's conflist (a bridge with no gateway, standing
/// in for Flannel) and Plexus's configuration, which reads the pods' networks
/// as the service account and wraps the cluster network; returns the latter.
fn write_configs(node: &Node, cluster: &LocalCluster) -> Result<PathBuf> {
    let pods = json!({
        "cniVersion": "1.0.0",
        "name": "pods",
        "plugins": [{
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": false,
            "ipam": node.ipam("10.124.1.0/24"),
        }],
    });
    let pods = node.write_config(
        "10-pods.conflist",
        &pods,
        "the cluster network (eth0 of every pod)",
    )?;
    let config = json!({
        "cniVersion": "1.0.0",
        "name": "plexus",
        "type": "plexus",
        "kubeconfig": cluster.sa_kubeconfig(),
        "clusterNetwork": pods,
        "binDir": CNI_BIN_DIR,
        "cniDir": node.state.join("cache"),
    });
    node.write_config(
        "00-plexus.conf",
        &config,
        "Plexus's configuration: the cluster network as eth0, each pod's \
         NetworkAttachmentDefinitions as net1, net2, ...",
    )
}

/// Pings each network's address of the second pod, from the first pod, as
/// the second pod's network-status lists them.
fn ping_on_every_network(node: &Node, status: &Value) -> Result {
    let [a, b] = node.pods;
    cmd::step(&format!(
        "pinging from {a} to {b} on every network of {b}'s network-status"
    ));
    for entry in status.as_array().ok_or("network-status is not a list")? {
        let network = entry["name"].as_str().unwrap_or("?");
        let interface = entry["interface"].as_str().unwrap_or("?");
        let target: IpAddr = entry["ips"][0]
            .as_str()
            .and_then(|ip| ip.parse().ok())
            .ok_or_else(|| format!("no address of {network} in {b}'s network-status"))?;
        super::ping_from(a, target, &format!("{network} ({b}'s {interface})"))?;
    }
    Ok(())
}

/// Prints the requests of Plexus's service account.
fn print_requests(title: &str, events: &[Value]) {
    if events.is_empty() {
        println!("{title}: none");
        return;
    }
    println!("{title}:");
    for e in events {
        println!(
            "  {:<5} {} -> {}",
            e["verb"].as_str().unwrap_or("?").to_uppercase(),
            e["requestURI"].as_str().unwrap_or("?"),
            e["responseStatus"]["code"]
        );
    }
}

/// The local cluster and an admin client for setting it up.
struct Kube {
    cluster: LocalCluster,
    rt: tokio::runtime::Runtime,
    admin: kube::Client,
}

impl Kube {
    fn new(cluster: LocalCluster) -> Result<Kube> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let admin = {
            let _in_runtime = rt.enter();
            cluster.admin_client()
        };
        Ok(Kube { cluster, rt, admin })
    }

    /// Creates the namespace, the NADs and the pods, printing each.
    fn create_objects(&self, node: &Node) -> Result {
        cmd::step(&format!(
            "NetworkAttachmentDefinitions and pods in namespace {NAMESPACE} (as admin)"
        ));
        let namespaces: Api<Namespace> = Api::all(self.admin.clone());
        let namespace = Namespace {
            metadata: named(NAMESPACE),
            ..Default::default()
        };
        self.rt
            .block_on(namespaces.create(&PostParams::default(), &namespace))?;
        let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(self.admin.clone(), NAMESPACE);
        for (name, subnet) in NADS {
            let config = json!({
                "cniVersion": "1.0.0",
                "name": name,
                "plugins": [{"type": "macvlan", "master": MASTER, "mode": "bridge", "ipam": node.ipam(subnet)}],
            })
            .to_string();
            println!("NetworkAttachmentDefinition {NAMESPACE}/{name}: {config}");
            let nad =
                NetworkAttachmentDefinition::new(name, NetworkAttachmentDefinitionSpec { config });
            self.rt
                .block_on(nads.create(&PostParams::default(), &nad))?;
        }
        let pods: Api<Pod> = Api::namespaced(self.admin.clone(), NAMESPACE);
        for (name, networks) in PODS {
            let pod = Pod {
                metadata: ObjectMeta {
                    annotations: Some(BTreeMap::from([(
                        NETWORKS_ANNOTATION.to_string(),
                        networks.to_string(),
                    )])),
                    ..named(name)
                },
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "main".into(),
                        image: Some("busybox".into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            };
            self.rt
                .block_on(pods.create(&PostParams::default(), &pod))?;
            println!("pod {NAMESPACE}/{name}: {NETWORKS_ANNOTATION}: {networks}");
        }
        Ok(())
    }

    fn pod(&self, name: &str) -> Result<Pod> {
        let pods: Api<Pod> = Api::namespaced(self.admin.clone(), NAMESPACE);
        Ok(self.rt.block_on(pods.get(name))?)
    }

    fn uid(&self, name: &str) -> Result<String> {
        Ok(self.pod(name)?.metadata.uid.ok_or("a pod without a UID")?)
    }

    /// The pod's network-status annotation, parsed.
    fn network_status(&self, name: &str) -> Result<Value> {
        let text = self
            .pod(name)?
            .metadata
            .annotations
            .unwrap_or_default()
            .remove(STATUS_ANNOTATION)
            .ok_or_else(|| format!("pod {name} has no {STATUS_ANNOTATION} annotation"))?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Deletes the pods and the NADs, and shows that none is left.
    fn delete_objects(&self) -> Result {
        cmd::step("deleting the pods and the NetworkAttachmentDefinitions (as admin)");
        let pods: Api<Pod> = Api::namespaced(self.admin.clone(), NAMESPACE);
        let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(self.admin.clone(), NAMESPACE);
        let delete = DeleteParams::default();
        for (name, _) in PODS {
            self.rt.block_on(pods.delete(name, &delete))?;
        }
        for (name, _) in NADS {
            self.rt.block_on(nads.delete(name, &delete))?;
        }
        let names = |list: Vec<Option<String>>| list.into_iter().flatten().collect::<Vec<_>>();
        let list = ListParams::default();
        let pods_left = names(
            self.rt
                .block_on(pods.list(&list))?
                .items
                .into_iter()
                .map(|p| p.metadata.name)
                .collect(),
        );
        let nads_left = names(
            self.rt
                .block_on(nads.list(&list))?
                .items
                .into_iter()
                .map(|n| n.metadata.name)
                .collect(),
        );
        println!("pods in {NAMESPACE}: {}", super::list_or_none(&pods_left));
        println!(
            "NetworkAttachmentDefinitions in {NAMESPACE}: {}",
            super::list_or_none(&nads_left)
        );
        if pods_left.is_empty() && nads_left.is_empty() {
            Ok(())
        } else {
            Err("objects left on the API server".into())
        }
    }

    /// How many audit events the API server has written.
    fn audit_len(&self) -> usize {
        self.cluster.audit_events().len()
    }

    /// The audit events of Plexus's service account after the first `from`.
    /// The API server writes an event just after it answers: with
    /// `until_patch`, waits (up to 5 s) for the network-status PATCH, else
    /// for a moment.
    fn plexus_requests(&self, from: usize, until_patch: bool) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let events: Vec<Value> = self
                .cluster
                .audit_events()
                .into_iter()
                .skip(from)
                .filter(|e| e["user"]["username"] == SA_USER)
                .collect();
            let done = if until_patch {
                events.iter().any(|e| e["verb"] == "patch")
            } else {
                started.elapsed() > Duration::from_millis(300)
            };
            if done || started.elapsed() > Duration::from_secs(5) {
                return events;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Metadata with only a name.
fn named(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        ..Default::default()
    }
}
