//! `plexus` through the node agent `plexusd`, against a real kube-apiserver 1.20 with real
//! `plexus`, `plexusd` and reference plugins: the same network-status as without the agent and
//! one API request (the agent's PATCH) per warm ADD; a pod created a moment before its ADD, a
//! pod asked for with another UID (read live) and a NAD created a moment before; the
//! `AddedInterface` Events and the Warning of a failed ADD; the agent absent or killed (plexus
//! falls back and succeeds); a restarted agent starting from its snapshot.
//!
//! The plugins run in the host's own namespace (with names of their own) so that `plexus`
//! reaches the API server on the host's loopback. Needs the cached kube-apiserver (`cargo xtask
//! apiserver`); without it the test is skipped, except in CI.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::kube::{
    plexus_config, pod_cni_args, pod_object, write_cluster_network, Kube, PodCall, NETWORKS,
};
use common::{Lab, Outcome};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, ListParams};
use plexus_agent_api::proto::{PodReply, PodRequest};
use plexus_agent_api::AgentClient;
use plexus_tests::agent::Agent;
use plexus_tests::{cni_plugin_dir, plexus_bin_dir, root_or_skip, unique_name, TestPod};
use serde_json::{json, Value};

/// The node the agent serves and the pods are on.
const NODE: &str = "agent-plexus-node";

/// A node with a cluster network, an agent reading the cluster as admin, and a scratch
/// directory.
struct Node {
    env: Kube,
    lab: Lab,
    cluster_file: PathBuf,
    conf_dir: PathBuf,
    agent: Agent,
}

impl Node {
    fn start(env: Kube) -> Node {
        let lab = Lab::on_host();
        let conf_dir = lab.dir.path().join("net.d");
        let cluster_file = write_cluster_network(&conf_dir, &lab.bridge("1.0.0"));
        std::fs::create_dir_all(lab.dir.path().join("bin")).unwrap();
        let agent = Node::start_agent(&env, &lab);
        Node {
            env,
            lab,
            cluster_file,
            conf_dir,
            agent,
        }
    }

    fn start_agent(env: &Kube, lab: &Lab) -> Agent {
        Agent::start_kube(
            &plexus_bin_dir().join("plexusd"),
            NODE,
            &lab.dir.path().join("run/plexusd.sock"),
            &lab.dir.path().join("hints"),
            &lab.dir.path().join("plexusd.log"),
            &env.cluster.kubeconfig,
        )
    }

    /// Plexus's configuration asking the agent at `socket`.
    fn config(&self, socket: &Path) -> Value {
        plexus_config(
            &self.env,
            &self.cluster_file,
            &self.lab.cache_dir(),
            &self.lab.dir.path().join("bin"),
            json!({
                "confDir": self.conf_dir, "apiTimeoutSeconds": 2,
                "agentSocket": socket, "agentConnectTimeoutMs": 200,
            }),
        )
    }

    /// The configuration asking the running agent.
    fn with_agent(&self) -> Value {
        self.config(self.agent.socket())
    }

    /// The configuration naming a socket nobody listens on.
    fn without_agent(&self) -> Value {
        self.config(&self.lab.dir.path().join("nobody/plexusd.sock"))
    }

    /// A pod on the node with these annotations; its UID.
    fn pod(&self, namespace: &str, name: &str, annotations: &[(&str, &str)]) -> String {
        let mut pod = pod_object(name, annotations, "c", &[]);
        pod.spec.as_mut().unwrap().node_name = Some(NODE.into());
        self.env.create_pod(namespace, &pod)
    }

    /// Deletes a pod at once.
    fn delete_pod(&self, namespace: &str, name: &str) {
        let api: Api<Pod> = Api::namespaced(self.env.admin.clone(), namespace);
        let now = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        };
        self.env
            .rt
            .block_on(api.delete(name, &now))
            .expect("delete pod");
    }

    /// `plexus` `command` for pod `namespace/name` of `uid` in `netns`.
    fn cni(
        &self,
        command: &str,
        config: &Value,
        netns: &TestPod,
        pod: (&str, &str, &str),
    ) -> Outcome {
        let (namespace, name, uid) = pod;
        let args = pod_cni_args(namespace, name, uid, None);
        let path = cni_plugin_dir();
        let sandbox = netns.path.file_name().unwrap().to_string_lossy();
        PodCall {
            container: &format!("c-{name}-{sandbox}"),
            netns: netns.path.to_str().unwrap(),
            cni_path: path.to_str().unwrap(),
            args: &args,
        }
        .run(command, config, &[])
    }

    /// The agent's answer for a pod.
    fn ask(&self, namespace: &str, name: &str, uid: &str) -> PodReply {
        let runtime = plexus_tests::runtime();
        runtime.block_on(async {
            let mut client = AgentClient::connect(self.agent.socket(), Duration::from_secs(2))
                .await
                .expect("the agent answers");
            client
                .get_pod(PodRequest {
                    namespace: namespace.into(),
                    name: name.into(),
                    uid: uid.into(),
                    multus_namespace: "kube-system".into(),
                    ..PodRequest::default()
                })
                .await
                .expect("GetPod")
        })
    }

    /// Waits until the agent's watch has the pod of `uid`.
    fn wait_cached(&self, namespace: &str, name: &str, uid: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let reply = self.ask(namespace, name, uid);
            if reply.pod_source == "cache" && reply.uid == uid {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the agent's watch never had {namespace}/{name}: {reply:?}\n{}",
                self.agent.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The agent's requests (user agent `plexusd/…`) of verb get or patch after the first
    /// `from` audit events, as (verb, resource, name).
    fn agent_requests(&self, from: usize) -> Vec<(String, String, String)> {
        self.env
            .cluster
            .audit_events()
            .into_iter()
            .skip(from)
            .filter(|e| {
                e["userAgent"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("plexusd/")
                    && matches!(e["verb"].as_str(), Some("get" | "patch"))
            })
            .map(|e| common::kube::request(&e))
            .collect()
    }

    /// The Events of pod `namespace/name` with `reason`, waiting up to 10 s for `count` of them.
    fn events(&self, namespace: &str, name: &str, reason: &str, count: usize) -> Vec<Event> {
        let api: Api<Event> = Api::namespaced(self.env.admin.clone(), namespace);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let events: Vec<Event> = self
                .env
                .rt
                .block_on(api.list(&ListParams::default()))
                .expect("list events")
                .items
                .into_iter()
                .filter(|e| {
                    e.involved_object.name.as_deref() == Some(name)
                        && e.reason.as_deref() == Some(reason)
                })
                .collect();
            if events.len() >= count || Instant::now() > deadline {
                return events;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn plexus_through_the_agent() {
    if !root_or_skip() {
        return;
    }
    let Some(env) = Kube::start() else {
        return;
    };
    let mut node = Node::start(env);
    node.env.namespace("ap");
    node.env
        .nad("ap", "storage", &node.lab.macvlan("1.0.0", "storage", 21));
    node.env
        .nad("ap", "backup", &node.lab.macvlan("1.0.0", "backup", 31));

    same_status_as_without_the_agent(&node);
    fresh_pod_and_fresh_nad(&node);
    another_uid_is_read_live(&node);
    failed_attachment_warning(&node);
    restart_from_the_snapshot(&mut node);
    agent_killed_falls_back(&mut node);
}

/// Two pods alike, one ADD without the agent and one through it: the same network-status; the
/// warm ADD through the agent makes one API request (the agent's PATCH) and plexus none; each
/// attachment gets its AddedInterface Event.
fn same_status_as_without_the_agent(node: &Node) {
    let networks = [(NETWORKS, "storage, ap/backup@data")];
    let plain_uid = node.pod("ap", "plain", &networks);
    let warm_uid = node.pod("ap", "warm", &networks);
    node.wait_cached("ap", "warm", &warm_uid);

    let plain = TestPod::new("pxap");
    node.cni(
        "ADD",
        &node.without_agent(),
        &plain,
        ("ap", "plain", &plain_uid),
    )
    .ok();
    let warm = TestPod::new("pxaw");
    let from = node.env.cluster.audit_events().len();
    node.cni("ADD", &node.with_agent(), &warm, ("ap", "warm", &warm_uid))
        .ok();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut agent = node.agent_requests(from);
    while agent.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        agent = node.agent_requests(from);
    }
    let requests = node.env.plexus_requests(from);
    assert!(
        requests.is_empty(),
        "plexus itself made requests: {requests:?}"
    );
    assert_eq!(
        agent,
        [("patch".into(), "pods".into(), "warm".into())],
        "one request per warm ADD"
    );

    let shape = |status: Value| -> Vec<(String, String, bool, String)> {
        status
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let ip = e["ips"][0].as_str().unwrap_or("");
                (
                    e["name"].as_str().unwrap().to_string(),
                    e["interface"].as_str().unwrap().to_string(),
                    e["default"] == true,
                    ip.rsplit_once('.')
                        .map(|(net, _)| net)
                        .unwrap_or("")
                        .to_string(),
                )
            })
            .collect()
    };
    let plain_status = shape(node.env.network_status("ap", "plain"));
    assert_eq!(plain_status, shape(node.env.network_status("ap", "warm")));
    assert_eq!(plain_status.len(), 3, "{plain_status:?}");

    let added = node.events("ap", "warm", "AddedInterface", 3);
    let mut messages: Vec<String> = added.iter().filter_map(|e| e.message.clone()).collect();
    messages.sort();
    assert_eq!(messages.len(), 3, "{messages:?}\n{}", node.agent.log_text());
    assert!(
        messages[0].starts_with("Add data [10.31.0."),
        "{messages:?}"
    );
    assert!(messages[0].ends_with("/24] from ap/backup"), "{messages:?}");
    assert!(
        messages[1].starts_with("Add eth0 [10.10.0."),
        "{messages:?}"
    );
    assert!(
        messages[2].starts_with("Add net1 [10.21.0."),
        "{messages:?}"
    );
    assert!(messages[2].ends_with(" from ap/storage"), "{messages:?}");
    assert_eq!(added[0].type_.as_deref(), Some("Normal"));
    assert_eq!(
        added[0].involved_object.uid.as_deref(),
        Some(warm_uid.as_str())
    );

    node.cni(
        "DEL",
        &node.without_agent(),
        &plain,
        ("ap", "plain", &plain_uid),
    )
    .ok();
    node.cni("DEL", &node.with_agent(), &warm, ("ap", "warm", &warm_uid))
        .ok();
    node.lab.assert_clean(Some(&warm));
}

/// A pod created just before its ADD, naming a NAD created just before: served right.
fn fresh_pod_and_fresh_nad(node: &Node) {
    let nad = unique_name("fresh");
    node.env
        .nad("ap", &nad, &node.lab.macvlan("1.0.0", &nad, 22));
    let uid = node.pod("ap", "fresh", &[(NETWORKS, &nad)]);
    let pod = TestPod::new("pxaf");
    node.cni("ADD", &node.with_agent(), &pod, ("ap", "fresh", &uid))
        .ok();
    let status = node.env.network_status("ap", "fresh");
    assert_eq!(status[1]["name"], format!("ap/{nad}"), "{status:#}");
    assert!(status[1]["ips"][0]
        .as_str()
        .unwrap()
        .starts_with("10.22.0."));
    node.cni("DEL", &node.with_agent(), &pod, ("ap", "fresh", &uid))
        .ok();
    node.lab.assert_clean(Some(&pod));
}

/// A pod asked for with another UID than the cache has is read live; a pod re-created under
/// its name gets its ADD with its new UID.
fn another_uid_is_read_live(node: &Node) {
    let old = node.pod("ap", "again", &[(NETWORKS, "storage")]);
    node.wait_cached("ap", "again", &old);
    let reply = node.ask("ap", "again", "some-other-uid");
    assert_eq!(reply.pod_source, "live", "{reply:?}");
    assert_eq!(reply.uid, old);

    node.delete_pod("ap", "again");
    let new = node.pod("ap", "again", &[(NETWORKS, "storage")]);
    let pod = TestPod::new("pxau");
    node.cni("ADD", &node.with_agent(), &pod, ("ap", "again", &new))
        .ok();
    assert_eq!(
        node.env.network_status("ap", "again")[1]["name"],
        "ap/storage"
    );

    // An ADD for the old pod is refused (code 3), as without the agent.
    let stale = TestPod::new("pxas");
    let outcome = node.cni("ADD", &node.with_agent(), &stale, ("ap", "again", &old));
    assert_eq!(outcome.error_code(), 3, "{outcome:?}");
    node.cni("DEL", &node.with_agent(), &pod, ("ap", "again", &new))
        .ok();
    node.lab.assert_clean(Some(&pod));
}

/// A failed ADD (a NAD that does not exist): the same CNI error as without the agent, and a
/// Warning Event on the pod; a failed delegate's Warning names its attachment.
fn failed_attachment_warning(node: &Node) {
    let uid = node.pod("ap", "broken", &[(NETWORKS, "storage, nowhere")]);
    let pod = TestPod::new("pxab");
    let with = node.cni("ADD", &node.with_agent(), &pod, ("ap", "broken", &uid));
    let without = node.cni("ADD", &node.without_agent(), &pod, ("ap", "broken", &uid));
    assert_eq!(with.error_code(), 7, "{with:?}");
    assert_eq!(with.error_code(), without.error_code());
    let warnings = node.events("ap", "broken", "AttachmentFailed", 1);
    assert!(
        !warnings.is_empty(),
        "no Warning: {}",
        node.agent.log_text()
    );
    assert_eq!(warnings[0].type_.as_deref(), Some("Warning"));
    let message = warnings[0].message.clone().unwrap_or_default();
    assert!(message.contains("ap/nowhere"), "{message}");
    node.cni("DEL", &node.without_agent(), &pod, ("ap", "broken", &uid))
        .ok();
    node.lab.assert_clean(Some(&pod));

    // A delegate that fails (its macvlan master does not exist): the Warning names the
    // attachment, and the ADD is rolled back.
    let mut bad = node.lab.macvlan("1.0.0", "bad", 23);
    bad["plugins"][0]["master"] = json!("pxnomaster0");
    node.env.nad("ap", "bad", &bad);
    let uid = node.pod("ap", "failing", &[(NETWORKS, "bad")]);
    let pod = TestPod::new("pxaf");
    let outcome = node.cni("ADD", &node.with_agent(), &pod, ("ap", "failing", &uid));
    assert_ne!(outcome.error_code(), 0, "{outcome:?}");
    let warnings = node.events("ap", "failing", "AttachmentFailed", 1);
    let message = warnings
        .first()
        .and_then(|w| w.message.clone())
        .unwrap_or_default();
    assert!(
        message.starts_with("Add net1 from ap/bad failed: "),
        "{message:?}"
    );
    node.cni("DEL", &node.with_agent(), &pod, ("ap", "failing", &uid))
        .ok();
    node.lab.assert_clean(Some(&pod));
}

/// A restarted agent loads its snapshot and serves the pods it had cached (the UID asked for
/// only); ADD through it works at once.
fn restart_from_the_snapshot(node: &mut Node) {
    let uid = node.pod("ap", "kept", &[(NETWORKS, "backup")]);
    node.wait_cached("ap", "kept", &uid);
    let snapshot = node.lab.dir.path().join("run/plexusd-cache.json");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&snapshot).is_ok_and(|s| s.contains(&uid)) {
        assert!(Instant::now() < deadline, "no snapshot with the pod");
        std::thread::sleep(Duration::from_millis(100));
    }
    node.agent.kill();
    node.agent = Node::start_agent(&node.env, &node.lab);
    let reply = node.ask("ap", "kept", &uid);
    assert!(
        matches!(reply.pod_source.as_str(), "snapshot" | "cache"),
        "{reply:?}"
    );
    assert_eq!(node.ask("ap", "kept", "another-uid").pod_source, "live");
    let pod = TestPod::new("pxak");
    node.cni("ADD", &node.with_agent(), &pod, ("ap", "kept", &uid))
        .ok();
    node.cni("DEL", &node.with_agent(), &pod, ("ap", "kept", &uid))
        .ok();
    node.lab.assert_clean(Some(&pod));
}

/// The agent killed (its socket left behind, refusing): plexus falls back and succeeds.
fn agent_killed_falls_back(node: &mut Node) {
    let uid = node.pod("ap", "alone", &[(NETWORKS, "storage")]);
    node.agent.kill();
    let pod = TestPod::new("pxaa");
    let from = node.env.cluster.audit_events().len();
    node.cni("ADD", &node.with_agent(), &pod, ("ap", "alone", &uid))
        .ok();
    let mut requests = node.env.plexus_requests_until(from, "patch");
    requests.sort();
    assert_eq!(
        requests,
        [
            (
                "get".into(),
                "network-attachment-definitions".into(),
                "storage".into()
            ),
            ("get".into(), "pods".into(), "alone".into()),
            ("patch".into(), "pods".into(), "alone".into()),
        ],
        "plexus did the work itself"
    );
    assert_eq!(
        node.env.network_status("ap", "alone")[1]["name"],
        "ap/storage"
    );
    node.cni("DEL", &node.with_agent(), &pod, ("ap", "alone", &uid))
        .ok();
    node.lab.assert_clean(Some(&pod));
}
