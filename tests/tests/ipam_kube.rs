//! `plexus-ipam`'s Kubernetes store against a real kube-apiserver 1.20
//! (`plexus_tests::cluster::LocalCluster`), as Plexus's least-privilege service account: the
//! allocator's behaviours as a table, round trips counted in the audit log, 8 processes
//! standing for 8 nodes allocating concurrently, allocators killed mid-flight and garbage
//! collection after them.
//!
//! Needs the cached kube-apiserver (`cargo xtask apiserver`), not root. Without it the tests
//! are skipped, except in CI.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, PostParams};
use kube::core::ObjectMeta;
use plexus_cni::CniError;
use plexus_crds::{IpamBlock, IpamClaim, IpamClaimSpec};
use plexus_ipam::backends::kubernetes::{
    KubeOptions, KubePods, KubeStore, ReclaimOptions, DEFAULT_TIMEOUT,
};
use plexus_ipam::gc::{self, GcOptions};
use plexus_ipam::pools;
use plexus_ipam::range::IpRange;
use plexus_ipam::store::{Owner, Pool, Store, StoreError};
use plexus_tests::cluster::{self, LocalCluster, SA_USER};
use plexus_tests::ipam::{ip, owner, pool};
use plexus_tests::runtime;
use serde::{Deserialize, Serialize};

/// The namespace of the IPAM objects (where the shipped RBAC grants them).
const NS: &str = cluster::IPAM_NAMESPACE;
/// The environment variable that turns the `worker` test into an allocator process.
const WORKER_ENV: &str = "PLEXUS_IPAM_KUBE_WORKER";

/// A cluster and a directory for the nodes' hints.
struct Env {
    cluster: LocalCluster,
    hints: tempfile::TempDir,
}

impl Env {
    fn start() -> Option<Env> {
        let apiserver = cluster::apiserver_or_skip()?;
        let cluster = LocalCluster::start_with(&apiserver).expect("a local cluster");
        Some(Env {
            cluster,
            hints: tempfile::tempdir().expect("a hint directory"),
        })
    }

    fn options(&self, node: &str) -> KubeOptions {
        KubeOptions {
            hint_dir: self.hints.path().to_path_buf(),
            ..KubeOptions::new(node)
        }
    }

    /// The store of `node`, as the service account.
    async fn store(&self, node: &str) -> KubeStore {
        self.store_with(self.options(node)).await
    }

    async fn store_with(&self, options: KubeOptions) -> KubeStore {
        KubeStore::from_kubeconfig(self.cluster.sa_kubeconfig(), NS, DEFAULT_TIMEOUT, options)
            .await
            .expect("a store from the service account's kubeconfig")
    }
}

async fn block(env: &Env, name: &str) -> Option<IpamBlock> {
    let api: Api<IpamBlock> = Api::namespaced(env.cluster.admin_client(), NS);
    api.get_opt(name).await.expect("get block")
}

async fn lease(env: &Env, name: &str) -> Option<Lease> {
    let api: Api<Lease> = Api::namespaced(env.cluster.admin_client(), NS);
    api.get_opt(name).await.expect("get lease")
}

fn holder(lease: &Lease) -> String {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .unwrap_or_default()
}

/// Sets a Lease's renewal an hour back: expired.
async fn expire(env: &Env, name: &str) {
    let api: Api<Lease> = Api::namespaced(env.cluster.admin_client(), NS);
    let mut lease = api.get(name).await.expect("the lease");
    let past =
        k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_hours(1);
    let spec = lease.spec.as_mut().expect("a spec");
    spec.renew_time = Some(MicroTime(past));
    spec.acquire_time = Some(MicroTime(past));
    api.replace(name, &PostParams::default(), &lease)
        .await
        .expect("replace the lease");
}

/// Expires every Lease of the namespace whose name contains `needle`.
async fn expire_all(env: &Env, needle: &str) -> usize {
    let api: Api<Lease> = Api::namespaced(env.cluster.admin_client(), NS);
    let names: Vec<String> = api
        .list(&Default::default())
        .await
        .expect("list leases")
        .items
        .into_iter()
        .filter_map(|l| l.metadata.name)
        .filter(|n| n.contains(needle))
        .collect();
    for name in &names {
        expire(env, name).await;
    }
    names.len()
}

/// The block objects of `network`, by name.
async fn blocks_of(env: &Env, network: &str) -> Vec<IpamBlock> {
    let api: Api<IpamBlock> = Api::namespaced(env.cluster.admin_client(), NS);
    api.list(&Default::default())
        .await
        .expect("list blocks")
        .items
        .into_iter()
        .filter(|b| b.spec.network == network)
        .collect()
}

/// The allocator's behaviours, one cluster, the cases in order.
#[test]
fn allocator_table() {
    let Some(env) = Env::start() else { return };
    runtime().block_on(async {
        first_adds_claim_blocks_per_node(&env).await;
        repeated_add_and_del(&env).await;
        range_bounds_exhaustion_and_reuse(&env).await;
        overlapping_ranges_share_addresses(&env).await;
        disjoint_ranges_of_one_network(&env).await;
        a_node_without_a_free_block_borrows(&env).await;
        expired_leases_are_taken_over_only_when_empty(&env).await;
        lost_hints_are_rebuilt_from_the_leases(&env).await;
        a_second_block_size_is_refused(&env).await;
        ipv6_64_and_dual_stack(&env).await;
        round_trips_from_the_audit_log(&env).await;
        usage_and_pools(&env).await;
    });
}

async fn first_adds_claim_blocks_per_node(env: &Env) {
    let p = pool("basic", "10.1.0.0/24");
    let a = env.store("node-a").await;
    let b = env.store("node-b").await;
    assert_eq!(
        a.allocate(&p, &owner("p1", "node-a")).await.unwrap(),
        ip("10.1.0.1")
    );
    assert_eq!(
        b.allocate(&p, &owner("p2", "node-b")).await.unwrap(),
        ip("10.1.0.64")
    );
    assert_eq!(
        a.allocate(&p, &owner("p3", "node-a")).await.unwrap(),
        ip("10.1.0.2")
    );
    assert_eq!(
        b.allocate(&p, &owner("p4", "node-b")).await.unwrap(),
        ip("10.1.0.65")
    );

    let first = block(env, "basic-10.1.0.0-26")
        .await
        .expect("node-a's block");
    assert_eq!(first.spec.cidr, "10.1.0.0/26");
    assert_eq!(first.spec.network, "basic");
    let record = &first.spec.allocations["10.1.0.1"];
    assert_eq!(
        (
            record.pod_namespace.as_str(),
            record.pod_name.as_str(),
            record.pod_uid.as_str()
        ),
        ("default", "p1", "uid-p1")
    );
    assert_eq!(
        (record.container_id.as_str(), record.ifname.as_str()),
        ("ctr-p1", "net1")
    );
    assert_eq!(record.node, "node-a");
    let labels = first.metadata.labels.unwrap_or_default();
    assert_eq!(labels["ipam.plexus.cni.dev/network"], "basic");
    let l = lease(env, "ipam-basic-10.1.0.0-26")
        .await
        .expect("node-a's lease");
    assert_eq!(holder(&l), "node-a");
    let l = lease(env, "ipam-basic-10.1.0.64-26")
        .await
        .expect("node-b's lease");
    assert_eq!(holder(&l), "node-b");
    assert_eq!(
        l.spec.unwrap().lease_duration_seconds,
        Some(300),
        "the default lease duration"
    );
}

async fn repeated_add_and_del(env: &Env) {
    let p = pool("basic", "10.1.0.0/24");
    let a = env.store("node-a").await;
    // A repeated ADD returns the address held.
    assert_eq!(
        a.allocate(&p, &owner("p1", "node-a")).await.unwrap(),
        ip("10.1.0.1")
    );
    // The pod's new sandbox (same pod and interface, new container): the same address, the
    // record moves to the new container.
    let mut again = owner("p1", "node-a");
    again.container_id = "ctr-p1-new".into();
    assert_eq!(a.allocate(&p, &again).await.unwrap(), ip("10.1.0.1"));
    let b = block(env, "basic-10.1.0.0-26").await.unwrap();
    assert_eq!(b.spec.allocations["10.1.0.1"].container_id, "ctr-p1-new");
    // The old container's DEL releases nothing; the new one's releases the address.
    assert!(a.release(&p, "ctr-p1", "net1").await.unwrap().is_empty());
    assert_eq!(
        a.release(&p, "ctr-p1-new", "net1").await.unwrap(),
        [ip("10.1.0.1")]
    );
    assert!(a
        .release(&p, "ctr-p1-new", "net1")
        .await
        .unwrap()
        .is_empty());
    // Another node's DEL finds it too (no hint there: a LIST).
    let other = env.store("node-c").await;
    assert_eq!(
        other.release(&p, "ctr-p4", "net1").await.unwrap(),
        [ip("10.1.0.65")]
    );
    // The lowest free address is reused.
    assert_eq!(
        a.allocate(&p, &owner("p5", "node-a")).await.unwrap(),
        ip("10.1.0.1")
    );
    // A DEL of what was never there is fine.
    assert!(a.release(&p, "nope", "net1").await.unwrap().is_empty());
}

async fn range_bounds_exhaustion_and_reuse(env: &Env) {
    let r = IpRange::parse(
        "10.3.0.0/24",
        Some("10.3.0.10"),
        Some("10.3.0.14"),
        &["10.3.0.11/32".to_string()],
        Some(ip("10.3.0.13")),
    )
    .unwrap();
    let p = Pool {
        network: "bounds".into(),
        range: r,
        overlapping: true,
    };
    let a = env.store("node-a").await;
    let b = env.store("node-b").await;
    let mut got = Vec::new();
    for (i, s) in [&a, &b, &a].iter().enumerate() {
        got.push(s.allocate(&p, &owner(&format!("x{i}"), "n")).await.unwrap());
    }
    assert_eq!(got, [ip("10.3.0.10"), ip("10.3.0.12"), ip("10.3.0.14")]);
    let e = b.allocate(&p, &owner("x3", "n")).await.unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::Exhausted {
                used: 3,
                size: 3,
                ..
            }
        ),
        "{e}"
    );
    let cni = CniError::from(e);
    assert_eq!(cni.code, 120, "{}", cni.msg);
    assert!(cni.msg.contains("10.3.0.0/24"), "{}", cni.msg);
    assert_eq!(
        a.release(&p, "ctr-x1", "net1").await.unwrap(),
        [ip("10.3.0.12")]
    );
    assert_eq!(
        b.allocate(&p, &owner("x3", "n")).await.unwrap(),
        ip("10.3.0.12")
    );
}

async fn overlapping_ranges_share_addresses(env: &Env) {
    let a = env.store("node-a").await;
    let wide = pool("ovl", "10.4.0.0/24");
    let narrow = pool("ovl", "10.4.0.0/25");
    assert_eq!(
        a.allocate(&wide, &owner("o1", "n")).await.unwrap(),
        ip("10.4.0.1")
    );
    assert_eq!(
        a.allocate(&narrow, &owner("o2", "n")).await.unwrap(),
        ip("10.4.0.2")
    );
    // Another network name is another address space.
    let other = pool("ovl-other", "10.4.0.0/24");
    assert_eq!(
        a.allocate(&other, &owner("o3", "n")).await.unwrap(),
        ip("10.4.0.1")
    );
    // A range without overlap protection has blocks of its own.
    let own = Pool {
        overlapping: false,
        ..pool("ovl", "10.4.0.0/24")
    };
    assert_eq!(
        a.allocate(&own, &owner("o4", "n")).await.unwrap(),
        ip("10.4.0.1")
    );
    assert!(block(env, "ovl-10.4.0.0-24-10.4.0.0-26").await.is_some());
}

async fn disjoint_ranges_of_one_network(env: &Env) {
    // Two ranges of one network on one node, one smaller than a block.
    let a = env.store("node-a").await;
    let big = pool("two", "10.11.0.0/24");
    let small = pool("two", "10.12.0.0/30");
    for i in 0..2 {
        let got = a
            .allocate(&big, &owner(&format!("w{i}"), "node-a"))
            .await
            .unwrap();
        assert_eq!(got, ip(&format!("10.11.0.{}", i + 1)));
        let got = a
            .allocate(&small, &owner(&format!("w{i}"), "node-a"))
            .await
            .unwrap();
        assert_eq!(got, ip(&format!("10.12.0.{}", i + 1)));
    }
    assert!(a.allocate(&small, &owner("w2", "node-a")).await.is_err());
    assert_eq!(
        a.release(&small, "ctr-w0", "net1").await.unwrap(),
        [ip("10.12.0.1")]
    );
    assert_eq!(
        a.release(&big, "ctr-w0", "net1").await.unwrap(),
        [ip("10.11.0.1")]
    );
}

async fn a_node_without_a_free_block_borrows(env: &Env) {
    // One block in the range: node-a claims it, node-b borrows from it.
    let p = pool("borrow", "10.5.0.0/26");
    let a = env.store("node-a").await;
    let b = env.store("node-b").await;
    assert_eq!(
        a.allocate(&p, &owner("b1", "node-a")).await.unwrap(),
        ip("10.5.0.1")
    );
    assert_eq!(
        b.allocate(&p, &owner("b2", "node-b")).await.unwrap(),
        ip("10.5.0.2")
    );
    assert_eq!(
        b.allocate(&p, &owner("b3", "node-b")).await.unwrap(),
        ip("10.5.0.3")
    );
    let l = lease(env, "ipam-borrow-10.5.0.0-26").await.unwrap();
    assert_eq!(holder(&l), "node-a", "borrowing does not take the block");
    assert_eq!(
        a.allocate(&p, &owner("b4", "node-a")).await.unwrap(),
        ip("10.5.0.4")
    );
}

async fn expired_leases_are_taken_over_only_when_empty(env: &Env) {
    let a = env.store("node-a").await;
    let b = env.store("node-b").await;
    // Non-empty block, expired Lease: node-b borrows, the Lease stays node-a's.
    let busy = pool("take-busy", "10.6.0.0/26");
    assert_eq!(
        a.allocate(&busy, &owner("t1", "node-a")).await.unwrap(),
        ip("10.6.0.1")
    );
    expire(env, "ipam-take-busy-10.6.0.0-26").await;
    assert_eq!(
        b.allocate(&busy, &owner("t2", "node-b")).await.unwrap(),
        ip("10.6.0.2")
    );
    let l = lease(env, "ipam-take-busy-10.6.0.0-26").await.unwrap();
    assert_eq!(holder(&l), "node-a");

    // Empty block, expired Lease: node-b takes it over.
    let idle = pool("take-idle", "10.6.1.0/26");
    assert_eq!(
        a.allocate(&idle, &owner("t3", "node-a")).await.unwrap(),
        ip("10.6.1.1")
    );
    assert_eq!(
        a.release(&idle, "ctr-t3", "net1").await.unwrap(),
        [ip("10.6.1.1")]
    );
    expire(env, "ipam-take-idle-10.6.1.0-26").await;
    assert_eq!(
        b.allocate(&idle, &owner("t4", "node-b")).await.unwrap(),
        ip("10.6.1.1")
    );
    let l = lease(env, "ipam-take-idle-10.6.1.0-26").await.unwrap();
    assert_eq!(holder(&l), "node-b");
    // node-a's hint is stale now: its next ADD still lands on a free address safely, and its
    // expired claim is not renewed over node-b's.
    let next = a.allocate(&idle, &owner("t5", "node-a")).await.unwrap();
    assert_eq!(next, ip("10.6.1.2"));
    let l = lease(env, "ipam-take-idle-10.6.1.0-26").await.unwrap();
    assert_eq!(holder(&l), "node-b");
}

async fn lost_hints_are_rebuilt_from_the_leases(env: &Env) {
    let p = pool("basic", "10.1.0.0/24");
    let a = env.store("node-a").await;
    let file = a.hint_file(&p).unwrap();
    std::fs::remove_file(&file).expect("node-a has hints");
    // The slow path finds node-a's block by its Lease and uses it.
    let got = a.allocate(&p, &owner("h1", "node-a")).await.unwrap();
    assert_eq!(got, ip("10.1.0.3"));
    let hints = std::fs::read_to_string(&file).expect("hints written again");
    assert!(hints.contains("basic-10.1.0.0-26"), "{hints}");
}

async fn a_second_block_size_is_refused(env: &Env) {
    let p = pool("basic", "10.1.0.0/24");
    let options = KubeOptions {
        block_prefix_v4: 25,
        ..env.options("node-z")
    };
    let s = env.store_with(options).await;
    let e = s.allocate(&p, &owner("z1", "node-z")).await.unwrap_err();
    assert!(e.to_string().contains("same block size"), "{e}");
}

async fn ipv6_64_and_dual_stack(env: &Env) {
    let a = env.store("node-a").await;
    // The top of a /64: offsets of 2^63 and more (Whereabouts #83 loses them).
    let top = Pool {
        network: "v6".into(),
        range: IpRange::parse(
            "fd00:10::/64",
            Some("fd00:10::ffff:ffff:ffff:fff0"),
            None,
            &[],
            None,
        )
        .unwrap(),
        overlapping: true,
    };
    assert_eq!(
        a.allocate(&top, &owner("s1", "n")).await.unwrap(),
        ip("fd00:10::ffff:ffff:ffff:fff0")
    );
    assert_eq!(
        a.allocate(&top, &owner("s2", "n")).await.unwrap(),
        ip("fd00:10::ffff:ffff:ffff:fff1")
    );
    assert!(block(env, "v6-fd00-10--ffff-ffff-ffff-ffc0-122")
        .await
        .is_some());

    let v4 = pool("dual", "10.7.0.0/24");
    let v6 = pool("dual", "fd00:7::/64");
    let o = owner("d1", "node-a");
    assert_eq!(a.allocate(&v4, &o).await.unwrap(), ip("10.7.0.1"));
    assert_eq!(a.allocate(&v6, &o).await.unwrap(), ip("fd00:7::1"));
    let o2 = owner("d2", "node-a");
    assert_eq!(a.allocate(&v4, &o2).await.unwrap(), ip("10.7.0.2"));
    assert_eq!(a.allocate(&v6, &o2).await.unwrap(), ip("fd00:7::2"));
    assert_eq!(
        a.release(&v4, "ctr-d1", "net1").await.unwrap(),
        [ip("10.7.0.1")]
    );
    assert_eq!(
        a.release(&v6, "ctr-d1", "net1").await.unwrap(),
        [ip("fd00:7::1")]
    );
}

/// Waits until the audit log holds a GET of the Lease `marker` by the service account; the
/// number of the service account's requests before it.
async fn sa_requests_until_marker(env: &Env, store: &KubeStore, marker: &str) -> usize {
    let api: Api<Lease> = Api::namespaced(store.client().client().clone(), NS);
    assert!(api.get_opt(marker).await.unwrap().is_none());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events: Vec<_> = env
            .cluster
            .audit_events()
            .into_iter()
            .filter(|e| e["user"]["username"] == SA_USER)
            .collect();
        if let Some(at) = events.iter().position(|e| e["objectRef"]["name"] == marker) {
            return at;
        }
        assert!(Instant::now() < deadline, "no audit event for {marker}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the service account did between two markers: `verb resource` per request.
async fn requests_of(
    env: &Env,
    store: &KubeStore,
    n: &mut u32,
    work: impl std::future::Future<Output = ()>,
) -> Vec<String> {
    *n += 1;
    let before = sa_requests_until_marker(env, store, &format!("marker-{n}-a")).await;
    work.await;
    let after = sa_requests_until_marker(env, store, &format!("marker-{n}-b")).await;
    let events: Vec<_> = env
        .cluster
        .audit_events()
        .into_iter()
        .filter(|e| e["user"]["username"] == SA_USER)
        .collect();
    events[before + 1..after]
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["verb"].as_str().unwrap_or(""),
                e["objectRef"]["resource"].as_str().unwrap_or("")
            )
        })
        .collect()
}

async fn round_trips_from_the_audit_log(env: &Env) {
    let p = pool("trips", "10.8.0.0/24");
    let a = env.store("node-a").await;
    let mut n = 0;
    let first = requests_of(env, &a, &mut n, async {
        a.allocate(&p, &owner("r0", "node-a")).await.unwrap();
    })
    .await;
    eprintln!("first ADD of a node: {first:?}");
    // The range's first block: the guard's one LIST of Whereabouts's IPPools (absent here).
    assert_eq!(
        first,
        [
            "list ipamblocks",
            "list leases",
            "list ippools",
            "create leases",
            "create ipamblocks"
        ],
    );

    let common = requests_of(env, &a, &mut n, async {
        a.allocate(&p, &owner("r1", "node-a")).await.unwrap();
    })
    .await;
    eprintln!("common ADD: {common:?}");
    assert_eq!(common, ["get ipamblocks", "update ipamblocks"]);

    // A fresh process each time, as the CNI plugin is.
    let fresh = env.store("node-a").await;
    let common = requests_of(env, &fresh, &mut n, async {
        fresh.allocate(&p, &owner("r2", "node-a")).await.unwrap();
    })
    .await;
    assert_eq!(common, ["get ipamblocks", "update ipamblocks"]);

    let repeated = requests_of(env, &a, &mut n, async {
        a.allocate(&p, &owner("r1", "node-a")).await.unwrap();
    })
    .await;
    eprintln!("repeated ADD: {repeated:?}");
    assert_eq!(repeated, ["get ipamblocks"]);

    let del = requests_of(env, &a, &mut n, async {
        a.release(&p, "ctr-r1", "net1").await.unwrap();
    })
    .await;
    eprintln!("DEL: {del:?}");
    assert_eq!(del, ["get ipamblocks", "update ipamblocks"]);
}

async fn usage_and_pools(env: &Env) {
    let a = env.store("node-a").await;
    let usage = a.usage().await.unwrap();
    let p = pool("bounds", "10.3.0.0/24");
    let summary = pools::summarize(std::slice::from_ref(&p), &usage);
    let bounds = &summary[0];
    assert_eq!(bounds.cidr, "10.3.0.0/24");
    assert_eq!(bounds.used, 3);
    let text = pools::render(&summary);
    assert!(text.contains("default/x3"), "{text}");
    assert!(summary
        .iter()
        .any(|s| !s.configured && s.network == "basic"));
}

// ---------------------------------------------------------------------------------------------
// Many processes.

/// What a worker process does.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Work {
    kubeconfig: PathBuf,
    hint_dir: PathBuf,
    node: String,
    network: String,
    range: String,
    /// Pod names to allocate for, in order, with their UIDs.
    pods: Vec<(String, String)>,
    /// Release each pod's address right after its ADD, except the last pod's (prints
    /// `ERROR` when the release does not find exactly the address handed out).
    #[serde(default)]
    churn: bool,
}

/// Not a test of its own: the allocator process the tests below start (it does nothing unless
/// `PLEXUS_IPAM_KUBE_WORKER` holds its work). Prints `ALLOC <pod> <address>` after each ADD.
#[test]
#[ignore = "a worker process of the concurrency tests"]
fn worker() {
    let Ok(work) = std::env::var(WORKER_ENV) else {
        return;
    };
    let work: Work = serde_json::from_str(&work).expect("the work");
    runtime().block_on(async {
        let options = KubeOptions {
            hint_dir: work.hint_dir.clone(),
            ..KubeOptions::new(&work.node)
        };
        let store = KubeStore::from_kubeconfig(&work.kubeconfig, NS, DEFAULT_TIMEOUT, options)
            .await
            .expect("a store");
        let p = pool(&work.network, &work.range);
        for (i, (pod, uid)) in work.pods.iter().enumerate() {
            let mut o = owner(pod, &work.node);
            o.pod_uid = uid.clone();
            match store.allocate(&p, &o).await {
                Ok(ip) => {
                    println!("ALLOC {pod} {ip}");
                    if work.churn && i + 1 < work.pods.len() {
                        match store.release(&p, &o.container_id, &o.ifname).await {
                            Ok(released) if released == [ip] => println!("RELEASED {pod}"),
                            Ok(released) => println!("ERROR {pod} released {released:?}"),
                            Err(e) => println!("ERROR {pod} {e}"),
                        }
                    }
                }
                Err(e) => println!("ERROR {pod} {e}"),
            }
        }
    });
}

/// Starts one worker per node `node-0` … `node-{nodes-1}`, each allocating for `pods` pods
/// named `<node>-pod-<i>` (and releasing them again with `churn`).
fn spawn_nodes(
    env: &Env,
    network: &str,
    cidr: &str,
    nodes: usize,
    pods: usize,
    churn: bool,
) -> Vec<(String, Child)> {
    (0..nodes)
        .map(|n| {
            let node = format!("node-{n}");
            let work = Work {
                kubeconfig: env.cluster.sa_kubeconfig().to_path_buf(),
                hint_dir: env.hints.path().to_path_buf(),
                node: node.clone(),
                network: network.into(),
                range: cidr.into(),
                pods: (0..pods)
                    .map(|i| (format!("{node}-pod-{i}"), format!("uid-{node}-{i}")))
                    .collect(),
                churn,
            };
            (node, spawn_worker(&work))
        })
        .collect()
}

/// Starts a worker process.
fn spawn_worker(work: &Work) -> Child {
    Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "worker",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WORKER_ENV, serde_json::to_string(work).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("a worker process")
}

/// The `ALLOC` lines of a worker's output (all of them once it has exited), and its `ERROR`s.
fn read_worker(child: &mut Child) -> (Vec<(String, IpAddr)>, Vec<String>) {
    let out = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut allocs = Vec::new();
    let mut errors = Vec::new();
    // libtest's "test worker ... " starts the first line.
    for line in out.lines().map_while(Result::ok) {
        if let Some(at) = line.find("ALLOC ") {
            let rest = &line[at + "ALLOC ".len()..];
            let (pod, addr) = rest.split_once(' ').expect("ALLOC <pod> <ip>");
            allocs.push((pod.to_string(), ip(addr)));
        } else if let Some(at) = line.find("ERROR ") {
            errors.push(line[at..].to_string());
        }
    }
    (allocs, errors)
}

/// Every allocation of `network` the store holds, by address (panics on an address held twice,
/// which the object layout makes impossible within a block).
async fn held(store: &KubeStore, network: &str) -> BTreeMap<IpAddr, Owner> {
    let mut all = BTreeMap::new();
    for usage in store.usage().await.unwrap() {
        if usage.network != network {
            continue;
        }
        for a in usage.allocations {
            assert!(
                all.insert(a.address, a.owner).is_none(),
                "address held twice"
            );
        }
    }
    all
}

/// 8 processes standing for 8 nodes run 125 ADDs each, concurrently: 1000 distinct
/// addresses; DEL of all leaves every block empty.
#[test]
fn eight_nodes_allocate_concurrently() {
    let Some(env) = Env::start() else { return };
    let network = "eight";
    let cidr = "10.20.0.0/22";
    let started = Instant::now();
    let mut children = spawn_nodes(&env, network, cidr, 8, 125, false);
    let mut by_ip: HashMap<IpAddr, String> = HashMap::new();
    for (node, child) in &mut children {
        let (allocs, errors) = read_worker(child);
        assert!(child.wait().unwrap().success(), "{node} failed");
        assert!(errors.is_empty(), "{node}: {errors:?}");
        assert_eq!(allocs.len(), 125, "{node}");
        for (pod, addr) in allocs {
            if let Some(other) = by_ip.insert(addr, pod.clone()) {
                panic!("{addr} handed to {other} and to {pod}");
            }
        }
    }
    eprintln!("8 × 125 ADDs in {:.2}s", started.elapsed().as_secs_f64());
    assert_eq!(by_ip.len(), 1000);

    runtime().block_on(async {
        let store = env.store("checker").await;
        let stored = held(&store, network).await;
        assert_eq!(stored.len(), 1000);
        for (addr, pod) in &by_ip {
            assert_eq!(&stored[addr].pod_name, pod, "{addr}");
        }
        // Each node allocated within its own blocks: exactly two /26 blocks each.
        let per_node: BTreeMap<String, BTreeSet<String>> =
            stored.iter().fold(BTreeMap::new(), |mut m, (addr, o)| {
                let block = ipnet::IpNet::new(*addr, 26).unwrap().trunc().to_string();
                m.entry(o.node.clone()).or_default().insert(block);
                m
            });
        eprintln!("blocks per node: {per_node:?}");

        // DEL of everything, each node its own, the nodes concurrently.
        let started = Instant::now();
        std::thread::scope(|scope| {
            for n in 0..8 {
                let env = &env;
                scope.spawn(move || {
                    runtime().block_on(async {
                        let p = pool(network, cidr);
                        let node = format!("node-{n}");
                        let s = env.store(&node).await;
                        for i in 0..125 {
                            let released = s
                                .release(&p, &format!("ctr-{node}-pod-{i}"), "net1")
                                .await
                                .unwrap();
                            assert_eq!(released.len(), 1, "{node}-pod-{i}");
                        }
                    })
                });
            }
        });
        eprintln!("8 × 125 DELs in {:.2}s", started.elapsed().as_secs_f64());
        for usage in store.usage().await.unwrap() {
            if usage.network == network {
                assert!(usage.allocations.is_empty(), "{} not empty", usage.cidr);
            }
        }
    });
}

/// Empty blocks are deleted while 4 nodes allocate and release in them as fast as they can:
/// the reclaimer treats every holder as gone, with no grace period, so each block is deleted
/// whenever it is read empty. No allocation is ever lost (each release finds exactly the
/// address handed out, and the last pod of each node keeps its address), blocks holding an
/// allocation survive, and expired empty blocks of another network are deleted with their
/// Leases while a live one's block is kept.
#[test]
fn empty_blocks_are_reclaimed_under_concurrent_adds() {
    let Some(env) = Env::start() else { return };
    let network = "reclaim";
    let cidr = "10.25.0.0/24";
    runtime().block_on(async {
        // Grace and expiry, one block each: idle (expired, empty), busy (expired, one
        // allocation), fresh (live, empty).
        let a = env.store("node-a").await;
        let idle = pool("reclaim-idle", "10.26.0.0/26");
        let busy = pool("reclaim-busy", "10.26.1.0/26");
        let fresh = pool("reclaim-fresh", "10.26.2.0/26");
        for (p, pod) in [(&idle, "i1"), (&busy, "b1"), (&fresh, "f1")] {
            a.allocate(p, &owner(pod, "node-a")).await.unwrap();
        }
        a.release(&idle, "ctr-i1", "net1").await.unwrap();
        a.release(&fresh, "ctr-f1", "net1").await.unwrap();
        expire(&env, "ipam-reclaim-idle-10.26.0.0-26").await;
        expire(&env, "ipam-reclaim-busy-10.26.1.0-26").await;
        let options = ReclaimOptions {
            grace: Duration::from_secs(60),
            nodes: None,
            dry_run: true,
        };
        let dry = a.reclaim_blocks(&options).await.unwrap();
        assert_eq!(dry.deleted, ["reclaim-idle-10.26.0.0-26"]);
        assert!(block(&env, "reclaim-idle-10.26.0.0-26").await.is_some());
        let options = ReclaimOptions {
            dry_run: false,
            ..options
        };
        let report = a.reclaim_blocks(&options).await.unwrap();
        assert_eq!(report.deleted, ["reclaim-idle-10.26.0.0-26"], "{report:?}");
        assert!(block(&env, "reclaim-idle-10.26.0.0-26").await.is_none());
        assert!(lease(&env, "ipam-reclaim-idle-10.26.0.0-26")
            .await
            .is_none());
        assert!(block(&env, "reclaim-busy-10.26.1.0-26").await.is_some());
        assert!(block(&env, "reclaim-fresh-10.26.2.0-26").await.is_some());
        // The idle network works again: its block is created anew.
        assert_eq!(
            a.allocate(&idle, &owner("i2", "node-a")).await.unwrap(),
            ip("10.26.0.1")
        );
    });

    let mut children = spawn_nodes(&env, network, cidr, 4, 40, true);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (deleted, changed, results) = std::thread::scope(|scope| {
        let reclaimer = scope.spawn(|| {
            runtime().block_on(async {
                let store = env.store("reclaimer").await;
                let options = ReclaimOptions {
                    grace: Duration::ZERO,
                    nodes: Some(["no-such-node".to_string()].into()),
                    dry_run: false,
                };
                let (mut deleted, mut changed) = (0, 0);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let report = store.reclaim_blocks(&options).await.unwrap();
                    assert!(report.errors.is_empty(), "{:?}", report.errors);
                    deleted += report
                        .deleted
                        .iter()
                        .filter(|n| n.starts_with("reclaim-10"))
                        .count();
                    changed += report.changed;
                }
                (deleted, changed)
            })
        });
        let mut results = Vec::new();
        for (node, child) in &mut children {
            let (allocs, errors) = read_worker(child);
            assert!(child.wait().unwrap().success(), "{node} failed");
            results.push((node.clone(), allocs, errors));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (deleted, changed) = reclaimer.join().expect("the reclaimer");
        (deleted, changed, results)
    });
    eprintln!(
        "blocks deleted during the ADDs: {deleted}, deletes refused (block changed): {changed}"
    );
    let mut kept = BTreeMap::new();
    for (node, allocs, errors) in results {
        assert!(errors.is_empty(), "{node}: {errors:?}");
        assert_eq!(allocs.len(), 40, "{node}");
        let (pod, addr) = allocs.last().unwrap().clone();
        kept.insert(addr, pod);
    }
    // Whether the reclaimer wins a race (deletes a block read empty) or loses it (the
    // block changed before its delete, which is refused) depends on the machine's load;
    // either way it found an empty block while the nodes were allocating in it.
    assert!(
        deleted + changed > 0,
        "the reclaimer never found an empty block"
    );
    runtime().block_on(async {
        let store = env.store("checker").await;
        let stored: BTreeMap<IpAddr, String> = held(&store, network)
            .await
            .into_iter()
            .map(|(a, o)| (a, o.pod_name))
            .collect();
        assert_eq!(stored, kept, "every kept pod still holds its address");
    });
}

/// Allocators killed with SIGKILL mid-flight never leave an address held twice, and garbage
/// collection then releases every address whose pod does not exist, keeping the live pods'.
#[test]
fn killed_allocators_then_gc() {
    let Some(env) = Env::start() else { return };
    let network = "killed";
    let cidr = "10.30.0.0/22";
    runtime().block_on(async {
        // Live pods exist as Pod objects; the allocators get their real UIDs.
        let pods_api: Api<Pod> = Api::namespaced(env.cluster.admin_client(), "default");
        let mut uids = HashMap::new();
        for n in 0..4 {
            for i in 0..10 {
                let name = format!("node-{n}-pod-{i}");
                let created = pods_api
                    .create(&PostParams::default(), &pod_object(&name))
                    .await
                    .expect("create a pod");
                uids.insert(name, created.metadata.uid.unwrap());
            }
        }

        let mut reported: HashMap<IpAddr, String> = HashMap::new();
        for round in 0..3 {
            let mut children: Vec<(String, Child)> = (0..4)
                .map(|n| {
                    let node = format!("node-{n}");
                    let pods = (0..120)
                        .map(|i| {
                            let name = if round == 0 && i < 10 {
                                format!("{node}-pod-{i}")
                            } else {
                                format!("{node}-ghost-{round}-{i}")
                            };
                            let uid = uids
                                .get(&name)
                                .cloned()
                                .unwrap_or_else(|| format!("uid-{name}"));
                            (name, uid)
                        })
                        .collect();
                    let work = Work {
                        kubeconfig: env.cluster.sa_kubeconfig().to_path_buf(),
                        hint_dir: env.hints.path().to_path_buf(),
                        node: node.clone(),
                        network: network.into(),
                        range: cidr.into(),
                        pods,
                        churn: false,
                    };
                    (node, spawn_worker(&work))
                })
                .collect();
            // Let them run a moment, then kill each at a different point.
            for (i, (_, child)) in children.iter_mut().enumerate() {
                tokio::time::sleep(Duration::from_millis(150 + 40 * i as u64)).await;
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            for (node, child) in &mut children {
                let (allocs, errors) = read_worker(child);
                let _ = child.wait();
                assert!(errors.is_empty(), "{node}: {errors:?}");
                eprintln!(
                    "round {round}: {node} reported {} ADDs before SIGKILL",
                    allocs.len()
                );
                for (pod, addr) in allocs {
                    if let Some(other) = reported.insert(addr, pod.clone()) {
                        panic!("{addr} handed to {other} and to {pod}");
                    }
                }
            }
        }

        let store = env.store("checker").await;
        let stored = held(&store, network).await;
        // Every address an allocator reported is held by the pod it was reported for (some
        // more may be held: written, then killed before reporting).
        for (addr, pod) in &reported {
            assert_eq!(&stored[addr].pod_name, pod, "{addr}");
        }
        eprintln!(
            "{} reported, {} held before GC",
            reported.len(),
            stored.len()
        );
        assert!(stored.len() >= reported.len());

        // A live pod whose allocation names an older pod of the same name (UID changed) loses
        // it too; a live pod of the right UID keeps its own.
        let pods = KubePods::new(store.client().clone());
        let report = gc::collect(&store, &pods, &GcOptions::default())
            .await
            .unwrap();
        eprintln!(
            "GC: examined {}, released {}, errors {:?}",
            report.examined,
            report.released.len(),
            report.errors
        );
        assert!(report.errors.is_empty());
        let after = held(&store, network).await;
        for (addr, o) in &after {
            assert_eq!(
                uids.get(&o.pod_name),
                Some(&o.pod_uid),
                "{addr} of {} kept without a live pod",
                o.pod_name
            );
        }
        for (addr, pod) in &reported {
            if uids.contains_key(pod) {
                assert!(after.contains_key(addr), "live pod {pod} lost {addr}");
            }
        }
        assert_eq!(report.released.len(), stored.len() - after.len());

        // A pod re-created under the same name (new UID): its old allocation goes.
        let (addr, name) = after
            .iter()
            .next()
            .map(|(a, o)| (*a, o.pod_name.clone()))
            .expect("a live allocation");
        pods_api
            .delete(&name, &Default::default())
            .await
            .expect("delete a pod");
        pods_api
            .create(&PostParams::default(), &pod_object(&name))
            .await
            .expect("re-create it");
        let report = gc::collect(&store, &pods, &GcOptions::default())
            .await
            .unwrap();
        let released: Vec<IpAddr> = report
            .released
            .iter()
            .map(|r| r.allocation.address)
            .collect();
        assert_eq!(released, [addr]);
    });
}

fn pod_object(name: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: Some("registry.k8s.io/pause:3.9".into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The real `plexus-ipam` binary (built by `cargo build --workspace --bins`).

/// What one `plexus-ipam` call printed and returned.
#[derive(Debug)]
struct Outcome {
    code: Option<i32>,
    json: serde_json::Value,
    stdout: String,
}

impl Outcome {
    fn ok(&self) -> &serde_json::Value {
        assert_eq!(self.code, Some(0), "plexus-ipam failed: {}", self.stdout);
        &self.json
    }

    /// The addresses of an ADD result.
    fn addresses(&self) -> Vec<String> {
        self.ok()["ips"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|ip| ip["address"].as_str().unwrap().to_string())
            .collect()
    }
}

/// The plugin as a node runs it.
#[derive(Debug, Clone)]
struct Plugin {
    bin: PathBuf,
    hints: PathBuf,
}

/// A plugin configuration (macvlan with `plexus-ipam`) on the cluster, with `ipam` keys added.
fn conf(env: &Env, ipam: serde_json::Value) -> serde_json::Value {
    let mut object = serde_json::json!({
        "type": "plexus-ipam",
        "kubernetes": {"kubeconfig": env.cluster.sa_kubeconfig(), "namespace": NS},
    });
    for (k, v) in ipam.as_object().expect("an object") {
        object[k] = v.clone();
    }
    serde_json::json!({"cniVersion": "1.0.0", "name": "net", "type": "macvlan", "ipam": object})
}

impl Plugin {
    /// The plugin, if it is built with the Kubernetes store; `None` (and why) otherwise.
    fn find(env: &Env) -> Option<Plugin> {
        let bin = plexus_tests::plexus_bin_dir().join("plexus-ipam");
        assert!(
            bin.exists(),
            "{} is missing: run `cargo build --workspace --bins` first",
            bin.display()
        );
        let plugin = Plugin {
            bin,
            hints: env.hints.path().join("bin"),
        };
        let probe = plugin.run(
            "node-probe",
            "ADD",
            "probe",
            "probe",
            &conf(env, serde_json::json!({"range": "10.99.0.0/30"})),
        );
        if probe.stdout.contains("not wired") {
            assert!(
                std::env::var_os("CI").is_none(),
                "plexus-ipam is built without the Kubernetes store: {}",
                probe.stdout
            );
            eprintln!("skipped: plexus-ipam is built without the Kubernetes store");
            return None;
        }
        probe.ok();
        Some(plugin)
    }

    fn command(&self, node: &str, verb: &str, pod: &str, container: &str) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("NODE_NAME", node)
            .env("PLEXUS_IPAM_AFFINITY_DIR", &self.hints)
            .env("CNI_COMMAND", verb)
            .env("CNI_CONTAINERID", container)
            .env("CNI_NETNS", "/run/netns/ipam-kube-test")
            .env("CNI_IFNAME", "net1")
            .env(
                "CNI_ARGS",
                format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};K8S_POD_UID=uid-{pod}"),
            )
            .env("CNI_PATH", "/nonexistent")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        cmd
    }

    /// Runs `verb` for `pod` (container `container`, interface `net1`) on `node`.
    fn run(
        &self,
        node: &str,
        verb: &str,
        pod: &str,
        container: &str,
        config: &serde_json::Value,
    ) -> Outcome {
        let mut child = self
            .command(node, verb, pod, container)
            .spawn()
            .expect("run plexus-ipam");
        finish(&mut child, config)
    }

    fn add(&self, node: &str, pod: &str, config: &serde_json::Value) -> Outcome {
        self.run(node, "ADD", pod, &format!("ctr-{pod}"), config)
    }

    fn del(&self, node: &str, pod: &str, config: &serde_json::Value) -> Outcome {
        self.run(node, "DEL", pod, &format!("ctr-{pod}"), config)
    }
}

/// Feeds `config` to a started plugin (unless its stdin was taken) and waits for it.
fn finish(child: &mut Child, config: &serde_json::Value) -> Outcome {
    use std::io::{Read, Write};
    // Unless the caller fed it already.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(config.to_string().as_bytes());
    }
    let mut stdout = String::new();
    let _ = child.stdout.take().unwrap().read_to_string(&mut stdout);
    let status = child.wait().expect("wait for plexus-ipam");
    let json = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    Outcome {
        code: status.code(),
        json,
        stdout,
    }
}

/// The allocator through the real binary: addresses per node, repeated ADD, DEL, exhaustion
/// (code 120) and reuse, a /64 and dual stack, and the round trips of a common ADD.
#[test]
fn binary_table() {
    let Some(env) = Env::start() else { return };
    let Some(plugin) = Plugin::find(&env) else {
        return;
    };
    let net = conf(
        &env,
        serde_json::json!({"range": "10.40.0.0/24", "network_name": "bin"}),
    );
    assert_eq!(
        plugin.add("node-a", "p1", &net).addresses(),
        ["10.40.0.1/24"]
    );
    assert_eq!(
        plugin.add("node-b", "p2", &net).addresses(),
        ["10.40.0.64/24"]
    );
    assert_eq!(
        plugin.add("node-a", "p3", &net).addresses(),
        ["10.40.0.2/24"]
    );
    // A repeated ADD gives the same address.
    assert_eq!(
        plugin.add("node-a", "p1", &net).addresses(),
        ["10.40.0.1/24"]
    );
    plugin.del("node-a", "p1", &net).ok();
    plugin.del("node-a", "p1", &net).ok();
    assert_eq!(
        plugin.add("node-a", "p4", &net).addresses(),
        ["10.40.0.1/24"]
    );

    // Exhaustion: a clear error, code 120; an address again after a DEL.
    let small = conf(
        &env,
        serde_json::json!({"range": "10.41.0.0/30", "network_name": "bin"}),
    );
    assert_eq!(
        plugin.add("node-a", "e1", &small).addresses(),
        ["10.41.0.1/30"]
    );
    assert_eq!(
        plugin.add("node-b", "e2", &small).addresses(),
        ["10.41.0.2/30"]
    );
    let full = plugin.add("node-a", "e3", &small);
    assert_ne!(full.code, Some(0));
    assert_eq!(full.json["code"], 120, "{}", full.stdout);
    let msg = full.json["msg"].as_str().unwrap_or("");
    assert!(
        msg.contains("10.41.0.0/30") && msg.contains("2 of 2"),
        "{msg}"
    );
    plugin.del("node-b", "e2", &small).ok();
    assert_eq!(
        plugin.add("node-a", "e3", &small).addresses(),
        ["10.41.0.2/30"]
    );

    // A /64 and dual stack.
    let v6 = conf(
        &env,
        serde_json::json!({"range": "fd00:41::/64", "network_name": "bin"}),
    );
    assert_eq!(
        plugin.add("node-a", "s1", &v6).addresses(),
        ["fd00:41::1/64"]
    );
    let dual = conf(
        &env,
        serde_json::json!({"network_name": "bin-dual",
                           "ipRanges": [{"range": "10.42.0.0/24"}, {"range": "fd00:42::/64"}]}),
    );
    assert_eq!(
        plugin.add("node-a", "d1", &dual).addresses(),
        ["10.42.0.1/24", "fd00:42::1/64"]
    );
    assert_eq!(
        plugin.add("node-b", "d2", &dual).addresses(),
        ["10.42.0.64/24", "fd00:42::40/64"]
    );
    plugin.del("node-a", "d1", &dual).ok();
    runtime().block_on(async {
        let store = env.store("checker").await;
        let held = held(&store, "bin-dual").await;
        let left: Vec<String> = held.keys().map(|a| a.to_string()).collect();
        assert_eq!(left, ["10.42.0.64", "fd00:42::40"]);
    });

    // Round trips of a common ADD, counted in the audit log: the plugin's requests.
    let before = plugin_requests(&env).len();
    plugin.add("node-a", "r1", &net).ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    let requests = loop {
        let all = plugin_requests(&env);
        if all.len() >= before + 2 {
            std::thread::sleep(Duration::from_millis(300));
            break plugin_requests(&env)[before..].to_vec();
        }
        assert!(Instant::now() < deadline, "no audit events of the plugin");
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("plexus-ipam common ADD: {requests:?}");
    assert_eq!(requests, ["get ipamblocks", "update ipamblocks"]);

    block_sizes_through_the_binary(&env, &plugin);
}

/// `block_size_v4`, `block_size_v6` and `node_slice_size`: /28, /26 and /24 blocks and their
/// IPv6 counterparts; a node fills its block, then claims the next free one; a slice size that
/// cannot be honoured is a configuration error.
fn block_sizes_through_the_binary(env: &Env, plugin: &Plugin) {
    let cases = [
        // (network, ipam keys, range, block, second node's first address, the block
        //  node-a claims once its first is full)
        (
            "bs28",
            serde_json::json!({"block_size_v4": "/28"}),
            "10.70.0.0/22",
            28,
            "10.70.0.16",
            "10.70.0.32",
        ),
        (
            "bs26",
            serde_json::json!({}),
            "10.71.0.0/22",
            26,
            "10.71.0.64",
            "10.71.0.128",
        ),
        (
            "bs24",
            serde_json::json!({"block_size_v4": 24}),
            "10.72.0.0/22",
            24,
            "10.72.1.0",
            "10.72.2.0",
        ),
        (
            "bs124",
            serde_json::json!({"block_size_v6": "124"}),
            "fd00:70::/64",
            124,
            "fd00:70::10",
            "fd00:70::20",
        ),
        (
            "bs122",
            serde_json::json!({}),
            "fd00:71::/64",
            122,
            "fd00:71::40",
            "fd00:71::80",
        ),
        (
            "bs120",
            serde_json::json!({"block_size_v6": "/120"}),
            "fd00:72::/64",
            120,
            "fd00:72::100",
            "fd00:72::200",
        ),
        (
            "slice28",
            serde_json::json!({"node_slice_size": "/28"}),
            "10.73.0.0/22",
            28,
            "10.73.0.16",
            "10.73.0.32",
        ),
        (
            "slice124",
            serde_json::json!({"node_slice_size": "124"}),
            "fd00:73::/64",
            124,
            "fd00:73::10",
            "fd00:73::20",
        ),
    ];
    for (network, keys, range, prefix, second, next_block) in cases {
        let mut ipam = keys.clone();
        ipam["range"] = range.into();
        ipam["network_name"] = network.into();
        let net = conf(env, ipam);
        let size: u32 = if range.contains(':') { 128 } else { 32 } - prefix;
        let size = 1u32 << size;
        let first: ipnet::IpNet = range.parse().unwrap();
        let plen = first.prefix_len();
        let addr = |s: &str| format!("{s}/{plen}");
        // node-a takes the first address, node-b the first of the next block.
        let a1 = plugin
            .add("node-a", &format!("{network}-a0"), &net)
            .addresses();
        let base = first.network();
        let next = |ip: IpAddr, n: u128| match ip {
            IpAddr::V4(v) => IpAddr::from(std::net::Ipv4Addr::from(u32::from(v) + n as u32)),
            IpAddr::V6(v) => IpAddr::from(std::net::Ipv6Addr::from(u128::from(v) + n)),
        };
        assert_eq!(a1, [addr(&next(base, 1).to_string())], "{network}");
        let b1 = plugin
            .add("node-b", &format!("{network}-b0"), &net)
            .addresses();
        assert_eq!(b1, [addr(second)], "{network}");
        // node-a fills its block (the network address is not usable), then claims the next
        // free one: past node-b's.
        // The filling ADDs through the store (as the binary, with its hints: faster).
        let usable = size as usize - 1;
        runtime().block_on(async {
            let options = KubeOptions {
                hint_dir: plugin.hints.clone(),
                block_prefix_v4: prefix as u8,
                block_prefix_v6: prefix as u8,
                ..KubeOptions::new("node-a")
            };
            let store = env.store_with(options).await;
            let p = pool(network, range);
            for i in 1..usable - 1 {
                store
                    .allocate(&p, &owner(&format!("{network}-a{i}"), "node-a"))
                    .await
                    .unwrap();
            }
        });
        let last = plugin
            .add("node-a", &format!("{network}-a{}", usable - 1), &net)
            .addresses();
        let next_in_block = next(base, usable as u128);
        assert_eq!(last, [addr(&next_in_block.to_string())], "{network}");
        let last = plugin
            .add("node-a", &format!("{network}-next"), &net)
            .addresses();
        assert_eq!(last, [addr(next_block)], "{network}");
        runtime().block_on(async {
            let blocks = blocks_of(env, network).await;
            let mut cidrs: Vec<String> = blocks.iter().map(|b| b.spec.cidr.clone()).collect();
            cidrs.sort();
            assert_eq!(cidrs.len(), 3, "{network}: {cidrs:?}");
            assert!(
                cidrs.iter().all(|c| c.ends_with(&format!("/{prefix}"))),
                "{network}: {cidrs:?}"
            );
            let full = blocks
                .iter()
                .find(|b| b.spec.cidr == format!("{base}/{prefix}"))
                .unwrap_or_else(|| panic!("{network}: node-a's first block: {cidrs:?}"));
            assert_eq!(full.spec.allocations.len(), usable, "{network}");
        });
    }
    // A slice size that cannot be honoured: a clear configuration error, code 7.
    for (keys, want) in [
        (
            serde_json::json!({"range": "10.74.0.0/26", "node_slice_size": "/24"}),
            "larger than the range",
        ),
        (
            serde_json::json!({"range": "10.74.0.0/24", "node_slice_size": "/12"}),
            "node_slice_size",
        ),
        (
            serde_json::json!({"range": "10.74.0.0/24", "node_slice_size": "/28",
                               "ipRanges": [{"range": "fd00:74::/64"}]}),
            "both IPv4 and IPv6",
        ),
    ] {
        let out = plugin.add("node-a", "bad-slice", &conf(env, keys.clone()));
        assert_ne!(out.code, Some(0), "{keys}");
        assert_eq!(out.json["code"], 7, "{keys}: {}", out.stdout);
        let msg = out.json["msg"].as_str().unwrap_or("");
        assert!(msg.contains(want), "{keys}: {msg}");
    }
}

/// `verb resource` of every request of the `plexus-ipam` binary, in order.
fn plugin_requests(env: &Env) -> Vec<String> {
    env.cluster
        .audit_events()
        .into_iter()
        .filter(|e| {
            e["user"]["username"] == SA_USER
                && e["userAgent"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("plexus-ipam/"))
        })
        .map(|e| {
            format!(
                "{} {}",
                e["verb"].as_str().unwrap_or(""),
                e["objectRef"]["resource"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// 8 nodes run 125 `plexus-ipam` ADDs each, concurrently, then DEL them all; then allocators
/// killed mid-flight with SIGKILL, and garbage collection after them.
#[test]
fn binary_eight_nodes_then_sigkill() {
    let Some(env) = Env::start() else { return };
    let Some(plugin) = Plugin::find(&env) else {
        return;
    };
    let net = conf(
        &env,
        serde_json::json!({"range": "10.50.0.0/22", "network_name": "bin8"}),
    );
    let started = Instant::now();
    let results: Vec<Vec<(String, String)>> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..8)
            .map(|n| {
                let (plugin, net) = (plugin.clone(), net.clone());
                scope.spawn(move || {
                    let node = format!("node-{n}");
                    (0..125)
                        .map(|i| {
                            let pod = format!("{node}-pod-{i}");
                            let got = plugin.add(&node, &pod, &net).addresses();
                            assert_eq!(got.len(), 1, "{pod}");
                            (pod, got[0].clone())
                        })
                        .collect()
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("a node thread"))
            .collect()
    });
    eprintln!(
        "8 × 125 plexus-ipam ADDs in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let mut by_ip = HashMap::new();
    for (pod, addr) in results.iter().flatten() {
        if let Some(other) = by_ip.insert(addr.clone(), pod.clone()) {
            panic!("{addr} handed to {other} and to {pod}");
        }
    }
    assert_eq!(by_ip.len(), 1000);
    std::thread::scope(|scope| {
        for n in 0..8 {
            let (plugin, net) = (plugin.clone(), net.clone());
            scope.spawn(move || {
                let node = format!("node-{n}");
                for i in 0..125 {
                    plugin.del(&node, &format!("{node}-pod-{i}"), &net).ok();
                }
            });
        }
    });
    runtime().block_on(async {
        let store = env.store("checker").await;
        assert!(
            held(&store, "bin8").await.is_empty(),
            "DEL of all leaves every pool empty"
        );
        // The nodes' Leases expire; `plexusctl ipam gc` deletes every empty block.
        let before = blocks_of(&env, "bin8").await.len();
        let expired = expire_all(&env, "ipam-bin8-").await;
        let kubeconfig = env.cluster.sa_kubeconfig().display().to_string();
        let (ok, text) = plexusctl(&["gc", "--kubeconfig", &kubeconfig]);
        assert!(ok, "{text}");
        let left = blocks_of(&env, "bin8").await.len();
        eprintln!(
            "1000 allocations over 8 nodes, all released, {expired} Leases expired, GC run: \
             {before} blocks before, {left} block objects left"
        );
        assert_eq!(left, 0, "{text}");
    });

    // SIGKILL mid-flight: 8 nodes start ADDs and each is killed after a few milliseconds.
    let killed = conf(
        &env,
        serde_json::json!({"range": "10.51.0.0/22", "network_name": "bin-killed"}),
    );
    let reported: Vec<(String, String)> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..8)
            .map(|n| {
                let (plugin, killed) = (plugin.clone(), killed.clone());
                scope.spawn(move || {
                    let node = format!("node-{n}");
                    let mut done = Vec::new();
                    for i in 0..40u64 {
                        let pod = format!("{node}-ghost-{i}");
                        let mut child = plugin
                            .command(&node, "ADD", &pod, &format!("ctr-{pod}"))
                            .spawn()
                            .expect("run plexus-ipam");
                        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
                        let delay = Duration::from_millis((i * 37 + n * 11) % 300);
                        let killer = std::thread::spawn(move || {
                            std::thread::sleep(delay);
                            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                        });
                        let out = finish(&mut child, &killed);
                        let _ = killer.join();
                        if out.code == Some(0) {
                            done.push((pod, out.addresses()[0].clone()));
                        }
                    }
                    done
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().expect("a node thread"))
            .collect()
    });
    let mut seen = HashMap::new();
    for (pod, addr) in &reported {
        if let Some(other) = seen.insert(addr.clone(), pod.clone()) {
            panic!("{addr} handed to {other} and to {pod}");
        }
    }
    runtime().block_on(async {
        let store = env.store("checker").await;
        let before = held(&store, "bin-killed").await;
        eprintln!(
            "SIGKILL: {} of 320 ADDs completed, {} addresses held",
            reported.len(),
            before.len()
        );
        for (pod, addr) in &reported {
            let a: IpAddr = addr.split('/').next().unwrap().parse().unwrap();
            assert_eq!(&before[&a].pod_name, pod);
        }
        // No pod of these exists: garbage collection recovers every address.
        let pods = KubePods::new(store.client().clone());
        let report = gc::collect(&store, &pods, &GcOptions::default())
            .await
            .unwrap();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert!(held(&store, "bin-killed").await.is_empty());
        // And allocation goes on after it, on every node.
        for n in 0..8 {
            let node = format!("node-{n}");
            let got = plugin
                .add(&node, &format!("{node}-after"), &killed)
                .addresses();
            assert_eq!(got.len(), 1);
        }
    });
}

// ---------------------------------------------------------------------------------------------
// `plexusctl ipam`.

/// Runs `plexusctl ipam <args> --namespace NS`: its exit status and stdout.
fn plexusctl(args: &[&str]) -> (bool, String) {
    let bin = plexus_tests::plexus_bin_dir().join("plexusctl");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        bin.display()
    );
    let out = Command::new(bin)
        .arg("ipam")
        .args(args)
        .args(["--namespace", NS])
        .stderr(Stdio::inherit())
        .output()
        .expect("run plexusctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// `plexusctl ipam pools` reports the NetworkAttachmentDefinitions' ranges with their usage
/// and pods; `plexusctl ipam gc` releases the addresses of pods that do not exist (a dry run
/// first), and keeps those of live pods.
#[test]
fn plexusctl_pools_and_gc() {
    use plexus_crds::{NetworkAttachmentDefinition, NetworkAttachmentDefinitionSpec};
    let Some(env) = Env::start() else { return };
    let kubeconfig = env.cluster.sa_kubeconfig().display().to_string();
    runtime().block_on(async {
        let config = conf(
            &env,
            serde_json::json!({"range": "10.60.0.0/28", "network_name": "ctl"}),
        );
        let nads: Api<NetworkAttachmentDefinition> =
            Api::namespaced(env.cluster.admin_client(), "default");
        nads.create(
            &PostParams::default(),
            &NetworkAttachmentDefinition::new(
                "ctl",
                NetworkAttachmentDefinitionSpec {
                    config: config.to_string(),
                },
            ),
        )
        .await
        .expect("a NetworkAttachmentDefinition");
        let pods_api: Api<Pod> = Api::namespaced(env.cluster.admin_client(), "default");
        let live = pods_api
            .create(&PostParams::default(), &pod_object("live"))
            .await
            .expect("a pod");
        let store = env.store("node-a").await;
        let p = pool("ctl", "10.60.0.0/28");
        let mut o = owner("live", "node-a");
        o.pod_uid = live.metadata.uid.clone().unwrap();
        assert_eq!(store.allocate(&p, &o).await.unwrap(), ip("10.60.0.1"));
        assert_eq!(
            store.allocate(&p, &owner("gone", "node-a")).await.unwrap(),
            ip("10.60.0.2")
        );
        assert_eq!(
            store
                .allocate(&p, &owner("gone-b", "node-b"))
                .await
                .unwrap(),
            ip("10.60.0.3")
        );
    });

    let (ok, out) = plexusctl(&["pools", "--kubeconfig", &kubeconfig, "--output", "json"]);
    assert!(ok, "{out}");
    let pools: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let ctl = pools
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["network"] == "ctl" && p["configured"] == true)
        .unwrap_or_else(|| panic!("the NAD's pool: {out}"));
    assert_eq!(ctl["cidr"], "10.60.0.0/28");
    assert_eq!(
        (
            ctl["size"].as_u64(),
            ctl["used"].as_u64(),
            ctl["free"].as_u64()
        ),
        (Some(14), Some(3), Some(11))
    );
    assert_eq!(ctl["allocations"][0]["owner"]["podName"], "live");
    assert_eq!(ctl["blocks"][0]["cidr"], "10.60.0.0/26", "{out}");
    assert_eq!(ctl["blocks"][0]["node"], "node-a", "{out}");
    assert_eq!(ctl["blocks"][0]["used"], 3, "{out}");
    let (ok, text) = plexusctl(&["pools", "--kubeconfig", &kubeconfig]);
    assert!(
        ok && text.contains("ctl\t10.60.0.0/28\t14\t3\t11"),
        "{text}"
    );
    assert!(
        text.contains("10.60.0.2\tdefault/gone\tnet1\tctr-gone\tnode-a"),
        "{text}"
    );
    // Blocks per node.
    assert!(
        text.contains("NODE\tNETWORK\tBLOCK\tUSED\tSIZE\tLEASE")
            && text.contains("node-a\tctl\t10.60.0.0/26\t3\t64\tlive"),
        "{text}"
    );

    // GC: a dry run, one node's, then all.
    let (ok, text) = plexusctl(&["gc", "--kubeconfig", &kubeconfig, "--dry-run"]);
    assert!(
        ok && text.contains("would release 10.60.0.2") && text.contains("would release 10.60.0.3"),
        "{text}"
    );
    let (ok, text) = plexusctl(&["gc", "--kubeconfig", &kubeconfig, "--node", "node-a"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("released 10.60.0.2") && !text.contains("10.60.0.3"),
        "{text}"
    );
    let (ok, text) = plexusctl(&["gc", "--kubeconfig", &kubeconfig, "--output", "json"]);
    assert!(ok, "{text}");
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["released"].as_array().unwrap().len(), 1, "{text}");
    assert_eq!(report["released"][0]["address"], "10.60.0.3");
    runtime().block_on(async {
        let store = env.store("checker").await;
        let left: Vec<IpAddr> = held(&store, "ctl").await.into_keys().collect();
        assert_eq!(left, [ip("10.60.0.1")], "the live pod keeps its address");
    });
}

// ---------------------------------------------------------------------------------------------
// Addresses bound to an IPAMClaim.

/// Installs the IPAMClaim CRD and waits until its API is served.
async fn install_claim_crd(env: &Env) {
    let client = env.cluster.admin_client();
    cluster::apply_yaml(&client, &plexus_crds::ipamclaim::crd_yaml())
        .await
        .expect("the IPAMClaim CRD");
    let claims: Api<IpamClaim> = Api::all(client);
    let deadline = Instant::now() + Duration::from_secs(30);
    while claims.list(&Default::default()).await.is_err() {
        assert!(Instant::now() < deadline, "the IPAMClaim API is not served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `config` with `args.cni["ipam-claim-reference"]` = `claim`.
fn with_claim(config: &serde_json::Value, claim: &str) -> serde_json::Value {
    let mut config = config.clone();
    config["args"] = serde_json::json!({"cni": {"ipam-claim-reference": claim}});
    config
}

/// A pod with an IPAMClaim keeps its address across DEL and re-creation on another node; the
/// claim's status shows it; DEL and GC (the plugin's and `plexusctl ipam gc`) keep it while the
/// claim exists; the claim's deletion lets GC free it. A missing claim, one of another
/// network, and a claim with another store are configuration errors (code 7).
#[test]
fn claim_bound_addresses() {
    let Some(env) = Env::start() else { return };
    let Some(plugin) = Plugin::find(&env) else {
        return;
    };
    runtime().block_on(claim_bound_addresses_on(&env, &plugin));
}

async fn claim_bound_addresses_on(env: &Env, plugin: &Plugin) {
    let claims: Api<IpamClaim> = Api::namespaced(env.cluster.admin_client(), "default");
    install_claim_crd(env).await;
    for (name, network) in [("vm-a.net1", "net"), ("elsewhere", "other-net")] {
        let spec = IpamClaimSpec {
            network: network.into(),
            interface: "net1".into(),
        };
        claims
            .create(&PostParams::default(), &IpamClaim::new(name, spec))
            .await
            .expect("a claim");
    }
    let net = conf(
        env,
        serde_json::json!({"range": "10.70.0.0/24", "network_name": "claimed"}),
    );
    let claimed = with_claim(&net, "vm-a.net1");
    assert_eq!(
        plugin.add("node-a", "first", &net).addresses(),
        ["10.70.0.1/24"]
    );
    // The pod gets an address bound to the claim; the claim's status shows it.
    assert_eq!(
        plugin.add("node-a", "vm-a-1", &claimed).addresses(),
        ["10.70.0.2/24"]
    );
    let status = || async { claims.get("vm-a.net1").await.expect("the claim").status.ips };
    assert_eq!(status().await, ["10.70.0.2/24"]);
    let record = || async {
        let blocks = blocks_of(env, "claimed").await;
        blocks[0].spec.allocations.get("10.70.0.2").cloned()
    };
    assert_eq!(record().await.unwrap().ipam_claim, "default/vm-a.net1");

    // DEL keeps it: a pod without a claim gets another address.
    plugin.del("node-a", "vm-a-1", &claimed).ok();
    assert!(
        record().await.is_some(),
        "DEL released a claim-bound address"
    );
    assert_eq!(
        plugin.add("node-a", "plain", &net).addresses(),
        ["10.70.0.3/24"]
    );
    // The pod re-created (new name, UID and container) on another node gets the same address;
    // the record names the new pod.
    assert_eq!(
        plugin.add("node-b", "vm-a-2", &claimed).addresses(),
        ["10.70.0.2/24"]
    );
    let now = record().await.unwrap();
    assert_eq!(
        (
            now.pod_name.as_str(),
            now.container_id.as_str(),
            now.node.as_str()
        ),
        ("vm-a-2", "ctr-vm-a-2", "node-b")
    );
    assert_eq!(status().await, ["10.70.0.2/24"]);

    // GC keeps it while the claim exists: the plugin's GC of node-b (no valid attachment), and
    // `plexusctl ipam gc` (no pod exists).
    let mut gc_conf = claimed.clone();
    gc_conf["cniVersion"] = "1.1.0".into();
    gc_conf["cni.dev/valid-attachments"] = serde_json::json!([]);
    plugin.run("node-b", "GC", "", "", &gc_conf).ok();
    assert!(record().await.is_some(), "the plugin's GC released it");
    let kubeconfig = env.cluster.sa_kubeconfig().display().to_string();
    let (ok, text) = plexusctl(&["gc", "--kubeconfig", &kubeconfig]);
    assert!(ok && !text.contains("10.70.0.2"), "{text}");
    assert!(record().await.is_some(), "plexusctl ipam gc released it");

    // The claim deleted: the plugin's GC frees the address.
    claims
        .delete("vm-a.net1", &Default::default())
        .await
        .expect("delete the claim");
    plugin.run("node-b", "GC", "", "", &gc_conf).ok();
    assert!(
        record().await.is_none(),
        "GC kept the address of a deleted claim"
    );

    // Concurrent ADDs of one claim on four nodes: one address, bound once.
    let race = with_claim(&net, "race");
    let spec = IpamClaimSpec {
        network: "claimed".into(),
        interface: "net1".into(),
    };
    claims
        .create(&PostParams::default(), &IpamClaim::new("race", spec))
        .await
        .expect("a claim");
    let mut children: Vec<Child> = (0..4)
        .map(|i| {
            let pod = format!("race-{i}");
            let mut child = plugin
                .command(&format!("node-r{i}"), "ADD", &pod, &format!("ctr-{pod}"))
                .spawn()
                .expect("run plexus-ipam");
            use std::io::Write;
            let _ = child
                .stdin
                .take()
                .unwrap()
                .write_all(race.to_string().as_bytes());
            child
        })
        .collect();
    let got: BTreeSet<Vec<String>> = children
        .iter_mut()
        .map(|c| finish(c, &race).addresses())
        .collect();
    let bound: Vec<String> = blocks_of(env, "claimed")
        .await
        .iter()
        .flat_map(|b| b.spec.allocations.iter())
        .filter(|(_, a)| a.ipam_claim == "default/race")
        .map(|(ip, _)| ip.clone())
        .collect();
    assert_eq!(
        got.len(),
        1,
        "one claim, several addresses: {got:?}; bound {bound:?}; status {:?}",
        claims.get("race").await.expect("the claim").status
    );
    assert_eq!(bound.len(), 1, "{bound:?}");
    let ips = claims.get("race").await.expect("the claim").status.ips;
    assert_eq!(ips, got.into_iter().next().unwrap());

    // Configuration errors, naming the claim.
    let missing = plugin.add("node-a", "p-missing", &claimed);
    assert_eq!(missing.code, Some(1), "{}", missing.stdout);
    assert_eq!(missing.json["code"], 7, "{}", missing.stdout);
    assert!(
        missing.stdout.contains("default/vm-a.net1"),
        "{}",
        missing.stdout
    );
    let other = plugin.add("node-a", "p-other", &with_claim(&net, "elsewhere"));
    assert_eq!(other.json["code"], 7, "{}", other.stdout);
    assert!(other.stdout.contains("other-net"), "{}", other.stdout);
    let dir = tempfile::tempdir().unwrap();
    let local = serde_json::json!({"cniVersion": "1.0.0", "name": "net", "type": "macvlan",
        "ipam": {"type": "plexus-ipam", "range": "10.71.0.0/24", "backend": "local",
                 "local_path": dir.path()},
        "args": {"cni": {"ipam-claim-reference": "vm-a.net1"}}});
    let refused = plugin.add("node-a", "p-local", &local);
    assert_eq!(refused.json["code"], 7, "{}", refused.stdout);
    assert!(
        refused.stdout.contains("Kubernetes store"),
        "{}",
        refused.stdout
    );
}
