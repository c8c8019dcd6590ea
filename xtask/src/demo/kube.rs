//! `cargo xtask demo --kube`: Plexus on a real Kubernetes node, installed as a K3s user
//! installs it.
//!
//! Plexus's image is built ([`crate::image`]) and a node of [`plexus_tests::node`] starts
//! ([`Install::DaemonSet`]): etcd and the API server, the controller-manager and the scheduler,
//! containerd with the image imported, and a kubelet registered as a node, with K3s's paths and
//! a bridge network standing in for Flannel. The demo applies `examples/k3s/` unchanged with
//! `kubectl apply`: the RBAC, the token, the CRDs and the DaemonSet, whose init container
//! installs Plexus (its log is shown); then `pods/example-nads.yaml` and `pods/example-pod.yaml`. It
//! waits until the scheduler has placed and the kubelet runs both pods, and prints `kubectl get pods -o wide`, each pod's network-status
//! (`kubectl get pod -o jsonpath`), its interfaces (`kubectl exec … ip -o addr`) and a ping
//! from one pod to the other on `net1`. The DaemonSet's `plexusd` container runs the node agent:
//! the demo shows its counters (`Ping`) and its log, its Prometheus metrics when it serves them,
//! and the pods' Events; it hot-plugs a network into a running pod and removes it again
//! (`kubectl annotate`), showing the network-status and the interfaces each time. Then it
//! deletes the pods, shows that plexus-ipam's
//! allocations and Plexus's cache are empty, deletes the rest, and stops the node, which checks
//! that nothing is left on the machine (links, mounts, cgroups, kernel settings).

use std::time::Instant;

use plexus_tests::node::{self, Install, KubeNode, INSTALL_FILES, NAMESPACE, SYSTEM_NAMESPACE};
use serde_json::Value;

use crate::cmd::{self, Result};
use crate::packages::ensure_debian_packages;

/// What the node needs besides the Kubernetes binaries.
const NODE_PACKAGES: &[(&str, &str)] = &[
    ("containerd", "/usr/bin/containerd"),
    ("runc", "/usr/sbin/runc"),
    ("busybox-static", "/bin/busybox"),
];
/// The example pods, in `pods/example-pod.yaml`.
const PODS: [&str; 2] = ["plexus-demo-short", "plexus-demo-json"];

/// Runs the demo; fails if a pod does not run, the ping fails or anything is left.
pub(super) fn run() -> Result {
    ensure_debian_packages(NODE_PACKAGES)?;
    let binaries = node::binaries().map_err(|e| e as cmd::Error)?;
    let release = crate::binaries::build_release()?;
    crate::binaries::check(&release)?;
    let image = crate::image::build(&release)?;
    crate::image::print_built(&image);
    // The node imports the archive named by this variable.
    std::env::set_var(node::image::ARCHIVE_ENV, &image.archive);
    cmd::step(
        "a Kubernetes node: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, \
         containerd (Plexus's image imported), kubelet",
    );
    let node = KubeNode::start_with(&binaries, Install::DaemonSet).map_err(|e| e as cmd::Error)?;
    println!(
        "node {} ready after {:.1}s; its root (K3s's directories): {}",
        node::NODE_NAME,
        node.startup_time().as_secs_f64(),
        node.root().display()
    );
    println!("kubelet flags: {}", node.kubelet_flags().join(" "));
    let outcome = install(&node)
        .and_then(|()| show_pods(&node))
        .and_then(|()| show_agent(&node))
        .and_then(|()| show_hotplug(&node));
    cmd::step("teardown: kubectl delete pods, then stopping the node");
    println!("$ kubectl delete pods --all -n {NAMESPACE} --grace-period=1 --wait=true");
    let deleted = node.delete_all_pods().map_err(|e| e as cmd::Error);
    if deleted.is_ok() {
        print_leftovers(&node)?;
    }
    let mut files: Vec<&str> = vec!["pods/example-nads.yaml"];
    files.extend(INSTALL_FILES.iter().rev());
    let deleted = deleted.and_then(|_| {
        node.kubectl_files(
            &[
                "delete",
                "--ignore-not-found",
                "--wait=true",
                "--timeout=120s",
            ],
            &files,
        )
        .map_err(|e| e as cmd::Error)
    });
    let stopped = node.stop().map_err(|e| e as cmd::Error);
    if stopped.is_ok() {
        println!(
            "stopped the kubelet, containerd, the controllers, the API server and etcd; removed \
             the node's namespace, mounts, cgroups and files; kernel settings as before"
        );
    }
    outcome.and(deleted.map(drop)).and(stopped)
}

/// Applies the install files and shows what the DaemonSet's init container did.
fn install(node: &KubeNode) -> Result {
    cmd::step(&format!(
        "kubectl apply -f examples/k3s/   # {}",
        INSTALL_FILES.join(", ")
    ));
    let (written, running) = node.install_with_daemonset().map_err(|e| e as cmd::Error)?;
    println!(
        "00-plexus.conflist written {:.1}s after kubectl apply; the DaemonSet's pod Running after {:.1}s",
        written.as_secs_f64(),
        running.as_secs_f64()
    );
    cmd::step(&format!(
        "kubectl logs -n {SYSTEM_NAMESPACE} ds/plexus -c install"
    ));
    print!(
        "{}",
        kubectl(
            node,
            &["logs", "-n", SYSTEM_NAMESPACE, "ds/plexus", "-c", "install"]
        )?
    );
    Ok(())
}

/// Applies the examples and shows the pods, their network-status and a ping on `net1`.
fn show_pods(node: &KubeNode) -> Result {
    cmd::step("kubectl apply -f examples/k3s/pods/example-nads.yaml -f examples/k3s/pods/example-pod.yaml");
    let started = Instant::now();
    node.kubectl_files(
        &["apply"],
        &["pods/example-nads.yaml", "pods/example-pod.yaml"],
    )
    .map_err(|e| e as cmd::Error)?;
    let names = PODS.map(String::from);
    node.wait_running(&names, std::time::Duration::from_secs(120))
        .map_err(|e| e as cmd::Error)?;
    println!(
        "both pods Running {:.1}s after kubectl apply",
        started.elapsed().as_secs_f64()
    );

    cmd::step("kubectl get pods -A -o wide");
    print!("{}", kubectl(node, &["get", "pods", "-A", "-o", "wide"])?);
    let mut net1 = Vec::new();
    for pod in PODS {
        cmd::step(&format!("pod {pod}"));
        let status = Value::from(node.network_status(pod));
        println!(
            "network-status:\n{}",
            serde_json::to_string_pretty(&status)?
        );
        print_addresses(node, pod)?;
        let address = status
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["interface"] == "net1")
            .and_then(|e| e["ips"][0].as_str())
            .ok_or_else(|| format!("{pod} has no net1 in its network-status"))?;
        net1.push(address.to_string());
    }
    cmd::step(&format!(
        "ping from {} to {} on net1 (macvlan-conf)",
        PODS[0], PODS[1]
    ));
    let ping = [
        "exec", PODS[0], "-n", NAMESPACE, "--", "ping", "-c", "2", "-W", "2",
    ];
    let mut args = ping.to_vec();
    args.push(&net1[1]);
    println!("$ kubectl {}", args.join(" "));
    print!("{}", kubectl(node, &args)?);
    Ok(())
}

/// The networks annotation of the first example pod, as `pods/example-pod.yaml` has it.
const SHORT_NETWORKS: &str = "macvlan-conf, bridge-conf";

/// Adds a network to the first example pod by editing its networks annotation, then removes
/// it, showing the network-status and interfaces each time (hot-plug by `plexusd`). Skipped,
/// saying so, when the DaemonSet runs no `plexusd`.
fn show_hotplug(node: &KubeNode) -> Result {
    let containers = kubectl(
        node,
        &[
            "get",
            "ds/plexus",
            "-n",
            SYSTEM_NAMESPACE,
            "-o",
            "jsonpath={.spec.template.spec.containers[*].name}",
        ],
    )?;
    if !containers.split_whitespace().any(|c| c == "plexusd") {
        cmd::step("hot-plug: skipped, the DaemonSet runs no plexusd");
        return Ok(());
    }
    let pod = PODS[0];
    let added = format!("{SHORT_NETWORKS}, bridge-conf@hot1");
    for (networks, want_hot1) in [(added.as_str(), true), (SHORT_NETWORKS, false)] {
        let annotation = format!("k8s.v1.cni.cncf.io/networks={networks}");
        cmd::step(&format!(
            "hot-plug: kubectl annotate pod {pod} --overwrite '{annotation}'"
        ));
        let started = Instant::now();
        kubectl(
            node,
            &[
                "annotate",
                "pod",
                pod,
                "-n",
                NAMESPACE,
                "--overwrite",
                &annotation,
            ],
        )?;
        let status = loop {
            let status = node.network_status(pod);
            let has_hot1 = status.iter().any(|e| e["interface"] == "hot1");
            if has_hot1 == want_hot1 {
                break status;
            }
            if started.elapsed() > std::time::Duration::from_secs(20) {
                return Err(format!("{pod}: the network-status did not follow the edit").into());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        println!(
            "network-status updated {:.0} ms after kubectl annotate:\n{}",
            started.elapsed().as_secs_f64() * 1e3,
            serde_json::to_string_pretty(&Value::from(status))?
        );
        print_addresses(node, pod)?;
    }
    Ok(())
}

/// Shows the node agent: its counters, its log, its metrics (when served) and the pods' Events.
fn show_agent(node: &KubeNode) -> Result {
    cmd::step(&format!(
        "the node agent (plexusd) on {}",
        node.agent_socket().display()
    ));
    let counters = plexus_tests::agent::ping(&node.agent_socket())
        .ok_or("the DaemonSet's plexusd does not answer Ping")?;
    println!(
        "Ping: plexusd {} on node {}: {} block writes carried {} allocations and releases \
         ({} lost to other writers)",
        counters.version,
        counters.node,
        counters.block_writes,
        counters.block_changes,
        counters.block_conflicts
    );
    if counters.block_changes == 0 {
        return Err("the pods' plexus-ipam addresses did not go through plexusd".into());
    }
    println!("$ kubectl logs -n {SYSTEM_NAMESPACE} ds/plexus -c plexusd");
    print!(
        "{}",
        kubectl(
            node,
            &["logs", "-n", SYSTEM_NAMESPACE, "ds/plexus", "-c", "plexusd"]
        )?
    );
    cmd::step(&format!(
        "plexusd's metrics: GET http://{}/metrics",
        node::AGENT_METRICS_ADDRESS
    ));
    match node.agent_metrics().map_err(|e| e as cmd::Error)? {
        Some(text) => {
            let samples: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("plexus") && !l.contains("_bucket{"))
                .collect();
            println!("{}", samples.join("\n"));
        }
        None => println!("not served (this plexusd has no metrics endpoint)"),
    }
    for pod in PODS {
        cmd::step(&format!("the Events of pod {pod}"));
        for event in node.events(pod).map_err(|e| e as cmd::Error)? {
            println!("{event}");
        }
    }
    Ok(())
}

/// Prints plexus-ipam's allocations and Plexus's cache entries; fails if any is left.
fn print_leftovers(node: &KubeNode) -> Result {
    let blocks = kubectl(
        node,
        &["get", "ipamblocks", "-n", "plexus-system", "-o", "json"],
    )?;
    let blocks: Value = serde_json::from_str(&blocks)?;
    let allocations: Vec<String> = blocks["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|b| {
            b["spec"]["allocations"]
                .as_object()
                .map(|a| a.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
        })
        .collect();
    println!(
        "plexus-ipam allocations: {}",
        super::list_or_none(&allocations)
    );
    let cache = super::files_under(&node.cni_dir())?;
    println!("Plexus cache entries: {}", super::list_or_none(&cache));
    if allocations.is_empty() && cache.is_empty() {
        Ok(())
    } else {
        Err("allocations or cache entries left after the pods were deleted".into())
    }
}

/// Prints `kubectl exec <pod> -- ip -o addr`: the pod's interfaces and addresses.
fn print_addresses(node: &KubeNode, pod: &str) -> Result {
    println!("$ kubectl exec {pod} -- ip -o addr");
    let args = ["exec", pod, "-n", NAMESPACE, "--", "ip", "-o", "addr"];
    print!("{}", kubectl(node, &args)?);
    Ok(())
}

/// `kubectl` inside the node, with the error boxed for xtask.
fn kubectl(node: &KubeNode, args: &[&str]) -> Result<String> {
    node.kubectl(args).map_err(|e| e as cmd::Error)
}
