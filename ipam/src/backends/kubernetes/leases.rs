//! Block affinity: a `coordination.k8s.io/v1` Lease per block (`ipam-<block name>`) whose
//! `holderIdentity` is the node that owns the block for `leaseDurationSeconds` after its
//! `renewTime`. A Lease is claimed by creating it (create-if-absent) or, once expired, by
//! replacing it on its `resourceVersion`; it is renewed the same way. Affinity decides only
//! which node *prefers* a block; it never decides whether an address is free.
//!
//! # Only its own Leases
//!
//! Every Lease written here is labelled [`MANAGED_BY_LABEL`]` = `[`MANAGED_BY`], with the
//! network ([`NETWORK_LABEL`]), the block ([`BLOCK_LABEL`]) and the holder ([`NODE_LABEL`]),
//! and annotated with the block CIDR ([`CIDR_ANNOTATION`]). Before replacing a Lease it read,
//! and whenever a create or replace finds someone else's Lease under the name, the Lease is
//! checked ([`foreign`]): a Lease of the name that plexus-ipam did not write is an error
//! naming it, never replaced (and no Lease is ever deleted). Leases written before the labels
//! existed (name, network label, CIDR annotation and a node as holder, no
//! [`MANAGED_BY_LABEL`]) count as plexus-ipam's and get the labels at their next renewal.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::ObjectMeta;

use super::client::ApiError;
use super::hints::BlockHint;
use super::layout::{fnv1a, CIDR_ANNOTATION, LEASE_PREFIX, NETWORK_LABEL};
use super::objects::{unexpected, Objects};
use crate::error::{KubeStoreError, StoreError};

/// The label that says who manages a Lease (the Kubernetes recommended label).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY_LABEL`] on plexus-ipam's Leases.
pub const MANAGED_BY: &str = "plexus";
/// The label naming the block a Lease is for: the block's object name ([`label_value`]).
pub const BLOCK_LABEL: &str = "ipam.plexus.cni.dev/block";
/// The label naming the node that holds a Lease ([`label_value`]).
pub const NODE_LABEL: &str = "ipam.plexus.cni.dev/node";

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

/// `text` as a label value: itself when it is one (at most 63 characters of letters, digits,
/// `-`, `_` and `.`, beginning and ending with a letter or digit), else `x` and a hash of it.
pub fn label_value(text: &str) -> String {
    let bytes = text.as_bytes();
    let valid = bytes.is_empty()
        || (bytes.len() <= 63
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b))
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric());
    if valid {
        text.to_string()
    } else {
        format!("x{:016x}", fnv1a(bytes))
    }
}

/// Whether `name` can be a node's name (a DNS-1123 subdomain: at most 253 characters of
/// lower-case letters, digits, `-` and `.`, in labels beginning and ending with a letter or
/// digit). Leader-election Leases hold identities such as `host_1b2c…`, which are not.
pub fn is_node_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
        })
}

/// Why `lease` is not the Lease plexus-ipam writes for `target`, or `None` when it is: it
/// must carry no other manager than [`MANAGED_BY`], the target's network label and block CIDR
/// annotation, and be held by nobody, by `node`, or by a node name ([`is_node_name`]).
pub fn foreign(lease: &Lease, target: Target<'_>, node: &str) -> Option<String> {
    let labels = lease.metadata.labels.clone().unwrap_or_default();
    if let Some(manager) = labels.get(MANAGED_BY_LABEL).filter(|m| *m != MANAGED_BY) {
        return Some(format!("it is managed by {manager:?}"));
    }
    let network = labels.get(NETWORK_LABEL).map(String::as_str);
    if network != Some(target.label) {
        return Some(match network {
            Some(other) => format!(
                "its label {NETWORK_LABEL} is {other:?}, not {:?}",
                target.label
            ),
            None => format!("it has no label {NETWORK_LABEL}"),
        });
    }
    if cidr(lease) != Some(target.cidr) {
        return Some(format!(
            "its annotation {CIDR_ANNOTATION} is not {}",
            target.cidr
        ));
    }
    let holder = holder(lease);
    if !holder.is_empty() && holder != node && !is_node_name(holder) {
        return Some(format!("its holder {holder:?} is not a node name"));
    }
    None
}

/// An error when `lease` is not plexus-ipam's Lease for `target` ([`foreign`]).
fn check_ours(
    objects: &Objects,
    lease: &Lease,
    target: Target<'_>,
    node: &str,
) -> Result<(), StoreError> {
    match foreign(lease, target, node) {
        None => Ok(()),
        Some(why) => Err(KubeStoreError::ForeignLease {
            namespace: objects.namespace().to_string(),
            name: target.name.to_string(),
            block: target.cidr.to_string(),
            why: why.to_string(),
        }
        .into()),
    }
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
    let block = target
        .name
        .strip_prefix(LEASE_PREFIX)
        .unwrap_or(target.name);
    Lease {
        metadata: ObjectMeta {
            name: Some(target.name.to_string()),
            resource_version: version,
            labels: Some(BTreeMap::from([
                (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
                (NETWORK_LABEL.to_string(), target.label.to_string()),
                (BLOCK_LABEL.to_string(), label_value(block)),
                (NODE_LABEL.to_string(), label_value(node)),
            ])),
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
/// `current` on its `resourceVersion`, once it is checked to be plexus-ipam's ([`foreign`]).
/// A create that finds the Lease, or a replace that finds it changed, reads it again: when it
/// is not plexus-ipam's, that is an error; when this node is its holder (another process of
/// the node got there first) it counts as held, else as lost.
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
            check_ours(objects, current, target, node)?;
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
        Err(ApiError::AlreadyExists(_) | ApiError::Conflict(_) | ApiError::NotFound(_)) => {
            match objects.get_lease(target.name).await? {
                Some(lease) => {
                    check_ours(objects, &lease, target, node)?;
                    if holder(&lease) == node {
                        Ok(Claim::Held(Box::new(lease)))
                    } else {
                        Ok(Claim::Lost)
                    }
                }
                None => Ok(Claim::Lost),
            }
        }
        Err(e) => Err(unexpected(e, || format!("claim lease {}", target.name))),
    }
}

/// Renews a Lease this node holds by its hint: a replace on the hint's `resourceVersion`
/// (one round trip; it applies only to the very Lease this node wrote), or a create if the
/// Lease is gone. `Claim::Lost` when another node holds it; an error when the Lease found
/// under the name is not plexus-ipam's.
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
        Err(ApiError::NotFound(_)) => claim(objects, target, node, duration, None).await,
        Err(ApiError::Conflict(_)) => match objects.get_lease(target.name).await? {
            Some(current) => {
                check_ours(objects, &current, target, node)?;
                if holder(&current) != node {
                    Ok(Claim::Lost)
                } else if is_live(&current, now_secs()) {
                    Ok(Claim::Held(Box::new(current)))
                } else {
                    claim(objects, target, node, duration, Some(&current)).await
                }
            }
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

    #[test]
    fn leases_are_labelled_as_plexus_ipams() {
        let target = Target {
            name: "ipam-net-10.0.0.0-26",
            label: "net",
            cidr: "10.0.0.0/26".parse().unwrap(),
        };
        let lease = held(target, "node-1", Duration::from_secs(300), None, now_secs());
        let labels = lease.metadata.labels.clone().unwrap();
        assert_eq!(labels[MANAGED_BY_LABEL], "plexus");
        assert_eq!(labels[NETWORK_LABEL], "net");
        assert_eq!(labels[BLOCK_LABEL], "net-10.0.0.0-26");
        assert_eq!(labels[NODE_LABEL], "node-1");
        // Too long or not a label value: hashed, stably.
        let long = "n".repeat(64);
        assert_eq!(label_value(&long), label_value(&long));
        assert!(label_value(&long).starts_with('x') && label_value(&long).len() == 17);
        assert_ne!(label_value("net-fd00--40-122"), label_value("-x"));
        assert_eq!(label_value("-x").len(), 17);
        assert_eq!(label_value(""), "");
    }

    #[test]
    fn only_plexus_ipams_leases_are_taken_over() {
        let target = Target {
            name: "ipam-net-10.0.0.0-26",
            label: "net",
            cidr: "10.0.0.0/26".parse().unwrap(),
        };
        let ours = held(target, "node-1", Duration::from_secs(300), None, now_secs());
        assert_eq!(foreign(&ours, target, "node-2"), None);
        // As the version before the labels wrote it: no manager label.
        let mut legacy = ours.clone();
        legacy.metadata.labels = Some(BTreeMap::from([(
            NETWORK_LABEL.to_string(),
            "net".to_string(),
        )]));
        assert_eq!(foreign(&legacy, target, "node-2"), None);

        let mut managed = ours.clone();
        managed
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(MANAGED_BY_LABEL.into(), "helm".into());
        assert!(foreign(&managed, target, "node-2")
            .unwrap()
            .contains("\"helm\""));
        let mut unlabelled = ours.clone();
        unlabelled.metadata.labels = None;
        assert!(foreign(&unlabelled, target, "node-2")
            .unwrap()
            .contains("no label"));
        let mut other_block = ours.clone();
        other_block.metadata.annotations = None;
        assert!(foreign(&other_block, target, "node-2").is_some());
        // A leader-election Lease's holder is not a node name.
        let mut leader = ours.clone();
        leader.spec.as_mut().unwrap().holder_identity =
            Some("master-1_4f3c2a1e-9b7d-4c1a-8e2f-0d6b5a4c3b2a".into());
        assert!(foreign(&leader, target, "node-2")
            .unwrap()
            .contains("not a node name"));
        // Released (no holder): still ours.
        let mut released = ours.clone();
        released.spec.as_mut().unwrap().holder_identity = None;
        assert_eq!(foreign(&released, target, "node-2"), None);

        assert!(is_node_name("node-1.example.com"));
        assert!(!is_node_name("Node-1"));
        assert!(!is_node_name("node_1"));
        assert!(!is_node_name("node..1"));
        assert!(!is_node_name(&"a".repeat(254)));
    }
}
