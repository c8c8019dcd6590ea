//! What the agent keeps warm: one Kubernetes client per kubeconfig (one HTTP/2 connection to
//! its API server, its TLS session made once), and the stores over it, all writing through
//! the agent's one group committer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use plexus_ipam::backends::kube_options;
use plexus_ipam::backends::kubernetes::group::GroupCommit;
use plexus_ipam::backends::kubernetes::{KubeClient, KubeStore, DEFAULT_TIMEOUT};
use plexus_ipam::config::{Backend, IpamConfig};
use plexus_ipam::store::StoreError;
use tokio::sync::Mutex;

/// The warm clients and stores.
#[derive(Debug, Default)]
pub struct Stores {
    group: Arc<GroupCommit>,
    clients: Mutex<HashMap<PathBuf, KubeClient>>,
    stores: Mutex<HashMap<String, Arc<KubeStore>>>,
    /// The usable addresses of each network served, from its configuration's ranges.
    sizes: std::sync::Mutex<HashMap<String, u128>>,
}

impl Stores {
    /// No client yet; they are made at the first request that needs them.
    pub fn new() -> Stores {
        Stores::default()
    }

    /// The group committer every store writes through.
    pub fn group(&self) -> &GroupCommit {
        &self.group
    }

    /// The Kubernetes store `config` names (its kubeconfig, namespace, node and block sizes);
    /// `None` for another backend.
    pub async fn store(&self, config: &IpamConfig) -> Result<Option<Arc<KubeStore>>, StoreError> {
        let Backend::Kubernetes {
            kubeconfig,
            namespace,
        } = &config.backend
        else {
            return Ok(None);
        };
        let size = config.ranges.iter().map(|r| r.usable_count()).sum();
        self.sizes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(config.network_name.clone(), size);
        let options = kube_options(config);
        let key = format!("{}\n{namespace}\n{options:?}", kubeconfig.display());
        let mut stores = self.stores.lock().await;
        if let Some(store) = stores.get(&key) {
            return Ok(Some(store.clone()));
        }
        let client = self.client(kubeconfig).await?;
        let store = KubeStore::new(client, namespace, options).with_group(self.group.clone());
        let store = Arc::new(store);
        stores.insert(key, store.clone());
        Ok(Some(store))
    }

    /// Every store made so far.
    pub async fn warm(&self) -> Vec<Arc<KubeStore>> {
        self.stores.lock().await.values().cloned().collect()
    }

    /// The usable addresses of each network served so far.
    pub fn network_sizes(&self) -> HashMap<String, u128> {
        self.sizes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The client of the kubeconfig at `path`, made once.
    async fn client(&self, path: &Path) -> Result<KubeClient, StoreError> {
        let mut clients = self.clients.lock().await;
        if let Some(client) = clients.get(path) {
            return Ok(client.clone());
        }
        let client = KubeClient::from_kubeconfig(path, DEFAULT_TIMEOUT).await?;
        clients.insert(path.to_path_buf(), client.clone());
        Ok(client)
    }
}
