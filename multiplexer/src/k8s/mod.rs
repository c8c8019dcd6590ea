//! Everything Kubernetes of the meta-plugin: the pod annotations Multus defines, the pod and its
//! NetworkAttachmentDefinitions, capability arguments, default-route ownership and the
//! network-status annotation.
//!
//! Everything but [`client`], the fetching half of [`pod_networks`] and [`status::write`] is
//! pure (no network, no API client) so that it can be tested on its own; [`client`] fetches
//! pods and NADs and writes the status.

pub mod capability;
pub mod client;
pub mod default_route;
pub mod nad;
pub mod pod_networks;
pub mod selection;
pub mod status;

use plexus_cni::CniError;

use crate::config::PlexusConfig;
use client::KubeApi;

/// The Kubernetes API client when Plexus is configured for one: `kubeconfig`, else the
/// in-cluster environment; `None` for a node without Kubernetes (static delegates only).
pub async fn connect(config: &PlexusConfig) -> Result<Option<KubeApi>, CniError> {
    let timeout = config.api_timeout()?;
    let api = match &config.kubeconfig {
        Some(path) => KubeApi::from_kubeconfig(path, timeout).await,
        None if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => {
            KubeApi::in_cluster(timeout)
        }
        None => return Ok(None),
    };
    api.map(Some).map_err(CniError::from)
}
