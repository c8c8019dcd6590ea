//! The pod annotations that select networks: `k8s.v1.cni.cncf.io/networks` and Multus's
//! `v1.multus-cni.io/default-network`, parsed as Multus parses them (multi-net-spec 4.1).
//!
//! An annotation is a JSON list of network selection elements when its text contains `[`, `{`
//! or `"`, and otherwise a comma-separated list of `[<namespace>/]<name>[@<ifname>]` items.
//!
//! What is kept from Multus, and what is stricter:
//!
//! * Short form: items are trimmed and empty items skipped; more than one `/` or `@` is refused;
//!   the namespace and the name must be DNS-1123 labels; the interface name follows Multus's laxer
//!   rule (at most 15 bytes, no white space, no `/`), so `net1@my_interface` is valid. An empty
//!   namespace (`/net1`) or interface (`net1@`) means none was given, as in Multus.
//! * JSON form: unknown keys are ignored and `null` counts as absent (as Go's decoder does);
//!   `interfaceRequest` is accepted as the legacy name of `interface`. Unlike Multus, which checks
//!   only `ips`, `mac` and `infiniband-guid`, every key is checked, and a failure names the element
//!   and the key: `name` must be a Kubernetes object name (a DNS-1123 subdomain: Multus does not
//!   check it, the API server would refuse anything else anyway), `namespace` a DNS-1123 label,
//!   `interface` the interface-name rule above, `ips` IPs or CIDRs, `mac` and `infiniband-guid`
//!   hardware addresses (as Go's `net.ParseMAC`), `default-route` IP addresses, `cni-args` an
//!   object, `portMappings` and `bandwidth` their Multus shapes. Go's case-insensitive key
//!   matching is not reproduced: keys must be written as the specification spells them.
//! * A missing namespace is the pod's (for `networks`) or Multus's `multusNamespace` (for
//!   `default-network`). The same network may be selected more than once: each is its own
//!   attachment.
//! * No input panics; every refusal is a [`SelectionError`] (CNI code 7).
//!
//! The parts: this module holds the types, the errors and the two entry points; `short.rs` reads
//! the comma-separated form, `json.rs` the JSON form, and `syntax.rs` checks names and addresses.

mod json;
mod short;
mod syntax;

use std::net::IpAddr;

use plexus_cni::{CniError, ErrorCode};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;

pub use syntax::{is_dns1123_label, is_dns1123_subdomain, parse_hardware_addr};

/// The pod annotation that selects additional networks.
pub const NETWORKS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks";
/// Multus's pod annotation that replaces the cluster (primary) network.
pub const DEFAULT_NETWORK_ANNOTATION: &str = "v1.multus-cni.io/default-network";
/// The pod annotation the attachments are reported in.
pub const NETWORK_STATUS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/network-status";
/// The NetworkAttachmentDefinition annotation naming the device-plugin resource it uses.
pub const RESOURCE_NAME_ANNOTATION: &str = "k8s.v1.cni.cncf.io/resourceName";

/// The longest interface name Linux accepts, in bytes (`IFNAMSIZ - 1`).
pub const MAX_IFNAME_LEN: usize = 15;

/// One requested port mapping (`portMappings[]`), in the shape the `portmap` plugin reads from
/// `runtimeConfig`. Missing numbers are 0 and missing strings empty, as in Multus.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PortMapping {
    /// `hostPort`.
    #[serde(rename = "hostPort", default, deserialize_with = "null_default")]
    pub host_port: i64,
    /// `containerPort`.
    #[serde(rename = "containerPort", default, deserialize_with = "null_default")]
    pub container_port: i64,
    /// `protocol` (`tcp`, `udp`, `sctp`); left out when empty.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub protocol: String,
    /// `hostIP`; left out when empty.
    #[serde(
        rename = "hostIP",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub host_ip: String,
}

/// A requested bandwidth limit (`bandwidth`), in the shape the `bandwidth` plugin reads from
/// `runtimeConfig`. All four numbers are always written (missing ones are 0), as Multus does.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Bandwidth {
    /// `ingressRate`, in bits per second.
    #[serde(rename = "ingressRate", default, deserialize_with = "null_default")]
    pub ingress_rate: i64,
    /// `ingressBurst`, in bits.
    #[serde(rename = "ingressBurst", default, deserialize_with = "null_default")]
    pub ingress_burst: i64,
    /// `egressRate`, in bits per second.
    #[serde(rename = "egressRate", default, deserialize_with = "null_default")]
    pub egress_rate: i64,
    /// `egressBurst`, in bits.
    #[serde(rename = "egressBurst", default, deserialize_with = "null_default")]
    pub egress_burst: i64,
}

/// One network selection element: a network the pod asks to be attached to, and how.
///
/// Serializes with the specification's keys (`interface`, not the legacy `interfaceRequest`),
/// leaving out what is not set. `Deserialize` reads that form back (and accepts
/// `interfaceRequest`), but checks nothing: annotations go through [`parse_networks`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NetworkSelection {
    /// `name`: the NetworkAttachmentDefinition's name.
    pub name: String,
    /// `namespace`: the NetworkAttachmentDefinition's namespace, always filled in by the parser.
    #[serde(default)]
    pub namespace: String,
    /// `interface`: the interface name asked for in the pod.
    #[serde(
        default,
        alias = "interfaceRequest",
        skip_serializing_if = "Option::is_none"
    )]
    pub interface: Option<String>,
    /// `ips`: addresses asked for, each an IP or a CIDR, as written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    /// `mac`: the hardware address asked for, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// `default-route`: `None` when the key is absent; `Some` (possibly empty) when this element
    /// claims the pod's default route (see [`super::default_route`]).
    #[serde(
        rename = "default-route",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub default_route: Option<Vec<IpAddr>>,
    /// `cni-args`: merged into the delegate configuration's `args.cni`.
    #[serde(rename = "cni-args", default, skip_serializing_if = "Option::is_none")]
    pub cni_args: Option<Map<String, Value>>,
    /// `portMappings`.
    #[serde(
        rename = "portMappings",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub port_mappings: Vec<PortMapping>,
    /// `bandwidth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<Bandwidth>,
    /// `infiniband-guid`: the InfiniBand GUID asked for, as written.
    #[serde(
        rename = "infiniband-guid",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub infiniband_guid: Option<String>,
    /// `deviceID` (a Multus extension): the device to use, when no device plugin gave one.
    #[serde(rename = "deviceID", default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// `ipam-claim-reference` (spec 1.3): the IPAMClaim holding this attachment's addresses.
    #[serde(
        rename = "ipam-claim-reference",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ipam_claim_reference: Option<String>,
}

impl NetworkSelection {
    /// A selection of `namespace/name` with nothing else asked for.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        NetworkSelection {
            name: name.into(),
            namespace: namespace.into(),
            ..NetworkSelection::default()
        }
    }
}

/// Why a network selection annotation was refused. Every variant is reported with CNI code 7.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SelectionError {
    /// The text looks like JSON but is not a JSON list.
    #[error("annotation {annotation}: not a JSON list of network selection elements: {message}")]
    Json {
        /// The annotation's key.
        annotation: &'static str,
        /// What is wrong.
        message: String,
    },
    /// An item of the comma-separated form is malformed.
    #[error("annotation {annotation}: invalid item {item:?}: {message}")]
    Item {
        /// The annotation's key.
        annotation: &'static str,
        /// The item, trimmed.
        item: String,
        /// What is wrong.
        message: String,
    },
    /// An element of the JSON form is malformed.
    #[error("annotation {annotation}: element [{index}]{}{}: {message}",
        .name.as_ref().map(|n| format!(" (network {n:?})")).unwrap_or_default(),
        .key.map(|k| format!(", key {k:?}")).unwrap_or_default())]
    Element {
        /// The annotation's key.
        annotation: &'static str,
        /// The element's position in the list, from 0.
        index: usize,
        /// The element's `name`, when it has one.
        name: Option<String>,
        /// The offending key; `None` when the element itself is wrong.
        key: Option<&'static str>,
        /// What is wrong.
        message: String,
    },
    /// The default-network annotation must select exactly one network.
    #[error("annotation {annotation} must select exactly one network, it selects {count}")]
    NotExactlyOne {
        /// The annotation's key.
        annotation: &'static str,
        /// How many it selects.
        count: usize,
    },
}

impl From<SelectionError> for CniError {
    fn from(e: SelectionError) -> Self {
        CniError::new(ErrorCode::InvalidNetworkConfig, e.to_string())
    }
}

/// Parses a `k8s.v1.cni.cncf.io/networks` annotation. Selections without a namespace get
/// `default_namespace` (the pod's). An empty or blank annotation selects nothing.
pub fn parse_networks(
    annotation: &str,
    default_namespace: &str,
) -> Result<Vec<NetworkSelection>, SelectionError> {
    parse(annotation, default_namespace, NETWORKS_ANNOTATION)
}

/// Parses a `v1.multus-cni.io/default-network` annotation, which must select exactly one
/// network; without a namespace it is looked for in `multus_namespace`. Callers treat an absent
/// annotation as "no override" and do not call this (an empty one is refused here).
pub fn parse_default_network(
    annotation: &str,
    multus_namespace: &str,
) -> Result<NetworkSelection, SelectionError> {
    let mut selections = parse(annotation, multus_namespace, DEFAULT_NETWORK_ANNOTATION)?;
    if selections.len() != 1 {
        return Err(SelectionError::NotExactlyOne {
            annotation: DEFAULT_NETWORK_ANNOTATION,
            count: selections.len(),
        });
    }
    Ok(selections.remove(0))
}

fn parse(
    text: &str,
    default_namespace: &str,
    annotation: &'static str,
) -> Result<Vec<NetworkSelection>, SelectionError> {
    if text.contains(['[', '{', '"']) {
        json::parse(text, default_namespace, annotation)
    } else {
        short::parse(text, default_namespace, annotation)
    }
}

/// Reads `null` as the type's default, as Go's decoder leaves a field untouched on `null`.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(ns: &str, name: &str, ifname: Option<&str>) -> NetworkSelection {
        NetworkSelection {
            interface: ifname.map(String::from),
            ..NetworkSelection::new(ns, name)
        }
    }

    #[test]
    fn short_form_good() {
        let cases: Vec<(&str, Vec<NetworkSelection>)> = vec![
            ("net1", vec![sel("pod-ns", "net1", None)]),
            ("default/net1", vec![sel("default", "net1", None)]),
            (
                "net1@my_interface",
                vec![sel("pod-ns", "net1", Some("my_interface"))],
            ),
            (
                "default/net1@my_interface",
                vec![sel("default", "net1", Some("my_interface"))],
            ),
            (
                " a , other/b@eth1 ,, ",
                vec![sel("pod-ns", "a", None), sel("other", "b", Some("eth1"))],
            ),
            (
                "net1,net1",
                vec![sel("pod-ns", "net1", None), sel("pod-ns", "net1", None)],
            ),
            ("ns / net1 @ eth9", vec![sel("ns", "net1", Some("eth9"))]),
            ("/net1", vec![sel("pod-ns", "net1", None)]),
            ("net1@", vec![sel("pod-ns", "net1", None)]),
            (
                "a-1,2b",
                vec![sel("pod-ns", "a-1", None), sel("pod-ns", "2b", None)],
            ),
            (
                "net1@123456789012345",
                vec![sel("pod-ns", "net1", Some("123456789012345"))],
            ),
            ("", vec![]),
            ("  ,  ", vec![]),
        ];
        for (text, want) in cases {
            assert_eq!(parse_networks(text, "pod-ns").unwrap(), want, "{text:?}");
        }
    }

    #[test]
    fn short_form_bad() {
        let long = "a".repeat(64);
        let cases = [
            (
                "root@someIP/root@someOtherIP/root@thirdIP",
                "more than one '/'",
            ),
            ("default/net1@myIfc Name", "white space"),
            ("default/net1@very_long_interface_name", "longer than 15"),
            ("net1@a@b", "more than one '@'"),
            ("a/b/c", "more than one '/'"),
            ("Net1", "DNS-1123"),
            ("net_1", "DNS-1123"),
            ("-net", "DNS-1123"),
            ("net-", "DNS-1123"),
            ("net.1", "DNS-1123"),
            (long.as_str(), "DNS-1123"),
            ("ns_x/net1", "namespace"),
            ("ns/", "empty"),
            ("@eth0", "empty"),
            ("ok,bad name", "DNS-1123"),
            ("net1@a\tb", "white space"),
            ("net1@a\u{0}b", "white space"),
        ];
        for (text, want) in cases {
            let e = parse_networks(text, "pod-ns").unwrap_err();
            assert!(matches!(e, SelectionError::Item { .. }), "{text:?}: {e:?}");
            let msg = e.to_string();
            assert!(msg.contains(want), "{text:?}: {msg}");
            assert!(msg.contains(NETWORKS_ANNOTATION), "{msg}");
            assert_eq!(CniError::from(e).code, 7);
        }
    }

    #[test]
    fn json_every_key() {
        let text = r#"[{
            "name": "macvlan-conf",
            "namespace": "other",
            "interface": "net7",
            "ips": ["10.1.1.11/24", "2001:db8::5"],
            "mac": "c2:b0:57:49:47:f1",
            "default-route": ["10.1.1.254", "2001:db8::1"],
            "cni-args": {"foo": "bar", "n": 1.50},
            "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "1.2.3.4"}],
            "bandwidth": {"ingressRate": 1000, "ingressBurst": 2000, "egressRate": 3000, "egressBurst": 4000},
            "infiniband-guid": "c2:b0:57:49:47:f1:00:01",
            "deviceID": "0000:03:02.1",
            "ipam-claim-reference": "claim-1",
            "somethingElse": {"ignored": true}
        }]"#;
        let got = parse_networks(text, "pod-ns").unwrap();
        let want = NetworkSelection {
            name: "macvlan-conf".into(),
            namespace: "other".into(),
            interface: Some("net7".into()),
            ips: vec!["10.1.1.11/24".into(), "2001:db8::5".into()],
            mac: Some("c2:b0:57:49:47:f1".into()),
            default_route: Some(vec![
                "10.1.1.254".parse().unwrap(),
                "2001:db8::1".parse().unwrap(),
            ]),
            cni_args: Some(serde_json::from_str(r#"{"foo": "bar", "n": 1.50}"#).unwrap()),
            port_mappings: vec![PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: "1.2.3.4".into(),
            }],
            bandwidth: Some(Bandwidth {
                ingress_rate: 1000,
                ingress_burst: 2000,
                egress_rate: 3000,
                egress_burst: 4000,
            }),
            infiniband_guid: Some("c2:b0:57:49:47:f1:00:01".into()),
            device_id: Some("0000:03:02.1".into()),
            ipam_claim_reference: Some("claim-1".into()),
        };
        assert_eq!(got, vec![want.clone()]);
        // Serialization uses the specification's keys, keeps number text, and reads back.
        let out = serde_json::to_string(&want).unwrap();
        assert_eq!(
            out,
            r#"{"name":"macvlan-conf","namespace":"other","interface":"net7","ips":["10.1.1.11/24","2001:db8::5"],"mac":"c2:b0:57:49:47:f1","default-route":["10.1.1.254","2001:db8::1"],"cni-args":{"foo":"bar","n":1.50},"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":"1.2.3.4"}],"bandwidth":{"ingressRate":1000,"ingressBurst":2000,"egressRate":3000,"egressBurst":4000},"infiniband-guid":"c2:b0:57:49:47:f1:00:01","deviceID":"0000:03:02.1","ipam-claim-reference":"claim-1"}"#
        );
        let back: NetworkSelection = serde_json::from_str(&out).unwrap();
        assert_eq!(back, want);
        assert_eq!(
            parse_networks(&format!("[{out}]"), "x").unwrap(),
            vec![want]
        );
    }

    #[test]
    fn json_good_variants() {
        let cases: Vec<(&str, Vec<NetworkSelection>)> = vec![
            (r#"[{"name":"net1"}]"#, vec![sel("pod-ns", "net1", None)]),
            (r#"[]"#, vec![]),
            (
                r#"[{"name":"net1","interfaceRequest":"legacy0"}]"#,
                vec![sel("pod-ns", "net1", Some("legacy0"))],
            ),
            (
                r#"[{"name":"net1","interface":"new0","interfaceRequest":"legacy0"}]"#,
                vec![sel("pod-ns", "net1", Some("new0"))],
            ),
            (
                r#"[{"name":"net1","interface":"","interfaceRequest":"legacy0"}]"#,
                vec![sel("pod-ns", "net1", Some("legacy0"))],
            ),
            (
                r#"[{"name":"net1","namespace":null,"ips":null,"mac":null,"interface":null,"default-route":null,"cni-args":null,"portMappings":null,"bandwidth":null}]"#,
                vec![sel("pod-ns", "net1", None)],
            ),
            (
                r#"[{"name":"net1","namespace":""}]"#,
                vec![sel("pod-ns", "net1", None)],
            ),
            (
                r#"[{"name":"my.net-1"},{"name":"my.net-1","interface":"my_interface"}]"#,
                vec![
                    sel("pod-ns", "my.net-1", None),
                    sel("pod-ns", "my.net-1", Some("my_interface")),
                ],
            ),
            (
                r#"[{"name":"net1","mac":"","ips":[]}]"#,
                vec![sel("pod-ns", "net1", None)],
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse_networks(text, "pod-ns").unwrap(), want, "{text}");
        }
        // An empty default-route list is kept: the element still claims the default route.
        let got = parse_networks(r#"[{"name":"a","default-route":[]}]"#, "ns").unwrap();
        assert_eq!(got[0].default_route, Some(vec![]));
        let got = parse_networks(
            r#"[{"name":"a","portMappings":[{"containerPort":80}],"bandwidth":{"ingressRate":5}}]"#,
            "ns",
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&got[0]).unwrap(),
            json!({"name":"a","namespace":"ns",
                   "portMappings":[{"hostPort":0,"containerPort":80}],
                   "bandwidth":{"ingressRate":5,"ingressBurst":0,"egressRate":0,"egressBurst":0}})
        );
    }

    #[test]
    fn json_bad() {
        // (annotation, key named in the error or "" for none, text the message must contain)
        let cases = [
            (
                r#"[{"name":"n","ips":["10.0.0.300"]}]"#,
                "ips",
                "[0] \"10.0.0.300\"",
            ),
            (
                r#"[{"name":"n","ips":["10.0.0.1/24","10.0.0.1/33"]}]"#,
                "ips",
                "[1]",
            ),
            (
                r#"[{"name":"n","ips":["fe80::1%eth0"]}]"#,
                "ips",
                "not an IP",
            ),
            (r#"[{"name":"n","ips":"10.0.0.1"}]"#, "ips", "invalid type"),
            (
                r#"[{"name":"n","mac":"c2:b0:57:49:47"}]"#,
                "mac",
                "hardware address",
            ),
            (
                r#"[{"name":"n","mac":"zz:b0:57:49:47:f1"}]"#,
                "mac",
                "hardware address",
            ),
            (r#"[{"name":"n","mac":7}]"#, "mac", "invalid type"),
            (
                r#"[{"name":"n","infiniband-guid":"nope"}]"#,
                "infiniband-guid",
                "GUID",
            ),
            (
                r#"[{"name":"n","default-route":["10.0.0.x"]}]"#,
                "default-route",
                "[0]",
            ),
            (
                r#"[{"name":"n","default-route":[""]}]"#,
                "default-route",
                "not an IP",
            ),
            (
                r#"[{"name":"n","default-route":"10.0.0.1"}]"#,
                "default-route",
                "invalid type",
            ),
            (
                r#"[{"name":"n","cni-args":["x"]}]"#,
                "cni-args",
                "invalid type",
            ),
            (
                r#"[{"name":"n","portMappings":[{"hostPort":"80"}]}]"#,
                "portMappings",
                "invalid type",
            ),
            (
                r#"[{"name":"n","bandwidth":{"ingressRate":1.5}}]"#,
                "bandwidth",
                "invalid",
            ),
            (
                r#"[{"name":"n","interface":"very_long_interface_name"}]"#,
                "interface",
                "longer",
            ),
            (
                r#"[{"name":"n","interface":"a b"}]"#,
                "interface",
                "white space",
            ),
            (
                r#"[{"name":"n","interfaceRequest":"a/b"}]"#,
                "interfaceRequest",
                "'/'",
            ),
            (
                r#"[{"name":"n","namespace":"Bad_NS"}]"#,
                "namespace",
                "DNS-1123",
            ),
            (r#"[{"name":""}]"#, "name", "missing"),
            (r#"[{"namespace":"x"}]"#, "name", "missing"),
            (r#"[{"name":3}]"#, "name", "invalid type"),
            (r#"[{"name":"ns/net1"}]"#, "name", "Kubernetes object name"),
            (r#"[{"name":"Net1"}]"#, "name", "Kubernetes object name"),
            (r#"[{"name":"n","deviceID":1}]"#, "deviceID", "invalid type"),
            (r#"[{"name":"ok"},"net2"]"#, "", "must be a JSON object"),
            (r#"[null]"#, "", "must be a JSON object"),
        ];
        for (text, key, want) in cases {
            let e = parse_networks(text, "pod-ns").unwrap_err();
            let SelectionError::Element { key: k, .. } = &e else {
                panic!("{text}: {e:?}");
            };
            assert_eq!(k.unwrap_or(""), key, "{text}");
            let msg = e.to_string();
            assert!(msg.contains(want), "{text}: {msg}");
            assert_eq!(CniError::from(e).code, 7);
        }
        // Element position and name are in the message.
        let e = parse_networks(r#"[{"name":"a"},{"name":"b","mac":"x"}]"#, "ns").unwrap_err();
        assert_eq!(
            e.to_string(),
            "annotation k8s.v1.cni.cncf.io/networks: element [1] (network \"b\"), key \"mac\": \
             \"x\" is not a hardware address"
        );
    }

    #[test]
    fn json_not_a_list() {
        for text in [
            r#"{"name":"net1"}"#,
            r#""net1""#,
            r#"[{"name":"net1"}"#,
            r#"[{"name":"net1"}]]"#,
            r#"net1,{"#,
            "[",
        ] {
            let e = parse_networks(text, "pod-ns").unwrap_err();
            assert!(matches!(e, SelectionError::Json { .. }), "{text}: {e:?}");
            assert_eq!(CniError::from(e).code, 7);
        }
    }

    #[test]
    fn default_network() {
        assert_eq!(
            parse_default_network("cbr1", "kube-system").unwrap(),
            sel("kube-system", "cbr1", None)
        );
        assert_eq!(
            parse_default_network(r#"[{"name":"cbr1","namespace":"x"}]"#, "kube-system").unwrap(),
            sel("x", "cbr1", None)
        );
        for (text, count) in [
            ("a,b", 2),
            ("[]", 0),
            ("", 0),
            (r#"[{"name":"a"},{"name":"a"}]"#, 2),
        ] {
            let e = parse_default_network(text, "kube-system").unwrap_err();
            assert_eq!(
                e,
                SelectionError::NotExactlyOne {
                    annotation: DEFAULT_NETWORK_ANNOTATION,
                    count
                }
            );
        }
        let e = parse_default_network("Bad", "kube-system").unwrap_err();
        assert!(e.to_string().contains(DEFAULT_NETWORK_ANNOTATION), "{e}");
    }

    #[test]
    fn hardware_addresses() {
        let good: [(&str, usize); 7] = [
            ("00:00:5e:00:53:01", 6),
            ("00-00-5E-00-53-01", 6),
            ("0000.5e00.5301", 6),
            ("02:00:5e:10:00:00:00:01", 8),
            ("0200.5e10.0000.0001", 8),
            (
                "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01",
                20,
            ),
            ("0000.0000.fe80.0000.0000.0000.0200.5e10.0000.0001", 20),
        ];
        for (s, n) in good {
            assert_eq!(parse_hardware_addr(s).map(|v| v.len()), Some(n), "{s}");
        }
        assert_eq!(
            parse_hardware_addr("00:00:5e:00:53:01").unwrap(),
            vec![0, 0, 0x5e, 0, 0x53, 1]
        );
        for s in [
            "",
            "00:00:5e:00:53",
            "00:00:5e:00:53:01:02",
            "00:00:5e:00:53-01",
            "00:00:5e:00:53:1",
            "00:00:5e:00:53:001",
            "0:00:5e:00:53:01:",
            "00:00:5e:00:53:0g",
            "+0:00:5e:00:53:01",
            "0000.5e00.530",
            "0000.5e00.5301.",
            "00005e005301abcd",
            "é0:00:5e:00:53:01",
            "00:00:5e:00:53:é",
        ] {
            assert_eq!(parse_hardware_addr(s), None, "{s}");
        }
    }

    #[test]
    fn names() {
        for ok in ["a", "0", "a-b", "a1", &"a".repeat(63)] {
            assert!(is_dns1123_label(ok), "{ok}");
            assert!(is_dns1123_subdomain(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64), "é"] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
        assert!(is_dns1123_subdomain("a.b-c.d"));
        for bad in ["a..b", ".a", "a.", "a/b", "A.b", &"a.".repeat(127)] {
            assert!(!is_dns1123_subdomain(bad), "{bad}");
        }
    }

    /// No input may panic: every truncation of valid annotations, and single-byte mutations.
    #[test]
    fn never_panics() {
        let seeds = [
            r#"[{"name":"macvlan-conf","namespace":"other","interface":"net7","ips":["10.1.1.11/24","2001:db8::5"],"mac":"c2:b0:57:49:47:f1","default-route":["10.1.1.254"],"cni-args":{"a":[1,{"b":null}]},"portMappings":[{"hostPort":8080,"containerPort":80}],"bandwidth":{"ingressRate":1},"infiniband-guid":"0000.5e00.5301","deviceID":"x","ipam-claim-reference":"c"}]"#,
            "default/net1@my_interface, other/net2 ,net3@eth1",
            "0000.5e00.5301",
        ];
        let replacements = [
            b'"', b'[', b']', b'{', b'}', b',', b'/', b'@', b':', b'.', b' ', b'\\', 0, 0xff, b'a',
            b'-', b'9',
        ];
        for seed in seeds {
            for end in 0..=seed.len() {
                if let Some(prefix) = seed.get(..end) {
                    let _ = parse_networks(prefix, "ns");
                    let _ = parse_default_network(prefix, "ns");
                    let _ = parse_hardware_addr(prefix);
                }
            }
            let bytes = seed.as_bytes();
            for i in 0..bytes.len() {
                for r in replacements {
                    let mut m = bytes.to_vec();
                    m[i] = r;
                    let text = String::from_utf8_lossy(&m);
                    let _ = parse_networks(&text, "ns");
                    let _ = parse_hardware_addr(&text);
                }
                let mut cut = bytes.to_vec();
                cut.remove(i);
                let _ = parse_networks(&String::from_utf8_lossy(&cut), "ns");
            }
        }
        // Deep nesting and huge inputs are errors, not crashes.
        let deep = format!(
            "[{{\"name\":\"a\",\"cni-args\":{}1{}}}]",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(parse_networks(&deep, "ns").is_err());
        let many = "a,".repeat(100_000);
        assert_eq!(parse_networks(&many, "ns").unwrap().len(), 100_000);
    }
}
