//! What a cluster runs besides the API server and the kubelet, for the DaemonSet install:
//! kube-controller-manager and kube-scheduler (built by `cargo xtask apiserver` from the same
//! Kubernetes 1.20.2 sources, cached like it), an API server that also serves the groups they
//! need, and a stand-in for kube-proxy for the one Service pods reach.

use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use plexus::links;

use super::thread::{spawn_tied_to_thread, NodeThread};
use super::{Binaries, Result};
use crate::cluster::LocalCluster;

/// The API groups the controllers and the scheduler need beyond
/// [`crate::cluster::API_GROUPS`]: DaemonSets and ControllerRevisions, and the
/// PodDisruptionBudgets the scheduler's preemption watches ([`LocalCluster::start_serving`]).
pub const EXTRA_API_GROUPS: &[&str] = &["apps/v1", "policy/v1beta1"];

/// The controllers kube-controller-manager runs: the DaemonSet's, the garbage collector (it
/// deletes a DaemonSet's pods and revisions), the namespace controller (it empties a deleted
/// namespace), the node lifecycle controller (it lifts the `node.kubernetes.io/not-ready`
/// taint the kubelet registers the node with, once it is Ready) and the token controller (it
/// fills `kubernetes.io/service-account-token` Secrets).
pub const CONTROLLERS: &str =
    "daemonset,garbagecollector,namespace,nodelifecycle,serviceaccount-token";

/// The `kubernetes` Service's ClusterIP: the first address of the API server's
/// `--service-cluster-ip-range` (10.96.0.0/16). The kubelet gives pods its address as
/// `KUBERNETES_SERVICE_HOST`.
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
/// The `kubernetes` Service's port.
pub const KUBERNETES_SERVICE_PORT: u16 = 443;

/// kube-controller-manager's flags: [`CONTROLLERS`], the admin kubeconfig, no leader election,
/// no serving port, the cluster's service-account signing key and its CA for the tokens.
pub fn controller_manager_flags(cluster: &LocalCluster) -> Vec<String> {
    let dir = cluster.dir();
    vec![
        format!("--kubeconfig={}", cluster.kubeconfig.display()),
        format!("--controllers={CONTROLLERS}"),
        "--leader-elect=false".into(),
        "--port=0".into(),
        "--secure-port=0".into(),
        format!(
            "--service-account-private-key-file={}",
            dir.join("sa.key").display()
        ),
        format!(
            "--root-ca-file={}",
            dir.join("certs/apiserver.crt").display()
        ),
        "--v=2".into(),
    ]
}

/// kube-scheduler's flags: the admin kubeconfig, no leader election, no serving port.
pub fn scheduler_flags(cluster: &LocalCluster) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", cluster.kubeconfig.display()),
        "--leader-elect=false".into(),
        "--port=0".into(),
        "--secure-port=0".into(),
        "--v=2".into(),
    ]
}

/// The running controller-manager, scheduler and Service proxy.
pub struct ControlPlane {
    processes: Vec<(&'static str, Child)>,
    proxy: Option<ServiceProxy>,
}

impl ControlPlane {
    /// Starts them on the node thread (they live in its namespaces); their logs are
    /// `<name>.log` in `log_dir`.
    pub fn start(
        thread: &NodeThread,
        binaries: &Binaries,
        cluster: &LocalCluster,
        log_dir: &Path,
    ) -> Result<Self> {
        let api_port: u16 = cluster
            .url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("no port in {}", cluster.url))?;
        let processes = [
            (
                "kube-controller-manager",
                binaries.controller_manager.clone(),
                controller_manager_flags(cluster),
            ),
            (
                "kube-scheduler",
                binaries.scheduler.clone(),
                scheduler_flags(cluster),
            ),
        ];
        let log_dir = log_dir.to_path_buf();
        thread.run(move || {
            let mut plane = ControlPlane {
                processes: Vec::new(),
                proxy: Some(ServiceProxy::start(SocketAddr::from((
                    Ipv4Addr::LOCALHOST,
                    api_port,
                )))?),
            };
            for (name, binary, flags) in processes {
                let log = std::fs::File::create(log_dir.join(format!("{name}.log")))?;
                let mut cmd = Command::new(binary);
                cmd.args(&flags)
                    .stdin(Stdio::null())
                    .stdout(log.try_clone()?)
                    .stderr(log);
                let child = spawn_tied_to_thread(&mut cmd)
                    .map_err(|e| format!("cannot start {name}: {e}"))?;
                plane.processes.push((name, child));
            }
            Ok(plane)
        })
    }

    /// Stops them.
    pub fn stop(&mut self) {
        for (_, child) in &mut self.processes {
            crate::terminate(child, Duration::from_secs(5));
        }
        self.processes.clear();
        if let Some(proxy) = self.proxy.take() {
            proxy.stop();
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The node's stand-in for kube-proxy, for the `kubernetes` Service only: it listens on
/// [`KUBERNETES_SERVICE_IP`]:[`KUBERNETES_SERVICE_PORT`] (the address added to the node's
/// loopback) and relays every connection to the API server. The API server's certificate names
/// that address, so TLS is verified end to end.
struct ServiceProxy {
    stopping: Arc<AtomicBool>,
    address: SocketAddr,
    thread: JoinHandle<()>,
}

impl ServiceProxy {
    /// Starts relaying to `upstream`; must run in the node's network namespace (threads it
    /// starts stay there).
    fn start(upstream: SocketAddr) -> Result<ServiceProxy> {
        links::add_address(None, "lo", format!("{KUBERNETES_SERVICE_IP}/32").parse()?)?;
        let address = SocketAddr::from((KUBERNETES_SERVICE_IP, KUBERNETES_SERVICE_PORT));
        let listener = TcpListener::bind(address)?;
        let stopping = Arc::new(AtomicBool::new(false));
        let flag = stopping.clone();
        let thread = std::thread::Builder::new()
            .name("service-proxy".into())
            .spawn(move || {
                for client in listener.incoming() {
                    if flag.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(client) = client {
                        let _ = relay(client, upstream);
                    }
                }
            })?;
        Ok(ServiceProxy {
            stopping,
            address,
            thread,
        })
    }

    /// Stops accepting (connections being relayed end with the API server).
    fn stop(self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wakes the accepting thread; it is in the node's namespace, so connect from there.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
        let _ = self.thread.join();
    }
}

/// Copies `client`'s bytes to a new connection to `upstream` and back, on two threads.
fn relay(client: TcpStream, upstream: SocketAddr) -> io::Result<()> {
    let server = TcpStream::connect(upstream)?;
    for (mut from, mut to) in [(client.try_clone()?, server.try_clone()?), (server, client)] {
        std::thread::spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        });
    }
    Ok(())
}
