//! The node agent `plexusd` on the node: started by the harness ([`KubeNode::start_agent`], the
//! test of a node with and without the agent) or by the DaemonSet's `plexusd` container, both
//! listening on the node's `/run/plexus/plexusd.sock`, the socket `plexusctl install` writes
//! into the conflist (`agentSocket`) and `plexus-ipam` asks by default.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use plexus_agent_api::DEFAULT_SOCKET;

use super::{mounts, KubeNode, Result, NODE_NAME};
use crate::agent::Agent;

/// Where the node agent serves its Prometheus metrics, on the node's loopback.
pub const AGENT_METRICS_ADDRESS: &str = "127.0.0.1:9883";

impl KubeNode {
    /// The node agent's Prometheus text (`GET /metrics` on [`AGENT_METRICS_ADDRESS`] in the
    /// node's network namespace); `None` when nothing listens there.
    pub fn agent_metrics(&self) -> Result<Option<String>> {
        self.thread.run(|| -> Result<Option<String>> {
            let address = AGENT_METRICS_ADDRESS.parse()?;
            let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_secs(1))
            else {
                return Ok(None);
            };
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(
                stream,
                "GET /metrics HTTP/1.0\r\nHost: {AGENT_METRICS_ADDRESS}\r\n\r\n"
            )?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer)?;
            let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
            if !head.starts_with("HTTP/1.") || !head.contains(" 200 ") {
                let status = head.lines().next().unwrap_or_default();
                return Err(format!("GET /metrics: {status}").into());
            }
            Ok(Some(body.to_string()))
        })
    }

    /// The node's agent socket (`/run/plexus/plexusd.sock` on the node), as the host sees it.
    pub fn agent_socket(&self) -> PathBuf {
        mounts::under_root(self.root(), DEFAULT_SOCKET)
    }

    /// Starts `plexusd` (the tests' build) on the node: in its network and mount namespaces,
    /// on the node's default socket, with the node's IPAM hints; waits until it answers. Dropping
    /// it kills it (SIGKILL), leaving its socket file behind.
    pub fn start_agent(&self) -> Agent {
        let log = self.root().join("plexusd.log");
        let mut command = Agent::command(
            &crate::plexus_bin_dir().join("plexusd"),
            NODE_NAME,
            std::path::Path::new(DEFAULT_SOCKET),
            &log,
        );
        let child = self
            .thread
            .run(move || command.spawn())
            .unwrap_or_else(|e| panic!("start plexusd on the node: {e}"));
        Agent::adopt(child, &self.agent_socket(), &log)
    }

    /// The process ids of the `plexusd` processes serving the node's default socket (those of
    /// the DaemonSet's container, found by their network namespace: the node's).
    pub fn agent_processes(&self) -> Result<Vec<i32>> {
        let node_netns = std::fs::metadata(self.netns())?.ino();
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc")?.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let proc = entry.path();
            let is_agent = std::fs::read_link(proc.join("exe"))
                .is_ok_and(|exe| exe.file_name().is_some_and(|n| n == "plexusd"));
            let cmdline = std::fs::read(proc.join("cmdline")).unwrap_or_default();
            let probing = cmdline.windows(7).any(|w| w == b"--probe");
            let in_node =
                std::fs::metadata(proc.join("ns/net")).is_ok_and(|m| m.ino() == node_netns);
            if is_agent && in_node && !probing {
                pids.push(pid);
            }
        }
        Ok(pids)
    }
}
