//! Switching from Whereabouts: `plexusctl ipam import whereabouts` and the guard of
//! `plexus-ipam` against a forgotten import, against a real kube-apiserver 1.20 with
//! Whereabouts's CRDs (`plexus_crds::whereabouts`, written from its published schema) and
//! hand-made `IPPool`s and `OverlappingRangeIPReservation`s as Whereabouts writes them.
//!
//! Needs the cached kube-apiserver (`cargo xtask apiserver`) and the built binaries
//! (`cargo build --workspace --bins`), not root. Without the API server the tests are skipped,
//! except in CI.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kube::api::{Api, PostParams};
use plexus_crds::whereabouts::{
    IpPool, IpPoolAllocation, IpPoolSpec, OverlappingRangeIpReservation,
    OverlappingRangeIpReservationSpec,
};
use plexus_crds::IpamBlock;
use plexus_ipam::backends::kubernetes::{KubeOptions, KubeStore, DEFAULT_TIMEOUT};
use plexus_ipam::import::{self, ImportError, ImportOptions};
use plexus_ipam::store::Store;
use plexus_tests::cluster::{self, LocalCluster};
use plexus_tests::ipam::{ip, owner, pool};
use plexus_tests::runtime;

/// Where Whereabouts keeps its objects.
const NS: &str = "kube-system";
/// Where Plexus keeps its blocks (the shipped RBAC's IPAM namespace).
const IPAM_NS: &str = cluster::IPAM_NAMESPACE;

/// A cluster with Whereabouts's CRDs, an admin kubeconfig file, and a hint directory.
struct Env {
    cluster: LocalCluster,
    hints: tempfile::TempDir,
}

impl Env {
    fn start() -> Option<Env> {
        let apiserver = cluster::apiserver_or_skip()?;
        let cluster = LocalCluster::start_with(&apiserver).expect("a local cluster");
        runtime().block_on(async {
            let client = cluster.admin_client();
            cluster::apply_yaml(&client, &plexus_crds::whereabouts::crd_yaml())
                .await
                .expect("Whereabouts's CRDs");
            // Served once a LIST answers.
            let pools: Api<IpPool> = Api::all(client);
            let deadline = Instant::now() + Duration::from_secs(30);
            while pools.list(&Default::default()).await.is_err() {
                assert!(Instant::now() < deadline, "the IPPool API is not served");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Some(Env {
            cluster,
            hints: tempfile::tempdir().expect("a hint directory"),
        })
    }

    /// The kubeconfig of `system:masters` (the import is an administrator's command).
    fn admin_kubeconfig(&self) -> PathBuf {
        self.cluster.dir().join("kubeconfig")
    }

    async fn store(&self, node: &str, kubeconfig: &Path) -> KubeStore {
        let options = KubeOptions {
            hint_dir: self.hints.path().to_path_buf(),
            ..KubeOptions::new(node)
        };
        KubeStore::from_kubeconfig(kubeconfig, IPAM_NS, DEFAULT_TIMEOUT, options)
            .await
            .expect("a store")
    }

    async fn pool(&self, name: &str, range: &str, allocations: &[(&str, &str, &str)]) {
        let spec = IpPoolSpec {
            range: range.into(),
            allocations: allocations
                .iter()
                .map(|(key, pod, ifname)| {
                    let a = IpPoolAllocation {
                        id: format!("ctr-{}", pod.rsplit('/').next().unwrap()),
                        podref: pod.to_string(),
                        ifname: ifname.to_string(),
                    };
                    (key.to_string(), a)
                })
                .collect(),
        };
        let api: Api<IpPool> = Api::namespaced(self.cluster.admin_client(), NS);
        api.create(&PostParams::default(), &IpPool::new(name, spec))
            .await
            .expect("create an IPPool");
    }

    async fn reservation(&self, name: &str, pod: &str) {
        let spec = OverlappingRangeIpReservationSpec {
            containerid: String::new(),
            podref: pod.into(),
            ifname: "net1".into(),
        };
        let api: Api<OverlappingRangeIpReservation> =
            Api::namespaced(self.cluster.admin_client(), NS);
        api.create(
            &PostParams::default(),
            &OverlappingRangeIpReservation::new(name, spec),
        )
        .await
        .expect("create a reservation");
    }

    /// Every allocation of `network` in the blocks: address → pod.
    async fn held(&self, network: &str) -> BTreeMap<IpAddr, String> {
        let api: Api<IpamBlock> = Api::namespaced(self.cluster.admin_client(), IPAM_NS);
        let mut out = BTreeMap::new();
        for block in api.list(&Default::default()).await.unwrap().items {
            if block.spec.network != network {
                continue;
            }
            for (ip, a) in block.spec.allocations {
                let pod = format!("{}/{}", a.pod_namespace, a.pod_name);
                assert!(out.insert(ip.parse().unwrap(), pod).is_none());
            }
        }
        out
    }
}

/// Runs a binary of the workspace: its exit status, stdout and stderr.
fn run(bin: &str, args: &[&str], env: &[(&str, &str)], stdin: &str) -> (bool, String, String) {
    use std::io::Write;
    let path = plexus_tests::plexus_bin_dir().join(bin);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins`",
        path.display()
    );
    let mut child = Command::new(path)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().expect("wait");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `plexusctl ipam import whereabouts <args>` as administrator.
fn import_cmd(env: &Env, args: &[&str]) -> (bool, String, String) {
    let kubeconfig = env.admin_kubeconfig().display().to_string();
    let mut all = vec![
        "ipam",
        "import",
        "whereabouts",
        "--kubeconfig",
        &kubeconfig,
        "--namespace",
        IPAM_NS,
    ];
    all.extend_from_slice(args);
    run("plexusctl", &all, &[], "")
}

/// One `plexus-ipam` ADD on `node` as the service account: the JSON answer.
fn plugin_add(env: &Env, node: &str, pod: &str, ipam: serde_json::Value) -> serde_json::Value {
    let mut object = serde_json::json!({
        "type": "plexus-ipam",
        "kubernetes": {"kubeconfig": env.cluster.sa_kubeconfig(), "namespace": IPAM_NS},
    });
    for (k, v) in ipam.as_object().unwrap() {
        object[k] = v.clone();
    }
    let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "net", "type": "macvlan", "ipam": object});
    let hints = env.hints.path().join("bin").display().to_string();
    let args = format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};K8S_POD_UID=uid-{pod}");
    let container = format!("ctr-{pod}");
    let (_, stdout, _) = run(
        "plexus-ipam",
        &[],
        &[
            ("NODE_NAME", node),
            ("PLEXUS_IPAM_AFFINITY_DIR", &hints),
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", &container),
            ("CNI_NETNS", "/run/netns/ipam-import-test"),
            ("CNI_IFNAME", "net1"),
            ("CNI_ARGS", &args),
            ("CNI_PATH", "/nonexistent"),
        ],
        &conf.to_string(),
    );
    serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("not JSON: {stdout}"))
}

/// The whole switch-over: a dry run writes nothing, the guard stops ADD until the import, a
/// conflict is refused naming both holders, the import of IPv4, IPv6 and overlapping ranges
/// (and a reservation without a pool entry) is idempotent, and 200 new allocations never
/// duplicate an imported address.
#[test]
fn import_whereabouts_and_the_guard() {
    let Some(env) = Env::start() else { return };
    runtime().block_on(async {
        // The unnamed network: 10.80.0.0/24 and an overlapping 10.80.0.0/25 (the same pod at
        // .1 in both), plus a reservation for .9 that no pool lists (diverged, #409).
        env.pool(
            "10.80.0.0-24",
            "10.80.0.0/24",
            &[
                ("1", "default/wa-1", "net1"),
                ("2", "default/wa-2", "net1"),
                ("70", "default/wa-70", "net1"),
            ],
        )
        .await;
        env.pool(
            "10.80.0.0-25",
            "10.80.0.0/25",
            &[("1", "default/wa-1", "net1"), ("5", "default/wa-5", "net2")],
        )
        .await;
        env.reservation("10.80.0.1", "default/wa-1").await;
        env.reservation("10.80.0.9", "default/wa-9").await;
        // A named IPv6 network, with an offset Whereabouts wrote as a negative number.
        env.pool(
            "blue-fd00-80---64",
            "fd00:80::/64",
            &[
                ("1", "default/wa-v6a", "net1"),
                ("-3844666706890850303", "default/wa-v6b", "net1"),
            ],
        )
        .await;
    });

    // A dry run says what it would write and writes nothing.
    let (ok, out, err) = import_cmd(&env, &[]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("would import 10.80.0.9 (network -) for default/wa-9"),
        "{out}"
    );
    assert!(out.contains("7 would import"), "{out}");
    runtime().block_on(async {
        assert!(env.held("").await.is_empty(), "a dry run wrote");
    });

    // The guard: the first block of 10.80.0.0/24 is refused, naming the command.
    let refused = plugin_add(
        &env,
        "node-a",
        "early",
        serde_json::json!({"range": "10.80.0.0/24"}),
    );
    assert_eq!(refused["code"], 7, "{refused}");
    let msg = refused["msg"].as_str().unwrap();
    assert!(
        msg.contains("plexusctl ipam import whereabouts --apply"),
        "{msg}"
    );
    assert!(msg.contains("kube-system/10.80.0.0-24"), "{msg}");
    // Another network is not guarded by this pool.
    let other = plugin_add(
        &env,
        "node-a",
        "other",
        serde_json::json!({"range": "10.80.0.0/24", "network_name": "green"}),
    );
    assert_eq!(other["ips"][0]["address"], "10.80.0.1/24", "{other}");

    // A conflict: with the guard off, a pod of network "red" gets 10.81.0.1, which Whereabouts
    // gave to red/wa-red: the import refuses, naming both, and writes nothing at all.
    runtime().block_on(async {
        env.pool(
            "red-10.81.0.0-24",
            "10.81.0.0/24",
            &[("1", "default/wa-red", "net1")],
        )
        .await;
    });
    let taken = plugin_add(
        &env,
        "node-a",
        "newcomer",
        serde_json::json!({"range": "10.81.0.0/24", "network_name": "red", "whereabouts_import_check": false}),
    );
    assert_eq!(taken["ips"][0]["address"], "10.81.0.1/24", "{taken}");
    let (ok, out, err) = import_cmd(&env, &["--apply"]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("10.81.0.1 (network red): IPPool kube-system/red-10.81.0.0-24 gives it to default/wa-red")
            && err.contains("IPAMBlock plexus-system/red-10.81.0.0-26 gives it to default/newcomer"),
        "{err}"
    );
    runtime().block_on(async {
        assert!(env.held("").await.is_empty(), "a refused import wrote");
        // The newcomer goes; now the import can go through.
        let store = env.store("node-a", env.cluster.sa_kubeconfig()).await;
        store
            .release(&pool("red", "10.81.0.0/24"), "ctr-newcomer", "net1")
            .await
            .unwrap();
    });

    let (ok, out, err) = import_cmd(&env, &["--apply"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("8 imported, 0 already imported"), "{out}");
    runtime().block_on(async {
        let held = env.held("").await;
        let want: BTreeMap<IpAddr, String> = [
            ("10.80.0.1", "default/wa-1"),
            ("10.80.0.2", "default/wa-2"),
            ("10.80.0.5", "default/wa-5"),
            ("10.80.0.9", "default/wa-9"),
            ("10.80.0.70", "default/wa-70"),
        ]
        .into_iter()
        .map(|(a, p)| (ip(a), p.to_string()))
        .collect();
        assert_eq!(held, want);
        let blue: Vec<IpAddr> = env.held("blue").await.into_keys().collect();
        assert_eq!(blue, [ip("fd00:80::1"), ip("fd00:80::caa5:0:0:1")]);
    });
    // Idempotent: a second run writes nothing.
    let (ok, out, err) = import_cmd(&env, &["--apply"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("0 imported, 8 already imported"), "{out}");

    // The guard passes now, and the first free address is not an imported one.
    let after = plugin_add(
        &env,
        "node-a",
        "after",
        serde_json::json!({"range": "10.80.0.0/24"}),
    );
    assert_eq!(after["ips"][0]["address"], "10.80.0.3/24", "{after}");

    // 200 new allocations over 4 nodes: none duplicates an imported address.
    runtime().block_on(async {
        let p = pool("", "10.80.0.0/24");
        let imported: BTreeSet<IpAddr> = env.held("").await.into_keys().collect();
        let mut fresh = BTreeSet::new();
        for n in 0..4 {
            let node = format!("node-{n}");
            let store = env.store(&node, env.cluster.sa_kubeconfig()).await;
            for i in 0..50 {
                let got = store
                    .allocate(&p, &owner(&format!("{node}-{i}"), &node))
                    .await
                    .unwrap();
                assert!(fresh.insert(got), "{got} handed out twice");
                assert!(
                    !imported.contains(&got),
                    "{got} was imported from Whereabouts"
                );
            }
        }
        assert_eq!(fresh.len(), 200);
        assert_eq!(env.held("").await.len(), imported.len() + 200);
    });
}

/// 10,000 Whereabouts allocations in one IPPool, imported (the time is printed).
#[test]
fn import_ten_thousand_allocations() {
    let Some(env) = Env::start() else { return };
    runtime().block_on(async {
        let allocations: Vec<(String, String, &str)> = (1..=10_000)
            .map(|i| (i.to_string(), format!("default/big-{i}"), "net1"))
            .collect();
        let refs: Vec<(&str, &str, &str)> = allocations
            .iter()
            .map(|(k, p, i)| (k.as_str(), p.as_str(), *i))
            .collect();
        env.pool("big-10.96.0.0-18", "10.96.0.0/18", &refs).await;
        let store = env.store("importer", &env.admin_kubeconfig()).await;
        let started = Instant::now();
        let report = import::import_whereabouts(
            &store,
            &ImportOptions {
                apply: true,
                networks: Default::default(),
            },
        )
        .await
        .unwrap_or_else(|e: ImportError| panic!("{e}"));
        let elapsed = started.elapsed();
        assert_eq!(report.added(), 10_000);
        eprintln!(
            "imported 10,000 Whereabouts allocations into {} blocks in {:.2}s",
            report.blocks.len(),
            elapsed.as_secs_f64()
        );
        assert_eq!(env.held("big").await.len(), 10_000);
        let again = import::import_whereabouts(&store, &ImportOptions::default())
            .await
            .unwrap();
        assert_eq!((again.added(), again.present()), (0, 10_000));
    });
}
