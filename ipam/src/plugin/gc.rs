//! GC: releases this node's allocations whose attachments are not valid any more.

use std::collections::HashSet;

use plexus_cni::list::Attachment;
use plexus_cni::{CniError, ErrorCode};
use tracing::{info, warn};

use crate::backends::kubernetes::KubePods;
use crate::config::IpamConfig;
use crate::gc::PodLookup;
use crate::store::{Allocation, Store};

/// GC: releases the allocations of this configuration's ranges made by this node whose
/// container and interface are not valid any more; one bound to an `IPAMClaim` only when
/// `claims` says the claim is gone (without `claims`, never). Returns what was released.
pub async fn gc(
    store: &impl Store,
    config: &IpamConfig,
    valid: &[Attachment],
    claims: Option<&KubePods>,
) -> Result<Vec<Allocation>, CniError> {
    let valid: HashSet<(&str, &str)> = valid
        .iter()
        .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
        .collect();
    let usage = store.usage().await?;
    let stale: Vec<&Allocation> = usage
        .iter()
        .filter(|u| u.network == config.network_name)
        .flat_map(|u| &u.allocations)
        .filter(|a| a.owner.node == config.node_name)
        .filter(|a| config.ranges.iter().any(|r| r.cidr().contains(&a.address)))
        .filter(|a| !valid.contains(&(a.owner.container_id.as_str(), a.owner.ifname.as_str())))
        .collect();
    let mut released = Vec::new();
    let mut failures = Vec::new();
    for a in stale {
        if !a.owner.claim.is_empty() && !claim_gone(claims, &a.owner.claim).await {
            continue;
        }
        match store.release_exact(&config.network_name, a).await {
            Ok(true) => {
                info!(
                    "GC released {} of {} ({})",
                    a.address, a.owner.container_id, a.owner.ifname
                );
                released.push(a.clone());
            }
            Ok(false) => {}
            Err(e) => failures.push(format!("{}: {e}", a.address)),
        }
    }
    if failures.is_empty() {
        Ok(released)
    } else {
        Err(CniError::new(
            ErrorCode::IpamBackendFailed,
            format!("GC could not release: {}", failures.join("; ")),
        ))
    }
}

/// Whether the claim `namespace/name` of a claim-bound allocation is gone (404); a failed
/// lookup, or no way to look, keeps the address.
async fn claim_gone(claims: Option<&KubePods>, claim: &str) -> bool {
    let Some(claims) = claims else { return false };
    let (namespace, name) = claim.split_once('/').unwrap_or(("", claim));
    match claims.claim_exists(namespace, name).await {
        Ok(exists) => !exists,
        Err(e) => {
            warn!("GC keeps the address of IPAMClaim {claim}: {e}");
            false
        }
    }
}
