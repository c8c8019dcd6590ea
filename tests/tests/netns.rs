//! Root tests of the namespace and netlink helpers on real namespaces.

use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use ipnet::IpNet;
use plexus::{links, netns};
use plexus_tests::{root_or_skip, unique_name, TestHost, TestPod};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn named_netns_is_created_with_lo_up_and_deleted() {
    if !root_or_skip() {
        return;
    }
    let name = unique_name("pxt-");
    let path = netns::create_named(&name).unwrap();
    assert_eq!(path, Path::new("/run/netns").join(&name));
    assert!(netns::exists(&path));
    assert!(matches!(
        netns::create_named(&name),
        Err(netns::NetnsError::Exists(_))
    ));

    let links = links::links(Some(&path)).unwrap();
    assert_eq!(links.len(), 1, "{links:?}");
    assert_eq!(links[0].name, "lo");
    assert!(links[0].up);
    let addresses = links::addresses(Some(&path)).unwrap();
    assert!(addresses
        .iter()
        .any(|a| a.ifname == "lo" && a.address == net("127.0.0.1/8")));

    netns::delete(&path).unwrap();
    assert!(!path.exists());
    assert!(!netns::exists(&path));
    netns::delete(&path).unwrap();
}

#[test]
fn run_in_executes_inside_the_namespace() {
    if !root_or_skip() {
        return;
    }
    let pod = TestPod::new("pxt-");
    let ino = |path: &Path| std::fs::metadata(path).unwrap().ino();
    let here = ino(Path::new(netns::THREAD_NETNS));
    let inside = netns::run_in(&pod.path, move || {
        std::fs::metadata(netns::THREAD_NETNS).unwrap().ino()
    })
    .unwrap();
    assert_eq!(inside, ino(&pod.path));
    assert_ne!(inside, here);
    // The caller's thread is untouched.
    assert_eq!(ino(Path::new(netns::THREAD_NETNS)), here);
}

#[test]
fn test_host_isolates_the_calling_thread() {
    if !root_or_skip() {
        return;
    }
    let before = std::fs::read_link(netns::THREAD_NETNS).unwrap();
    let (a, b) = (unique_name("pxa"), unique_name("pxb"));
    {
        let host = TestHost::enter();
        assert_ne!(std::fs::read_link(netns::THREAD_NETNS).unwrap(), before);
        links::create_veth(None, &a, &b).unwrap();

        let veth = links::link(None, &a)
            .unwrap()
            .expect("veth in the test host");
        assert_eq!(veth.kind.as_deref(), Some("veth"));
        assert!(links::link(Some(host.path()), &b).unwrap().is_some());
        // The main thread is still in the real host namespace: no veth there.
        assert!(links::link(Some(Path::new("/proc/self/ns/net")), &a)
            .unwrap()
            .is_none());
        // Child processes inherit the test host namespace.
        let out = Command::new("cat")
            .arg("/proc/self/net/dev")
            .output()
            .unwrap();
        let dev = String::from_utf8_lossy(&out.stdout);
        assert!(dev.contains(&format!("{a}:")), "{dev}");

        let path = host.path().to_path_buf();
        drop(host);
        assert!(!path.exists());
    }
    assert_eq!(std::fs::read_link(netns::THREAD_NETNS).unwrap(), before);
    assert!(links::link(None, &a).unwrap().is_none());
}

#[test]
fn veth_and_bridge_in_a_pod() {
    if !root_or_skip() {
        return;
    }
    let pod = TestPod::new("pxt-");
    links::create_veth(Some(&pod.path), "eth0", "peer0").unwrap();
    links::create_bridge(Some(&pod.path), "br0").unwrap();

    let eth0 = pod.link("eth0").unwrap().expect("eth0");
    assert_eq!(eth0.kind.as_deref(), Some("veth"));
    assert!(eth0.up);
    assert_eq!(eth0.mtu, Some(1500));
    assert_eq!(eth0.master, None);
    let mac = eth0.mac.expect("veth has a MAC");
    assert_eq!(mac.len(), 17);
    assert_eq!(mac, mac.to_lowercase());
    assert!(pod.link("peer0").unwrap().expect("peer0").up);
    let br0 = pod.link("br0").unwrap().expect("br0");
    assert_eq!(br0.kind.as_deref(), Some("bridge"));
    assert!(br0.up);
    let names: Vec<String> = pod.links().unwrap().into_iter().map(|l| l.name).collect();
    assert_eq!(names.len(), 4, "{names:?}");

    links::delete_link(Some(&pod.path), "eth0").unwrap();
    assert!(pod.link("eth0").unwrap().is_none());
    assert!(pod.link("peer0").unwrap().is_none(), "veth peer goes too");
    links::delete_link(Some(&pod.path), "eth0").unwrap();
    assert!(pod.link("a-name-much-too-long").unwrap().is_none());
    assert!(matches!(
        links::set_up(Some(&pod.path), "eth0"),
        Err(links::LinkError::NotFound(_))
    ));
}

/// A pod with `eth0` (10.77.0.2/24, fd00:77::2/64) and default routes via it.
fn pod_with_default_routes() -> TestPod {
    let pod = TestPod::new("pxt-");
    let ns = Some(pod.path.as_path());
    links::create_veth(ns, "eth0", "peer0").unwrap();
    links::add_address(ns, "eth0", net("10.77.0.2/24")).unwrap();
    links::add_address(ns, "eth0", net("fd00:77::2/64")).unwrap();
    links::add_route(ns, net("0.0.0.0/0"), Some(ip("10.77.0.1")), Some("eth0")).unwrap();
    links::add_route(ns, net("::/0"), Some(ip("fd00:77::1")), Some("eth0")).unwrap();
    links::add_route(ns, net("10.99.0.0/16"), Some(ip("10.77.0.1")), Some("eth0")).unwrap();
    links::add_route(ns, net("10.98.0.0/16"), None, Some("peer0")).unwrap();
    pod
}

#[test]
fn addresses_and_routes_are_listed() {
    if !root_or_skip() {
        return;
    }
    let pod = pod_with_default_routes();

    let addresses = pod.addresses().unwrap();
    for (ifname, address) in [
        ("lo", "127.0.0.1/8"),
        ("eth0", "10.77.0.2/24"),
        ("eth0", "fd00:77::2/64"),
    ] {
        assert!(
            addresses
                .iter()
                .any(|a| a.ifname == ifname && a.address == net(address)),
            "{ifname} {address} missing from {addresses:?}"
        );
    }

    let routes = pod.routes().unwrap();
    let has = |destination: &str, gateway: Option<&str>, ifname: &str| {
        routes.iter().any(|r| {
            r.destination == net(destination)
                && r.gateway == gateway.map(ip)
                && r.ifname.as_deref() == Some(ifname)
                && r.table == 254
        })
    };
    assert!(has("0.0.0.0/0", Some("10.77.0.1"), "eth0"), "{routes:?}");
    assert!(has("::/0", Some("fd00:77::1"), "eth0"), "{routes:?}");
    assert!(has("10.77.0.0/24", None, "eth0"), "{routes:?}");
    assert!(has("fd00:77::/64", None, "eth0"), "{routes:?}");
    assert!(has("10.99.0.0/16", Some("10.77.0.1"), "eth0"), "{routes:?}");
    assert!(has("10.98.0.0/16", None, "peer0"), "{routes:?}");
    assert!(
        !routes.iter().any(|r| r.destination == net("127.0.0.0/8")),
        "local table routes are not listed: {routes:?}"
    );
}

#[test]
fn default_routes_via_an_interface_are_deleted() {
    if !root_or_skip() {
        return;
    }
    let pod = pod_with_default_routes();
    let ns = Some(pod.path.as_path());

    assert!(links::delete_default_routes(ns, "peer0")
        .unwrap()
        .is_empty());
    let mut removed = links::delete_default_routes(ns, "eth0").unwrap();
    removed.sort_by_key(|r| r.destination.to_string());
    let removed: Vec<_> = removed
        .iter()
        .map(|r| (r.destination, r.gateway, r.ifname.as_deref(), r.table))
        .collect();
    assert_eq!(
        removed,
        vec![
            (net("0.0.0.0/0"), Some(ip("10.77.0.1")), Some("eth0"), 254),
            (net("::/0"), Some(ip("fd00:77::1")), Some("eth0"), 254),
        ]
    );

    let routes = pod.routes().unwrap();
    assert!(
        !routes.iter().any(|r| r.destination.prefix_len() == 0),
        "{routes:?}"
    );
    assert!(routes.iter().any(|r| r.destination == net("10.99.0.0/16")));
    assert!(links::delete_default_routes(ns, "eth0").unwrap().is_empty());
    assert!(matches!(
        links::delete_default_routes(ns, "nosuch0"),
        Err(links::LinkError::NotFound(_))
    ));
}
