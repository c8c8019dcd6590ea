//! Block affinity: a `coordination.k8s.io/v1` Lease per block (`ipam-<block name>`) whose
//! `holderIdentity` is the node that owns the block for `leaseDurationSeconds` after its
//! `renewTime`. A Lease is claimed by creating it (create-if-absent) or, once expired, by
//! replacing it on its `resourceVersion`; it is renewed the same way. Affinity decides only
//! which node *prefers* a block; it never decides whether an address is free.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::ObjectMeta;

use super::client::ApiError;
use super::hints::BlockHint;
use super::layout::{CIDR_ANNOTATION, NETWORK_LABEL};
use super::objects::{unexpected, Objects};
use crate::store::StoreError;

/// The current time as Unix seconds.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The holder of `lease` (empty when none).
pub fn holder(lease: &Lease) -> &str {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .unwrap_or("")
}

/// Whether `lease` is held by someone at `now` (Unix seconds): it has a holder and its
/// `renewTime` (else `acquireTime`) plus its duration lies in the future.
pub fn is_live(lease: &Lease, now: i64) -> bool {
    let Some(spec) = &lease.spec else {
        return false;
    };
    if spec.holder_identity.as_deref().unwrap_or("").is_empty() {
        return false;
    }
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return false;
    };
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    renewed.0.as_second() + duration > now
}

/// The block CIDR a Lease is for (its [`CIDR_ANNOTATION`]).
pub fn cidr(lease: &Lease) -> Option<IpNet> {
    lease
        .metadata
        .annotations
        .as_ref()?
        .get(CIDR_ANNOTATION)?
        .parse()
        .ok()
}

/// The Lease of a block: its name and network label, and the block's CIDR.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The Lease's name.
    pub name: &'a str,
    /// The network label value.
    pub label: &'a str,
    /// The block.
    pub cidr: IpNet,
}

/// The Lease `target` held by `node` for `duration` from now, at `version` (`None` for a
/// create), acquired at `acquired` (Unix seconds).
pub fn held(
    target: Target<'_>,
    node: &str,
    duration: Duration,
    version: Option<String>,
    acquired: i64,
) -> Lease {
    let now = Timestamp::now();
    let acquired = Timestamp::from_second(acquired).unwrap_or(now);
    Lease {
        metadata: ObjectMeta {
            name: Some(target.name.to_string()),
            resource_version: version,
            labels: Some(BTreeMap::from([(
                NETWORK_LABEL.to_string(),
                target.label.to_string(),
            )])),
            annotations: Some(BTreeMap::from([(
                CIDR_ANNOTATION.to_string(),
                target.cidr.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(node.to_string()),
            lease_duration_seconds: Some(duration.as_secs().clamp(1, i32::MAX as u64) as i32),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(now)),
            ..LeaseSpec::default()
        }),
    }
}

/// The hint recorded for a Lease this node holds.
pub fn hint_of(lease: &Lease, cidr: IpNet) -> BlockHint {
    let spec = lease.spec.clone().unwrap_or_default();
    let now = now_secs();
    BlockHint {
        cidr,
        lease_version: lease.metadata.resource_version.clone().unwrap_or_default(),
        acquired: spec.acquire_time.map(|t| t.0.as_second()).unwrap_or(now),
        renewed: spec.renew_time.map(|t| t.0.as_second()).unwrap_or(now),
        full: false,
    }
}

/// What became of an attempt to hold a block's Lease.
#[derive(Debug)]
pub enum Claim {
    /// This node holds it now: the Lease as written.
    Held(Box<Lease>),
    /// Another node holds it.
    Lost,
}

/// Takes the Lease `name` for `node`: creates it if `current` is `None`, else replaces
/// `current` on its `resourceVersion`. A create that finds the Lease, or a replace that finds
/// it changed, reads it again: when this node is its holder (another process of the node got
/// there first) it counts as held, else as lost.
pub async fn claim(
    objects: &Objects,
    target: Target<'_>,
    node: &str,
    duration: Duration,
    current: Option<&Lease>,
) -> Result<Claim, StoreError> {
    let attempt = match current {
        None => {
            let lease = held(target, node, duration, None, now_secs());
            objects.create_lease(&lease).await
        }
        Some(current) => {
            let keep_acquired = holder(current) == node;
            let acquired = current
                .spec
                .as_ref()
                .and_then(|s| s.acquire_time.as_ref())
                .filter(|_| keep_acquired)
                .map(|t| t.0.as_second())
                .unwrap_or_else(now_secs);
            let version = current.metadata.resource_version.clone();
            let lease = held(target, node, duration, version, acquired);
            objects.replace_lease(&lease).await
        }
    };
    match attempt {
        Ok(lease) => Ok(Claim::Held(Box::new(lease))),
        Err(ApiError::AlreadyExists | ApiError::Conflict | ApiError::NotFound) => {
            match objects.get_lease(target.name).await? {
                Some(lease) if holder(&lease) == node => Ok(Claim::Held(Box::new(lease))),
                _ => Ok(Claim::Lost),
            }
        }
        Err(e) => Err(unexpected(e, || format!("claim lease {}", target.name))),
    }
}

/// Renews a Lease this node holds by its hint: a replace on the hint's `resourceVersion`
/// (one round trip), or a create if the Lease is gone. `Claim::Lost` when another node holds it.
pub async fn renew(
    objects: &Objects,
    target: Target<'_>,
    node: &str,
    duration: Duration,
    hint: &BlockHint,
) -> Result<Claim, StoreError> {
    let version = Some(hint.lease_version.clone());
    let lease = held(target, node, duration, version, hint.acquired);
    match objects.replace_lease(&lease).await {
        Ok(lease) => Ok(Claim::Held(Box::new(lease))),
        Err(ApiError::NotFound) => claim(objects, target, node, duration, None).await,
        Err(ApiError::Conflict) => match objects.get_lease(target.name).await? {
            Some(current) if holder(&current) == node => {
                if is_live(&current, now_secs()) {
                    Ok(Claim::Held(Box::new(current)))
                } else {
                    claim(objects, target, node, duration, Some(&current)).await
                }
            }
            Some(_) => Ok(Claim::Lost),
            None => claim(objects, target, node, duration, None).await,
        },
        Err(e) => Err(unexpected(e, || format!("renew lease {}", target.name))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_lives_for_its_duration_after_renewal() {
        let target = Target {
            name: "l",
            label: "net",
            cidr: "10.0.0.0/26".parse().unwrap(),
        };
        let lease = held(target, "n1", Duration::from_secs(300), None, now_secs());
        assert_eq!(cidr(&lease), Some(target.cidr));
        assert_eq!(holder(&lease), "n1");
        let now = now_secs();
        assert!(is_live(&lease, now));
        assert!(is_live(&lease, now + 290));
        assert!(!is_live(&lease, now + 310));
        let mut released = lease.clone();
        released.spec.as_mut().unwrap().holder_identity = None;
        assert!(!is_live(&released, now));
        let hint = hint_of(&lease, "10.0.0.0/26".parse().unwrap());
        assert!((hint.renewed - now).abs() <= 1);
    }
}
