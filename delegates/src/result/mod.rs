//! CNI results of every specification version, and the conversions between them.
//!
//! A plugin prints its result in the version of the configuration it was given; a runtime reads
//! it, may hand it to the next plugin as `prevResult`, and finally writes it in the version it
//! was asked for. [`CniResult`] is the one shape all of these go through: the 1.1 result, which
//! holds everything every older version can say. [`CniResult::parse`] reads any version and
//! [`CniResult::to_value`] writes any version, following libcni's converters
//! (`pkg/types/{020,040,100}`):
//!
//! * **1.0.0 / 1.1.0**: `{cniVersion, interfaces, ips, routes, dns}`. 1.1 only added optional
//!   fields (`interfaces[].mtu`, `socketPath`, `pciID`; `routes[].mtu`, `advmss`, `priority`,
//!   `table`, `scope`), and converting between 1.1 and 1.0 changes only the version string: both
//!   are read and written with every field.
//! * **0.3.0 / 0.3.1 / 0.4.0**: the same shape, but every `ips[]` entry carries `"version"`, `"4"`
//!   or `"6"`, derived from the address family when writing and ignored when reading.
//!   Interfaces have only `name`, `mac` and `sandbox`, routes only `dst` and `gw`: other fields
//!   are neither read nor written at these versions.
//! * **0.1.0 / 0.2.0**: `{cniVersion, ip4: {ip, gateway, routes}, ip6: {...}, dns}`. Writing keeps
//!   only the first IPv4 and the first IPv6 address, puts each route in the block of its
//!   destination's family (routes of a family that has no address are dropped, as libcni drops
//!   them), and loses the interfaces. Reading gives `ip4` then `ip6` as `ips` (with no interface
//!   index) and their routes concatenated in the same order.
//!
//! Conventions on writing, the same as libcni's `omitempty`: `interfaces`, `ips` and `routes`
//! are written only when non-empty, `dns` only when [`Dns::is_empty`] is false, every optional
//! field only when set, and an empty optional string is treated as absent (it is also read as
//! absent). Keys a version does not define are ignored when reading; a `null` list reads as an
//! empty one. Nothing here panics on bad input: undecodable JSON, an unknown `cniVersion` or an
//! invalid address is a [`ResultError`].

mod error;
mod model;
mod read;
mod write;

use serde_json::Value;

pub use error::{InvalidValue, ResultError};
pub use model::{CniResult, Dns, Interface, IpConfig, Route};

use crate::version::SpecVersion;

impl CniResult {
    /// Parses a plugin's stdout. The version is the JSON's own `cniVersion`; when it has none, `fallback` (libcni's fixupResultVersion).
    ///
    /// As in libcni, a `cniVersion` that is missing, empty or not a string counts as none, and
    /// the JSON `null` is an empty result.
    pub fn parse(bytes: &[u8], fallback: SpecVersion) -> Result<CniResult, ResultError> {
        let value: Value = serde_json::from_slice(bytes)?;
        CniResult::from_value(&value, fallback)
    }

    /// Reads a result that is already a JSON value, as [`CniResult::parse`] does.
    pub fn from_value(value: &Value, fallback: SpecVersion) -> Result<CniResult, ResultError> {
        read::from_value(value, fallback)
    }

    /// The result written at `version`, including "cniVersion".
    pub fn to_value(&self, version: SpecVersion) -> Value {
        write::to_value(self, version)
    }

    /// The result written at `version` as compact JSON bytes (see [`CniResult::to_value`]).
    pub fn to_json_bytes(&self, version: SpecVersion) -> Vec<u8> {
        self.to_value(version).to_string().into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use ipnet::IpNet;
    use serde_json::json;

    use super::*;
    use crate::error::ErrorCode;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The SPEC.md 1.1 example, with every 1.1 field used somewhere and a second family.
    const V1_1: &str = r#"{
      "cniVersion": "1.1.0",
      "interfaces": [
          {"name": "cni0", "mac": "00:11:22:33:44:55"},
          {"name": "veth3243", "mac": "55:44:33:22:11:11", "mtu": 1450},
          {"name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/var/run/netns/blue",
           "mtu": 1500, "socketPath": "/run/vhost/sock0", "pciID": "0000:03:02.0"}
      ],
      "ips": [
          {"address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 2},
          {"address": "2001:db8::5/64", "gateway": "2001:db8::1", "interface": 2}
      ],
      "routes": [
          {"dst": "0.0.0.0/0"},
          {"dst": "192.168.0.0/24", "gw": "10.1.0.254", "mtu": 1400, "advmss": 1360,
           "priority": 100, "table": 200, "scope": 0},
          {"dst": "::/0", "gw": "2001:db8::1"}
      ],
      "dns": {
        "nameservers": ["10.1.0.1"],
        "domain": "example.com",
        "search": ["example.com", "svc.example.com"],
        "options": ["ndots:5"]
      }
    }"#;

    /// The SPEC.md 1.0 example (no 1.1 fields).
    const V1_0: &str = r#"{
      "cniVersion": "1.0.0",
      "interfaces": [
          {"name": "cni0", "mac": "00:11:22:33:44:55"},
          {"name": "veth3243", "mac": "55:44:33:22:11:11"},
          {"name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/var/run/netns/blue"}
      ],
      "ips": [
          {"address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 2}
      ],
      "routes": [
          {"dst": "0.0.0.0/0"}
      ],
      "dns": {"nameservers": ["10.1.0.1"]}
    }"#;

    /// The 0.4.0 example: `ips[].version`, dual stack.
    const V0_4: &str = r#"{
      "cniVersion": "0.4.0",
      "interfaces": [
          {"name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/var/run/netns/blue"}
      ],
      "ips": [
          {"version": "4", "address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 0},
          {"version": "6", "address": "2001:db8::5/64", "interface": 0}
      ],
      "routes": [
          {"dst": "0.0.0.0/0", "gw": "10.1.0.1"},
          {"dst": "2001:db8:1::/48"}
      ],
      "dns": {"nameservers": ["10.1.0.1"], "search": ["example.com"]}
    }"#;

    /// The 0.2.0 example: `ip4`/`ip6`.
    const V0_2: &str = r#"{
      "cniVersion": "0.2.0",
      "ip4": {
        "ip": "10.1.0.5/16",
        "gateway": "10.1.0.1",
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/24", "gw": "10.1.0.254"}]
      },
      "ip6": {
        "ip": "2001:db8::5/64",
        "routes": [{"dst": "::/0", "gw": "2001:db8::1"}]
      },
      "dns": {"nameservers": ["10.1.0.1"], "domain": "example.com"}
    }"#;

    /// A hand-written fixture for `version`, as the spec of that version shows results.
    fn fixture(version: SpecVersion) -> String {
        let (base, from) = match version {
            SpecVersion::V0_1_0 => (V0_2, "0.2.0"),
            SpecVersion::V0_2_0 => (V0_2, "0.2.0"),
            SpecVersion::V0_3_0 | SpecVersion::V0_3_1 | SpecVersion::V0_4_0 => (V0_4, "0.4.0"),
            SpecVersion::V1_0_0 => (V1_0, "1.0.0"),
            SpecVersion::V1_1_0 => (V1_1, "1.1.0"),
        };
        let from = format!("\"cniVersion\": \"{from}\"");
        let to = format!("\"cniVersion\": \"{}\"", version.as_str());
        assert!(base.contains(&from));
        base.replace(&from, &to)
    }

    fn value(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn every_version_round_trips() {
        for version in SpecVersion::ALL {
            let text = fixture(version);
            // The fallback must not matter: the fixture names its version.
            let fallback = if version.is_legacy() {
                SpecVersion::V1_1_0
            } else {
                SpecVersion::V0_1_0
            };
            let result = CniResult::parse(text.as_bytes(), fallback)
                .unwrap_or_else(|e| panic!("{version}: {e}"));
            assert_eq!(result.to_value(version), value(&text), "{version}");
            let again = CniResult::parse(&result.to_json_bytes(version), fallback).unwrap();
            assert_eq!(again, result, "{version}");
        }
    }

    #[test]
    fn spec_example_parses_to_the_canonical_shape() {
        let r = CniResult::parse(V1_1.as_bytes(), SpecVersion::V1_1_0).unwrap();
        assert_eq!(r.interfaces.len(), 3);
        assert_eq!(
            r.interfaces[2],
            Interface {
                name: "eth0".into(),
                mac: Some("99:88:77:66:55:44".into()),
                mtu: Some(1500),
                sandbox: Some("/var/run/netns/blue".into()),
                socket_path: Some("/run/vhost/sock0".into()),
                pci_id: Some("0000:03:02.0".into()),
            }
        );
        assert_eq!(
            r.ips[0],
            IpConfig {
                address: net("10.1.0.5/16"),
                gateway: Some(ip("10.1.0.1")),
                interface: Some(2),
            }
        );
        // Host bits are kept.
        assert_eq!(r.ips[0].address.addr(), ip("10.1.0.5"));
        assert_eq!(
            r.routes[1],
            Route {
                dst: net("192.168.0.0/24"),
                gw: Some(ip("10.1.0.254")),
                mtu: Some(1400),
                advmss: Some(1360),
                priority: Some(100),
                table: Some(200),
                scope: Some(0),
            }
        );
        assert_eq!(r.routes[0], Route::new(net("0.0.0.0/0")));
        assert_eq!(
            r.dns,
            Dns {
                nameservers: vec!["10.1.0.1".into()],
                domain: Some("example.com".into()),
                search: vec!["example.com".into(), "svc.example.com".into()],
                options: vec!["ndots:5".into()],
            }
        );
    }

    #[test]
    fn v1_1_to_v1_0_changes_only_the_version() {
        let r = CniResult::parse(V1_1.as_bytes(), SpecVersion::V1_1_0).unwrap();
        let mut expected = value(V1_1);
        expected["cniVersion"] = json!("1.0.0");
        assert_eq!(r.to_value(SpecVersion::V1_0_0), expected);
    }

    #[test]
    fn v1_1_to_v0_4_drops_new_fields_and_adds_ip_version() {
        let r = CniResult::parse(V1_1.as_bytes(), SpecVersion::V1_1_0).unwrap();
        let expected = json!({
            "cniVersion": "0.4.0",
            "interfaces": [
                {"name": "cni0", "mac": "00:11:22:33:44:55"},
                {"name": "veth3243", "mac": "55:44:33:22:11:11"},
                {"name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/var/run/netns/blue"}
            ],
            "ips": [
                {"version": "4", "address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 2},
                {"version": "6", "address": "2001:db8::5/64", "gateway": "2001:db8::1", "interface": 2}
            ],
            "routes": [
                {"dst": "0.0.0.0/0"},
                {"dst": "192.168.0.0/24", "gw": "10.1.0.254"},
                {"dst": "::/0", "gw": "2001:db8::1"}
            ],
            "dns": value(V1_1)["dns"].clone(),
        });
        assert_eq!(r.to_value(SpecVersion::V0_4_0), expected);
        let mut v0_3 = expected.clone();
        v0_3["cniVersion"] = json!("0.3.1");
        assert_eq!(r.to_value(SpecVersion::V0_3_1), v0_3);
    }

    #[test]
    fn v0_4_to_v0_2_keeps_first_address_of_each_family_and_splits_routes() {
        let text = r#"{
          "cniVersion": "0.4.0",
          "interfaces": [{"name": "eth0"}],
          "ips": [
            {"version": "6", "address": "2001:db8::5/64", "gateway": "2001:db8::1", "interface": 0},
            {"version": "4", "address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 0},
            {"version": "4", "address": "10.2.0.5/16", "interface": 0},
            {"version": "6", "address": "2001:db8:2::5/64", "interface": 0}
          ],
          "routes": [
            {"dst": "::/0"},
            {"dst": "0.0.0.0/0", "gw": "10.1.0.1"},
            {"dst": "2001:db8:9::/48", "gw": "2001:db8::9"},
            {"dst": "172.16.0.0/12"}
          ]
        }"#;
        let r = CniResult::parse(text.as_bytes(), SpecVersion::V0_4_0).unwrap();
        let expected = json!({
            "cniVersion": "0.2.0",
            "ip4": {
                "ip": "10.1.0.5/16",
                "gateway": "10.1.0.1",
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}, {"dst": "172.16.0.0/12"}]
            },
            "ip6": {
                "ip": "2001:db8::5/64",
                "gateway": "2001:db8::1",
                "routes": [{"dst": "::/0"}, {"dst": "2001:db8:9::/48", "gw": "2001:db8::9"}]
            }
        });
        assert_eq!(r.to_value(SpecVersion::V0_2_0), expected);
        let mut v0_1 = expected;
        v0_1["cniVersion"] = json!("0.1.0");
        assert_eq!(r.to_value(SpecVersion::V0_1_0), v0_1);
    }

    #[test]
    fn legacy_output_drops_routes_of_a_family_without_address() {
        let r = CniResult {
            ips: vec![IpConfig::new(net("10.1.0.5/24"))],
            routes: vec![Route::new(net("::/0")), Route::new(net("0.0.0.0/0"))],
            ..CniResult::default()
        };
        assert_eq!(
            r.to_value(SpecVersion::V0_2_0),
            json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.1.0.5/24", "routes": [{"dst": "0.0.0.0/0"}]}})
        );
        // No address at all: libcni refuses; Plexus writes the version and DNS only.
        let r = CniResult {
            dns: Dns {
                nameservers: vec!["10.0.0.1".into()],
                ..Dns::default()
            },
            ..CniResult::default()
        };
        assert_eq!(
            r.to_value(SpecVersion::V0_2_0),
            json!({"cniVersion": "0.2.0", "dns": {"nameservers": ["10.0.0.1"]}})
        );
    }

    #[test]
    fn v0_2_to_v1_0_concatenates_ip4_then_ip6() {
        let r = CniResult::parse(V0_2.as_bytes(), SpecVersion::V1_0_0).unwrap();
        assert!(r.interfaces.is_empty());
        let expected = json!({
            "cniVersion": "1.0.0",
            "ips": [
                {"address": "10.1.0.5/16", "gateway": "10.1.0.1"},
                {"address": "2001:db8::5/64"}
            ],
            "routes": [
                {"dst": "0.0.0.0/0"},
                {"dst": "192.168.0.0/24", "gw": "10.1.0.254"},
                {"dst": "::/0", "gw": "2001:db8::1"}
            ],
            "dns": {"nameservers": ["10.1.0.1"], "domain": "example.com"}
        });
        assert_eq!(r.to_value(SpecVersion::V1_0_0), expected);
        // And to 0.4 with versions.
        let v0_4 = r.to_value(SpecVersion::V0_4_0);
        assert_eq!(v0_4["ips"][0]["version"], json!("4"));
        assert_eq!(v0_4["ips"][1]["version"], json!("6"));
    }

    #[test]
    fn dual_stack_survives_every_version() {
        let r = CniResult {
            interfaces: vec![Interface::new("net1")],
            ips: vec![
                IpConfig {
                    interface: Some(0),
                    gateway: Some(ip("10.0.0.1")),
                    ..IpConfig::new(net("10.0.0.7/24"))
                },
                IpConfig {
                    interface: Some(0),
                    ..IpConfig::new(net("fd00::7/64"))
                },
            ],
            routes: vec![Route::new(net("0.0.0.0/0")), Route::new(net("::/0"))],
            dns: Dns::default(),
        };
        for version in SpecVersion::ALL {
            let back = CniResult::parse(&r.to_json_bytes(version), version).unwrap();
            let families: Vec<bool> = back
                .ips
                .iter()
                .map(|i| i.address.addr().is_ipv4())
                .collect();
            assert_eq!(families, [true, false], "{version}");
            assert_eq!(back.routes, r.routes, "{version}");
            if version.is_legacy() {
                assert!(back.interfaces.is_empty());
                assert_eq!(back.ips[0].interface, None);
            } else {
                assert_eq!(back, r, "{version}");
            }
        }
    }

    #[test]
    fn v0_4_input_ignores_ip_version_and_fields_it_does_not_define() {
        let text = r#"{
          "cniVersion": "0.4.0",
          "interfaces": [{"name": "eth0", "mtu": 9000, "pciID": "0000:03:02.0"}],
          "ips": [{"version": "6", "address": "10.1.0.5/16"}],
          "routes": [{"dst": "0.0.0.0/0", "mtu": 1400, "table": 5}]
        }"#;
        let r = CniResult::parse(text.as_bytes(), SpecVersion::V1_1_0).unwrap();
        assert_eq!(r.interfaces, [Interface::new("eth0")]);
        assert_eq!(r.ips, [IpConfig::new(net("10.1.0.5/16"))]);
        assert_eq!(r.routes, [Route::new(net("0.0.0.0/0"))]);
        assert_eq!(
            r.to_value(SpecVersion::V0_4_0)["ips"][0]["version"],
            json!("4")
        );
    }

    #[test]
    fn missing_version_uses_fallback() {
        let modern = r#"{"ips": [{"address": "10.1.0.5/16"}]}"#;
        let legacy = r#"{"ip4": {"ip": "10.1.0.5/16"}}"#;
        let expected = CniResult {
            ips: vec![IpConfig::new(net("10.1.0.5/16"))],
            ..CniResult::default()
        };
        for fallback in [
            SpecVersion::V0_3_0,
            SpecVersion::V0_4_0,
            SpecVersion::V1_0_0,
        ] {
            assert_eq!(
                CniResult::parse(modern.as_bytes(), fallback).unwrap(),
                expected
            );
            // A legacy body read as a modern version has no known keys.
            assert_eq!(
                CniResult::parse(legacy.as_bytes(), fallback).unwrap(),
                CniResult::default()
            );
        }
        assert_eq!(
            CniResult::parse(legacy.as_bytes(), SpecVersion::V0_2_0).unwrap(),
            expected
        );
        assert_eq!(
            CniResult::parse(modern.as_bytes(), SpecVersion::V0_1_0).unwrap(),
            CniResult::default()
        );
        // Empty, null or non-string versions count as missing, as in libcni.
        for text in [
            r#"{"cniVersion": "", "ip4": {"ip": "10.1.0.5/16"}}"#,
            r#"{"cniVersion": null, "ip4": {"ip": "10.1.0.5/16"}}"#,
            r#"{"cniVersion": 4, "ip4": {"ip": "10.1.0.5/16"}}"#,
        ] {
            assert_eq!(
                CniResult::parse(text.as_bytes(), SpecVersion::V0_2_0).unwrap(),
                expected
            );
        }
        // A present version wins over the fallback.
        let v = value(&fixture(SpecVersion::V1_0_0));
        assert_eq!(
            CniResult::from_value(&v, SpecVersion::V0_2_0)
                .unwrap()
                .ips
                .len(),
            1
        );
    }

    #[test]
    fn null_and_empty_results_are_empty() {
        for text in [
            "null",
            "{}",
            r#"{"cniVersion": "1.0.0", "ips": null, "dns": {}}"#,
        ] {
            assert_eq!(
                CniResult::parse(text.as_bytes(), SpecVersion::V1_0_0).unwrap(),
                CniResult::default()
            );
        }
        for version in SpecVersion::ALL {
            assert_eq!(
                CniResult::default().to_value(version),
                json!({"cniVersion": version.as_str()})
            );
        }
    }

    #[test]
    fn unknown_keys_are_ignored() {
        let text = r#"{
          "cniVersion": "1.1.0",
          "vendorThing": {"a": [1, 2]},
          "interfaces": [{"name": "eth0", "extra": true}],
          "ips": [{"address": "10.1.0.5/16", "note": "x"}],
          "dns": {"nameservers": ["1.1.1.1"], "other": 1}
        }"#;
        let r = CniResult::parse(text.as_bytes(), SpecVersion::V1_1_0).unwrap();
        assert_eq!(r.interfaces, [Interface::new("eth0")]);
        assert_eq!(r.dns.nameservers, ["1.1.1.1"]);
    }

    #[test]
    fn empty_strings_are_absent() {
        let text = r#"{"cniVersion": "1.0.0",
          "interfaces": [{"name": "eth0", "mac": "", "sandbox": ""}],
          "ips": [{"address": "10.1.0.5/16", "gateway": ""}],
          "dns": {"domain": ""}}"#;
        let r = CniResult::parse(text.as_bytes(), SpecVersion::V1_0_0).unwrap();
        assert_eq!(r.interfaces, [Interface::new("eth0")]);
        assert_eq!(r.ips[0].gateway, None);
        assert!(r.dns.is_empty());
        let written = CniResult {
            interfaces: vec![Interface {
                mac: Some(String::new()),
                ..Interface::new("eth0")
            }],
            dns: Dns {
                domain: Some(String::new()),
                ..Dns::default()
            },
            ..CniResult::default()
        };
        assert_eq!(
            written.to_value(SpecVersion::V1_0_0),
            json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}]})
        );
    }

    #[test]
    fn unknown_version_is_an_error() {
        let err = CniResult::parse(br#"{"cniVersion": "9.9.9"}"#, SpecVersion::V1_0_0).unwrap_err();
        assert!(matches!(err, ResultError::UnknownVersion(_)), "{err}");
        assert_eq!(err.code(), ErrorCode::IncompatibleVersion);
    }

    #[test]
    fn malformed_results_are_errors() {
        let decode = [
            "",
            "not json",
            "[]",
            "\"1.0.0\"",
            "42",
            r#"{"cniVersion": "1.0.0", "ips": {}}"#,
            r#"{"cniVersion": "1.0.0", "ips": [{"gateway": "10.0.0.1"}]}"#,
            r#"{"cniVersion": "1.0.0", "ips": [{"address": 5}]}"#,
            r#"{"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/8", "interface": -1}]}"#,
            r#"{"cniVersion": "1.1.0", "interfaces": [{"name": "eth0", "mtu": "1500"}]}"#,
            r#"{"cniVersion": "1.1.0", "interfaces": [{"name": "eth0", "mtu": 1.5}]}"#,
            r#"{"cniVersion": "1.1.0", "routes": [{"dst": "0.0.0.0/0", "table": 99999999999}]}"#,
            r#"{"cniVersion": "1.0.0", "routes": [{"gw": "10.0.0.1"}]}"#,
            r#"{"cniVersion": "1.0.0", "dns": {"nameservers": "8.8.8.8"}}"#,
            r#"{"cniVersion": "0.2.0", "ip4": {"gateway": "10.0.0.1"}}"#,
            r#"{"cniVersion": "0.2.0", "ip4": "10.0.0.1/8"}"#,
        ];
        for text in decode {
            let err = CniResult::parse(text.as_bytes(), SpecVersion::V1_0_0).unwrap_err();
            assert!(matches!(err, ResultError::Decode(_)), "{text}: {err}");
            assert_eq!(err.code(), ErrorCode::DecodingFailure);
        }
        let invalid = [
            (
                r#"{"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.5"}]}"#,
                "ips[0].address",
            ),
            (
                r#"{"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.500/16"}]}"#,
                "ips[0].address",
            ),
            (
                r#"{"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.5/33"}]}"#,
                "ips[0].address",
            ),
            (
                r#"{"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.5/16", "gateway": "gw"}]}"#,
                "ips[0].gateway",
            ),
            (
                r#"{"cniVersion": "0.4.0", "routes": [{"dst": "0.0.0.0/0"}, {"dst": "x"}]}"#,
                "routes[1].dst",
            ),
            (
                r#"{"cniVersion": "1.1.0", "routes": [{"dst": "::/0", "gw": "::g"}]}"#,
                "routes[0].gw",
            ),
            (
                r#"{"cniVersion": "0.2.0", "ip4": {"ip": "2001:db8::5/64"}}"#,
                "ip4.ip",
            ),
            (
                r#"{"cniVersion": "0.2.0", "ip6": {"ip": "10.1.0.5/16"}}"#,
                "ip6.ip",
            ),
            (
                r#"{"cniVersion": "0.1.0", "ip6": {"ip": "::5/64", "routes": [{"dst": "::"}]}}"#,
                "ip6.routes[0].dst",
            ),
        ];
        for (text, at) in invalid {
            match CniResult::parse(text.as_bytes(), SpecVersion::V1_0_0) {
                Err(ResultError::Invalid { field, .. }) => assert_eq!(field, at, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn truncated_and_mangled_input_never_panics() {
        for version in SpecVersion::ALL {
            let text = fixture(version);
            let bytes = text.as_bytes();
            let last_brace = text.rfind('}').unwrap();
            for end in 0..=bytes.len() {
                let parsed = CniResult::parse(&bytes[..end], version);
                if end <= last_brace {
                    assert!(parsed.is_err(), "{version}: prefix of {end} bytes parsed");
                } else {
                    assert!(parsed.is_ok(), "{version}: {end} bytes");
                }
            }
            // Overwriting any one byte must not panic either.
            for at in 0..bytes.len() {
                for b in [b'"', b'0', b'x', b'{', b']', b'/', 0xff] {
                    let mut mangled = bytes.to_vec();
                    mangled[at] = b;
                    let _ = CniResult::parse(&mangled, version);
                }
            }
        }
    }

    #[test]
    fn default_route_detection() {
        let with = |dst: &str| CniResult {
            routes: vec![Route::new(net("10.9.0.0/16")), Route::new(net(dst))],
            ..CniResult::default()
        };
        assert!(with("0.0.0.0/0").has_default_route());
        assert!(with("::/0").has_default_route());
        assert!(!with("0.0.0.0/1").has_default_route());
        assert!(!with("::/1").has_default_route());
        assert!(!CniResult::default().has_default_route());
        let r = CniResult::parse(V0_2.as_bytes(), SpecVersion::V0_2_0).unwrap();
        assert!(r.has_default_route());
    }

    #[test]
    fn json_bytes_are_the_value() {
        let r = CniResult::parse(V1_1.as_bytes(), SpecVersion::V1_1_0).unwrap();
        for version in SpecVersion::ALL {
            let bytes = r.to_json_bytes(version);
            let back: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(back, r.to_value(version));
            // cniVersion comes first, as libcni writes it.
            assert!(bytes.starts_with(format!("{{\"cniVersion\":\"{version}\"").as_bytes()));
        }
    }
}
