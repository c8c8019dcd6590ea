//! ADD bound to an `IPAMClaim`: the claim named by `args.cni["ipam-claim-reference"]` decides
//! which addresses are the claim's, so a pod re-created with the same claim gets them again.

use std::collections::BTreeSet;
use std::net::IpAddr;

use plexus_cni::skel::Request;
use plexus_cni::{CniError, CniResult, ErrorCode};
use serde_json::Value;
use tracing::info;

use super::add::add;
use crate::backends::kubernetes::claims::{self, ClaimError, CLAIM_ARG};
use crate::backends::kubernetes::KubeStore;
use crate::config::{Backend, IpamConfig};
use crate::store::{Allocation, Owner, Store};

/// The claim `(namespace, name)` of `args.cni["ipam-claim-reference"]`, if the input has one;
/// code 7 when it is not a name, the pod's namespace is unknown, or the store is not the
/// Kubernetes store.
pub fn claim_reference(
    req: &Request,
    config: &IpamConfig,
    owner: &Owner,
) -> Result<Option<(String, String)>, CniError> {
    let invalid = |msg: String| CniError::new(ErrorCode::InvalidNetworkConfig, msg);
    let Some(value) = req
        .config
        .get("args")
        .and_then(|a| a.get("cni"))
        .and_then(|c| c.get(CLAIM_ARG))
    else {
        return Ok(None);
    };
    let name = match value {
        Value::Null => return Ok(None),
        Value::String(name) if !name.is_empty() && !name.contains('/') => name.clone(),
        other => {
            return Err(invalid(format!(
                "args.cni.{CLAIM_ARG} must be the name of an IPAMClaim, not {other}"
            )))
        }
    };
    if !matches!(config.backend, Backend::Kubernetes { .. }) {
        return Err(invalid(format!(
            "args.cni.{CLAIM_ARG} {name:?}: addresses bound to an IPAMClaim need the Kubernetes \
             store (set kubernetes.kubeconfig)"
        )));
    }
    if owner.pod_namespace.is_empty() {
        return Err(invalid(format!(
            "args.cni.{CLAIM_ARG} {name:?}: the pod's namespace is unknown (K8S_POD_NAMESPACE \
             in CNI_ARGS)"
        )));
    }
    Ok(Some((owner.pod_namespace.clone(), name)))
}

/// How many times a claim-bound ADD starts over when the claim changed under it or records
/// other addresses.
const CLAIM_ATTEMPTS: usize = 10;

/// ADD bound to the claim `namespace/name`. The claim's `status.ips` decides which addresses
/// are the claim's: it is written only on the condition that the claim did not change since it
/// was read, and only when it records nothing yet, exactly what this ADD got, or addresses the
/// store no longer holds for the claim. So of concurrent ADDs of one claim, one writes first;
/// an ADD whose write finds the claim changed, or whose addresses differ from the recorded ones
/// (still held), gives back its own addresses that are not recorded and starts over, until it
/// finds the recorded ones.
pub async fn add_claimed(
    store: &KubeStore,
    config: &IpamConfig,
    owner: &Owner,
    namespace: &str,
    name: &str,
) -> Result<CniResult, CniError> {
    let networks = [config.name.as_str(), config.network_name.as_str()];
    let pools = config.pools().len();
    for _ in 0..CLAIM_ATTEMPTS {
        let claim = read_claim(store, namespace, name, &networks).await?;
        let result = add(store, config, owner).await?;
        let mine: BTreeSet<IpAddr> = result.ips[..pools]
            .iter()
            .map(|ip| ip.address.addr())
            .collect();
        if give_back(store, config, owner, &claim, &mine).await? {
            continue;
        }
        let ips: Vec<String> = result.ips[..pools]
            .iter()
            .map(|ip| ip.address.to_string())
            .collect();
        let version = claim.metadata.resource_version.as_deref();
        match claims::write_status(store.client(), namespace, name, &ips, version).await? {
            claims::StatusWrite::Written => {
                info!("IPAMClaim {namespace}/{name} holds {}", ips.join(", "));
                return Ok(result);
            }
            claims::StatusWrite::Changed => {
                let now = read_claim(store, namespace, name, &networks).await?;
                give_back(store, config, owner, &now, &mine).await?;
            }
        }
    }
    Err(CniError::new(
        ErrorCode::TryAgainLater,
        format!("IPAMClaim {namespace}/{name} kept changing during {CLAIM_ATTEMPTS} attempts"),
    ))
}

/// When `claim` records addresses other than `mine` and the store still holds them for the
/// claim (another ADD of the claim recorded its addresses first), releases those of `mine`
/// that are not recorded and returns true; otherwise does nothing and returns false.
async fn give_back(
    store: &KubeStore,
    config: &IpamConfig,
    owner: &Owner,
    claim: &plexus_crds::IpamClaim,
    mine: &BTreeSet<IpAddr>,
) -> Result<bool, CniError> {
    let recorded: BTreeSet<IpAddr> = claim
        .status
        .ips
        .iter()
        .filter_map(|cidr| cidr.parse::<ipnet::IpNet>().ok().map(|n| n.addr()))
        .collect();
    if recorded.is_empty() || recorded == *mine {
        return Ok(false);
    }
    let bound: Vec<Allocation> = store
        .usage()
        .await?
        .into_iter()
        .filter(|u| u.network == config.network_name)
        .flat_map(|u| u.allocations)
        .filter(|a| a.owner.claim == owner.claim)
        .collect();
    if !recorded
        .iter()
        .all(|ip| bound.iter().any(|a| a.address == *ip))
    {
        return Ok(false);
    }
    for a in &bound {
        if mine.contains(&a.address) && !recorded.contains(&a.address) {
            store.release_exact(&config.network_name, a).await?;
            info!(
                "gave {} back: IPAMClaim {} holds other addresses",
                a.address, owner.claim
            );
        }
    }
    Ok(true)
}

/// GETs and checks the claim; a missing claim or one of another network is code 7.
async fn read_claim(
    store: &KubeStore,
    namespace: &str,
    name: &str,
    networks: &[&str],
) -> Result<plexus_crds::IpamClaim, CniError> {
    claims::check(store.client(), namespace, name, networks)
        .await
        .map_err(|e| match e {
            ClaimError::Store(e) => e.into(),
            e => CniError::new(ErrorCode::InvalidNetworkConfig, e.to_string()),
        })
}
