//! End to end through a real runtime, as kubelet makes a pod on a K3s node: a pod annotated
//! with two NetworkAttachmentDefinitions on a real kube-apiserver, containerd's CRI plugin
//! running `plexus` (the only plugin of `00-plexus.conflist`, wrapping a bridge cluster network
//! as K3s's Plexus wraps Flannel) for the pod's sandbox, and `plexus` reading the definitions
//! and writing the network-status back as Plexus's service account.
//!
//! containerd, and so every plugin, runs in the host's own namespace (with links named for this
//! test, removed at the end), because `plexus` must reach the API server on the host's
//! loopback; the pod's namespace is containerd's own `/var/run/netns/cni-<uuid>`.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::kube::{request, Kube, NETWORKS};
use common::Lab;
use plexus::links;
use plexus_tests::cluster::{self, SA_USER};
use plexus_tests::cri::Containerd;
use plexus_tests::{cni_plugin_dir, plexus_bin_dir, root_or_skip};
use serde_json::{json, Value};

/// The CNI version containerd 1.6 (libcni 1.1) speaks at most.
const CNI_VERSION: &str = "1.0.0";
/// The pod's namespace on the API server.
const NAMESPACE: &str = "shop";
/// The pod's name.
const POD: &str = "web";

/// Seconds since midnight of an audit timestamp (`2024-05-01T10:11:12.345678Z`).
fn seconds_of_day(timestamp: &Value) -> f64 {
    let time = timestamp
        .as_str()
        .and_then(|t| t.split_once('T'))
        .map(|(_, time)| time.trim_end_matches('Z'))
        .unwrap_or("0:0:0");
    time.split(':')
        .map(|part| part.parse::<f64>().unwrap_or(0.0))
        .fold(0.0, |total, part| total * 60.0 + part)
}

/// Prints the requests: when each arrived (after the first) and how long the API server took.
fn print_requests(events: &[Value]) {
    let Some(first) = events.first() else {
        eprintln!("API requests of {SA_USER}: none");
        return;
    };
    let start = seconds_of_day(&first["requestReceivedTimestamp"]);
    eprintln!("API requests of {SA_USER}:");
    for e in events {
        let received = seconds_of_day(&e["requestReceivedTimestamp"]);
        let answered = seconds_of_day(&e["stageTimestamp"]);
        eprintln!(
            "  +{:>6.1} ms  {:<5} {} -> {} ({:.1} ms, {})",
            (received - start) * 1e3,
            e["verb"].as_str().unwrap_or("?"),
            e["requestURI"].as_str().unwrap_or("?"),
            e["responseStatus"]["code"],
            (answered - received) * 1e3,
            e["userAgent"].as_str().unwrap_or("?"),
        );
    }
}

/// containerd's configuration directory, as on a K3s node: the cluster network's own conflist
/// (a bridge with host-local addresses and no gateway, standing in for Flannel) and
/// `00-plexus.conflist`, which containerd loads because it sorts first. Plexus reads the pod's
/// networks with the service account's kubeconfig and wraps the cluster network.
fn write_configs(lab: &Lab, kube: &Kube, conf_dir: &Path, bin_dir: &Path) {
    std::fs::create_dir_all(conf_dir).unwrap();
    let cluster_network = lab.write_bridge_conflist(CNI_VERSION, conf_dir.join("10-pods.conflist"));
    let plexus = json!({
        "type": "plexus",
        "kubeconfig": kube.cluster.sa_kubeconfig(),
        "clusterNetwork": cluster_network,
        "cniDir": lab.cache_dir(),
        "binDir": bin_dir,
        "capabilities": {"portMappings": true, "io.kubernetes.cri.pod-annotations": true},
    });
    let conflist = json!({"cniVersion": CNI_VERSION, "name": "plexus", "plugins": [plexus]});
    std::fs::write(
        conf_dir.join("00-plexus.conflist"),
        serde_json::to_vec_pretty(&conflist).unwrap(),
    )
    .unwrap();
}

/// A plugin directory for containerd: the reference plugins as symlinks, and `plexus` as a
/// wrapper that runs the real binary and appends each call's command, `CNI_NETNS`, `CNI_ARGS`
/// and duration in milliseconds to `calls`.
fn make_bin_dir(bin_dir: &Path, calls: &Path) {
    std::fs::create_dir_all(bin_dir).unwrap();
    for plugin in std::fs::read_dir(cni_plugin_dir()).unwrap().flatten() {
        std::os::unix::fs::symlink(plugin.path(), bin_dir.join(plugin.file_name())).unwrap();
    }
    let wrapper = format!(
        "#!/bin/sh\nstart=$(date +%s%N)\n'{plexus}' \"$@\"\nrc=$?\n\
         echo \"$CNI_COMMAND|$CNI_NETNS|$CNI_ARGS|$(( ($(date +%s%N) - start) / 1000000 ))\" >> '{calls}'\n\
         exit $rc\n",
        plexus = plexus_bin_dir().join("plexus").display(),
        calls = calls.display(),
    );
    let path = bin_dir.join("plexus");
    std::fs::write(&path, wrapper).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// One `plexus` call recorded by the wrapper.
#[derive(Debug)]
struct Call {
    command: String,
    netns: String,
    args: String,
    millis: String,
}

fn recorded_calls(calls: &Path) -> Vec<Call> {
    std::fs::read_to_string(calls)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let mut parts = line.splitn(4, '|').map(String::from);
            let mut next = || parts.next().unwrap_or_default();
            Call {
                command: next(),
                netns: next(),
                args: next(),
                millis: next(),
            }
        })
        .collect()
}

/// The addresses (without link-local IPv6) of each interface in `netns`, but `lo`.
fn addresses_by_interface(netns: &Path) -> BTreeMap<String, Vec<ipnet::IpNet>> {
    let mut found: BTreeMap<String, Vec<ipnet::IpNet>> = BTreeMap::new();
    for a in links::addresses(Some(netns)).unwrap() {
        let link_local =
            matches!(a.address.addr(), std::net::IpAddr::V6(v6) if v6.segments()[0] == 0xfe80);
        if !link_local && a.ifname != "lo" {
            found.entry(a.ifname).or_default().push(a.address);
        }
    }
    found
}

/// The links enslaved to the lab's bridge (the pods' veth ends).
fn links_on_bridge(lab: &Lab) -> Vec<String> {
    let bridge = links::link(None, &lab.bridge)
        .unwrap()
        .expect("the bridge plugin made the lab's bridge");
    links::links(None)
        .unwrap()
        .into_iter()
        .filter(|l| l.master == Some(bridge.index))
        .map(|l| l.name)
        .collect()
}

/// The inode of a namespace file, which identifies the namespace.
fn netns_inode(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

#[test]
fn containerd_runs_plexus_with_the_pods_networks_from_the_api_server() {
    if !root_or_skip() {
        return;
    }
    let Some(apiserver) = cluster::apiserver_or_skip() else {
        return;
    };
    let begin = Instant::now();
    let kube = Kube::start_with(&apiserver);
    let lab = Lab::on_host();
    kube.namespace(NAMESPACE);
    kube.nad(
        NAMESPACE,
        "storage",
        &lab.macvlan(CNI_VERSION, "storage", 20),
    );
    kube.nad(NAMESPACE, "backup", &lab.macvlan(CNI_VERSION, "backup", 30));
    let annotations = [
        (NETWORKS, "storage, backup"),
        ("example.com/owner", "shop-team"),
    ];
    let uid = kube.pod(NAMESPACE, POD, &annotations);
    let annotations: BTreeMap<String, String> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();

    let conf_dir = lab.dir.path().join("net.d");
    let bin_dir = lab.dir.path().join("bin");
    let calls = lab.dir.path().join("calls");
    write_configs(&lab, &kube, &conf_dir, &bin_dir);
    make_bin_dir(&bin_dir, &calls);
    let started = Instant::now();
    let containerd = Containerd::start(&bin_dir, &conf_dir);
    eprintln!(
        "containerd answered CRI calls after {:?}, pause image imported after {:?}",
        containerd.ready_after(),
        started.elapsed()
    );
    assert!(containerd.network_ready().unwrap(), "CNI config not loaded");
    // containerd, and so the plugins, run in the host's namespace, beside the API server.
    assert_eq!(
        netns_inode(Path::new(&format!("/proc/{}/ns/net", containerd.pid()))),
        netns_inode(Path::new("/proc/self/ns/net"))
    );

    // RunPodSandbox as kubelet sends it: the pod's name, namespace, UID and annotations.
    let audit_from = kube.cluster.audit_events().len();
    let started = Instant::now();
    let id = containerd
        .run_pod_sandbox(POD, NAMESPACE, &uid, &annotations, &[])
        .unwrap_or_else(|e| panic!("RunPodSandbox: {}", e.message()));
    let run_took = started.elapsed();

    let status = containerd.pod_sandbox_status(&id).unwrap();
    assert!(status.ready, "{status:?}");
    let netns: PathBuf = status.netns.clone().expect("the sandbox's netns");
    assert!(netns.to_string_lossy().contains("/netns/cni-"), "{netns:?}");
    let addresses = addresses_by_interface(&netns);
    eprintln!("interfaces in {}: {addresses:?}", netns.display());
    assert_eq!(
        addresses.keys().collect::<Vec<_>>(),
        ["eth0", "net1", "net2"],
        "{addresses:?}"
    );
    for (ifname, subnet) in [
        ("eth0", "10.10.0.0/24"),
        ("net1", "10.20.0.0/24"),
        ("net2", "10.30.0.0/24"),
    ] {
        let subnet: ipnet::IpNet = subnet.parse().unwrap();
        assert!(
            addresses[ifname].iter().any(|a| subnet.contains(&a.addr())),
            "{ifname}: {:?}",
            addresses[ifname]
        );
    }
    assert_eq!(status.ip, Some(addresses["eth0"][0].addr()), "{status:?}");

    // The annotations came from containerd: no GET of the pod; one GET per NAD, one PATCH.
    let events = kube.plexus_events_until(audit_from, "patch");
    print_requests(&events);
    let mut requests: Vec<_> = events.iter().map(request).collect();
    requests.sort();
    let nads = "network-attachment-definitions";
    assert_eq!(
        requests,
        [
            ("get".into(), nads.into(), "backup".into()),
            ("get".into(), nads.into(), "storage".into()),
            ("patch".into(), "pods".into(), POD.into()),
        ]
    );
    assert!(events.iter().all(|e| e["responseStatus"]["code"] == 200));

    let network_status = kube.network_status(NAMESPACE, POD);
    eprintln!("network-status: {network_status:#}");
    let entries = network_status.as_array().expect("a list");
    assert_eq!(entries.len(), 3, "{network_status:#}");
    for (entry, (name, ifname, address)) in entries.iter().zip([
        ("pods", "eth0", addresses["eth0"][0]),
        ("shop/storage", "net1", addresses["net1"][0]),
        ("shop/backup", "net2", addresses["net2"][0]),
    ]) {
        assert_eq!(entry["name"], name, "{entry}");
        assert_eq!(entry["interface"], ifname, "{entry}");
        assert_eq!(entry["ips"], json!([address.addr().to_string()]), "{entry}");
        assert_eq!(entry["default"] == true, ifname == "eth0", "{entry}");
    }

    assert_eq!(lab.cache_entries(), std::slice::from_ref(&id));
    assert_eq!(lab.reservations().len(), 3, "{:?}", lab.reservations());
    assert_eq!(
        links_on_bridge(&lab).len(),
        1,
        "{:?}",
        links_on_bridge(&lab)
    );

    // Teardown: StopPodSandbox's DEL with the namespace, RemovePodSandbox's without.
    let audit_from = kube.cluster.audit_events().len();
    let started = Instant::now();
    containerd.stop_pod_sandbox(&id).unwrap();
    let stop_took = started.elapsed();
    assert!(!netns.exists(), "{netns:?} left after StopPodSandbox");
    // The first DEL needs nothing from the API server: the cache has it all.
    std::thread::sleep(Duration::from_millis(300));
    let stop_events = kube.plexus_events(audit_from);
    assert!(stop_events.is_empty(), "{stop_events:?}");
    assert!(lab.cache_entries().is_empty(), "{:?}", lab.cache_entries());

    let audit_from = kube.cluster.audit_events().len();
    let started = Instant::now();
    containerd.remove_pod_sandbox(&id).unwrap();
    let remove_took = started.elapsed();
    assert!(containerd.list_pod_sandboxes().unwrap().is_empty());
    // The second DEL finds no cache entry, so it tears down the pod's networks as the API
    // server describes them now: it may read the definitions, but it writes nothing and does
    // not read the pod (containerd gave its annotations again).
    std::thread::sleep(Duration::from_millis(300));
    let remove_events = kube.plexus_events(audit_from);
    eprintln!("RemovePodSandbox's DEL (no cache entry left):");
    print_requests(&remove_events);
    for (verb, resource, _) in remove_events.iter().map(request) {
        assert_eq!((verb.as_str(), resource.as_str()), ("get", nads));
    }

    let calls = recorded_calls(&calls);
    eprintln!("plexus calls, as containerd made them:");
    for c in &calls {
        let netns = if c.netns.is_empty() {
            "CNI_NETNS=\"\""
        } else {
            &c.netns
        };
        eprintln!("  {:<6} {netns:<56} {:>4} ms", c.command, c.millis);
    }
    let commands: Vec<(&str, bool)> = calls
        .iter()
        .filter(|c| c.command == "ADD" || c.command == "DEL")
        .map(|c| (c.command.as_str(), c.netns.is_empty()))
        .collect();
    assert_eq!(
        commands,
        [("ADD", false), ("DEL", false), ("DEL", true)],
        "{calls:?}"
    );
    for arg in [
        format!("K8S_POD_NAMESPACE={NAMESPACE}"),
        format!("K8S_POD_NAME={POD}"),
        format!("K8S_POD_UID={uid}"),
        format!("K8S_POD_INFRA_CONTAINER_ID={id}"),
    ] {
        assert!(
            calls[0].args.contains(&arg),
            "{arg} not in {}",
            calls[0].args
        );
    }

    assert!(lab.cache_entries().is_empty(), "{:?}", lab.cache_entries());
    assert!(lab.reservations().is_empty(), "{:?}", lab.reservations());
    assert!(
        links_on_bridge(&lab).is_empty(),
        "{:?}",
        links_on_bridge(&lab)
    );
    eprintln!(
        "timings: RunPodSandbox {run_took:?}, StopPodSandbox {stop_took:?}, \
         RemovePodSandbox {remove_took:?}, whole test {:?}",
        begin.elapsed()
    );
}
