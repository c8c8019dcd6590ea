//! End to end on a real node ([`plexus_tests::node`]): a kubelet and containerd run pods that
//! `kubectl apply` creates from `examples/k3s/`, with Plexus installed by `plexusctl install`
//! into a K3s layout. The tests share one node (started by the first test, stopped when the
//! binary exits, failing it if anything is left) and take turns on it; each starts with no
//! pods. Pods are deleted with `--force` between tests (fast); the test of what deletion leaves
//! behind deletes them as a user does, waiting for the kubelet.
//!
//! Every test but one runs without the node agent (the socket is missing: plexus-ipam does the
//! work itself); that one starts `plexusd` on the node's default socket, checks that the
//! plexus-ipam networks' addresses were allocated and released through it, then kills it
//! (its socket left behind, refusing) and checks that a pod still comes up by the fallback.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use plexus_tests::node::{
    self, files_under, status_addresses, SharedNode, PRIMARY_SUBNET, SECOND_NIC,
};
use plexus_tests::root_or_skip;
use serde_json::{json, Value};

/// How long pods get to reach Running.
const RUNNING_TIMEOUT: Duration = Duration::from_secs(180);

/// The shared node with no pods on it, or `None` (the test is skipped) outside CI without root
/// or binaries.
fn node() -> Option<SharedNode> {
    if !root_or_skip() {
        return None;
    }
    let node = node::shared()?;
    node.delete_all_pods()
        .expect("delete the pods of an earlier test");
    Some(node)
}

#[test]
fn both_annotation_forms_and_a_default_network_override_reach_running() {
    let Some(node) = node() else { return };
    let mut objects = node.example_objects("pods/example-nads.yaml").unwrap();
    objects.extend(node.example_objects("pods/example-pod.yaml").unwrap());
    objects.extend(
        node.example_objects("pods/example-default-network.yaml")
            .unwrap(),
    );
    println!("{}", node.apply(&objects).unwrap());
    let pods = [
        "plexus-demo-short",
        "plexus-demo-json",
        "plexus-demo-primary",
    ]
    .map(String::from);
    let took = node.wait_running(&pods, RUNNING_TIMEOUT).unwrap();
    println!(
        "3 pods Running {:.1}s after kubectl apply",
        took.as_secs_f64()
    );

    let macvlan = "192.168.100.0/24";
    let bridge = "10.201.0.0/24";
    let short = node.check_interfaces(
        "plexus-demo-short",
        &[
            ("eth0", PRIMARY_SUBNET),
            ("net1", macvlan),
            ("net2", bridge),
        ],
    );
    node.check_interfaces(
        "plexus-demo-json",
        &[
            ("eth0", PRIMARY_SUBNET),
            ("net1", macvlan),
            ("bridge0", bridge),
        ],
    );
    let primary = node.check_interfaces(
        "plexus-demo-primary",
        &[("eth0", "10.203.0.0/24"), ("net1", bridge)],
    );
    // The bridge's gateway address is never handed out.
    assert_ne!(primary["eth0"], Ipv4Addr::new(10, 203, 0, 1));
    // The kubelet reports the primary network's address as the pod's IP.
    for (pod, addresses) in [
        ("plexus-demo-short", &short),
        ("plexus-demo-primary", &primary),
    ] {
        let ip = node.pod(pod).unwrap()["status"]["podIP"].clone();
        assert_eq!(ip, json!(addresses["eth0"].to_string()), "podIP of {pod}");
    }
    node.force_delete_all_pods().unwrap();
}

#[test]
fn twenty_pods_get_unique_addresses_and_deleting_them_leaves_nothing() {
    let Some(node) = node() else { return };
    let links_before: BTreeSet<String> = node
        .node_links()
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    node.apply_file("pods/example-nads.yaml").unwrap();
    let template = node
        .example_objects("pods/example-pod.yaml")
        .unwrap()
        .into_iter()
        .find(|o| o["metadata"]["name"] == "plexus-demo-short")
        .unwrap();
    let names: Vec<String> = (0..20).map(|i| format!("scale-{i:02}")).collect();
    let pods: Vec<Value> = names
        .iter()
        .map(|name| {
            let mut pod = template.clone();
            pod["metadata"]["name"] = json!(name);
            pod
        })
        .collect();
    let started = Instant::now();
    node.apply(&pods).unwrap();
    node.wait_running(&names, RUNNING_TIMEOUT).unwrap();
    let took = started.elapsed();
    println!(
        "20 pods with two extra networks each: Running {:.1}s after kubectl apply",
        took.as_secs_f64()
    );

    // Every address once, on the network it belongs to, and each one allocated in plexus-ipam.
    let mut seen: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
    for name in &names {
        let status = status_addresses(&node.network_status(name));
        for (ifname, net) in [("net1", "192.168.100.0/24"), ("net2", "10.201.0.0/24")] {
            let [address] = status[ifname][..] else {
                panic!("{name} {ifname}: {:?}", status.get(ifname));
            };
            assert!(
                net.parse::<Ipv4Net>().unwrap().contains(&address),
                "{name} {ifname} {address}"
            );
            if let Some(other) = seen.insert(address, name.clone()) {
                panic!("{address} given to both {other} and {name}");
            }
        }
    }
    assert_eq!(seen.len(), 40);
    assert_eq!(node.ipam_allocations(), seen, "plexus-ipam's allocations");
    // What the pods themselves see, for two of them.
    for name in [&names[0], &names[19]] {
        let inside = node.exec_addresses(name);
        for ifname in ["net1", "net2"] {
            let address = inside[ifname][0].addr();
            assert_eq!(seen.get(&address), Some(name), "{name} {ifname} {address}");
        }
    }

    node.delete_all_pods().unwrap();
    // The kubelet removes stopped sandboxes of deleted pods (also those of earlier tests) in
    // its container GC, every minute.
    node.wait_no_sandboxes(Duration::from_secs(150)).unwrap();
    let links_after: BTreeSet<String> = node
        .node_links()
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    let new_links: Vec<&String> = links_after.difference(&links_before).collect();
    assert!(
        new_links
            .iter()
            .all(|l| l.as_str() == "plexus-br0" || l.as_str() == node::PRIMARY_BRIDGE),
        "links left on the node: {new_links:?}"
    );
    assert!(links_after.contains(SECOND_NIC));
    assert_eq!(node.ipam_allocations(), BTreeMap::new(), "allocations left");
    assert_eq!(
        files_under(&node.cni_dir()),
        Vec::<String>::new(),
        "cache left"
    );
    assert_eq!(
        node.primary_leases(),
        Vec::<String>::new(),
        "primary network leases left"
    );
}

#[test]
fn a_pod_whose_network_is_missing_does_not_start_and_its_events_say_why() {
    let Some(node) = node() else { return };
    let mut pod = node
        .example_objects("pods/example-pod.yaml")
        .unwrap()
        .remove(0);
    pod["metadata"]["name"] = json!("missing-net");
    pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"] = json!("no-such-network");
    node.apply(&[pod]).unwrap();
    let started = Instant::now();
    let events = loop {
        let events = node.events("missing-net").unwrap();
        if events
            .iter()
            .any(|e| e.starts_with("FailedCreatePodSandBox"))
        {
            break events;
        }
        assert!(
            started.elapsed() < RUNNING_TIMEOUT,
            "no FailedCreatePodSandBox event: {events:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("events of missing-net: {events:#?}");
    let failure = events
        .iter()
        .find(|e| e.starts_with("FailedCreatePodSandBox"))
        .unwrap();
    assert!(
        failure.contains("NetworkAttachmentDefinition default/no-such-network does not exist"),
        "{failure}"
    );
    let phase = node.pod("missing-net").unwrap()["status"]["phase"].clone();
    assert_eq!(phase, "Pending");
    node.force_delete_all_pods().unwrap();
}

/// Creates the short-form example pod named `name` and checks that it runs with both networks.
fn a_pod_attaches(node: &SharedNode, name: &str) {
    node.apply(&[node.short_form_pod(name).unwrap()]).unwrap();
    let took = node
        .wait_running(&[name.to_string()], RUNNING_TIMEOUT)
        .unwrap();
    println!(
        "{name}: Running {:.1}s after kubectl apply",
        took.as_secs_f64()
    );
    node.check_interfaces(
        name,
        &[
            ("eth0", PRIMARY_SUBNET),
            ("net1", "192.168.100.0/24"),
            ("net2", "10.201.0.0/24"),
        ],
    );
}

/// Waits until plexus-ipam holds no allocation.
fn wait_no_allocations(node: &SharedNode) {
    let started = Instant::now();
    while !node.ipam_allocations().is_empty() {
        assert!(
            started.elapsed() < RUNNING_TIMEOUT,
            "allocations left: {:?}",
            node.ipam_allocations()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn with_the_node_agent_addresses_go_through_it_and_without_it_the_plugin_falls_back() {
    let Some(node) = node() else { return };
    node.apply_file("pods/example-nads.yaml").unwrap();
    let mut agent = node.start_agent();
    let before = agent.ping();
    assert_eq!(before.node, node::NODE_NAME);

    // With the agent: both plexus-ipam networks of the pod are allocated by it.
    a_pod_attaches(&node, "agent-on");
    let after = agent.ping();
    println!("the agent's counters: before {before:?}, after {after:?}");
    assert!(
        after.block_changes >= before.block_changes + 2,
        "net1 and net2 allocated through the agent: {before:?} -> {after:?}\n{}",
        agent.log_text()
    );
    assert_eq!(node.ipam_allocations().len(), 2);

    // DEL goes through the agent too, and leaves nothing.
    node.force_delete_all_pods().unwrap();
    wait_no_allocations(&node);
    let released = agent.ping();
    assert!(
        released.block_changes >= after.block_changes + 2,
        "net1 and net2 released through the agent: {after:?} -> {released:?}"
    );

    // The agent killed (SIGKILL: its socket stays, refusing): the plugin does the work itself.
    agent.kill();
    assert!(node.agent_socket().exists(), "the dead agent's socket");
    assert!(agent.try_ping().is_none());
    a_pod_attaches(&node, "agent-off");
    assert_eq!(node.ipam_allocations().len(), 2);
    node.force_delete_all_pods().unwrap();
    wait_no_allocations(&node);
    std::fs::remove_file(node.agent_socket()).unwrap();
}

/// What must survive a kubelet restart: a pod's container id and restart count, its addresses
/// and its network-status.
type PodState = (Value, Value, BTreeMap<String, Vec<Ipv4Net>>, Vec<Value>);

#[test]
fn a_kubelet_restart_leaves_running_pods_and_their_networks_alone() {
    let Some(mut node) = node() else { return };
    let mut objects = node.example_objects("pods/example-nads.yaml").unwrap();
    objects.extend(node.example_objects("pods/example-pod.yaml").unwrap());
    node.apply(&objects).unwrap();
    let pods = ["plexus-demo-short", "plexus-demo-json"].map(String::from);
    node.wait_running(&pods, RUNNING_TIMEOUT).unwrap();
    let state = |node: &SharedNode| -> Vec<PodState> {
        pods.iter()
            .map(|pod| {
                let object = node.pod(pod).unwrap();
                let container = object["status"]["containerStatuses"][0].clone();
                (
                    container["containerID"].clone(),
                    container["restartCount"].clone(),
                    node.exec_addresses(pod),
                    node.network_status(pod),
                )
            })
            .collect()
    };
    let before = state(&node);
    let sandboxes = node.sandboxes().unwrap();

    node.restart_kubelet().unwrap();
    // Let the new kubelet look at the pods: its first relist and sync.
    std::thread::sleep(Duration::from_secs(5));
    node.wait_running(&pods, RUNNING_TIMEOUT).unwrap();
    assert_eq!(
        state(&node),
        before,
        "containers, addresses, network-status"
    );
    assert_eq!(node.sandboxes().unwrap(), sandboxes, "sandboxes");
    let changed = node::Sysctls::read().changes_since(node.recorded_sysctls());
    assert!(changed.is_empty(), "kernel settings: {changed:?}");
    node.force_delete_all_pods().unwrap();
}
