//! Everything Kubernetes of the meta-plugin: the pod annotations Multus defines, the pod and its
//! NetworkAttachmentDefinitions, capability arguments, default-route ownership and the
//! network-status annotation.
//!
//! Everything but [`client`], the fetching half of [`pod_networks`] and [`status::write`] is
//! pure (no network, no API client) so that it can be tested on its own; [`client`] fetches
//! pods and NADs and writes the status.

pub mod agent;
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

/// Whether Plexus is configured for a Kubernetes API server: `kubeconfig`, else the in-cluster
/// environment.
pub fn configured(config: &PlexusConfig) -> bool {
    config.kubeconfig.is_some() || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
}

/// The Kubernetes API client, built at its first use (with the node agent answering, a call
/// builds none).
#[derive(Debug)]
pub struct LazyApi<'a> {
    config: &'a PlexusConfig,
    api: tokio::sync::OnceCell<Option<KubeApi>>,
}

impl<'a> LazyApi<'a> {
    /// The client `config` names, not built yet.
    pub fn new(config: &'a PlexusConfig) -> LazyApi<'a> {
        LazyApi {
            config,
            api: tokio::sync::OnceCell::new(),
        }
    }

    /// The client `api`, already built (for a long-lived caller such as the node agent).
    pub fn with_client(config: &'a PlexusConfig, api: KubeApi) -> LazyApi<'a> {
        LazyApi {
            config,
            api: tokio::sync::OnceCell::new_with(Some(Some(api))),
        }
    }

    /// The client; `None` for a node without Kubernetes.
    pub async fn get(&self) -> Result<Option<&KubeApi>, CniError> {
        let api = self.api.get_or_try_init(|| connect(self.config)).await?;
        Ok(api.as_ref())
    }

    /// The client, which the caller knows is configured ([`configured`]).
    pub async fn require(&self) -> Result<&KubeApi, CniError> {
        self.get().await?.ok_or_else(|| {
            CniError::new(
                plexus_cni::ErrorCode::InvalidNetworkConfig,
                "no Kubernetes API server is configured (kubeconfig, or the in-cluster environment)",
            )
        })
    }
}

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
