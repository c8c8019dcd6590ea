//! Device-plugin devices and device-info files, against a real kube-apiserver and as Plexus's
//! service account: NADs annotated `k8s.v1.cni.cncf.io/resourceName` get the devices the kubelet
//! allocated to the pod, from its PodResources API (a real gRPC server on a unix socket, the
//! stand-in for the kubelet) or, when that cannot answer, from its checkpoint file; the device
//! reaches every plugin as `deviceID`/`pciBusID` and, for the plugins that declare it, as
//! `runtimeConfig.deviceID`; device-info files are copied, offered, reported in the
//! network-status annotation and removed.
//!
//! The delegates are recording scripts; `plexus` runs in the host's namespace so that it reaches
//! the API server on the host's loopback.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::kube::{plexus_config, pod_cni_args, pod_object, Kube, PodCall, NETWORKS};
use common::{script_plugin, Outcome};
use plexus_tests::podresources::PodResourcesServer;
use plexus_tests::{cni_plugin_dir, root_or_skip, TestPod};
use serde_json::{json, Value};

const VF: &str = "intel.com/sriov_vf";

/// The cluster and the kubelet stand-in every scenario shares.
struct Env {
    kube: Kube,
    kubelet_dir: tempfile::TempDir,
    kubelet: PodResourcesServer,
}

impl Env {
    /// Creates a pod with this networks annotation (requesting `vfs` devices of [`VF`]) and
    /// returns its UID.
    fn pod(&self, namespace: &str, name: &str, networks: &str, vfs: u32) -> String {
        let count = vfs.to_string();
        let limits: &[(&str, &str)] = if vfs > 0 { &[(VF, &count)] } else { &[] };
        self.kube.create_pod(
            namespace,
            &pod_object(name, &[(NETWORKS, networks)], "c", limits),
        )
    }
}

/// One scenario's node: bin, cache and device-info directories, and Plexus's configuration.
struct Scenario {
    dir: tempfile::TempDir,
    config: Value,
    namespace: String,
}

impl Scenario {
    fn new(env: &Env, namespace: &str) -> Scenario {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        // Records its stdin per command, interface and plugin; when offered a device-info file
        // that nobody wrote, writes one itself (as an SR-IOV plugin may).
        let body = format!(
            "in={bin}/$CNI_COMMAND-$CNI_IFNAME-$(basename $0).stdin\ncat > $in\n\
             p=$(sed -n 's/.*\"CNIDeviceInfoFile\":\"\\([^\"]*\\)\".*/\\1/p' $in)\n\
             if [ \"$CNI_COMMAND\" = ADD ] && [ -n \"$p\" ] && [ ! -e \"$p\" ]; then\n\
               mkdir -p $(dirname $p); echo '{{\"type\":\"pci\",\"version\":\"1.1.0\",\"pci\":{{\"pci-address\":\"by-plugin\"}}}}' > $p\n\
             fi\n\
             [ \"$CNI_COMMAND\" = ADD ] && echo '{{\"cniVersion\":\"1.0.0\",\"interfaces\":[{{\"name\":\"'$CNI_IFNAME'\",\"sandbox\":\"'$CNI_NETNS'\"}}],\"ips\":[{{\"address\":\"10.77.0.9/24\",\"interface\":0}}]}}'\n\
             exit 0",
            bin = bin.display()
        );
        for name in ["rec", "rec2", "primary"] {
            script_plugin(&bin, name, &body);
        }
        script_plugin(
            &bin,
            "failer",
            "cat >/dev/null\n[ \"$CNI_COMMAND\" = ADD ] && { echo '{\"cniVersion\":\"1.0.0\",\"code\":100,\"msg\":\"no\"}'; exit 1; }\nexit 0",
        );
        let primary = dir.path().join("10-primary.conf");
        std::fs::write(
            &primary,
            json!({"cniVersion": "1.0.0", "name": "pods", "type": "primary"}).to_string(),
        )
        .unwrap();
        let config = plexus_config(
            &env.kube,
            &primary,
            &dir.path().join("cache"),
            &bin,
            json!({
                "apiTimeoutSeconds": 5,
                "podResourcesSocket": env.kubelet.socket,
                "kubeletCheckpointFile": env.kubelet_dir.path().join("kubelet_internal_checkpoint"),
                "deviceInfoDir": dir.path().join("devinfo"),
            }),
        );
        env.kube.namespace(namespace);
        Scenario {
            dir,
            config,
            namespace: namespace.into(),
        }
    }

    fn cni(&self, command: &str, pod: &TestPod, name: &str, uid: &str) -> Outcome {
        let args = pod_cni_args(&self.namespace, name, uid, Some(&format!("c-{name}")));
        let path = cni_plugin_dir();
        PodCall {
            container: &self.container(name),
            netns: pod.path.to_str().unwrap(),
            cni_path: path.to_str().unwrap(),
            args: &args,
        }
        .run(command, &self.config, &[])
    }

    fn container(&self, pod: &str) -> String {
        format!("c-{}-{pod}", self.namespace)
    }

    /// What plugin `plugin` of interface `ifname` got on stdin at ADD.
    fn stdin(&self, ifname: &str, plugin: &str) -> Value {
        let path = self
            .dir
            .path()
            .join(format!("bin/ADD-{ifname}-{plugin}.stdin"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        serde_json::from_str(&text).unwrap()
    }

    fn devinfo(&self) -> PathBuf {
        self.dir.path().join("devinfo")
    }

    /// Writes the device plugin's device-info file of a device.
    fn dp_file(&self, device: &str) -> Value {
        let info = json!({"type": "pci", "version": "1.1.0",
                          "pci": {"pci-address": device, "pf-pci-address": "0000:03:00.0"}});
        let dp = self.devinfo().join("dp");
        std::fs::create_dir_all(&dp).unwrap();
        std::fs::write(
            dp.join(format!("intel.com-sriov_vf-{device}-device.json")),
            info.to_string(),
        )
        .unwrap();
        info
    }

    /// The CNI-side device-info files present.
    fn cni_files(&self) -> Vec<String> {
        files(&self.devinfo().join("cni"))
    }

    fn cache_entries(&self) -> Vec<String> {
        files(&self.dir.path().join("cache"))
    }
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn device_plugin_devices_and_device_info() {
    if !root_or_skip() {
        return;
    }
    let Some(kube) = Kube::start() else {
        return;
    };
    let kubelet_dir = tempfile::tempdir().unwrap();
    let kubelet = PodResourcesServer::start(&kubelet_dir.path().join("kubelet.sock"));
    let env = Env {
        kube,
        kubelet_dir,
        kubelet,
    };

    two_networks_of_one_resource(&env);
    no_resource_no_kubelet_call(&env);
    checkpoint_when_the_socket_is_missing_or_refuses(&env);
    checkpoint_when_the_kubelet_is_silent(&env);
    annotation_device_id_when_the_kubelet_has_none(&env);
    no_device_is_an_error(&env);
    rollback_removes_device_info(&env);
}

/// Two NADs of one resource: the pod's two devices in sorted order, `deviceID` and `pciBusID`
/// in every plugin, `runtimeConfig.deviceID` only where declared; device-info copied from the
/// device plugin (or written by the delegate), offered, reported, and removed by DEL.
fn two_networks_of_one_resource(env: &Env) {
    let s = Scenario::new(env, "two");
    env.kube.nad_of_resource(
        "two",
        "vf-a",
        &json!({"cniVersion": "1.0.0", "plugins": [
            {"type": "rec", "capabilities": {"deviceID": true, "CNIDeviceInfoFile": true}},
            {"type": "rec2"}
        ]}),
        Some(VF),
    );
    env.kube.nad_of_resource(
        "two",
        "vf-b",
        &json!({"cniVersion": "1.0.0", "type": "rec", "capabilities": {"CNIDeviceInfoFile": true}}),
        Some(VF),
    );
    let uid = env.pod("two", "web", "vf-a,vf-b", 2);
    // Unsorted, split over two containers, and a same-named pod elsewhere with other devices.
    env.kubelet.set_pod(
        "two",
        "web",
        &[
            ("c", VF, &["0000:03:02.5"]),
            ("sidecar", VF, &["0000:03:02.3"]),
            ("c", "intel.com/other", &["0000:81:00.1"]),
        ],
    );
    env.kubelet
        .set_pod("elsewhere", "web", &[("c", VF, &["0000:03:02.0"])]);
    let dp_info = s.dp_file("0000:03:02.3");
    let pod = TestPod::new("pxd");
    let calls = env.kubelet.calls();
    s.cni("ADD", &pod, "web", &uid).ok();
    assert_eq!(env.kubelet.calls(), calls + 1, "one List per ADD");

    let first = s.stdin("net1", "rec");
    let chained = s.stdin("net1", "rec2");
    let second = s.stdin("net2", "rec");
    for (conf, want) in [
        (&first, "0000:03:02.3"),
        (&chained, "0000:03:02.3"),
        (&second, "0000:03:02.5"),
    ] {
        assert_eq!(conf["deviceID"], want, "{conf}");
        assert_eq!(conf["pciBusID"], want, "{conf}");
    }
    let cni_dir = s.devinfo().join("cni");
    let file_a = cni_dir.join(format!("two-vf-a-{}_net1", s.container("web")));
    let file_b = cni_dir.join(format!("two-vf-b-{}_net2", s.container("web")));
    assert_eq!(
        first["runtimeConfig"],
        json!({"deviceID": "0000:03:02.3", "CNIDeviceInfoFile": file_a})
    );
    assert!(chained.get("runtimeConfig").is_none(), "{chained}");
    assert_eq!(
        second["runtimeConfig"],
        json!({"CNIDeviceInfoFile": file_b})
    );
    assert!(s.stdin("eth0", "primary").get("deviceID").is_none());

    let status = env.kube.network_status("two", "web");
    println!(
        "network-status of two/web:\n{}",
        serde_json::to_string_pretty(&status).unwrap()
    );
    assert_eq!(status[0]["name"], "pods");
    assert!(status[0].get("device-info").is_none());
    assert_eq!(status[1]["name"], "two/vf-a");
    assert_eq!(status[1]["device-info"], dp_info);
    assert_eq!(status[2]["name"], "two/vf-b");
    assert_eq!(status[2]["device-info"]["pci"]["pci-address"], "by-plugin");
    assert_eq!(s.cni_files().len(), 2);

    s.cni("DEL", &pod, "web", &uid).ok();
    assert!(s.cni_files().is_empty(), "{:?}", s.cni_files());
    assert!(s.cache_entries().is_empty());
    s.cni("DEL", &pod, "web", &uid).ok();
}

/// A pod whose networks name no resource: the kubelet is not asked.
fn no_resource_no_kubelet_call(env: &Env) {
    let s = Scenario::new(env, "plain");
    env.kube.nad_of_resource(
        "plain",
        "net",
        &json!({"cniVersion": "1.0.0", "type": "rec"}),
        None,
    );
    let uid = env.pod("plain", "web", "net", 0);
    let pod = TestPod::new("pxd");
    let calls = env.kubelet.calls();
    s.cni("ADD", &pod, "web", &uid).ok();
    assert_eq!(env.kubelet.calls(), calls);
    assert!(s.stdin("net1", "rec").get("deviceID").is_none());
    s.cni("DEL", &pod, "web", &uid).ok();
}

/// Writes the kubelet checkpoint: this pod's devices (keyed by NUMA node and, older form, a
/// plain list) and another pod's.
fn write_checkpoint(env: &Env, uid: &str) {
    let checkpoint = json!({"Data": {"PodDeviceEntries": [
        {"PodUID": "someone-else", "ContainerName": "c", "ResourceName": VF,
         "DeviceIDs": {"-1": ["0000:03:02.0"]}, "AllocResp": "CgA="},
        {"PodUID": uid, "ContainerName": "c", "ResourceName": VF,
         "DeviceIDs": {"0": ["0000:03:02.7"]}, "AllocResp": "CgA="},
        {"PodUID": uid, "ContainerName": "d", "ResourceName": VF,
         "DeviceIDs": ["0000:03:02.6"], "AllocResp": "CgA="}
    ], "RegisteredDevices": {VF: ["0000:03:02.0", "0000:03:02.6", "0000:03:02.7"]}}, "Checksum": 1});
    std::fs::write(
        env.kubelet_dir.path().join("kubelet_internal_checkpoint"),
        checkpoint.to_string(),
    )
    .unwrap();
}

/// Asserts that net1 and net2 got the checkpoint's two devices, in order, then detaches.
fn assert_checkpoint_devices(s: &Scenario, pod: &TestPod, name: &str, uid: &str) {
    assert_eq!(s.stdin("net1", "rec")["deviceID"], "0000:03:02.6");
    assert_eq!(s.stdin("net2", "rec")["deviceID"], "0000:03:02.7");
    s.cni("DEL", pod, name, uid).ok();
    assert!(s.cache_entries().is_empty());
}

/// No PodResources socket, or one nobody listens on: the checkpoint, matched by pod UID.
fn checkpoint_when_the_socket_is_missing_or_refuses(env: &Env) {
    let mut s = Scenario::new(env, "ckpt");
    env.kube.nad_of_resource(
        "ckpt",
        "vf",
        &json!({"cniVersion": "1.0.0", "type": "rec"}),
        Some(VF),
    );
    let uid = env.pod("ckpt", "web", "vf,vf", 2);
    write_checkpoint(env, &uid);
    s.config["podResourcesSocket"] = json!(s.dir.path().join("missing.sock"));
    let pod = TestPod::new("pxd");
    s.cni("ADD", &pod, "web", &uid).ok();
    assert_checkpoint_devices(&s, &pod, "web", &uid);

    let refusing = s.dir.path().join("refusing.sock");
    drop(std::os::unix::net::UnixListener::bind(&refusing).unwrap());
    s.config["podResourcesSocket"] = json!(refusing);
    s.cni("ADD", &pod, "web", &uid).ok();
    assert_checkpoint_devices(&s, &pod, "web", &uid);
}

/// A PodResources API that does not answer: given up after 2 s, then the checkpoint.
fn checkpoint_when_the_kubelet_is_silent(env: &Env) {
    let s = Scenario::new(env, "silent");
    env.kube.nad_of_resource(
        "silent",
        "vf",
        &json!({"cniVersion": "1.0.0", "type": "rec"}),
        Some(VF),
    );
    let uid = env.pod("silent", "web", "vf,vf", 2);
    write_checkpoint(env, &uid);
    env.kubelet.set_pod(
        "silent",
        "web",
        &[("c", VF, &["0000:aa:00.1", "0000:aa:00.2"])],
    );
    env.kubelet.set_delay(Duration::from_secs(10));
    let pod = TestPod::new("pxd");
    let started = Instant::now();
    let out = s.cni("ADD", &pod, "web", &uid);
    let took = started.elapsed();
    env.kubelet.set_delay(Duration::ZERO);
    out.ok();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "ADD took {took:?}"
    );
    assert_checkpoint_devices(&s, &pod, "web", &uid);
}

/// The kubelet has no device of the resource for the pod: the annotation's own `deviceID`.
fn annotation_device_id_when_the_kubelet_has_none(env: &Env) {
    let s = Scenario::new(env, "annot");
    env.kube.nad_of_resource(
        "annot",
        "vf",
        &json!({"cniVersion": "1.0.0", "type": "rec", "capabilities": {"deviceID": true}}),
        Some(VF),
    );
    let networks = json!([{"name": "vf", "deviceID": "0000:af:00.1"}]).to_string();
    let uid = env.pod("annot", "web", &networks, 0);
    env.kubelet.set_pod(
        "annot",
        "web",
        &[("c", "intel.com/other", &["0000:81:00.1"])],
    );
    let pod = TestPod::new("pxd");
    s.cni("ADD", &pod, "web", &uid).ok();
    let conf = s.stdin("net1", "rec");
    assert_eq!(conf["deviceID"], "0000:af:00.1");
    assert_eq!(conf["pciBusID"], "0000:af:00.1");
    assert_eq!(conf["runtimeConfig"]["deviceID"], "0000:af:00.1");
    s.cni("DEL", &pod, "web", &uid).ok();
    assert!(s.cache_entries().is_empty());
}

/// A NAD naming a resource the pod has no device of: a clear error, nothing attached.
fn no_device_is_an_error(env: &Env) {
    let s = Scenario::new(env, "nodev");
    env.kube.nad_of_resource(
        "nodev",
        "vf",
        &json!({"cniVersion": "1.0.0", "type": "rec"}),
        Some(VF),
    );
    let uid = env.pod("nodev", "web", "vf,vf", 1);
    env.kubelet
        .set_pod("nodev", "web", &[("c", VF, &["0000:03:02.1"])]);
    s.dp_file("0000:03:02.1");
    let pod = TestPod::new("pxd");
    let out = s.cni("ADD", &pod, "web", &uid);
    assert_eq!(out.own_error_code(), 7, "{}", out.stdout);
    let msg = out.json["msg"].as_str().unwrap();
    println!("ADD with too few devices: {}", out.stdout.trim());
    assert!(
        msg.contains("nodev/vf") && msg.contains(VF) && msg.contains("nodev/web"),
        "{msg}"
    );
    assert!(files(&s.dir.path().join("bin"))
        .iter()
        .all(|f| !f.starts_with("ADD")));
    assert!(s.cache_entries().is_empty(), "{:?}", s.cache_entries());
    assert!(s.cni_files().is_empty(), "{:?}", s.cni_files());
    s.cni("DEL", &pod, "web", &uid).ok();
}

/// A later network fails: the device-info file already copied for an earlier one is removed.
fn rollback_removes_device_info(env: &Env) {
    let s = Scenario::new(env, "rollback");
    env.kube.nad_of_resource(
        "rollback",
        "vf",
        &json!({"cniVersion": "1.0.0", "type": "rec"}),
        Some(VF),
    );
    env.kube.nad_of_resource(
        "rollback",
        "broken",
        &json!({"cniVersion": "1.0.0", "type": "failer"}),
        None,
    );
    let uid = env.pod("rollback", "web", "vf,broken", 1);
    env.kubelet
        .set_pod("rollback", "web", &[("c", VF, &["0000:03:02.2"])]);
    s.dp_file("0000:03:02.2");
    let pod = TestPod::new("pxd");
    let out = s.cni("ADD", &pod, "web", &uid);
    assert_eq!(out.error_code(), 100, "{}", out.stdout);
    assert_eq!(s.stdin("net1", "rec")["deviceID"], "0000:03:02.2");
    assert!(s.cni_files().is_empty(), "{:?}", s.cni_files());
    s.cni("DEL", &pod, "web", &uid).ok();
    assert!(s.cache_entries().is_empty());
}
