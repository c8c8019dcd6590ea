//! What `run` is configured with besides the socket and the node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The agent's settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the metrics are served; `None`: not served.
    pub metrics_address: Option<SocketAddr>,
    /// How often housekeeping runs; `None`: never.
    pub housekeeping_interval: Option<Duration>,
    /// `plexus`'s attachment cache directory, pruned by housekeeping.
    pub cache_dir: PathBuf,
    /// Plexus's CNI configuration file: what hot-plug runs delegates with, and the kubeconfig
    /// the agent reads when it has no other.
    pub plexus_config: Option<PathBuf>,
    /// Whether running pods are hot-plugged (with `plexus_config`).
    pub hotplug: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            metrics_address: crate::metrics::DEFAULT_ADDRESS.parse().ok(),
            housekeeping_interval: Some(Duration::from_secs(
                crate::housekeeping::DEFAULT_INTERVAL_SECS,
            )),
            cache_dir: plexus::config::DEFAULT_CNI_DIR.into(),
            plexus_config: None,
            hotplug: true,
        }
    }
}
