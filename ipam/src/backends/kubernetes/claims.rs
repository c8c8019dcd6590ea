//! `IPAMClaim`s (`k8s.cni.cncf.io/v1alpha1`, [`plexus_crds::IpamClaim`]): the claim an ADD
//! binds its addresses to, read before allocating and given the addresses after (its
//! `status.ips`, through the status subresource). RBAC: `get` on `ipamclaims`, `patch` on
//! `ipamclaims/status`, in the pods' namespaces.

use kube::api::{Api, Patch, PatchParams};
use plexus_crds::IpamClaim;

use super::client::{ApiError, KubeClient};
use super::objects::unexpected;
use crate::error::{KubeStoreError, StoreError, Unexpected};

/// The `args.cni` key of the claim reference (Multus's networks-annotation key, handed on by
/// the `plexus` meta-plugin).
pub const CLAIM_ARG: &str = "ipam-claim-reference";

/// Why a claim cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// No claim of that name in the pod's namespace.
    #[error("IPAMClaim \"{0}\" does not exist (ipam-claim-reference of the pod's network)")]
    Missing(String),
    /// The claim is for another network.
    #[error("IPAMClaim \"{claim}\" is for network {claimed:?}, not {network:?}")]
    OtherNetwork {
        /// `namespace/name`.
        claim: String,
        /// The claim's `spec.network`.
        claimed: String,
        /// This configuration's network name.
        network: String,
    },
    /// The API failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// GETs the claim `namespace/name` and checks that its `spec.network` (when set) is one of
/// `networks` (the configuration's `name` and `network_name`).
pub async fn check(
    client: &KubeClient,
    namespace: &str,
    name: &str,
    networks: &[&str],
) -> Result<IpamClaim, ClaimError> {
    let api: Api<IpamClaim> = Api::namespaced(client.client().clone(), namespace);
    let what = || format!("get ipamclaims \"{namespace}/{name}\"");
    let resource = format!("ipamclaims \"{namespace}/{name}\"");
    let claim = match client.call("get", resource, api.get(name)).await {
        Ok(claim) => claim,
        Err(ApiError::NotFound(_)) => {
            return Err(ClaimError::Missing(format!("{namespace}/{name}")))
        }
        Err(e) => return Err(unexpected(e, what).into()),
    };
    let claimed = &claim.spec.network;
    if !claimed.is_empty() && !networks.contains(&claimed.as_str()) {
        return Err(ClaimError::OtherNetwork {
            claim: format!("{namespace}/{name}"),
            claimed: claimed.clone(),
            network: networks.first().copied().unwrap_or_default().to_string(),
        });
    }
    Ok(claim)
}

/// What became of a status write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusWrite {
    /// The claim holds the addresses now.
    Written,
    /// The claim changed since it was read (409 Conflict): read it again.
    Changed,
}

/// Writes `ips` (CIDR form) into the claim's `status.ips` with a merge patch of its status
/// subresource, on the condition that the claim is still at `version` (the `resourceVersion`
/// read, when given); the rest of the status is left as it is. The condition is what keeps two
/// concurrent ADDs of one claim from each binding an address of their own: the second write
/// fails, and its ADD gives its address back and takes the first one's.
pub async fn write_status(
    client: &KubeClient,
    namespace: &str,
    name: &str,
    ips: &[String],
    version: Option<&str>,
) -> Result<StatusWrite, StoreError> {
    let api: Api<IpamClaim> = Api::namespaced(client.client().clone(), namespace);
    let what = || format!("patch ipamclaims/status \"{namespace}/{name}\"");
    let mut body = serde_json::json!({"status": {"ips": ips}});
    if let Some(version) = version {
        body["metadata"] = serde_json::json!({"resourceVersion": version});
    }
    let patch = Patch::Merge(body);
    let params = PatchParams {
        field_manager: Some("plexus-ipam".into()),
        ..PatchParams::default()
    };
    match client
        .call(
            "patch",
            format!("ipamclaims/status \"{namespace}/{name}\""),
            api.patch_status(name, &params, &patch),
        )
        .await
    {
        Ok(_) => Ok(StatusWrite::Written),
        Err(ApiError::Conflict(_)) => Ok(StatusWrite::Changed),
        Err(e) => Err(match e {
            ApiError::NotFound(_) => KubeStoreError::Unexpected {
                call: what(),
                answer: Unexpected::ClaimStatus,
            }
            .into(),
            e => unexpected(e, what),
        }),
    }
}
