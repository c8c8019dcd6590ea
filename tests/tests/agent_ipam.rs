//! The node agent `plexusd` serving `plexus-ipam` against a real kube-apiserver 1.20, with real
//! `plexusd` and `plexus-ipam` processes: allocations through the agent, the mixed load of the
//! agent and plain `plexus-ipam` processes on one node, and the agent killed mid-burst (every
//! ADD completes or fails cleanly, nothing leaks, later calls fall back).
//!
//! Needs the cached kube-apiserver (`cargo xtask apiserver`). Without it the tests are skipped,
//! except in CI.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::api::{Api, ListParams};
use plexus_crds::IpamBlock;
use plexus_tests::agent::Agent;
use plexus_tests::cluster::{self, LocalCluster};
use serde_json::{json, Value};

/// The namespace of the IPAM objects.
const NS: &str = cluster::IPAM_NAMESPACE;

/// A cluster, a directory for sockets, logs and the nodes' hints.
struct Env {
    cluster: LocalCluster,
    dir: tempfile::TempDir,
}

impl Env {
    fn start() -> Option<Env> {
        let apiserver = cluster::apiserver_or_skip()?;
        Some(Env {
            cluster: LocalCluster::start_with(&apiserver).expect("a local cluster"),
            dir: tempfile::tempdir().expect("a directory"),
        })
    }

    fn hints(&self) -> PathBuf {
        self.dir.path().join("hints")
    }

    /// `plexusd` for `node` on a socket of its own.
    fn agent(&self, node: &str) -> Agent {
        let socket = self.dir.path().join(format!("run-{node}/plexusd.sock"));
        let log = self.dir.path().join(format!("plexusd-{node}.log"));
        Agent::start(node, &socket, &self.hints(), &log)
    }

    /// A macvlan configuration of network `network` in `range`, asking the agent at `socket`.
    fn conf(&self, network: &str, range: &str, socket: &Path) -> Value {
        json!({
            "cniVersion": "1.0.0", "name": "net", "type": "macvlan",
            "ipam": {
                "type": "plexus-ipam", "range": range, "network_name": network,
                "kubernetes": {"kubeconfig": self.cluster.sa_kubeconfig(), "namespace": NS},
                "agentSocket": socket, "agentConnectTimeoutMs": 200,
            }
        })
    }

    /// Starts `plexus-ipam` `verb` for `pod` on `node` (container `ctr-<pod>`, `net1`).
    fn spawn(&self, node: &str, verb: &str, pod: &str, config: &Value) -> Child {
        self.spawn_uid(node, verb, pod, &format!("uid-{pod}"), config)
    }

    /// [`Env::spawn`] for a pod of UID `uid`.
    fn spawn_uid(&self, node: &str, verb: &str, pod: &str, uid: &str, config: &Value) -> Child {
        let bin = plexus_tests::plexus_bin_dir().join("plexus-ipam");
        let mut child = Command::new(&bin)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("NODE_NAME", node)
            .env("PLEXUS_IPAM_AFFINITY_DIR", self.hints())
            .env("CNI_COMMAND", verb)
            .env("CNI_CONTAINERID", format!("ctr-{pod}"))
            .env("CNI_NETNS", "/run/netns/agent-ipam-test")
            .env("CNI_IFNAME", "net1")
            .env(
                "CNI_ARGS",
                format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};K8S_POD_UID={uid}"),
            )
            .env("CNI_PATH", "/nonexistent")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()));
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(config.to_string().as_bytes())
            .expect("feed plexus-ipam");
        child
    }

    /// The allocations of `network` in its blocks: address → container ID.
    fn allocations(&self, network: &str) -> BTreeMap<String, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let blocks = runtime.block_on(async {
            let api: Api<IpamBlock> = Api::namespaced(self.cluster.admin_client(), NS);
            api.list(&ListParams::default()).await.expect("list blocks")
        });
        let mut all = BTreeMap::new();
        for block in blocks
            .items
            .into_iter()
            .filter(|b| b.spec.network == network)
        {
            for (address, a) in block.spec.allocations {
                let old = all.insert(address.clone(), a.container_id);
                assert!(old.is_none(), "{address} is in two blocks");
            }
        }
        all
    }
}

/// What a `plexus-ipam` process printed and how it ended.
#[derive(Debug)]
struct Outcome {
    pod: String,
    code: Option<i32>,
    json: Value,
    stdout: String,
}

impl Outcome {
    /// The address of a successful ADD, without its prefix length.
    fn address(&self) -> Option<String> {
        if self.code != Some(0) {
            return None;
        }
        let address = self.json["ips"][0]["address"].as_str()?;
        Some(address.split('/').next()?.to_string())
    }

    /// Panics unless the process succeeded.
    fn ok(&self) {
        assert_eq!(self.code, Some(0), "{}: {}", self.pod, self.stdout);
    }
}

/// Waits for a process started by [`Env::spawn`].
fn wait(pod: &str, mut child: Child) -> Outcome {
    let mut stdout = String::new();
    let _ = child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut stdout);
    let status = child.wait().expect("wait for plexus-ipam");
    Outcome {
        pod: pod.to_string(),
        code: status.code(),
        json: serde_json::from_str(&stdout).unwrap_or(Value::Null),
        stdout,
    }
}

/// Runs `verb` for every `(node, pod, config)` at once; the outcomes in order.
fn burst(env: &Env, verb: &str, calls: &[(&str, String, &Value)]) -> Vec<Outcome> {
    let children: Vec<(String, Child)> = calls
        .iter()
        .map(|(node, pod, config)| (pod.clone(), env.spawn(node, verb, pod, config)))
        .collect();
    children
        .into_iter()
        .map(|(pod, child)| wait(&pod, child))
        .collect()
}

/// The addresses of successful ADDs: pod's container ID → address; panics on a duplicate.
fn unique(outcomes: &[Outcome]) -> BTreeMap<String, String> {
    let mut by_address: BTreeMap<String, String> = BTreeMap::new();
    for o in outcomes {
        if let Some(address) = o.address() {
            let container = format!("ctr-{}", o.pod);
            if let Some(other) = by_address.insert(address.clone(), container.clone()) {
                assert_eq!(other, container, "{address} handed out twice");
            }
        }
    }
    by_address
}

/// Allocations through the agent: unique, recorded in the blocks, carried by the agent's
/// group commit (its counters), and released cleanly through it.
#[test]
fn allocations_through_the_agent() {
    let Some(env) = Env::start() else { return };
    let agent = env.agent("node-a");
    let conf = env.conf("agent", "10.60.0.0/24", agent.socket());
    let calls: Vec<_> = (0..24)
        .map(|i| ("node-a", format!("a{i}"), &conf))
        .collect();
    let added = burst(&env, "ADD", &calls);
    added.iter().for_each(Outcome::ok);
    let addresses = unique(&added);
    assert_eq!(addresses.len(), 24);
    assert_eq!(env.allocations("agent"), addresses);
    let ping = agent.ping();
    eprintln!(
        "24 ADDs: {} block writes carried {} changes ({} conflicts)",
        ping.block_writes, ping.block_changes, ping.block_conflicts
    );
    assert!(ping.block_changes >= 24, "not through the agent: {ping:?}");
    assert!(ping.block_writes <= ping.block_changes, "{ping:?}");

    // A repeated ADD through the agent gives the same address.
    let again = burst(&env, "ADD", &calls[..1]);
    assert_eq!(again[0].address(), added[0].address());

    burst(&env, "DEL", &calls).iter().for_each(Outcome::ok);
    assert_eq!(env.allocations("agent"), BTreeMap::new());
    assert!(agent.ping().block_changes >= 48, "{:?}", agent.ping());

    // An invalid configuration: code 7, as without the agent (checked before asking it).
    let mut bad = conf.clone();
    bad["ipam"]["range"] = json!("10.61.0.0/33");
    let refused = burst(&env, "ADD", &[("node-a", "bad".into(), &bad)]);
    assert_ne!(refused[0].code, Some(0));
    assert_eq!(refused[0].json["code"], 7, "{}", refused[0].stdout);
}

/// The mixed load: the agent and plain `plexus-ipam` processes allocating on the same node and
/// network at once, plus another node: every address unique, the blocks holding exactly the
/// live allocations, before and after a mixed DEL of half of them.
#[test]
fn agent_and_plain_plugins_together() {
    let Some(env) = Env::start() else { return };
    let agent = env.agent("node-a");
    let via_agent = env.conf("mixed", "10.62.0.0/23", agent.socket());
    let plain = env.conf("mixed", "10.62.0.0/23", &env.dir.path().join("none.sock"));
    let mut live: BTreeMap<String, String> = BTreeMap::new();
    for round in 0..3 {
        let mut calls = Vec::new();
        for i in 0..12 {
            calls.push(("node-a", format!("r{round}-agent{i}"), &via_agent));
            calls.push(("node-a", format!("r{round}-plain{i}"), &plain));
        }
        for i in 0..4 {
            calls.push(("node-b", format!("r{round}-other{i}"), &plain));
        }
        let added = burst(&env, "ADD", &calls);
        added.iter().for_each(Outcome::ok);
        for (address, container) in unique(&added) {
            assert!(
                live.insert(address.clone(), container).is_none(),
                "{address} twice"
            );
        }
        assert_eq!(env.allocations("mixed"), live);
    }
    assert!(agent.ping().block_changes >= 36, "{:?}", agent.ping());

    // Half released, alternately through the agent and without it.
    let mut calls = Vec::new();
    for (n, container) in live.values().enumerate().filter(|(n, _)| n % 2 == 0) {
        let pod = container.trim_start_matches("ctr-").to_string();
        let conf = if n % 4 == 0 { &via_agent } else { &plain };
        calls.push(("node-a", pod, conf));
    }
    burst(&env, "DEL", &calls).iter().for_each(Outcome::ok);
    let gone: BTreeSet<String> = calls.iter().map(|(_, p, _)| format!("ctr-{p}")).collect();
    live.retain(|_, c| !gone.contains(c));
    assert_eq!(env.allocations("mixed"), live);
}

/// Allocations (or releases) driven straight into the agent's socket, `in_flight` at a time,
/// for `pods` of node-a: each pod's address (empty for a release), or why it failed.
fn through_socket(
    env: &Env,
    socket: &Path,
    network: &str,
    range: &str,
    pods: Vec<String>,
    in_flight: usize,
    release: bool,
) -> Vec<(String, Result<String, String>)> {
    use plexus_agent_api::proto::IpamRequest;
    use plexus_agent_api::AgentClient;
    let config = json!({
        "cniVersion": "1.0.0", "name": "net",
        "ipam": {
            "type": "plexus-ipam", "range": range, "network_name": network,
            "kubernetes": {"kubeconfig": env.cluster.sa_kubeconfig(), "namespace": NS},
        }
    })
    .to_string();
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let client = AgentClient::connect(socket, Duration::from_secs(5))
            .await
            .expect("the agent");
        let pods = std::sync::Arc::new(std::sync::Mutex::new(pods));
        let mut tasks = Vec::new();
        for _ in 0..in_flight {
            let (mut client, pods, config) = (client.clone(), pods.clone(), config.clone());
            tasks.push(tokio::spawn(async move {
                let mut done = Vec::new();
                loop {
                    let Some(pod) = pods.lock().unwrap().pop() else {
                        break;
                    };
                    let request = IpamRequest {
                        config_json: config.clone(),
                        container_id: format!("ctr-{pod}"),
                        ifname: "net1".into(),
                        pod_namespace: "default".into(),
                        pod_name: pod.clone(),
                        pod_uid: format!("uid-{pod}"),
                        node_name: "node-a".into(),
                    };
                    // Asked again while the answer is code 11 (try again later: an API
                    // call timed out on a busy machine), as a runtime does, at most 5 times.
                    let mut tries = 0;
                    let answer = loop {
                        let request = request.clone();
                        let answer = if release {
                            client.release(request).await.map(|r| r.map(|()| None))
                        } else {
                            client.allocate(request).await.map(|r| r.map(Some))
                        };
                        tries += 1;
                        match &answer {
                            Ok(Err(e)) if e.code == 11 && tries < 5 => continue,
                            _ => break answer,
                        }
                    };
                    let outcome = match answer {
                        Err(e) => Err(e.to_string()),
                        Ok(Err(e)) => Err(e.msg),
                        Ok(Ok(result)) => Ok(result.map_or(String::new(), |r| {
                            let address = r["ips"][0]["address"].as_str().unwrap_or("");
                            address.split('/').next().unwrap_or("").to_string()
                        })),
                    };
                    done.push((pod, outcome));
                }
                done
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.expect("a driver task"));
        }
        all
    })
}

/// Runs the DELs `calls` as a runtime does: again while one fails with code 11 (try again
/// later, e.g. an API call that timed out on a busy machine), at most 5 times.
fn dels_retried(env: &Env, calls: &[(&str, String, &Value)]) {
    let mut left = calls.to_vec();
    for _ in 0..5 {
        let outcomes = burst(env, "DEL", &left);
        let mut again = Vec::new();
        for (call, o) in left.into_iter().zip(outcomes) {
            if o.code != Some(0) {
                assert_eq!(o.json["code"], 11, "{}: {}", o.pod, o.stdout);
                again.push(call);
            }
        }
        if again.is_empty() {
            return;
        }
        left = again;
    }
    panic!("DELs still failing after 5 tries: {left:?}");
}

/// The mixed load under real load: 160 allocations driven into the agent's socket, 16 in
/// flight, while rounds of plain `plexus-ipam` processes allocate on the same node and network
/// (and another node's on the same network): every address unique, the blocks holding exactly
/// the live allocations; then everything released, half of the agent's through plain DELs.
#[test]
fn agent_under_load_with_plain_plugins() {
    let Some(env) = Env::start() else { return };
    let agent = env.agent("node-a");
    let (network, range) = ("loaded", "10.70.0.0/22");
    let plain = env.conf(network, range, &env.dir.path().join("none.sock"));
    let pods: Vec<String> = (0..160).map(|i| format!("load{i}")).collect();
    let (driven, plain_added) = std::thread::scope(|scope| {
        let driver =
            scope.spawn(|| through_socket(&env, agent.socket(), network, range, pods, 16, false));
        let mut plain_added = Vec::new();
        for round in 0..3 {
            let mut calls = Vec::new();
            for i in 0..12 {
                calls.push(("node-a", format!("r{round}-plain{i}"), &plain));
            }
            for i in 0..4 {
                calls.push(("node-b", format!("r{round}-other{i}"), &plain));
            }
            plain_added.extend(burst(&env, "ADD", &calls));
        }
        (driver.join().expect("the driver"), plain_added)
    });
    plain_added.iter().for_each(Outcome::ok);
    let mut live = unique(&plain_added);
    for (pod, outcome) in &driven {
        let address = outcome.as_ref().unwrap_or_else(|e| panic!("{pod}: {e}"));
        let container = format!("ctr-{pod}");
        assert!(
            live.insert(address.clone(), container).is_none(),
            "{address} handed out twice"
        );
    }
    assert_eq!(live.len(), 160 + 48);
    assert_eq!(env.allocations(network), live);
    let ping = agent.ping();
    eprintln!(
        "under load: {} block writes carried {} changes ({} conflicts)",
        ping.block_writes, ping.block_changes, ping.block_conflicts
    );

    // Everything released: the driven pods alternately through the agent and plain DELs.
    let (via_agent, via_plain): (Vec<_>, Vec<_>) = driven
        .iter()
        .map(|(pod, _)| pod.clone())
        .enumerate()
        .partition(|(n, _)| n % 2 == 0);
    let via_agent: Vec<String> = via_agent.into_iter().map(|(_, p)| p).collect();
    let mut dels: Vec<(&str, String, &Value)> = via_plain
        .into_iter()
        .map(|(_, p)| ("node-a", p, &plain))
        .collect();
    for o in &plain_added {
        let node = if o.pod.contains("other") {
            "node-b"
        } else {
            "node-a"
        };
        dels.push((node, o.pod.clone(), &plain));
    }
    let released = std::thread::scope(|scope| {
        let driver = scope
            .spawn(|| through_socket(&env, agent.socket(), network, range, via_agent, 16, true));
        dels_retried(&env, &dels);
        driver.join().expect("the driver")
    });
    for (pod, outcome) in released {
        outcome.unwrap_or_else(|e| panic!("DEL {pod}: {e}"));
    }
    assert_eq!(env.allocations(network), BTreeMap::new());
}

/// The agent killed mid-burst: every ADD succeeds or fails with a CNI error JSON; after the
/// runtime's DEL of the failed ones, the blocks hold exactly the successful ADDs; later calls
/// go through the fallback.
#[test]
fn agent_killed_mid_burst() {
    let Some(env) = Env::start() else { return };
    let mut agent = env.agent("node-a");
    let conf = env.conf("killed", "10.64.0.0/24", agent.socket());
    let pods: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    // Killed once the agent has written a few of them.
    let added = burst_with_fault(&env, &mut agent, &pods, &conf, 4, Agent::kill);
    let failed = clean_failures(&added, &conf);
    eprintln!(
        "agent killed mid-burst: {} of 40 ADDs failed cleanly",
        failed.len()
    );
    // The runtime's DEL after a failed ADD (the agent is gone: the plugin does it itself).
    burst(&env, "DEL", &failed).iter().for_each(Outcome::ok);
    assert_eq!(env.allocations("killed"), unique(&added));

    // Later calls go through the fallback (a stale socket file refuses).
    let later = burst(&env, "ADD", &[("node-a", "later".into(), &conf)]);
    later[0].ok();
    assert!(env
        .allocations("killed")
        .contains_key(&later[0].address().unwrap()));
}

/// Every outcome is a success or a clean CNI error (code and message); the failed ones, as
/// the runtime's DELs would name them.
fn clean_failures<'a>(
    outcomes: &[Outcome],
    conf: &'a Value,
) -> Vec<(&'static str, String, &'a Value)> {
    let mut failed = Vec::new();
    for o in outcomes {
        if o.code != Some(0) {
            assert!(
                o.json["code"].as_u64().is_some() && o.json["msg"].is_string(),
                "{} failed without a CNI error: {}",
                o.pod,
                o.stdout
            );
            failed.push(("node-a", o.pod.clone(), conf));
        }
    }
    failed
}

/// Starts ADDs of `pods` at once on node-a; waits until the agent has written `written`
/// changes (or 30 s passed), then runs `fault`; returns the outcomes.
fn burst_with_fault(
    env: &Env,
    agent: &mut Agent,
    pods: &[String],
    conf: &Value,
    written: u64,
    fault: impl FnOnce(&mut Agent),
) -> Vec<Outcome> {
    let children: Vec<(String, Child)> = pods
        .iter()
        .map(|pod| (pod.clone(), env.spawn("node-a", "ADD", pod, conf)))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent.try_ping().is_none_or(|p| p.block_changes < written) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    fault(agent);
    children
        .into_iter()
        .map(|(pod, child)| wait(&pod, child))
        .collect()
}

/// `count` more ADDs on node-a, all successful and through `agent` (its counters), their
/// addresses added to `live`, which the blocks of `network` then hold exactly.
fn served_again(
    env: &Env,
    agent: &Agent,
    conf: &Value,
    network: &str,
    live: &mut BTreeMap<String, String>,
    count: u64,
) {
    let before = agent.ping().block_changes;
    let later: Vec<_> = (0..count)
        .map(|i| ("node-a", format!("{network}-later{i}"), conf))
        .collect();
    let again = burst(env, "ADD", &later);
    again.iter().for_each(Outcome::ok);
    for (address, container) in unique(&again) {
        assert!(
            live.insert(address.clone(), container).is_none(),
            "{address} twice"
        );
    }
    assert_eq!(env.allocations(network), *live);
    let after = agent.ping();
    assert!(after.block_changes >= before + count, "{after:?}");
}

/// DEL of every pod of `live` (container → pod) on node-a: the blocks of `network` are empty.
fn released_all(env: &Env, conf: &Value, network: &str, live: &BTreeMap<String, String>) {
    let all: Vec<_> = live
        .values()
        .map(|c| ("node-a", c.trim_start_matches("ctr-").to_string(), conf))
        .collect();
    burst(env, "DEL", &all).iter().for_each(Outcome::ok);
    assert_eq!(env.allocations(network), BTreeMap::new());
}

/// The agent restarted mid-burst: every ADD succeeds or fails cleanly, the blocks hold exactly
/// the successful ones after the runtime's DEL of the others, later calls go through the new
/// agent (not the fallback), the fallbacks taken meanwhile are counted by it, and DEL of all
/// leaves nothing.
#[test]
fn agent_restarted_mid_use() {
    let Some(env) = Env::start() else { return };
    let mut agent = env.agent("node-a");
    let conf = env.conf("restarted", "10.66.0.0/24", agent.socket());
    let pods: Vec<String> = (0..32).map(|i| format!("s{i}")).collect();
    let added = burst_with_fault(&env, &mut agent, &pods, &conf, 4, |agent| {
        agent.kill();
        *agent = env.agent("node-a");
    });
    let failed = clean_failures(&added, &conf);
    eprintln!(
        "agent restarted mid-burst: {} of 32 ADDs failed cleanly",
        failed.len()
    );
    burst(&env, "DEL", &failed).iter().for_each(Outcome::ok);
    let mut live = unique(&added);
    assert_eq!(env.allocations("restarted"), live);

    // Later calls go on, through the new agent.
    served_again(&env, &agent, &conf, "restarted", &mut live, 8);
    let metrics = agent.metrics();
    let served = plexus_tests::agent::metric_value(
        &metrics,
        "plexus_cni_calls_total{verb=\"ADD\",result=\"success\"}",
    );
    assert!(served >= 8.0, "{metrics}");
    let fell_back: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("plexus_fallbacks_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    eprintln!("fallbacks counted by the new agent: {fell_back}");
    assert!(metrics.contains("plexus_api_requests_total{verb=\"update\",status=\"success\"}"));

    released_all(&env, &conf, "restarted", &live);
}

/// The API server lost (killed) while the agent holds queued allocations: every caller gets
/// an answer, a success only if the write holding its address succeeded (the blocks hold
/// exactly the successes once the server is back), else a clean CNI error; nothing leaks
/// after the runtime's DELs; the agent serves again once the server is back.
#[test]
fn apiserver_lost_with_queued_allocations() {
    let Some(mut env) = Env::start() else { return };
    let mut agent = env.agent("node-a");
    let conf = env.conf("lost", "10.68.0.0/24", agent.socket());
    let pods: Vec<String> = (0..32).map(|i| format!("l{i}")).collect();
    let added = burst_with_fault(&env, &mut agent, &pods, &conf, 4, |_| {
        env.cluster.kill_apiserver()
    });
    let failed = clean_failures(&added, &conf);
    eprintln!(
        "API server lost mid-burst: {} of 32 ADDs failed cleanly",
        failed.len()
    );
    assert!(
        failed.iter().all(|(_, pod, _)| {
            let o = added.iter().find(|o| &o.pod == pod).expect("an outcome");
            o.json["code"] == 11 || o.json["code"] == 121 || o.json["code"] == 5
        }),
        "{added:?}"
    );
    env.cluster
        .start_apiserver_again()
        .expect("the API server back");
    burst(&env, "DEL", &failed).iter().for_each(Outcome::ok);
    let mut live = unique(&added);
    assert_eq!(env.allocations("lost"), live);

    // The agent serves again.
    served_again(&env, &agent, &conf, "lost", &mut live, 4);
    let failures = plexus_tests::agent::metric_value(
        &agent.metrics(),
        "plexus_api_requests_total{verb=\"update\",status=\"unreachable\"}",
    );
    eprintln!("block updates that found no API server: {failures}");

    released_all(&env, &conf, "lost", &live);
}

/// Housekeeping on a schedule: the agent's IPAM GC releases the allocation of a pod that does
/// not exist and keeps the one of a pod that does; each run is counted, and the pool usage
/// of the network is set.
#[test]
fn housekeeping_collects_gone_pods() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::PostParams;
    let Some(env) = Env::start() else { return };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "kept", "namespace": "default"},
        "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "pause"}]}
    }))
    .expect("a pod");
    let uid = runtime.block_on(async {
        let api: Api<Pod> = Api::namespaced(env.cluster.admin_client(), "default");
        let created = api
            .create(&PostParams::default(), &pod)
            .await
            .expect("create the pod");
        created.metadata.uid.expect("a UID")
    });
    let socket = env.dir.path().join("run-hk/plexusd.sock");
    let agent = Agent::start_with(
        &plexus_tests::plexus_bin_dir().join("plexusd"),
        "node-a",
        &socket,
        &env.hints(),
        &env.dir.path().join("plexusd-hk.log"),
        &[
            "--housekeeping-interval-secs".as_ref(),
            "1".as_ref(),
            "--cache-dir".as_ref(),
            env.dir.path().join("cache").as_os_str(),
        ],
        &[],
    );
    let conf = env.conf("hk", "10.72.0.0/24", agent.socket());
    let kept = wait("kept", env.spawn_uid("node-a", "ADD", "kept", &uid, &conf));
    let ghost = burst(&env, "ADD", &[("node-a", "ghost".into(), &conf)]);
    kept.ok();
    ghost[0].ok();
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.allocations("hk").len() > 1 {
        assert!(
            Instant::now() < deadline,
            "GC released nothing: {}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let left = env.allocations("hk");
    assert_eq!(
        left.values().collect::<Vec<_>>(),
        vec!["ctr-kept"],
        "{left:?}"
    );
    let metrics = agent.metrics();
    assert!(
        plexus_tests::agent::metric_value(
            &metrics,
            "plexus_housekeeping_released_total{job=\"ipam-gc\"}"
        ) >= 1.0,
        "{metrics}"
    );
    assert!(
        metrics.contains("plexus_housekeeping_runs_total{job=\"cache-prune\",result=\"success\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("plexus_ipam_pool_size{network=\"hk\"} 254"),
        "{metrics}"
    );
}
