//! End to end on a real node ([`plexus_tests::node`]): a kubelet and containerd run pods that
//! `kubectl apply` creates from `examples/k3s/`, with Plexus installed by `plexusctl install`
//! into a K3s layout. The tests share one node (started by the first test, stopped when the
//! binary exits, failing it if anything is left) and take turns on it; each starts with no
//! pods. Pods are deleted with `--force` between tests (fast); the test of what deletion leaves
//! behind deletes them as a user does, waiting for the kubelet.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use plexus_tests::node::{self, SharedNode, NAMESPACE, PRIMARY_SUBNET, SECOND_NIC};
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

/// The IPv4 addresses of each interface of `pod` but `lo`, from `kubectl exec … ip -o addr`.
fn exec_addresses(node: &SharedNode, pod: &str) -> BTreeMap<String, Vec<Ipv4Net>> {
    let out = node
        .kubectl(&["exec", pod, "-n", NAMESPACE, "--", "ip", "-o", "addr"])
        .unwrap();
    let mut found: BTreeMap<String, Vec<Ipv4Net>> = BTreeMap::new();
    for line in out.lines() {
        // `2: eth0    inet 10.42.0.5/24 brd 10.42.0.255 scope global eth0\ ...`
        let words: Vec<&str> = line.split_whitespace().collect();
        if let [_, ifname, "inet", address, ..] = words[..] {
            if ifname != "lo" {
                found
                    .entry(ifname.to_string())
                    .or_default()
                    .push(address.parse().unwrap());
            }
        }
    }
    found
}

/// The pod's network-status, read with `kubectl get pod -o jsonpath`.
fn network_status(node: &SharedNode, pod: &str) -> Vec<Value> {
    let text = node
        .kubectl(&[
            "get",
            "pod",
            pod,
            "-n",
            NAMESPACE,
            "-o",
            r"jsonpath={.metadata.annotations.k8s\.v1\.cni\.cncf\.io/network-status}",
        ])
        .unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("network-status of {pod}: {e}: {text}"))
}

/// Each interface of a network-status with its IPv4 addresses.
fn status_addresses(status: &[Value]) -> BTreeMap<String, Vec<Ipv4Addr>> {
    status
        .iter()
        .map(|entry| {
            let ips = entry["ips"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|ip| ip.as_str()?.parse().ok())
                .collect();
            (entry["interface"].as_str().unwrap_or("?").to_string(), ips)
        })
        .collect()
}

/// `net` parsed.
fn subnet(net: &str) -> Ipv4Net {
    net.parse().unwrap()
}

/// Asserts that `pod` has exactly the interfaces of `expected`, each with one address in its
/// subnet, both in the pod (`kubectl exec`) and in its network-status; returns the addresses.
fn check_interfaces(
    node: &SharedNode,
    pod: &str,
    expected: &[(&str, &str)],
) -> BTreeMap<String, Ipv4Addr> {
    let seen = exec_addresses(node, pod);
    println!("{pod}: ip -o addr: {seen:?}");
    let names: BTreeSet<&str> = seen.keys().map(String::as_str).collect();
    let wanted: BTreeSet<&str> = expected.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, wanted, "interfaces of {pod}");
    let status = network_status(node, pod);
    println!(
        "{pod}: network-status: {}",
        serde_json::to_string(&status).unwrap()
    );
    let reported = status_addresses(&status);
    let mut addresses = BTreeMap::new();
    for (ifname, net) in expected {
        let [address] = seen[*ifname][..] else {
            panic!("{pod} {ifname}: {:?}", seen[*ifname]);
        };
        assert!(
            subnet(net).contains(&address.addr()),
            "{pod} {ifname} {address} not in {net}"
        );
        assert_eq!(
            reported.get(*ifname),
            Some(&vec![address.addr()]),
            "{pod}: network-status of {ifname}"
        );
        addresses.insert(ifname.to_string(), address.addr());
    }
    let default: Vec<&str> = status
        .iter()
        .filter(|e| e["default"] == true)
        .filter_map(|e| e["interface"].as_str())
        .collect();
    assert_eq!(default, ["eth0"], "{pod}: the default network");
    addresses
}

#[test]
fn both_annotation_forms_and_a_default_network_override_reach_running() {
    let Some(node) = node() else { return };
    let mut objects = node.example_objects("example-nads.yaml").unwrap();
    objects.extend(node.example_objects("example-pod.yaml").unwrap());
    objects.extend(
        node.example_objects("example-default-network.yaml")
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
    let short = check_interfaces(
        &node,
        "plexus-demo-short",
        &[
            ("eth0", PRIMARY_SUBNET),
            ("net1", macvlan),
            ("net2", bridge),
        ],
    );
    check_interfaces(
        &node,
        "plexus-demo-json",
        &[
            ("eth0", PRIMARY_SUBNET),
            ("net1", macvlan),
            ("bridge0", bridge),
        ],
    );
    let primary = check_interfaces(
        &node,
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

/// The IPv4 allocations of plexus-ipam's IPAMBlocks, as `address -> pod name`.
fn ipam_allocations(node: &SharedNode) -> BTreeMap<Ipv4Addr, String> {
    let text = node
        .kubectl(&["get", "ipamblocks", "-n", "plexus-system", "-o", "json"])
        .unwrap();
    let list: Value = serde_json::from_str(&text).unwrap();
    let mut found = BTreeMap::new();
    for block in list["items"].as_array().into_iter().flatten() {
        for (address, owner) in block["spec"]["allocations"]
            .as_object()
            .into_iter()
            .flatten()
        {
            let address: Ipv4Addr = address
                .parse()
                .unwrap_or_else(|e| panic!("allocation {address}: {e}"));
            let pod = owner["podName"].as_str().unwrap_or("?").to_string();
            assert!(found.insert(address, pod).is_none(), "{address} twice");
        }
    }
    found
}

/// The files under `dir` (recursively); none if it is missing.
fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path.display().to_string());
            }
        }
    }
    found
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
    node.apply_file("example-nads.yaml").unwrap();
    let template = node
        .example_objects("example-pod.yaml")
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
        let status = status_addresses(&network_status(&node, name));
        for (ifname, net) in [("net1", "192.168.100.0/24"), ("net2", "10.201.0.0/24")] {
            let [address] = status[ifname][..] else {
                panic!("{name} {ifname}: {:?}", status.get(ifname));
            };
            assert!(subnet(net).contains(&address), "{name} {ifname} {address}");
            if let Some(other) = seen.insert(address, name.clone()) {
                panic!("{address} given to both {other} and {name}");
            }
        }
    }
    assert_eq!(seen.len(), 40);
    assert_eq!(ipam_allocations(&node), seen, "plexus-ipam's allocations");
    // What the pods themselves see, for two of them.
    for name in [&names[0], &names[19]] {
        let inside = exec_addresses(&node, name);
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
    assert_eq!(ipam_allocations(&node), BTreeMap::new(), "allocations left");
    assert_eq!(
        files_under(&node.cni_dir()),
        Vec::<String>::new(),
        "cache left"
    );
    let leases: Vec<String> = files_under(&node.leases_dir())
        .into_iter()
        .filter(|f| {
            std::path::Path::new(f)
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.parse::<Ipv4Addr>().is_ok())
        })
        .collect();
    assert_eq!(leases, Vec::<String>::new(), "primary network leases left");
}

#[test]
fn a_pod_whose_network_is_missing_does_not_start_and_its_events_say_why() {
    let Some(node) = node() else { return };
    let mut pod = node.example_objects("example-pod.yaml").unwrap().remove(0);
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

/// What must survive a kubelet restart: a pod's container id and restart count, its addresses
/// and its network-status.
type PodState = (Value, Value, BTreeMap<String, Vec<Ipv4Net>>, Vec<Value>);

#[test]
fn a_kubelet_restart_leaves_running_pods_and_their_networks_alone() {
    let Some(mut node) = node() else { return };
    let mut objects = node.example_objects("example-nads.yaml").unwrap();
    objects.extend(node.example_objects("example-pod.yaml").unwrap());
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
                    exec_addresses(node, pod),
                    network_status(node, pod),
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
