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
//! # Serving `plexus`
//!
//! With a cluster to read (`KUBECONFIG`, else the in-cluster service account, else the
//! kubeconfig of `--plexus-config`), the agent watches the pods of its node and every
//! NetworkAttachmentDefinition ([`cache`]), seeded at start from the [`snapshot`] beside the
//! socket, and serves `plexus` the pod and the NADs it names ([`pods`]; a pod missing or of
//! another UID, and a NAD missing, read live), writes the network-status annotation for it (the
//! PATCH answered once done), and queues the pod's [`events`]. `plexus` falls back to doing it
//! all itself just as `plexus-ipam` does. The devices of a NAD's `resourceName` are still
//! looked up by `plexus` itself.
//!
//! # Hot-plug
//!
//! With `--plexus-config`, the same watch of the node's pods feeds [`hotplug`]: the agent
//! attaches and detaches the networks of a running pod when its networks annotation changes.
//!
//! # Metrics and housekeeping
//!
//! Prometheus text on a localhost port ([`metrics`], `--metrics-address`): calls, API requests,
//! group-commit batch sizes, pool usage, cache age, fallbacks. On a schedule
//! ([`housekeeping`]) the agent runs the IPAM GC of its node and prunes `plexus`'s cache
//! entries of containers that are gone.

#![warn(missing_docs)]

pub mod cache;
pub mod events;
pub mod hotplug;
pub mod housekeeping;
pub mod ipam;
pub mod metrics;
pub mod options;
pub mod pods;
pub mod probe;
pub mod snapshot;
pub mod socket;
pub mod stores;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use plexus_agent_api::proto::ipam_server::IpamServer;
use plexus_agent_api::proto::pods_server::PodsServer;
pub use plexus_agent_api::DEFAULT_SOCKET;
#[cfg(doc)]
use plexus_ipam::backends::kubernetes::group::GroupCommit;
use tokio_stream::wrappers::UnixListenerStream;

use crate::metrics::Metrics;
pub use crate::options::Options;
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
    /// The metrics port could not be bound.
    #[error("cannot serve the metrics on {0}: {1}")]
    Metrics(std::net::SocketAddr, std::io::Error),
    /// The server failed.
    #[error("serving failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Serves node `node` on the socket at `socket` until SIGTERM or SIGINT; removes the socket
/// on the way out. Serves the metrics and runs housekeeping as `options` say.
pub async fn run(socket: &Path, node: &str, options: &Options) -> Result<(), AgentdError> {
    plexus_ipam::backends::kubernetes::client::install_crypto_provider();
    let listener = socket::listen(socket)?;
    let metrics = Arc::new(Metrics::new(socket.to_path_buf()));
    Metrics::observe_api_calls(&metrics);
    let stores = Arc::new(stores::Stores::new());
    let batches = metrics.clone();
    stores
        .group()
        .observe_writes(Box::new(move |changes| batches.batch(changes)));
    if let Some(address) = options.metrics_address {
        let metrics = metrics.clone();
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| AgentdError::Metrics(address, e))?;
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(listener, metrics).await {
                tracing::error!("serving the metrics failed: {e}");
            }
        });
    }
    if let Some(interval) = options.housekeeping_interval {
        let housekeeping = housekeeping::Housekeeping {
            node: node.to_string(),
            stores: stores.clone(),
            metrics: metrics.clone(),
            cache_dir: options.cache_dir.clone(),
        };
        tokio::spawn(housekeeping.every(interval));
    }
    info!(
        "plexusd {} serving node {node:?} on {}",
        env!("CARGO_PKG_VERSION"),
        socket.display()
    );
    let pods = pods::PodsService::start(
        node,
        socket,
        options.plexus_config.as_deref(),
        options.hotplug,
        metrics.clone(),
    )
    .await;
    let served = tonic::transport::Server::builder()
        .add_service(IpamServer::new(
            ipam::IpamService::new(node).with(stores, metrics),
        ))
        .add_service(PodsServer::new(pods))
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
