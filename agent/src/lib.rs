//! `plexusd`, Plexus's node agent. Phase 1 serves `plexus-ipam`'s Kubernetes allocations.
//!
//! # What it keeps warm
//!
//! One Kubernetes client per kubeconfig (one HTTP/2 connection, the TLS handshake made once),
//! the stores over it ([`stores`]), and, per block it wrote, the block as last written (a
//! starting point for the next write, never trusted for an answer without a write or a read).
//! It keeps no other state: the blocks, Leases and the node's hint files are exactly those a
//! plain `plexus-ipam` uses, so a restart loses nothing but warmth.
//!
//! # Group commit
//!
//! Every block write goes through one [`GroupCommit`]: a request queues on its block; whoever
//! gets the block's write turn takes all queued requests, applies them to the block and writes
//! it once, on the `resourceVersion` the changes were based on. Requests that arrive while a
//! write is in flight ride on the next one, so under load a write carries as many allocations
//! as arrived during one round trip; nothing waits on a timer, and a request is answered only
//! after the write holding its change succeeded. A 409 reads the block again and re-places
//! every queued request. The objects and the compare-and-swap are the single writer's, so the
//! proof of uniqueness in `plexus_ipam::backends::kubernetes` holds, and the agent and plain
//! `plexus-ipam` processes on one node stay correct together (they only cost each other
//! re-reads). Leases are renewed lazily, as `plexus-ipam` does. When a node's blocks are full,
//! one request per pool lists the network and claims the next block while the others wait,
//! then retry the node's blocks together (their writes grouped again).
//!
//! # Fallback
//!
//! `plexus-ipam` asks the agent first (`agentSocket`, default [`DEFAULT_SOCKET`]) for ADD and
//! DEL of the Kubernetes store, unless the ADD is bound to an `IPAMClaim`. When the socket is
//! missing, refuses, does not connect within `agentConnectTimeoutMs` (default 200) or the call
//! breaks off, it does the work itself, exactly as without an agent, and logs that it fell
//! back. An answer of the agent, result or CNI error, is final. DEL never needs the agent.
//!
//! # Phase 2
//!
//! Still to come (issue 13): serving `plexus` (the pod's plan: annotations, NADs and device IDs
//! from reflectors of the NADs and of the node's pods, a pod missing or of another UID read
//! live; the network-status PATCH handed to the agent), Events (`AddedInterface`, Warnings,
//! rate-limited, after the reply), Prometheus metrics (calls, API requests, batch sizes, pool
//! usage, cache age, fallbacks), housekeeping (the IPAM GC of the node on a schedule, cache
//! pruning), a snapshot so that a restart starts warm, and the DaemonSet container in
//! `examples/k3s` with the socket key written by `plexusctl install`.

#![warn(missing_docs)]

pub mod ipam;
pub mod probe;
pub mod socket;
pub mod stores;

use std::path::{Path, PathBuf};

use plexus_agent_api::proto::ipam_server::IpamServer;
pub use plexus_agent_api::DEFAULT_SOCKET;
#[cfg(doc)]
use plexus_ipam::backends::kubernetes::group::GroupCommit;
use tokio_stream::wrappers::UnixListenerStream;
use tracing::info;

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentdError {
    /// The socket could not be set up.
    #[error("cannot {what} {path}: {source}")]
    Socket {
        /// The socket.
        path: PathBuf,
        /// What failed.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// The server failed.
    #[error("serving failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Serves node `node` on the socket at `socket` until SIGTERM or SIGINT; removes the socket
/// on the way out.
pub async fn run(socket: &Path, node: &str) -> Result<(), AgentdError> {
    plexus_ipam::backends::kubernetes::client::install_crypto_provider();
    let listener = socket::listen(socket)?;
    info!(
        "plexusd {} serving node {node:?} on {}",
        env!("CARGO_PKG_VERSION"),
        socket.display()
    );
    let served = tonic::transport::Server::builder()
        .add_service(IpamServer::new(ipam::IpamService::new(node)))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), stopped())
        .await;
    let _ = std::fs::remove_file(socket);
    info!("plexusd stopped");
    Ok(served?)
}

/// Resolves on SIGTERM or SIGINT.
async fn stopped() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
