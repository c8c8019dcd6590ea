//! What every backend does. Correctness never rests on timing: each backend hands out an
//! address only through an atomic operation of its datastore (create-if-absent, or a write
//! conditioned on the version it read), so two allocators can never both succeed in taking the
//! same address.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub use crate::error::StoreError;
use crate::range::IpRange;

/// Who holds an address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner {
    /// The pod's namespace (empty outside Kubernetes).
    #[serde(rename = "podNamespace", default)]
    pub pod_namespace: String,
    /// The pod's name (empty outside Kubernetes).
    #[serde(rename = "podName", default)]
    pub pod_name: String,
    /// The pod's UID, when the runtime gave it.
    #[serde(rename = "podUID", default)]
    pub pod_uid: String,
    /// The container (sandbox) ID.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// The interface name.
    pub ifname: String,
    /// The node that allocated it.
    #[serde(default)]
    pub node: String,
    /// The `IPAMClaim` the address is bound to (`namespace/name`; Kubernetes store only),
    /// empty for a pod's own address. A claim-bound address is the claim's: the pod fields
    /// name the pod using it now, DEL keeps it, and only the claim's deletion frees it.
    #[serde(
        rename = "ipamClaim",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub claim: String,
}

impl Owner {
    /// True when `other` is the same attachment for idempotency: the same pod (by namespace
    /// and name, as Whereabouts matches) and interface, or, outside Kubernetes, the same
    /// container and interface.
    /// A claim-bound address is the same attachment as any owner with the same claim.
    pub fn same_attachment(&self, other: &Owner) -> bool {
        if !self.claim.is_empty() || !other.claim.is_empty() {
            return self.claim == other.claim;
        }
        if self.ifname != other.ifname {
            return false;
        }
        if !self.pod_name.is_empty() || !other.pod_name.is_empty() {
            self.pod_namespace == other.pod_namespace && self.pod_name == other.pod_name
        } else {
            self.container_id == other.container_id
        }
    }

    /// `namespace/name`, or the container ID outside Kubernetes.
    pub fn display(&self) -> String {
        if self.pod_name.is_empty() {
            self.container_id.clone()
        } else {
            format!("{}/{}", self.pod_namespace, self.pod_name)
        }
    }
}

/// One address and who holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// The address.
    pub address: IpAddr,
    /// Its holder.
    pub owner: Owner,
}

/// A pool: a range of one network. Pools of the same `network` whose ranges overlap share their
/// addresses when `overlapping` is on (Whereabouts's `enable_overlapping_ranges`, on by
/// default): an address is then unique across all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// `network_name` (empty by default).
    pub network: String,
    /// The range, with its bounds, exclusions and gateway.
    pub range: IpRange,
    /// Whether overlapping ranges of the same network share addresses.
    pub overlapping: bool,
}

/// A pool's occupancy, for `plexusctl ipam pools`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolUsage {
    /// `network_name`.
    pub network: String,
    /// The CIDR the allocations were found under (a range, or a block of one).
    pub cidr: String,
    /// Every allocation, by address.
    pub allocations: Vec<Allocation>,
}

/// What a backend does. Every method is safe to run concurrently from many processes on many
/// nodes.
#[allow(async_fn_in_trait)]
pub trait Store {
    /// Allocates one address of the pool for `owner`: the address this attachment already
    /// holds in the pool when there is one (a repeated ADD), else the lowest free one.
    async fn allocate(&self, pool: &Pool, owner: &Owner) -> Result<IpAddr, StoreError>;

    /// Releases every address of the pool held by this container and interface; none is fine.
    async fn release(
        &self,
        pool: &Pool,
        container_id: &str,
        ifname: &str,
    ) -> Result<Vec<IpAddr>, StoreError>;

    /// Every pool the store holds allocations for, with its allocations.
    async fn usage(&self) -> Result<Vec<PoolUsage>, StoreError>;

    /// Releases `allocation` only if the store still holds exactly it (same address, same
    /// owner); returns whether it did. Garbage collection uses this so that an address
    /// re-allocated in the meantime is never freed.
    async fn release_exact(
        &self,
        network: &str,
        allocation: &Allocation,
    ) -> Result<bool, StoreError>;
}
