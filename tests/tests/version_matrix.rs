//! ADD, CHECK and DEL of a pod with a bridge primary and two macvlan secondaries, through the
//! real reference plugins, for every CNI version Plexus is run at.

mod common;

use common::{addresses_of, ns, run_plexus, Lab};
use plexus_tests::{root_or_skip, TestPod};

fn attach_check_detach(version: &str) {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let pod = TestPod::new("pxpod");
    let config = lab.three_networks(version);

    let result = run_plexus("ADD", "c-matrix", ns(&pod), &config).ok();
    assert_eq!(result["cniVersion"], version);
    let ip = &result["ips"][0];
    assert!(
        ip["address"].as_str().unwrap().starts_with("10.10.0."),
        "{result}"
    );
    let has_version_field = matches!(version, "0.3.1" | "0.4.0");
    assert_eq!(ip.get("version").is_some(), has_version_field, "{result}");

    for (ifname, prefix) in [
        ("eth0", "10.10.0."),
        ("net1", "10.20.0."),
        ("net2", "10.30.0."),
    ] {
        let link = pod
            .link(ifname)
            .unwrap()
            .unwrap_or_else(|| panic!("{ifname} missing"));
        assert!(link.up, "{ifname} is down");
        let addrs = addresses_of(&pod, ifname);
        assert_eq!(addrs.len(), 1, "{ifname}: {addrs:?}");
        assert!(
            addrs[0].to_string().starts_with(prefix),
            "{ifname}: {addrs:?}"
        );
        assert_eq!(addrs[0].prefix_len(), 24);
    }
    assert_eq!(
        pod.link("net1").unwrap().unwrap().kind.as_deref(),
        Some("macvlan")
    );
    let routes = pod.routes().unwrap();
    let default = routes
        .iter()
        .find(|r| r.destination.prefix_len() == 0 && r.destination.addr().is_ipv4())
        .expect("a default route");
    assert_eq!(default.gateway.unwrap().to_string(), "10.10.0.1");
    assert_eq!(default.ifname.as_deref(), Some("eth0"));
    for (ifname, net) in [("net1", "10.20.0.0/24"), ("net2", "10.30.0.0/24")] {
        assert!(
            routes
                .iter()
                .any(|r| r.destination.to_string() == net && r.ifname.as_deref() == Some(ifname)),
            "no route to {net} via {ifname}: {routes:?}"
        );
    }
    assert_eq!(lab.reservations().len(), 3);
    assert_eq!(lab.cache_entries(), ["c-matrix"]);

    if version != "0.3.1" {
        run_plexus("CHECK", "c-matrix", ns(&pod), &config).ok();
    }

    run_plexus("DEL", "c-matrix", ns(&pod), &config).ok();
    lab.assert_clean(Some(&pod));
}

#[test]
fn version_0_3_1() {
    attach_check_detach("0.3.1");
}

#[test]
fn version_0_4_0() {
    attach_check_detach("0.4.0");
}

#[test]
fn version_1_0_0() {
    attach_check_detach("1.0.0");
}

#[test]
fn version_1_1_0() {
    attach_check_detach("1.1.0");
}
