//! Handing out a pod's devices: each network that names a resource takes the next of the pod's
//! devices of that resource, in sorted order (as Multus does, so that the same pod gets the same
//! assignment every time), and the chosen device is written into the delegate's configuration.

use std::collections::HashMap;

use plexus_cni::config::for_each_plugin_mut;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::DevicesByResource;

/// The device one attachment uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// The device-plugin resource (`intel.com/sriov_net`).
    pub resource_name: String,
    /// The device (a PCI address such as `0000:03:02.3`).
    pub device_id: String,
}

/// A pod's devices by resource, each list sorted, with how many of each are handed out.
#[derive(Debug, Clone, Default)]
pub struct ResourceMap {
    devices: DevicesByResource,
    taken: HashMap<String, usize>,
}

impl ResourceMap {
    /// The map of these devices; each resource's IDs are sorted and repeats dropped.
    pub fn new(mut devices: DevicesByResource) -> Self {
        for ids in devices.values_mut() {
            ids.sort();
            ids.dedup();
        }
        ResourceMap {
            devices,
            taken: HashMap::new(),
        }
    }

    /// The next device of `resource`, if one is left.
    pub fn take(&mut self, resource: &str) -> Option<String> {
        let ids = self.devices.get(resource)?;
        let taken = self.taken.entry(resource.to_string()).or_default();
        let id = ids.get(*taken)?.clone();
        *taken += 1;
        Some(id)
    }

    /// How many devices of `resource` the pod has.
    pub fn allocated(&self, resource: &str) -> usize {
        self.devices.get(resource).map_or(0, Vec::len)
    }
}

/// Writes `deviceID` and `pciBusID` into a delegate configuration: at the top level of a single
/// configuration, into every plugin of a configuration list (Multus's keys, which SR-IOV
/// plugins read). Other keys keep their values and places.
pub fn inject_device_id(config: &mut Value, device_id: &str) {
    for_each_plugin_mut(config, |p| set_ids(p, device_id));
}

fn set_ids(conf: &mut Map<String, Value>, device_id: &str) {
    for key in ["deviceID", "pciBusID"] {
        conf.insert(key.into(), Value::String(device_id.into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn devices_are_handed_out_in_sorted_order() {
        let mut map = ResourceMap::new(DevicesByResource::from([
            (
                "intel.com/a".to_string(),
                vec![
                    "0000:03:02.5".into(),
                    "0000:03:02.3".into(),
                    "0000:03:02.3".into(),
                ],
            ),
            ("intel.com/b".to_string(), vec!["0000:81:00.1".into()]),
        ]));
        assert_eq!(map.allocated("intel.com/a"), 2);
        assert_eq!(map.take("intel.com/a").as_deref(), Some("0000:03:02.3"));
        assert_eq!(map.take("intel.com/b").as_deref(), Some("0000:81:00.1"));
        assert_eq!(map.take("intel.com/a").as_deref(), Some("0000:03:02.5"));
        assert_eq!(map.take("intel.com/a"), None);
        assert_eq!(map.take("intel.com/none"), None);
        assert_eq!(map.allocated("intel.com/none"), 0);
    }

    #[test]
    fn injection_into_conf_and_conflist() {
        let mut conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "sriov", "deviceID": "old", "vlan": 5});
        inject_device_id(&mut conf, "0000:03:02.3");
        assert_eq!(
            conf.to_string(),
            r#"{"cniVersion":"1.0.0","name":"n","type":"sriov","deviceID":"0000:03:02.3","vlan":5,"pciBusID":"0000:03:02.3"}"#
        );
        let mut list = json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "sriov"}, {"type": "tuning"}]});
        inject_device_id(&mut list, "0000:03:02.4");
        for plugin in list["plugins"].as_array().unwrap() {
            assert_eq!(plugin["deviceID"], "0000:03:02.4");
            assert_eq!(plugin["pciBusID"], "0000:03:02.4");
        }
        assert!(list.get("deviceID").is_none());
    }
}
