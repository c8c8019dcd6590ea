//! End to end without SR-IOV hardware: a pod whose networks annotation names two NADs of type
//! `plexus-sriov` with one `resourceName`, against a real kube-apiserver. The kubelet stand-in
//! (a real PodResources gRPC server) hands the pod two VFs; a fake sysfs names real veth ends as
//! their netdevs, and the PF-side settings go to `plexus-sriov`'s recording fake. `plexus` gives
//! each network its VF, the VFs move into the pod with their addresses, and the network-status
//! annotation carries each VF's device-info (one from the device plugin, one written by the
//! plugin). Runs in the host's namespace, so `plexus` reaches the API server on loopback.

mod common;

use std::collections::BTreeMap;

use common::{addresses_of, ns, run_plexus_raw, script_plugin};
use k8s_openapi::api::core::v1::{Container, Namespace, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, PostParams};
use kube::core::ObjectMeta;
use plexus::links;
use plexus_crds::{NetworkAttachmentDefinition, NetworkAttachmentDefinitionSpec};
use plexus_tests::cluster::{self, LocalCluster};
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
    let Some(apiserver) = cluster::apiserver_or_skip() else {
        return;
    };
    let cluster = LocalCluster::start_with(&apiserver).expect("a local cluster");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let admin = {
        let _in_runtime = rt.enter();
        cluster.admin_client()
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
    let api_ns: Api<Namespace> = Api::all(admin.clone());
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some("sriov".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    rt.block_on(api_ns.create(&PostParams::default(), &namespace))
        .unwrap();
    let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(admin.clone(), "sriov");
    for (name, subnet) in [("sriov-a", "10.56.0.0/24"), ("sriov-b", "10.57.0.0/24")] {
        let config = json!({
            "cniVersion": "1.0.0", "type": "plexus-sriov",
            "capabilities": {"deviceID": true, "CNIDeviceInfoFile": true},
            "sysfsRoot": sys.root(), "dataDir": path("sriov-state"),
            "ipam": {"type": "host-local", "subnet": subnet, "dataDir": path("ipam")}
        });
        let mut nad = NetworkAttachmentDefinition::new(
            name,
            NetworkAttachmentDefinitionSpec {
                config: config.to_string(),
            },
        );
        nad.metadata.namespace = Some("sriov".into());
        nad.metadata.annotations = Some(
            [(
                "k8s.v1.cni.cncf.io/resourceName".to_string(),
                VF_RESOURCE.to_string(),
            )]
            .into(),
        );
        rt.block_on(nads.create(&PostParams::default(), &nad))
            .unwrap();
    }
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "sriov");
    let pod_object = Pod {
        metadata: ObjectMeta {
            name: Some("dpdk-app".into()),
            annotations: Some(
                [(
                    "k8s.v1.cni.cncf.io/networks".to_string(),
                    "sriov-a,sriov-b".to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some("busybox".into()),
                resources: Some(ResourceRequirements {
                    limits: Some(BTreeMap::from([(
                        VF_RESOURCE.to_string(),
                        Quantity("2".into()),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let uid = rt
        .block_on(pods.create(&PostParams::default(), &pod_object))
        .unwrap()
        .metadata
        .uid
        .unwrap();
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
    let config = json!({
        "cniVersion": "1.0.0", "name": "plexus", "type": "plexus",
        "kubeconfig": cluster.sa_kubeconfig(), "clusterNetwork": primary,
        "cniDir": path("cache"), "binDir": bin,
        "podResourcesSocket": kubelet.socket,
        "kubeletCheckpointFile": path("kubelet_internal_checkpoint"),
        "deviceInfoDir": path("devinfo"),
    });
    let cni_path = format!(
        "{}:{}",
        plexus_bin_dir().display(),
        cni_plugin_dir().display()
    );
    let recorder = path("pf-calls");
    let pod = TestPod::new("pxsk");
    let args =
        format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=sriov;K8S_POD_NAME=dpdk-app;K8S_POD_UID={uid}");
    let cni = |command: &str| {
        run_plexus_raw(
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", "c-sriov-dpdk-app"),
                ("CNI_NETNS", ns(&pod)),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", &cni_path),
                ("CNI_ARGS", &args),
                ("PLEXUS_SRIOV_PF_RECORDER", recorder.to_str().unwrap()),
            ],
            config.to_string().as_bytes(),
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

    let text = rt
        .block_on(pods.get("dpdk-app"))
        .unwrap()
        .metadata
        .annotations
        .unwrap_or_default()
        .remove("k8s.v1.cni.cncf.io/network-status")
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
