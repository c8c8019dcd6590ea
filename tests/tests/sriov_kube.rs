//! End to end without SR-IOV hardware: a pod whose networks annotation names two NADs of type
//! `plexus-sriov` with one `resourceName`, against a real kube-apiserver. The kubelet stand-in
//! (a real PodResources gRPC server) hands the pod two VFs; a fake sysfs names real veth ends as
//! their netdevs, and the PF-side settings go to `plexus-sriov`'s recording fake. `plexus` gives
//! each network its VF, the VFs move into the pod with their addresses, and the network-status
//! annotation carries each VF's device-info (one from the device plugin, one written by the
//! plugin). Runs in the host's namespace, so `plexus` reaches the API server on loopback.

mod common;

use common::kube::{
    plexus_config, pod_cni_args, pod_object, Kube, PodCall, NETWORKS, NETWORK_STATUS,
};
use common::{addresses_of, ns, script_plugin};
use plexus::links;
use plexus_tests::podresources::PodResourcesServer;
use plexus_tests::sriov::FakeSysfs;
use plexus_tests::{cni_plugin_dir, plexus_bin_dir, root_or_skip, unique_name, TestPod};
use serde_json::{json, Value};

const VF_RESOURCE: &str = "intel.com/sriov_vf";
const PF_PCI: &str = "0000:af:00.1";
const VFS: [&str; 2] = ["0000:af:06.0", "0000:af:06.1"];

/// Veth pairs on the host standing in for VF netdevs; deleted on drop.
struct VfNetdevs(Vec<String>);

impl Drop for VfNetdevs {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = links::delete_link(None, name);
        }
    }
}

#[test]
fn two_sriov_networks_of_one_resource() {
    if !root_or_skip() {
        return;
    }
    let Some(kube) = Kube::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let kubelet = PodResourcesServer::start(&path("kubelet.sock"));

    // The node: two VF netdevs (veth ends), the fake sysfs, the device plugin's file for VF 0.
    let netdevs = VfNetdevs(vec![unique_name("pxvf"), unique_name("pxvf")]);
    for vf in &netdevs.0 {
        links::create_veth(None, vf, &unique_name("pxvp")).unwrap();
    }
    let sys = FakeSysfs::new(path("sys"))
        .pf(PF_PCI, "enp175s0f1")
        .vf(PF_PCI, 0, VFS[0], Some(&netdevs.0[0]))
        .vf(PF_PCI, 1, VFS[1], Some(&netdevs.0[1]));
    let dp_info = json!({"type": "pci", "version": "1.1.0",
                         "pci": {"pci-address": VFS[0], "pf-pci-address": PF_PCI,
                                 "vhost-net": "/dev/vhost-net"}});
    std::fs::create_dir_all(path("devinfo/dp")).unwrap();
    std::fs::write(
        path(&format!(
            "devinfo/dp/intel.com-sriov_vf-{}-device.json",
            VFS[0]
        )),
        dp_info.to_string(),
    )
    .unwrap();

    // The cluster: two NADs of the resource, and a pod asking for both.
    kube.namespace("sriov");
    for (name, subnet) in [("sriov-a", "10.56.0.0/24"), ("sriov-b", "10.57.0.0/24")] {
        let config = json!({
            "cniVersion": "1.0.0", "type": "plexus-sriov",
            "capabilities": {"deviceID": true, "CNIDeviceInfoFile": true},
            "sysfsRoot": sys.root(), "dataDir": path("sriov-state"),
            "ipam": {"type": "host-local", "subnet": subnet, "dataDir": path("ipam")}
        });
        kube.nad_of_resource("sriov", name, &config, Some(VF_RESOURCE));
    }
    let uid = kube.create_pod(
        "sriov",
        &pod_object(
            "dpdk-app",
            &[(NETWORKS, "sriov-a,sriov-b")],
            "app",
            &[(VF_RESOURCE, "2")],
        ),
    );
    kubelet.set_pod(
        "sriov",
        "dpdk-app",
        &[("app", VF_RESOURCE, &[VFS[1], VFS[0]])],
    );

    // Plexus, with a stand-in primary network.
    let bin = path("bin");
    script_plugin(
        &bin,
        "primary",
        "cat >/dev/null\n[ \"$CNI_COMMAND\" = ADD ] && echo '{\"cniVersion\":\"1.0.0\",\"ips\":[]}'\nexit 0",
    );
    let primary = path("10-primary.conf");
    std::fs::write(
        &primary,
        json!({"cniVersion": "1.0.0", "name": "pods", "type": "primary"}).to_string(),
    )
    .unwrap();
    let config = plexus_config(
        &kube,
        &primary,
        &path("cache"),
        &bin,
        json!({
            "podResourcesSocket": kubelet.socket,
            "kubeletCheckpointFile": path("kubelet_internal_checkpoint"),
            "deviceInfoDir": path("devinfo"),
        }),
    );
    let cni_path = format!(
        "{}:{}",
        plexus_bin_dir().display(),
        cni_plugin_dir().display()
    );
    let recorder = path("pf-calls");
    let pod = TestPod::new("pxsk");
    let args = pod_cni_args("sriov", "dpdk-app", &uid, None);
    let call = PodCall {
        container: "c-sriov-dpdk-app",
        netns: ns(&pod),
        cni_path: &cni_path,
        args: &args,
    };
    let cni = |command: &str| {
        call.run(
            command,
            &config,
            &[("PLEXUS_SRIOV_PF_RECORDER", recorder.to_str().unwrap())],
        )
    };

    cni("ADD").ok();
    for (ifname, prefix) in [("net1", "10.56.0."), ("net2", "10.57.0.")] {
        let addrs = addresses_of(&pod, ifname);
        assert!(
            addrs.len() == 1 && addrs[0].to_string().starts_with(prefix),
            "{ifname}: {addrs:?}"
        );
    }
    for vf in &netdevs.0 {
        assert!(
            links::link(None, vf).unwrap().is_none(),
            "{vf} is still on the node"
        );
    }

    let text = kube
        .pod_annotation("sriov", "dpdk-app", NETWORK_STATUS)
        .expect("a network-status annotation");
    println!("k8s.v1.cni.cncf.io/network-status of sriov/dpdk-app:\n{text}");
    let status: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(status[1]["name"], "sriov/sriov-a");
    assert_eq!(status[1]["interface"], "net1");
    assert_eq!(status[1]["device-info"], dp_info);
    assert_eq!(status[2]["name"], "sriov/sriov-b");
    assert_eq!(status[2]["interface"], "net2");
    assert_eq!(status[2]["device-info"]["type"], "pci");
    assert_eq!(status[2]["device-info"]["pci"]["pci-address"], VFS[1]);
    assert_eq!(status[2]["device-info"]["pci"]["pf-pci-address"], PF_PCI);

    cni("DEL").ok();
    for vf in &netdevs.0 {
        assert!(
            links::link(None, vf).unwrap().is_some(),
            "{vf} did not come back to the node"
        );
    }
    assert_eq!(
        pod.links()
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect::<Vec<_>>(),
        ["lo"]
    );
    let left: Vec<_> = std::fs::read_dir(path("devinfo/cni"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "device-info files left: {left:?}");
    assert!(std::fs::read_dir(path("cache")).unwrap().next().is_none());
}
