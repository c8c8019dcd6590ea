//! End to end through a real container runtime: containerd's CRI plugin runs
//! `plexus` (static delegates: a bridge primary and two macvlan secondaries)
//! for a pod sandbox, the way kubelet makes it, inside a throwaway node
//! namespace.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::Lab;
use plexus::links;
use plexus_tests::cri::Containerd;
use plexus_tests::{cni_plugin_dir, plexus_bin_dir, root_or_skip};
use serde_json::json;

/// The CNI version containerd 1.6 (libcni 1.1) speaks at most.
const CNI_VERSION: &str = "1.0.0";

/// The lab's three networks as the only plugin of a conflist named
/// `00-plexus.conflist` (containerd loads the lexically first one).
fn write_conflist(lab: &Lab, conf_dir: &Path) {
    let mut plexus = lab.three_networks(CNI_VERSION);
    let plugin = plexus.as_object_mut().expect("a conf object");
    plugin.remove("cniVersion");
    plugin.remove("name");
    plugin.insert(
        "capabilities".into(),
        json!({"portMappings": true, "io.kubernetes.cri.pod-annotations": true}),
    );
    let conflist = json!({"cniVersion": CNI_VERSION, "name": "plexus", "plugins": [plexus]});
    std::fs::create_dir_all(conf_dir).unwrap();
    std::fs::write(
        conf_dir.join("00-plexus.conflist"),
        serde_json::to_vec_pretty(&conflist).unwrap(),
    )
    .unwrap();
}

/// A plugin directory for containerd: the reference plugins as symlinks, and
/// `plexus` as a wrapper that appends each call's command, `CNI_NETNS` and
/// `CNI_ARGS` to `calls` before running the real binary.
fn make_bin_dir(bin_dir: &Path, calls: &Path) {
    std::fs::create_dir_all(bin_dir).unwrap();
    for plugin in std::fs::read_dir(cni_plugin_dir()).unwrap().flatten() {
        std::os::unix::fs::symlink(plugin.path(), bin_dir.join(plugin.file_name())).unwrap();
    }
    let wrapper = format!(
        "#!/bin/sh\necho \"$CNI_COMMAND|$CNI_NETNS|$CNI_ARGS\" >> '{}'\nexec '{}' \"$@\"\n",
        calls.display(),
        plexus_bin_dir().join("plexus").display()
    );
    let path = bin_dir.join("plexus");
    std::fs::write(&path, wrapper).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The calls recorded by the wrapper, as `(command, netns, args)`.
fn recorded_calls(calls: &Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(calls)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let mut parts = line.splitn(3, '|').map(String::from);
            let mut next = || parts.next().unwrap_or_default();
            (next(), next(), next())
        })
        .collect()
}

/// The addresses (without link-local IPv6) of each interface in `netns`.
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

/// Writes the configuration and plugin directories into the lab and starts
/// containerd on them; returns it and the file where `plexus` calls are
/// recorded.
fn start_containerd(lab: &Lab) -> (Containerd, PathBuf) {
    let conf_dir = lab.dir.path().join("net.d");
    let bin_dir = lab.dir.path().join("bin");
    let calls = lab.dir.path().join("calls");
    write_conflist(lab, &conf_dir);
    make_bin_dir(&bin_dir, &calls);
    let begin = Instant::now();
    let containerd = Containerd::start(&bin_dir, &conf_dir);
    eprintln!(
        "containerd answered CRI calls after {:?}, pause image imported after {:?}",
        containerd.ready_after(),
        begin.elapsed()
    );
    assert!(containerd.network_ready().unwrap(), "CNI config not loaded");
    (containerd, calls)
}

/// RunPodSandbox for pod `default/<name>`, failing with containerd's message.
fn run_pod(containerd: &Containerd, name: &str) -> String {
    let annotations = BTreeMap::from([("example.com/purpose".to_string(), "cri".to_string())]);
    let begin = Instant::now();
    let id = containerd
        .run_pod_sandbox(name, "default", &format!("uid-{name}"), &annotations, &[])
        .unwrap_or_else(|e| panic!("RunPodSandbox: {}", e.message()));
    eprintln!("RunPodSandbox took {:?}", begin.elapsed());
    id
}

/// The inode of a namespace file, which identifies the namespace.
fn netns_inode(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

/// The pod's interfaces have addresses in their networks' subnets and
/// PodSandboxStatus reports eth0's; returns the pod's namespace.
fn assert_pod_networks(containerd: &Containerd, id: &str) -> PathBuf {
    let status = containerd.pod_sandbox_status(id).unwrap();
    assert!(status.ready, "{status:?}");
    let netns = status.netns.clone().expect("the sandbox's netns");
    assert!(
        netns.starts_with("/var/run/netns/") && netns.to_string_lossy().contains("cni-"),
        "{netns:?}"
    );
    let addresses = addresses_by_interface(&netns);
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
    netns
}

#[test]
fn containerd_runs_plexus_for_a_pod_sandbox_and_its_teardown() {
    if !root_or_skip() {
        return;
    }
    let begin = Instant::now();
    let lab = Lab::new();
    let (containerd, calls) = start_containerd(&lab);
    // containerd, and so the plugins, run in the throwaway node namespace.
    let containerd_netns = PathBuf::from(format!("/proc/{}/ns/net", containerd.pid()));
    assert_eq!(
        netns_inode(&containerd_netns),
        netns_inode(lab.host.as_ref().expect("a node namespace").path())
    );

    let id = run_pod(&containerd, "web");
    let netns = assert_pod_networks(&containerd, &id);
    assert!(
        links::link(None, "pxbr0").unwrap().is_some(),
        "no bridge on the node"
    );
    assert_eq!(lab.cache_entries(), std::slice::from_ref(&id));
    assert_eq!(lab.reservations().len(), 3, "{:?}", lab.reservations());

    let stopped = Instant::now();
    containerd.stop_pod_sandbox(&id).unwrap();
    eprintln!("StopPodSandbox took {:?}", stopped.elapsed());
    assert!(!netns.exists(), "{netns:?} left after StopPodSandbox");
    containerd.remove_pod_sandbox(&id).unwrap();
    assert!(containerd.list_pod_sandboxes().unwrap().is_empty());

    let calls = recorded_calls(&calls);
    let commands: Vec<(&str, bool)> = calls
        .iter()
        .filter(|(command, _, _)| command == "ADD" || command == "DEL")
        .map(|(command, netns, _)| (command.as_str(), netns.is_empty()))
        .collect();
    // ADD and DEL in the pod's namespace, then RemovePodSandbox's DEL without.
    assert_eq!(
        commands,
        [("ADD", false), ("DEL", false), ("DEL", true)],
        "{calls:?}"
    );
    let args = &calls[0].2;
    for arg in [
        "K8S_POD_NAMESPACE=default".to_string(),
        "K8S_POD_NAME=web".to_string(),
        "K8S_POD_UID=uid-web".to_string(),
        format!("K8S_POD_INFRA_CONTAINER_ID={id}"),
    ] {
        assert!(args.contains(&arg), "{arg} not in {args}");
    }
    lab.assert_clean(None);
    eprintln!("whole test took {:?}", begin.elapsed());
}

#[test]
fn dropping_containerd_tears_down_a_sandbox_left_running() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let (containerd, _calls) = start_containerd(&lab);
    let socket = containerd.socket();
    let id = run_pod(&containerd, "left");
    let netns = assert_pod_networks(&containerd, &id);

    drop(containerd);
    assert!(!netns.exists(), "{netns:?} left");
    assert!(!socket.exists(), "containerd's directory left");
    let shims: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|p| std::fs::read(p.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(socket.to_str().unwrap()))
        .collect();
    assert!(shims.is_empty(), "processes left: {shims:?}");
    lab.assert_clean(None);
}
