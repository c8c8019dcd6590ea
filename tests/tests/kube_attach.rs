//! `plexus` on a Kubernetes pod, against a real kube-apiserver and as Plexus's least-privilege
//! service account: both annotation forms, every runtimeConfig key reaching the delegate, the
//! capability check, namespace isolation, the default-network override, default-route
//! ownership, a duplicate interface name, a missing NetworkAttachmentDefinition, the
//! network-status annotation read back from the pod, the API requests an ADD makes, and DEL with
//! the API server stopped.
//!
//! The plugins run in the host's own namespace (with names of their own) so that `plexus`
//! reaches the API server on the host's loopback.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::kube::{
    plexus_config, pod_cni_args, write_cluster_network, Kube, PodCall, DEFAULT_NETWORK, NETWORKS,
};
use common::{addresses_of, ns, script_plugin, Lab, Outcome};
use plexus_tests::{cni_plugin_dir, root_or_skip, TestPod};
use serde_json::{json, Value};

/// One scenario's node, configuration and pod namespace.
struct Scenario {
    lab: Lab,
    config: Value,
    namespace: String,
}

impl Scenario {
    /// A node lab, a cluster network file in a conf dir, and Plexus's configuration for the
    /// service account.
    fn new(env: &Kube, namespace: &str) -> Scenario {
        let lab = Lab::on_host();
        let conf_dir = lab.dir.path().join("net.d");
        let mut primary = lab.bridge("1.0.0");
        primary["ipam"]["routes"] = json!([{"dst": "0.0.0.0/0", "gw": "10.10.0.254"}]);
        primary["capabilities"] = json!({"portMappings": true});
        let cluster_file = write_cluster_network(&conf_dir, &primary);
        let config = plexus_config(
            env,
            &cluster_file,
            &lab.cache_dir(),
            &lab.dir.path().join("bin"),
            json!({
                "confDir": conf_dir,
                "apiTimeoutSeconds": 2,
                "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
            }),
        );
        std::fs::create_dir_all(lab.dir.path().join("bin")).unwrap();
        env.namespace(namespace);
        Scenario {
            lab,
            config,
            namespace: namespace.into(),
        }
    }

    fn cni(&self, command: &str, pod: &TestPod, name: &str, uid: &str) -> Outcome {
        self.cni_with(command, ns(pod), name, uid, &self.config)
    }

    fn cni_with(
        &self,
        command: &str,
        netns: &str,
        name: &str,
        uid: &str,
        config: &Value,
    ) -> Outcome {
        let args = pod_cni_args(&self.namespace, name, uid, Some(&format!("c-{name}")));
        let path = cni_plugin_dir();
        PodCall {
            container: &format!("c-{}-{name}", self.namespace),
            netns,
            cni_path: path.to_str().unwrap(),
            args: &args,
        }
        .run(command, config, &[])
    }

    /// A delegate plugin in this scenario's bin dir that records its stdin per interface name.
    fn recorder(&self) -> PathBuf {
        let bin = self.lab.dir.path().join("bin");
        let body = format!(
            "cat > {d}/$CNI_COMMAND-$CNI_IFNAME.stdin\n\
             [ \"$CNI_COMMAND\" = ADD ] && echo '{{\"cniVersion\":\"1.0.0\",\"interfaces\":[{{\"name\":\"'$CNI_IFNAME'\",\"sandbox\":\"'$CNI_NETNS'\"}}],\"ips\":[{{\"address\":\"10.77.0.9/24\",\"interface\":0}}]}}'\nexit 0",
            d = bin.display()
        );
        script_plugin(&bin, "recorder", &body);
        bin
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn pods_get_their_network_attachment_definitions() {
    if !root_or_skip() {
        return;
    }
    let Some(env) = Kube::start() else {
        return;
    };

    short_form_and_network_status(&env);
    json_form_passes_every_runtime_config_key(&env);
    missing_capability_is_refused(&env);
    namespace_isolation(&env);
    default_network_override(&env);
    default_route_ownership(&env);
    duplicate_interface_name_is_refused(&env);
    missing_nad_rolls_back(&env);
    empty_nad_config_is_read_from_conf_dir(&env);
    annotations_from_the_runtime_skip_the_pod_get(&env);
    api_server_down(&env);
}

/// `storage,backup@data`: eth0, net1 and data, and the network-status on the pod object.
fn short_form_and_network_status(env: &Kube) {
    let s = Scenario::new(env, "short");
    env.nad("short", "storage", &s.lab.macvlan("1.0.0", "storage", 20));
    env.nad("short", "backup", &s.lab.macvlan("1.0.0", "backup", 30));
    let uid = env.pod("short", "web", &[(NETWORKS, "storage, short/backup@data")]);
    let pod = TestPod::new("pxk");
    let audit_from = env.cluster.audit_events().len();
    let result = s.cni("ADD", &pod, "web", &uid).ok();
    assert!(result["ips"][0]["address"]
        .as_str()
        .unwrap()
        .starts_with("10.10.0."));
    for (ifname, prefix) in [
        ("eth0", "10.10.0."),
        ("net1", "10.20.0."),
        ("data", "10.30.0."),
    ] {
        let addrs = addresses_of(&pod, ifname);
        assert!(
            addrs.len() == 1 && addrs[0].to_string().starts_with(prefix),
            "{ifname}: {addrs:?}"
        );
    }

    // One GET of the pod, one GET per distinct NAD, one PATCH: nothing else.
    let mut requests = env.plexus_requests_until(audit_from, "patch");
    requests.sort();
    assert_eq!(
        requests,
        [
            (
                "get".into(),
                "network-attachment-definitions".into(),
                "backup".into()
            ),
            (
                "get".into(),
                "network-attachment-definitions".into(),
                "storage".into()
            ),
            ("get".into(), "pods".into(), "web".into()),
            ("patch".into(), "pods".into(), "web".into()),
        ]
    );

    let status = env.network_status("short", "web");
    let entries = status.as_array().unwrap();
    assert_eq!(entries.len(), 3, "{status:#}");
    assert_eq!(entries[0]["name"], "pods");
    assert_eq!(entries[0]["interface"], "eth0");
    assert_eq!(entries[0]["default"], true);
    assert!(entries[0]["ips"][0]
        .as_str()
        .unwrap()
        .starts_with("10.10.0."));
    assert!(entries[0]["mac"].is_string());
    assert!(entries[0]["dns"].is_object());
    assert_eq!(entries[1]["name"], "short/storage");
    assert_eq!(entries[1]["interface"], "net1");
    assert!(entries[1].get("default").is_none());
    assert!(entries[1]["ips"][0]
        .as_str()
        .unwrap()
        .starts_with("10.20.0."));
    assert_eq!(entries[2]["name"], "short/backup");
    assert_eq!(entries[2]["interface"], "data");

    // DEL makes no API write (and needs no read: the cache has it all).
    let audit_from = env.cluster.audit_events().len();
    s.cni("DEL", &pod, "web", &uid).ok();
    std::thread::sleep(Duration::from_millis(300));
    assert!(env.plexus_requests(audit_from).is_empty());
    s.lab.assert_clean(Some(&pod));
}

/// The JSON form: `ips`, `mac`, `portMappings`, `bandwidth`, `infiniband-guid`, `deviceID` and
/// `cni-args` reach the delegate, and `ipam-claim-reference` reaches it in `args.cni` (for its
/// IPAM plugin); kubelet's port mappings reach only the primary; the same network twice is two
/// attachments.
fn json_form_passes_every_runtime_config_key(env: &Kube) {
    let s = Scenario::new(env, "json");
    s.recorder();
    let caps = json!({"ips": true, "mac": true, "portMappings": true, "bandwidth": true,
                      "infinibandGUID": true, "deviceID": true});
    env.nad(
        "json",
        "rec",
        &json!({"cniVersion": "1.0.0", "type": "recorder", "capabilities": caps,
                "args": {"cni": {"keep": "nad", "override": "nad"}}}),
    );
    let annotation = json!([
        {"name": "rec", "interface": "fast0", "ips": ["10.77.0.9/24"], "mac": "02:00:00:00:00:09",
         "portMappings": [{"hostPort": 9090, "containerPort": 90, "protocol": "udp"}],
         "bandwidth": {"ingressRate": 1000, "ingressBurst": 2000, "egressRate": 3000, "egressBurst": 4000},
         "infiniband-guid": "c2:11:22:33:44:55:66:77", "deviceID": "0000:03:02.3",
         "cni-args": {"override": "pod", "extra": 1}, "ipam-claim-reference": "vm-1.fast0"},
        {"name": "rec", "namespace": "json"}
    ])
    .to_string();
    let uid = env.pod("json", "api", &[(NETWORKS, &annotation)]);
    let pod = TestPod::new("pxk");
    s.cni("ADD", &pod, "api", &uid).ok();
    let bin = s.lab.dir.path().join("bin");
    let first = read_json(&bin.join("ADD-fast0.stdin"));
    let rc = &first["runtimeConfig"];
    assert_eq!(rc["ips"], json!(["10.77.0.9/24"]));
    assert_eq!(rc["mac"], "02:00:00:00:00:09");
    assert_eq!(rc["portMappings"][0]["hostPort"], 9090);
    assert_eq!(rc["bandwidth"]["egressBurst"], 4000);
    assert_eq!(rc["infinibandGUID"], "c2:11:22:33:44:55:66:77");
    assert_eq!(rc["deviceID"], "0000:03:02.3");
    assert_eq!(
        first["args"]["cni"],
        json!({"keep": "nad", "override": "pod", "extra": 1, "ipam-claim-reference": "vm-1.fast0"})
    );
    assert_eq!(first["name"], "rec");
    // The second attachment of the same network asked for nothing: no kubelet port mappings.
    let second = read_json(&bin.join("ADD-net2.stdin"));
    assert!(second.get("runtimeConfig").is_none(), "{second}");
    assert_eq!(
        second["args"]["cni"],
        json!({"keep": "nad", "override": "nad"}),
        "the claim is the first attachment's only"
    );
    let status = env.network_status("json", "api");
    assert_eq!(status.as_array().unwrap().len(), 3);
    assert_eq!(status[1]["interface"], "fast0");
    assert_eq!(status[2]["interface"], "net2");
    s.cni("DEL", &pod, "api", &uid).ok();
    s.lab.assert_clean(Some(&pod));
}

/// Static IPs on a network whose plugins do not declare `ips`: refused, nothing attached.
fn missing_capability_is_refused(env: &Kube) {
    let s = Scenario::new(env, "caps");
    env.nad("caps", "storage", &s.lab.macvlan("1.0.0", "storage", 20));
    let annotation = json!([{"name": "storage", "ips": ["10.20.0.50/24"]}]).to_string();
    let uid = env.pod("caps", "web", &[(NETWORKS, &annotation)]);
    let pod = TestPod::new("pxk");
    let out = s.cni("ADD", &pod, "web", &uid);
    assert_eq!(out.error_code(), 7);
    let msg = out.json["msg"].as_str().unwrap();
    assert!(msg.contains("ips") && msg.contains("storage"), "{msg}");
    s.lab.assert_clean(Some(&pod));
}

/// With `namespaceIsolation`, a pod may use its own namespace's and the global namespaces'
/// definitions only.
fn namespace_isolation(env: &Kube) {
    let mut s = Scenario::new(env, "iso-a");
    env.namespace("iso-b");
    s.config["namespaceIsolation"] = json!(true);
    s.config["globalNamespaces"] = json!("default,shared");
    env.nad("iso-b", "theirs", &s.lab.macvlan("1.0.0", "theirs", 20));
    env.nad("default", "common", &s.lab.macvlan("1.0.0", "common", 30));
    let uid = env.pod("iso-a", "web", &[(NETWORKS, "iso-b/theirs")]);
    let pod = TestPod::new("pxk");
    let out = s.cni("ADD", &pod, "web", &uid);
    assert_eq!(out.error_code(), 7);
    assert!(out.json["msg"].as_str().unwrap().contains("iso-b/theirs"));
    s.lab.assert_clean(Some(&pod));

    let uid = env.pod("iso-a", "ok", &[(NETWORKS, "default/common")]);
    s.cni("ADD", &pod, "ok", &uid).ok();
    assert_eq!(addresses_of(&pod, "net1").len(), 1);
    s.cni("DEL", &pod, "ok", &uid).ok();
    s.lab.assert_clean(Some(&pod));
}

/// `v1.multus-cni.io/default-network` replaces the cluster network as eth0.
fn default_network_override(env: &Kube) {
    let s = Scenario::new(env, "override");
    let mut alt = s.lab.bridge("1.0.0");
    alt["name"] = json!("alt");
    alt["ipam"]["subnet"] = json!("10.40.0.0/24");
    env.nad("kube-system", "alt-primary", &alt);
    let uid = env.pod(
        "override",
        "web",
        &[(DEFAULT_NETWORK, "kube-system/alt-primary")],
    );
    let pod = TestPod::new("pxk");
    let result = s.cni("ADD", &pod, "web", &uid).ok();
    assert!(result["ips"][0]["address"]
        .as_str()
        .unwrap()
        .starts_with("10.40.0."));
    assert!(addresses_of(&pod, "eth0")[0]
        .to_string()
        .starts_with("10.40.0."));
    let status = env.network_status("override", "web");
    assert_eq!(status[0]["name"], "kube-system/alt-primary");
    assert_eq!(status[0]["default"], true);
    s.cni("DEL", &pod, "web", &uid).ok();
    s.lab.assert_clean(Some(&pod));
}

/// `default-route` on one network moves the pod's default route there, out of the primary's
/// result and the pod; two owners are refused.
fn default_route_ownership(env: &Kube) {
    let s = Scenario::new(env, "route");
    env.nad("route", "storage", &s.lab.macvlan("1.0.0", "storage", 20));
    env.nad("route", "backup", &s.lab.macvlan("1.0.0", "backup", 30));
    let annotation =
        json!([{"name": "storage", "default-route": ["10.20.0.1"]}, {"name": "backup"}])
            .to_string();
    let uid = env.pod("route", "web", &[(NETWORKS, &annotation)]);
    let pod = TestPod::new("pxk");
    let result = s.cni("ADD", &pod, "web", &uid).ok();
    let defaults: Vec<_> = pod
        .routes()
        .unwrap()
        .into_iter()
        .filter(|r| r.destination.prefix_len() == 0 && r.destination.addr().is_ipv4())
        .collect();
    assert_eq!(defaults.len(), 1, "{defaults:?}");
    assert_eq!(defaults[0].ifname.as_deref(), Some("net1"));
    assert_eq!(defaults[0].gateway.unwrap().to_string(), "10.20.0.1");
    let routes = result["routes"].as_array().cloned().unwrap_or_default();
    assert!(routes.iter().all(|r| r["dst"] != "0.0.0.0/0"), "{result}");
    let status = env.network_status("route", "web");
    assert_eq!(status[1]["gateway"], json!(["10.20.0.1"]));
    assert!(status[0].get("gateway").is_none());
    s.cni("DEL", &pod, "web", &uid).ok();
    s.lab.assert_clean(Some(&pod));

    let two = json!([{"name": "storage", "default-route": ["10.20.0.1"]},
                     {"name": "backup", "default-route": ["10.30.0.1"]}])
    .to_string();
    let uid = env.pod("route", "two", &[(NETWORKS, &two)]);
    assert_eq!(s.cni("ADD", &pod, "two", &uid).error_code(), 7);
    s.lab.assert_clean(Some(&pod));
}

/// Two networks asking for the same interface name: refused before anything is attached.
fn duplicate_interface_name_is_refused(env: &Kube) {
    let s = Scenario::new(env, "dup");
    env.nad("dup", "storage", &s.lab.macvlan("1.0.0", "storage", 20));
    env.nad("dup", "backup", &s.lab.macvlan("1.0.0", "backup", 30));
    let uid = env.pod("dup", "web", &[(NETWORKS, "storage@same,backup@same")]);
    let pod = TestPod::new("pxk");
    assert_eq!(s.cni("ADD", &pod, "web", &uid).error_code(), 103);
    s.lab.assert_clean(Some(&pod));
}

/// A missing NetworkAttachmentDefinition: a clear error, nothing attached.
fn missing_nad_rolls_back(env: &Kube) {
    let s = Scenario::new(env, "missing");
    env.nad("missing", "storage", &s.lab.macvlan("1.0.0", "storage", 20));
    let uid = env.pod("missing", "web", &[(NETWORKS, "storage,nowhere")]);
    let pod = TestPod::new("pxk");
    let out = s.cni("ADD", &pod, "web", &uid);
    out.error_code();
    assert!(
        out.json["msg"]
            .as_str()
            .unwrap()
            .contains("missing/nowhere"),
        "{}",
        out.stdout
    );
    s.lab.assert_clean(Some(&pod));
    s.cni("DEL", &pod, "web", &uid).ok();
}

/// A NAD with an empty `spec` names the file of its name in `confDir`.
fn empty_nad_config_is_read_from_conf_dir(env: &Kube) {
    let s = Scenario::new(env, "ondisk");
    let conf_dir = s.lab.dir.path().join("net.d");
    let on_disk = s.lab.macvlan("1.0.0", "ondisk-net", 20);
    std::fs::write(conf_dir.join("20-ondisk.conflist"), on_disk.to_string()).unwrap();
    env.nad("ondisk", "ondisk-net", &Value::Null);
    let uid = env.pod("ondisk", "web", &[(NETWORKS, "ondisk-net")]);
    let pod = TestPod::new("pxk");
    s.cni("ADD", &pod, "web", &uid).ok();
    assert!(addresses_of(&pod, "net1")[0]
        .to_string()
        .starts_with("10.20.0."));
    s.cni("DEL", &pod, "web", &uid).ok();
    s.lab.assert_clean(Some(&pod));
}

/// containerd hands the pod's annotations over in runtimeConfig: no GET of the pod.
fn annotations_from_the_runtime_skip_the_pod_get(env: &Kube) {
    let mut s = Scenario::new(env, "cri");
    env.nad("cri", "storage", &s.lab.macvlan("1.0.0", "storage", 20));
    let uid = env.pod("cri", "web", &[(NETWORKS, "storage")]);
    s.config["runtimeConfig"]["io.kubernetes.cri.pod-annotations"] = json!({NETWORKS: "storage"});
    let pod = TestPod::new("pxk");
    let audit_from = env.cluster.audit_events().len();
    s.cni("ADD", &pod, "web", &uid).ok();
    let mut requests = env.plexus_requests_until(audit_from, "patch");
    requests.sort();
    assert_eq!(
        requests,
        [
            (
                "get".into(),
                "network-attachment-definitions".into(),
                "storage".into()
            ),
            ("patch".into(), "pods".into(), "web".into()),
        ]
    );
    assert_eq!(
        env.network_status("cri", "web").as_array().unwrap().len(),
        2
    );
    s.cni("DEL", &pod, "web", &uid).ok();
    s.lab.assert_clean(Some(&pod));
}

/// With the API server hung: ADD fails within its timeout and names the server; DEL still
/// tears down every attachment from the cache.
fn api_server_down(env: &Kube) {
    let s = Scenario::new(env, "down");
    env.nad("down", "storage", &s.lab.macvlan("1.0.0", "storage", 20));
    env.nad("down", "backup", &s.lab.macvlan("1.0.0", "backup", 30));
    let uid = env.pod("down", "web", &[(NETWORKS, "storage,backup")]);
    let attached = TestPod::new("pxk");
    s.cni("ADD", &attached, "web", &uid).ok();
    let uid2 = env.pod("down", "late", &[(NETWORKS, "storage")]);

    env.cluster.pause();
    let late = TestPod::new("pxk");
    let started = Instant::now();
    let out = s.cni("ADD", &late, "late", &uid2);
    let took = started.elapsed();
    let code = out.error_code();
    env.cluster.resume();
    assert_eq!(code, 11, "{}", out.stdout);
    assert!(
        out.json["msg"].as_str().unwrap().contains(&env.cluster.url),
        "{}",
        out.stdout
    );
    assert!(
        took < Duration::from_secs(6),
        "ADD took {took:?} with a 2 s API timeout"
    );

    env.cluster.pause();
    let del = s.cni("DEL", &attached, "web", &uid);
    // containerd's second DEL (RemovePodSandbox: no namespace, no cache entry left) must not
    // hang on the API server either.
    let second = s.cni_with("DEL", "", "web", &uid, &s.config);
    env.cluster.resume();
    del.ok();
    second.ok();
    s.cni("DEL", &late, "late", &uid2).ok();
    s.lab.assert_clean(Some(&attached));
    assert_eq!(late.links().unwrap().len(), 1);
}
