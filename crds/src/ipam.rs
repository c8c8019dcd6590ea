//! `IPAMBlock` (`ipam.plexus.cni.dev/v1alpha1`): one aligned block of addresses of a
//! `plexus-ipam` network and every allocation in it. Written by hand, like the
//! NetworkAttachmentDefinition, so that the schema says exactly what is stored.
//!
//! A block is the unit of compare-and-swap: `plexus-ipam` changes it only with a `replace`
//! carrying the `resourceVersion` it read, or creates it only if it is absent. The design is
//! documented in `plexus_ipam::backends::kubernetes`.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::resource::{definition, string};

/// The API group.
pub const GROUP: &str = "ipam.plexus.cni.dev";
/// The API version.
pub const VERSION: &str = "v1alpha1";

/// Who holds one address of a block.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockAllocation {
    /// The pod's namespace (empty outside Kubernetes).
    #[serde(
        rename = "podNamespace",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub pod_namespace: String,
    /// The pod's name (empty outside Kubernetes).
    #[serde(rename = "podName", default, skip_serializing_if = "String::is_empty")]
    pub pod_name: String,
    /// The pod's UID, when the runtime gave it.
    #[serde(rename = "podUID", default, skip_serializing_if = "String::is_empty")]
    pub pod_uid: String,
    /// The container (sandbox) ID.
    #[serde(rename = "containerID", default)]
    pub container_id: String,
    /// The interface name in the container.
    #[serde(default)]
    pub ifname: String,
    /// The node whose allocator wrote it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    /// The `IPAMClaim` the address is bound to, as `namespace/name`: the pod fields then name
    /// the pod using it now, and only the claim's deletion frees it. Empty for a pod's own.
    #[serde(
        rename = "ipamClaim",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub ipam_claim: String,
}

/// The spec of a block.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct IpamBlockSpec {
    /// The network (`network_name`; empty for the unnamed network).
    #[serde(default)]
    pub network: String,
    /// The block, as a CIDR with its host bits zero (`10.1.0.64/26`, `fd00::40/122`).
    pub cidr: String,
    /// The range CIDR the block belongs to, for a range that does not share addresses with
    /// overlapping ranges (`enable_overlapping_ranges: false`); empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub range: String,
    /// The allocations, keyed by address (`10.1.0.70`, `fd00::41`).
    #[serde(default)]
    pub allocations: BTreeMap<String, BlockAllocation>,
}

namespaced_resource! {
    kind: "IPAMBlock", plural: "ipamblocks";
    /// One block of addresses and its allocations.
    pub struct IpamBlock {
        /// Name, namespace, labels, resourceVersion.
        metadata,
        /// The block and its allocations.
        spec: IpamBlockSpec,
    }
}

/// The CustomResourceDefinition: namespaced, with the network and CIDR as printer columns.
pub fn crd() -> CustomResourceDefinition {
    let allocation = json!({
        "type": "object",
        "required": ["containerID", "ifname"],
        "properties": {
            "podNamespace": string("The pod's namespace."),
            "podName": string("The pod's name."),
            "podUID": string("The pod's UID."),
            "containerID": string("The container (sandbox) ID."),
            "ifname": string("The interface name in the container."),
            "node": string("The node whose allocator wrote it."),
            "ipamClaim": string("The IPAMClaim the address is bound to (namespace/name).")
        }
    });
    let allocations = json!({
        "description": "The allocations, keyed by address.",
        "type": "object",
        "additionalProperties": allocation
    });
    definition::<IpamBlock>(
        /* names */ json!({"singular": "ipamblock"}),
        /* version extras */
        json!({
            "additionalPrinterColumns": [
                {"name": "Network", "type": "string", "jsonPath": ".spec.network"},
                {"name": "CIDR", "type": "string", "jsonPath": ".spec.cidr"},
                {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
            ]
        }),
        /* schema */
        json!({
            "description": "An aligned block of addresses of a plexus-ipam network and \
                            its allocations; changed only by compare-and-swap on \
                            resourceVersion.",
            "required": ["spec"],
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["cidr"],
                    "properties": {
                        "network": string("The network (network_name; empty for the unnamed network)."),
                        "cidr": string("The block CIDR, host bits zero."),
                        "range": string("The range CIDR, for a range that does not share addresses with overlapping ranges."),
                        "allocations": allocations
                    }
                }
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_round_trips_with_its_allocations() {
        let mut spec = IpamBlockSpec {
            network: "net".into(),
            cidr: "10.0.0.0/26".into(),
            ..IpamBlockSpec::default()
        };
        spec.allocations.insert(
            "10.0.0.1".into(),
            BlockAllocation {
                pod_namespace: "default".into(),
                pod_name: "a".into(),
                pod_uid: "u".into(),
                container_id: "c".into(),
                ifname: "net1".into(),
                node: "n1".into(),
                ..BlockAllocation::default()
            },
        );
        let block = IpamBlock::new("net-10.0.0.0-26", spec);
        let json = serde_json::to_value(&block).unwrap();
        assert_eq!(json["apiVersion"], "ipam.plexus.cni.dev/v1alpha1");
        assert_eq!(
            json["spec"]["allocations"]["10.0.0.1"],
            serde_json::json!({"podNamespace": "default", "podName": "a", "podUID": "u",
                               "containerID": "c", "ifname": "net1", "node": "n1"})
        );
        let back: IpamBlock = serde_json::from_value(json).unwrap();
        assert_eq!(back, block);
        assert_eq!(crd().spec.names.plural, PLURAL);
    }
}
