//! `IPAMClaim` (`k8s.cni.cncf.io/v1alpha1`): a claim on the addresses of one network interface,
//! defined by the ipamclaims project of the Kubernetes Network Plumbing Working Group. A pod
//! names it with `ipam-claim-reference` in an element of its networks annotation; the IPAM then
//! binds the addresses to the claim instead of the pod, so a pod re-created with the same claim
//! (a KubeVirt VM, a StatefulSet member) gets them again, on any node, and they are freed only
//! when the claim is deleted.
//!
//! Written from the project's published schema in our own words. Plexus does not install the
//! definition (whoever creates the claims does: KubeVirt, the ipamclaims project), so
//! [`crate::crds`] does not list it; [`crd`] is for test clusters. `plexus-ipam` reads the
//! spec and writes `status.ips`; newer versions' `status.conditions` and `status.ownerPod` are
//! kept as they are.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::resource::{definition, string};

/// The API group: Multus's, shared with the NetworkAttachmentDefinition.
pub use crate::nad::GROUP;
/// The API version.
pub const VERSION: &str = "v1alpha1";

/// What a claim is for.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct IpamClaimSpec {
    /// The network the addresses belong to (the network's name in its CNI configuration).
    #[serde(default)]
    pub network: String,
    /// The interface in the pod the addresses are for.
    #[serde(default)]
    pub interface: String,
}

/// What the IPAM holds for a claim.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct IpamClaimStatus {
    /// The addresses, as CIDRs (`10.0.0.5/24`).
    #[serde(default)]
    pub ips: Vec<String>,
    /// Anything newer versions keep here (`conditions`, `ownerPod`), read and kept as is.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

namespaced_resource! {
    kind: "IPAMClaim", plural: "ipamclaims";
    /// A claim on the addresses of one interface of a network.
    pub struct IpamClaim {
        /// Name, namespace, resourceVersion.
        metadata,
        /// The network and interface.
        spec: IpamClaimSpec,
        /// The addresses held.
        #[serde(default)]
        status: IpamClaimStatus = IpamClaimStatus::default(),
    }
}

/// The definition as the ipamclaims project publishes it in substance: namespaced, the status
/// a subresource (so `plexus-ipam` needs `update`/`patch` on `ipamclaims/status` only).
pub fn crd() -> CustomResourceDefinition {
    definition::<IpamClaim>(
        /* names */ json!({"singular": "ipamclaim", "listKind": format!("{KIND}List")}),
        /* version extras */ json!({"subresources": {"status": {}}}),
        /* schema */
        json!({
            "description": "A claim on the addresses of one interface of a network.",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["network", "interface"],
                    "properties": {
                        "network": string("The network the addresses belong to."),
                        "interface": string("The pod interface the addresses are for.")
                    }
                },
                "status": {
                    "type": "object",
                    "required": ["ips"],
                    "properties": {
                        "ips": {
                            "type": "array",
                            "description": "The addresses held, as CIDRs.",
                            "items": {"type": "string"}
                        },
                        "ownerPod": {
                            "type": "object",
                            "properties": {"name": string("The pod using the addresses.")}
                        },
                        "conditions": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": true
                            }
                        }
                    }
                }
            }
        }),
    )
}

/// [`crd`] as YAML, for `kubectl apply -f -` on a test cluster.
pub fn crd_yaml() -> String {
    serde_yaml::to_string(&crd()).expect("a CustomResourceDefinition serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_reads_newer_status_fields_and_the_crd_parses() {
        let claim: IpamClaim = serde_json::from_value(serde_json::json!({
            "apiVersion": "k8s.cni.cncf.io/v1alpha1", "kind": "IPAMClaim",
            "metadata": {"name": "vm-a.net1", "namespace": "ns"},
            "spec": {"network": "tenant", "interface": "net1"},
            "status": {"ips": ["10.0.0.5/24"], "ownerPod": {"name": "virt-launcher-a"},
                       "conditions": [{"type": "IPsAllocated", "status": "True"}]}
        }))
        .unwrap();
        assert_eq!(claim.spec.network, "tenant");
        assert_eq!(claim.status.ips, ["10.0.0.5/24"]);
        assert_eq!(claim.status.other["ownerPod"]["name"], "virt-launcher-a");
        let yaml = crd_yaml();
        let back: CustomResourceDefinition = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(back, crd());
        assert_eq!(
            back.metadata.name.as_deref(),
            Some("ipamclaims.k8s.cni.cncf.io")
        );
    }
}
