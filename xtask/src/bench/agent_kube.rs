//! `plexus` through the node agent `plexusd` on the real API server, and the agent's memory.
//!
//! * [`agent_kube`]: one Kubernetes pod's ADD (the primary from a file, two NADs) through
//!   `plexus` with the agent and without it, against the same delegates run directly, and next
//!   to the floor of an ADD that must write the network-status: one warm PATCH of that
//!   annotation alone (from a client kept open in the bench) plus the start of a process that
//!   does nothing (`/bin/true`), all in the same run and in turns. The API requests of each
//!   ADD, `plexus`'s and the agent's, come from the audit log.
//! * [`agent_memory`]: the RSS of `plexusd` with 1,000 pods on its node and 200 NADs cached,
//!   then before and after 10,000 ADD/DEL-like cycles through it (`GetPod` and `WriteStatus`
//!   of one pod, 4 at a time, as `plexus`'s ADD makes them; DEL never reaches the agent).

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1 as k8s;
use kube::api::{Api, ObjectMeta, PostParams};
use plexus::k8s::client::KubeApi;
use plexus::k8s::selection::NETWORK_STATUS_ANNOTATION;
use plexus_agent_api::proto::{Attachment, PodRequest, StatusRequest};
use plexus_agent_api::AgentClient;
use plexus_crds::{NetworkAttachmentDefinition, NetworkAttachmentDefinitionSpec};
use plexus_tests::agent::Agent;
use plexus_tests::cluster::{self, LocalCluster};
use serde_json::Value;

use super::agent::build_plexusd;
use super::audit::{requests_in, settled_plexus_and_agent_requests, Window};
use super::cycle::{direct_cycle, ms, Cycles};
use super::kubernetes::{
    annotated_pod, kube_config, kube_cycle, kube_set_up, Annotations, KubePod, KUBE_NAMESPACE,
};
use super::process::{ProcessRun, Spawn};
use super::report::{Figure, Section, Spread};
use super::{Binaries, Lab, Settings};
use crate::cmd::{self, Result};

/// The node the agent serves.
const NODE: &str = "bench-node";
/// The process that does nothing, for the floor.
const NOTHING: &str = "/bin/true";

/// Kubernetes ADD through `plexus` with and without the agent, the direct delegates and the
/// floor, in turns.
pub(super) fn agent_kube(binaries: &Binaries, settings: &Settings) -> Result<Section> {
    let plexusd = build_plexusd()?;
    let apiserver = crate::apiserver::ensure()?;
    let lab = &Lab::on_host(binaries)?;
    let cluster = &LocalCluster::start_with(&apiserver).map_err(|e| e as cmd::Error)?;
    let pods = kube_set_up(lab, cluster, settings.warmup + settings.runs, Some(NODE))?;
    let agent = Agent::start_kube(
        &plexusd,
        NODE,
        &lab.dir.path().join("run/plexusd.sock"),
        &lab.dir.path().join("hints"),
        &lab.dir.path().join("plexusd.log"),
        &cluster.kubeconfig,
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let last = pods.last().ok_or("no pods")?;
    runtime.block_on(wait_cached(&agent, &last.name, &last.uid))?;
    let mut without = kube_config(lab, cluster, Annotations::FromApi);
    without["agentSocket"] = lab
        .dir
        .path()
        .join("nobody/plexusd.sock")
        .display()
        .to_string()
        .into();
    let mut with = without.clone();
    with["agentSocket"] = agent.socket().display().to_string().into();
    let configs = [without, with];
    let networks = lab.networks()?;
    let api = runtime.block_on(KubeApi::from_kubeconfig(
        cluster.sa_kubeconfig(),
        plexus::k8s::client::DEFAULT_TIMEOUT,
    ))?;

    let mut plexus: [(Cycles, Vec<Window>); 2] = Default::default();
    let mut direct = Cycles::default();
    let (mut patches, mut nothing) = (Vec::new(), Vec::new());
    for (round, pod) in pods.iter().enumerate() {
        let timed = round >= settings.warmup as usize;
        for turn in 0..4 {
            match (round + turn) % 4 {
                mode @ (0 | 1) => {
                    let (times, windows) = kube_cycle(lab, pod, &configs[mode])?;
                    if timed {
                        plexus[mode].0.push(times);
                        plexus[mode].1.push(windows.0);
                    }
                }
                2 => {
                    let cycle = direct_cycle(lab, &networks)?;
                    if timed {
                        direct.push(cycle);
                    }
                }
                _ => {
                    let patch = runtime.block_on(timed_patch(&api, pod))?;
                    let run = ProcessRun::start(Path::new(NOTHING), &[], b"", Spawn::Timed)?;
                    if timed {
                        patches.push(ms(patch));
                        nothing.push(ms(run.elapsed));
                    }
                }
            }
        }
        if timed {
            eprint!(".");
        }
    }
    eprintln!();
    drop(agent);

    let requests = settled_plexus_and_agent_requests(cluster);
    let direct = Spread::of(&direct.add);
    let (patch, start) = (Spread::of(&patches), Spread::of(&nothing));
    let floor = patch.median + start.median;
    let mut figures = vec![
        Figure::spread(
            "agent_kube_direct_add".into(),
            "direct ADD (3 delegates)".into(),
            "ms",
            direct.clone(),
        ),
        Figure::spread(
            "agent_kube_warm_patch".into(),
            "floor: one warm PATCH of the network-status".into(),
            "ms",
            patch,
        ),
        Figure::spread(
            "agent_kube_nothing_start".into(),
            format!("floor: start of {NOTHING}"),
            "ms",
            start,
        ),
        Figure::value(
            "agent_kube_floor".into(),
            "floor (PATCH + process start, medians)".into(),
            "ms",
            floor,
        ),
    ];
    for ((runs, windows), (key, label)) in plexus.iter().zip([
        ("without_agent", "without the agent"),
        ("with_agent", "through the agent"),
    ]) {
        let times = Spread::of(&runs.add);
        let own = times.median - direct.median;
        figures.push(Figure::spread(
            format!("agent_kube_plexus_add_{key}"),
            format!("plexus ADD, {label}"),
            "ms",
            times,
        ));
        figures.push(Figure::value(
            format!("agent_kube_own_cost_{key}"),
            format!("ADD's own cost over the delegates, {label} (medians)"),
            "ms",
            own,
        ));
        figures.push(Figure::value(
            format!("agent_kube_own_cost_{key}_per_floor"),
            format!("ADD's own cost / floor, {label}"),
            "x",
            own / floor,
        ));
        let counts: Vec<f64> = windows
            .iter()
            .map(|w| f64::from(requests_in(&requests, *w).values().sum::<u32>()))
            .collect();
        figures.push(Figure::spread(
            format!("agent_kube_add_requests_{key}"),
            format!("API requests per ADD (plexus's and the agent's), {label}"),
            "req",
            Spread::of(&counts),
        ));
    }
    Ok(Section::new(
        format!(
            "Kubernetes ADD through plexusd: primary file + 2 NADs on kube-apiserver {}, ms ({} \
             runs after {} warm-up), with and without the agent, the direct delegates and the \
             floor in turns; API requests from the audit log",
            cluster::APISERVER_VERSION,
            settings.runs,
            settings.warmup
        ),
        figures,
    ))
}

/// Waits until the agent's watch has the pod `name` of `uid`.
async fn wait_cached(agent: &Agent, name: &str, uid: &str) -> Result {
    let mut client = AgentClient::connect(agent.socket(), Duration::from_secs(5)).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = client.get_pod(pod_request(name, uid)).await?;
        if reply.pod_source == "cache" {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("plexusd never cached pod {name}: {}", agent.log_text()).into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GetPod` of pod `name` in the bench's namespace.
fn pod_request(name: &str, uid: &str) -> PodRequest {
    PodRequest {
        namespace: KUBE_NAMESPACE.into(),
        name: name.into(),
        uid: uid.into(),
        multus_namespace: "kube-system".into(),
        ..PodRequest::default()
    }
}

/// One PATCH of the pod's network-status annotation alone on a warm client; its wall time.
async fn timed_patch(api: &KubeApi, pod: &KubePod) -> Result<Duration> {
    let text = format!(
        "[{{\"name\":\"bench\",\"interface\":\"eth0\",\"ips\":[\"10.0.0.{}\"]}}]",
        pod.name.len()
    );
    let started = Instant::now();
    api.patch_pod_annotation(
        KUBE_NAMESPACE,
        &pod.name,
        Some(&pod.uid),
        NETWORK_STATUS_ANNOTATION,
        &text,
    )
    .await?;
    Ok(started.elapsed())
}

/// Pods on the agent's node.
const MEMORY_PODS: u32 = 1_000;
/// NADs in the cluster.
const MEMORY_NADS: u32 = 200;
/// ADD/DEL-like cycles through the agent.
const CYCLES: usize = 10_000;
/// Cycles in flight.
const CYCLES_IN_FLIGHT: usize = 4;

/// The agent's RSS with 1,000 pods and 200 NADs cached, and before and after 10,000 cycles.
pub(super) fn agent_memory(binaries: &Binaries, _settings: &Settings) -> Result<Section> {
    let plexusd = build_plexusd()?;
    let apiserver = crate::apiserver::ensure()?;
    let lab = &Lab::on_host(binaries)?;
    let cluster = &LocalCluster::start_with(&apiserver).map_err(|e| e as cmd::Error)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let pods = runtime.block_on(memory_set_up(cluster))?;
    let run = lab.dir.path().join("run");
    let agent = Agent::start_kube(
        &plexusd,
        NODE,
        &run.join("plexusd.sock"),
        &lab.dir.path().join("hints"),
        &lab.dir.path().join("plexusd.log"),
        &cluster.kubeconfig,
    );
    // Both watches have listed once the first snapshot is written.
    let snapshot = run.join("plexusd-cache.json");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !snapshot.exists() {
        if Instant::now() > deadline {
            return Err(format!("plexusd never listed: {}", agent.log_text()).into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    let cached = rss_kib(agent.pid())?;
    runtime.block_on(cycles(&agent, &pods, CYCLES / 10))?;
    let before = rss_kib(agent.pid())?;
    let started = Instant::now();
    runtime.block_on(cycles(&agent, &pods, CYCLES))?;
    let wall = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_kib(agent.pid())?;
    let mib = |kib: u64| kib as f64 / 1024.0;
    Ok(Section::new(
        format!(
            "plexusd memory: {MEMORY_PODS} pods on its node and {MEMORY_NADS} NADs cached, then \
             {CYCLES} ADD/DEL-like cycles (GetPod + WriteStatus, {CYCLES_IN_FLIGHT} in flight) \
             after {} warm-up cycles; VmRSS from /proc",
            CYCLES / 10
        ),
        vec![
            Figure::value(
                "agent_rss_cached".into(),
                "RSS, caches listed".into(),
                "MiB",
                mib(cached),
            ),
            Figure::value(
                "agent_rss_before".into(),
                format!("RSS before {CYCLES} cycles"),
                "MiB",
                mib(before),
            ),
            Figure::value(
                "agent_rss_after".into(),
                format!("RSS after {CYCLES} cycles"),
                "MiB",
                mib(after),
            ),
            Figure::value(
                "agent_rss_growth".into(),
                format!("RSS growth over {CYCLES} cycles"),
                "MiB",
                mib(after) - mib(before),
            ),
            Figure::value(
                "agent_cycles_per_s".into(),
                "cycles/s".into(),
                "cycle/s",
                CYCLES as f64 / wall.as_secs_f64(),
            ),
        ],
    ))
}

/// 200 NADs over 10 namespaces and 1,000 pods on the agent's node, each naming two of them;
/// the pods (name, UID).
async fn memory_set_up(cluster: &LocalCluster) -> Result<Vec<(String, String)>> {
    let client = cluster.admin_client();
    let create = PostParams::default();
    let namespaces: Api<k8s::Namespace> = Api::all(client.clone());
    for n in 0..10 {
        let ns = k8s::Namespace {
            metadata: ObjectMeta {
                name: Some(format!("nads-{n}")),
                ..ObjectMeta::default()
            },
            ..k8s::Namespace::default()
        };
        namespaces.create(&create, &ns).await?;
    }
    for n in 0..MEMORY_NADS {
        let namespace = format!("nads-{}", n % 10);
        let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(client.clone(), &namespace);
        let config = serde_json::json!({
            "cniVersion": "1.0.0", "name": format!("net-{n}"),
            "plugins": [{"type": "macvlan", "master": "eth0", "mode": "bridge",
                "ipam": {"type": "host-local", "subnet": format!("10.{}.{}.0/24", n / 250, n % 250)}}]
        });
        let spec = NetworkAttachmentDefinitionSpec {
            config: config.to_string(),
        };
        let mut nad = NetworkAttachmentDefinition::new(&format!("net-{n}"), spec);
        nad.metadata.namespace = Some(namespace);
        nads.create(&create, &nad).await?;
    }
    let api: Api<k8s::Pod> = Api::namespaced(client, KUBE_NAMESPACE);
    let mut pods = Vec::new();
    for n in 0..MEMORY_PODS {
        let name = format!("mem-{n}");
        let networks = format!(
            "nads-{a}/net-{b}, nads-{c}/net-{d}",
            a = n % 10,
            b = n % MEMORY_NADS / 10 * 10 + n % 10,
            c = (n + 1) % 10,
            d = (n + 1) % MEMORY_NADS / 10 * 10 + (n + 1) % 10,
        );
        let mut pod = annotated_pod(&name, &networks);
        if let Some(spec) = pod.spec.as_mut() {
            spec.node_name = Some(NODE.into());
        }
        let created = api.create(&create, &pod).await?;
        pods.push((name, created.metadata.uid.unwrap_or_default()));
    }
    Ok(pods)
}

/// `count` cycles through the agent, [`CYCLES_IN_FLIGHT`] at a time, over the pods in turn.
async fn cycles(agent: &Agent, pods: &[(String, String)], count: usize) -> Result {
    let client = AgentClient::connect(agent.socket(), Duration::from_secs(5)).await?;
    let mut tasks = Vec::new();
    for slot in 0..CYCLES_IN_FLIGHT {
        let mut client = client.clone();
        let mine: Vec<(String, String)> = (0..count / CYCLES_IN_FLIGHT)
            .map(|i| pods[(i * CYCLES_IN_FLIGHT + slot) % pods.len()].clone())
            .collect();
        tasks.push(tokio::spawn(async move {
            for (name, uid) in mine {
                cycle(&mut client, &name, &uid).await?;
            }
            Ok::<_, String>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// One ADD's calls: the pod and its NADs, then its network-status (3 attachments).
async fn cycle(client: &mut AgentClient, name: &str, uid: &str) -> std::result::Result<(), String> {
    let reply = client
        .get_pod(pod_request(name, uid))
        .await
        .map_err(|e| e.to_string())?;
    if let Some(e) = reply.error {
        return Err(format!("GetPod {name}: {}", e.msg));
    }
    let attachments = ["eth0", "net1", "net2"]
        .iter()
        .map(|ifname| Attachment {
            ifname: ifname.to_string(),
            ips: vec!["10.0.0.1/24".into()],
            network: "bench".into(),
        })
        .collect();
    let status = StatusRequest {
        namespace: KUBE_NAMESPACE.into(),
        name: name.into(),
        uid: uid.into(),
        network_status: Value::Array(Vec::new()).to_string(),
        attachments,
        event_uid: uid.into(),
        add_micros: 0,
    };
    client
        .write_status(status)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("WriteStatus {name}: {}", e.msg))
}

/// The resident set of process `pid`, in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmRSS".into())
}
