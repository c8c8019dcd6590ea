//! STATUS, GC, the readiness indicator file, and a cluster network read from a K3s-style
//! configuration directory.

mod common;

use std::time::{Duration, Instant};

use common::{addresses_of, ns, run_plexus, run_plexus_raw, Lab};
use plexus_tests::{cni_plugin_dir, root_or_skip, TestPod};
use serde_json::{json, Value};

fn status(config: &Value) -> common::Outcome {
    let path = cni_plugin_dir();
    run_plexus_raw(
        &[
            ("CNI_COMMAND", "STATUS"),
            ("CNI_PATH", path.to_str().unwrap()),
        ],
        config.to_string().as_bytes(),
    )
}

fn gc(config: &Value, valid: &[&str]) -> common::Outcome {
    let mut config = config.clone();
    let attachments: Vec<Value> = valid
        .iter()
        .map(|id| json!({"containerID": id, "ifname": "eth0"}))
        .collect();
    config["cni.dev/valid-attachments"] = Value::Array(attachments);
    let path = cni_plugin_dir();
    run_plexus_raw(
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", path.to_str().unwrap())],
        config.to_string().as_bytes(),
    )
}

#[test]
fn status_reports_a_missing_readiness_file_as_not_available() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let mut config = lab.three_networks("1.1.0");
    let ready = lab.dir.path().join("subnet.env");
    config["readinessindicatorfile"] = json!(ready);
    assert_eq!(status(&config).error_code(), 50);
    std::fs::write(&ready, "FLANNEL_NETWORK=10.42.0.0/16\n").unwrap();
    status(&config).ok();
    // STATUS exists from 1.1.0 on only.
    config["cniVersion"] = json!("1.0.0");
    assert_eq!(status(&config).error_code(), 1);
}

#[test]
fn add_waits_for_the_readiness_file_then_fails_naming_it() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let pod = TestPod::new("pxpod");
    let mut config = lab.three_networks("1.0.0");
    let ready = lab.dir.path().join("subnet.env");
    config["readinessindicatorfile"] = json!(ready);
    config["readinessTimeoutSeconds"] = json!(0.5);
    let start = Instant::now();
    let out = run_plexus("ADD", "c-ready", ns(&pod), &config);
    assert_eq!(out.error_code(), 105);
    assert!(start.elapsed() >= Duration::from_millis(500));
    assert!(out.json["msg"].as_str().unwrap().contains("subnet.env"));
    lab.assert_clean(Some(&pod));

    // The file appears while ADD waits.
    let writer = {
        let ready = ready.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            std::fs::write(ready, "").unwrap();
        })
    };
    config["readinessTimeoutSeconds"] = json!(10);
    run_plexus("ADD", "c-ready", ns(&pod), &config).ok();
    writer.join().unwrap();
    run_plexus("DEL", "c-ready", ns(&pod), &config).ok();
    lab.assert_clean(Some(&pod));
}

#[test]
fn gc_tears_down_containers_that_are_no_longer_valid() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let keep = TestPod::new("pxkeep");
    let stale = TestPod::new("pxstale");
    let config = lab.three_networks("1.1.0");
    run_plexus("ADD", "c-keep", ns(&keep), &config).ok();
    run_plexus("ADD", "c-stale", ns(&stale), &config).ok();
    assert_eq!(lab.reservations().len(), 6);
    gc(&config, &["c-keep"]).ok();
    assert_eq!(lab.cache_entries(), ["c-keep"]);
    assert_eq!(lab.reservations().len(), 3);
    assert_eq!(
        stale.links().unwrap().len(),
        1,
        "only lo is left in the stale pod"
    );
    assert!(keep.link("net2").unwrap().is_some());
    // The older key is accepted too.
    let mut legacy = config.clone();
    legacy["cni.dev/attachments"] = json!([]);
    let path = cni_plugin_dir();
    run_plexus_raw(
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", path.to_str().unwrap())],
        legacy.to_string().as_bytes(),
    )
    .ok();
    lab.assert_clean(Some(&keep));
}

#[test]
fn cluster_network_from_a_k3s_style_conf_dir() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let pod = TestPod::new("pxpod");
    let conf_dir = lab.dir.path().join("net.d");
    std::fs::create_dir_all(&conf_dir).unwrap();
    // Plexus's own file sorts first and must be skipped; the bridge conflist stands for Flannel's
    // (its bridge declares the portMappings capability, as Flannel's portmap plugin does).
    let mut primary = lab.bridge("1.0.0");
    primary["capabilities"] = json!({"portMappings": true});
    let bridge = json!({"cniVersion": "1.0.0", "name": "cbr0", "plugins": [primary]});
    let mut plexus = lab.plexus("1.0.0", vec![]);
    plexus.as_object_mut().unwrap().remove("delegates");
    plexus["clusterNetwork"] = json!(conf_dir);
    plexus["capabilities"] = json!({"portMappings": true});
    plexus["runtimeConfig"] =
        json!({"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]});
    let wrapper = json!({"cniVersion": "1.0.0", "name": "plexus", "plugins": [plexus.clone()]});
    std::fs::write(conf_dir.join("00-plexus.conflist"), wrapper.to_string()).unwrap();
    std::fs::write(conf_dir.join("10-flannel.conflist"), bridge.to_string()).unwrap();

    let result = run_plexus("ADD", "c-k3s", ns(&pod), &plexus).ok();
    assert!(result["ips"][0]["address"]
        .as_str()
        .unwrap()
        .starts_with("10.10.0."));
    assert_eq!(addresses_of(&pod, "eth0").len(), 1);
    let cached: Value =
        serde_json::from_slice(&std::fs::read(lab.cache_dir().join("c-k3s")).unwrap()).unwrap();
    assert_eq!(cached["attachments"][0]["network"], "cbr0");
    assert_eq!(
        cached["attachments"][0]["capabilityArgs"]["portMappings"][0]["hostPort"],
        18080
    );

    // By name in confDir, too.
    let mut by_name = plexus.clone();
    by_name["clusterNetwork"] = json!("cbr0");
    by_name["confDir"] = json!(conf_dir);
    run_plexus("CHECK", "c-k3s", ns(&pod), &by_name).ok();
    run_plexus("DEL", "c-k3s", ns(&pod), &by_name).ok();
    lab.assert_clean(Some(&pod));
}
