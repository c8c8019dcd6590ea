//! The backend choice: [`AnyStore::open`] opens the store the configuration's `backend` names,
//! and [`AnyStore`] passes each [`Store`] call to it (one dispatch, [`each!`]).

use std::net::IpAddr;
use std::time::Duration;

use super::etcd::EtcdStore;
use super::kubernetes::{KubeOptions, KubeStore};
use super::local::LocalStore;
use crate::config::{Backend, IpamConfig};
use crate::store::{Allocation, Owner, Pool, PoolUsage, Store, StoreError};

/// How long one etcd request may take.
const ETCD_TIMEOUT: Duration = Duration::from_secs(10);

/// Any of the datastores.
#[derive(Debug)]
pub enum AnyStore {
    /// The embedded local store.
    Local(LocalStore),
    /// The Kubernetes API server (blocks with per-node Leases).
    Kubernetes(Box<KubeStore>),
    /// An etcd cluster.
    Etcd(EtcdStore),
}

/// Runs `$body` with `$s` bound to the store inside `$any`, whichever it is.
macro_rules! each {
    ($any:expr, $s:ident => $body:expr) => {
        match $any {
            AnyStore::Local($s) => $body,
            AnyStore::Kubernetes($s) => $body,
            AnyStore::Etcd($s) => $body,
        }
    };
}

impl AnyStore {
    /// Opens the datastore `config.backend` names.
    pub async fn open(config: &IpamConfig) -> Result<AnyStore, StoreError> {
        Ok(match &config.backend {
            Backend::Local { path } => AnyStore::Local(LocalStore::new(path)),
            Backend::Kubernetes {
                kubeconfig,
                namespace,
            } => AnyStore::Kubernetes(Box::new(
                KubeStore::open_with(kubeconfig, namespace, kube_options(config)).await?,
            )),
            Backend::Etcd { endpoints, prefix } => AnyStore::Etcd(
                EtcdStore::connect_with(endpoints, prefix, ETCD_TIMEOUT, &config.etcd_auth).await?,
            ),
        })
    }

    /// Whether the datastore can be used now (STATUS).
    pub async fn status(&self) -> Result<(), StoreError> {
        match self {
            AnyStore::Local(s) => s.check_writable(),
            AnyStore::Kubernetes(s) => s.check().await,
            AnyStore::Etcd(s) => s.status().await,
        }
    }
}

/// The Kubernetes store's options for this configuration: this node, and the configured block
/// sizes (else the defaults).
pub fn kube_options(config: &IpamConfig) -> KubeOptions {
    let mut options = KubeOptions::new(&config.node_name);
    if let Some(prefix) = config.block_size_v4 {
        options.block_prefix_v4 = prefix;
    }
    if let Some(prefix) = config.block_size_v6 {
        options.block_prefix_v6 = prefix;
    }
    options.whereabouts_guard = config.whereabouts_import_check;
    options
}

impl Store for AnyStore {
    async fn allocate(&self, pool: &Pool, owner: &Owner) -> Result<IpAddr, StoreError> {
        each!(self, s => s.allocate(pool, owner).await)
    }

    async fn release(
        &self,
        pool: &Pool,
        container_id: &str,
        ifname: &str,
    ) -> Result<Vec<IpAddr>, StoreError> {
        each!(self, s => s.release(pool, container_id, ifname).await)
    }

    async fn usage(&self) -> Result<Vec<PoolUsage>, StoreError> {
        each!(self, s => s.usage().await)
    }

    async fn release_exact(
        &self,
        network: &str,
        allocation: &Allocation,
    ) -> Result<bool, StoreError> {
        each!(self, s => s.release_exact(network, allocation).await)
    }
}
