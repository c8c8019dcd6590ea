//! End to end, the way users install Plexus: Plexus's image (`cargo xtask image`) imported into
//! the node's containerd, and `examples/k3s/` applied unchanged with `kubectl apply` on a node
//! whose controller-manager runs the DaemonSet, whose scheduler places the pods and whose
//! kubelet mounts K3s's real paths ([`plexus_tests::node`], [`Install::DaemonSet`]).
//!
//! One story, in order: the CRDs, RBAC, token and DaemonSet are applied and the conflist
//! appears; the example NADs and pods come up with their networks; the service account's
//! token is rotated, the `--watch` container brings the new one to the node, the old one is
//! refused and a pod created afterwards still attaches; the DaemonSet's `plexusd` container
//! serves the node agent on `/run/plexus/plexusd.sock` and the example pods' plexus-ipam
//! addresses go through it; the agent killed, the conflist stays as it was and a pod still
//! attaches (plexus-ipam falls back), and the kubelet restarts the agent; the DaemonSet is
//! deleted, the conflist stays and a pod created afterwards still attaches (Multus #1527);
//! everything is deleted, and nothing is left in the API, on the node or on the host.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use plexus_tests::agent;
use plexus_tests::node::{self, Install, KubeNode, NAMESPACE, PRIMARY_SUBNET, SYSTEM_NAMESPACE};
use plexus_tests::root_or_skip;
use serde_json::Value;

/// How long pods and the DaemonSet get to reach Running, and the token to reach the node.
const TIMEOUT: Duration = Duration::from_secs(180);
/// How often states are polled.
const POLL: Duration = Duration::from_millis(250);
/// The example networks' subnets.
const MACVLAN: &str = "192.168.100.0/24";
const BRIDGE: &str = "10.201.0.0/24";

/// Polls `ready` until it gives a value; panics with `what` after [`TIMEOUT`].
fn wait_for<T>(what: &str, mut ready: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = ready() {
            return value;
        }
        assert!(started.elapsed() < TIMEOUT, "{what}: not after {TIMEOUT:?}");
        std::thread::sleep(POLL);
    }
}

/// The token of the `plexus-token` Secret, once the token controller wrote it.
fn secret_token(node: &KubeNode) -> Option<String> {
    node.kubectl(&[
        "get",
        "secret",
        "plexus-token",
        "-n",
        SYSTEM_NAMESPACE,
        "-o",
        "go-template={{if .data.token}}{{.data.token | base64decode}}{{end}}",
    ])
    .ok()
    .filter(|t| !t.is_empty())
}

/// The token `plexusctl install` put on the node.
fn node_token(node: &KubeNode) -> String {
    std::fs::read_to_string(node.conf_dir().join("plexus.d/token")).unwrap_or_default()
}

/// Whether the API server accepts `token`.
fn token_accepted(node: &KubeNode, token: &str) -> bool {
    let flag = format!("--token={token}");
    match node.kubectl(&[&flag, "get", "pods", "-n", NAMESPACE, "-o", "name"]) {
        Ok(_) => true,
        Err(e) if e.to_string().contains("Unauthorized") => false,
        Err(e) => e.to_string().contains("Forbidden"),
    }
}

/// Creates a pod asking for both example networks and checks that it attaches to both.
fn a_new_pod_attaches(node: &KubeNode, name: &str) {
    node.apply(&[node.short_form_pod(name).unwrap()]).unwrap();
    let took = node
        .wait_running(&[name.to_string()], TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    println!("{name}: Running after {:.1}s", took.as_secs_f64());
    node.check_interfaces(
        name,
        &[
            ("eth0", PRIMARY_SUBNET),
            ("net1", MACVLAN),
            ("net2", BRIDGE),
        ],
    );
}

#[test]
fn the_daemonset_installs_plexus_survives_token_rotation_and_its_own_deletion() {
    if !root_or_skip() {
        return;
    }
    let Some(binaries) = node::binaries_or_skip() else {
        return;
    };
    if let Err(e) = node::image::archive() {
        if std::env::var_os("CI").is_some() {
            panic!("{e}; the DaemonSet test must not be skipped in CI");
        }
        eprintln!("skipped: {e}");
        return;
    }
    let node = KubeNode::start_with(&binaries, Install::DaemonSet).unwrap();
    let conflist = node.conflist();
    assert!(
        !conflist.exists(),
        "nothing is installed before the DaemonSet"
    );

    // The install, as the README has it: identity, token, CRDs, then the DaemonSet.
    let started = Instant::now();
    let (written, running) = node.install_with_daemonset().unwrap();
    println!(
        "conflist written {:.1}s after kubectl apply; DaemonSet pod Running after {:.1}s",
        written.as_secs_f64(),
        running.as_secs_f64()
    );
    println!(
        "{}",
        node.kubectl(&["logs", "-n", SYSTEM_NAMESPACE, "ds/plexus", "-c", "install"])
            .unwrap()
    );
    let written: Value = serde_json::from_slice(&std::fs::read(&conflist).unwrap()).unwrap();
    let plugin = &written["plugins"][0];
    assert_eq!(plugin["type"], "plexus");
    assert_eq!(plugin["binDir"], node::K3S_BIN_DIR);
    assert_eq!(plugin["readinessindicatorfile"], node::FLANNEL_READY_FILE);
    for binary in ["plexus", "plexus-ipam", "plexus-sriov"] {
        assert!(node.bin_dir().join(binary).is_file(), "{binary} installed");
    }
    assert_eq!(
        node_token(&node),
        secret_token(&node).unwrap(),
        "the node has the Secret's token"
    );

    // The node agent: the plexusd container serves the socket the conflist names.
    assert_eq!(plugin["agentSocket"], "/run/plexus/plexusd.sock");
    let socket = node.agent_socket();
    let serving = wait_for("the plexusd container answering Ping", || {
        agent::ping(&socket)
    });
    assert_eq!(serving.node, node::NODE_NAME);
    let socket_mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(socket_mode, 0o600, "the agent's socket");

    // The networks and pods, applied unchanged (`kubectl apply -f examples/k3s/pods/`); the
    // scheduler places them.
    node.kubectl_files(&["apply"], &["pods/"]).unwrap();
    let pods = [
        "plexus-demo-short",
        "plexus-demo-json",
        "plexus-demo-primary",
    ]
    .map(String::from);
    node.wait_running(&pods, TIMEOUT).unwrap();
    println!(
        "the example pods Running {:.1}s after the first kubectl apply",
        started.elapsed().as_secs_f64()
    );
    print!(
        "{}",
        node.kubectl(&["get", "pods", "-A", "-o", "wide"]).unwrap()
    );
    node.check_interfaces(
        "plexus-demo-short",
        &[
            ("eth0", PRIMARY_SUBNET),
            ("net1", MACVLAN),
            ("net2", BRIDGE),
        ],
    );
    node.check_interfaces(
        "plexus-demo-json",
        &[
            ("eth0", PRIMARY_SUBNET),
            ("net1", MACVLAN),
            ("bridge0", BRIDGE),
        ],
    );
    node.check_interfaces(
        "plexus-demo-primary",
        &[("eth0", "10.203.0.0/24"), ("net1", BRIDGE)],
    );

    // The six plexus-ipam attachments of the three pods were allocated by the agent.
    let counters = agent::ping(&socket).expect("the agent answers");
    println!("the agent's counters after the example pods: {counters:?}");
    assert!(
        counters.block_changes >= serving.block_changes + 6,
        "the pods' addresses through the agent: {serving:?} -> {counters:?}"
    );

    // The agent killed: the CNI configuration stays as it was, a pod still attaches (the
    // plugin falls back, or the restarted agent answers), and the kubelet restarts the agent.
    let conflist_before = std::fs::read(&conflist).unwrap();
    let conflist_inode = std::fs::metadata(&conflist).unwrap().ino();
    let pids = node.agent_processes().unwrap();
    assert_eq!(pids.len(), 1, "one plexusd on the node: {pids:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pids[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let killed = Instant::now();
    a_new_pod_attaches(&node, "agent-killed");
    assert_eq!(std::fs::read(&conflist).unwrap(), conflist_before);
    assert_eq!(std::fs::metadata(&conflist).unwrap().ino(), conflist_inode);
    wait_for("the plexusd container restarted", || {
        node.agent_processes()
            .unwrap()
            .iter()
            .any(|pid| *pid != pids[0])
            .then(|| agent::ping(&socket))
            .flatten()
    });
    println!(
        "plexusd killed: answering again {:.1}s later",
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(std::fs::read(&conflist).unwrap(), conflist_before);
    // The kubelet posts the restart count a moment after the container runs again.
    wait_for("the plexusd container's restart count of 1", || {
        let restarts = node.daemonset_restarts("plexusd").unwrap();
        assert!(
            restarts.iter().all(|n| *n <= 1),
            "plexusd restarted once: {restarts:?}"
        );
        (restarts == [1]).then_some(())
    });

    // Token rotation: a new Secret, a new token; the --watch container brings it to the node.
    let old = node_token(&node);
    node.kubectl_files(&["delete", "--wait=true"], &["02-plexus-token.yaml"])
        .unwrap();
    node.kubectl_files(&["apply"], &["02-plexus-token.yaml"])
        .unwrap();
    let new = wait_for("a new token in the Secret", || {
        secret_token(&node).filter(|t| *t != old)
    });
    let rotated = Instant::now();
    wait_for("the new token on the node", || {
        (node_token(&node) == new).then_some(())
    });
    println!(
        "the new token reached the node {:.1}s after the token controller wrote it",
        rotated.elapsed().as_secs_f64()
    );
    wait_for("the old token refused", || {
        (!token_accepted(&node, &old)).then_some(())
    });
    assert!(token_accepted(&node, &new));
    a_new_pod_attaches(&node, "after-rotation");

    // Deleting the DaemonSet removes nothing from the node (Multus #1527).
    node.kubectl_files(&["delete", "--wait=true"], &["04-plexus-daemonset.yaml"])
        .unwrap();
    wait_for("the DaemonSet's pod gone", || {
        node.daemonset_pods().unwrap().is_empty().then_some(())
    });
    assert!(conflist.exists(), "the conflist stays");
    assert_eq!(node_token(&node), new, "the token stays");
    assert!(
        node.agent_processes().unwrap().is_empty(),
        "plexusd stopped"
    );
    assert!(
        !socket.exists(),
        "plexusd removed its socket when it stopped"
    );
    a_new_pod_attaches(&node, "after-removal");

    // Everything deleted: the pods first (their networks are detached by plexus), then the
    // rest; Plexus's files on the node are removed by hand, as README.md says.
    node.delete_all_pods().unwrap();
    node.wait_no_sandboxes(Duration::from_secs(150)).unwrap();
    assert_eq!(
        node.ipam_allocations(),
        Default::default(),
        "allocations left"
    );
    assert_eq!(
        node::files_under(&node.cni_dir()),
        Vec::<String>::new(),
        "cache left"
    );
    assert_eq!(node.primary_leases(), Vec::<String>::new(), "leases left");
    node.kubectl_files(
        &[
            "delete",
            "--ignore-not-found",
            "--wait=true",
            "--timeout=120s",
        ],
        &[
            "pods/example-default-network.yaml",
            "pods/example-nads.yaml",
            "02-plexus-token.yaml",
            "01-rbac.yaml",
            "03-crds.yaml",
        ],
    )
    .unwrap();
    for kind in [
        "namespace/plexus-system",
        "clusterrole/plexus",
        "clusterrolebinding/plexus",
        "crd/ipamblocks.ipam.plexus.cni.dev",
        "crd/network-attachment-definitions.k8s.cni.cncf.io",
    ] {
        let answer = node.kubectl(&["get", kind]);
        assert!(
            answer
                .as_ref()
                .is_err_and(|e| e.to_string().contains("NotFound")),
            "{kind} left: {answer:?}"
        );
    }
    std::fs::remove_file(&conflist).unwrap();
    std::fs::remove_dir_all(node.conf_dir().join("plexus.d")).unwrap();
    assert_eq!(
        node::files_under(&node.conf_dir()),
        [node
            .conf_dir()
            .join("10-flannel.conflist")
            .display()
            .to_string()]
    );
    node.stop().unwrap();
}
