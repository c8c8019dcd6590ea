//! Custom resource types Plexus reads and writes, and their YAML.
//!
//! * [`NetworkAttachmentDefinition`] (`k8s.cni.cncf.io/v1`): the networks pods ask for.
//! * [`IpamBlock`] (`ipam.plexus.cni.dev/v1alpha1`): a block of addresses of the cluster IPAM
//!   (`plexus-ipam`) and its allocations.
//! * [`whereabouts`]: Whereabouts's `IPPool` and `OverlappingRangeIPReservation`, read when
//!   importing (not installed by Plexus).
//! * [`ipamclaim`]: the `IPAMClaim` of the ipamclaims project, whose addresses `plexus-ipam`
//!   binds to the claim (not installed by Plexus).
//!
//! [`crds`] lists the CustomResourceDefinition of every resource here and [`crd_yaml`] prints
//! them as one multi-document YAML stream (`plexusctl crds | kubectl apply -f -`).

#![warn(missing_docs)]

#[macro_use]
mod resource;
pub mod ipam;
pub mod ipamclaim;
mod nad;
pub mod whereabouts;

pub use ipam::{BlockAllocation, IpamBlock, IpamBlockSpec};
pub use ipamclaim::{IpamClaim, IpamClaimSpec, IpamClaimStatus};
pub use nad::{NetworkAttachmentDefinition, NetworkAttachmentDefinitionSpec};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
#[cfg(test)]
use serde::Deserialize;

/// The CustomResourceDefinition of every Plexus resource, in the order they should be applied.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![nad::crd(), ipam::crd()]
}

/// Every definition of [`crds`] as YAML, the documents separated by `---` lines.
pub fn crd_yaml() -> String {
    yaml_stream(&crds())
}

/// `crds` as one YAML stream, the documents separated by `---` lines.
pub fn yaml_stream(crds: &[CustomResourceDefinition]) -> String {
    crds.iter()
        .map(|crd| serde_yaml::to_string(crd).expect("a CustomResourceDefinition serializes"))
        .collect::<Vec<_>>()
        .join("---\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_yaml_holds_every_crd_and_parses_back() {
        let yaml = crd_yaml();
        let docs: Vec<CustomResourceDefinition> = serde_yaml::Deserializer::from_str(&yaml)
            .map(|doc| CustomResourceDefinition::deserialize(doc).expect("a CRD document"))
            .collect();
        assert_eq!(docs, crds());
        let nad = &docs[0];
        assert_eq!(
            nad.metadata.name.as_deref(),
            Some("network-attachment-definitions.k8s.cni.cncf.io")
        );
        assert_eq!(nad.spec.scope, "Namespaced");
        assert_eq!(
            docs[1].metadata.name.as_deref(),
            Some("ipamblocks.ipam.plexus.cni.dev")
        );
        assert!(
            yaml.starts_with("apiVersion: apiextensions.k8s.io/v1\n"),
            "{yaml}"
        );
    }
}
