//! The CNI plugin `plexus-ipam`: ADD, DEL, CHECK, STATUS and GC over any [`Store`]; VERSION is
//! answered by the skeleton.
//!
//! * **ADD** allocates one address in each range of the configuration, in order (the top-level
//!   `range` first). When a later range fails, the addresses this ADD took in the earlier ranges
//!   are released again. The result is IPAM-style: `ips` (each address with its range's prefix
//!   length; `gateway` on the addresses of its family), `routes` and `dns` from the
//!   configuration, the static `addresses` appended, no interfaces; written at the request's
//!   `cniVersion`. A repeated ADD of the same pod and interface returns the same addresses.
//! * **DEL** releases, in every range, what this container ID and interface hold; nothing held is
//!   fine. Every range is attempted even if one fails (Whereabouts stops at the first range
//!   that holds nothing); a datastore error is reported after all ranges were attempted, so the
//!   runtime retries instead of leaking the address (Whereabouts swallows DEL errors).
//! * **CHECK** verifies that this container and interface still hold an address in each range,
//!   and, when `prevResult` is given, that its addresses are the ones held.
//! * **STATUS** checks that the datastore is usable (local store: its directory is writable);
//!   failure is error 50.
//! * **GC** releases the allocations of this configuration's ranges (same `network_name`)
//!   **made by this node** whose container ID and interface are not in
//!   `cni.dev/valid-attachments` (or the older `cni.dev/attachments`). Only this node's: the
//!   runtime that sends GC knows only its own node's containers, so another node's allocations
//!   can never be judged from it. Each release is conditional on the allocation being unchanged
//!   ([`Store::release_exact`]). Caveat: the valid list covers one CNI network; when several CNI
//!   networks share a pool (same range and `network_name`), GC of one would release the other's
//!   attachments on this node, so give such networks distinct `network_name`s.
//!
//! **Claims.** With `args.cni["ipam-claim-reference"]` in the input (the `plexus` meta-plugin
//! puts it there from the networks annotation), the addresses are bound to the `IPAMClaim` of
//! that name in the pod's namespace (Kubernetes store only; any other store refuses it with
//! code 7, since it could not keep the promise). ADD reads the claim (missing, or for another
//! network: code 7), returns the address the claim holds anywhere in the pool (from any node,
//! the record then naming the new pod and container), else allocates one bound to the claim,
//! and writes the addresses into the claim's `status.ips`. DEL never releases a claim-bound
//! address, and GC releases one only when its claim is gone (see [`crate::claimed`]).
//!
//! The owner of an address: `K8S_POD_NAMESPACE`, `K8S_POD_NAME` and `K8S_POD_UID` from
//! `CNI_ARGS`, `CNI_CONTAINERID`, `CNI_IFNAME`, and the node's name (`NODE_NAME`, else the host
//! name).

use std::collections::HashSet;
use std::net::IpAddr;

use plexus_cni::list::{valid_attachments, Attachment};
use plexus_cni::result::IpConfig;
use plexus_cni::runtime::block_on;
use plexus_cni::skel::{Plugin, Request};
use plexus_cni::{CniError, CniResult, ErrorCode};
use serde_json::Value;
use tracing::{debug, info, warn};

use crate::backends::etcd::EtcdStore;
use crate::backends::kubernetes::{KubeOptions, KubePods, KubeStore};
use crate::backends::local::LocalStore;
use crate::claimed;
use crate::config::{Backend, IpamConfig};
use crate::store::{Allocation, Owner, PoolUsage, Store, StoreError};

/// The `plexus-ipam` plugin.
pub struct PlexusIpam;

impl Plugin for PlexusIpam {
    fn add(&self, req: &Request) -> Result<Value, CniError> {
        let config = load(req)?;
        config.check_version(req.version)?;
        let mut owner = owner(req, &config)?;
        let claim = claimed::claim_reference(req, &config, &owner)?;
        if let Some((namespace, name)) = &claim {
            owner.claim = format!("{namespace}/{name}");
        }
        let result = block_on(async {
            let store = open_store(&config).await?;
            match (&claim, &store) {
                (Some((namespace, name)), AnyStore::Kubernetes(kube)) => {
                    claimed::add_claimed(kube, &config, &owner, namespace, name).await
                }
                _ => add(&store, &config, &owner).await,
            }
        })?;
        Ok(result.to_value(req.version))
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        let config = load(req)?;
        block_on(async {
            let store = open_store(&config).await?;
            del(&store, &config, &req.env.container_id, &req.env.ifname).await
        })
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let config = load(req)?;
        let prev = match req.config.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                CniResult::from_value(v, req.version)
                    .map_err(|e| CniError::new(e.code(), format!("prevResult: {e}")))?,
            ),
        };
        block_on(async {
            let store = open_store(&config).await?;
            check(
                &store,
                &config,
                &req.env.container_id,
                &req.env.ifname,
                prev.as_ref(),
            )
            .await
        })
    }

    fn status(&self, req: &Request) -> Result<(), CniError> {
        let config = load(req)?;
        block_on(async {
            let store = open_store(&config).await.map_err(unavailable)?;
            store.status().await.map_err(|e| unavailable(e.into()))
        })
    }

    fn gc(&self, req: &Request) -> Result<(), CniError> {
        let config = load(req)?;
        let valid = valid_attachments(&req.config)?;
        block_on(async {
            let store = open_store(&config).await?;
            let claims = match &store {
                AnyStore::Kubernetes(kube) => Some(KubePods::new(kube.client().clone())),
                _ => None,
            };
            gc(&store, &config, &valid, claims.as_ref())
                .await
                .map(|_| ())
        })
    }
}

/// Loads the configuration and starts logging as it says.
fn load(req: &Request) -> Result<IpamConfig, CniError> {
    let config = IpamConfig::load(&req.config)?;
    plexus_cni::logging::init(config.log_level.as_deref(), config.log_file.as_deref());
    debug!(
        command = %req.env.command,
        container = %req.env.container_id,
        ifname = %req.env.ifname,
        "plexus-ipam: network {:?}, {} range(s), backend {:?}",
        config.name,
        config.ranges.len(),
        config.backend
    );
    Ok(config)
}

fn unavailable(e: CniError) -> CniError {
    CniError::new(ErrorCode::PluginNotAvailable, e.msg).with_details(e.details)
}

/// The owner of this call's addresses.
pub fn owner(req: &Request, config: &IpamConfig) -> Result<Owner, CniError> {
    let arg = |k: &str| req.env.args.get(k).unwrap_or_default().to_string();
    Ok(Owner {
        pod_namespace: arg("K8S_POD_NAMESPACE"),
        pod_name: arg("K8S_POD_NAME"),
        pod_uid: arg("K8S_POD_UID"),
        container_id: req.env.container_id.clone(),
        ifname: req.env.ifname.clone(),
        node: config.node_name.clone(),
        claim: String::new(),
    })
}

/// How long one etcd request may take.
const ETCD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Any of the datastores, chosen by the configuration's `backend`.
#[derive(Debug)]
pub enum AnyStore {
    /// The embedded local store.
    Local(LocalStore),
    /// The Kubernetes API server (blocks with per-node Leases).
    Kubernetes(Box<KubeStore>),
    /// An etcd cluster.
    Etcd(EtcdStore),
}

/// Opens the configured datastore.
pub async fn open_store(config: &IpamConfig) -> Result<AnyStore, CniError> {
    match &config.backend {
        Backend::Local { path } => Ok(AnyStore::Local(LocalStore::new(path))),
        Backend::Kubernetes {
            kubeconfig,
            namespace,
        } => KubeStore::open_with(kubeconfig, namespace, kube_options(config))
            .await
            .map(|s| AnyStore::Kubernetes(Box::new(s)))
            .map_err(CniError::from),
        Backend::Etcd { endpoints, prefix } => {
            EtcdStore::connect_with(endpoints, prefix, ETCD_TIMEOUT, &config.etcd_auth)
                .await
                .map(AnyStore::Etcd)
                .map_err(CniError::from)
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

impl AnyStore {
    /// Whether the datastore can be used now (STATUS).
    pub async fn status(&self) -> Result<(), StoreError> {
        match self {
            AnyStore::Local(s) => s.check_writable(),
            AnyStore::Kubernetes(s) => s.check().await,
            AnyStore::Etcd(s) => s.status().await,
        }
    }
}

impl Store for AnyStore {
    async fn allocate(
        &self,
        pool: &crate::store::Pool,
        owner: &Owner,
    ) -> Result<IpAddr, StoreError> {
        match self {
            AnyStore::Local(s) => s.allocate(pool, owner).await,
            AnyStore::Kubernetes(s) => s.allocate(pool, owner).await,
            AnyStore::Etcd(s) => s.allocate(pool, owner).await,
        }
    }

    async fn release(
        &self,
        pool: &crate::store::Pool,
        container_id: &str,
        ifname: &str,
    ) -> Result<Vec<IpAddr>, StoreError> {
        match self {
            AnyStore::Local(s) => s.release(pool, container_id, ifname).await,
            AnyStore::Kubernetes(s) => s.release(pool, container_id, ifname).await,
            AnyStore::Etcd(s) => s.release(pool, container_id, ifname).await,
        }
    }

    async fn usage(&self) -> Result<Vec<PoolUsage>, StoreError> {
        match self {
            AnyStore::Local(s) => s.usage().await,
            AnyStore::Kubernetes(s) => s.usage().await,
            AnyStore::Etcd(s) => s.usage().await,
        }
    }

    async fn release_exact(
        &self,
        network: &str,
        allocation: &Allocation,
    ) -> Result<bool, StoreError> {
        match self {
            AnyStore::Local(s) => s.release_exact(network, allocation).await,
            AnyStore::Kubernetes(s) => s.release_exact(network, allocation).await,
            AnyStore::Etcd(s) => s.release_exact(network, allocation).await,
        }
    }
}

/// ADD: one address from each range, or none at all.
pub async fn add(
    store: &impl Store,
    config: &IpamConfig,
    owner: &Owner,
) -> Result<CniResult, CniError> {
    let pools = config.pools();
    let mut result = CniResult::default();
    for (i, pool) in pools.iter().enumerate() {
        match store.allocate(pool, owner).await {
            Ok(address) => {
                info!(
                    "allocated {address} in {} to {} ({})",
                    pool.range.cidr(),
                    owner.display(),
                    owner.ifname
                );
                let gateway = config.gateway.filter(|g| g.is_ipv4() == address.is_ipv4());
                result.ips.push(IpConfig {
                    address: ipnet::IpNet::new(address, pool.range.prefix_len())
                        .expect("prefix of a valid range"),
                    gateway,
                    interface: None,
                });
            }
            Err(e) => {
                warn!("allocation in {} failed: {e}", pool.range.cidr());
                for earlier in &pools[..i] {
                    if let Err(undo) = store
                        .release(earlier, &owner.container_id, &owner.ifname)
                        .await
                    {
                        warn!(
                            "could not release the address taken in {}: {undo}",
                            earlier.range.cidr()
                        );
                    }
                }
                let mut err: CniError = e.into();
                if pools.len() > 1 {
                    err.msg = format!("range {} (#{}): {}", pool.range.cidr(), i + 1, err.msg);
                }
                return Err(err);
            }
        }
    }
    result.ips.extend(config.addresses.iter().cloned());
    result.routes = config.routes.clone();
    result.dns = config.dns.clone();
    Ok(result)
}

/// DEL: releases this container's and interface's addresses in every range.
pub async fn del(
    store: &impl Store,
    config: &IpamConfig,
    container_id: &str,
    ifname: &str,
) -> Result<(), CniError> {
    let mut failures: Vec<(String, StoreError)> = Vec::new();
    for pool in config.pools() {
        match store.release(&pool, container_id, ifname).await {
            Ok(released) => {
                for a in released {
                    info!("released {a} of {container_id} ({ifname})");
                }
            }
            Err(e) => failures.push((pool.range.cidr().to_string(), e)),
        }
    }
    match failures.len() {
        0 => Ok(()),
        _ => {
            let code = failures[0].1.code();
            let msg = failures
                .iter()
                .map(|(cidr, e)| format!("releasing in {cidr}: {e}"))
                .collect::<Vec<_>>()
                .join("; ");
            Err(CniError::new(code, msg))
        }
    }
}

/// CHECK: this container and interface still hold an address in every range (and the ones
/// `prev` lists, when given).
pub async fn check(
    store: &impl Store,
    config: &IpamConfig,
    container_id: &str,
    ifname: &str,
    prev: Option<&CniResult>,
) -> Result<(), CniError> {
    let usage = store.usage().await?;
    let mine: Vec<IpAddr> = usage
        .iter()
        .filter(|u| u.network == config.network_name)
        .flat_map(|u| &u.allocations)
        .filter(|a| a.owner.container_id == container_id && a.owner.ifname == ifname)
        .map(|a| a.address)
        .collect();
    for range in &config.ranges {
        if !mine.iter().any(|a| range.cidr().contains(a)) {
            return Err(CniError::new(
                ErrorCode::UnknownContainer,
                format!(
                    "container {container_id} ({ifname}) holds no address in {}",
                    range.cidr()
                ),
            ));
        }
    }
    if let Some(prev) = prev {
        for ip in &prev.ips {
            let in_ours = config
                .ranges
                .iter()
                .any(|r| r.cidr().contains(&ip.address.addr()));
            if in_ours && !mine.contains(&ip.address.addr()) {
                return Err(CniError::new(
                    ErrorCode::UnknownContainer,
                    format!(
                        "{} of container {container_id} ({ifname}) is no longer allocated to it",
                        ip.address.addr()
                    ),
                ));
            }
        }
    }
    Ok(())
}

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
    use crate::gc::PodLookup;
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(ipam: Value, dir: &std::path::Path) -> IpamConfig {
        let mut ipam = ipam;
        ipam["backend"] = json!("local");
        ipam["local_path"] = json!(dir);
        let conf = json!({"cniVersion": "1.1.0", "name": "net", "ipam": ipam});
        IpamConfig::load_with(conf.as_object().unwrap(), &[], "node-a").unwrap()
    }

    fn owner(cid: &str, ifname: &str) -> Owner {
        Owner {
            pod_namespace: String::new(),
            pod_name: String::new(),
            pod_uid: String::new(),
            container_id: cid.into(),
            ifname: ifname.into(),
            node: "node-a".into(),
            claim: String::new(),
        }
    }

    #[test]
    fn add_builds_an_ipam_result_and_rolls_back() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(
            json!({"type": "whereabouts", "range": "10.0.0.0/30", "gateway": "10.0.0.1",
                   "ipRanges": [{"range": "fd00::/126"}],
                   "routes": [{"dst": "0.0.0.0/0"}], "dns": {"nameservers": ["10.0.0.53"]},
                   "addresses": [{"address": "10.7.0.5/24"}]}),
            dir.path(),
        );
        let store = LocalStore::new(dir.path());
        block_on(async {
            let r = add(&store, &c, &owner("c1", "net1")).await.unwrap();
            let v = r.to_value(plexus_cni::SpecVersion::V1_1_0);
            assert_eq!(
                v,
                json!({"cniVersion": "1.1.0",
                       "ips": [{"address": "10.0.0.2/30", "gateway": "10.0.0.1"},
                               {"address": "fd00::1/126"},
                               {"address": "10.7.0.5/24"}],
                       "routes": [{"dst": "0.0.0.0/0"}],
                       "dns": {"nameservers": ["10.0.0.53"]}})
            );
            // The v4 range is full now (the gateway is excluded): the next ADD fails with 120
            // and gives back what it took in... nothing, since the first range failed; a
            // config with the full range last rolls back the first.
            let err = add(&store, &c, &owner("c2", "net1")).await.unwrap_err();
            assert_eq!(err.code, 120, "{err}");
            let swapped = config(
                json!({"type": "whereabouts", "range": "fd00::/126",
                       "ipRanges": [{"range": "10.0.0.0/30", "exclude": ["10.0.0.1"]}]}),
                dir.path(),
            );
            let err = add(&store, &swapped, &owner("c3", "net1"))
                .await
                .unwrap_err();
            assert_eq!(err.code, 120);
            let held: usize = store
                .usage()
                .await
                .unwrap()
                .iter()
                .map(|u| u.allocations.len())
                .sum();
            assert_eq!(held, 2, "the v6 address of the failed ADD was released");
            // CHECK, DEL, CHECK.
            check(&store, &c, "c1", "net1", Some(&r)).await.unwrap();
            assert_eq!(
                check(&store, &c, "c2", "net1", None)
                    .await
                    .unwrap_err()
                    .code,
                3
            );
            del(&store, &c, "c1", "net1").await.unwrap();
            del(&store, &c, "c1", "net1").await.unwrap();
            assert_eq!(
                check(&store, &c, "c1", "net1", None)
                    .await
                    .unwrap_err()
                    .code,
                3
            );
            assert!(store.usage().await.unwrap().is_empty());
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn gc_releases_only_this_nodes_invalid_attachments() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(
            json!({"type": "plexus-ipam", "range": "10.0.0.0/24"}),
            dir.path(),
        );
        let other_range = config(
            json!({"type": "plexus-ipam", "range": "10.1.0.0/24"}),
            dir.path(),
        );
        let store = LocalStore::new(dir.path());
        block_on(async {
            add(&store, &c, &owner("keep", "net1")).await.unwrap();
            add(&store, &c, &owner("stale", "net1")).await.unwrap();
            add(&store, &c, &owner("keep", "net2")).await.unwrap();
            let mut remote = owner("remote", "net1");
            remote.node = "node-b".into();
            add(&store, &c, &remote).await.unwrap();
            add(&store, &other_range, &owner("elsewhere", "net1"))
                .await
                .unwrap();
            let valid = vec![Attachment {
                container_id: "keep".into(),
                ifname: "net1".into(),
            }];
            let released = gc(&store, &c, &valid, None).await.unwrap();
            let mut gone: Vec<String> = released
                .iter()
                .map(|a| format!("{}/{}", a.owner.container_id, a.owner.ifname))
                .collect();
            gone.sort();
            assert_eq!(gone, ["keep/net2", "stale/net1"]);
            let left: Vec<String> = store
                .usage()
                .await
                .unwrap()
                .iter()
                .flat_map(|u| u.allocations.iter().map(|a| a.owner.container_id.clone()))
                .collect();
            assert_eq!(left, ["keep", "remote", "elsewhere"]);
            Ok(())
        })
        .unwrap();
        let conf = json!({"cni.dev/attachments": [{"containerID": "a", "ifname": "b"}]});
        assert_eq!(
            valid_attachments(conf.as_object().unwrap()).unwrap().len(),
            1
        );
        let conf = json!({"cni.dev/valid-attachments": 5});
        assert_eq!(
            valid_attachments(conf.as_object().unwrap())
                .unwrap_err()
                .code,
            7
        );
    }

    #[test]
    fn unwired_backends_are_a_clear_error() {
        let conf = json!({"cniVersion": "1.1.0", "name": "net",
                          "ipam": {"type": "whereabouts", "range": "10.0.0.0/24",
                                   "kubernetes": {"kubeconfig": "/nonexistent"}}});
        let c = IpamConfig::load_with(conf.as_object().unwrap(), &[], "n").unwrap();
        let err = block_on(open_store(&c)).unwrap_err();
        assert_eq!(err.code, 121);
    }
}
