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
//! address, and GC releases one only when its claim is gone (see [`claimed`]).
//!
//! The owner of an address: `K8S_POD_NAMESPACE`, `K8S_POD_NAME` and `K8S_POD_UID` from
//! `CNI_ARGS`, `CNI_CONTAINERID`, `CNI_IFNAME`, and the node's name (`NODE_NAME`, else the host
//! name).

//!
//! The verbs' bodies live one per module: [`add`], [`del`], [`check`], [`gc`], and the
//! claim-bound ADD in [`claimed`]; this module reads the request and picks the store
//! ([`AnyStore::open`]).

pub mod add;
pub mod agent;
pub mod check;
pub mod claimed;
pub mod del;
pub mod gc;

use plexus_cni::list::valid_attachments;
use plexus_cni::runtime::block_on;
use plexus_cni::skel::{Plugin, Request};
use plexus_cni::{CniError, CniResult, ErrorCode};
use serde_json::Value;
use tracing::debug;

use crate::backends::kubernetes::KubePods;
use crate::backends::AnyStore;
use crate::config::IpamConfig;
use crate::store::Owner;

pub use add::add;
pub use check::check;
pub use del::del;
pub use gc::gc;

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
            if claim.is_none() {
                match agent::add(&config, &owner, req.version).await {
                    Ok(answer) => return answer.map(Answer::Written),
                    Err(why) => agent::fell_back(&config, "ADD", &why),
                }
            }
            let store = open_store(&config).await?;
            match (&claim, &store) {
                (Some((namespace, name)), AnyStore::Kubernetes(kube)) => {
                    claimed::add_claimed(kube, &config, &owner, namespace, name).await
                }
                _ => add(&store, &config, &owner).await,
            }
            .map(Answer::Result)
        })?;
        Ok(match result {
            Answer::Written(value) => value,
            Answer::Result(result) => result.to_value(req.version),
        })
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        let config = load(req)?;
        let owner = owner(req, &config)?;
        block_on(async {
            match agent::del(&config, &owner, req.version).await {
                Ok(answer) => return answer,
                Err(why) => agent::fell_back(&config, "DEL", &why),
            }
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

/// An ADD's answer: written by the node agent, or made here.
enum Answer {
    /// The result as the agent wrote it.
    Written(Value),
    /// The result made here.
    Result(CniResult),
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

/// Opens the configured datastore.
async fn open_store(config: &IpamConfig) -> Result<AnyStore, CniError> {
    Ok(AnyStore::open(config).await?)
}

#[cfg(test)]
mod tests;
