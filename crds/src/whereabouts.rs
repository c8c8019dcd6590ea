//! Whereabouts's objects (`whereabouts.cni.cncf.io/v1alpha1`), which `plexusctl ipam import
//! whereabouts` reads and the guard of `plexus-ipam` looks at. Written from Whereabouts's
//! published schema in our own words; Plexus never installs these definitions (Whereabouts
//! does), so [`crate::crds`] does not list them: [`crds`] here is for test clusters.
//!
//! * [`IpPool`]: one range's allocations, keyed by the decimal offset of the address from the
//!   range's network address.
//! * [`OverlappingRangeIpReservation`]: one object per allocated address, named after the
//!   address (`:` written `-`, a `0` appended to a name ending in `:`), with the network name
//!   and `-` in front when the network has a `network_name`.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::{Deserialize, Serialize};

/// The API group of Whereabouts's objects.
pub const GROUP: &str = "whereabouts.cni.cncf.io";
/// Their API version.
pub const VERSION: &str = "v1alpha1";

pub use self::pool::{IpPool, IpPoolAllocation, IpPoolSpec};
pub use self::reservation::{OverlappingRangeIpReservation, OverlappingRangeIpReservationSpec};

/// `IPPool`.
pub mod pool {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    pub use super::{GROUP, VERSION};

    /// Who holds one address of a pool.
    #[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
    pub struct IpPoolAllocation {
        /// The container (sandbox) ID.
        #[serde(default)]
        pub id: String,
        /// The pod as `namespace/name`.
        #[serde(default)]
        pub podref: String,
        /// The interface name (absent in allocations of old Whereabouts versions).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub ifname: String,
    }

    /// A pool: its range and allocations.
    #[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
    pub struct IpPoolSpec {
        /// The range as a CIDR with host bits zero.
        pub range: String,
        /// The allocations, keyed by the address's offset from the range's network address,
        /// in decimal (Whereabouts writes offsets of 2^63 and more as negative numbers).
        #[serde(default)]
        pub allocations: BTreeMap<String, IpPoolAllocation>,
    }

    namespaced_resource! {
        kind: "IPPool", plural: "ippools";
        /// One Whereabouts range and its allocations.
        pub struct IpPool {
            /// Name (`[<network_name>-]<range with : and / written ->`), namespace.
            metadata,
            /// The range and its allocations.
            spec: IpPoolSpec,
        }
    }

    /// The definition, as Whereabouts publishes it in substance.
    pub fn crd() -> CustomResourceDefinition {
        let allocation = serde_json::json!({
            "type": "object",
            "description": "The holder of one address.",
            "required": ["id", "podref"],
            "properties": {
                "id": {"type": "string", "description": "The container ID."},
                "podref": {"type": "string", "description": "The pod, namespace/name."},
                "ifname": {"type": "string", "description": "The interface name."}
            }
        });
        super::definition::<IpPool>(
            "ippool",
            serde_json::json!({
                "type": "object",
                "required": ["range", "allocations"],
                "properties": {
                    "range": {"type": "string", "description": "The range, a CIDR."},
                    "allocations": {
                        "type": "object",
                        "description": "Allocations keyed by the offset from the network address.",
                        "additionalProperties": allocation
                    }
                }
            }),
        )
    }
}

/// `OverlappingRangeIPReservation`.
pub mod reservation {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    pub use super::{GROUP, VERSION};

    /// The holder of the address the object is named after.
    #[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
    pub struct OverlappingRangeIpReservationSpec {
        /// The container ID (Whereabouts's plugin leaves it empty).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub containerid: String,
        /// The pod as `namespace/name`.
        #[serde(default)]
        pub podref: String,
        /// The interface name.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub ifname: String,
    }

    namespaced_resource! {
        kind: "OverlappingRangeIPReservation", plural: "overlappingrangeipreservations";
        /// One address reserved across the overlapping ranges of a network.
        pub struct OverlappingRangeIpReservation {
            /// Name (`[<network_name>-]<address with : written ->`), namespace.
            metadata,
            /// The holder.
            spec: OverlappingRangeIpReservationSpec,
        }
    }

    /// The definition, as Whereabouts publishes it in substance.
    pub fn crd() -> CustomResourceDefinition {
        super::definition::<OverlappingRangeIpReservation>(
            "overlappingrangeipreservation",
            serde_json::json!({
                "type": "object",
                "required": ["podref"],
                "properties": {
                    "containerid": {"type": "string", "description": "The container ID."},
                    "podref": {"type": "string", "description": "The pod, namespace/name."},
                    "ifname": {"type": "string", "description": "The interface name."}
                }
            }),
        )
    }
}

/// The definition of one of Whereabouts's resources, with this spec schema.
fn definition<K: kube::Resource<DynamicType = ()>>(
    singular: &str,
    spec: serde_json::Value,
) -> CustomResourceDefinition {
    let list_kind = format!("{}List", K::kind(&()));
    crate::resource::definition::<K>(
        serde_json::json!({"singular": singular, "listKind": list_kind}),
        serde_json::json!({}),
        serde_json::json!({"properties": {"spec": spec}}),
    )
}

/// Both of Whereabouts's definitions, for test clusters.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![pool::crd(), reservation::crd()]
}

/// [`crds`] as a multi-document YAML stream.
pub fn crd_yaml() -> String {
    crate::yaml_stream(&crds())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_reads_whereabouts_json() {
        let json = serde_json::json!({
            "apiVersion": "whereabouts.cni.cncf.io/v1alpha1",
            "kind": "IPPool",
            "metadata": {"name": "blue-10.0.0.0-24", "namespace": "kube-system"},
            "spec": {"range": "10.0.0.0/24", "allocations": {
                "1": {"id": "c1", "podref": "default/a", "ifname": "net1"},
                "2": {"id": "c2", "podref": "default/b"}
            }}
        });
        let pool: IpPool = serde_json::from_value(json).unwrap();
        assert_eq!(pool.spec.allocations["2"].ifname, "");
        assert_eq!(pool.spec.allocations["1"].podref, "default/a");
        assert_eq!(crds().len(), 2);
        assert_eq!(
            crds()[1].metadata.name.as_deref(),
            Some("overlappingrangeipreservations.whereabouts.cni.cncf.io")
        );
        assert!(crd_yaml().contains("ippools"));
    }
}
