//! What a network selection asks of its network's plugins: capability arguments (delivered
//! through `runtimeConfig` to the plugins that declare them) and `cni-args` (merged into the
//! configuration's `args.cni`).
//!
//! multi-net-spec 4.1.2.1 says that for `ips`, `mac`, `portMappings`, `bandwidth` and
//! `infiniband-guid` the delegating plugin MUST verify that at least one plugin of the network
//! declares the capability, and fail the attachment otherwise. Multus skips that check, and
//! libcni silently drops the undeclared keys, so users lose their static addresses without a
//! word; [`require_capabilities`] performs it.

use plexus_cni::config::{for_each_plugin_mut, NetworkConfigList};
use plexus_cni::{CniError, ErrorCode};
use serde_json::{Map, Value};
use thiserror::Error;

use super::selection::NetworkSelection;

/// The capability keys the specification requires a network to declare when a selection uses
/// them, each with the annotation key it comes from.
pub const REQUIRED_CAPABILITIES: [(&str, &str); 5] = [
    ("ips", "ips"),
    ("mac", "mac"),
    ("portMappings", "portMappings"),
    ("bandwidth", "bandwidth"),
    ("infinibandGUID", "infiniband-guid"),
];

/// A selection asks for something no plugin of its network accepts.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "network {network:?} cannot honour the pod's {annotation_key:?} request: no plugin of the \
     network declares the {capability:?} capability, so it would be silently ignored; add \
     \"capabilities\": {{\"{capability}\": true}} to the plugin that should receive it"
)]
pub struct CapabilityError {
    /// The capability (`runtimeConfig` key) that is missing, e.g. `infinibandGUID`.
    pub capability: String,
    /// The network selection key it comes from, e.g. `infiniband-guid`.
    pub annotation_key: String,
    /// The network's configuration name.
    pub network: String,
}

impl From<CapabilityError> for CniError {
    fn from(e: CapabilityError) -> Self {
        CniError::new(ErrorCode::InvalidNetworkConfig, e.to_string())
    }
}

/// The capability arguments a selection asks for, under their `runtimeConfig` keys: `ips`,
/// `mac`, `portMappings`, `bandwidth`, `infinibandGUID` (from `infiniband-guid`) and `deviceID`.
/// Only keys that are set appear; an empty `ips` or `portMappings` list counts as not set.
pub fn capability_args(sel: &NetworkSelection) -> Map<String, Value> {
    let mut args = Map::new();
    if !sel.ips.is_empty() {
        args.insert("ips".into(), Value::from(sel.ips.clone()));
    }
    if let Some(mac) = &sel.mac {
        args.insert("mac".into(), Value::String(mac.clone()));
    }
    if !sel.port_mappings.is_empty() {
        args.insert(
            "portMappings".into(),
            serde_json::to_value(&sel.port_mappings).unwrap_or(Value::Null),
        );
    }
    if let Some(bandwidth) = &sel.bandwidth {
        args.insert(
            "bandwidth".into(),
            serde_json::to_value(bandwidth).unwrap_or(Value::Null),
        );
    }
    if let Some(guid) = &sel.infiniband_guid {
        args.insert("infinibandGUID".into(), Value::String(guid.clone()));
    }
    if let Some(device_id) = &sel.device_id {
        args.insert("deviceID".into(), Value::String(device_id.clone()));
    }
    args
}

/// Checks that every key of `args` that the specification covers ([`REQUIRED_CAPABILITIES`]) is
/// declared (`"capabilities": {key: true}`) by at least one plugin of `network`.
///
/// Other keys (`deviceID`, `CNIDeviceInfoFile`, …) are not required: `deviceID` also reaches
/// plugins as the top-level `deviceID`/`pciBusID` keys Multus injects, so SR-IOV plugins that do
/// not declare it keep working.
pub fn require_capabilities(
    network: &NetworkConfigList,
    args: &Map<String, Value>,
) -> Result<(), CapabilityError> {
    for (capability, annotation_key) in REQUIRED_CAPABILITIES {
        if args.contains_key(capability) && !network.has_capability(capability) {
            return Err(CapabilityError {
                capability: capability.to_string(),
                annotation_key: annotation_key.to_string(),
                network: network.name.clone(),
            });
        }
    }
    Ok(())
}

/// Merges a selection's `cni-args` into `args.cni` of `config`, or of every plugin when
/// `config` is a configuration list. `args` and `args.cni` are created when missing (and
/// replaced when they are not objects); the annotation's keys win over existing ones, and every
/// other key, and the order of keys, is kept. Nothing changes when `cni_args` is empty.
pub fn merge_cni_args(config: &mut Value, cni_args: &Map<String, Value>) {
    if cni_args.is_empty() {
        return;
    }
    for_each_plugin_mut(config, |p| merge_into(p, cni_args));
}

fn merge_into(conf: &mut Map<String, Value>, cni_args: &Map<String, Value>) {
    let args = conf
        .entry("args")
        .or_insert_with(|| Value::Object(Map::new()));
    if !args.is_object() {
        *args = Value::Object(Map::new());
    }
    let Value::Object(args) = args else {
        return;
    };
    let cni = args
        .entry("cni")
        .or_insert_with(|| Value::Object(Map::new()));
    if !cni.is_object() {
        *cni = Value::Object(Map::new());
    }
    if let Value::Object(cni) = cni {
        for (k, v) in cni_args {
            cni.insert(k.clone(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::selection::{parse_networks, Bandwidth, PortMapping};
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn args_from_selection() {
        let cases: Vec<(&str, Value)> = vec![
            (r#"[{"name":"a"}]"#, json!({})),
            (r#"[{"name":"a","ips":[],"portMappings":[]}]"#, json!({})),
            (
                r#"[{"name":"a","ips":["10.1.1.11/24"],"mac":"c2:b0:57:49:47:f1"}]"#,
                json!({"ips":["10.1.1.11/24"],"mac":"c2:b0:57:49:47:f1"}),
            ),
            (
                r#"[{"name":"a","infiniband-guid":"c2:b0:57:49:47:f1:00:01","deviceID":"0000:03:02.1"}]"#,
                json!({"infinibandGUID":"c2:b0:57:49:47:f1:00:01","deviceID":"0000:03:02.1"}),
            ),
            (
                r#"[{"name":"a","portMappings":[{"hostPort":1,"containerPort":2,"protocol":"udp"}],"bandwidth":{"egressRate":9}}]"#,
                json!({"portMappings":[{"hostPort":1,"containerPort":2,"protocol":"udp"}],
                       "bandwidth":{"ingressRate":0,"ingressBurst":0,"egressRate":9,"egressBurst":0}}),
            ),
            (
                r#"[{"name":"a","cni-args":{"x":1},"default-route":["1.1.1.1"],"interface":"n1"}]"#,
                json!({}),
            ),
        ];
        for (text, want) in cases {
            let sel = &parse_networks(text, "ns").unwrap()[0];
            assert_eq!(Value::Object(capability_args(sel)), want, "{text}");
        }
        // Key order is fixed, whatever the annotation's order.
        let sel = NetworkSelection {
            device_id: Some("d".into()),
            bandwidth: Some(Bandwidth::default()),
            port_mappings: vec![PortMapping::default()],
            mac: Some("m".into()),
            ips: vec!["i".into()],
            infiniband_guid: Some("g".into()),
            ..NetworkSelection::new("ns", "a")
        };
        let keys: Vec<String> = capability_args(&sel).keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "ips",
                "mac",
                "portMappings",
                "bandwidth",
                "infinibandGUID",
                "deviceID"
            ]
        );
    }

    #[test]
    fn capabilities_are_required() {
        let list = NetworkConfigList::from_value(json!({
            "cniVersion": "1.0.0", "name": "macvlan-conf",
            "plugins": [
                {"type": "macvlan", "capabilities": {"ips": true, "mac": false}},
                {"type": "tuning", "capabilities": {"mac": "true"}},
                {"type": "bandwidth", "capabilities": {"bandwidth": true}}
            ]
        }))
        .unwrap();
        let single = NetworkConfigList::from_value(
            json!({"cniVersion": "0.3.1", "name": "plain", "type": "bridge"}),
        )
        .unwrap();
        let ok: [(&NetworkConfigList, Value); 5] = [
            (&list, json!({})),
            (
                &list,
                json!({"ips": ["10.0.0.1/24"], "mac": "x", "bandwidth": {}}),
            ),
            (
                &list,
                json!({"deviceID": "0000:03:02.1", "CNIDeviceInfoFile": "/f"}),
            ),
            (&single, json!({})),
            (&single, json!({"deviceID": "0000:03:02.1"})),
        ];
        for (net, args) in ok {
            assert_eq!(
                require_capabilities(net, &map(args.clone())),
                Ok(()),
                "{args}"
            );
        }
        let bad: [(&NetworkConfigList, Value, &str, &str); 5] = [
            (
                &list,
                json!({"portMappings": []}),
                "portMappings",
                "portMappings",
            ),
            (
                &list,
                json!({"ips": [], "infinibandGUID": "g"}),
                "infinibandGUID",
                "infiniband-guid",
            ),
            (&single, json!({"ips": ["10.0.0.1"]}), "ips", "ips"),
            (&single, json!({"mac": "x"}), "mac", "mac"),
            (&single, json!({"bandwidth": {}}), "bandwidth", "bandwidth"),
        ];
        for (net, args, capability, annotation_key) in bad {
            let e = require_capabilities(net, &map(args.clone())).unwrap_err();
            assert_eq!(e.capability, capability, "{args}");
            assert_eq!(e.annotation_key, annotation_key, "{args}");
            assert_eq!(e.network, net.name);
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("\"capabilities\": {{\"{capability}\": true}}"))
                    && msg.contains(&format!("{:?}", net.name)),
                "{msg}"
            );
            assert_eq!(CniError::from(e).code, 7);
        }
    }

    #[test]
    fn cni_args_merge() {
        let args = map(json!({"b": "annotation", "c": 1.50}));
        let cases = [
            (
                json!({"name": "n", "type": "x"}),
                json!({"name": "n", "type": "x", "args": {"cni": {"b": "annotation", "c": 1.50}}}),
            ),
            (
                json!({"type": "x", "args": {"other": true}, "z": 0}),
                json!({"type": "x", "args": {"other": true, "cni": {"b": "annotation", "c": 1.50}}, "z": 0}),
            ),
            (
                json!({"type": "x", "args": {"cni": {"a": 1, "b": "nad"}, "k": [1]}}),
                json!({"type": "x", "args": {"cni": {"a": 1, "b": "annotation", "c": 1.50}, "k": [1]}}),
            ),
            (
                json!({"type": "x", "args": "junk"}),
                json!({"type": "x", "args": {"cni": {"b": "annotation", "c": 1.50}}}),
            ),
            (
                json!({"type": "x", "args": {"cni": 3}}),
                json!({"type": "x", "args": {"cni": {"b": "annotation", "c": 1.50}}}),
            ),
            (
                json!({"name": "l", "args": {"top": 1}, "plugins": [
                    {"type": "a"},
                    {"type": "b", "args": {"cni": {"b": "nad", "d": 4}}},
                    "not-an-object"
                ]}),
                json!({"name": "l", "args": {"top": 1}, "plugins": [
                    {"type": "a", "args": {"cni": {"b": "annotation", "c": 1.50}}},
                    {"type": "b", "args": {"cni": {"b": "annotation", "d": 4, "c": 1.50}}},
                    "not-an-object"
                ]}),
            ),
            (json!("not a config"), json!("not a config")),
        ];
        for (mut config, want) in cases {
            let before = config.clone();
            merge_cni_args(&mut config, &args);
            // Compare as text so key order and number text count too.
            assert_eq!(config.to_string(), want.to_string(), "{before}");
        }
        let mut config = json!({"type": "x"});
        merge_cni_args(&mut config, &Map::new());
        assert_eq!(config, json!({"type": "x"}));
    }
}
