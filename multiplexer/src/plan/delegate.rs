//! A delegate: one network a pod is attached to, with what Plexus knows about it.

use plexus_cni::config::NetworkConfigList;
use serde_json::{Map, Value};

/// One network to attach, before it has an interface name.
#[derive(Debug, Clone, PartialEq)]
pub struct Delegate {
    /// The network's configuration, exactly as it will be cached and run.
    pub network: NetworkConfigList,
    /// True for the primary (cluster) network.
    pub primary: bool,
    /// The interface name this attachment asks for, if any.
    pub ifname_request: Option<String>,
    /// Capability arguments offered to this network's plugins.
    pub capability_args: Map<String, Value>,
    /// The name this attachment has in the network-status annotation: `<namespace>/<nad>` for a
    /// NetworkAttachmentDefinition, else the network's own name.
    pub status_name: String,
    /// The pod annotation's element that asked for this network, if one did.
    pub selection: Option<crate::k8s::selection::NetworkSelection>,
    /// The device-plugin device this attachment uses (its NAD names a `resourceName`).
    pub device: Option<crate::devices::Device>,
}

impl Delegate {
    /// A delegate from a configuration value. A configuration without `cniVersion` gets
    /// `default_version` (as Multus does), so that every later call runs at the same version.
    pub fn from_value(
        mut value: Value,
        default_version: &str,
        primary: bool,
    ) -> Result<Self, plexus_cni::config::ConfigError> {
        if let Value::Object(m) = &mut value {
            let missing = m
                .get("cniVersion")
                .is_none_or(|v| v.as_str().is_some_and(str::is_empty));
            if missing && !default_version.is_empty() {
                m.insert("cniVersion".into(), Value::String(default_version.into()));
            }
        }
        let network = NetworkConfigList::from_value(value)?;
        Ok(Delegate {
            status_name: network.name.clone(),
            network,
            primary,
            ifname_request: None,
            capability_args: Map::new(),
            selection: None,
            device: None,
        })
    }

    /// Records the device this attachment uses and offers its ID as the `deviceID` capability
    /// argument (to the plugins that declare it). The configuration must already carry it (see
    /// [`crate::devices::allocation::inject_device_id`]).
    pub fn set_device(&mut self, device: Option<crate::devices::Device>) {
        if let Some(d) = &device {
            self.capability_args
                .insert("deviceID".into(), Value::String(d.device_id.clone()));
        }
        self.device = device;
    }
}
