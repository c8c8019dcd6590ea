//! `plexus-sriov` run as a binary, without SR-IOV hardware: a fake sysfs names real veth ends as
//! the VF netdevs, the PF-side settings go to the recording fake (`PLEXUS_SRIOV_PF_RECORDER`),
//! and host-local from /usr/lib/cni is the IPAM. Each test runs in a throwaway node namespace.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{addresses_of, ns, run_plugin, script_plugin, spawn_plugin, wait_for_file, Outcome};
use plexus::links;
use plexus_tests::sriov::FakeSysfs;
use plexus_tests::{cni_plugin_dir, plexus_bin_dir, root_or_skip, unique_name, TestHost, TestPod};
use serde_json::{json, Value};

const PF_PCI: &str = "0000:af:00.1";
const PF: &str = "enp175s0f1";
const VF0: &str = "0000:af:06.0";
const VF1: &str = "0000:af:06.1";
const VF2: &str = "0000:af:06.2";

/// A node with a PF of three VFs: two netdev VFs (veth ends) and one DPDK VF.
struct Node {
    dir: tempfile::TempDir,
    sys: FakeSysfs,
    vf_netdevs: [String; 2],
    _host: TestHost,
}

impl Node {
    fn new() -> Node {
        let host = TestHost::enter();
        let dir = tempfile::tempdir().unwrap();
        let vf_netdevs = [unique_name("pxvf"), unique_name("pxvf")];
        for vf in &vf_netdevs {
            links::create_veth(None, vf, &unique_name("pxvp")).unwrap();
        }
        let sys = FakeSysfs::new(dir.path().join("sys"))
            .pf(PF_PCI, PF)
            .vf(PF_PCI, 0, VF0, Some(&vf_netdevs[0]))
            .vf(PF_PCI, 1, VF1, Some(&vf_netdevs[1]))
            .dpdk_vf(PF_PCI, 2, VF2, "vfio-pci");
        Node {
            dir,
            sys,
            vf_netdevs,
            _host: host,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self, version: &str, device: &str, extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": version, "name": "sriov-net", "type": "plexus-sriov",
            "deviceID": device,
            "sysfsRoot": self.sys.root(), "dataDir": self.path("state"),
            "ipam": {
                "type": "host-local", "subnet": "10.56.0.0/24", "gateway": "10.56.0.1",
                "routes": [{"dst": "10.57.0.0/16"}], "dataDir": self.path("ipam")
            }
        });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    fn run(
        &self,
        command: &str,
        container: &str,
        netns: &str,
        ifname: &str,
        config: &Value,
    ) -> Outcome {
        self.run_with_path(command, container, netns, ifname, config, &cni_plugin_dir())
    }

    fn run_with_path(
        &self,
        command: &str,
        container: &str,
        netns: &str,
        ifname: &str,
        config: &Value,
        cni_path: &Path,
    ) -> Outcome {
        let recorder = self.path("pf-calls");
        run_plugin(
            &plexus_bin_dir().join("plexus-sriov"),
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", container),
                ("CNI_NETNS", netns),
                ("CNI_IFNAME", ifname),
                ("CNI_PATH", cni_path.to_str().unwrap()),
                (
                    "CNI_ARGS",
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p",
                ),
                ("PLEXUS_SRIOV_PF_RECORDER", recorder.to_str().unwrap()),
            ],
            config.to_string().as_bytes(),
        )
    }

    /// The PF calls recorded so far, as JSON lines.
    fn calls(&self) -> Vec<Value> {
        std::fs::read_to_string(self.path("pf-calls"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The changes (not reads) recorded for VF `vf`, from the `skip`-th recorded call on.
    fn changes(&self, vf: u32, skip: usize) -> Vec<Value> {
        self.calls()
            .into_iter()
            .skip(skip)
            .filter(|c| c["vf"] == vf && c["op"] != "get")
            .map(|mut c| {
                assert_eq!(c["pf"], PF);
                let o = c.as_object_mut().unwrap();
                o.remove("pf");
                o.remove("vf");
                c
            })
            .collect()
    }

    fn state_files(&self) -> Vec<String> {
        std::fs::read_dir(self.path("state"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json"))
            .collect()
    }

    fn reservations(&self) -> Vec<String> {
        std::fs::read_dir(self.path("ipam/sriov-net"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect()
    }

    fn host_link(&self, name: &str) -> Option<links::LinkInfo> {
        links::link(None, name).unwrap()
    }
}

fn vf_settings() -> Value {
    json!({
        "vlan": 100, "vlanQoS": 3, "vlanProto": "802.1ad", "mac": "0A:11:22:33:44:55",
        "spoofchk": "off", "trust": "on", "link_state": "enable",
        "min_tx_rate": 10, "max_tx_rate": 100, "mtu": 1400
    })
}

#[test]
fn two_vfs_go_to_two_pods_configured_and_come_back_as_they_were() {
    if !root_or_skip() {
        return;
    }
    let node = Node::new();
    let (pod_a, pod_b) = (TestPod::new("pxsa-"), TestPod::new("pxsb-"));
    let originals: Vec<_> = node
        .vf_netdevs
        .iter()
        .map(|n| node.host_link(n).unwrap())
        .collect();
    let info_a = node.path("devinfo/a.json");
    let info_b = node.path("devinfo/b.json");
    std::fs::create_dir_all(node.path("devinfo")).unwrap();
    std::fs::write(
        &info_b,
        r#"{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:af:06.1"},"from":"dp"}"#,
    )
    .unwrap();

    let mut conf_a = node.config("1.1.0", VF0, vf_settings());
    conf_a["runtimeConfig"] = json!({"CNIDeviceInfoFile": info_a});
    let conf_b = node.config(
        "0.4.0",
        "ignored",
        json!({"deviceID": null, "pciBusID": VF1, "runtimeConfig": {"CNIDeviceInfoFile": info_b}}),
    );
    let result_a = node.run("ADD", "ctr-a", ns(&pod_a), "net1", &conf_a).ok();
    let result_b = node.run("ADD", "ctr-b", ns(&pod_b), "sriov0", &conf_b).ok();

    // The result: one interface in the pod, every address on it.
    assert_eq!(result_a["cniVersion"], "1.1.0");
    let iface = &result_a["interfaces"][0];
    assert_eq!(iface["name"], "net1");
    assert_eq!(iface["mac"], "0a:11:22:33:44:55");
    assert_eq!(iface["mtu"], 1400);
    assert_eq!(iface["sandbox"], ns(&pod_a));
    assert_eq!(iface["pciID"], VF0);
    assert_eq!(result_a["ips"][0]["interface"], 0);
    assert_eq!(result_a["ips"][0]["gateway"], "10.56.0.1");
    assert_eq!(result_b["cniVersion"], "0.4.0");
    assert_eq!(result_b["interfaces"][0]["name"], "sriov0");
    assert_eq!(result_b["ips"][0]["version"], "4");

    // Inside the pods, through netlink.
    let net1 = pod_a.link("net1").unwrap().expect("net1 in pod A");
    assert_eq!(net1.mac.as_deref(), Some("0a:11:22:33:44:55"));
    assert_eq!(net1.mtu, Some(1400));
    assert!(net1.up);
    let address_a = result_a["ips"][0]["address"].as_str().unwrap();
    assert_eq!(
        addresses_of(&pod_a, "net1"),
        vec![address_a.parse().unwrap()]
    );
    let route = pod_a
        .routes()
        .unwrap()
        .into_iter()
        .find(|r| r.destination.to_string() == "10.57.0.0/16")
        .expect("the IPAM route");
    assert_eq!(route.gateway, Some("10.56.0.1".parse().unwrap()));
    assert_eq!(route.ifname.as_deref(), Some("net1"));
    let sriov0 = pod_b.link("sriov0").unwrap().expect("sriov0 in pod B");
    assert_eq!(
        sriov0.mac, originals[1].mac,
        "no MAC asked: the VF keeps its own"
    );
    assert_eq!(addresses_of(&pod_b, "sriov0").len(), 1);
    for name in &node.vf_netdevs {
        assert!(node.host_link(name).is_none(), "{name} left in the host");
    }

    // The PF saw exactly the requested settings for VF 0, nothing for VF 1.
    assert_eq!(
        node.changes(0, 0),
        vec![
            json!({"op": "vlan", "vlan": 100, "qos": 3, "proto": "802.1ad"}),
            json!({"op": "mac", "mac": "0a:11:22:33:44:55"}),
            json!({"op": "rate", "min_tx_rate": 10, "max_tx_rate": 100}),
            json!({"op": "spoofchk", "on": false}),
            json!({"op": "trust", "on": true}),
            json!({"op": "link_state", "state": "enable"}),
        ]
    );
    assert!(node.changes(1, 0).is_empty());

    // Device-info: written when absent, left alone when the device plugin's copy is there.
    let written: Value = serde_json::from_slice(&std::fs::read(&info_a).unwrap()).unwrap();
    assert_eq!(written["pci"]["pci-address"], VF0);
    assert_eq!(written["pci"]["pf-pci-address"], PF_PCI);
    assert!(written.get("cni.plexus.dev/dpdk").is_none());
    let kept: Value = serde_json::from_slice(&std::fs::read(&info_b).unwrap()).unwrap();
    assert_eq!(kept["from"], "dp");

    // CHECK, and a second ADD of a VF that is in use.
    node.run("CHECK", "ctr-a", ns(&pod_a), "net1", &conf_a).ok();
    let pod_c = TestPod::new("pxsc-");
    let busy = node.run("ADD", "ctr-c", ns(&pod_c), "net1", &conf_a);
    assert_eq!(busy.own_error_code(), 7, "{}", busy.stdout);
    assert_eq!(node.state_files().len(), 2);

    // DEL: back in the host as it was, PF settings reset, state and reservations gone.
    let before_del = node.calls().len();
    node.run("DEL", "ctr-a", ns(&pod_a), "net1", &conf_a).ok();
    node.run("DEL", "ctr-b", ns(&pod_b), "sriov0", &conf_b).ok();
    for original in &originals {
        let back = node.host_link(&original.name).expect("VF back in the host");
        assert_eq!(
            (back.mac.clone(), back.mtu, back.up),
            (original.mac.clone(), original.mtu, original.up)
        );
    }
    assert_eq!(pod_a.links().unwrap().len(), 1, "only lo left in pod A");
    assert_eq!(
        node.changes(0, before_del),
        vec![
            json!({"op": "vlan", "vlan": 0, "qos": 0, "proto": "802.1q"}),
            json!({"op": "mac", "mac": "00:00:00:00:00:00"}),
            json!({"op": "rate", "min_tx_rate": 0, "max_tx_rate": 0}),
            json!({"op": "spoofchk", "on": true}),
            json!({"op": "trust", "on": false}),
            json!({"op": "link_state", "state": "auto"}),
        ]
    );
    assert!(
        !info_a.exists(),
        "the device-info plexus-sriov wrote is removed"
    );
    assert!(
        info_b.exists(),
        "the device plugin's device-info is not plexus-sriov's"
    );
    assert!(node.state_files().is_empty());
    assert!(node.reservations().is_empty());

    // DEL again (idempotent), and without any state.
    node.run("DEL", "ctr-a", ns(&pod_a), "net1", &conf_a).ok();
    node.run("DEL", "never-added", "", "net1", &conf_a).ok();
}

#[test]
fn dpdk_vf_gets_addresses_that_are_not_applied() {
    if !root_or_skip() {
        return;
    }
    let node = Node::new();
    let pod = TestPod::new("pxsd-");
    let info = node.path("devinfo/dpdk.json");
    let mut conf = node.config("1.0.0", VF2, json!({"vlan": 7}));
    conf["runtimeConfig"] = json!({"CNIDeviceInfoFile": info});
    let result = node.run("ADD", "ctr-d", ns(&pod), "net1", &conf).ok();
    let address = result["ips"][0]["address"].as_str().unwrap().to_string();
    assert_eq!(result["ips"][0]["interface"], 0);
    assert_eq!(result["interfaces"][0]["name"], "net1");
    assert_eq!(
        pod.links().unwrap().len(),
        1,
        "nothing is moved into the pod"
    );
    assert!(pod.addresses().unwrap().iter().all(|a| a.ifname == "lo"));

    let written: Value = serde_json::from_slice(&std::fs::read(&info).unwrap()).unwrap();
    assert_eq!(written["type"], "pci");
    assert_eq!(written["version"], "1.1.0");
    assert_eq!(written["pci"]["pci-address"], VF2);
    assert_eq!(written["pci"]["pf-pci-address"], PF_PCI);
    let dpdk = &written["cni.plexus.dev/dpdk"];
    assert_eq!(dpdk["driver"], "vfio-pci");
    assert_eq!(dpdk["addressesApplied"], false);
    assert_eq!(dpdk["addresses"], json!([address]));
    let mode = std::fs::metadata(&info).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o444);
    assert_eq!(
        node.changes(2, 0),
        vec![json!({"op": "vlan", "vlan": 7, "qos": 0, "proto": "802.1q"})]
    );

    node.run("DEL", "ctr-d", ns(&pod), "net1", &conf).ok();
    assert!(node.state_files().is_empty());
    assert!(node.reservations().is_empty());
    assert!(!info.exists());
    assert_eq!(node.changes(2, 0).len(), 2, "the VLAN is reset");
}

/// A pod that vanished without a DEL leaves its attachment's state behind; the next ADD of the
/// same VF undoes that attachment as its DEL would have (IPAM release, PF reset) before taking
/// the VF, so nothing of it leaks. (A DPDK VF, because a veth standing in for a netdev VF dies
/// with its namespace instead of coming back to the host as a real VF does.)
#[test]
fn the_next_add_undoes_an_attachment_whose_pod_vanished() {
    if !root_or_skip() {
        return;
    }
    let node = Node::new();
    let conf = node.config("1.0.0", VF2, json!({"vlan": 9}));
    let gone = TestPod::new("pxsv-");
    node.run("ADD", "ctr-v", ns(&gone), "net1", &conf).ok();
    assert_eq!(node.reservations().len(), 1);
    drop(gone); // no DEL: the runtime lost the pod

    let pod = TestPod::new("pxsw-");
    let result = node.run("ADD", "ctr-w", ns(&pod), "net1", &conf).ok();
    let address = result["ips"][0]["address"].as_str().unwrap();
    let held = node.reservations();
    assert_eq!(held.len(), 1, "the vanished pod's address is released");
    assert_eq!(format!("{}/24", held[0]), address);
    assert_eq!(node.state_files(), vec!["ctr-w-net1.json".to_string()]);
    assert_eq!(
        node.changes(2, 0),
        vec![
            json!({"op": "vlan", "vlan": 9, "qos": 0, "proto": "802.1q"}),
            json!({"op": "vlan", "vlan": 0, "qos": 0, "proto": "802.1q"}),
            json!({"op": "vlan", "vlan": 9, "qos": 0, "proto": "802.1q"}),
        ],
        "the stale VLAN is reset before the new one is set"
    );

    node.run("DEL", "ctr-w", ns(&pod), "net1", &conf).ok();
    assert!(node.state_files().is_empty());
    assert!(node.reservations().is_empty());
}

#[test]
fn del_works_with_the_namespace_gone_or_not_given() {
    if !root_or_skip() {
        return;
    }
    let node = Node::new();
    let conf = node.config("1.0.0", VF0, json!({"trust": "on"}));
    let conf_b = node.config("1.0.0", VF1, json!({"spoofchk": "off"}));
    let pod = TestPod::new("pxsg-");
    let pod_b = TestPod::new("pxsh-");
    node.run("ADD", "ctr-g", ns(&pod), "net1", &conf).ok();
    node.run("ADD", "ctr-h", ns(&pod_b), "net1", &conf_b).ok();
    let path = pod.path.clone();
    drop(pod); // the pod's namespace, and the veth end in it, are gone

    node.run("DEL", "ctr-g", path.to_str().unwrap(), "net1", &conf)
        .ok();
    node.run("DEL", "ctr-h", "", "net1", &conf_b).ok();
    assert_eq!(
        node.changes(0, 0),
        vec![
            json!({"op": "trust", "on": true}),
            json!({"op": "trust", "on": false})
        ]
    );
    assert_eq!(
        node.changes(1, 0),
        vec![
            json!({"op": "spoofchk", "on": false}),
            json!({"op": "spoofchk", "on": true})
        ]
    );
    assert!(node.state_files().is_empty());
    assert!(node.reservations().is_empty());
}

#[test]
fn bad_input_is_refused_with_a_code_and_leaves_nothing() {
    if !root_or_skip() {
        return;
    }
    let node = Node::new();
    let pod = TestPod::new("pxsx-");
    let cases = [
        (json!({"deviceID": null}), 7),
        (json!({"deviceID": "../../../etc"}), 7),
        (json!({"vlan": 5000}), 7),
        (json!({"vlanQoS": 9, "vlan": 1}), 7),
        (json!({"vlanQoS": 2}), 7),
        (json!({"vlanProto": "802.1x", "vlan": 3}), 7),
        (json!({"mac": "not-a-mac"}), 7),
        (json!({"spoofchk": "maybe"}), 7),
        (json!({"link_state": "up"}), 7),
        (json!({"min_tx_rate": 100, "max_tx_rate": 10}), 7),
        (json!({"ipam": {"subnet": "10.0.0.0/24"}}), 7),
        (json!({"deviceID": PF_PCI}), 7),
        (json!({"deviceID": "0000:af:07.0"}), 7),
        (json!({"cniVersion": "0.2.0"}), 1),
    ];
    for (extra, code) in cases {
        let conf = node.config("1.0.0", VF0, extra.clone());
        let out = node.run("ADD", "ctr-x", ns(&pod), "net1", &conf);
        assert_eq!(out.own_error_code(), code, "{extra}: {}", out.stdout);
    }
    let out = node.run("ADD", "ctr-x", ns(&pod), "net1", &json!("not an object"));
    assert_eq!(out.own_error_code(), 6);
    assert_eq!(pod.links().unwrap().len(), 1);
    assert!(node.host_link(&node.vf_netdevs[0]).is_some());
    assert!(node.state_files().is_empty());
    assert!(node.calls().iter().all(|c| c["op"] == "get"));

    let version = node
        .run("VERSION", "", "", "", &json!({"cniVersion": "1.0.0"}))
        .ok();
    assert_eq!(
        version["supportedVersions"],
        json!(["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
}

#[test]
fn a_failed_ipam_rolls_everything_back() {
    if !root_or_skip() {
        return;
    }
    let node = Node::new();
    let pod = TestPod::new("pxsf-");
    let bin = node.path("bin");
    script_plugin(
        &bin,
        "failing-ipam",
        r#"cat >/dev/null; if [ "$CNI_COMMAND" = ADD ]; then echo '{"cniVersion":"1.0.0","code":11,"msg":"pool busy"}'; exit 1; fi"#,
    );
    let original = node.host_link(&node.vf_netdevs[0]).unwrap();
    let conf = node.config("1.0.0", VF0, json!({"vlan": 9, "mac": "0a:00:00:00:00:09", "mtu": 1300, "ipam": {"type": "failing-ipam"}}));
    let out = node.run_with_path("ADD", "ctr-f", ns(&pod), "net1", &conf, &bin);
    assert_eq!(out.own_error_code(), 11, "{}", out.stdout);
    let back = node.host_link(&original.name).expect("VF back in the host");
    assert_eq!((back.mac, back.mtu), (original.mac, original.mtu));
    assert_eq!(pod.links().unwrap().len(), 1);
    assert_eq!(
        node.changes(0, 0),
        vec![
            json!({"op": "vlan", "vlan": 9, "qos": 0, "proto": "802.1q"}),
            json!({"op": "mac", "mac": "0a:00:00:00:00:09"}),
            json!({"op": "vlan", "vlan": 0, "qos": 0, "proto": "802.1q"}),
            json!({"op": "mac", "mac": "00:00:00:00:00:00"}),
        ]
    );
    assert!(node.state_files().is_empty());
}

#[test]
fn del_after_a_crash_during_ipam_restores_the_vf() {
    if !root_or_skip() {
        return;
    }
    let node = Node::new();
    let pod = TestPod::new("pxsk-");
    let bin = node.path("bin");
    let pid_file = node.path("ipam.pid");
    script_plugin(
        &bin,
        "slow-ipam",
        &format!(
            r#"cat >/dev/null; if [ "$CNI_COMMAND" = ADD ]; then echo $$ > {}; exec sleep 30; fi"#,
            pid_file.display()
        ),
    );
    let original = node.host_link(&node.vf_netdevs[0]).unwrap();
    let conf = node.config(
        "1.0.0",
        VF0,
        json!({"vlan": 12, "mac": "0a:00:00:00:00:0c", "ipam": {"type": "slow-ipam"}}),
    );
    let recorder = node.path("pf-calls");
    let mut child = spawn_plugin(
        &plexus_bin_dir().join("plexus-sriov"),
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "ctr-k"),
            ("CNI_NETNS", ns(&pod)),
            ("CNI_IFNAME", "net1"),
            ("CNI_PATH", bin.to_str().unwrap()),
            ("PLEXUS_SRIOV_PF_RECORDER", recorder.to_str().unwrap()),
        ],
        conf.to_string().as_bytes(),
    );
    wait_for_file(&pid_file, "IPAM never started");
    child.kill().unwrap(); // SIGKILL while IPAM runs: the VF is in the pod, the state on disk
    child.wait().unwrap();
    if let Ok(pid) = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse::<i32>()
    {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    }
    assert!(
        pod.link("net1").unwrap().is_some(),
        "the crash left the VF in the pod"
    );
    assert_eq!(node.state_files().len(), 1);

    node.run_with_path("DEL", "ctr-k", ns(&pod), "net1", &conf, &bin)
        .ok();
    let back = node.host_link(&original.name).expect("VF back in the host");
    assert_eq!((back.mac, back.mtu), (original.mac, original.mtu));
    assert_eq!(pod.links().unwrap().len(), 1);
    assert!(node.state_files().is_empty());
    let resets = node.changes(0, 0);
    assert_eq!(resets.len(), 4, "{resets:?}");
    assert_eq!(
        resets[2],
        json!({"op": "vlan", "vlan": 0, "qos": 0, "proto": "802.1q"})
    );
}
