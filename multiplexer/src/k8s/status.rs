//! The `k8s.v1.cni.cncf.io/network-status` annotation: what each attachment gave the pod, in
//! the exact shape Multus writes (the network-attachment-definition client's `NetworkStatus`),
//! so that tools reading Multus's annotation read Plexus's.
//!
//! Shape of one entry, keys in this order: `name`; `interface`, `ips` (bare addresses, no prefix
//! length), `mac`, `mtu` when set; `default` only when true; `dns` always (its `nameservers`,
//! `domain`, `search`, `options` only when set, so often `{}`); `device-info` and `gateway` (the
//! gateways of the result's default routes) when set. Like Multus, and unlike the
//! specification's examples, gateways are under `gateway` and addresses carry no prefix.

use plexus_cni::result::{CniResult, Dns};
use plexus_cni::{CniError, ErrorCode};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use thiserror::Error;

use super::client::KubeApi;
use super::pod_networks::PodInfo;
use super::selection::NETWORK_STATUS_ANNOTATION;

/// DNS settings in a status entry; each key is written only when set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StatusDns {
    /// `nameservers`.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub nameservers: Vec<String>,
    /// `domain`.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub domain: String,
    /// `search`.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub search: Vec<String>,
    /// `options`.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub options: Vec<String>,
}

impl From<&Dns> for StatusDns {
    fn from(dns: &Dns) -> Self {
        StatusDns {
            nameservers: dns.nameservers.clone(),
            domain: dns.domain.clone().unwrap_or_default(),
            search: dns.search.clone(),
            options: dns.options.clone(),
        }
    }
}

/// One entry of the network-status annotation.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NetworkStatus {
    /// `name`: `namespace/nad` for a NAD, the configuration's name for the cluster network.
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// `interface`: the interface in the pod; left out when unknown.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub interface: String,
    /// `ips`: the addresses, without prefix length.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ips: Vec<String>,
    /// `mac`.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub mac: String,
    /// `mtu`; left out when 0.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "is_zero"
    )]
    pub mtu: u32,
    /// `default`: true for the pod's cluster (primary) network; written only when true.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "is_false"
    )]
    pub default: bool,
    /// `dns`: always written.
    #[serde(default, deserialize_with = "null_default")]
    pub dns: StatusDns,
    /// `device-info`: the device-info file's content (device-info-spec), when there is one.
    #[serde(
        rename = "device-info",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub device_info: Option<Value>,
    /// `gateway`: the gateways of the result's default routes.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub gateway: Vec<String>,
}

/// A network-status annotation could not be read (code 6).
#[derive(Debug, Error)]
#[error("annotation k8s.v1.cni.cncf.io/network-status: {0}")]
pub struct StatusError(#[from] serde_json::Error);

impl From<StatusError> for CniError {
    fn from(e: StatusError) -> Self {
        CniError::new(ErrorCode::DecodingFailure, e.to_string())
    }
}

/// The status entries of one attachment, as the NAD client's `CreateNetworkStatuses` builds
/// them for Multus:
///
/// * one entry per result interface that has a `sandbox` (interfaces on the host are not the
///   pod's), with its name, MAC and MTU;
/// * each address goes to the entry of its `ips[].interface`; an address without an index (or
///   with an index outside the list) goes to the last sandbox interface, one that names a host
///   interface is left out;
/// * when no interface has a sandbox (a plugin that reports no interfaces, or only host-side
///   ones), a single entry holds every address, named `ifname` (the attachment's `CNI_IFNAME`;
///   left out when empty). Multus writes no entry at all for a result without interfaces;
///   Plexus always reports every attachment;
/// * every entry gets the result's DNS, `device_info`, and the gateways of the result's default
///   routes (`0.0.0.0/0`, `::/0` that have a `gw`, without repeats; Multus would write `<nil>`
///   for one without);
/// * with `is_default`, `default: true` goes to the interface of the first address that has a
///   gateway, else to the first sandbox interface (Multus marks none when that address is on a
///   host interface).
pub fn statuses_for(
    name: &str,
    result: &CniResult,
    is_default: bool,
    device_info: Option<Value>,
    ifname: &str,
) -> Vec<NetworkStatus> {
    let dns = StatusDns::from(&result.dns);
    let mut gateways: Vec<String> = Vec::new();
    for route in result.routes.iter().filter(|r| r.is_default()) {
        if let Some(gw) = route.gw {
            let gw = gw.to_string();
            if !gateways.contains(&gw) {
                gateways.push(gw);
            }
        }
    }
    let entry = |interface: &str, mac: &str, mtu: u32| NetworkStatus {
        name: name.to_string(),
        interface: interface.to_string(),
        ips: Vec::new(),
        mac: mac.to_string(),
        mtu,
        default: false,
        dns: dns.clone(),
        device_info: device_info.clone(),
        gateway: gateways.clone(),
    };

    // (index in result.interfaces, status entry)
    let mut entries: Vec<(Option<usize>, NetworkStatus)> = result
        .interfaces
        .iter()
        .enumerate()
        .filter(|(_, i)| i.sandbox.as_deref().is_some_and(|s| !s.is_empty()))
        .map(|(idx, i)| {
            (
                Some(idx),
                entry(&i.name, i.mac.as_deref().unwrap_or(""), i.mtu.unwrap_or(0)),
            )
        })
        .collect();
    if entries.is_empty() {
        entries.push((None, entry(ifname, "", 0)));
    }
    let last = entries.len() - 1;
    let position = |iface: Option<usize>| -> Option<usize> {
        let Some(iface) = iface.filter(|i| *i < result.interfaces.len()) else {
            return Some(last);
        };
        match entries.iter().position(|(idx, _)| *idx == Some(iface)) {
            Some(p) => Some(p),
            // A host interface's address; with no sandbox interface at all, the single
            // entry takes every address.
            None if entries[0].0.is_none() => Some(0),
            None => None,
        }
    };
    let placed: Vec<(usize, String)> = result
        .ips
        .iter()
        .filter_map(|ip| position(ip.interface).map(|p| (p, ip.address.addr().to_string())))
        .collect();
    for (p, ip) in placed {
        entries[p].1.ips.push(ip);
    }

    if is_default {
        let with_gateway = result
            .ips
            .iter()
            .find(|ip| ip.gateway.is_some() && ip.interface.is_some())
            .and_then(|ip| ip.interface)
            .and_then(|iface| entries.iter().position(|(idx, _)| *idx == Some(iface)));
        entries[with_gateway.unwrap_or(0)].1.default = true;
    }
    entries.into_iter().map(|(_, s)| s).collect()
}

/// The annotation's text, byte for byte as Multus writes it: a JSON list whose entries are each
/// pretty-printed with four-space indentation (Go's `json.MarshalIndent(s, "", "    ")`),
/// joined by `,` inside `[` and `]`. An empty list is `[]`.
pub fn to_annotation(statuses: &[NetworkStatus]) -> String {
    let entries: Vec<String> = statuses
        .iter()
        .map(|s| {
            let mut out = Vec::new();
            let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
            // Serializing this struct into memory cannot fail.
            let _ = s.serialize(&mut ser);
            String::from_utf8(out).unwrap_or_default()
        })
        .collect();
    format!("[{}]", entries.join(","))
}

/// Reads a network-status annotation (Multus's, another writer's, or Plexus's). Unknown keys
/// are ignored and `null` counts as absent.
pub fn from_annotation(s: &str) -> Result<Vec<NetworkStatus>, StatusError> {
    Ok(serde_json::from_str(s)?)
}

/// Writes the annotation of `pod` with one PATCH of that annotation alone, conditional on the
/// pod's UID; the error names the pod.
pub async fn write(
    api: &KubeApi,
    pod: &PodInfo,
    statuses: &[NetworkStatus],
) -> Result<(), CniError> {
    api.patch_pod_annotation(
        &pod.pod.namespace,
        &pod.pod.name,
        pod.status_uid.as_deref(),
        NETWORK_STATUS_ANNOTATION,
        &to_annotation(statuses),
    )
    .await
    .map_err(|e| {
        let e = CniError::from(e);
        CniError {
            msg: format!(
                "writing the network-status of pod {}: {}",
                pod.pod.display(),
                e.msg
            ),
            ..e
        }
    })
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

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
    use plexus_cni::SpecVersion;
    use serde_json::json;

    fn result(v: Value) -> CniResult {
        CniResult::from_value(&v, SpecVersion::V1_0_0).unwrap()
    }

    fn statuses_json(
        name: &str,
        r: Value,
        is_default: bool,
        dev: Option<Value>,
        ifname: &str,
    ) -> Value {
        let s = statuses_for(name, &result(r), is_default, dev, ifname);
        serde_json::to_value(&s).unwrap()
    }

    #[test]
    fn cases_from_results() {
        let sandbox = "/var/run/netns/pod";
        let cases: Vec<(&str, Value, bool, Option<Value>, Value)> = vec![
            (
                "single sandbox interface, cluster network",
                json!({"cniVersion":"1.0.0",
                    "interfaces":[{"name":"eth0","mac":"92:79:27:01:7c:ce","sandbox":sandbox}],
                    "ips":[{"address":"10.244.1.5/24","gateway":"10.244.1.1","interface":0}],
                    "routes":[{"dst":"0.0.0.0/0","gw":"10.244.1.1"},{"dst":"10.0.0.0/8"}],
                    "dns":{"nameservers":["10.96.0.10"],"search":["svc.cluster.local"]}}),
                true,
                None,
                json!([{"name":"cbr0","interface":"eth0","ips":["10.244.1.5"],
                    "mac":"92:79:27:01:7c:ce","default":true,
                    "dns":{"nameservers":["10.96.0.10"],"search":["svc.cluster.local"]},
                    "gateway":["10.244.1.1"]}]),
            ),
            (
                "bridge: host interfaces are skipped, addresses without index go last",
                json!({"cniVersion":"1.0.0",
                    "interfaces":[{"name":"cni0","mac":"aa:aa:aa:aa:aa:aa"},
                                  {"name":"veth1","mac":"bb:bb:bb:bb:bb:bb"},
                                  {"name":"net1","mac":"cc:cc:cc:cc:cc:cc","sandbox":sandbox,"mtu":9000}],
                    "ips":[{"address":"10.1.1.11/24","interface":2},{"address":"2001:db8::11/64"},
                           {"address":"192.168.0.1/24","interface":0}]}),
                false,
                Some(json!({"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:03:02.1"}})),
                json!([{"name":"cbr0","interface":"net1","ips":["10.1.1.11","2001:db8::11"],
                    "mac":"cc:cc:cc:cc:cc:cc","mtu":9000,"dns":{},
                    "device-info":{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:03:02.1"}}}]),
            ),
            (
                "two sandbox interfaces, default on the one with a gateway",
                json!({"cniVersion":"1.0.0",
                    "interfaces":[{"name":"net1","sandbox":sandbox},{"name":"host0"},{"name":"net2","sandbox":sandbox}],
                    "ips":[{"address":"10.1.1.1/24","interface":0},
                           {"address":"10.2.2.2/24","gateway":"10.2.2.254","interface":2},
                           {"address":"10.3.3.3/24"},{"address":"10.4.4.4/24","interface":9}],
                    "routes":[{"dst":"0.0.0.0/0","gw":"10.2.2.254"},{"dst":"::/0","gw":"2001:db8::1"},
                              {"dst":"0.0.0.0/0","gw":"10.2.2.254"},{"dst":"::/0"}]}),
                true,
                None,
                json!([{"name":"cbr0","interface":"net1","ips":["10.1.1.1"],"dns":{},
                        "gateway":["10.2.2.254","2001:db8::1"]},
                       {"name":"cbr0","interface":"net2","ips":["10.2.2.2","10.3.3.3","10.4.4.4"],
                        "default":true,"dns":{},"gateway":["10.2.2.254","2001:db8::1"]}]),
            ),
            (
                "gateway on a host interface: default falls back to the first sandbox interface",
                json!({"cniVersion":"1.0.0",
                    "interfaces":[{"name":"host0"},{"name":"net1","sandbox":sandbox},{"name":"net2","sandbox":sandbox}],
                    "ips":[{"address":"10.0.0.1/24","gateway":"10.0.0.254","interface":0}]}),
                true,
                None,
                json!([{"name":"cbr0","interface":"net1","default":true,"dns":{}},
                       {"name":"cbr0","interface":"net2","dns":{}}]),
            ),
            (
                "no interfaces: one entry with every address, named after CNI_IFNAME",
                json!({"cniVersion":"0.2.0","ip4":{"ip":"10.9.9.9/24","gateway":"10.9.9.1",
                        "routes":[{"dst":"0.0.0.0/0","gw":"10.9.9.1"}]}}),
                true,
                None,
                json!([{"name":"cbr0","interface":"net3","ips":["10.9.9.9"],"default":true,
                        "dns":{},"gateway":["10.9.9.1"]}]),
            ),
            (
                "only host interfaces: every address, even the indexed ones",
                json!({"cniVersion":"1.0.0","interfaces":[{"name":"host0","mac":"aa:aa:aa:aa:aa:aa"}],
                    "ips":[{"address":"10.0.0.5/24","interface":0}]}),
                false,
                None,
                json!([{"name":"cbr0","interface":"net3","ips":["10.0.0.5"],"dns":{}}]),
            ),
            (
                "empty result",
                json!({"cniVersion":"1.0.0"}),
                false,
                None,
                json!([{"name":"cbr0","interface":"net3","dns":{}}]),
            ),
        ];
        for (what, r, is_default, dev, want) in cases {
            assert_eq!(
                statuses_json("cbr0", r, is_default, dev, "net3"),
                want,
                "{what}"
            );
        }
        let s = statuses_for("x", &CniResult::default(), false, None, "");
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            json!([{"name":"x","dns":{}}])
        );
    }

    #[test]
    fn annotation_text_is_multus_byte_for_byte() {
        let statuses = vec![
            NetworkStatus {
                name: "cbr0".into(),
                interface: "eth0".into(),
                ips: vec!["10.244.1.5".into()],
                mac: "92:79:27:01:7c:ce".into(),
                default: true,
                dns: StatusDns::default(),
                ..NetworkStatus::default()
            },
            NetworkStatus {
                name: "default/macvlan-conf".into(),
                interface: "net1".into(),
                ips: vec!["10.1.1.11".into(), "2001:db8::11".into()],
                mac: "c2:b0:57:49:47:f1".into(),
                mtu: 1500,
                dns: StatusDns {
                    nameservers: vec!["10.1.1.1".into()],
                    domain: "example.com".into(),
                    search: vec![],
                    options: vec!["ndots:5".into()],
                },
                device_info: Some(
                    json!({"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:03:02.1"}}),
                ),
                gateway: vec!["10.1.1.254".into()],
                ..NetworkStatus::default()
            },
        ];
        let want = r#"[{
    "name": "cbr0",
    "interface": "eth0",
    "ips": [
        "10.244.1.5"
    ],
    "mac": "92:79:27:01:7c:ce",
    "default": true,
    "dns": {}
},{
    "name": "default/macvlan-conf",
    "interface": "net1",
    "ips": [
        "10.1.1.11",
        "2001:db8::11"
    ],
    "mac": "c2:b0:57:49:47:f1",
    "mtu": 1500,
    "dns": {
        "nameservers": [
            "10.1.1.1"
        ],
        "domain": "example.com",
        "options": [
            "ndots:5"
        ]
    },
    "device-info": {
        "type": "pci",
        "version": "1.1.0",
        "pci": {
            "pci-address": "0000:03:02.1"
        }
    },
    "gateway": [
        "10.1.1.254"
    ]
}]"#;
        let text = to_annotation(&statuses);
        assert_eq!(text, want);
        assert_eq!(from_annotation(&text).unwrap(), statuses);
        assert_eq!(to_annotation(&[]), "[]");
        assert_eq!(from_annotation("[]").unwrap(), vec![]);
    }

    #[test]
    fn reads_other_writers() {
        // Multus 3.x style with nulls, a spec-style entry with prefixes and "default-route",
        // unknown keys: all readable.
        let text = r#"[
            {"name":"cbr0","interface":"eth0","ips":["10.244.1.5"],"mac":"x","default":true,
             "dns":{"nameservers":null},"gateway":null,"mtu":null,"device-info":null},
            {"name":"ns/n","ips":["10.1.1.11/24"],"default-route":["10.1.1.1"],"extra":{"a":1}}
        ]"#;
        let got = from_annotation(text).unwrap();
        assert_eq!(got.len(), 2);
        assert!(got[0].default && got[0].gateway.is_empty() && got[0].device_info.is_none());
        assert_eq!(got[1].ips, ["10.1.1.11/24"]);
        assert_eq!(got[1].dns, StatusDns::default());
        for bad in [
            "",
            "{}",
            "[1]",
            r#"[{"name":"a","mtu":-1}]"#,
            r#"[{"ips":"x"}]"#,
        ] {
            let e = from_annotation(bad).unwrap_err();
            assert!(e.to_string().contains("network-status"), "{e}");
            assert_eq!(CniError::from(e).code, 6);
        }
    }
}
