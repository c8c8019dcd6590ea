//! Hot-plug: when the `k8s.v1.cni.cncf.io/networks` annotation of a running pod of this node
//! changes, attach the networks added and detach those removed, then rewrite the pod's
//! network-status with one PATCH. No container runtime is asked anything: Plexus's cache entry
//! of the pod holds its network namespace and every attachment's exact configuration, and the
//! work is done by `plexus::hotplug` through the same stages as ADD and DEL.
//!
//! The parts: `watch.rs` watches the node's pods and feeds the [`Reconciler`]
//! (`reconciler.rs`), which plans, attaches, detaches and writes the status, and reports refusals
//! and failures through a [`WarningSink`] (`warnings.rs`).
//!
//! Hot-plug runs when `plexusd` is given Plexus's CNI configuration file (`--plexus-config`). It
//! is off for the node with `--hotplug false` or the configuration key `"hotplug": false`, and
//! off for one pod with the annotation `plexus.cni.dev/hotplug: "false"`.

mod reconciler;
mod warnings;
mod watch;

use std::path::Path;
use std::sync::Arc;

use plexus::config::PlexusConfig;
use plexus::hotplug::HotPlug;
use plexus::k8s;
use plexus_cni::CniError;

pub use reconciler::{Reconciler, HOTPLUG_ANNOTATION};
pub use warnings::{EventWarnings, PodKey, WarningSink};
pub use watch::watch_pods;

/// Runs hot-plug for node `node` with Plexus's configuration file `plexus_config`, until the
/// watch ends; logs why it does not run (no Kubernetes in the configuration, turned off).
pub async fn run(plexus_config: &Path, node: &str) {
    match start(plexus_config, node).await {
        Ok(Some((client, reconciler))) => watch_pods(client, node, reconciler).await,
        Ok(None) => {}
        Err(e) => tracing::error!("hot-plug does not run: {}", e.msg),
    }
}

/// The client and the reconciler, or `None` when hot-plug is off in the configuration.
async fn start(
    plexus_config: &Path,
    node: &str,
) -> Result<Option<(kube::Client, Reconciler)>, CniError> {
    plexus::k8s::client::install_crypto_provider();
    let config = PlexusConfig::from_file(plexus_config)?;
    if !config.hotplug {
        tracing::info!(
            "hot-plug is off (\"hotplug\": false in {})",
            plexus_config.display()
        );
        return Ok(None);
    }
    let Some(api) = k8s::connect(&config).await? else {
        tracing::info!(
            "hot-plug is off: {} names no Kubernetes",
            plexus_config.display()
        );
        return Ok(None);
    };
    let client = api.client().clone();
    let sink = Arc::new(EventWarnings::new(client.clone(), node));
    let reconciler = Reconciler::start(HotPlug::new(config, api)?, sink);
    tracing::info!("hot-plug watching the pods of node {node}");
    Ok(Some((client, reconciler)))
}
