//! Hot-plug: when the `k8s.v1.cni.cncf.io/networks` annotation of a running pod of this node
//! changes, attach the networks added and detach those removed, then rewrite the pod's
//! network-status with one PATCH. No container runtime is asked anything: Plexus's cache entry
//! of the pod holds its network namespace and every attachment's exact configuration, and the
//! work is done by `plexus::hotplug` through the same stages as ADD and DEL.
//!
//! The parts: the agent's watch of its node's pods (the one that keeps its cache) feeds the
//! [`Reconciler`] through [`feed`] (`watch.rs`); the reconciler (`reconciler.rs`) plans,
//! attaches, detaches and writes the status, and reports refusals and failures through a
//! [`WarningSink`] (`warnings.rs`), Warning Events queued on the agent's [`Events`].
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
use plexus::k8s::client::KubeApi;
use plexus_cni::CniError;

use crate::events::Events;

pub use reconciler::{Reconciler, HOTPLUG_ANNOTATION};
pub use warnings::{EventWarnings, PodKey, WarningSink};
pub use watch::feed;

/// The reconciler of node `node`, hot-plugging with Plexus's configuration file `plexus_config`
/// and the agent's client `api`, its warnings queued on `events`; `None` (and logged why) when
/// hot-plug is off in the configuration or the file cannot be read.
pub fn start(plexus_config: &Path, api: KubeApi, events: Events, node: &str) -> Option<Reconciler> {
    match reconciler(plexus_config, api, events) {
        Ok(Some(reconciler)) => {
            tracing::info!("hot-plug watching the pods of node {node}");
            Some(reconciler)
        }
        Ok(None) => {
            tracing::info!(
                "hot-plug is off (\"hotplug\": false in {})",
                plexus_config.display()
            );
            None
        }
        Err(e) => {
            tracing::error!("hot-plug does not run: {}", e.msg);
            None
        }
    }
}

/// The reconciler, or `None` when hot-plug is off in the configuration.
fn reconciler(
    plexus_config: &Path,
    api: KubeApi,
    events: Events,
) -> Result<Option<Reconciler>, CniError> {
    let config = PlexusConfig::from_file(plexus_config)?;
    if !config.hotplug {
        return Ok(None);
    }
    let sink = Arc::new(EventWarnings::new(events));
    Ok(Some(Reconciler::start(HotPlug::new(config, api)?, sink)))
}
