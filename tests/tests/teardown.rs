//! DEL in the hard cases: repeated, with the namespace gone, with `CNI_NETNS` empty, and with no
//! cache entry. (After a crash between two delegates: the fault suite, `faults.rs`.)

mod common;

use common::{ns, run_plexus, script_plugin, Lab};
use plexus_tests::{root_or_skip, TestPod};
use serde_json::json;

#[test]
fn repeated_del_succeeds() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let pod = TestPod::new("pxpod");
    let config = lab.three_networks("1.0.0");
    run_plexus("ADD", "c-twice", ns(&pod), &config).ok();
    run_plexus("DEL", "c-twice", ns(&pod), &config).ok();
    run_plexus("DEL", "c-twice", ns(&pod), &config).ok();
    run_plexus("DEL", "c-twice", "", &config).ok();
    lab.assert_clean(Some(&pod));
}

#[test]
fn del_with_the_namespace_gone_releases_everything() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let pod = TestPod::new("pxpod");
    let path = ns(&pod).to_string();
    let config = lab.three_networks("1.0.0");
    run_plexus("ADD", "c-gone", &path, &config).ok();
    drop(pod);
    run_plexus("DEL", "c-gone", &path, &config).ok();
    lab.assert_clean(None);
}

#[test]
fn del_with_empty_netns_as_containerd_sends_it() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let pod = TestPod::new("pxpod");
    let config = lab.three_networks("1.0.0");
    run_plexus("ADD", "c-empty", ns(&pod), &config).ok();
    // containerd: StopPodSandbox (DEL with the namespace), then RemovePodSandbox (DEL without).
    drop(pod);
    run_plexus("DEL", "c-empty", "", &config).ok();
    run_plexus("DEL", "c-empty", "", &config).ok();
    lab.assert_clean(None);
}

#[test]
fn del_without_a_cache_entry_still_tears_down_the_configured_networks() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let pod = TestPod::new("pxpod");
    let config = lab.three_networks("1.0.0");
    run_plexus("ADD", "c-nocache", ns(&pod), &config).ok();
    std::fs::remove_file(lab.cache_dir().join("c-nocache")).unwrap();
    run_plexus("DEL", "c-nocache", ns(&pod), &config).ok();
    lab.assert_clean(Some(&pod));

    // With no cache and no network the configuration can name, DEL fails instead of lying.
    let mut unresolvable = config.clone();
    unresolvable.as_object_mut().unwrap().remove("delegates");
    unresolvable["clusterNetwork"] = json!("/nonexistent/10-flannel.conflist");
    let out = run_plexus("DEL", "c-nocache", ns(&pod), &unresolvable);
    assert_eq!(out.error_code(), 104);
}

#[test]
fn a_failing_delegate_del_keeps_the_cache_entry_for_the_retry() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let pod = TestPod::new("pxpod");
    let bin = lab.dir.path().join("bin");
    let flaky = script_plugin(&bin, "flaky", "echo '{\"cniVersion\":\"1.0.0\"}'");
    let mut config = lab.plexus(
        "1.0.0",
        vec![
            lab.bridge("1.0.0"),
            json!({"cniVersion": "1.0.0", "name": "flaky", "type": "flaky"}),
            lab.macvlan("1.0.0", "storage", 20),
        ],
    );
    config["binDir"] = json!(bin);
    run_plexus("ADD", "c-flaky", ns(&pod), &config).ok();
    std::fs::write(
        &flaky,
        "#!/bin/sh\necho '{\"code\":11,\"msg\":\"busy\"}'; exit 1\n",
    )
    .unwrap();
    let out = run_plexus("DEL", "c-flaky", ns(&pod), &config);
    assert_eq!(out.error_code(), 106);
    assert!(out.json["msg"].as_str().unwrap().contains("busy"));
    // Every other delegate was still torn down, and the entry stays for the retry.
    assert!(pod.link("eth0").unwrap().is_none());
    assert!(pod.link("storage").unwrap().is_none());
    assert_eq!(lab.cache_entries(), ["c-flaky"]);
    std::fs::write(&flaky, "#!/bin/sh\nexit 0\n").unwrap();
    run_plexus("DEL", "c-flaky", ns(&pod), &config).ok();
    lab.assert_clean(Some(&pod));
}
