//! Hot-plug end to end: pods made by containerd's CRI plugin with `plexus` as its CNI plugin, a
//! real kube-apiserver, and the real `plexusd` watching the node's pods. Editing a running
//! pod's networks annotation attaches and detaches its interfaces; the network-status follows
//! with one PATCH; bad edits leave the pod alone and write a Warning Event; an agent killed
//! between a delegate's ADD and the status PATCH converges after a restart; the runtime's DEL
//! leaves nothing of what was hot-plugged.
//!
//! containerd, the plugins and the agent run in the host's own namespace (with links named for
//! this test, removed at the end), because they must reach the API server on the host's loopback.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::kube::{pod_object, Kube, NETWORKS};
use common::Lab;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use plexus::links;
use plexus_tests::agent::Agent;
use plexus_tests::cri::Containerd;
use plexus_tests::{cluster, cni_plugin_dir, plexus_bin_dir, root_or_skip, unique_name};
use serde_json::{json, Value};

/// The CNI version containerd 1.6 (libcni 1.1) speaks at most.
const CNI_VERSION: &str = "1.0.0";
/// The pods' namespace on the API server.
const NAMESPACE: &str = "hotplug";
/// The pod annotation that turns hot-plug off for one pod.
const HOTPLUG_OFF: &str = "plexus.cni.dev/hotplug";
/// How long a test waits for the agent to reach a state (steady state takes well under 1 s).
const WAIT: Duration = Duration::from_secs(10);

/// The node: the API server, a lab on the host, containerd running `plexus`, and the agent.
struct Node {
    kube: Kube,
    lab: Lab,
    name: String,
    containerd: Containerd,
    conflist: PathBuf,
    agent: Option<Agent>,
}

impl Node {
    fn start(apiserver: &Path) -> Node {
        let kube = Kube::start_with(apiserver);
        let lab = Lab::on_host();
        kube.namespace(NAMESPACE);
        for (name, octet) in [("red", 41), ("blue", 42), ("green", 43)] {
            kube.nad(NAMESPACE, name, &lab.macvlan(CNI_VERSION, name, octet));
        }
        // A network whose delegate fails after its address was allocated: macvlan and
        // host-local succeed, then tuning refuses a sysctl that does not exist.
        let mut broken = lab.macvlan(CNI_VERSION, "broken", 44);
        let tuning = json!({"type": "tuning", "sysctl": {"net.ipv4.conf.IFNAME.no_such_key": "1"}});
        broken["plugins"].as_array_mut().unwrap().push(tuning);
        kube.nad(NAMESPACE, "broken", &broken);
        // A network of another namespace, which namespace isolation refuses to these pods.
        kube.namespace("elsewhere");
        kube.nad("elsewhere", "red", &lab.macvlan(CNI_VERSION, "red", 45));
        let conf_dir = lab.dir.path().join("net.d");
        let bin_dir = lab.dir.path().join("bin");
        let conflist = write_configs(&lab, &kube, &conf_dir, &bin_dir);
        let containerd = Containerd::start(&bin_dir, &conf_dir);
        assert!(containerd.network_ready().unwrap(), "CNI config not loaded");
        let mut node = Node {
            kube,
            lab,
            name: unique_name("hpnode"),
            containerd,
            conflist,
            agent: None,
        };
        node.start_agent(&[]);
        node
    }

    /// (Re)starts the agent with `env` added to its environment.
    fn start_agent(&mut self, env: &[(&str, &str)]) {
        let dir = self.lab.dir.path();
        self.agent = Some(Agent::start_hotplug(
            &self.name,
            &dir.join("plexusd.sock"),
            &dir.join("hints"),
            &dir.join("plexusd.log"),
            &self.conflist,
            env,
        ));
    }

    fn agent_log(&self) -> String {
        std::fs::read_to_string(self.lab.dir.path().join("plexusd.log")).unwrap_or_default()
    }

    /// Creates pod `name` on this node with these annotations and runs its sandbox; returns
    /// the sandbox ID and its network namespace.
    fn run_pod(&self, name: &str, annotations: &[(&str, &str)]) -> (String, PathBuf) {
        let mut pod = pod_object(name, annotations, "c", &[]);
        pod.spec.as_mut().unwrap().node_name = Some(self.name.clone());
        let uid = self.kube.create_pod(NAMESPACE, &pod);
        let annotations: BTreeMap<String, String> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let id = self
            .containerd
            .run_pod_sandbox(name, NAMESPACE, &uid, &annotations, &[])
            .unwrap_or_else(|e| panic!("RunPodSandbox: {}", e.message()));
        let status = self.containerd.pod_sandbox_status(&id).unwrap();
        (id, status.netns.expect("the sandbox's netns"))
    }

    /// Sets (or, with `None`, removes) annotation `key` of pod `name`.
    fn annotate(&self, name: &str, key: &str, value: Option<&str>) {
        let api: Api<Pod> = Api::namespaced(self.kube.admin.clone(), NAMESPACE);
        let patch = json!({"metadata": {"annotations": {key: value}}});
        self.kube
            .rt
            .block_on(api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)))
            .expect("annotate the pod");
    }

    /// The pod's network-status as (name, interface) pairs, in order.
    fn status(&self, name: &str) -> Vec<(String, String)> {
        let status = self
            .kube
            .try_network_status(NAMESPACE, name)
            .unwrap_or(Value::Null);
        status
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                let text = |v: &Value| v.as_str().unwrap_or("").to_string();
                (text(&e["name"]), text(&e["interface"]))
            })
            .collect()
    }

    /// Waits until the pod's network-status is `want`; panics after [`WAIT`].
    fn wait_status(&self, name: &str, want: &[(&str, &str)]) -> Duration {
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(n, i)| (n.to_string(), i.to_string()))
            .collect();
        let start = Instant::now();
        loop {
            let got = self.status(name);
            if got == want {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < WAIT,
                "network-status of {name}: {got:?}, not {want:?}\n--- agent log ---\n{}",
                self.agent_log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The Warning Events of pod `name`, as (reason, message).
    fn warnings(&self, name: &str) -> Vec<(String, String)> {
        let api: Api<Event> = Api::namespaced(self.kube.admin.clone(), NAMESPACE);
        let events = self
            .kube
            .rt
            .block_on(api.list(&ListParams::default()))
            .expect("list events");
        events
            .items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
            .collect()
    }

    /// Waits until pod `name` has a Warning whose message contains `text`.
    fn wait_warning(&self, name: &str, text: &str) -> (String, String) {
        let start = Instant::now();
        loop {
            if let Some(w) = self
                .warnings(name)
                .into_iter()
                .find(|(_, m)| m.contains(text))
            {
                return w;
            }
            assert!(
                start.elapsed() < WAIT,
                "no Warning about {text:?} on {name}: {:?}\n--- agent log ---\n{}",
                self.warnings(name),
                self.agent_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The host-local reservations left, of every network.
    fn reservations(&self) -> Vec<String> {
        self.lab.reservations()
    }

    /// The links enslaved to the lab's bridge (the pods' veth ends).
    fn links_on_bridge(&self) -> Vec<String> {
        let Some(bridge) = links::link(None, &self.lab.bridge).unwrap() else {
            return Vec::new();
        };
        links::links(None)
            .unwrap()
            .into_iter()
            .filter(|l| l.master == Some(bridge.index))
            .map(|l| l.name)
            .collect()
    }
}

/// containerd's configuration directory: the cluster network's conflist (a bridge with
/// host-local addresses, standing in for Flannel) and `00-plexus.conflist`, which containerd
/// loads; and its plugin directory (the reference plugins and `plexus`). Returns the path of
/// `00-plexus.conflist`, which the agent reads too.
fn write_configs(lab: &Lab, kube: &Kube, conf_dir: &Path, bin_dir: &Path) -> PathBuf {
    std::fs::create_dir_all(conf_dir).unwrap();
    std::fs::create_dir_all(bin_dir).unwrap();
    for plugin in std::fs::read_dir(cni_plugin_dir()).unwrap().flatten() {
        std::os::unix::fs::symlink(plugin.path(), bin_dir.join(plugin.file_name())).unwrap();
    }
    std::os::unix::fs::symlink(plexus_bin_dir().join("plexus"), bin_dir.join("plexus")).unwrap();
    let cluster_network = lab.write_bridge_conflist(CNI_VERSION, conf_dir.join("10-pods.conflist"));
    let plexus = json!({
        "type": "plexus",
        "kubeconfig": kube.cluster.sa_kubeconfig(),
        "clusterNetwork": cluster_network,
        "cniDir": lab.cache_dir(),
        "binDir": bin_dir,
        "namespaceIsolation": true,
        "capabilities": {"portMappings": true, "io.kubernetes.cri.pod-annotations": true},
    });
    let conflist = json!({"cniVersion": CNI_VERSION, "name": "plexus", "plugins": [plexus]});
    let path = conf_dir.join("00-plexus.conflist");
    std::fs::write(&path, serde_json::to_vec_pretty(&conflist).unwrap()).unwrap();
    path
}

/// The interfaces in `netns`, but `lo`, sorted.
fn interfaces(netns: &Path) -> Vec<String> {
    let mut names: Vec<String> = links::links(Some(netns))
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .filter(|n| n != "lo")
        .collect();
    names.sort();
    names
}

/// The median of some durations.
fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[test]
fn editing_a_running_pods_networks_attaches_and_detaches_its_interfaces() {
    if !root_or_skip() {
        return;
    }
    let Some(apiserver) = cluster::apiserver_or_skip() else {
        return;
    };
    let begin = Instant::now();
    let mut node = Node::start(&apiserver);
    let red = ("hotplug/red", "net1");

    // A pod created with one network.
    let (web_id, web) = node.run_pod("web", &[(NETWORKS, "red")]);
    assert_eq!(interfaces(&web), ["eth0", "net1"]);
    node.wait_status("web", &[("pods", "eth0"), red]);
    assert_eq!(node.links_on_bridge().len(), 1);

    // Add one network, then a second (with a name of its own). Each edit is one PATCH of the
    // pod (its network-status) and one GET of the NAD added.
    let audit_from = node.kube.cluster.audit_events().len();
    node.annotate("web", NETWORKS, Some("red, blue"));
    node.wait_status("web", &[("pods", "eth0"), red, ("hotplug/blue", "net2")]);
    node.kube.plexus_events_until(audit_from, "patch");
    std::thread::sleep(Duration::from_millis(300));
    let requests: Vec<_> = node
        .kube
        .plexus_requests(audit_from)
        .into_iter()
        .filter(|(verb, _, _)| verb != "watch" && verb != "list")
        .collect();
    assert_eq!(
        requests,
        [
            (
                "get".into(),
                "network-attachment-definitions".into(),
                "blue".into()
            ),
            ("patch".into(), "pods".into(), "web".into()),
        ]
    );
    assert_eq!(interfaces(&web), ["eth0", "net1", "net2"]);
    node.annotate("web", NETWORKS, Some("red, blue, green@fast"));
    node.wait_status(
        "web",
        &[
            ("pods", "eth0"),
            red,
            ("hotplug/blue", "net2"),
            ("hotplug/green", "fast"),
        ],
    );
    assert_eq!(interfaces(&web), ["eth0", "fast", "net1", "net2"]);
    assert_eq!(node.reservations().len(), 4, "{:?}", node.reservations());

    // Remove the first: exactly net1 goes, net2 keeps its name.
    node.annotate("web", NETWORKS, Some("blue, green@fast"));
    node.wait_status(
        "web",
        &[
            ("pods", "eth0"),
            ("hotplug/blue", "net2"),
            ("hotplug/green", "fast"),
        ],
    );
    assert_eq!(interfaces(&web), ["eth0", "fast", "net2"]);

    // Remove an unnamed one.
    node.annotate("web", NETWORKS, Some("green@fast"));
    node.wait_status("web", &[("pods", "eth0"), ("hotplug/green", "fast")]);
    assert_eq!(interfaces(&web), ["eth0", "fast"]);
    assert_eq!(node.reservations().len(), 2, "{:?}", node.reservations());
    assert!(
        node.warnings("web").is_empty(),
        "{:?}",
        node.warnings("web")
    );

    // Bad edits: a missing NAD, then an invalid annotation. The pod keeps its interfaces and
    // its network-status, and gets a Warning naming the cause.
    let steady = [("pods", "eth0"), ("hotplug/green", "fast")];
    node.annotate("web", NETWORKS, Some("green@fast, missing"));
    let (reason, message) = node.wait_warning("web", "hotplug/missing does not exist");
    eprintln!("Warning {reason}: {message}");
    assert_eq!(reason, "HotPlugRefused");
    node.annotate(
        "web",
        NETWORKS,
        Some("[{\"name\": \"red\", \"interface\": 5}]"),
    );
    let (reason, message) = node.wait_warning("web", "k8s.v1.cni.cncf.io/networks");
    eprintln!("Warning {reason}: {message}");
    assert_eq!(
        node.status("web"),
        steady.map(|(n, i)| (n.into(), i.into()))
    );
    assert_eq!(interfaces(&web), ["eth0", "fast"]);

    // A network of another namespace, under namespace isolation.
    node.annotate("web", NETWORKS, Some("green@fast, elsewhere/red"));
    let (reason, message) = node.wait_warning("web", "namespace isolation");
    eprintln!("Warning {reason}: {message}");
    assert_eq!(reason, "HotPlugRefused");
    assert_eq!(interfaces(&web), ["eth0", "fast"]);

    // A delegate failure: rolled back, nothing of it left.
    node.annotate("web", NETWORKS, Some("green@fast, broken"));
    let (reason, message) = node.wait_warning("web", "broken");
    eprintln!("Warning {reason}: {message}");
    assert_eq!(reason, "HotPlugFailed");
    assert_eq!(
        node.status("web"),
        steady.map(|(n, i)| (n.into(), i.into()))
    );
    assert_eq!(interfaces(&web), ["eth0", "fast"]);
    assert_eq!(node.reservations().len(), 2, "{:?}", node.reservations());
    node.annotate("web", NETWORKS, Some("green@fast"));

    // Time from the edit to the network-status update, adding and removing a network.
    let mut samples = Vec::new();
    for round in 0..20 {
        let (text, want): (&str, Vec<(&str, &str)>) = if round % 2 == 0 {
            (
                "green@fast, red",
                vec![steady[0], steady[1], ("hotplug/red", "net2")],
            )
        } else {
            ("green@fast", steady.to_vec())
        };
        let start = Instant::now();
        node.annotate("web", NETWORKS, Some(text));
        node.wait_status("web", &want);
        samples.push(start.elapsed());
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!(
        "edit -> network-status: median {:?} of 20 (min {:?}, max {:?}); load average {}",
        median(samples.clone()),
        samples.iter().min().unwrap(),
        samples.iter().max().unwrap(),
        load.trim()
    );
    assert_eq!(interfaces(&web), ["eth0", "fast"]);

    // A pod created without any networks annotation.
    let (plain_id, plain) = node.run_pod("plain", &[]);
    assert_eq!(interfaces(&plain), ["eth0"]);
    node.wait_status("plain", &[("pods", "eth0")]);
    node.annotate("plain", NETWORKS, Some("red"));
    node.wait_status("plain", &[("pods", "eth0"), red]);
    assert_eq!(interfaces(&plain), ["eth0", "net1"]);

    // Opted out: an edit changes nothing.
    node.annotate("plain", HOTPLUG_OFF, Some("false"));
    node.annotate("plain", NETWORKS, Some("red, blue"));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(interfaces(&plain), ["eth0", "net1"]);
    assert_eq!(node.status("plain").len(), 2);
    node.annotate("plain", HOTPLUG_OFF, None);
    node.wait_status("plain", &[("pods", "eth0"), red, ("hotplug/blue", "net2")]);

    // The agent killed between the delegate's ADD and the status PATCH, then restarted.
    node.agent.take();
    node.start_agent(&[("PLEXUSD_FAULT", "exit-after-hotplug-add")]);
    node.annotate("web", NETWORKS, Some("green@fast, blue"));
    let code = node.agent.as_mut().unwrap().wait_exit(WAIT);
    assert_eq!(code, Some(99), "{}", node.agent_log());
    assert_eq!(interfaces(&web), ["eth0", "fast", "net2"]);
    assert_eq!(
        node.status("web"),
        steady.map(|(n, i)| (n.into(), i.into()))
    );
    node.start_agent(&[]);
    node.wait_status("web", &[steady[0], steady[1], ("hotplug/blue", "net2")]);
    assert_eq!(interfaces(&web), ["eth0", "fast", "net2"]);
    // web: eth0, fast, net2; plain: eth0, net1, net2.
    assert_eq!(node.reservations().len(), 6, "{:?}", node.reservations());

    // A step cut short before its result was recorded (net2 in the cache without a result):
    // the next agent tears it down and attaches it again, never adding it twice.
    node.agent.take();
    let entry_file = node.lab.cache_dir().join(&web_id);
    let net2_result = || -> Option<Value> {
        let entry: Value = serde_json::from_slice(&std::fs::read(&entry_file).unwrap()).unwrap();
        let attachments = entry["attachments"].as_array().unwrap().clone();
        let net2 = attachments.into_iter().find(|a| a["ifname"] == "net2")?;
        net2.get("result").cloned()
    };
    let mut entry: Value = serde_json::from_slice(&std::fs::read(&entry_file).unwrap()).unwrap();
    for a in entry["attachments"].as_array_mut().unwrap() {
        if a["ifname"] == "net2" {
            a.as_object_mut().unwrap().remove("result");
        }
    }
    std::fs::write(&entry_file, serde_json::to_vec_pretty(&entry).unwrap()).unwrap();
    node.start_agent(&[]);
    let start = Instant::now();
    while net2_result().is_none() {
        assert!(
            start.elapsed() < WAIT,
            "net2 not attached again: {}",
            node.agent_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    node.wait_status("web", &[steady[0], steady[1], ("hotplug/blue", "net2")]);
    assert_eq!(interfaces(&web), ["eth0", "fast", "net2"]);
    assert_eq!(node.reservations().len(), 6, "{:?}", node.reservations());

    // Deleting the pods leaves nothing: links, addresses, cache entries.
    for id in [&web_id, &plain_id] {
        node.containerd.stop_pod_sandbox(id).unwrap();
        node.containerd.remove_pod_sandbox(id).unwrap();
    }
    assert!(!web.exists() && !plain.exists());
    assert!(
        node.lab.cache_entries().is_empty(),
        "{:?}",
        node.lab.cache_entries()
    );
    assert!(node.reservations().is_empty(), "{:?}", node.reservations());
    assert!(
        node.links_on_bridge().is_empty(),
        "{:?}",
        node.links_on_bridge()
    );
    node.agent.take();
    eprintln!("whole test {:?}", begin.elapsed());
}
