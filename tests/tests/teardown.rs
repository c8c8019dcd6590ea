//! DEL in the hard cases: after a crash between two delegates, repeated, with the namespace
//! gone, with `CNI_NETNS` empty, and with no cache entry.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ns, run_plexus, script_plugin, Lab};
use plexus_tests::{cni_plugin_dir, plexus_bin_dir, root_or_skip, TestPod};
use serde_json::json;

#[test]
fn del_after_a_crash_between_two_delegates_removes_everything() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let pod = TestPod::new("pxpod");
    // A third delegate that never answers, so that plexus can be killed while it runs.
    let bin = lab.dir.path().join("bin");
    let hang = script_plugin(&bin, "hang", "exec sleep 60");
    let mut config = lab.plexus(
        "1.0.0",
        vec![
            lab.bridge("1.0.0"),
            lab.macvlan("1.0.0", "storage", 20),
            json!({"cniVersion": "1.0.0", "name": "stuck", "type": "hang"}),
        ],
    );
    config["binDir"] = json!(bin);
    let path = cni_plugin_dir();
    let mut child = Command::new(plexus_bin_dir().join("plexus"))
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "c-crash")
        .env("CNI_NETNS", ns(&pod))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", path.to_str().unwrap())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(config.to_string().as_bytes())
            .unwrap();
    }
    let start = Instant::now();
    while pod.link("net1").unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "net1 never appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    child.kill().unwrap();
    child.wait().unwrap();
    // Kill the orphaned hanging delegate too.
    let _ = Command::new("pkill")
        .args(["-f", &hang.to_string_lossy()])
        .status();

    assert_eq!(
        lab.cache_entries(),
        ["c-crash"],
        "the cache entry was written before any delegate ran"
    );
    assert!(pod.link("eth0").unwrap().is_some());
    // The hanging plugin's DEL would hang too: make it answer from now on.
    std::fs::write(&hang, "#!/bin/sh\nexit 0\n").unwrap();
    run_plexus("DEL", "c-crash", ns(&pod), &config).ok();
    lab.assert_clean(Some(&pod));
}

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
