//! End to end through podman 4 with its CNI backend: the runtime that calls `plexus` outside
//! Kubernetes (static delegates), inside a throwaway node namespace. podman sends
//! `K8S_POD_NAME` without a namespace, and turns `--network net:ip=…,mac=…,interface_name=…`
//! into `IP=`/`MAC=` in `CNI_ARGS` and `CNI_IFNAME`; those requests are for the primary
//! interface only.

mod common;

use common::Lab;
use plexus_tests::podman::{text, Podman};
use plexus_tests::{cni_plugin_dir, plexus_bin_dir, root_or_skip};
use serde_json::{json, Value};

/// The CNI version podman 4.3 (libcni 1.1) speaks at most.
const CNI_VERSION: &str = "1.0.0";

/// A podman network `multi` whose one plugin is Plexus with `delegates`.
fn multi_network(lab: &Lab, delegates: Vec<Value>) -> Value {
    json!({
        "cniVersion": CNI_VERSION,
        "name": "multi",
        "plugins": [lab.plexus(CNI_VERSION, delegates)],
    })
}

/// A node namespace of its own and podman set up with Plexus's binaries first, then the
/// reference plugins, and the network `multi`: the lab's bridge as the primary network and
/// `secondary` as `net1`.
fn setup(secondary: impl FnOnce(&Lab) -> Value) -> (Lab, Podman) {
    let lab = Lab::new();
    let podman = Podman::new(&[&plexus_bin_dir(), &cni_plugin_dir()]);
    let delegates = vec![lab.bridge(CNI_VERSION), secondary(&lab)];
    podman.add_network(&multi_network(&lab, delegates));
    (lab, podman)
}

/// The usual secondary network: macvlan `storage` on 10.20.0.0/24.
fn storage(lab: &Lab) -> Value {
    lab.macvlan(CNI_VERSION, "storage", 20)
}

/// `(interface, address/prefix)` of every IPv4 address in `ip -o -4 addr` output.
fn ipv4_addresses(output: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(output)
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let inet = words.iter().position(|w| *w == "inet")?;
            Some((
                words.get(1)?.trim_end_matches(':').to_string(),
                words.get(inet + 1)?.to_string(),
            ))
        })
        .filter(|(ifname, _)| ifname != "lo")
        .collect()
}

#[test]
fn a_container_gets_both_networks_and_leaves_nothing_behind() {
    if !root_or_skip() {
        return;
    }
    let (lab, podman) = setup(storage);

    let out = podman.run("multi", &["ip", "-o", "-4", "addr"]);
    assert!(out.status.success(), "{}", text(&out));
    let addresses = ipv4_addresses(&out.stdout);
    assert_eq!(addresses.len(), 2, "{addresses:?}");
    assert_eq!(addresses[0].0, "eth0");
    assert!(addresses[0].1.starts_with("10.10.0."), "{addresses:?}");
    assert_eq!(addresses[1].0, "net1");
    assert!(addresses[1].1.starts_with("10.20.0."), "{addresses:?}");

    lab.assert_clean(None);
}

#[test]
fn podman_address_mac_and_interface_requests_reach_the_primary_only() {
    if !root_or_skip() {
        return;
    }
    let (lab, podman) = setup(storage);

    let network = "multi:ip=10.10.0.50,mac=02:42:0a:0a:00:32,interface_name=eth5";
    let out = podman.run(network, &["sh", "-c", "ip -o -4 addr; ip -o link"]);
    assert!(out.status.success(), "{}", text(&out));
    let addresses = ipv4_addresses(&out.stdout);
    assert_eq!(
        addresses[0],
        ("eth5".to_string(), "10.10.0.50/24".to_string()),
        "{addresses:?}"
    );
    assert_eq!(addresses[1].0, "net1");
    assert!(addresses[1].1.starts_with("10.20.0."), "{addresses:?}");
    let links = String::from_utf8_lossy(&out.stdout).into_owned();
    let eth5 = links
        .lines()
        .find(|l| l.contains(" eth5@") || l.contains(" eth5:"))
        .unwrap_or_else(|| panic!("no eth5 link in {links}"));
    assert!(eth5.contains("02:42:0a:0a:00:32"), "{eth5}");

    lab.assert_clean(None);
}

#[test]
fn a_failing_additional_network_fails_the_container_and_undoes_the_primary() {
    if !root_or_skip() {
        return;
    }
    let (lab, podman) = setup(|lab| {
        let mut broken = storage(lab);
        broken["plugins"][0]["master"] = json!("no-such-link");
        broken
    });

    let out = podman.run("multi", &["true"]);
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("storage") && stderr.contains("net1"),
        "the error names the network and interface: {stderr}"
    );

    lab.assert_clean(None);
}
