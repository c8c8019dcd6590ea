//! Blocks as a whole: which node holds each (`plexusctl ipam pools`), and deleting the empty
//! blocks nobody holds any more (`plexusctl ipam gc`).
//!
//! A block is **reclaimable** when it holds no allocation and its Lease is gone, or expired
//! longer ago than the grace period, or held by a node that no longer exists (when the caller
//! knows the cluster's nodes) and not renewed within the grace period. It is deleted with a
//! precondition on the `resourceVersion` at which it was read empty, so a block that got an
//! allocation in the meantime is never deleted (the API server answers 409 and the block is
//! kept). Deleting an empty block is always safe for the invariants of [`super`]: an absent
//! block and an empty block mean the same (no address of it is held), and every writer that
//! read the old version loses its write (404/409) and reads the block again. Its Lease is
//! then deleted too, on its own `resourceVersion`, unless it was renewed meanwhile.

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use serde::Serialize;

use super::client::ApiError;
use super::layout::{network_label, Layout};
use super::leases::{self, Target};
use super::KubeStore;
use crate::store::StoreError;

/// One block and the node that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockInfo {
    /// The network.
    pub network: String,
    /// The block CIDR.
    pub cidr: String,
    /// The object name.
    pub name: String,
    /// The holder of its Lease (empty when it has none).
    pub node: String,
    /// Whether the Lease is live now.
    pub live: bool,
    /// Allocated addresses.
    pub used: usize,
    /// Addresses in the block.
    pub size: u128,
}

/// How [`KubeStore::reclaim_blocks`] decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReclaimOptions {
    /// How long after its Lease expired (or after its node's last renewal, for a node that is
    /// gone) an empty block is kept.
    pub grace: std::time::Duration,
    /// The cluster's nodes, when known: a Lease whose holder is not one of them counts as
    /// expired once the grace period has passed since its renewal.
    pub nodes: Option<HashSet<String>>,
    /// Report what would be deleted, delete nothing.
    pub dry_run: bool,
}

/// The grace period unless configured otherwise.
pub const DEFAULT_BLOCK_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// What [`KubeStore::reclaim_blocks`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReclaimReport {
    /// Blocks examined.
    pub examined: usize,
    /// Blocks deleted (or, in a dry run, that would have been), by name.
    pub deleted: Vec<String>,
    /// Empty blocks kept because their Lease is live (or within the grace period).
    pub kept_held: usize,
    /// Blocks that changed between the reading and the delete (an allocation arrived): kept.
    pub changed: usize,
    /// Deletes that failed.
    pub errors: Vec<String>,
}

/// Whether an empty block with this Lease may be deleted at `now` (Unix seconds).
pub fn reclaimable(
    lease: Option<&Lease>,
    nodes: Option<&HashSet<String>>,
    now: i64,
    grace: i64,
) -> bool {
    let Some(lease) = lease else { return true };
    let spec = lease.spec.clone().unwrap_or_default();
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map_or(0, |t| t.0.as_second());
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    let holder = leases::holder(lease);
    if holder.is_empty() {
        return renewed + grace <= now;
    }
    if renewed + duration + grace <= now {
        return true;
    }
    nodes.is_some_and(|n| !n.contains(holder)) && renewed + grace <= now
}

impl KubeStore {
    /// Every block of the namespace with the holder of its Lease: two LISTs.
    pub async fn blocks(&self) -> Result<Vec<BlockInfo>, StoreError> {
        let blocks = self.objects.list_blocks(None).await?;
        let leases = self.leases_by_name().await?;
        let now = leases::now_secs();
        let mut out: Vec<BlockInfo> = blocks
            .into_iter()
            .map(|b| {
                let lease = leases.get(&Layout::lease_name(&b.name));
                BlockInfo {
                    network: b.network.clone(),
                    cidr: b.cidr.to_string(),
                    node: lease
                        .map(|l| leases::holder(l).to_string())
                        .unwrap_or_default(),
                    live: lease.is_some_and(|l| leases::is_live(l, now)),
                    used: b.allocations.len(),
                    size: 1u128 << (b.cidr.max_prefix_len() - b.cidr.prefix_len()),
                    name: b.name,
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.node, &a.network, &a.name).cmp(&(&b.node, &b.network, &b.name)));
        Ok(out)
    }

    /// The names of the cluster's nodes (RBAC: `list nodes`); `None` when they cannot be
    /// listed or there are none (a cluster without registered nodes tells nothing).
    pub async fn node_names(&self) -> Option<HashSet<String>> {
        let api: Api<Node> = Api::all(self.client().client().clone());
        let list = self
            .client()
            .call("list", "nodes", api.list_metadata(&ListParams::default()))
            .await
            .ok()?;
        let names: HashSet<String> = list
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        (!names.is_empty()).then_some(names)
    }

    /// Deletes the reclaimable empty blocks (see the module documentation) and their Leases.
    pub async fn reclaim_blocks(
        &self,
        options: &ReclaimOptions,
    ) -> Result<ReclaimReport, StoreError> {
        let blocks = self.objects.list_blocks(None).await?;
        let leases = self.leases_by_name().await?;
        let now = leases::now_secs();
        let grace = options.grace.as_secs() as i64;
        let mut report = ReclaimReport::default();
        for block in blocks {
            report.examined += 1;
            if !block.allocations.is_empty() {
                continue;
            }
            let lease_name = Layout::lease_name(&block.name);
            let lease = leases.get(&lease_name);
            if !reclaimable(lease, options.nodes.as_ref(), now, grace) {
                report.kept_held += 1;
                continue;
            }
            if options.dry_run {
                report.deleted.push(block.name);
                continue;
            }
            let Some(version) = block.version.as_deref() else {
                continue;
            };
            match self.objects.delete_block(&block.name, version).await {
                Ok(()) => {}
                Err(ApiError::Conflict(_)) => {
                    report.changed += 1;
                    continue;
                }
                Err(ApiError::NotFound(_)) => continue,
                Err(e) => {
                    let e = super::objects::unexpected(e, || format!("delete {}", block.name));
                    report.errors.push(e.to_string());
                    continue;
                }
            }
            // Only plexus-ipam's own Lease of this block goes with it: one of the block's name
            // that somebody else wrote is left alone.
            let label = network_label(&block.network);
            let target = Target {
                name: &lease_name,
                label: &label,
                cidr: block.cidr,
            };
            let own_lease = lease.filter(|l| leases::foreign(l, target, "").is_none());
            report.deleted.push(block.name);
            let lease_version = own_lease.and_then(|l| l.metadata.resource_version.as_deref());
            if let Some(version) = lease_version {
                // Renewed or taken meanwhile (409), or gone (404): left as it is.
                match self.objects.delete_lease(&lease_name, version).await {
                    Ok(()) | Err(ApiError::Conflict(_) | ApiError::NotFound(_)) => {}
                    Err(e) => {
                        let e = super::objects::unexpected(e, || format!("delete {lease_name}"));
                        report.errors.push(e.to_string());
                    }
                }
            }
        }
        Ok(report)
    }

    /// Every Lease of the namespace by name.
    async fn leases_by_name(&self) -> Result<HashMap<String, Lease>, StoreError> {
        Ok(self
            .objects
            .list_all_leases()
            .await?
            .into_iter()
            .filter_map(|l| l.metadata.name.clone().map(|n| (n, l)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::backends::kubernetes::leases::{held, Target};

    #[test]
    fn an_empty_block_is_reclaimable_after_expiry_and_grace() {
        let target = Target {
            name: "l",
            label: "n",
            cidr: "10.0.0.0/26".parse().unwrap(),
        };
        let now = leases::now_secs();
        let lease = held(target, "node-a", Duration::from_secs(300), None, now);
        assert!(reclaimable(None, None, now, 60));
        assert!(!reclaimable(Some(&lease), None, now, 60));
        assert!(!reclaimable(Some(&lease), None, now + 330, 60));
        assert!(reclaimable(Some(&lease), None, now + 361, 60));
        // Its node is gone: the grace period counts from the last renewal.
        let nodes: HashSet<String> = ["node-b".to_string()].into();
        assert!(!reclaimable(Some(&lease), Some(&nodes), now + 30, 60));
        assert!(reclaimable(Some(&lease), Some(&nodes), now + 61, 60));
        let alive: HashSet<String> = ["node-a".to_string()].into();
        assert!(!reclaimable(Some(&lease), Some(&alive), now + 61, 60));
        // A released Lease (no holder): the grace period after its last renewal.
        let mut released = lease.clone();
        released.spec.as_mut().unwrap().holder_identity = None;
        assert!(!reclaimable(Some(&released), None, now + 10, 60));
        assert!(reclaimable(Some(&released), None, now + 61, 60));
    }
}
