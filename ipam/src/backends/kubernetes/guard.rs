//! The guard against a forgotten import: before the first block of a range is created, the
//! Whereabouts `IPPool`s of the same network are read (one LIST, only then: never on the
//! common path), and an allocation of theirs inside the range stops the ADD with a
//! configuration error (code 7) that names `plexusctl ipam import whereabouts`. With no block
//! of the range yet, none of those allocations can have been imported (an import creates the
//! blocks of the addresses it writes), so they are addresses running pods may still hold.
//!
//! No Whereabouts CRD (404) means nothing to guard. `whereabouts_import_check: false` in the
//! configuration turns the guard off ([`super::KubeOptions::whereabouts_guard`]).

use kube::api::{Api, ListParams};
use plexus_crds::whereabouts::IpPool;
use serde::de::DeserializeOwned;

use super::client::KubeClient;
use super::layout::Layout;
use super::objects::Objects;
use super::whereabouts::{address_at, pool_network};
use crate::error::{KubeStoreError, StoreError};

/// The configuration key that turns the guard off.
pub const GUARD_KEY: &str = "whereabouts_import_check";

/// Refuses (code 7) when a Whereabouts pool of the layout's network holds an allocation
/// inside its range.
pub async fn check(objects: &Objects, layout: &Layout) -> Result<(), StoreError> {
    let resource = "ippools.whereabouts.cni.cncf.io (the guard against a forgotten import)";
    let pools: Vec<IpPool> = match list_if_served(objects.client(), resource).await {
        Ok(Some(pools)) => pools,
        Ok(None) => return Ok(()),
        Err(e) => {
            return Err(KubeStoreError::Guard {
                source: Box::new(e),
            }
            .into())
        }
    };
    let range = layout.range.cidr();
    for pool in pools {
        let name = pool.metadata.name.clone().unwrap_or_default();
        let Ok(cidr) = pool.spec.range.parse::<ipnet::IpNet>() else {
            continue;
        };
        let cidr = cidr.trunc();
        if pool_network(&name, &pool.spec.range).unwrap_or_else(|| name.clone()) != layout.network
            || !super::layout::overlaps(cidr, range)
        {
            continue;
        }
        let inside: Vec<_> = pool
            .spec
            .allocations
            .iter()
            .filter_map(|(key, a)| {
                address_at(cidr, key)
                    .ok()
                    .filter(|ip| range.contains(ip))
                    .map(|ip| (ip, a))
            })
            .collect();
        if let Some((ip, first)) = inside.first() {
            let namespace = pool.metadata.namespace.unwrap_or_default();
            return Err(StoreError::NotImported(format!(
                "Whereabouts IPPool {namespace}/{name} holds {} allocation(s) in range {range} \
                 that plexus-ipam has not imported (e.g. {ip} for {}): run `plexusctl ipam \
                 import whereabouts --apply` before switching, or set \"{GUARD_KEY}\": false \
                 if those addresses are free",
                inside.len(),
                first.podref
            )));
        }
    }
    Ok(())
}

/// LIST every `K` of the cluster; `None` when its API is not served (any 404: the CRD is not
/// installed).
pub async fn list_if_served<K>(
    client: &KubeClient,
    resource: &str,
) -> Result<Option<Vec<K>>, StoreError>
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.client().clone());
    let listed = client
        .call("list", resource, async {
            match api.list(&ListParams::default()).await {
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
                other => other.map(|list| Some(list.items)),
            }
        })
        .await;
    listed.map_err(|e| super::objects::unexpected(e, || format!("list {resource}")))
}
