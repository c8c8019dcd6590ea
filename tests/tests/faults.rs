//! The fault suite: Plexus under crashes and broken surroundings, each case ending with the exact
//! check of [`leaks::Leaks`] that nothing is lost or leaked (links in the node and pod
//! namespaces, host-local and plexus-ipam allocations, cache files). Every failure must be a CNI
//! error object and a non-zero exit, never a panic (`run_plugin` fails the test on a signal).
//!
//! - the API server killed and restarted during a burst of concurrent ADDs and DELs, then the
//!   primary network's NAD missing at ADD ([`apiserver_killed_during_a_burst_then_primary_nad_missing`]);
//! - etcd stopped and restarted under plexus-ipam's etcd backend;
//! - `plexus` killed with SIGKILL between two delegates of an ADD, then DEL;
//! - `plexus-ipam` killed after its write and before its reply (local and etcd stores), then a
//!   repeated ADD and a DEL;
//! - a read-only and a full `cniDir`;
//! - a truncated cache file (corrupt ones of every kind: `bad_input.rs`);
//! - the primary network's configuration file missing at ADD.
//!
//! The store-level crash cases of plexus-ipam (allocators killed in mid-flight, data surviving
//! an etcd restart) are in `ipam_etcd.rs`; here everything runs through the binaries.

mod common;
#[path = "faults/leaks.rs"]
mod leaks;

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::kube::{
    plexus_config, pod_cni_args, write_cluster_network, Kube, PodCall, DEFAULT_NETWORK, NETWORKS,
};
use common::{
    ns, run_plexus_raw, run_plugin, script_plugin, spawn_plugin, wait_for_file, Lab, Outcome,
};
use leaks::Leaks;
use plexus_tests::etcd::{etcd_or_skip, LocalEtcd};
use plexus_tests::{cni_plugin_dir, plexus_bin_dir, root_or_skip, TestPod};
use serde_json::{json, Value};

/// `CNI_PATH`: the reference plugins, then Plexus's own binaries (plexus-ipam).
fn cni_path() -> String {
    format!(
        "{}:{}",
        cni_plugin_dir().display(),
        plexus_bin_dir().display()
    )
}

/// Runs `plexus` for `container` (also its pod name) with `CNI_ARGS` `extra_args` appended.
fn plexus(command: &str, container: &str, netns: &str, config: &Value) -> Outcome {
    plexus_with_args(command, container, netns, config, "")
}

fn plexus_with_args(
    command: &str,
    container: &str,
    netns: &str,
    config: &Value,
    extra_args: &str,
) -> Outcome {
    let args =
        format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={container}{extra_args}");
    run_plexus_raw(
        &[
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", container),
            ("CNI_NETNS", netns),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", &cni_path()),
            ("CNI_ARGS", &args),
        ],
        config.to_string().as_bytes(),
    )
}

/// A macvlan network on the lab's master whose addresses come from plexus-ipam with `ipam`
/// (merged over `type` and `range`).
fn macvlan_plexus_ipam(lab: &Lab, name: &str, octet: u8, ipam: Value) -> Value {
    let mut conf = json!({
        "type": "plexus-ipam", "range": format!("10.{octet}.0.0/24"),
    });
    for (k, v) in ipam.as_object().unwrap() {
        conf[k] = v.clone();
    }
    json!({
        "cniVersion": "1.0.0", "name": name, "type": "macvlan", "master": lab.master,
        "mode": "bridge", "ipam": conf
    })
}

/// Asserts that `out` failed with a CNI error object whose code is one of `codes`.
fn assert_fails_with(out: &Outcome, codes: &[u64]) {
    let code = out.own_error_code();
    assert!(
        codes.contains(&code),
        "want one of {codes:?}: {}",
        out.stdout
    );
}

/// GC (CNI 1.1) with no valid attachment: Plexus removes unreadable cache entries.
fn gc_all(lab: &Lab, delegates: Vec<Value>) -> Outcome {
    let mut config = lab.plexus("1.1.0", delegates);
    config["cni.dev/valid-attachments"] = json!([]);
    run_plexus_raw(
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", &cni_path())],
        config.to_string().as_bytes(),
    )
}

// ---------------------------------------------------------------------------------------------
// plexus killed between two delegates
// ---------------------------------------------------------------------------------------------

#[test]
fn plexus_killed_between_two_delegates_then_del_removes_everything() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let leaks = Leaks::watch(&lab);
    let pod = TestPod::new("pxpod");
    // A third delegate that never answers (and says who it is), so that plexus can be killed
    // while it runs, after the first two have attached.
    let bin = lab.dir.path().join("bin");
    let pid_file = lab.dir.path().join("hang.pid");
    let hang = script_plugin(
        &bin,
        "hang",
        &format!("echo $$ > {}\nexec sleep 60", pid_file.display()),
    );
    let mut config = lab.plexus(
        "1.0.0",
        vec![
            lab.bridge("1.0.0"),
            lab.macvlan("1.0.0", "storage", 20),
            json!({"cniVersion": "1.0.0", "name": "stuck", "type": "hang"}),
        ],
    );
    config["binDir"] = json!(bin);
    let cni_path = cni_path();
    let mut child = spawn_plugin(
        &plexus_bin_dir().join("plexus"),
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c-crash"),
            ("CNI_NETNS", ns(&pod)),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", &cni_path),
        ],
        config.to_string().as_bytes(),
    );
    wait_for_file(&pid_file, "the third delegate never started");
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "plexus was not killed: {status}");
    // The orphaned delegate, by its own pid.
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );

    assert_eq!(
        lab.cache_entries(),
        ["c-crash"],
        "the cache entry is written before any delegate runs"
    );
    assert!(pod.link("eth0").unwrap().is_some());
    assert!(pod.link("storage").unwrap().is_some() || pod.link("net1").unwrap().is_some());
    // The hanging plugin's DEL would hang too: it answers from now on.
    std::fs::write(&hang, "#!/bin/sh\nexit 0\n").unwrap();
    plexus("DEL", "c-crash", ns(&pod), &config).ok();
    leaks.assert_nothing_left(&[&pod]);
    // And DEL stays idempotent.
    plexus("DEL", "c-crash", ns(&pod), &config).ok();
    leaks.assert_nothing_left(&[&pod]);
}

// ---------------------------------------------------------------------------------------------
// plexus-ipam killed after its write and before its reply
// ---------------------------------------------------------------------------------------------

/// Runs plexus-ipam with `stdin` and SIGKILLs it as soon as its stdout becomes readable: its
/// store write is done, and the reply never reaches the caller. Returns whether the signal
/// landed before the process exited on its own.
fn ipam_killed_at_its_reply(env: &[(&str, &str)], stdin: &[u8]) -> bool {
    let mut child = Command::new(plexus_bin_dir().join("plexus-ipam"))
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run plexus-ipam");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 1];
    let n = stdout.read(&mut first).expect("read plexus-ipam's stdout");
    let _ = child.kill();
    let status = child.wait().unwrap();
    assert_eq!(n, 1, "plexus-ipam printed nothing ({status})");
    status.signal() == Some(9)
}

/// The address of a CNI result's only IP.
fn only_address(result: &Value) -> String {
    let ips = result["ips"].as_array().expect("a result with ips");
    assert_eq!(ips.len(), 1, "{result}");
    ips[0]["address"].as_str().unwrap().to_string()
}

/// Kill-before-reply, repeated ADD, DEL, on one plexus-ipam store; `allocations` lists the
/// store's allocations as (address, owner).
fn ipam_kill_case(config: &Value, allocations: &dyn Fn() -> Vec<(String, String)>) {
    let binary = plexus_bin_dir().join("plexus-ipam");
    let env = |command: &'static str| {
        [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", "c-ipamkill"),
            ("CNI_NETNS", "/var/run/netns/c-ipamkill"),
            ("CNI_IFNAME", "net1"),
            ("CNI_PATH", "/usr/lib/cni"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=ipamkill",
            ),
        ]
    };
    let stdin = config.to_string();
    let killed = ipam_killed_at_its_reply(&env("ADD"), stdin.as_bytes());
    eprintln!("plexus-ipam killed before it exited: {killed}");
    let held = allocations();
    assert_eq!(
        held.len(),
        1,
        "the write is done before the reply: {held:?}"
    );
    assert!(held[0].1.contains("c-ipamkill"), "{held:?}");

    // The runtime retries: the same container and interface get the same address.
    let again = run_plugin(&binary, &env("ADD"), stdin.as_bytes()).ok();
    let address = only_address(&again);
    assert_eq!(
        address.split('/').next().unwrap(),
        held[0].0,
        "a second allocation"
    );
    assert_eq!(allocations().len(), 1, "{:?}", allocations());

    run_plugin(&binary, &env("DEL"), stdin.as_bytes()).ok();
    assert_eq!(allocations(), Vec::<(String, String)>::new());
    // DEL again is fine.
    run_plugin(&binary, &env("DEL"), stdin.as_bytes()).ok();
}

#[test]
fn plexus_ipam_killed_after_its_write_and_before_its_reply_local_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let config = json!({
        "cniVersion": "1.0.0", "name": "net", "type": "macvlan",
        "ipam": {"type": "plexus-ipam", "range": "10.51.0.0/24", "backend": "local", "local_path": store}
    });
    ipam_kill_case(&config, &|| leaks::local_allocations(&store));
}

#[test]
fn plexus_ipam_killed_after_its_write_and_before_its_reply_etcd_store() {
    if etcd_or_skip().is_none() {
        return;
    }
    let etcd = LocalEtcd::start().expect("etcd");
    let network = format!("kill{}", std::process::id());
    let config = json!({
        "cniVersion": "1.0.0", "name": "net", "type": "macvlan",
        "ipam": {"type": "plexus-ipam", "range": "10.52.0.0/24", "backend": "etcd",
                 "etcd_endpoints": etcd.endpoints(), "network_name": network}
    });
    let prefix = plexus_ipam::backends::etcd::keys::network_key(
        plexus_ipam::backends::etcd::DEFAULT_PREFIX,
        &network,
    );
    // Allocation keys (the address) with their owner records.
    let allocations = || {
        leaks::etcd_keys(&etcd.endpoints(), &prefix)
            .into_iter()
            .filter(|(k, _)| k.contains("/ips/"))
            .filter_map(|(k, v)| {
                let ip = plexus_ipam::backends::etcd::keys::key_address(k.as_bytes())?;
                Some((ip.to_string(), v))
            })
            .collect::<Vec<_>>()
    };
    ipam_kill_case(&config, &allocations);
    let keys = leaks::etcd_keys(&etcd.endpoints(), &prefix);
    assert!(keys.is_empty(), "etcd keys left: {keys:?}");
}

// ---------------------------------------------------------------------------------------------
// etcd stopped and restarted under plexus-ipam's etcd backend
// ---------------------------------------------------------------------------------------------

#[test]
fn etcd_stopped_and_restarted_under_the_etcd_backend() {
    if !root_or_skip() || etcd_or_skip().is_none() {
        return;
    }
    let etcd = LocalEtcd::start().expect("etcd");
    // plexus-ipam must reach etcd on the host's loopback.
    let lab = Lab::on_host();
    let network = format!("etcdfault{}", std::process::id());
    let leaks = Leaks::watch(&lab).with_etcd(etcd.endpoints(), &network);
    let storage = macvlan_plexus_ipam(
        &lab,
        "storage",
        53,
        json!({"backend": "etcd", "etcd_endpoints": etcd.endpoints(), "network_name": network}),
    );
    let config = lab.plexus("1.0.0", vec![lab.bridge("1.0.0"), storage]);
    let (a, b) = (TestPod::new("pxpod"), TestPod::new("pxpod"));
    let pods = [&a, &b];

    plexus("ADD", "c-etcd-a", ns(&a), &config).ok();
    assert!(a.link("net1").unwrap().is_some());

    etcd.stop();
    // ADD with etcd down: a CNI error (try again later), and B is rolled back completely.
    let out = plexus("ADD", "c-etcd-b", ns(&b), &config);
    assert_fails_with(&out, &[11, 100, 121]);
    assert!(
        out.json["msg"].as_str().unwrap().contains("storage"),
        "{}",
        out.stdout
    );
    eprintln!("ADD with etcd down: {}", out.stdout);
    // B is rolled back, except what needs etcd: macvlan's DEL releases the address first and
    // keeps net1 when that fails. Then the error says so, and B's cache entry stays for the DEL
    // the runtime sends after a failed ADD.
    let in_b: Vec<String> = b.links().unwrap().into_iter().map(|l| l.name).collect();
    if in_b != ["lo"] {
        assert_eq!(in_b, ["lo", "net1"]);
        let details = out.json["details"].as_str().unwrap_or_default();
        assert!(details.contains("rollback incomplete"), "{}", out.stdout);
        assert!(lab.cache_entries().contains(&"c-etcd-b".to_string()));
    }
    // DEL with etcd down cannot release A's address: it fails and keeps the cache entry.
    let out = plexus("DEL", "c-etcd-a", ns(&a), &config);
    assert_fails_with(&out, &[11, 106, 121]);
    assert!(lab.cache_entries().contains(&"c-etcd-a".to_string()));

    etcd.start_again().expect("etcd again");
    // The runtime's DEL after the failed ADD: nothing of B anywhere, etcd included.
    plexus("DEL", "c-etcd-b", ns(&b), &config).ok();
    leaks.assert_nothing_left_of("c-etcd-b", &[&b]);
    // The retried DEL releases A; the retried ADD attaches B; nothing is lost.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = plexus("DEL", "c-etcd-a", ns(&a), &config);
        if out.code == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "DEL after etcd is back: {}",
            out.stdout
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    leaks.assert_nothing_left_of("c-etcd-a", &[&a]);
    plexus("ADD", "c-etcd-b", ns(&b), &config).ok();
    assert!(b.link("net1").unwrap().is_some());
    plexus("DEL", "c-etcd-b", ns(&b), &config).ok();
    leaks.assert_nothing_left(&pods);
}

// ---------------------------------------------------------------------------------------------
// A read-only or full cniDir
// ---------------------------------------------------------------------------------------------

/// A tmpfs mounted for one case, unmounted on drop (even when the case fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, options: &str, flags: nix::mount::MsFlags) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        nix::mount::mount(Some("tmpfs"), path, Some("tmpfs"), flags, Some(options))
            .unwrap_or_else(|e| panic!("mount a tmpfs on {}: {e}", path.display()));
        Tmpfs(path.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Err(e) = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH) {
            eprintln!("cannot unmount {}: {e}", self.0.display());
        }
    }
}

#[test]
fn a_read_only_or_full_cni_dir_fails_add_and_attaches_nothing() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let leaks = Leaks::watch(&lab);
    let pod = TestPod::new("pxpod");
    let config = lab.three_networks("1.0.0");

    {
        let _ro = Tmpfs::mount(&lab.cache_dir(), "size=64k", nix::mount::MsFlags::MS_RDONLY);
        let out = plexus("ADD", "c-rodir", ns(&pod), &config);
        assert_fails_with(&out, &[104]);
        leaks.assert_nothing_left(&[&pod]);
        // DEL has nothing to read and tears down what the configuration names: fine.
        plexus("DEL", "c-rodir", ns(&pod), &config).ok();
        leaks.assert_nothing_left(&[&pod]);
    }
    {
        let _full = Tmpfs::mount(
            &lab.cache_dir(),
            "size=16k,nr_inodes=64",
            nix::mount::MsFlags::empty(),
        );
        let mut filler = std::fs::File::create(lab.cache_dir().join(".filler")).unwrap();
        let block = [0u8; 4096];
        while filler.write_all(&block).is_ok() {}
        let _ = filler.sync_all();
        let out = plexus("ADD", "c-fulldir", ns(&pod), &config);
        assert_fails_with(&out, &[104]);
        // The filler stays; nothing else does.
        let left: Vec<String> = leaks
            .left(&[&pod], None)
            .into_iter()
            .filter(|l| l != "cache file .filler")
            .collect();
        assert_eq!(left, Vec::<String>::new());
        plexus("DEL", "c-fulldir", ns(&pod), &config).ok();
    }
    leaks.assert_nothing_left(&[&pod]);
}

// ---------------------------------------------------------------------------------------------
// A truncated cache file
// ---------------------------------------------------------------------------------------------

#[test]
fn a_truncated_cache_file_still_tears_down_from_the_configuration() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let leaks = Leaks::watch(&lab);
    let pod = TestPod::new("pxpod");
    let config = lab.three_networks("1.0.0");
    plexus("ADD", "c-trunc", ns(&pod), &config).ok();
    let file = lab.cache_dir().join("c-trunc");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();

    let out = plexus("CHECK", "c-trunc", ns(&pod), &config);
    assert_fails_with(&out, &[104]);
    // DEL says the cache was unreadable, but still tears down what the configuration names.
    let out = plexus("DEL", "c-trunc", ns(&pod), &config);
    assert_fails_with(&out, &[104]);
    assert_eq!(
        leaks.left(&[&pod], None),
        ["cache file c-trunc"],
        "only the unreadable file stays, for inspection"
    );
    // GC removes an unreadable entry of a container that is gone.
    gc_all(&lab, vec![lab.bridge("1.0.0")]).ok();
    leaks.assert_nothing_left(&[&pod]);
}

// ---------------------------------------------------------------------------------------------
// The primary network's configuration missing at ADD
// ---------------------------------------------------------------------------------------------

#[test]
fn a_missing_primary_network_file_fails_add_closed() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let leaks = Leaks::watch(&lab);
    let pod = TestPod::new("pxpod");
    let conf_dir = lab.dir.path().join("net.d");
    std::fs::create_dir_all(&conf_dir).unwrap();
    // Static delegates are there, but clusterNetwork replaces them: never fall back to fewer
    // or other networks than asked.
    let mut config = lab.three_networks("1.0.0");
    config["clusterNetwork"] = json!(conf_dir.join("10-pods.conflist"));
    config["confDir"] = json!(conf_dir);
    let out = plexus("ADD", "c-noprimary", ns(&pod), &config);
    assert_fails_with(&out, &[5, 7]);
    leaks.assert_nothing_left(&[&pod]);

    // A directory without any configuration, and a name not found in confDir.
    for missing in [json!(conf_dir), json!("pods")] {
        config["clusterNetwork"] = missing;
        let out = plexus("ADD", "c-noprimary", ns(&pod), &config);
        assert_fails_with(&out, &[5, 7]);
        leaks.assert_nothing_left(&[&pod]);
    }
}

// ---------------------------------------------------------------------------------------------
// The API server killed and restarted during a burst, then the primary NAD missing
// ---------------------------------------------------------------------------------------------

/// The namespace of the burst's pods.
const NAMESPACE: &str = "faults";

/// One pod of the burst: its namespace, name, UID and container ID.
struct BurstPod {
    netns: TestPod,
    name: String,
    uid: String,
    container: String,
}

impl BurstPod {
    fn cni(&self, command: &str, config: &Value) -> Outcome {
        let args = pod_cni_args(NAMESPACE, &self.name, &self.uid, None);
        PodCall {
            container: &self.container,
            netns: ns(&self.netns),
            cni_path: &cni_path(),
            args: &args,
        }
        .run(command, config, &[])
    }

    /// Asserts that the pod is fully attached: cache entry, eth0 and net1, network-status.
    fn assert_attached(&self, lab: &Lab, env: &Kube) {
        assert!(
            lab.cache_entries().contains(&self.container),
            "{}: no cache entry",
            self.name
        );
        for ifname in ["eth0", "net1"] {
            assert!(
                self.netns.link(ifname).unwrap().is_some(),
                "{}: no {ifname}",
                self.name
            );
        }
        let status = env
            .try_network_status(NAMESPACE, &self.name)
            .unwrap_or_else(|| panic!("{}: no network-status", self.name));
        assert_eq!(status.as_array().map(Vec::len), Some(2), "{status}");
    }
}

#[test]
fn apiserver_killed_during_a_burst_then_primary_nad_missing() {
    if !root_or_skip() {
        return;
    }
    let Some(mut env) = Kube::start() else {
        return;
    };
    env.namespace(NAMESPACE);
    let lab = Lab::on_host();
    let ipam_store = lab.dir.path().join("plexus-ipam");
    let leaks = Leaks::watch(&lab).with_local_ipam(ipam_store.clone());
    let conf_dir = lab.dir.path().join("net.d");
    let cluster_file = write_cluster_network(&conf_dir, &lab.bridge("1.0.0"));
    let config = plexus_config(
        &env,
        &cluster_file,
        &lab.cache_dir(),
        &lab.dir.path().join("bin"),
        json!({"confDir": conf_dir, "apiTimeoutSeconds": 2, "delegateTimeoutSeconds": 20}),
    );
    env.nad(
        NAMESPACE,
        "storage",
        &macvlan_plexus_ipam(
            &lab,
            "storage",
            54,
            json!({"backend": "local", "local_path": ipam_store}),
        ),
    );
    let pods: Vec<BurstPod> = (0..12)
        .map(|i| {
            let name = format!("burst-{i}");
            let uid = env.pod(NAMESPACE, &name, &[(NETWORKS, "storage")]);
            BurstPod {
                netns: TestPod::new("pxpod"),
                container: format!("c-faults-{name}"),
                name,
                uid,
            }
        })
        .collect();
    let netns: Vec<&TestPod> = pods.iter().map(|p| &p.netns).collect();

    // Four pods are up before the burst; the burst deletes them and adds the other eight.
    let started = Instant::now();
    for p in &pods[..4] {
        p.cni("ADD", &config).ok();
        p.assert_attached(&lab, &env);
    }
    // One ADD's time: the burst's calls start half of it apart, and the API server dies as soon
    // as the burst's first ADD has finished, while later ones are in flight or not yet started.
    let one_add = started.elapsed() / 4;
    eprintln!("burst: one ADD takes {one_add:?}");
    let (finished, first_add_done) = std::sync::mpsc::channel();
    let outcomes: Vec<(usize, &str, Outcome)> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let command = if i < 4 { "DEL" } else { "ADD" };
                let config = &config;
                let finished = finished.clone();
                s.spawn(move || {
                    // Staggered, so that calls start before, during and after the crash.
                    std::thread::sleep(one_add * (i as u32 % 8) / 2);
                    let out = p.cni(command, config);
                    if command == "ADD" {
                        let _ = finished.send(());
                    }
                    (i, command, out)
                })
            })
            .collect();
        first_add_done
            .recv_timeout(Duration::from_secs(120))
            .expect("no ADD of the burst finished");
        env.cluster.kill_apiserver();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    env.cluster
        .start_apiserver_again()
        .expect("the API server back");
    env.reconnect();

    let mut failed = Vec::new();
    for (i, command, out) in &outcomes {
        let p = &pods[*i];
        if *command == "DEL" {
            // DEL needs no API server while the cache entry is there.
            assert_eq!(out.code, 0, "DEL {}: {}", p.name, out.stdout);
            leaks.assert_nothing_left_of(&p.container, &[&p.netns]);
        } else if out.code == 0 {
            p.assert_attached(&lab, &env);
        } else {
            // Failed: a CNI error, and nothing of the pod is left.
            eprintln!("burst: ADD {} failed: {}", p.name, out.stdout);
            assert_fails_with(out, &[5, 11, 107]);
            leaks.assert_failed_add_left_nothing(&p.container, &[&p.netns], || {
                p.cni("DEL", &config).ok();
            });
            failed.push(*i);
        }
    }
    eprintln!(
        "burst: {} of 8 ADDs failed while the API server was down",
        failed.len()
    );
    assert!(
        failed.len() < 8,
        "no ADD finished before the API server died"
    );
    // The runtime retries the failed ADDs once the API server is back.
    for i in &failed {
        pods[*i].cni("ADD", &config).ok();
        pods[*i].assert_attached(&lab, &env);
    }
    for p in &pods {
        p.cni("DEL", &config).ok();
    }
    leaks.assert_nothing_left(&netns);

    // The primary network's NAD missing at ADD: the default-network annotation names a NAD that
    // does not exist. ADD fails closed, never falling back to the cluster network.
    let lonely = BurstPod {
        uid: env.pod(
            NAMESPACE,
            "no-primary",
            &[(DEFAULT_NETWORK, "faults/absent"), (NETWORKS, "storage")],
        ),
        netns: TestPod::new("pxpod"),
        name: "no-primary".into(),
        container: "c-faults-no-primary".into(),
    };
    let out = lonely.cni("ADD", &config);
    assert_fails_with(&out, &[7]);
    assert!(
        out.json["msg"].as_str().unwrap().contains("absent"),
        "{}",
        out.stdout
    );
    leaks.assert_nothing_left(&[&lonely.netns]);
    // clusterNetwork naming a NAD that is missing (and no such file in confDir) fails the same.
    let mut by_name = config.clone();
    by_name["clusterNetwork"] = json!("absent-cluster-network");
    let plain = BurstPod {
        uid: env.pod(NAMESPACE, "plain", &[]),
        netns: TestPod::new("pxpod"),
        name: "plain".into(),
        container: "c-faults-plain".into(),
    };
    let out = plain.cni("ADD", &by_name);
    assert_fails_with(&out, &[5, 7]);
    leaks.assert_nothing_left(&[&plain.netns, &lonely.netns]);
}
