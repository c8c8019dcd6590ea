//! Custom resource types Plexus reads and writes, and their YAML.
//!
//! * [`NetworkAttachmentDefinition`] (`k8s.cni.cncf.io/v1`): the networks pods ask for.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The spec of a NetworkAttachmentDefinition: a CNI configuration as a JSON string. An empty
/// `config` means "the file with this network's name in the configuration directory".
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "k8s.cni.cncf.io",
    version = "v1",
    kind = "NetworkAttachmentDefinition",
    plural = "network-attachment-definitions",
    shortname = "net-attach-def",
    shortname = "nad",
    namespaced
)]
pub struct NetworkAttachmentDefinitionSpec {
    /// The CNI configuration or configuration list, as JSON text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub config: String,
}
