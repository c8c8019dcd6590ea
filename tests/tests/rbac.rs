//! The shipped RBAC (`examples/k3s/01-rbac.yaml`, exactly as the local cluster applies it) against
//! a real kube-apiserver 1.20 with `--authorization-mode=RBAC`, as Plexus's service account:
//!
//! * everything Plexus does is allowed: `plexus` ADD and DEL of a pod on a macvlan network whose
//!   addresses come from plexus-ipam's Kubernetes store (the pod's GET and PATCH, the NAD's GET,
//!   the IPAM's blocks and Leases), plexus-ipam's GC, a takeover of a Lease written by the
//!   previous version, `plexusctl ipam pools` and `plexusctl ipam gc`, and what the node agent
//!   `plexusd` adds: list and watch of the pods of its node (field selector `spec.nodeName`)
//!   and of the NADs, create of core Events; the API server refuses none
//!   of the service account's requests;
//! * what a node's stolen credentials must not do is refused by the API server (403): updating
//!   or deleting a node's heartbeat Lease in `kube-node-lease`, updating or deleting a
//!   controller's leader Lease in `kube-system`, touching the IPAM's Leases or blocks outside
//!   its namespace, deleting them inside it, reading or listing Secrets, creating, updating or
//!   deleting pods or their status, writing NADs, reading, listing, updating, deleting
//!   or patching Events: the agent's grants add reading pods and creating Events, nothing more;
//! * plexus-ipam leaves a Lease it did not write alone: a Lease with a block Lease's name but
//!   not plexus-ipam's labels is an error naming it, and stays as it was.
//!
//! The part that attaches a pod needs root (network namespaces, macvlan); the rest does not.

mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, Instant};

use common::kube::{
    plexus_config, pod_cni_args, pod_object, write_cluster_network, Kube, PodCall, NETWORKS,
};
use common::{addresses_of, ns, run_plugin, Lab};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference, Pod, Secret};
use k8s_openapi::api::events::v1 as events;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams};
use kube::core::ObjectMeta;
use plexus_crds::{IpamBlock, IpamClaim, IpamClaimSpec, NetworkAttachmentDefinition};
use plexus_ipam::backends::kubernetes::layout::Layout;
use plexus_ipam::backends::kubernetes::{KubeClient, KubeOptions, KubeStore, DEFAULT_TIMEOUT};
use plexus_ipam::store::{Owner, Pool, Store};
use plexus_tests::cluster::{IPAM_NAMESPACE, SA_USER};
use plexus_tests::ipam::pool;
use plexus_tests::{cni_plugin_dir, plexus_bin_dir, root_or_skip, TestPod};
use serde_json::{json, Value};

/// The namespace of the test's pods and NADs.
const POD_NAMESPACE: &str = "rbac";
/// The label of plexus-ipam's Leases that says who manages them.
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The network label of plexus-ipam's blocks and Leases.
const NETWORK_LABEL: &str = "ipam.plexus.cni.dev/network";
/// The annotation of a block Lease holding the block CIDR.
const CIDR_ANNOTATION: &str = "ipam.plexus.cni.dev/cidr";

#[test]
fn the_shipped_rbac_allows_plexus_and_refuses_the_rest() {
    let root = root_or_skip();
    let Some(env) = Kube::start() else { return };
    env.namespace(POD_NAMESPACE);
    let hints = tempfile::tempdir().unwrap();

    if root {
        plexus_add_del_and_gc(&env, hints.path());
    }
    leases_of_the_previous_version_are_taken_over(&env, hints.path());
    foreign_leases_are_left_alone(&env, hints.path());
    plexusctl_pools_and_gc(&env);
    the_node_agent_watches_and_writes_events(&env);
    nothing_plexus_asked_was_refused(&env);
    what_a_node_must_not_do_is_refused(&env);
}

/// `plexus` ADD and DEL of a pod with a plexus-ipam network on the Kubernetes store, and
/// plexus-ipam's GC, all as the service account.
fn plexus_add_del_and_gc(env: &Kube, hints: &std::path::Path) {
    let lab = Lab::on_host();
    let bin = lab.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(
        plexus_bin_dir().join("plexus-ipam"),
        bin.join("plexus-ipam"),
    )
    .unwrap();
    let conf_dir = lab.dir.path().join("net.d");
    let cluster_file = write_cluster_network(&conf_dir, &lab.bridge("1.0.0"));
    let config = plexus_config(
        env,
        &cluster_file,
        &lab.cache_dir(),
        &bin,
        json!({"confDir": conf_dir}),
    );
    let ipam = json!({
        "type": "plexus-ipam", "range": "10.66.0.0/24", "network_name": "rbac",
        "kubernetes": {"kubeconfig": env.cluster.sa_kubeconfig(), "namespace": IPAM_NAMESPACE}
    });
    let network = json!({
        "cniVersion": "1.0.0", "name": "rbac-net",
        "plugins": [{"type": "macvlan", "master": lab.master, "mode": "bridge", "ipam": ipam}]
    });
    env.nad(POD_NAMESPACE, "rbac-net", &network);
    let uid = env.pod(POD_NAMESPACE, "web", &[(NETWORKS, "rbac-net")]);
    let pod = TestPod::new("pxr");
    let args = pod_cni_args(POD_NAMESPACE, "web", &uid, Some("c-rbac-web"));
    let cni_path = cni_plugin_dir();
    let call = PodCall {
        container: "c-rbac-web",
        netns: ns(&pod),
        cni_path: cni_path.to_str().unwrap(),
        args: &args,
    };
    let node_env = [
        ("NODE_NAME", "node-rbac"),
        ("PLEXUS_IPAM_AFFINITY_DIR", hints.to_str().unwrap()),
    ];

    call.run("ADD", &config, &node_env).ok();
    let net1 = addresses_of(&pod, "net1");
    assert_eq!(net1[0].to_string(), "10.66.0.1/24", "{net1:?}");
    let status = env.network_status(POD_NAMESPACE, "web");
    assert_eq!(status[1]["ips"][0], "10.66.0.1", "{status}");
    let lease = env
        .rt
        .block_on(lease_in(env, IPAM_NAMESPACE, "ipam-rbac-10.66.0.0-26"));
    let labels = lease.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels[MANAGED_BY], "plexus", "{labels:?}");
    assert_eq!(
        labels["ipam.plexus.cni.dev/node"], "node-rbac",
        "{labels:?}"
    );
    assert_eq!(labels["ipam.plexus.cni.dev/block"], "rbac-10.66.0.0-26");

    call.run("DEL", &config, &node_env).ok();
    assert!(allocations(env, "rbac-10.66.0.0-26").is_empty());

    // GC (CNI 1.1) by plexus-ipam itself: an allocation of a container that is no longer valid
    // is released.
    let mut direct = network["plugins"][0].clone();
    direct["cniVersion"] = json!("1.1.0");
    direct["name"] = json!("rbac-net");
    let ipam_env = |command: &'static str| {
        vec![
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", "c-stale"),
            ("CNI_NETNS", "/run/netns/none"),
            ("CNI_IFNAME", "net1"),
            (
                "CNI_ARGS",
                "K8S_POD_NAMESPACE=rbac;K8S_POD_NAME=stale;K8S_POD_UID=u-stale",
            ),
            ("CNI_PATH", "/nonexistent"),
            ("NODE_NAME", "node-rbac"),
            ("PLEXUS_IPAM_AFFINITY_DIR", hints.to_str().unwrap()),
        ]
    };
    let plexus_ipam = plexus_bin_dir().join("plexus-ipam");
    let added = run_plugin(
        &plexus_ipam,
        &ipam_env("ADD"),
        direct.to_string().as_bytes(),
    )
    .ok();
    assert_eq!(added["ips"][0]["address"], "10.66.0.1/24", "{added}");
    direct["cni.dev/valid-attachments"] = json!([]);
    run_plugin(&plexus_ipam, &ipam_env("GC"), direct.to_string().as_bytes()).ok();
    assert!(allocations(env, "rbac-10.66.0.0-26").is_empty());
    eprintln!("plexus ADD and DEL, plexus-ipam ADD and GC: allowed");
}

/// A store of plexus-ipam as the service account on `node`.
async fn store(env: &Kube, node: &str, hints: &std::path::Path) -> KubeStore {
    let options = KubeOptions {
        hint_dir: hints.to_path_buf(),
        ..KubeOptions::new(node)
    };
    KubeStore::from_kubeconfig(
        env.cluster.sa_kubeconfig(),
        IPAM_NAMESPACE,
        DEFAULT_TIMEOUT,
        options,
    )
    .await
    .expect("a store from the service account's kubeconfig")
}

fn owner(pod: &str, node: &str) -> Owner {
    plexus_tests::ipam::owner_in(POD_NAMESPACE, pod, node)
}

/// The name of the Lease of the (only) block of `pool`.
fn lease_name(pool: &Pool) -> String {
    let layout = Layout::new(pool, 26, 122).unwrap();
    let block = layout.block_of(pool.range.address(0));
    Layout::lease_name(&layout.block_name(block))
}

/// A Lease held by `holder`, renewed an hour ago for 300 s: expired.
fn expired_lease(name: &str, labels: &[(&str, &str)], cidr: Option<&str>, holder: &str) -> Lease {
    let past =
        k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_hours(1);
    Lease {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            annotations: cidr.map(|c| [(CIDR_ANNOTATION.to_string(), c.to_string())].into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(300),
            acquire_time: Some(MicroTime(past)),
            renew_time: Some(MicroTime(past)),
            ..LeaseSpec::default()
        }),
    }
}

async fn lease_in(env: &Kube, namespace: &str, name: &str) -> Lease {
    let api: Api<Lease> = Api::namespaced(env.admin.clone(), namespace);
    api.get(name).await.expect("the lease")
}

async fn create_lease(env: &Kube, namespace: &str, lease: &Lease) -> Lease {
    let api: Api<Lease> = Api::namespaced(env.admin.clone(), namespace);
    api.create(&PostParams::default(), lease)
        .await
        .expect("admin creates a lease")
}

/// The addresses held in the IPAM block `name`.
fn allocations(env: &Kube, name: &str) -> Vec<String> {
    let api: Api<IpamBlock> = Api::namespaced(env.admin.clone(), IPAM_NAMESPACE);
    let block = env.rt.block_on(api.get(name)).expect("the block");
    block.spec.allocations.into_keys().collect()
}

/// An expired Lease as the version before the labels wrote it (name, network label, CIDR
/// annotation, a node as holder) is taken over on an empty block, and gets the labels.
fn leases_of_the_previous_version_are_taken_over(env: &Kube, hints: &std::path::Path) {
    env.rt.block_on(async {
        let p = pool("legacy", "10.69.0.0/26");
        let name = lease_name(&p);
        assert_eq!(name, "ipam-legacy-10.69.0.0-26");
        let old = expired_lease(
            &name,
            &[(NETWORK_LABEL, "legacy")],
            Some("10.69.0.0/26"),
            "node-old",
        );
        create_lease(env, IPAM_NAMESPACE, &old).await;
        let store = store(env, "node-new", hints).await;
        let ip = store.allocate(&p, &owner("gone", "node-new")).await;
        assert_eq!(ip.unwrap().to_string(), "10.69.0.1");
        let lease = lease_in(env, IPAM_NAMESPACE, &name).await;
        let spec = lease.spec.clone().unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("node-new"));
        let labels = lease.metadata.labels.unwrap();
        assert_eq!(labels[MANAGED_BY], "plexus");
        assert_eq!(labels[NETWORK_LABEL], "legacy");
    });
}

/// A Lease of a block's name that plexus-ipam did not write, unlabelled (not listed) or
/// labelled as the network's but managed by someone else: the ADD fails naming it, and the
/// Lease is as it was.
fn foreign_leases_are_left_alone(env: &Kube, hints: &std::path::Path) {
    env.rt.block_on(async {
        let store = store(env, "node-a", hints).await;
        let cases = [
            ("alien", "10.70.0.0/26", vec![], "kube-scheduler-1_2f6c"),
            (
                "alien2",
                "10.71.0.0/26",
                vec![(NETWORK_LABEL, "alien2"), (MANAGED_BY, "someone-else")],
                "node-b",
            ),
        ];
        for (network, cidr, labels, holder) in cases {
            let p = pool(network, cidr);
            let name = lease_name(&p);
            let foreign = expired_lease(&name, &labels, Some(cidr), holder);
            let created = create_lease(env, IPAM_NAMESPACE, &foreign).await;
            let e = store
                .allocate(&p, &owner("web", "node-a"))
                .await
                .expect_err("a foreign lease is not taken over");
            let text = e.to_string();
            assert!(
                text.contains(&format!("leases \"{IPAM_NAMESPACE}/{name}\""))
                    && text.contains("not written by plexus-ipam"),
                "{text}"
            );
            eprintln!("a foreign Lease: {text}");
            let after = lease_in(env, IPAM_NAMESPACE, &name).await;
            assert_eq!(
                after.metadata.resource_version, created.metadata.resource_version,
                "the foreign lease was changed"
            );
        }
    });
}

/// Runs `plexusctl ipam <args>` as the service account in the IPAM namespace: its exit status
/// and stdout.
fn plexusctl(env: &Kube, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(plexus_bin_dir().join("plexusctl"))
        .arg("ipam")
        .args(args)
        .arg("--kubeconfig")
        .arg(env.cluster.sa_kubeconfig())
        .args(["--namespace", IPAM_NAMESPACE])
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run plexusctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// `plexusctl ipam pools` lists the NADs (every namespace) and the blocks; `plexusctl ipam gc`
/// looks the pods up and releases the address of the pod that is gone.
fn plexusctl_pools_and_gc(env: &Kube) {
    let (ok, text) = plexusctl(env, &["pools"]);
    assert!(ok && text.contains("10.69.0.1"), "{text}");
    let (ok, text) = plexusctl(env, &["gc"]);
    assert!(ok && text.contains("released 10.69.0.1"), "{text}");
    eprintln!("plexusctl ipam pools and gc: allowed");
}

/// What the node agent does beyond the CNI binaries, as the service account: list and watch the
/// pods of its node and the NADs of every namespace, and create a core Event on a pod (never
/// patch one).
fn the_node_agent_watches_and_writes_events(env: &Kube) {
    let uid = env.pod(POD_NAMESPACE, "watched", &[]);
    env.rt.block_on(async {
        let sa = sa_client(env).await;
        let on_node = ListParams::default().fields("spec.nodeName=node-rbac");
        let watch_on_node = WatchParams::default()
            .fields("spec.nodeName=node-rbac")
            .timeout(1);
        let pods: Api<Pod> = Api::all(sa.clone());
        pods.list(&on_node).await.expect("list the node's pods");
        pods.watch(&watch_on_node, "0")
            .await
            .map(|_| ())
            .expect("watch the node's pods");
        let nads: Api<NetworkAttachmentDefinition> = Api::all(sa.clone());
        nads.list(&ListParams::default()).await.expect("list NADs");
        nads.watch(&WatchParams::default().timeout(1), "0")
            .await
            .map(|_| ())
            .expect("watch NADs");

        let regarding = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(POD_NAMESPACE.into()),
            name: Some("watched".into()),
            uid: Some(uid.clone()),
            ..Default::default()
        };
        let core: CoreEvent = serde_json::from_value(json!({
            "metadata": {"name": "watched.core", "namespace": POD_NAMESPACE},
            "involvedObject": regarding, "reason": "AddedInterface", "type": "Normal",
            "message": "Add net1 [10.66.0.2/24] from rbac/net", "count": 1,
            "source": {"component": "plexusd", "host": "node-rbac"},
        }))
        .unwrap();
        let core_events: Api<CoreEvent> = Api::namespaced(sa.clone(), POD_NAMESPACE);
        core_events
            .create(&PostParams::default(), &core)
            .await
            .expect("create an Event (core)");
    });
    eprintln!("the node agent's watches and its Event creation: allowed");
}

/// The service account's client.
async fn sa_client(env: &Kube) -> kube::Client {
    KubeClient::from_kubeconfig(env.cluster.sa_kubeconfig(), DEFAULT_TIMEOUT)
        .await
        .expect("the service account's client")
        .client()
        .clone()
}

/// The audit log: no request of the service account so far was refused.
fn nothing_plexus_asked_was_refused(env: &Kube) {
    // The API server writes an event just after it answers.
    std::thread::sleep(Duration::from_millis(500));
    let events = env.plexus_events(0);
    let refused: Vec<&Value> = events
        .iter()
        .filter(|e| matches!(e["responseStatus"]["code"].as_u64(), Some(401 | 403)))
        .collect();
    assert!(refused.is_empty(), "refused: {refused:#?}");
    let asked: BTreeSet<String> = events
        .iter()
        .map(|e| {
            let o = &e["objectRef"];
            let ns = o["namespace"].as_str().unwrap_or("*");
            format!(
                "{} {} in {ns}",
                e["verb"].as_str().unwrap_or(""),
                o["resource"].as_str().unwrap_or("")
            )
        })
        .collect();
    eprintln!(
        "what the service account asked for ({} requests): {asked:?}",
        events.len()
    );
}

/// A request of the service account must be refused by the API server: 403, naming it.
async fn refused<T: std::fmt::Debug>(what: &str, call: impl Future<Output = kube::Result<T>>) {
    match call.await {
        Err(kube::Error::Api(status)) if status.code == 403 => {
            assert!(
                status.message.contains(SA_USER),
                "{what}: {}",
                status.message
            );
        }
        other => panic!("{what}: the service account must be refused with 403, got {other:?}"),
    }
}

/// What a node's credentials must not do, tried for real as the service account.
fn what_a_node_must_not_do_is_refused(env: &Kube) {
    env.pod(POD_NAMESPACE, "victim", &[]);
    env.rt.block_on(async {
        let started = Instant::now();
        let sa = sa_client(env).await;
        let delete = DeleteParams::default();
        let post = PostParams::default();

        // Another node's heartbeat.
        let heartbeat = create_lease(
            env,
            "kube-node-lease",
            &expired_lease("node-b", &[], None, "node-b"),
        )
        .await;
        let leases: Api<Lease> = Api::namespaced(sa.clone(), "kube-node-lease");
        refused(
            "update a Lease in kube-node-lease",
            leases.replace("node-b", &post, &heartbeat),
        )
        .await;
        let renew = Patch::Merge(json!({"spec": {"holderIdentity": "node-a"}}));
        refused(
            "patch a Lease in kube-node-lease",
            leases.patch("node-b", &PatchParams::default(), &renew),
        )
        .await;
        refused(
            "delete a Lease in kube-node-lease",
            leases.delete("node-b", &delete),
        )
        .await;
        refused(
            "create a Lease in kube-node-lease",
            leases.create(&post, &expired_lease("node-c", &[], None, "node-c")),
        )
        .await;

        // A controller's leader Lease.
        let leader = create_lease(
            env,
            "kube-system",
            &expired_lease("kube-controller-manager", &[], None, "master_1f2e"),
        )
        .await;
        let leases: Api<Lease> = Api::namespaced(sa.clone(), "kube-system");
        refused(
            "delete a Lease in kube-system",
            leases.delete("kube-controller-manager", &delete),
        )
        .await;
        refused(
            "update a Lease in kube-system",
            leases.replace("kube-controller-manager", &post, &leader),
        )
        .await;
        refused(
            "list Leases in every namespace",
            Api::<Lease>::all(sa.clone()).list(&ListParams::default()),
        )
        .await;

        // An IPAMBlock outside the IPAM namespace.
        let outside: IpamBlock = serde_json::from_value(json!({
            "apiVersion": "ipam.plexus.cni.dev/v1alpha1", "kind": "IPAMBlock",
            "metadata": {"name": "net-10.72.0.0-26", "namespace": "default"},
            "spec": {"network": "net", "cidr": "10.72.0.0/26", "allocations": {}}
        }))
        .unwrap();
        let admin_blocks: Api<IpamBlock> = Api::namespaced(env.admin.clone(), "default");
        let outside = admin_blocks
            .create(&post, &outside)
            .await
            .expect("admin creates a block");
        let blocks: Api<IpamBlock> = Api::namespaced(sa.clone(), "default");
        refused(
            "delete an IPAMBlock in default",
            blocks.delete("net-10.72.0.0-26", &delete),
        )
        .await;
        refused(
            "update an IPAMBlock in default",
            blocks.replace("net-10.72.0.0-26", &post, &outside),
        )
        .await;
        refused(
            "get an IPAMBlock in default",
            blocks.get("net-10.72.0.0-26"),
        )
        .await;
        let leases: Api<Lease> = Api::namespaced(sa.clone(), "default");
        refused(
            "create a Lease in default",
            leases.create(&post, &expired_lease("ipam-x", &[], None, "node-a")),
        )
        .await;

        // IPAMClaims: read and their status patched, nothing else (authorization comes before
        // the resource lookup, so the CRD need not be installed).
        let claims: Api<IpamClaim> = Api::namespaced(sa.clone(), POD_NAMESPACE);
        let claim = IpamClaim::new(
            "vm",
            IpamClaimSpec {
                network: "net".into(),
                interface: "net1".into(),
            },
        );
        refused("create an IPAMClaim", claims.create(&post, &claim)).await;
        refused("update an IPAMClaim", claims.replace("vm", &post, &claim)).await;
        refused(
            "patch an IPAMClaim's spec",
            claims.patch(
                "vm",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"network": "other"}})),
            ),
        )
        .await;
        refused("delete an IPAMClaim", claims.delete("vm", &delete)).await;
        refused("list IPAMClaims", claims.list(&ListParams::default())).await;

        // Secrets, anywhere.
        for namespace in [IPAM_NAMESPACE, "kube-system", "default"] {
            let secrets: Api<Secret> = Api::namespaced(sa.clone(), namespace);
            refused(
                &format!("get a Secret in {namespace}"),
                secrets.get("plexus-token-1"),
            )
            .await;
            refused(
                &format!("list Secrets in {namespace}"),
                secrets.list(&ListParams::default()),
            )
            .await;
        }
        refused(
            "list Secrets in every namespace",
            Api::<Secret>::all(sa.clone()).list(&ListParams::default()),
        )
        .await;

        // Pods: read (the agent's cache) and their annotations patched, nothing else.
        for namespace in [POD_NAMESPACE, IPAM_NAMESPACE] {
            let pods: Api<Pod> = Api::namespaced(sa.clone(), namespace);
            let pod = pod_object("intruder", &[], "c", &[]);
            refused(
                &format!("create a pod in {namespace}"),
                pods.create(&post, &pod),
            )
            .await;
        }
        let pods: Api<Pod> = Api::namespaced(sa.clone(), POD_NAMESPACE);
        refused("delete a pod", pods.delete("victim", &delete)).await;
        let victim = env_pod(env, "victim").await;
        refused("update a pod", pods.replace("victim", &post, &victim)).await;
        refused(
            "update a pod's status",
            pods.replace_status("victim", &post, &victim),
        )
        .await;
        refused("evict a pod", pods.evict("victim", &Default::default())).await;

        // NADs: read, never written.
        let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(sa.clone(), POD_NAMESPACE);
        let nad: NetworkAttachmentDefinition = serde_json::from_value(json!({
            "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": "rogue"}, "spec": {"config": "{}"}
        }))
        .unwrap();
        refused("create a NAD", nads.create(&post, &nad)).await;
        refused("delete a NAD", nads.delete("rbac-net", &delete)).await;

        // Events: written, never read back, updated or deleted.
        for namespace in [POD_NAMESPACE, "kube-system"] {
            let new_events: Api<events::Event> = Api::namespaced(sa.clone(), namespace);
            let core_events: Api<CoreEvent> = Api::namespaced(sa.clone(), namespace);
            refused(
                &format!("list Events in {namespace}"),
                new_events.list(&ListParams::default()),
            )
            .await;
            refused(
                &format!("list core Events in {namespace}"),
                core_events.list(&ListParams::default()),
            )
            .await;
        }
        let new_events: Api<events::Event> = Api::namespaced(sa.clone(), POD_NAMESPACE);
        let core_events: Api<CoreEvent> = Api::namespaced(sa.clone(), POD_NAMESPACE);
        refused("get an Event", new_events.get("watched.core")).await;
        refused("get a core Event", core_events.get("watched.core")).await;
        refused(
            "delete an Event",
            new_events.delete("watched.core", &delete),
        )
        .await;
        refused(
            "delete a core Event",
            core_events.delete("watched.core", &delete),
        )
        .await;
        refused(
            "update a core Event",
            core_events.replace("watched.core", &post, &CoreEvent::default()),
        )
        .await;
        let count = Patch::Merge(json!({"count": 2}));
        let patch = PatchParams::default();
        refused(
            "patch a core Event",
            core_events.patch("watched.core", &patch, &count),
        )
        .await;
        refused(
            "patch an Event (events.k8s.io)",
            new_events.patch("watched.core", &patch, &count),
        )
        .await;
        eprintln!(
            "refusals checked in {:.1}s",
            started.elapsed().as_secs_f64()
        );
    });
}

/// The pod `name` of the test's namespace, as the administrator reads it.
async fn env_pod(env: &Kube, name: &str) -> Pod {
    let pods: Api<Pod> = Api::namespaced(env.admin.clone(), POD_NAMESPACE);
    pods.get(name).await.expect("the pod")
}
