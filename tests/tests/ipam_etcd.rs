//! The etcd IPAM backend against a real etcd (Debian's `etcd-server`, on loopback).
//!
//! * Table tests of [`EtcdStore`] itself: ranges, bounds, excludes, the gateway, idempotency,
//!   exhaustion (CNI code 120) and recovery after a release, an IPv6 /64 with offsets of 2^63
//!   and above, dual stack, overlapping ranges, paging, exact release, an unreachable etcd.
//! * Concurrency: 8 processes standing for 8 nodes allocate 125 addresses each at once; some
//!   are killed with SIGKILL in mid-flight. Every address is handed out once, and the store's
//!   keys and indexes stay consistent ([`check_consistency`]). This runs with child processes
//!   of this test binary (each with its own etcd client, see [`allocator_child`]) and, when the
//!   `plexus-ipam` binary is built, with 1000 real `plexus-ipam` ADDs and DELs.
//!
//! Most tests share one etcd (each under its own key prefix or network); the fault tests start
//! their own.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use plexus_cni::ErrorCode;
use plexus_ipam::backends::etcd::keys::{self, PoolKeys};
use plexus_ipam::backends::etcd::EtcdStore;
use plexus_ipam::config::EtcdAuth;
use plexus_ipam::range::IpRange;
use plexus_ipam::store::{Allocation, Owner, Pool, Store, StoreError};
use plexus_tests::etcd::{etcd_or_skip, LocalEtcd};
use plexus_tests::runtime;
use serde_json::{json, Value};

/// Every request's deadline in these tests.
const TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The etcd shared by the tests of this binary (it dies with the process).
fn shared_etcd() -> Option<&'static LocalEtcd> {
    static ETCD: OnceLock<LocalEtcd> = OnceLock::new();
    etcd_or_skip()?;
    Some(ETCD.get_or_init(|| LocalEtcd::start().expect("etcd starts")))
}

/// A key prefix of its own for each test.
fn unique_prefix(test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "/plexus-test/{test}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A current-thread runtime with timers and I/O.
fn connect(rt: &tokio::runtime::Runtime, endpoints: &[String], prefix: &str) -> EtcdStore {
    rt.block_on(EtcdStore::connect(endpoints, prefix, TIMEOUT))
        .expect("connect to etcd")
}

/// A pod's interface.
fn pod(name: &str, container: &str, ifname: &str) -> Owner {
    Owner {
        pod_namespace: "default".into(),
        pod_name: name.into(),
        pod_uid: format!("uid-{name}"),
        container_id: container.into(),
        ifname: ifname.into(),
        node: "node-a".into(),
        claim: String::new(),
    }
}

/// A container outside Kubernetes.
fn container(id: &str) -> Owner {
    Owner {
        pod_namespace: String::new(),
        pod_name: String::new(),
        pod_uid: String::new(),
        container_id: id.into(),
        ifname: "eth0".into(),
        node: String::new(),
        claim: String::new(),
    }
}

fn pool_of(network: &str, range: &str, start: Option<&str>, exclude: &[&str]) -> Pool {
    let exclude: Vec<String> = exclude.iter().map(|s| s.to_string()).collect();
    Pool {
        network: network.into(),
        range: IpRange::parse(range, start, None, &exclude, None).expect("a valid range"),
        overlapping: true,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Every key under `prefix`, with its value.
fn dump(
    rt: &tokio::runtime::Runtime,
    endpoints: &[String],
    prefix: &str,
) -> Vec<(String, Vec<u8>)> {
    rt.block_on(async {
        let mut client = etcd_client::Client::connect(endpoints, None).await.unwrap();
        let answer = client
            .get(
                format!("{prefix}/"),
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await
            .unwrap();
        answer
            .kvs()
            .iter()
            .map(|kv| (kv.key_str().unwrap().to_string(), kv.value().to_vec()))
            .collect()
    })
}

/// What is wrong with the keys under `prefix`: each allocation key must have exactly its
/// index keys (container, and pod for a pod) holding its owner, every index key must belong to
/// an allocation, and an attachment may hold at most one address per pool.
fn check_consistency(keys_and_values: &[(String, Vec<u8>)], prefix: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let stored: HashMap<&str, &[u8]> = keys_and_values
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    let mut expected_index = BTreeSet::new();
    let mut attachments: BTreeMap<(String, String, String), Vec<IpAddr>> = BTreeMap::new();
    for (key, value) in keys_and_values {
        let Some(parsed) = keys::parse_ip_key(prefix, key.as_bytes()) else {
            continue;
        };
        let record: Value = serde_json::from_slice(value).expect("a JSON record");
        let owner: Owner = serde_json::from_value(record.clone()).expect("an owner");
        let cidr = record["cidr"].as_str().expect("a cidr").to_string();
        let pool = PoolKeys::of(prefix, &parsed.network, cidr.parse().unwrap());
        let mut index = vec![pool.owner_index(&owner, parsed.address)];
        index.extend(pool.pod_index(&owner, parsed.address));
        for index_key in index {
            match stored.get(index_key.as_str()) {
                None => problems.push(format!("{key}: no index key {index_key}")),
                Some(v) if serde_json::from_slice::<Owner>(v).ok().as_ref() != Some(&owner) => {
                    problems.push(format!("{index_key}: not the owner of {key}"))
                }
                Some(_) => {}
            }
            expected_index.insert(index_key);
        }
        attachments
            .entry((parsed.network, cidr, attachment_of(&owner)))
            .or_default()
            .push(parsed.address);
    }
    for (key, _) in keys_and_values {
        if keys::parse_ip_key(prefix, key.as_bytes()).is_none() && !expected_index.contains(key) {
            problems.push(format!("{key}: an index key of no allocation"));
        }
    }
    for (attachment, addresses) in attachments {
        if addresses.len() > 1 {
            problems.push(format!("{attachment:?} holds {addresses:?}"));
        }
    }
    problems
}

/// The attachment an owner stands for (as `Owner::same_attachment` matches).
fn attachment_of(owner: &Owner) -> String {
    if owner.pod_name.is_empty() {
        format!("{}/{}", owner.container_id, owner.ifname)
    } else {
        format!(
            "{}/{}/{}",
            owner.pod_namespace, owner.pod_name, owner.ifname
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Table tests of the store
// ---------------------------------------------------------------------------------------------

/// One table row: a range and what successive ADDs of distinct pods get.
struct Case {
    name: &'static str,
    range: &'static str,
    range_start: Option<&'static str>,
    exclude: &'static [&'static str],
    expect: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        name: "a /29 hands out .1 to .6 in order",
        range: "10.0.0.0/29",
        range_start: None,
        exclude: &[],
        expect: &[
            "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6",
        ],
    },
    Case {
        name: "start-end/prefix bounds",
        range: "192.168.1.5-192.168.1.7/24",
        range_start: None,
        exclude: &[],
        expect: &["192.168.1.5", "192.168.1.6", "192.168.1.7"],
    },
    Case {
        name: "excluded CIDR and bare address are skipped",
        range: "10.1.0.0/28",
        range_start: None,
        exclude: &["10.1.0.0/30", "10.1.0.5", "10.1.0.8/29"],
        expect: &["10.1.0.4", "10.1.0.6", "10.1.0.7"],
    },
    Case {
        name: "IPv6 /64 from an offset of 2^63 to the last usable address",
        range: "fd00:1::/64",
        range_start: Some("fd00:1::ffff:ffff:ffff:fffb"),
        exclude: &["fd00:1::ffff:ffff:ffff:fffc"],
        expect: &[
            "fd00:1::ffff:ffff:ffff:fffb",
            "fd00:1::ffff:ffff:ffff:fffd",
            "fd00:1::ffff:ffff:ffff:fffe",
        ],
    },
    Case {
        name: "IPv6 /64 at offset 2^63 exactly",
        range: "fd00:2::8000:0:0:0-fd00:2::8000:0:0:1/64",
        range_start: None,
        exclude: &[],
        expect: &["fd00:2::8000:0:0:0", "fd00:2::8000:0:0:1"],
    },
];

#[test]
fn table_ranges_fill_in_order_then_exhaust_with_code_120_and_recover() {
    let Some(etcd) = shared_etcd() else { return };
    let rt = runtime();
    let store = connect(&rt, &etcd.endpoints(), &unique_prefix("table"));
    for case in CASES {
        let pool = pool_of(case.name, case.range, case.range_start, case.exclude);
        let mut got = Vec::new();
        for (i, _) in case.expect.iter().enumerate() {
            let owner = pod(&format!("p{i}"), &format!("c{i}"), "net1");
            got.push(rt.block_on(store.allocate(&pool, &owner)).unwrap());
        }
        let expect: Vec<IpAddr> = case.expect.iter().map(|s| ip(s)).collect();
        assert_eq!(got, expect, "{}", case.name);

        let extra = pod("extra", "c-extra", "net1");
        let err = rt.block_on(store.allocate(&pool, &extra)).unwrap_err();
        assert!(
            matches!(err, StoreError::Exhausted { .. }),
            "{}: {err:?}",
            case.name
        );
        assert_eq!(err.code(), ErrorCode::PoolExhausted, "{}", case.name);
        assert_eq!(err.code().code(), 120);
        let message = err.to_string();
        assert!(
            message.contains(&pool.range.cidr().to_string()),
            "{message}"
        );

        // A DEL frees exactly one address, which the next ADD gets.
        let middle = case.expect.len() / 2;
        let released = rt
            .block_on(store.release(&pool, &format!("c{middle}"), "net1"))
            .unwrap();
        assert_eq!(released, vec![expect[middle]], "{}", case.name);
        assert_eq!(
            rt.block_on(store.allocate(&pool, &extra)).unwrap(),
            expect[middle],
            "{}",
            case.name
        );
    }
    let problems = check_consistency(
        &dump(&rt, &etcd.endpoints(), store.prefix()),
        store.prefix(),
    );
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn repeated_add_is_idempotent_by_pod_and_interface() {
    let Some(etcd) = shared_etcd() else { return };
    let rt = runtime();
    let store = connect(&rt, &etcd.endpoints(), &unique_prefix("idem"));
    let pool = pool_of("", "10.2.0.0/24", None, &[]);
    let web = pod("web", "c1", "net1");
    let first = rt.block_on(store.allocate(&pool, &web)).unwrap();
    assert_eq!(first, ip("10.2.0.1"));
    assert_eq!(rt.block_on(store.allocate(&pool, &web)).unwrap(), first);
    // Another interface of the same pod is another attachment.
    let net2 = pod("web", "c1", "net2");
    assert_eq!(
        rt.block_on(store.allocate(&pool, &net2)).unwrap(),
        ip("10.2.0.2")
    );
    // The pod's new sandbox takes its address over (Whereabouts's stickiness) ...
    let web_again = pod("web", "c2", "net1");
    assert_eq!(
        rt.block_on(store.allocate(&pool, &web_again)).unwrap(),
        first
    );
    // ... so the old sandbox's DEL frees nothing, and the new one's frees it.
    assert!(rt
        .block_on(store.release(&pool, "c1", "net1"))
        .unwrap()
        .is_empty());
    assert_eq!(
        rt.block_on(store.release(&pool, "c2", "net1")).unwrap(),
        vec![first]
    );
    // DEL of what is not held is fine, and repeatable.
    assert!(rt
        .block_on(store.release(&pool, "c2", "net1"))
        .unwrap()
        .is_empty());
    assert!(rt
        .block_on(store.release(&pool, "nope", "eth0"))
        .unwrap()
        .is_empty());

    // Outside Kubernetes the attachment is the container and interface.
    let plain = container("docker-1");
    let a = rt.block_on(store.allocate(&pool, &plain)).unwrap();
    assert_eq!(rt.block_on(store.allocate(&pool, &plain)).unwrap(), a);
    assert_ne!(
        rt.block_on(store.allocate(&pool, &container("docker-2")))
            .unwrap(),
        a
    );

    let usage = rt.block_on(store.usage()).unwrap();
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].network, "");
    assert_eq!(usage[0].cidr, "10.2.0.0/24");
    let held: Vec<(IpAddr, String)> = usage[0]
        .allocations
        .iter()
        .map(|a| (a.address, a.owner.container_id.clone()))
        .collect();
    assert_eq!(
        held,
        [
            (ip("10.2.0.1"), "docker-1".to_string()),
            (ip("10.2.0.2"), "c1".to_string()),
            (ip("10.2.0.3"), "docker-2".to_string()),
        ]
    );
    let problems = check_consistency(
        &dump(&rt, &etcd.endpoints(), store.prefix()),
        store.prefix(),
    );
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn dual_stack_and_overlapping_ranges_share_addresses_within_a_network() {
    let Some(etcd) = shared_etcd() else { return };
    let rt = runtime();
    let store = connect(&rt, &etcd.endpoints(), &unique_prefix("dual"));
    let v4 = pool_of("dual", "10.3.0.0/24", None, &[]);
    let v6 = pool_of("dual", "fd00:3::/64", None, &[]);
    let web = pod("web", "c1", "eth0");
    assert_eq!(
        rt.block_on(store.allocate(&v4, &web)).unwrap(),
        ip("10.3.0.1")
    );
    assert_eq!(
        rt.block_on(store.allocate(&v6, &web)).unwrap(),
        ip("fd00:3::1")
    );
    let db = pod("db", "c2", "eth0");
    assert_eq!(
        rt.block_on(store.allocate(&v4, &db)).unwrap(),
        ip("10.3.0.2")
    );
    assert_eq!(
        rt.block_on(store.allocate(&v6, &db)).unwrap(),
        ip("fd00:3::2")
    );

    // A pool of the same network whose range overlaps shares the addresses ...
    let mut narrow = pool_of("dual", "10.3.0.0/25", None, &[]);
    narrow.overlapping = false;
    let cache = pod("cache", "c3", "eth0");
    assert_eq!(
        rt.block_on(store.allocate(&narrow, &cache)).unwrap(),
        ip("10.3.0.3")
    );
    // ... and another network is another collision domain.
    let other = pool_of("other", "10.3.0.0/24", None, &[]);
    assert_eq!(
        rt.block_on(store.allocate(&other, &cache)).unwrap(),
        ip("10.3.0.1")
    );

    let usage = rt.block_on(store.usage()).unwrap();
    let pools: Vec<(String, String, usize)> = usage
        .iter()
        .map(|u| (u.network.clone(), u.cidr.clone(), u.allocations.len()))
        .collect();
    assert_eq!(
        pools,
        [
            ("dual".to_string(), "10.3.0.0/24".to_string(), 2),
            ("dual".to_string(), "10.3.0.0/25".to_string(), 1),
            ("dual".to_string(), "fd00:3::/64".to_string(), 2),
            ("other".to_string(), "10.3.0.0/24".to_string(), 1),
        ]
    );

    // DEL releases per pool: the v4 address only, then the v6 one.
    assert_eq!(
        rt.block_on(store.release(&v4, "c1", "eth0")).unwrap(),
        vec![ip("10.3.0.1")]
    );
    assert_eq!(
        rt.block_on(store.release(&v6, "c1", "eth0")).unwrap(),
        vec![ip("fd00:3::1")]
    );
    for (pool, id) in [(&v4, "c2"), (&v6, "c2"), (&narrow, "c3"), (&other, "c3")] {
        assert_eq!(
            rt.block_on(store.release(pool, id, "eth0")).unwrap().len(),
            1
        );
    }
    assert!(rt.block_on(store.usage()).unwrap().is_empty());
    assert!(dump(&rt, &etcd.endpoints(), store.prefix()).is_empty());
}

#[test]
fn paging_finds_the_lowest_free_address_beyond_the_first_page() {
    let Some(etcd) = shared_etcd() else { return };
    let rt = runtime();
    let store = connect(&rt, &etcd.endpoints(), &unique_prefix("page")).with_page_size(4);
    let pool = pool_of("", "fd00:4::/64", Some("fd00:4::ffff:ffff:ffff:0"), &[]);
    let mut got = Vec::new();
    for i in 0..19 {
        got.push(
            rt.block_on(store.allocate(&pool, &container(&format!("c{i}"))))
                .unwrap(),
        );
    }
    let base = u128::from(match ip("fd00:4::ffff:ffff:ffff:0") {
        IpAddr::V6(v6) => v6,
        IpAddr::V4(_) => unreachable!(),
    });
    let expect: Vec<IpAddr> = (0..19).map(|i| IpAddr::V6((base + i).into())).collect();
    assert_eq!(got, expect);
    assert_eq!(
        rt.block_on(store.release(&pool, "c13", "eth0")).unwrap(),
        vec![expect[13]]
    );
    assert_eq!(
        rt.block_on(store.allocate(&pool, &container("new")))
            .unwrap(),
        expect[13]
    );
    assert_eq!(
        rt.block_on(store.allocate(&pool, &container("newer")))
            .unwrap(),
        IpAddr::V6((base + 19).into())
    );
    let usage = rt.block_on(store.usage()).unwrap();
    assert_eq!(usage[0].allocations.len(), 20, "usage pages too");
}

#[test]
fn exact_release_frees_only_the_same_owner() {
    let Some(etcd) = shared_etcd() else { return };
    let rt = runtime();
    let store = connect(&rt, &etcd.endpoints(), &unique_prefix("exact"));
    let pool = pool_of("gc", "10.5.0.0/24", None, &[]);
    let web = pod("web", "c1", "net1");
    let address = rt.block_on(store.allocate(&pool, &web)).unwrap();
    let stale = Allocation {
        address,
        owner: pod("web", "c0", "net1"),
    };
    assert!(!rt.block_on(store.release_exact("gc", &stale)).unwrap());
    assert!(!rt
        .block_on(store.release_exact(
            "other",
            &Allocation {
                address,
                owner: web.clone(),
            }
        ))
        .unwrap());
    let exact = Allocation {
        address,
        owner: web.clone(),
    };
    assert!(rt.block_on(store.release_exact("gc", &exact)).unwrap());
    assert!(!rt.block_on(store.release_exact("gc", &exact)).unwrap());
    assert!(dump(&rt, &etcd.endpoints(), store.prefix()).is_empty());
    // The pod index went too: the pod's next ADD allocates afresh.
    assert_eq!(rt.block_on(store.allocate(&pool, &web)).unwrap(), address);
}

#[test]
fn threads_with_their_own_clients_never_share_an_address() {
    let Some(etcd) = shared_etcd() else { return };
    let prefix = unique_prefix("threads");
    let pool = pool_of("", "10.6.0.0/24", None, &[]);
    let per_thread = 30;
    let results: Vec<Vec<IpAddr>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let (prefix, pool, endpoints) = (&prefix, &pool, etcd.endpoints());
                scope.spawn(move || {
                    let rt = runtime();
                    let store = connect(&rt, &endpoints, prefix);
                    (0..per_thread)
                        .map(|i| {
                            let owner = pod(&format!("t{t}-{i}"), &format!("c{t}-{i}"), "net1");
                            rt.block_on(store.allocate(pool, &owner)).unwrap()
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all: Vec<IpAddr> = results.into_iter().flatten().collect();
    let distinct: BTreeSet<IpAddr> = all.iter().copied().collect();
    assert_eq!(distinct.len(), 8 * per_thread, "duplicates among {all:?}");
    let rt = runtime();
    // Allocators that lost a race spread over the next free addresses, so there may be a few
    // gaps; the next ADD takes the lowest of them.
    let lowest_gap = (1..=254u32)
        .map(|i| IpAddr::V4((u32::from_be_bytes([10, 6, 0, 0]) + i).into()))
        .find(|a| !distinct.contains(a))
        .unwrap();
    let store = connect(&rt, &etcd.endpoints(), &prefix);
    assert_eq!(
        rt.block_on(store.allocate(&pool, &pod("late", "c-late", "net1")))
            .unwrap(),
        lowest_gap
    );
    let problems = check_consistency(&dump(&rt, &etcd.endpoints(), &prefix), &prefix);
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn an_unreachable_etcd_is_unavailable_within_the_deadline_and_data_survive_a_restart() {
    if etcd_or_skip().is_none() {
        return;
    }
    let etcd = LocalEtcd::start().unwrap();
    let rt = runtime();
    let timeout = Duration::from_millis(500);
    let store = rt
        .block_on(EtcdStore::connect(&etcd.endpoints(), "/fault", timeout))
        .unwrap();
    let pool = pool_of("", "10.7.0.0/24", None, &[]);
    assert_eq!(
        rt.block_on(store.allocate(&pool, &pod("a", "c1", "eth0")))
            .unwrap(),
        ip("10.7.0.1")
    );

    etcd.pause();
    let started = Instant::now();
    let err = rt
        .block_on(store.allocate(&pool, &pod("b", "c2", "eth0")))
        .unwrap_err();
    let waited = started.elapsed();
    etcd.resume();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert_eq!(err.code(), ErrorCode::TryAgainLater);
    assert!(err.to_string().contains(&etcd.url()), "{err}");
    assert!(waited < Duration::from_secs(3), "took {waited:?}");

    etcd.stop();
    let err = rt
        .block_on(store.allocate(&pool, &pod("b", "c2", "eth0")))
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains(&etcd.url()), "{err}");

    etcd.start_again().unwrap();
    // The same client reconnects; the allocation made before the crash is still there.
    let deadline = Instant::now() + Duration::from_secs(10);
    let address = loop {
        match rt.block_on(store.allocate(&pool, &pod("b", "c2", "eth0"))) {
            Ok(address) => break address,
            Err(e) if Instant::now() < deadline => {
                eprintln!("while etcd comes back: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("etcd is back but: {e}"),
        }
    };
    assert_eq!(address, ip("10.7.0.2"));

    // A store connected to nothing fails the same way.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let err = rt
        .block_on(async {
            let store = EtcdStore::connect(std::slice::from_ref(&dead), "/x", timeout).await?;
            store.allocate(&pool, &pod("c", "c3", "eth0")).await
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains(&dead), "{err}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---------------------------------------------------------------------------------------------
// 8 processes standing for 8 nodes
// ---------------------------------------------------------------------------------------------

/// Set in the environment of [`allocator_child`] when it runs as an allocator process.
const CHILD_ENV: &str = "PLEXUS_IPAM_ETCD_CHILD";
/// Nodes, and ADDs per node.
const NODES: usize = 8;
const ADDS_PER_NODE: usize = 125;

/// Not a test of its own: the body of an allocator process. The concurrency tests run this
/// test binary again with only this test and [`CHILD_ENV`] set to
/// `{"endpoints":[…],"prefix":…,"node":…,"count":…,"range":…}`; it then allocates `count`
/// addresses for distinct pods through its own [`EtcdStore`] and prints `ALLOC <container>
/// <address>` for each as soon as it has it. Without the variable it does nothing.
#[test]
fn allocator_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let spec: Value = serde_json::from_str(&spec).unwrap();
    let endpoints: Vec<String> = serde_json::from_value(spec["endpoints"].clone()).unwrap();
    let node = spec["node"].as_str().unwrap();
    let pool = pool_of("", spec["range"].as_str().unwrap(), None, &[]);
    let rt = runtime();
    let store = connect(&rt, &endpoints, spec["prefix"].as_str().unwrap());
    let mut out = std::io::stdout().lock();
    for i in 0..spec["count"].as_u64().unwrap() {
        let id = format!("{node}-{i}");
        let mut owner = pod(&format!("pod-{id}"), &id, "net1");
        owner.node = node.to_string();
        let address = rt.block_on(store.allocate(&pool, &owner)).unwrap();
        writeln!(out, "ALLOC {id} {address}").unwrap();
        out.flush().unwrap();
    }
}

/// A running allocator process.
struct Allocator {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Allocator {
    fn spawn(
        endpoints: &[String],
        prefix: &str,
        node: &str,
        count: usize,
        range: &str,
    ) -> Allocator {
        let spec = json!({
            "endpoints": endpoints, "prefix": prefix, "node": node, "count": count, "range": range,
        });
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "allocator_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, spec.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn an allocator process");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some((_, rest)) = line.split_once("ALLOC ") {
                    let _ = tx.send(rest.to_string());
                }
            }
        });
        Allocator { child, lines }
    }

    /// Waits for the process; every `(container, address)` it reported.
    fn finish(mut self) -> (std::process::ExitStatus, Vec<(String, IpAddr)>) {
        let status = self.child.wait().unwrap();
        let reported = self
            .lines
            .iter()
            .map(|line| {
                let (id, address) = line.split_once(' ').unwrap();
                (id.to_string(), ip(address))
            })
            .collect();
        (status, reported)
    }
}

#[test]
fn eight_allocator_processes_hand_out_1000_distinct_addresses_and_del_empties_the_pool() {
    let Some(etcd) = shared_etcd() else { return };
    let prefix = unique_prefix("procs");
    let range = "10.8.0.0/16";
    let started = Instant::now();
    let allocators: Vec<Allocator> = (0..NODES)
        .map(|n| {
            Allocator::spawn(
                &etcd.endpoints(),
                &prefix,
                &format!("node{n}"),
                ADDS_PER_NODE,
                range,
            )
        })
        .collect();
    let mut reported = Vec::new();
    for allocator in allocators {
        let (status, lines) = allocator.finish();
        assert!(status.success(), "an allocator failed: {status}");
        reported.extend(lines);
    }
    eprintln!(
        "{} ADDs by {NODES} processes in {:.2}s",
        reported.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(reported.len(), NODES * ADDS_PER_NODE);
    let distinct: BTreeSet<IpAddr> = reported.iter().map(|(_, a)| *a).collect();
    assert_eq!(
        distinct.len(),
        NODES * ADDS_PER_NODE,
        "an address was handed out twice"
    );

    let rt = runtime();
    let store = connect(&rt, &etcd.endpoints(), &prefix);
    let problems = check_consistency(&dump(&rt, &etcd.endpoints(), &prefix), &prefix);
    assert!(problems.is_empty(), "{problems:#?}");
    let usage = rt.block_on(store.usage()).unwrap();
    let stored: BTreeMap<IpAddr, String> = usage
        .iter()
        .flat_map(|u| &u.allocations)
        .map(|a| (a.address, a.owner.container_id.clone()))
        .collect();
    let expected: BTreeMap<IpAddr, String> =
        reported.iter().map(|(id, a)| (*a, id.clone())).collect();
    assert_eq!(stored, expected);

    let pool = pool_of("", range, None, &[]);
    for (id, address) in &reported {
        assert_eq!(
            rt.block_on(store.release(&pool, id, "net1")).unwrap(),
            vec![*address]
        );
    }
    assert!(rt.block_on(store.usage()).unwrap().is_empty());
    assert!(
        dump(&rt, &etcd.endpoints(), &prefix).is_empty(),
        "keys left behind"
    );
}

#[test]
fn allocators_killed_in_mid_flight_never_cause_a_duplicate() {
    let Some(etcd) = shared_etcd() else { return };
    let prefix = unique_prefix("kill");
    let range = "10.9.0.0/16";
    let rt = runtime();
    let store = connect(&rt, &etcd.endpoints(), &prefix);
    let pool = pool_of("", range, None, &[]);
    let mut reported: Vec<(String, IpAddr)> = Vec::new();
    // Three rounds: all 8 start, 4 of them are killed at staggered moments mid-flight.
    for round in 0..3 {
        let allocators: Vec<Allocator> = (0..NODES)
            .map(|n| {
                Allocator::spawn(
                    &etcd.endpoints(),
                    &prefix,
                    &format!("r{round}n{n}"),
                    ADDS_PER_NODE,
                    range,
                )
            })
            .collect();
        let mut allocators: Vec<Option<Allocator>> = allocators.into_iter().map(Some).collect();
        for (n, slot) in allocators
            .iter_mut()
            .enumerate()
            .filter(|(n, _)| n % 2 == 1)
        {
            let allocator = slot.as_mut().unwrap();
            // Wait until it has allocated a few (it is then surely in mid-flight), then kill.
            let mut seen = Vec::new();
            while seen.len() < 5 + 7 * n {
                match allocator.lines.recv_timeout(Duration::from_secs(60)) {
                    Ok(line) => seen.push(line),
                    Err(e) => panic!("allocator {n} reported nothing: {e}"),
                }
            }
            // A little later, staggered, to land inside an ADD's requests too.
            std::thread::sleep(Duration::from_micros(400 * n as u64));
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(allocator.child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let (status, rest) = slot.take().unwrap().finish();
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&status),
                Some(9),
                "allocator {n} was not killed: {status}"
            );
            for line in seen {
                let (id, address) = line.split_once(' ').unwrap();
                reported.push((id.to_string(), ip(address)));
            }
            reported.extend(rest);
        }
        for allocator in allocators.into_iter().flatten() {
            let (status, lines) = allocator.finish();
            assert!(status.success(), "an allocator failed: {status}");
            reported.extend(lines);
        }
    }
    let distinct: BTreeSet<IpAddr> = reported.iter().map(|(_, a)| *a).collect();
    assert_eq!(
        distinct.len(),
        reported.len(),
        "an address was handed out twice"
    );

    // The store holds everything reported, plus at most the one ADD each killed process had
    // in flight (committed, not yet printed); its keys are consistent.
    let problems = check_consistency(&dump(&rt, &etcd.endpoints(), &prefix), &prefix);
    assert!(problems.is_empty(), "{problems:#?}");
    let usage = rt.block_on(store.usage()).unwrap();
    let stored: BTreeMap<IpAddr, String> = usage
        .iter()
        .flat_map(|u| &u.allocations)
        .map(|a| (a.address, a.owner.container_id.clone()))
        .collect();
    for (id, address) in &reported {
        assert_eq!(stored.get(address), Some(id), "{address} lost");
    }
    let unreported = stored.len() - reported.len();
    assert!(unreported <= 12, "{unreported} allocations nobody reported");
    eprintln!(
        "{} ADDs reported, {unreported} committed by a killed process before it could report",
        reported.len()
    );
    // A repeated ADD of an interrupted pod gets the address it may already hold, and DEL of
    // everything empties the store.
    for (address, id) in &stored {
        let mut owner = pod(&format!("pod-{id}"), id, "net1");
        owner.node = id.split('-').next().unwrap().to_string();
        assert_eq!(
            rt.block_on(store.allocate(&pool, &owner)).unwrap(),
            *address
        );
        assert_eq!(
            rt.block_on(store.release(&pool, id, "net1")).unwrap(),
            vec![*address]
        );
    }
    assert!(
        dump(&rt, &etcd.endpoints(), &prefix).is_empty(),
        "keys left behind"
    );
}

// ---------------------------------------------------------------------------------------------
// Through the `plexus-ipam` binary
// ---------------------------------------------------------------------------------------------

/// The `plexus-ipam` binary, if it is built. Otherwise prints why the test is skipped and
/// returns `None`, unless `CI` is set (CI builds every binary first), which panics.
fn plexus_ipam_or_skip() -> Option<PathBuf> {
    let path = plexus_tests::plexus_bin_dir().join("plexus-ipam");
    if path.is_file() {
        return Some(path);
    }
    let why = format!(
        "no plexus-ipam binary at {} (cargo build --bins)",
        path.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{why}");
    }
    eprintln!("skipped: {why}");
    None
}

/// What one `plexus-ipam` call returned.
struct IpamRun {
    status: std::process::ExitStatus,
    stdout: Value,
}

/// A `plexus-ipam` call for `pod`'s `net1` on `node`.
fn ipam_command(
    binary: &PathBuf,
    command: &str,
    container: &str,
    pod: &str,
    node: &str,
) -> Command {
    let mut cmd = Command::new(binary);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", format!("/var/run/netns/{container}"))
        .env("CNI_IFNAME", "net1")
        .env("CNI_PATH", "/usr/lib/cni")
        .env(
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}"),
        )
        .env("NODE_NAME", node)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn ipam_config(endpoints: &[String], network: &str, range: &str) -> Vec<u8> {
    json!({
        "cniVersion": "1.0.0",
        "name": "net",
        "type": "macvlan",
        "ipam": {
            "type": "plexus-ipam",
            "range": range,
            "network_name": network,
            "backend": "etcd",
            "etcd_endpoints": endpoints,
        },
    })
    .to_string()
    .into_bytes()
}

fn run_ipam(mut cmd: Command, config: &[u8]) -> IpamRun {
    let mut child = cmd.spawn().expect("run plexus-ipam");
    child.stdin.take().unwrap().write_all(config).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    if !out.status.success() {
        eprintln!(
            "plexus-ipam: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    IpamRun {
        status: out.status,
        stdout,
    }
}

/// The address of a CNI result's only IP, without its prefix length.
fn result_address(result: &Value) -> IpAddr {
    let ips = result["ips"].as_array().expect("a result with ips");
    assert_eq!(ips.len(), 1, "{result}");
    let cidr = ips[0]["address"].as_str().unwrap();
    ip(cidr.split('/').next().unwrap())
}

#[test]
fn plexus_ipam_binary_8_nodes_times_125_adds_then_del_all() {
    let Some(etcd) = shared_etcd() else { return };
    let Some(binary) = plexus_ipam_or_skip() else {
        return;
    };
    let network = format!("bin{}", std::process::id());
    let range = "10.10.0.0/16";
    let config = ipam_config(&etcd.endpoints(), &network, range);
    let started = Instant::now();
    let reported: Vec<(String, IpAddr)> = std::thread::scope(|scope| {
        let nodes: Vec<_> = (0..NODES)
            .map(|n| {
                let (binary, config) = (&binary, &config);
                scope.spawn(move || {
                    (0..ADDS_PER_NODE)
                        .map(|i| {
                            let id = format!("n{n}-{i}");
                            let run = run_ipam(
                                ipam_command(
                                    binary,
                                    "ADD",
                                    &id,
                                    &format!("pod-{id}"),
                                    &format!("node{n}"),
                                ),
                                config,
                            );
                            assert!(run.status.success(), "ADD {id}: {}", run.stdout);
                            (id, result_address(&run.stdout))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        nodes.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    eprintln!(
        "{} plexus-ipam ADDs on {NODES} nodes in {:.2}s",
        reported.len(),
        started.elapsed().as_secs_f64()
    );
    let distinct: BTreeSet<IpAddr> = reported.iter().map(|(_, a)| *a).collect();
    assert_eq!(
        distinct.len(),
        NODES * ADDS_PER_NODE,
        "an address was handed out twice"
    );

    let rt = runtime();
    let prefix = plexus_ipam::backends::etcd::DEFAULT_PREFIX;
    let network_prefix = keys::network_key(prefix, &network);
    let all = dump(&rt, &etcd.endpoints(), &network_prefix);
    let problems = check_consistency(&all, prefix);
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(
        all.len(),
        3 * NODES * ADDS_PER_NODE,
        "an address and 2 index keys each"
    );

    // A repeated ADD is idempotent through the binary too.
    let (id, address) = &reported[0];
    let again = run_ipam(
        ipam_command(&binary, "ADD", id, &format!("pod-{id}"), "node0"),
        &config,
    );
    assert_eq!(result_address(&again.stdout), *address);

    for (id, _) in &reported {
        let run = run_ipam(
            ipam_command(&binary, "DEL", id, &format!("pod-{id}"), "node0"),
            &config,
        );
        assert!(run.status.success(), "DEL {id}: {}", run.stdout);
    }
    assert!(
        dump(&rt, &etcd.endpoints(), &network_prefix).is_empty(),
        "DEL of every pod leaves the pool empty"
    );
}

#[test]
fn plexus_ipam_binary_exhaustion_is_code_120_and_killed_adds_leave_no_duplicate() {
    let Some(etcd) = shared_etcd() else { return };
    let Some(binary) = plexus_ipam_or_skip() else {
        return;
    };
    let network = format!("binx{}", std::process::id());
    // .1 to .6 usable.
    let config = ipam_config(&etcd.endpoints(), &network, "10.11.0.0/29");
    for i in 0..6 {
        let id = format!("c{i}");
        let run = run_ipam(
            ipam_command(&binary, "ADD", &id, &format!("p{i}"), "n"),
            &config,
        );
        assert!(run.status.success());
    }
    let full = run_ipam(ipam_command(&binary, "ADD", "c6", "p6", "n"), &config);
    assert!(!full.status.success());
    assert_eq!(full.stdout["code"], 120, "{}", full.stdout);
    assert!(full.stdout["msg"].is_string(), "{}", full.stdout);
    let del = run_ipam(ipam_command(&binary, "DEL", "c2", "p2", "n"), &config);
    assert!(del.status.success());
    let again = run_ipam(ipam_command(&binary, "ADD", "c6", "p6", "n"), &config);
    assert!(again.status.success(), "{}", again.stdout);
    assert_eq!(result_address(&again.stdout), ip("10.11.0.3"));

    // SIGKILL plexus-ipam processes at staggered moments of their ADD.
    let network = format!("bink{}", std::process::id());
    let config = ipam_config(&etcd.endpoints(), &network, "10.12.0.0/24");
    let mut finished = Vec::new();
    let mut killed = Vec::new();
    for round in 0..5u64 {
        let children: Vec<_> = (0..NODES)
            .map(|n| {
                let id = format!("r{round}n{n}");
                let mut child = ipam_command(&binary, "ADD", &id, &format!("pod-{id}"), "n")
                    .spawn()
                    .unwrap();
                child.stdin.take().unwrap().write_all(&config).unwrap();
                (id, child)
            })
            .collect();
        // Kill the odd ones at staggered moments, 1 to 19 ms after they started.
        let mut children = children;
        let started = Instant::now();
        for (n, (_, child)) in children.iter_mut().enumerate().filter(|(n, _)| n % 2 == 1) {
            let at = Duration::from_millis(round * 3 + n as u64);
            std::thread::sleep(at.saturating_sub(started.elapsed()));
            let _ = child.kill();
        }
        for (id, child) in children {
            let out = child.wait_with_output().unwrap();
            if out.status.success() {
                let result: Value = serde_json::from_slice(&out.stdout).unwrap();
                finished.push((id, result_address(&result)));
            } else {
                killed.push(id);
            }
        }
    }
    eprintln!(
        "{} ADDs finished, {} killed in mid-flight",
        finished.len(),
        killed.len()
    );
    assert!(!killed.is_empty(), "no ADD was killed before it finished");
    let distinct: BTreeSet<IpAddr> = finished.iter().map(|(_, a)| *a).collect();
    assert_eq!(
        distinct.len(),
        finished.len(),
        "an address was handed out twice"
    );
    let rt = runtime();
    let prefix = plexus_ipam::backends::etcd::DEFAULT_PREFIX;
    let network_prefix = keys::network_key(prefix, &network);
    let problems = check_consistency(&dump(&rt, &etcd.endpoints(), &network_prefix), prefix);
    assert!(problems.is_empty(), "{problems:#?}");

    let committed: Vec<&String> = killed
        .iter()
        .filter(|id| {
            let key = format!("/owners/{id}/");
            dump(&rt, &etcd.endpoints(), &network_prefix)
                .iter()
                .any(|(k, _)| k.contains(&key))
        })
        .collect();
    eprintln!(
        "{} of the killed ADDs had committed their allocation",
        committed.len()
    );

    // The runtime retries the interrupted ADDs (each gets the address it may already hold),
    // then everything is deleted: nothing is left.
    let mut all = finished.clone();
    for id in &killed {
        let run = run_ipam(
            ipam_command(&binary, "ADD", id, &format!("pod-{id}"), "n"),
            &config,
        );
        assert!(run.status.success(), "ADD {id} again: {}", run.stdout);
        all.push((id.clone(), result_address(&run.stdout)));
    }
    let distinct: BTreeSet<IpAddr> = all.iter().map(|(_, a)| *a).collect();
    assert_eq!(distinct.len(), all.len(), "an address was handed out twice");
    for (id, _) in &all {
        let run = run_ipam(
            ipam_command(&binary, "DEL", id, &format!("pod-{id}"), "n"),
            &config,
        );
        assert!(run.status.success(), "DEL {id}: {}", run.stdout);
    }
    assert!(dump(&rt, &etcd.endpoints(), &network_prefix).is_empty());
}

#[test]
fn tls_with_client_certificates_as_whereabouts_configured_etcd() {
    if etcd_or_skip().is_none() {
        return;
    }
    let etcd = LocalEtcd::start_tls().unwrap();
    let files = etcd.tls().unwrap().clone();
    let rt = runtime();
    let auth = EtcdAuth {
        ca_cert_file: Some(files.ca.clone()),
        cert_file: Some(files.cert.clone()),
        key_file: Some(files.key.clone()),
        ..EtcdAuth::default()
    };
    let store = rt
        .block_on(EtcdStore::connect_with(
            &etcd.endpoints(),
            "/tls",
            TIMEOUT,
            &auth,
        ))
        .unwrap();
    rt.block_on(store.status()).unwrap();
    let pool = pool_of("", "10.13.0.0/24", None, &[]);
    assert_eq!(
        rt.block_on(store.allocate(&pool, &pod("a", "c1", "eth0")))
            .unwrap(),
        ip("10.13.0.1")
    );

    // Without a client certificate etcd refuses the connection: unavailable, not a hang.
    let no_cert = EtcdAuth {
        ca_cert_file: Some(files.ca.clone()),
        ..EtcdAuth::default()
    };
    let err = rt
        .block_on(async {
            let store = EtcdStore::connect_with(
                &etcd.endpoints(),
                "/tls",
                Duration::from_secs(2),
                &no_cert,
            )
            .await?;
            store.allocate(&pool, &pod("b", "c2", "eth0")).await
        })
        .unwrap_err();
    assert!(err.to_string().contains(&etcd.url()), "{err}");
    // A certificate without its key is a configuration error.
    let half = EtcdAuth {
        cert_file: Some(files.cert.clone()),
        ..EtcdAuth::default()
    };
    let err = rt
        .block_on(EtcdStore::connect_with(
            &etcd.endpoints(),
            "/tls",
            TIMEOUT,
            &half,
        ))
        .unwrap_err();
    assert!(matches!(err, StoreError::Etcd(_)), "{err:?}");
}
