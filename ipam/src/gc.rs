//! Garbage collection: releases the allocations whose pod is gone, or whose pod by that name is
//! another pod now (its UID changed), for any [`Store`].
//!
//! [`collect`] reads every allocation ([`Store::usage`]), asks [`PodLookup`] about each pod,
//! and for each allocation that looks stale asks **again, right before releasing**, then
//! releases it with [`Store::release_exact`], which frees the address only if the store still
//! holds exactly that allocation. Three races are closed this way:
//!
//! * **A pod being set up** (Whereabouts #162 and #207: an address released between its
//!   allocation and the pod's `network-status` annotation, then handed to a second pod). The
//!   kubelet sets a sandbox up only for a pod that exists, so an allocation always appears
//!   after its pod; each pod is looked up *after* its allocation was read, by name, one GET,
//!   never from a pod list taken earlier, and `network-status` is not consulted at all. A pod
//!   that exists keeps its address, whatever state its annotations are in.
//! * **A pod deleted and re-created under the same name** (StatefulSets): the pod UID recorded
//!   at ADD is compared, so the old pod's address is released and the new pod's is kept. An
//!   allocation without a recorded UID is judged by the pod's existence only.
//! * **An address re-allocated between the reading and the release**: `release_exact` compares
//!   the whole owner (pod, UID, container, interface), so the new holder keeps it.
//!
//! An address bound to an `IPAMClaim` is judged by the claim, never by its pod: it is released
//! only when the claim is gone (asked twice, like a pod).
//!
//! Allocations made outside Kubernetes (no pod name) are never released here. A lookup that
//! fails leaves its allocation alone and is reported. A pod that is terminating still exists,
//! and its DEL releases its addresses.

use std::collections::HashMap;

use serde::Serialize;

use crate::store::{Allocation, Store, StoreError};

/// What the cluster says of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodState {
    /// No pod of that namespace and name.
    Absent,
    /// A pod of that name exists, with this UID.
    Present {
        /// The pod's UID.
        uid: String,
    },
}

/// Looks pods up by namespace and name.
#[allow(async_fn_in_trait)]
pub trait PodLookup {
    /// The pod `namespace/name` as the cluster has it now (never from a cache: [`collect`]
    /// re-checks with it right before releasing). An error leaves the pod's addresses alone.
    async fn pod(&self, namespace: &str, name: &str) -> Result<PodState, String>;

    /// Whether the `IPAMClaim` `namespace/name` exists now. An address bound to a claim is
    /// released only when this says no; the default (no claims to look at) keeps it.
    async fn claim_exists(&self, _namespace: &str, _name: &str) -> Result<bool, String> {
        Ok(true)
    }
}

/// What [`collect`] does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcOptions {
    /// Only allocations made by this node (a node agent collects its own); all when `None`.
    pub node: Option<String>,
    /// Report what would be released, release nothing.
    pub dry_run: bool,
}

/// An allocation of a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkAllocation {
    /// The network (`network_name`).
    pub network: String,
    /// The allocation.
    #[serde(flatten)]
    pub allocation: Allocation,
}

/// What [`collect`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// Allocations examined (of the node, when one was given).
    pub examined: usize,
    /// Allocations released (or, in a dry run, that would have been).
    pub released: Vec<NetworkAllocation>,
    /// Stale at first sight, but their pod was back at the re-check: kept.
    pub kept_on_recheck: usize,
    /// Stale, but the store no longer held exactly them when releasing (released or
    /// re-allocated meanwhile).
    pub already_gone: usize,
    /// Allocations without a pod name, never released here.
    pub not_pods: usize,
    /// Pod lookups or releases that failed; their allocations are left alone.
    pub errors: Vec<String>,
}

/// Whether an allocation is stale given its pod's state.
pub fn is_stale(allocation: &Allocation, pod: &PodState) -> bool {
    match pod {
        PodState::Absent => true,
        PodState::Present { uid } => {
            !allocation.owner.pod_uid.is_empty() && *uid != allocation.owner.pod_uid
        }
    }
}

/// Releases every allocation of `store` whose pod is gone or whose pod UID changed (see the
/// module documentation for the re-check). Fails only if the allocations cannot be read.
pub async fn collect(
    store: &impl Store,
    pods: &impl PodLookup,
    options: &GcOptions,
) -> Result<GcReport, StoreError> {
    let mut report = GcReport::default();
    let mut seen: HashMap<(String, String), Result<PodState, String>> = HashMap::new();
    for usage in store.usage().await? {
        for allocation in usage.allocations {
            let owner = &allocation.owner;
            if options.node.as_ref().is_some_and(|n| *n != owner.node) {
                continue;
            }
            report.examined += 1;
            if !owner.claim.is_empty() {
                match claim_gone(pods, &owner.claim).await {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        report.errors.push(e);
                        continue;
                    }
                }
                release(store, &usage.network, allocation, options, &mut report).await;
                continue;
            }
            if owner.pod_name.is_empty() {
                report.not_pods += 1;
                continue;
            }
            let key = (owner.pod_namespace.clone(), owner.pod_name.clone());
            if !seen.contains_key(&key) {
                let state = pods.pod(&key.0, &key.1).await;
                seen.insert(key.clone(), state);
            }
            match &seen[&key] {
                Err(e) => {
                    report.errors.push(format!("pod {}/{}: {e}", key.0, key.1));
                    continue;
                }
                Ok(state) if !is_stale(&allocation, state) => continue,
                Ok(_) => {}
            }
            // Stale at first sight: ask again now, right before releasing.
            match pods.pod(&key.0, &key.1).await {
                Err(e) => {
                    report.errors.push(format!("pod {}/{}: {e}", key.0, key.1));
                    continue;
                }
                Ok(state) => {
                    let stale = is_stale(&allocation, &state);
                    seen.insert(key, Ok(state));
                    if !stale {
                        report.kept_on_recheck += 1;
                        continue;
                    }
                }
            }
            release(store, &usage.network, allocation, options, &mut report).await;
        }
    }
    Ok(report)
}

/// Whether the claim `namespace/name` is gone: asked, and asked again right before releasing.
async fn claim_gone(pods: &impl PodLookup, claim: &str) -> Result<bool, String> {
    let (namespace, name) = claim.split_once('/').unwrap_or(("", claim));
    for _ in 0..2 {
        if pods
            .claim_exists(namespace, name)
            .await
            .map_err(|e| format!("ipamclaim {claim}: {e}"))?
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Releases a stale allocation (unless a dry run) and records the outcome.
async fn release(
    store: &impl Store,
    network: &str,
    allocation: Allocation,
    options: &GcOptions,
    report: &mut GcReport,
) {
    let released = if options.dry_run {
        Ok(true)
    } else {
        store.release_exact(network, &allocation).await
    };
    match released {
        Ok(true) => report.released.push(NetworkAllocation {
            network: network.to_string(),
            allocation,
        }),
        Ok(false) => report.already_gone += 1,
        Err(e) => report
            .errors
            .push(format!("release {}: {e}", allocation.address)),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::net::IpAddr;

    use super::*;
    use crate::store::{Owner, Pool, PoolUsage};

    /// A store holding a fixed list, recording releases.
    struct Fixed {
        allocations: Vec<Allocation>,
        released: RefCell<Vec<IpAddr>>,
    }

    impl Store for Fixed {
        async fn allocate(&self, _: &Pool, _: &Owner) -> Result<IpAddr, StoreError> {
            unreachable!()
        }
        async fn release(&self, _: &Pool, _: &str, _: &str) -> Result<Vec<IpAddr>, StoreError> {
            unreachable!()
        }
        async fn usage(&self) -> Result<Vec<PoolUsage>, StoreError> {
            Ok(vec![PoolUsage {
                network: "n".into(),
                cidr: "10.0.0.0/24".into(),
                allocations: self.allocations.clone(),
            }])
        }
        async fn release_exact(&self, _: &str, a: &Allocation) -> Result<bool, StoreError> {
            self.released.borrow_mut().push(a.address);
            Ok(true)
        }
    }

    /// Pods whose answers change from one lookup to the next.
    struct Scripted(RefCell<HashMap<String, Vec<Result<PodState, String>>>>);

    impl PodLookup for Scripted {
        async fn pod(&self, ns: &str, name: &str) -> Result<PodState, String> {
            let mut map = self.0.borrow_mut();
            let answers = map.get_mut(&format!("{ns}/{name}")).expect("scripted pod");
            if answers.len() > 1 {
                answers.remove(0)
            } else {
                answers[0].clone()
            }
        }

        async fn claim_exists(&self, ns: &str, name: &str) -> Result<bool, String> {
            match self.pod(ns, &format!("claim:{name}")).await? {
                PodState::Absent => Ok(false),
                PodState::Present { .. } => Ok(true),
            }
        }
    }

    fn alloc(ip: &str, pod: &str, uid: &str, node: &str) -> Allocation {
        Allocation {
            address: ip.parse().unwrap(),
            owner: Owner {
                pod_namespace: "ns".into(),
                pod_name: pod.into(),
                pod_uid: uid.into(),
                container_id: format!("c-{pod}"),
                ifname: "net1".into(),
                node: node.into(),
                claim: String::new(),
            },
        }
    }

    fn present(uid: &str) -> Result<PodState, String> {
        Ok(PodState::Present { uid: uid.into() })
    }

    fn run(store: &Fixed, pods: &Scripted, options: GcOptions) -> GcReport {
        plexus_cni::runtime::block_on(async {
            Ok::<_, plexus_cni::CniError>(collect(store, pods, &options).await?)
        })
        .unwrap()
    }

    #[test]
    fn gone_and_replaced_pods_lose_their_addresses_live_ones_keep_them() {
        let store = Fixed {
            allocations: vec![
                alloc("10.0.0.1", "live", "u1", "a"),
                alloc("10.0.0.2", "gone", "u2", "a"),
                alloc("10.0.0.3", "replaced", "u3", "b"),
                alloc("10.0.0.4", "no-uid", "", "b"),
                alloc("10.0.0.5", "back", "u5", "b"),
                alloc("10.0.0.6", "", "", "b"),
                alloc("10.0.0.7", "failing", "u7", "b"),
            ],
            released: RefCell::new(Vec::new()),
        };
        let pods = Scripted(RefCell::new(HashMap::from([
            ("ns/live".into(), vec![present("u1")]),
            ("ns/gone".into(), vec![Ok(PodState::Absent)]),
            ("ns/replaced".into(), vec![present("other")]),
            ("ns/no-uid".into(), vec![present("whatever")]),
            // Absent at first sight, created by the re-check: kept (#207).
            ("ns/back".into(), vec![Ok(PodState::Absent), present("u5")]),
            ("ns/failing".into(), vec![Err("timeout".into())]),
        ])));
        let report = run(&store, &pods, GcOptions::default());
        let released: Vec<String> = report
            .released
            .iter()
            .map(|a| a.allocation.address.to_string())
            .collect();
        assert_eq!(released, ["10.0.0.2", "10.0.0.3"]);
        assert_eq!(store.released.borrow().len(), 2);
        assert_eq!(report.examined, 7);
        assert_eq!(report.kept_on_recheck, 1);
        assert_eq!(report.not_pods, 1);
        assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    }

    #[test]
    fn a_node_collects_only_its_own_and_a_dry_run_releases_nothing() {
        let store = Fixed {
            allocations: vec![
                alloc("10.0.0.1", "gone-a", "", "a"),
                alloc("10.0.0.2", "gone-b", "", "b"),
            ],
            released: RefCell::new(Vec::new()),
        };
        let pods = Scripted(RefCell::new(HashMap::from([
            ("ns/gone-a".into(), vec![Ok(PodState::Absent)]),
            ("ns/gone-b".into(), vec![Ok(PodState::Absent)]),
        ])));
        let options = GcOptions {
            node: Some("a".into()),
            dry_run: true,
        };
        let report = run(&store, &pods, options);
        assert_eq!(report.examined, 1);
        assert_eq!(report.released.len(), 1);
        assert!(store.released.borrow().is_empty());
    }

    #[test]
    fn a_claim_bound_address_goes_only_with_its_claim() {
        let bound = |ip: &str, pod: &str, claim: &str| {
            let mut a = alloc(ip, pod, "u", "a");
            a.owner.claim = format!("ns/{claim}");
            a
        };
        let store = Fixed {
            allocations: vec![
                bound("10.0.0.1", "gone-pod", "kept"),
                bound("10.0.0.2", "gone-pod", "deleted"),
                bound("10.0.0.3", "gone-pod", "back"),
            ],
            released: RefCell::new(Vec::new()),
        };
        let pods = Scripted(RefCell::new(HashMap::from([
            ("ns/gone-pod".into(), vec![Ok(PodState::Absent)]),
            ("ns/claim:kept".into(), vec![present("")]),
            ("ns/claim:deleted".into(), vec![Ok(PodState::Absent)]),
            // Gone at first sight, back at the re-check: kept.
            (
                "ns/claim:back".into(),
                vec![Ok(PodState::Absent), present("")],
            ),
        ])));
        let report = run(&store, &pods, GcOptions::default());
        let released: Vec<String> = report
            .released
            .iter()
            .map(|a| a.allocation.address.to_string())
            .collect();
        assert_eq!(released, ["10.0.0.2"], "{report:?}");
    }
}
