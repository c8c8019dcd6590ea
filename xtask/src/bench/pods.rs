//! Pods per second attached end to end: 200 pods spread over 4 simulated nodes, each pod
//! created in the API server with the networks annotation naming two NetworkAttachmentDefinitions,
//! attached by `plexus` as the nodes' runtimes would call it, all at once.
//!
//! * **Nodes.** Each node is a "kubelet" in this process that attaches its 50 pods with
//!   2 CNI calls at a time (a kubelet's pod workers run sandboxes
//!   concurrently too), with `NODE_NAME=node-<i>`, its own Plexus cache, and its own primary
//!   network (the node's pod CIDR `10.10.<i>.0/24`, host-local). All four run together.
//! * **Networks.** `net1` is `storage`: macvlan with `plexus-ipam` on the Kubernetes backend
//!   (`10.20.0.0/16`, cut into per-node blocks with Leases), so cluster IPAM is on the path;
//!   `net2` is `backup`: macvlan with host-local.
//! * **Done.** A pod counts as attached when `plexus` returned success: by then its interfaces
//!   are up in the pod and its network-status annotation is written (ADD's last step is that
//!   PATCH, and ADD fails if it fails). After the run the bench checks both for every pod: one
//!   LIST of the pods (each has a network-status naming `eth0`, `net1`, `net2`), and each pod's
//!   interfaces, up.
//! * **Then DEL** of every pod the same way, and a check that nothing is left: no cache entry,
//!   no host-local reservation, no allocation in any IPAMBlock, no interface but `lo`.
//!
//! Runs on the host ([`Lab::on_host`]): `plexus` must reach the API server on its loopback.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1 as k8s;
use kube::api::{Api, ListParams, PostParams};
use plexus_crds::{IpamBlock, NetworkAttachmentDefinition, NetworkAttachmentDefinitionSpec};
use plexus_tests::cluster::{LocalCluster, IPAM_NAMESPACE};
use serde_json::{json, Value};

use super::audit::{
    epoch_micros, request_kind_figures, requests_in, settled_sa_requests_by_agent, Window,
};
use super::cycle::cni_env;
use super::kubernetes::annotated_pod;
use super::lab::Pod;
use super::process::{ProcessRun, Spawn};
use super::report::{percentile, Figure, Section, Spread};
use super::{Binaries, Lab, Settings, CNI_VERSION, DELEGATE_TIMEOUT_SECONDS};
use crate::cmd::{self, Result};

/// How many pods, over how many nodes, how many calls at a time per node, and whether
/// `plexus-ipam` asks a node agent.
#[derive(Debug, Clone)]
struct Shape {
    /// Pods attached.
    pods: usize,
    /// Simulated nodes; pod `n` is on node `n % nodes`.
    nodes: usize,
    /// CNI calls one node makes at a time.
    per_node: usize,
    /// Whether `plexus-ipam` asks `plexusd` (one release-built agent serving every simulated
    /// node on one socket); else its `agentSocket` names a missing socket.
    agent: bool,
}

impl Shape {
    /// What a run of this shape attaches, for a section's title.
    fn describe(&self) -> String {
        format!(
            "{} pods over {} nodes ({} CNI calls at a time per node), bridge eth0 + NADs net1 \
             (plexus-ipam, Kubernetes) and net2 (host-local)",
            self.pods, self.nodes, self.per_node
        )
    }
}

/// The shape of the `pods` benchmark.
const POD_SHAPE: Shape = Shape {
    pods: 200,
    nodes: 4,
    per_node: 2,
    agent: false,
};
/// The namespace of the pods and NetworkAttachmentDefinitions.
const NAMESPACE: &str = "default";
/// The label that marks the bench's pods.
const LABEL: (&str, &str) = ("plexus-bench", "pods");
/// The annotation Plexus writes.
const NETWORK_STATUS: &str = "k8s.v1.cni.cncf.io/network-status";
/// The interfaces every pod must have.
const INTERFACES: [&str; 3] = ["eth0", "net1", "net2"];

/// One pod of the benchmark: its node and its sandbox.
struct NodePod {
    node: usize,
    sandbox: Pod,
}

/// Pods per second attached end to end (annotation → interfaces up → network-status written),
/// 200 pods over 4 simulated nodes, and their DEL; with p50/p99 per-pod latency and the API
/// requests per pod of `plexus` and `plexus-ipam`.
pub(super) fn pods(binaries: &Binaries, _settings: &Settings) -> Result<Section> {
    let shape = &POD_SHAPE;
    let figures = end_to_end(binaries, shape, "")?;
    Ok(Section::new(
        format!(
            "End to end: {}; API requests per pod by program and kind",
            shape.describe()
        ),
        figures,
    ))
}

/// End to end with and without the node agent, in the same run: `--e2e-pods` pods (default
/// 1,000) over 8 simulated nodes, 4 CNI calls at a time per node; first without the agent,
/// then with one `plexusd` serving `plexus-ipam` on every node.
pub(super) fn pods_agent(binaries: &Binaries, settings: &Settings) -> Result<Section> {
    let mut shape = Shape {
        pods: settings.e2e_pods,
        nodes: 8,
        per_node: 4,
        agent: false,
    };
    let mut figures = end_to_end(binaries, &shape, "no_agent_")?;
    shape.agent = true;
    figures.extend(end_to_end(binaries, &shape, "agent_")?);
    Ok(Section::new(
        format!(
            "End to end with and without plexusd: {}; with the agent, one plexusd serves \
             plexus-ipam on every simulated node",
            shape.describe()
        ),
        figures,
    ))
}

/// One end-to-end run of `shape`: its figures, keys prefixed with `prefix`.
fn end_to_end(binaries: &Binaries, shape: &Shape, prefix: &str) -> Result<Vec<Figure>> {
    let apiserver = crate::apiserver::ensure()?;
    let lab = &Lab::on_host(binaries)?;
    let cluster = &LocalCluster::start_with(&apiserver).map_err(|e| e as cmd::Error)?;
    let affinity = lab.dir.path().join("affinity");
    let agent = if shape.agent {
        let plexusd = super::agent::build_plexusd()?;
        let dir = lab.dir.path().join("agent");
        Some(plexus_tests::agent::Agent::start_bin(
            &plexusd,
            "node-0",
            &dir.join("plexusd.sock"),
            &affinity,
            &lab.dir.path().join("plexusd.log"),
        ))
    } else {
        None
    };
    let socket = match &agent {
        Some(agent) => agent.socket().to_path_buf(),
        None => lab.dir.path().join("no-agent/plexusd.sock"),
    };
    let configs = set_up_nodes(lab, cluster, binaries, shape, &socket)?;
    let pods = create_pods(lab, cluster, shape)?;
    let count = shape.pods;
    // `Lab` stays on this thread; the workers get what they need of it.
    let (plexus, plugin_dir) = (&lab.plexus, &lab.plugin_dir);

    let call = |command: &'static str, pod: &NodePod| -> Result<Duration> {
        let mut env = cni_env(command, &pod.sandbox, "eth0", plugin_dir);
        env.push(("NODE_NAME", format!("node-{}", pod.node)));
        env.push(("PLEXUS_IPAM_AFFINITY_DIR", affinity.display().to_string()));
        let stdin = configs[pod.node].to_string();
        let run = ProcessRun::start(plexus, &env, stdin.as_bytes(), Spawn::Timed)?;
        run.check(&format!("plexus {command} of {}", pod.sandbox.id))?;
        Ok(run.elapsed)
    };

    let add = Phase::run(&pods, shape, |pod| call("ADD", pod))?;
    eprintln!(
        "  ADD: {count} pods in {:.2} s ({:.1} pods/s)",
        add.wall.as_secs_f64(),
        add.pods_per_s()
    );
    check_attached(cluster, &pods)?;
    let del = Phase::run(&pods, shape, |pod| call("DEL", pod))?;
    eprintln!(
        "  DEL: {count} pods in {:.2} s ({:.1} pods/s)",
        del.wall.as_secs_f64(),
        del.pods_per_s()
    );
    check_clean(lab, cluster, &pods, shape)?;
    drop(agent);

    let requests = settled_sa_requests_by_agent(cluster);
    let mut figures = Vec::new();
    for (phase, command) in [(&add, "ADD"), (&del, "DEL")] {
        let lower = command.to_ascii_lowercase();
        figures.push(Figure::value(
            format!("{prefix}{lower}_pods_per_s"),
            format!("{command}: pods/s, all nodes"),
            "pods/s",
            phase.pods_per_s(),
        ));
        figures.push(Figure::value(
            format!("{prefix}{lower}_wall_s"),
            format!("{command}: wall time for {count} pods"),
            "s",
            phase.wall.as_secs_f64(),
        ));
        let mut sorted = phase.latencies.clone();
        sorted.sort_by(f64::total_cmp);
        for (p, name) in [(50.0, "p50"), (99.0, "p99")] {
            figures.push(Figure::value(
                format!("{prefix}{lower}_latency_{name}_ms"),
                format!("{command}: per-pod latency {name}"),
                "ms",
                percentile(&sorted, p),
            ));
        }
        figures.push(Figure::spread(
            format!("{prefix}{lower}_latency_ms"),
            format!("{command}: per-pod latency"),
            "ms",
            Spread::of(&phase.latencies),
        ));
        let by_kind = requests_in(&requests, phase.window);
        let total: u32 = by_kind.values().sum();
        figures.push(Figure::value(
            format!("{prefix}{lower}_requests_per_pod"),
            format!("{command}: API requests per pod"),
            "req",
            f64::from(total) / count as f64,
        ));
        figures.extend(request_kind_figures(
            &format!("{prefix}{lower}_requests_per_pod"),
            by_kind,
            count as f64,
        ));
    }
    Ok(figures)
}

/// One phase (every pod's ADD, or every DEL): its wall time, each pod's latency (ms) and its
/// wall-clock window.
struct Phase {
    wall: Duration,
    latencies: Vec<f64>,
    window: Window,
}

impl Phase {
    /// Runs `call` on every pod: one "kubelet" per node, each with `shape.per_node` workers
    /// taking its pods in order; all at once.
    fn run(
        pods: &[NodePod],
        shape: &Shape,
        call: impl Fn(&NodePod) -> Result<Duration> + Sync,
    ) -> Result<Phase> {
        let nodes = shape.nodes;
        let next: Vec<AtomicUsize> = (0..nodes).map(|_| AtomicUsize::new(0)).collect();
        let by_node: Vec<Vec<&NodePod>> = (0..nodes)
            .map(|node| pods.iter().filter(|p| p.node == node).collect())
            .collect();
        let latencies = Mutex::new(Vec::with_capacity(pods.len()));
        let failures = Mutex::new(Vec::new());
        let start = epoch_micros(SystemTime::now());
        let started = Instant::now();
        std::thread::scope(|scope| {
            for worker in 0..nodes * shape.per_node {
                let node = worker % nodes;
                let (next, mine) = (&next[node], &by_node[node]);
                let (latencies, failures, call) = (&latencies, &failures, &call);
                scope.spawn(move || loop {
                    let Some(pod) = mine.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        return;
                    };
                    match call(pod) {
                        Ok(elapsed) => lock(latencies).push(super::cycle::ms(elapsed)),
                        Err(e) => lock(failures).push(e.to_string()),
                    }
                });
            }
        });
        let wall = started.elapsed();
        let end = epoch_micros(SystemTime::now());
        let failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
        if let Some(first) = failures.first() {
            return Err(format!(
                "{} of {} calls failed; first: {first}",
                failures.len(),
                pods.len()
            )
            .into());
        }
        Ok(Phase {
            wall,
            latencies: latencies.into_inner().unwrap_or_else(|e| e.into_inner()),
            window: (start, end),
        })
    }

    fn pods_per_s(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }
}

/// Locks a mutex, even one a panicked thread held.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes each node's primary network and Plexus configuration, links `plexus-ipam` into the
/// delegates' bin directory, and creates the two NetworkAttachmentDefinitions; returns each
/// node's Plexus configuration.
fn set_up_nodes(
    lab: &Lab,
    cluster: &LocalCluster,
    binaries: &Binaries,
    shape: &Shape,
    agent_socket: &Path,
) -> Result<Vec<Value>> {
    let dir = lab.dir.path();
    let bin = dir.join("bin");
    fs::create_dir_all(&bin)?;
    symlink(&binaries.plexus_ipam, bin.join("plexus-ipam"))?;
    let kubeconfig = cluster.sa_kubeconfig();
    let mut configs = Vec::new();
    for node in 0..shape.nodes {
        let node_dir = dir.join(format!("node-{node}"));
        fs::create_dir_all(&node_dir)?;
        let primary = json!({
            "cniVersion": CNI_VERSION, "name": "pods", "type": "bridge", "bridge": lab.bridge,
            "isGateway": false,
            "ipam": {"type": "host-local", "subnet": format!("10.10.{node}.0/24"),
                     "dataDir": node_dir.join("ipam")}
        });
        let primary_file = node_dir.join("10-pods.conf");
        fs::write(&primary_file, primary.to_string())?;
        configs.push(json!({
            "cniVersion": CNI_VERSION, "name": "plexus", "type": "plexus",
            "kubeconfig": kubeconfig,
            "clusterNetwork": primary_file, "confDir": node_dir,
            "cniDir": node_dir.join("cache"), "binDir": bin,
            "delegateTimeoutSeconds": DELEGATE_TIMEOUT_SECONDS
        }));
    }
    let macvlan = |name: &str, ipam: Value| {
        json!({
            "cniVersion": CNI_VERSION, "name": name,
            "plugins": [{"type": "macvlan", "master": lab.master, "mode": "bridge", "ipam": ipam}]
        })
    };
    let nads = [
        macvlan(
            "storage",
            json!({"type": "plexus-ipam", "range": "10.20.0.0/16",
                   "kubernetes": {"kubeconfig": kubeconfig, "namespace": IPAM_NAMESPACE},
                   "agentSocket": agent_socket}),
        ),
        macvlan(
            "backup",
            json!({"type": "host-local", "subnet": "10.30.0.0/16",
                   "dataDir": dir.join("ipam-backup")}),
        ),
    ];
    block_on(async {
        let api: Api<NetworkAttachmentDefinition> =
            Api::namespaced(cluster.admin_client(), NAMESPACE);
        for config in &nads {
            let name = config["name"].as_str().unwrap_or_default();
            let spec = NetworkAttachmentDefinitionSpec {
                config: config.to_string(),
            };
            api.create(
                &PostParams::default(),
                &NetworkAttachmentDefinition::new(name, spec),
            )
            .await
            .map_err(|e| format!("create NetworkAttachmentDefinition {name}: {e}"))?;
        }
        Ok(configs)
    })
}

/// Creates the shape's pods, annotated with both networks, and a sandbox for each.
fn create_pods(lab: &Lab, cluster: &LocalCluster, shape: &Shape) -> Result<Vec<NodePod>> {
    let nodes = shape.nodes;
    let created: Vec<(String, String)> = block_on(async {
        let api: Api<k8s::Pod> = Api::namespaced(cluster.admin_client(), NAMESPACE);
        let mut created = Vec::new();
        for n in 0..shape.pods {
            let name = format!("e2e-{n}");
            let mut pod = annotated_pod(&name, "storage,backup");
            pod.metadata.labels = Some([(LABEL.0.to_string(), LABEL.1.to_string())].into());
            if let Some(spec) = pod.spec.as_mut() {
                spec.node_name = Some(format!("node-{}", n % nodes));
            }
            let pod = api
                .create(&PostParams::default(), &pod)
                .await
                .map_err(|e| format!("create pod {name}: {e}"))?;
            created.push((name, pod.metadata.uid.ok_or("a created pod without a UID")?));
        }
        Ok(created)
    })?;
    created
        .into_iter()
        .enumerate()
        .map(|(n, (name, uid))| {
            Ok(NodePod {
                node: n % nodes,
                sandbox: lab.fresh_kube_pod(NAMESPACE, &name, &uid)?,
            })
        })
        .collect()
}

/// Checks that every pod has its network-status (naming `eth0`, `net1` and `net2`) in the
/// API server, and its interfaces, up, in its network namespace.
fn check_attached(cluster: &LocalCluster, pods: &[NodePod]) -> Result {
    let listed: BTreeMap<String, Option<String>> = block_on(async {
        let api: Api<k8s::Pod> = Api::namespaced(cluster.admin_client(), NAMESPACE);
        let list = api
            .list(&ListParams::default().labels(&format!("{}={}", LABEL.0, LABEL.1)))
            .await
            .map_err(|e| format!("list pods: {e}"))?;
        Ok(list
            .items
            .into_iter()
            .map(|pod| {
                let status = pod
                    .metadata
                    .annotations
                    .and_then(|mut a| a.remove(NETWORK_STATUS));
                (pod.metadata.name.unwrap_or_default(), status)
            })
            .collect())
    })?;
    if listed.len() != pods.len() {
        return Err(format!("listed {} bench pods, not {}", listed.len(), pods.len()).into());
    }
    for (name, status) in &listed {
        let status = status
            .as_deref()
            .ok_or_else(|| format!("pod {name} has no {NETWORK_STATUS}"))?;
        let entries: Vec<Value> = serde_json::from_str(status)
            .map_err(|e| format!("pod {name}: unreadable {NETWORK_STATUS}: {e}"))?;
        let names: Vec<&str> = entries
            .iter()
            .filter_map(|e| e["interface"].as_str())
            .collect();
        if names != INTERFACES {
            return Err(format!("pod {name}: network-status names {names:?}").into());
        }
    }
    for pod in pods {
        let links = plexus::links::links(Some(&pod.sandbox.netns))?;
        for ifname in INTERFACES {
            if !links.iter().any(|l| l.name == ifname && l.up) {
                return Err(format!("pod {}: {ifname} is missing or down", pod.sandbox.id).into());
            }
        }
    }
    eprintln!(
        "  checked: {} pods with network-status and eth0, net1, net2 up",
        pods.len()
    );
    Ok(())
}

/// Checks that DEL left nothing: no interface but `lo` in any pod, no cache entry, no
/// host-local reservation, no allocation in any IPAMBlock.
fn check_clean(lab: &Lab, cluster: &LocalCluster, pods: &[NodePod], shape: &Shape) -> Result {
    for pod in pods {
        let links = plexus::links::links(Some(&pod.sandbox.netns))?;
        if let Some(left) = links.iter().find(|l| l.name != "lo") {
            return Err(format!("pod {}: {} is left after DEL", pod.sandbox.id, left.name).into());
        }
    }
    let dir = lab.dir.path();
    let mut stores: Vec<PathBuf> = (0..shape.nodes)
        .flat_map(|node| {
            let node_dir = dir.join(format!("node-{node}"));
            [node_dir.join("cache"), node_dir.join("ipam")]
        })
        .collect();
    stores.push(dir.join("ipam-backup"));
    for store in &stores {
        let left = leftovers(store);
        if !left.is_empty() {
            return Err(format!("left after DEL in {}: {left:?}", store.display()).into());
        }
    }
    let allocations: usize = block_on(async {
        let api: Api<IpamBlock> = Api::all(cluster.admin_client());
        let blocks = api
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("list IPAMBlocks: {e}"))?;
        if blocks.items.is_empty() {
            return Err("no IPAMBlock: plexus-ipam was not on the path".into());
        }
        Ok(blocks.items.iter().map(|b| b.spec.allocations.len()).sum())
    })?;
    if allocations != 0 {
        return Err(format!("{allocations} IPAMBlock allocations left after DEL").into());
    }
    eprintln!("  checked: nothing left after DEL");
    Ok(())
}

/// The files under `dir` that record an attachment: Plexus's cache entries (named for the
/// container) and host-local's reservations (named for the address). Locks and host-local's
/// `last_reserved_ip` files are not.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut left = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return left;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            left.extend(leftovers(&path));
        } else if name.starts_with("bench-") || name.parse::<std::net::IpAddr>().is_ok() {
            left.push(path.display().to_string());
        }
    }
    left
}

/// Runs a future on a current-thread runtime of its own.
fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}
