//! The node's kubelet: its flags, starting it until the node is Ready, restarting and stopping
//! it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::sysctls::Sysctls;
use super::{KubeNode, Result, NODE_IP, NODE_NAME, POLL, READY_TIMEOUT};

/// The kubelet's flags: a remote runtime (containerd), cgroupfs with no QoS cgroups and no
/// node allocatable enforcement, the pods' cgroups under `cgroup_root`, no iptables chains,
/// no swap check, no eviction or image GC, listening on [`NODE_IP`] in the node's network
/// namespace only (`port`) with no read-only or healthz port and every request allowed
/// (nothing but the API server reaches it there), and every directory it lets one choose under
/// `root`.
pub fn kubelet_flags(
    root: &Path,
    kubeconfig: &Path,
    containerd_socket: &Path,
    port: u16,
    cgroup_root: &str,
) -> Vec<String> {
    let p = |name: &str| root.join(name).display().to_string();
    vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        "--container-runtime=remote".into(),
        format!(
            "--container-runtime-endpoint=unix://{}",
            containerd_socket.display()
        ),
        "--cgroup-driver=cgroupfs".into(),
        "--cgroups-per-qos=false".into(),
        "--enforce-node-allocatable=".into(),
        format!("--cgroup-root={cgroup_root}"),
        "--fail-swap-on=false".into(),
        "--make-iptables-util-chains=false".into(),
        format!("--address={NODE_IP}"),
        format!("--port={port}"),
        "--read-only-port=0".into(),
        "--healthz-port=0".into(),
        // The API server calls the kubelet (exec) with no credentials; the kubelet 1.20 refuses
        // to start with no way to authenticate at all. It listens on the node's loopback only.
        "--anonymous-auth=true".into(),
        "--authentication-token-webhook=false".into(),
        "--authorization-mode=AlwaysAllow".into(),
        // The device manager's socket is at a fixed host path (/var/lib/kubelet/device-plugins).
        "--feature-gates=DevicePlugins=false".into(),
        "--image-gc-high-threshold=100".into(),
        "--eviction-hard=".into(),
        format!("--hostname-override={NODE_NAME}"),
        // The node's status is written only when it changes (there is a Lease for the
        // heartbeat), so checking every second costs nothing and shows Ready ~10 s sooner.
        "--node-status-update-frequency=1s".into(),
        // Running pods are synced (and their Secret volumes refreshed) every 10 s, not every
        // minute: a rotated token reaches the pods sooner.
        "--sync-frequency=10s".into(),
        // Not 127.0.0.1: the kubelet refuses a loopback node IP and then reports no address.
        format!("--node-ip={NODE_IP}"),
        format!("--root-dir={}", p("kubelet")),
        format!("--cert-dir={}", p("kubelet-pki")),
        format!("--volume-plugin-dir={}", p("volume-plugins")),
        "--v=2".into(),
    ]
}

impl KubeNode {
    /// The kubelet's command line flags ([`kubelet_flags`] for this node).
    pub fn kubelet_flags(&self) -> Vec<String> {
        kubelet_flags(
            self.root(),
            &self.cluster().kubeconfig,
            &self.containerd.as_ref().expect("containerd runs").socket(),
            self.kubelet_port,
            &self.cgroup_root(),
        )
    }

    /// Starts the kubelet and waits until the node is Ready; then writes back the kernel
    /// settings it changed.
    pub(super) fn start_kubelet(&mut self) -> Result {
        let flags = self.kubelet_flags();
        std::fs::create_dir_all(self.root().join("kubelet"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.kubelet_log())?;
        let kubelet = self.binaries.kubelet.clone();
        let child = self.thread.run(move || {
            let mut cmd = Command::new(kubelet);
            cmd.args(&flags)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            super::thread::spawn_tied_to_thread(&mut cmd)
        })?;
        self.kubelet = Some(child);
        let started = Instant::now();
        // The kubelet changes the kernel settings once its runtime is up, before it reports the
        // node Ready; a node still Ready from an earlier kubelet proves nothing, so wait for the
        // settings too (unless they were the kubelet's already), and for its port.
        let address = format!("{NODE_IP}:{}", self.kubelet_port);
        let mut changed = self.sysctls.as_kubelet_sets();
        let mut listening = false;
        loop {
            changed = changed || Sysctls::read().as_kubelet_sets();
            if !listening {
                let address = address.clone();
                listening = self
                    .thread
                    .run(move || std::net::TcpStream::connect(address).is_ok());
            }
            let ready = self
                .kubectl(&[
                    "get",
                    "node",
                    NODE_NAME,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ])
                .unwrap_or_default();
            if changed && listening && ready == "True" {
                break;
            }
            if let Some(status) = self
                .kubelet
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!("the kubelet exited ({status})").into());
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(format!("node {NODE_NAME} not Ready after {READY_TIMEOUT:?}").into());
            }
            std::thread::sleep(POLL);
        }
        let written = self.sysctls.restore()?;
        eprintln!(
            "kubelet node: Ready {:.1}s after the kubelet started; kernel settings written back: {}",
            started.elapsed().as_secs_f64(),
            if written.is_empty() {
                "none".to_string()
            } else {
                written.join(", ")
            }
        );
        Ok(())
    }

    /// Stops the kubelet (SIGTERM, as systemd would) and starts it again with the same flags;
    /// returns once the node is Ready again.
    pub fn restart_kubelet(&mut self) -> Result {
        self.stop_kubelet();
        self.start_kubelet()
    }

    pub(super) fn stop_kubelet(&mut self) {
        if let Some(mut child) = self.kubelet.take() {
            crate::terminate(&mut child, Duration::from_secs(10));
        }
    }

    /// The kubelet's log.
    pub fn kubelet_log(&self) -> PathBuf {
        self.root().join("kubelet.log")
    }

    pub(super) fn kubelet_log_tail(&self) -> String {
        self.root
            .as_ref()
            .map(|_| crate::cluster::tail(&self.kubelet_log()))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_flags_keep_to_the_root() {
        let flags = kubelet_flags(
            Path::new("/tmp/n"),
            Path::new("/tmp/c/kubeconfig"),
            Path::new("/tmp/d/containerd.sock"),
            10250,
            "/pxnode-x",
        );
        assert!(flags.contains(&"--make-iptables-util-chains=false".to_string()));
        assert!(flags.contains(&"--root-dir=/tmp/n/kubelet".to_string()));
        assert!(flags.contains(&"--cgroup-root=/pxnode-x".to_string()));
        assert!(flags
            .contains(&"--container-runtime-endpoint=unix:///tmp/d/containerd.sock".to_string()));
    }
}
