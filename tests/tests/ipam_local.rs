//! The real `plexus-ipam` binary on the embedded local store: allocation (ranges, bounds,
//! excludes, dual stack, idempotency, exhaustion, a /64), DEL, CHECK, STATUS, GC, concurrency
//! across processes, and bad configurations. No root needed.
//!
//! The binary is built by `cargo build --workspace --bins`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

mod common;

use common::{run_plugin, Outcome};
use plexus_tests::plexus_bin_dir;
use serde_json::{json, Value};

fn binary() -> PathBuf {
    let bin = plexus_bin_dir().join("plexus-ipam");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        bin.display()
    );
    bin
}

fn run_raw(env: &[(&str, &str)], stdin: &[u8]) -> Outcome {
    let mut env = env.to_vec();
    env.insert(0, ("NODE_NAME", "node-a"));
    run_plugin(&binary(), &env, stdin)
}

/// Runs a command for a container and interface, with optional extra `CNI_ARGS`.
fn call(command: &str, container: &str, ifname: &str, args: &str, config: &Value) -> Outcome {
    run_raw(
        &[
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", container),
            ("CNI_NETNS", "/run/netns/ipam-test"),
            ("CNI_IFNAME", ifname),
            ("CNI_ARGS", args),
            ("CNI_PATH", "/nonexistent"),
        ],
        config.to_string().as_bytes(),
    )
}

fn add(container: &str, config: &Value) -> Outcome {
    call("ADD", container, "net1", "", config)
}

fn del(container: &str, config: &Value) -> Outcome {
    call("DEL", container, "net1", "", config)
}

/// The addresses of an ADD result.
fn addresses(result: &Value) -> Vec<String> {
    result["ips"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|ip| ip["address"].as_str().unwrap().to_string())
        .collect()
}

/// A plugin configuration whose `ipam` is `ipam` on a local store in `dir`.
fn conf(dir: &Path, ipam: Value) -> Value {
    let mut ipam = ipam;
    if ipam.get("type").is_none() {
        ipam["type"] = json!("plexus-ipam");
    }
    ipam["backend"] = json!("local");
    ipam["local_path"] = json!(dir);
    json!({"cniVersion": "1.1.0", "name": "ipam-test", "type": "macvlan", "master": "eth0", "ipam": ipam})
}

/// Every allocation in the local store under `dir`, as `address owner-container/ifname`.
fn held(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "json") {
            let state: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            for (addr, entry) in state["allocations"].as_object().unwrap() {
                out.push(format!(
                    "{addr} {}/{}",
                    entry["owner"]["containerID"].as_str().unwrap(),
                    entry["owner"]["ifname"].as_str().unwrap()
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn allocation_table() {
    // (ipam keys, the addresses successive ADDs get, then exhaustion?)
    let cases: Vec<(Value, Vec<Vec<&str>>, bool)> = vec![
        (
            json!({"range": "10.10.0.0/29"}),
            vec![
                vec!["10.10.0.1/29"],
                vec!["10.10.0.2/29"],
                vec!["10.10.0.3/29"],
                vec!["10.10.0.4/29"],
                vec!["10.10.0.5/29"],
                vec!["10.10.0.6/29"],
            ],
            true,
        ),
        (
            json!({"range": "10.10.0.0/24", "range_start": "10.10.0.250", "range_end": "10.10.0.252"}),
            vec![
                vec!["10.10.0.250/24"],
                vec!["10.10.0.251/24"],
                vec!["10.10.0.252/24"],
            ],
            true,
        ),
        (
            // Out-of-bounds start and end are ignored, as Whereabouts does.
            json!({"range": "10.10.0.0/30", "range_start": "10.99.0.1", "range_end": "10.10.0.3"}),
            vec![vec!["10.10.0.1/30"], vec!["10.10.0.2/30"]],
            true,
        ),
        (
            json!({"range": "192.168.1.5-192.168.1.7/24"}),
            vec![
                vec!["192.168.1.5/24"],
                vec!["192.168.1.6/24"],
                vec!["192.168.1.7/24"],
            ],
            true,
        ),
        (
            json!({"range": "192.168.2.225/28", "exclude": ["192.168.2.224/30", "192.168.2.229", "192.168.2.232/29"],
                   "gateway": "192.168.2.230"}),
            vec![vec!["192.168.2.228/28"], vec!["192.168.2.231/28"]],
            true,
        ),
        (
            // Dual stack: the top-level range first, then ipRanges in order.
            json!({"range": "abcd::1/126", "ipRanges": [{"range": "10.20.0.0/30", "exclude": ["10.20.0.1"]}]}),
            vec![vec!["abcd::1/126", "10.20.0.2/30"]],
            true,
        ),
        (
            // A /64 whose usable part starts above 2^63 (Whereabouts #83).
            json!({"range": "caa5::/64", "range_start": "caa5::ffff:ffff:ffff:fffc"}),
            vec![
                vec!["caa5::ffff:ffff:ffff:fffc/64"],
                vec!["caa5::ffff:ffff:ffff:fffd/64"],
                vec!["caa5::ffff:ffff:ffff:fffe/64"],
            ],
            true,
        ),
        (
            // A whole /64, and a huge exclusion skipped at once.
            json!({"range": "fd00:1::/64", "exclude": ["fd00:1::/65"]}),
            vec![vec!["fd00:1:0:0:8000::/64"], vec!["fd00:1::8000:0:0:1/64"]],
            false,
        ),
    ];
    for (ipam, want, exhausts) in cases {
        let dir = tempfile::tempdir().unwrap();
        let config = conf(dir.path(), ipam.clone());
        for (i, expected) in want.iter().enumerate() {
            let result = add(&format!("c{i}"), &config).ok();
            assert_eq!(addresses(&result), *expected, "{ipam} ADD #{i}");
            assert!(result.get("interfaces").is_none());
        }
        if exhausts {
            let out = add("one-too-many", &config);
            assert_eq!(out.own_error_code(), 120, "{ipam}: {}", out.stdout);
        }
        for i in 0..want.len() {
            assert_eq!(del(&format!("c{i}"), &config).ok(), Value::Null);
        }
        assert_eq!(held(dir.path()), Vec::<String>::new(), "{ipam}");
    }
}

#[test]
fn result_shape_and_versions() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = conf(
        dir.path(),
        json!({"type": "whereabouts", "range": "10.30.0.0/24", "gateway": "10.30.0.1",
               "routes": [{"dst": "0.0.0.0/0"}], "dns": {"nameservers": ["10.30.0.53"]}}),
    );
    assert_eq!(
        add("c1", &config).ok(),
        json!({"cniVersion": "1.1.0",
               "ips": [{"address": "10.30.0.2/24", "gateway": "10.30.0.1"}],
               "routes": [{"dst": "0.0.0.0/0"}],
               "dns": {"nameservers": ["10.30.0.53"]}})
    );
    config["cniVersion"] = json!("0.3.1");
    assert_eq!(
        add("c2", &config).ok()["ips"],
        json!([{"version": "4", "address": "10.30.0.3/24", "gateway": "10.30.0.1"}])
    );
    config["cniVersion"] = json!("0.2.0");
    let r = add("c3", &config).ok();
    assert_eq!(r["ip4"]["ip"], "10.30.0.4/24");
    assert_eq!(r["ip4"]["gateway"], "10.30.0.1");
    // VERSION.
    let v = run_raw(&[("CNI_COMMAND", "VERSION")], br#"{"cniVersion":"1.0.0"}"#).ok();
    assert!(v["supportedVersions"]
        .as_array()
        .unwrap()
        .contains(&json!("1.1.0")));
}

#[test]
fn add_is_idempotent_for_the_same_pod_and_interface() {
    let dir = tempfile::tempdir().unwrap();
    let config = conf(
        dir.path(),
        json!({"range": "10.40.0.0/24", "ipRanges": [{"range": "fd40::/64"}]}),
    );
    let pod = "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_UID=u1";
    let first = addresses(&call("ADD", "sandbox-1", "net1", pod, &config).ok());
    assert_eq!(first, ["10.40.0.1/24", "fd40::1/64"]);
    // The same call again, and a new sandbox of the same pod (a StatefulSet pod restarted).
    assert_eq!(
        addresses(&call("ADD", "sandbox-1", "net1", pod, &config).ok()),
        first
    );
    assert_eq!(
        addresses(&call("ADD", "sandbox-2", "net1", pod, &config).ok()),
        first
    );
    assert_eq!(
        held(dir.path()),
        ["10.40.0.1 sandbox-2/net1", "fd40::1 sandbox-2/net1"]
    );
    // Another interface of the pod, and another pod, get other addresses.
    assert_eq!(
        addresses(&call("ADD", "sandbox-2", "net2", pod, &config).ok()),
        ["10.40.0.2/24", "fd40::2/64"]
    );
    let other = "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-1";
    assert_eq!(
        addresses(&call("ADD", "sandbox-3", "net1", other, &config).ok()),
        ["10.40.0.3/24", "fd40::3/64"]
    );
    // Outside Kubernetes the container ID is the identity.
    assert_eq!(
        addresses(&call("ADD", "plain", "eth0", "", &config).ok()),
        ["10.40.0.4/24", "fd40::4/64"]
    );
    assert_eq!(
        addresses(&call("ADD", "plain", "eth0", "", &config).ok()),
        ["10.40.0.4/24", "fd40::4/64"]
    );
    // DEL with the old sandbox ID frees nothing; with the current one, both ranges.
    call("DEL", "sandbox-1", "net1", pod, &config).ok();
    assert_eq!(held(dir.path()).len(), 8);
    call("DEL", "sandbox-2", "net1", pod, &config).ok();
    assert_eq!(held(dir.path()).len(), 6);
    assert!(!held(dir.path())
        .iter()
        .any(|h| h.contains("sandbox-2/net1")));
}

#[test]
fn exhaustion_then_del_frees_an_address() {
    let dir = tempfile::tempdir().unwrap();
    let config = conf(dir.path(), json!({"range": "10.50.0.0/30"}));
    add("a", &config).ok();
    add("b", &config).ok();
    let out = add("c", &config);
    assert_eq!(out.own_error_code(), 120);
    assert!(out.json["msg"].as_str().unwrap().contains("10.50.0.0/30"));
    del("a", &config).ok();
    assert_eq!(addresses(&add("c", &config).ok()), ["10.50.0.1/30"]);
}

#[test]
fn del_of_a_missing_entry_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let config = conf(dir.path(), json!({"range": "10.60.0.0/24"}));
    // Nothing was ever allocated (no state file at all), then a state without this container.
    assert_eq!(del("never", &config).ok(), Value::Null);
    add("other", &config).ok();
    assert_eq!(del("never", &config).ok(), Value::Null);
    assert_eq!(held(dir.path()), ["10.60.0.1 other/net1"]);
    // DEL without CNI_NETNS is allowed.
    let out = run_raw(
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "other"),
            ("CNI_IFNAME", "net1"),
        ],
        config.to_string().as_bytes(),
    );
    assert_eq!(out.ok(), Value::Null);
    assert!(held(dir.path()).is_empty());
}

#[test]
fn multi_range_del_releases_every_range_and_failed_add_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let config = conf(
        dir.path(),
        json!({"range": "10.70.0.0/24",
               "ipRanges": [{"range": "10.71.0.0/24"}, {"range": "fd70::/120"}, {"range": "10.72.0.0/30"}]}),
    );
    assert_eq!(
        addresses(&add("c1", &config).ok()),
        [
            "10.70.0.1/24",
            "10.71.0.1/24",
            "fd70::1/120",
            "10.72.0.1/30"
        ]
    );
    add("c2", &config).ok();
    // The last range is full: c3's ADD fails and gives back what it took in the others.
    assert_eq!(add("c3", &config).own_error_code(), 120);
    assert_eq!(held(dir.path()).len(), 8);
    assert!(!held(dir.path()).iter().any(|h| h.contains("c3/")));
    del("c1", &config).ok();
    assert_eq!(held(dir.path()).len(), 4);
    assert!(held(dir.path()).iter().all(|h| h.contains("c2/net1")));
    del("c2", &config).ok();
    assert!(held(dir.path()).is_empty());
}

#[test]
fn check_status_and_gc() {
    let dir = tempfile::tempdir().unwrap();
    let config = conf(dir.path(), json!({"range": "10.80.0.0/24"}));
    let r1 = add("c1", &config).ok();
    add("c2", &config).ok();
    add("c3", &config).ok();
    // CHECK with prevResult.
    let mut check_conf = config.clone();
    check_conf["prevResult"] = r1.clone();
    assert_eq!(
        call("CHECK", "c1", "net1", "", &check_conf).ok(),
        Value::Null
    );
    check_conf["prevResult"]["ips"][0]["address"] = json!("10.80.0.9/24");
    assert_eq!(
        call("CHECK", "c1", "net1", "", &check_conf).own_error_code(),
        3
    );
    assert_eq!(
        call("CHECK", "nobody", "net1", "", &config).own_error_code(),
        3
    );
    // STATUS: the store's directory is writable; a path under a file is not.
    let status = |c: &Value| run_raw(&[("CNI_COMMAND", "STATUS")], c.to_string().as_bytes());
    assert_eq!(status(&config).ok(), Value::Null);
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let broken = conf(&file.join("store"), json!({"range": "10.80.0.0/24"}));
    assert_eq!(status(&broken).own_error_code(), 50);
    // GC: only c2 is still valid.
    let mut gc_conf = config.clone();
    gc_conf["cni.dev/valid-attachments"] = json!([{"containerID": "c2", "ifname": "net1"}]);
    let out = run_raw(&[("CNI_COMMAND", "GC")], gc_conf.to_string().as_bytes());
    assert_eq!(out.ok(), Value::Null);
    assert_eq!(held(dir.path()), ["10.80.0.2 c2/net1"]);
    // GC is a 1.1 command.
    gc_conf["cniVersion"] = json!("1.0.0");
    let out = run_raw(&[("CNI_COMMAND", "GC")], gc_conf.to_string().as_bytes());
    assert_eq!(out.own_error_code(), 1);
}

#[test]
fn concurrent_processes_never_share_an_address() {
    const WORKERS: usize = 8;
    const PER_WORKER: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let config = conf(dir.path(), json!({"range": "10.90.0.0/23"}));
    let all: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..WORKERS)
            .map(|w| {
                let config = &config;
                s.spawn(move || {
                    (0..PER_WORKER)
                        .flat_map(|i| addresses(&add(&format!("w{w}-{i}"), config).ok()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(all.len(), WORKERS * PER_WORKER);
    let distinct: BTreeSet<&String> = all.iter().collect();
    assert_eq!(
        distinct.len(),
        WORKERS * PER_WORKER,
        "an address was handed out twice"
    );
    // Lowest-free: exactly the first 400 usable addresses.
    let expected: BTreeSet<String> = (1..=(WORKERS * PER_WORKER))
        .map(|n| format!("10.90.{}.{}/23", n / 256, n % 256))
        .collect();
    assert_eq!(
        distinct.into_iter().cloned().collect::<BTreeSet<_>>(),
        expected
    );
    assert_eq!(held(dir.path()).len(), WORKERS * PER_WORKER);
    std::thread::scope(|s| {
        for w in 0..WORKERS {
            let config = &config;
            s.spawn(move || {
                for i in 0..PER_WORKER {
                    del(&format!("w{w}-{i}"), config).ok();
                }
            });
        }
    });
    assert!(held(dir.path()).is_empty());
}

#[test]
fn bad_configs_are_error_7_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let store = json!(dir.path());
    let ipam_cases: Vec<Value> = vec![
        json!({"type": "host-local", "range": "10.0.0.0/24"}),
        json!({"range": "10.0.0.0/24"}),
        json!({"type": "plexus-ipam"}),
        json!({"type": "plexus-ipam", "range": "10.0.0.0"}),
        json!({"type": "plexus-ipam", "range": "10.0.0.0/33"}),
        json!({"type": "plexus-ipam", "range": "10.0.0.1/32"}),
        json!({"type": "plexus-ipam", "range": "10.0.0.0/31"}),
        json!({"type": "plexus-ipam", "range": "fd00::/127"}),
        json!({"type": "plexus-ipam", "range": "fd00::1/128"}),
        json!({"type": "plexus-ipam", "range": "192.168.1.5-192.168.2.25/24"}),
        json!({"type": "plexus-ipam", "range": "10.0.0.0/24", "exclude": ["10.0.0.0/40"]}),
        json!({"type": "plexus-ipam", "range": "10.0.0.0/24", "exclude": ["not-an-ip"]}),
        json!({"type": "plexus-ipam", "range": "10.0.0.0/24", "exclude": "10.0.0.1"}),
        json!({"type": "plexus-ipam", "range": "10.0.0.0/24", "range_start": "ten"}),
        json!({"type": "plexus-ipam", "range": "10.0.0.0/24", "gateway": "gw"}),
        json!({"type": "plexus-ipam", "range": "10.0.0.0/24", "enable_overlapping_ranges": "true"}),
        json!({"type": "plexus-ipam", "range": "10.0.0.0/24", "routes": [{"dst": "nowhere"}]}),
        json!({"type": "plexus-ipam", "range": "10.0.0.0/24", "dns": []}),
        json!({"type": "plexus-ipam", "range": "10.0.0.0/24", "backend": "mongodb"}),
        json!({"type": "plexus-ipam", "range": "10.0.0.0/24", "backend": "kubernetes"}),
        json!({"type": "plexus-ipam", "range": "10.0.0.0/24", "backend": "etcd"}),
        json!({"type": "plexus-ipam", "ipRanges": [{"range": "10.0.0.0/24"}, {"exclude": ["10.0.0.1"]}]}),
        json!({"type": "plexus-ipam", "ipRanges": "10.0.0.0/24"}),
    ];
    for mut ipam in ipam_cases {
        if ipam.get("backend").is_none() {
            ipam["backend"] = json!("local");
        }
        ipam["local_path"] = store.clone();
        let config = json!({"cniVersion": "1.0.0", "name": "bad", "type": "macvlan", "ipam": ipam});
        for command in ["ADD", "DEL", "CHECK"] {
            let out = call(command, "c1", "net1", "", &config);
            assert_ne!(out.code, 0, "{command} {ipam}: {}", out.stdout);
            assert_eq!(out.own_error_code(), 7, "{command} {ipam}: {}", out.stdout);
        }
    }
    // No ipam object, an ipam that is not an object, a bad flat file.
    let flat = dir.path().join("whereabouts.conf");
    std::fs::write(&flat, "{ not json").unwrap();
    for config in [
        json!({"cniVersion": "1.0.0", "name": "bad", "type": "macvlan"}),
        json!({"cniVersion": "1.0.0", "name": "bad", "type": "macvlan", "ipam": "plexus-ipam"}),
        json!({"cniVersion": "1.0.0", "name": "bad", "type": "macvlan",
               "ipam": {"type": "plexus-ipam", "range": "10.0.0.0/24", "configuration_path": flat}}),
    ] {
        assert_eq!(add("c1", &config).own_error_code(), 7, "{config}");
    }
    // Malformed stdin and environment are reported by the skeleton.
    assert_eq!(
        run_raw(
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "c"),
                ("CNI_NETNS", "/x"),
                ("CNI_IFNAME", "e")
            ],
            b"{nope"
        )
        .own_error_code(),
        6
    );
    assert_eq!(
        run_raw(&[("CNI_COMMAND", "ADD")], b"{}").own_error_code(),
        4
    );
    // Two addresses of a family at 0.2.0 cannot be written.
    let config = json!({"cniVersion": "0.2.0", "name": "bad", "type": "macvlan",
                        "ipam": {"type": "plexus-ipam", "backend": "local", "local_path": store,
                                 "range": "10.0.0.0/24", "ipRanges": [{"range": "10.1.0.0/24"}]}});
    assert_eq!(add("c1", &config).own_error_code(), 7);
    assert!(held(dir.path()).is_empty());
}
