//! The node agent's IPAM: allocations per second, and allocations per block write, through
//! `plexusd`'s group commit.
//!
//! 8 simulated nodes, each its own `plexusd` (release build) on its own socket, allocate in one
//! /16 at once, with 1, 4 and 16 allocations in flight per node (a burst of pods landing on
//! every node). The bench drives the agents' sockets directly, with the same `Allocate` request
//! `plexus-ipam` sends. Each node makes one untimed allocation first (its connection open, its
//! first block claimed). The agents' own counters give the block writes and the allocations
//! they carried. Next to it, in the same run, the one-write-per-allocation raw ceiling: the
//! `store_bench` example's `raw` scenario (GET + replace on `resourceVersion` of each client's
//! own `IPAMBlock`) with 8 and with 32 clients.
//!
//! Then DEL: the allocations of the 16-in-flight measurement released by real `plexus-ipam`
//! processes (release build), 8 nodes x [`DEL_IN_FLIGHT`] at a time, half of them asking the
//! nodes' agents and half with `agentSocket` naming a missing socket (the plugin alone).

use std::path::Path;
use std::time::{Duration, Instant};

use plexus_agent_api::proto::IpamRequest;
use plexus_agent_api::AgentClient;
use plexus_tests::agent::Agent;
use plexus_tests::cluster::{LocalCluster, IPAM_NAMESPACE};
use serde_json::{json, Value};

use super::ipam::{build_worker, run_worker};
use super::process::{ProcessRun, Spawn};
use super::report::{percentile, Figure, Section};
use super::{Binaries, Settings};
use crate::cmd::{self, Result};

/// Simulated nodes.
const NODES: usize = 8;
/// Allocations in flight per node, one measurement each.
const IN_FLIGHT: [usize; 3] = [1, 4, 16];
/// Timed allocations per node in each measurement.
const PER_NODE: usize = 64;
/// Clients of the raw ceiling.
const RAW_CLIENTS: [usize; 2] = [8, 32];

/// The agent's IPAM figures and the raw ceiling, measured in the same run.
pub(super) fn agent_ipam(binaries: &Binaries, _settings: &Settings) -> Result<Section> {
    let plexusd = build_plexusd()?;
    let worker = build_worker()?;
    let apiserver = crate::apiserver::ensure()?;
    let cluster = LocalCluster::start_with(&apiserver).map_err(|e| e as cmd::Error)?;
    let dir = tempfile::tempdir()?;
    let hints = dir.path().join("hints");
    let agents: Vec<Agent> = (0..NODES)
        .map(|n| {
            let node = format!("node{n}");
            let socket = dir.path().join(format!("{node}/plexusd.sock"));
            let log = dir.path().join(format!("{node}.log"));
            Agent::start_bin(&plexusd, &node, &socket, &hints, &log)
        })
        .collect();
    let runtime = tokio::runtime::Runtime::new()?;
    let mut figures = Vec::new();
    for in_flight in IN_FLIGHT {
        let network = format!("agent-bench-f{in_flight}");
        let request = |node: usize, pod: &str| {
            IpamRequest {
            config_json: json!({
                "cniVersion": "1.0.0", "name": "bench",
                "ipam": {
                    "type": "plexus-ipam", "range": "10.0.0.0/16", "network_name": network,
                    "kubernetes": {"kubeconfig": cluster.sa_kubeconfig(), "namespace": IPAM_NAMESPACE},
                }
            })
            .to_string(),
            container_id: format!("ctr-{pod}"),
            ifname: "net1".into(),
            pod_namespace: "bench".into(),
            pod_name: pod.to_string(),
            pod_uid: format!("uid-{pod}"),
            node_name: format!("node{node}"),
        }
        };
        let before: Vec<_> = agents.iter().map(Agent::ping).collect();
        let run = runtime.block_on(drive(&agents, in_flight, &request))?;
        let after: Vec<_> = agents.iter().map(Agent::ping).collect();
        let delta = |f: fn(&plexus_agent_api::proto::PingReply) -> u64| -> f64 {
            let sum = |v: &[plexus_agent_api::proto::PingReply]| v.iter().map(f).sum::<u64>();
            (sum(&after) - sum(&before)) as f64
        };
        let (writes, changes) = (delta(|p| p.block_writes), delta(|p| p.block_changes));
        let conflicts = delta(|p| p.block_conflicts);
        let key = format!("agent_{NODES}x{in_flight}");
        let who = format!("plexusd, {NODES} nodes x {in_flight} in flight");
        figures.push(Figure::value(
            format!("{key}_allocs_per_s"),
            format!("{who}: allocations/s"),
            "alloc/s",
            run.latencies.len() as f64 / run.wall.as_secs_f64(),
        ));
        figures.push(Figure::value(
            format!("{key}_allocs_per_write"),
            format!("{who}: allocations per block write"),
            "alloc/write",
            changes / writes.max(1.0),
        ));
        figures.push(Figure::value(
            format!("{key}_conflicts_per_write"),
            format!("{who}: lost writes (409) per block write"),
            "409/write",
            conflicts / writes.max(1.0),
        ));
        let mut sorted = run.latencies.clone();
        sorted.sort_by(f64::total_cmp);
        for (p, name) in [(50.0, "p50"), (99.0, "p99")] {
            figures.push(Figure::value(
                format!("{key}_alloc_{name}_ms"),
                format!("{who}: allocation {name}"),
                "ms",
                percentile(&sorted, p),
            ));
        }
        eprint!(".");
    }
    // DEL of the last measurement's allocations, half through the agents, half without.
    let last = IN_FLIGHT[IN_FLIGHT.len() - 1];
    let network = format!("agent-bench-f{last}");
    let config = |socket: &Path| {
        json!({
            "cniVersion": "1.0.0", "name": "bench", "type": "macvlan",
            "ipam": {
                "type": "plexus-ipam", "range": "10.0.0.0/16", "network_name": network,
                "kubernetes": {"kubeconfig": cluster.sa_kubeconfig(), "namespace": IPAM_NAMESPACE},
                "agentSocket": socket,
            }
        })
    };
    let pods = |node: usize| -> Vec<String> {
        let mut pods = vec![format!("f{last}-n{node}-warmup")];
        for slot in 0..last {
            pods.extend((0..PER_NODE / last).map(|i| format!("f{last}-n{node}-s{slot}-{i}")));
        }
        pods
    };
    let no_agent = dir.path().join("no-agent/plexusd.sock");
    for (variant, keep) in [("agent", 0), ("no_agent", 1)] {
        let calls: Vec<Vec<(String, Value)>> = (0..NODES)
            .map(|n| {
                let socket = if keep == 0 {
                    agents[n].socket()
                } else {
                    &no_agent
                };
                let conf = config(socket);
                pods(n)
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| i % 2 == keep)
                    .map(|(_, pod)| (pod, conf.clone()))
                    .collect()
            })
            .collect();
        let run = dels(&binaries.plexus_ipam, &hints, &calls)?;
        let who = if keep == 0 {
            "with plexusd"
        } else {
            "without plexusd"
        };
        figures.push(Figure::value(
            format!("agent_del_{variant}_per_s"),
            format!("plexus-ipam DEL {who}, {NODES} nodes x {DEL_IN_FLIGHT} in flight: DEL/s"),
            "del/s",
            run.latencies.len() as f64 / run.wall.as_secs_f64(),
        ));
        let mut sorted = run.latencies.clone();
        sorted.sort_by(f64::total_cmp);
        figures.push(Figure::value(
            format!("agent_del_{variant}_p99_ms"),
            format!("plexus-ipam DEL {who}: p99"),
            "ms",
            percentile(&sorted, 99.0),
        ));
        eprint!(".");
    }
    drop(agents);
    for clients in RAW_CLIENTS {
        let spec = json!({
            "backend": "kubernetes", "scenario": "raw", "allocators": clients,
            "adds": NODES * PER_NODE / clients, "warmup": 3, "range": "10.1.0.0/16",
            "network": format!("agent-bench-raw{clients}"), "tag": "a",
            "kubeconfig": cluster.sa_kubeconfig(), "namespace": IPAM_NAMESPACE,
            "metrics_kubeconfig": cluster.kubeconfig,
            "hint_dir": hints.join(format!("raw{clients}")),
        });
        let out = run_worker(&worker, &spec)?;
        let ops = out["latencies_ms"].as_array().map_or(0, Vec::len) as f64;
        let wall = out["wall_s"]
            .as_f64()
            .ok_or("store_bench printed no wall_s")?;
        figures.push(Figure::value(
            format!("agent_raw_{clients}_per_s"),
            format!("raw ceiling, one GET + write per allocation, {clients} clients/s"),
            "op/s",
            ops / wall,
        ));
        eprint!(".");
    }
    eprintln!();
    Ok(Section::new(
        format!(
            "IPAM through plexusd: {NODES} nodes (one agent each) x 1/4/16 allocations in flight, \
             {PER_NODE} per node, driving the agents' sockets; block writes from the agents' \
             counters; next to the raw one-write-per-allocation ceiling in the same run"
        ),
        figures,
    ))
}

/// DELs in flight per node (a kubelet tearing several pods down at once).
const DEL_IN_FLIGHT: usize = 4;

/// Runs `plexus-ipam` DEL of every node's `(pod, config)`, [`DEL_IN_FLIGHT`] processes at a
/// time per node, all nodes at once.
fn dels(plexus_ipam: &Path, hints: &Path, calls: &[Vec<(String, Value)>]) -> Result<Run> {
    let started = Instant::now();
    let latencies = std::sync::Mutex::new(Vec::new());
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for (node, calls) in calls.iter().enumerate() {
            let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            for _ in 0..DEL_IN_FLIGHT {
                let (next, latencies, failures) = (next.clone(), &latencies, &failures);
                scope.spawn(move || loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((pod, config)) = calls.get(n) else {
                        return;
                    };
                    let env = [
                        ("CNI_COMMAND", "DEL".to_string()),
                        ("CNI_CONTAINERID", format!("ctr-{pod}")),
                        ("CNI_NETNS", "/run/netns/plexus-bench-none".to_string()),
                        ("CNI_IFNAME", "net1".to_string()),
                        (
                            "CNI_ARGS",
                            format!(
                                "K8S_POD_NAMESPACE=bench;K8S_POD_NAME={pod};K8S_POD_UID=uid-{pod}"
                            ),
                        ),
                        ("CNI_PATH", "/nonexistent".to_string()),
                        ("NODE_NAME", format!("node{node}")),
                        ("PLEXUS_IPAM_AFFINITY_DIR", hints.display().to_string()),
                    ];
                    let run = ProcessRun::start(
                        plexus_ipam,
                        &env,
                        config.to_string().as_bytes(),
                        Spawn::Timed,
                    )
                    .and_then(|run| run.check(&format!("DEL of {pod}")).map(|()| run));
                    match run {
                        Ok(run) => lock(latencies).push(run.elapsed.as_secs_f64() * 1000.0),
                        Err(e) => lock(failures).push(e.to_string()),
                    }
                });
            }
        }
    });
    let wall = started.elapsed();
    if let Some(first) = lock(&failures).first() {
        return Err(format!("DELs failed; first: {first}").into());
    }
    Ok(Run {
        latencies: latencies.into_inner().unwrap_or_else(|e| e.into_inner()),
        wall,
    })
}

/// Locks a mutex, even one a panicked thread held.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// What one measurement saw.
struct Run {
    latencies: Vec<f64>,
    wall: Duration,
}

/// Every node's allocations, `in_flight` at a time per node, after one untimed each.
async fn drive(
    agents: &[Agent],
    in_flight: usize,
    request: &(dyn Fn(usize, &str) -> IpamRequest + Sync),
) -> Result<Run> {
    let mut clients = Vec::new();
    for (n, agent) in agents.iter().enumerate() {
        let mut client = AgentClient::connect(agent.socket(), Duration::from_secs(5)).await?;
        let warm = request(n, &format!("f{in_flight}-n{n}-warmup"));
        client.allocate(warm).await?.map_err(|e| e.to_string())?;
        clients.push(client);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (n, client) in clients.into_iter().enumerate() {
        for slot in 0..in_flight {
            let requests: Vec<IpamRequest> = (0..PER_NODE / in_flight)
                .map(|i| request(n, &format!("f{in_flight}-n{n}-s{slot}-{i}")))
                .collect();
            let mut client = client.clone();
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                for r in requests {
                    let at = Instant::now();
                    client
                        .allocate(r)
                        .await
                        .map_err(|e| e.to_string())?
                        .map_err(|e| e.to_string())?;
                    latencies.push(at.elapsed().as_secs_f64() * 1000.0);
                }
                Ok::<_, String>(latencies)
            }));
        }
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.map_err(|e| e.to_string())??);
    }
    Ok(Run {
        latencies,
        wall: started.elapsed(),
    })
}

/// Builds `plexusd` in release mode; its path.
pub(super) fn build_plexusd() -> Result<std::path::PathBuf> {
    let root = cmd::workspace_root();
    cmd::step("Building plexusd (release)");
    cmd::run(cmd::cargo().current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "plexusd",
        "--bin",
        "plexusd",
    ]))?;
    Ok(cmd::profile_dir(&cmd::target_dir()?, "release").join("plexusd"))
}
