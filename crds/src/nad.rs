//! `NetworkAttachmentDefinition` (`k8s.cni.cncf.io/v1`), written by hand rather than derived so
//! that it matches the definition Multus users already have: `spec` is optional (a definition
//! without one means "the configuration file of this name in the configuration directory"),
//! and `spec.config` is a string.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::resource::definition;

/// The API group.
pub const GROUP: &str = "k8s.cni.cncf.io";
/// The API version.
pub const VERSION: &str = "v1";

/// The spec of a NetworkAttachmentDefinition: a CNI configuration as a JSON string. An empty
/// `config` means "the file with this network's name in the configuration directory".
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkAttachmentDefinitionSpec {
    /// The CNI configuration or configuration list, as JSON text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub config: String,
}

namespaced_resource! {
    kind: "NetworkAttachmentDefinition", plural: "network-attachment-definitions";
    /// A network pods can ask for by name.
    pub struct NetworkAttachmentDefinition {
        /// Name, namespace, annotations (`k8s.v1.cni.cncf.io/resourceName`), ...
        metadata,
        /// The configuration; absent means empty.
        #[serde(default)]
        spec: NetworkAttachmentDefinitionSpec,
    }
}

/// The CustomResourceDefinition, as Multus's users have it: namespaced, short names
/// `net-attach-def` and `nad`, `spec.config` a string, `spec` optional.
pub fn crd() -> CustomResourceDefinition {
    definition::<NetworkAttachmentDefinition>(
        /* names */
        json!({
            "singular": "network-attachment-definition",
            "shortNames": ["net-attach-def", "nad"]
        }),
        /* version extras */ json!({}),
        /* schema */
        json!({
            "description": "A network that pods attach to through a CNI meta-plugin \
                            (Kubernetes Network Plumbing WG multi-net spec).",
            "properties": {
                "spec": {
                    "description": "The network's CNI configuration.",
                    "type": "object",
                    "properties": {
                        "config": {
                            "description": "A CNI configuration or configuration list, \
                                            as JSON text; empty means the file of this \
                                            name in the plugin's configuration directory.",
                            "type": "string"
                        }
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
    fn a_definition_without_spec_reads_as_empty_config() {
        let nad: NetworkAttachmentDefinition = serde_json::from_value(serde_json::json!({
            "apiVersion": "k8s.cni.cncf.io/v1", "kind": KIND, "metadata": {"name": "a-bridge-network"}
        }))
        .unwrap();
        assert_eq!(nad.spec.config, "");
        let crd = crd();
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&["net-attach-def".to_string(), "nad".to_string()][..])
        );
    }
}
