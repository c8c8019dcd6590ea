//! A failed ADD tears down everything it attempted: no interface, no reservation and no cache
//! entry is left, and the error names the network that failed.

mod common;

use common::{ns, run_plexus, Lab};
use plexus_tests::{root_or_skip, TestPod};
use serde_json::json;

#[test]
fn missing_plugin_in_the_second_secondary_rolls_everything_back() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let pod = TestPod::new("pxpod");
    let broken = json!({"cniVersion": "1.0.0", "name": "broken", "type": "no-such-plugin"});
    let config = lab.plexus(
        "1.0.0",
        vec![
            lab.bridge("1.0.0"),
            lab.macvlan("1.0.0", "storage", 20),
            broken,
        ],
    );
    let out = run_plexus("ADD", "c-rollback", ns(&pod), &config);
    assert_eq!(out.error_code(), 101);
    let msg = out.json["msg"].as_str().unwrap();
    assert!(msg.contains("broken") && msg.contains("net2"), "{msg}");
    // The runtime's DEL after a failed ADD succeeds and leaves nothing.
    run_plexus("DEL", "c-rollback", ns(&pod), &config).ok();
    lab.assert_clean(Some(&pod));
}

#[test]
fn bad_delegate_config_rolls_everything_back() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let pod = TestPod::new("pxpod");
    let mut bad = lab.macvlan("1.0.0", "backup", 30);
    bad["plugins"][0]["master"] = json!("no-such-master");
    let config = lab.plexus(
        "1.0.0",
        vec![
            lab.bridge("1.0.0"),
            lab.macvlan("1.0.0", "storage", 20),
            bad,
        ],
    );
    let out = run_plexus("ADD", "c-badconf", ns(&pod), &config);
    out.error_code();
    assert!(out.json["msg"].as_str().unwrap().contains("backup"));
    assert!(pod.link("eth0").unwrap().is_none() && pod.link("net1").unwrap().is_none());
    assert!(lab.reservations().is_empty(), "{:?}", lab.reservations());
    run_plexus("DEL", "c-badconf", ns(&pod), &config).ok();
    lab.assert_clean(Some(&pod));
}

#[test]
fn an_interface_name_already_in_the_pod_is_refused_before_anything_runs() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let pod = TestPod::new("pxpod");
    plexus::links::create_veth(Some(&pod.path), "net1", "other0").unwrap();
    let out = run_plexus("ADD", "c-taken", ns(&pod), &lab.three_networks("1.0.0"));
    assert_eq!(out.error_code(), 103);
    assert!(lab.reservations().is_empty());
    assert!(lab.cache_entries().is_empty());
    assert!(pod.link("eth0").unwrap().is_none());
}

#[test]
fn a_path_in_the_plugin_type_is_refused() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let pod = TestPod::new("pxpod");
    for evil in ["../../../bin/true", "/bin/true", "sub/bridge", ".."] {
        let config = lab.plexus(
            "1.0.0",
            vec![
                lab.bridge("1.0.0"),
                json!({"cniVersion": "1.0.0", "name": "evil", "type": evil}),
            ],
        );
        let out = run_plexus("ADD", "c-evil", ns(&pod), &config);
        assert_eq!(out.error_code(), 7, "{evil}");
        run_plexus("DEL", "c-evil", ns(&pod), &config).ok();
        lab.assert_clean(Some(&pod));
    }
}
