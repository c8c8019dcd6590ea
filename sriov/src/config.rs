//! The plugin's network configuration: sriov-cni's keys, checked, plus Plexus's `sysfsRoot` and
//! `dataDir`.
//!
//! | key | meaning |
//! |---|---|
//! | `deviceID` (or `pciBusID`; `runtimeConfig.deviceID` wins) | the VF's PCI address, required |
//! | `vlan` 0–4094, `vlanQoS` 0–7, `vlanProto` `802.1q`/`802.1ad` | the VF's VLAN, set on the PF |
//! | `mac` (`runtimeConfig.mac`, then `CNI_ARGS` `MAC=`, win) | the VF's MAC |
//! | `spoofchk`, `trust` `on`/`off`; `link_state` `auto`/`enable`/`disable` | VF flags on the PF |
//! | `min_tx_rate`, `max_tx_rate` | rate limits in Mbps (0 = none) |
//! | `mtu` | the VF netdev's MTU in the pod |
//! | `ipam` | the IPAM plugin's configuration |
//! | `sysfsRoot` (`/sys`), `dataDir` (`/var/lib/cni/plexus-sriov`) | Plexus's own |
//! | `runtimeConfig.CNIDeviceInfoFile` | where the device-info file goes |

use std::path::PathBuf;

use plexus_cni::env::CniArgs;
use plexus_cni::{CniError, ErrorCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::pf::{LinkState, VfChange, VfConfig, VlanProto};

/// The default `sysfsRoot`.
pub const DEFAULT_SYSFS_ROOT: &str = "/sys";
/// The default `dataDir`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/plexus-sriov";

/// The VF settings a configuration asks for; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VfRequest {
    /// VLAN id, QoS and protocol (`vlan`, `vlanQoS`, `vlanProto`).
    pub vlan: Option<(u32, u32, VlanProto)>,
    /// The VF's MAC, lower case.
    pub mac: Option<String>,
    /// `spoofchk`.
    pub spoofchk: Option<bool>,
    /// `trust`.
    pub trust: Option<bool>,
    /// `link_state`.
    pub link_state: Option<LinkState>,
    /// `min_tx_rate` and `max_tx_rate` in Mbps (either given sets both; the other is 0).
    pub rate: Option<(u32, u32)>,
}

impl VfRequest {
    /// The PF changes that apply the request, in sriov-cni's order: VLAN, MAC, rate, spoof
    /// checking, trust, link state.
    pub fn changes(&self) -> Vec<VfChange> {
        self.changes_from(None)
    }

    /// The PF changes that put back, for each setting the request touches, its value in
    /// `original`.
    pub fn resets(&self, original: &VfConfig) -> Vec<VfChange> {
        self.changes_from(Some(original))
    }

    fn changes_from(&self, original: Option<&VfConfig>) -> Vec<VfChange> {
        let mut out = Vec::new();
        if let Some((vlan, qos, proto)) = self.vlan {
            out.push(match original {
                Some(o) => VfChange::Vlan {
                    vlan: o.vlan,
                    qos: o.qos,
                    proto: o.proto,
                },
                None => VfChange::Vlan { vlan, qos, proto },
            });
        }
        if let Some(mac) = &self.mac {
            let mac = original.map_or(mac, |o| &o.mac).clone();
            out.push(VfChange::Mac { mac });
        }
        if let Some((min, max)) = self.rate {
            let (min_tx_rate, max_tx_rate) =
                original.map_or((min, max), |o| (o.min_tx_rate, o.max_tx_rate));
            out.push(VfChange::Rate {
                min_tx_rate,
                max_tx_rate,
            });
        }
        if let Some(on) = self.spoofchk {
            out.push(VfChange::Spoofchk {
                on: original.map_or(on, |o| o.spoofchk),
            });
        }
        if let Some(on) = self.trust {
            out.push(VfChange::Trust {
                on: original.map_or(on, |o| o.trust),
            });
        }
        if let Some(state) = self.link_state {
            out.push(VfChange::LinkState {
                state: original.map_or(state, |o| o.link_state),
            });
        }
        out
    }
}

/// The `dataDir` of a configuration, read leniently (DEL must work with what it is given).
pub fn data_dir(config: &Map<String, Value>) -> PathBuf {
    match config.get("dataDir") {
        Some(Value::String(s)) if !s.is_empty() => PathBuf::from(s),
        _ => PathBuf::from(DEFAULT_DATA_DIR),
    }
}

/// The `ipam.type` of a configuration, read leniently.
pub fn ipam_type(config: &Map<String, Value>) -> Option<String> {
    match config.get("ipam")?.get("type")? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// A checked configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    /// The network's name.
    pub name: String,
    /// The VF's PCI address, e.g. `0000:af:06.0`.
    pub device_id: String,
    /// What to set on the VF.
    pub vf: VfRequest,
    /// The netdev's MTU in the pod.
    pub mtu: Option<u32>,
    /// The `ipam` object, if any.
    pub ipam: Option<Map<String, Value>>,
    /// The sysfs root.
    pub sysfs_root: PathBuf,
    /// Where state files live.
    pub data_dir: PathBuf,
    /// `runtimeConfig.CNIDeviceInfoFile`.
    pub device_info_file: Option<PathBuf>,
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(ErrorCode::InvalidNetworkConfig, msg)
}

/// Reads an optional unsigned integer key within `0..=max`.
fn uint(config: &Map<String, Value>, key: &str, max: u32) -> Result<Option<u32>, CniError> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| *n <= u64::from(max))
            .map(|n| Some(n as u32))
            .ok_or_else(|| {
                invalid(format!(
                    "\"{key}\" must be an integer from 0 to {max}, not {v}"
                ))
            }),
    }
}

/// Reads an optional string key.
fn string<'a>(config: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, CniError> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(invalid(format!("\"{key}\" must be a string, not {v}"))),
    }
}

/// Reads an optional `on`/`off` key.
fn on_off(config: &Map<String, Value>, key: &str) -> Result<Option<bool>, CniError> {
    match string(config, key)? {
        None => Ok(None),
        Some(s) if s.eq_ignore_ascii_case("on") => Ok(Some(true)),
        Some(s) if s.eq_ignore_ascii_case("off") => Ok(Some(false)),
        Some(s) => Err(invalid(format!(
            "\"{key}\" must be \"on\" or \"off\", not {s:?}"
        ))),
    }
}

/// True for a PCI address `dddd:bb:dd.f` (hexadecimal; function 0–7).
pub fn is_pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    let hex = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_hexdigit);
    b.len() == 12
        && hex(0..4)
        && b[4] == b':'
        && hex(5..7)
        && b[7] == b':'
        && hex(8..10)
        && b[10] == b'.'
        && (b'0'..=b'7').contains(&b[11])
}

/// Checks and normalises a MAC address (lower case); a multicast address is refused.
pub fn normalise_mac(key: &str, mac: &str) -> Result<String, CniError> {
    match plexus_cni::links::parse_mac(mac) {
        Some(bytes) if bytes[0] & 1 == 0 => Ok(mac.to_ascii_lowercase()),
        Some(_) => Err(invalid(format!("{key} {mac:?} is a multicast address"))),
        None => Err(invalid(format!(
            "{key} {mac:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"
        ))),
    }
}

impl NetConf {
    /// The IPAM plugin's type, when there is an `ipam` section.
    pub fn ipam_type(&self) -> Option<String> {
        Some(self.ipam.as_ref()?.get("type")?.as_str()?.to_string())
    }

    /// Reads the configuration of a request; `args` is `CNI_ARGS` (for `MAC=`). Every invalid
    /// value is an error with code 7 that names the key.
    pub fn parse(config: &Map<String, Value>, args: &CniArgs) -> Result<NetConf, CniError> {
        let empty = Map::new();
        let runtime = match config.get("runtimeConfig") {
            Some(Value::Object(m)) => m,
            None | Some(Value::Null) => &empty,
            Some(v) => {
                return Err(invalid(format!(
                    "\"runtimeConfig\" must be an object, not {v}"
                )))
            }
        };
        let device_id = string(runtime, "deviceID")?
            .or(string(config, "deviceID")?)
            .or(string(config, "pciBusID")?)
            .ok_or_else(|| invalid("\"deviceID\" (the VF's PCI address) is required"))?;
        if !is_pci_address(device_id) {
            return Err(invalid(format!(
                "deviceID {device_id:?} is not a PCI address (dddd:bb:dd.f)"
            )));
        }
        let vlan = uint(config, "vlan", 4094)?;
        let qos = uint(config, "vlanQoS", 7)?;
        let proto = match string(config, "vlanProto")? {
            None => None,
            Some(p) => Some(p.parse::<VlanProto>().map_err(invalid)?),
        };
        if vlan.unwrap_or(0) == 0 && qos.unwrap_or(0) != 0 {
            return Err(invalid("\"vlanQoS\" needs a non-zero \"vlan\""));
        }
        if vlan.unwrap_or(0) == 0 && proto.is_some_and(|p| p != VlanProto::Dot1Q) {
            return Err(invalid("\"vlanProto\" 802.1ad needs a non-zero \"vlan\""));
        }
        let vlan = vlan.map(|v| (v, qos.unwrap_or(0), proto.unwrap_or(VlanProto::Dot1Q)));
        let mac = match string(runtime, "mac")?
            .or(args.get("MAC").filter(|m| !m.is_empty()))
            .or(string(config, "mac")?)
        {
            Some(m) => Some(normalise_mac("mac", m)?),
            None => None,
        };
        let link_state = match string(config, "link_state")? {
            None => None,
            Some(s) => Some(s.parse::<LinkState>().map_err(invalid)?),
        };
        let min = uint(config, "min_tx_rate", u32::MAX)?;
        let max = uint(config, "max_tx_rate", u32::MAX)?;
        if let (Some(min), Some(max)) = (min, max) {
            if max != 0 && min > max {
                return Err(invalid(format!(
                    "\"min_tx_rate\" ({min}) is above \"max_tx_rate\" ({max})"
                )));
            }
        }
        let rate = (min.is_some() || max.is_some()).then(|| (min.unwrap_or(0), max.unwrap_or(0)));
        let mtu = uint(config, "mtu", 65535)?;
        if mtu.is_some_and(|m| m < 68) {
            return Err(invalid("\"mtu\" must be at least 68"));
        }
        let ipam = match config.get("ipam") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) if m.is_empty() => None,
            Some(Value::Object(m)) => {
                match m.get("type") {
                    Some(Value::String(t)) if !t.is_empty() => {}
                    _ => return Err(invalid("\"ipam\" needs a \"type\"")),
                }
                Some(m.clone())
            }
            Some(v) => return Err(invalid(format!("\"ipam\" must be an object, not {v}"))),
        };
        let path = |key: &str, default: &str| -> Result<PathBuf, CniError> {
            Ok(PathBuf::from(string(config, key)?.unwrap_or(default)))
        };
        Ok(NetConf {
            name: string(config, "name")?.unwrap_or_default().to_string(),
            device_id: device_id.to_ascii_lowercase(),
            vf: VfRequest {
                vlan,
                mac,
                spoofchk: on_off(config, "spoofchk")?,
                trust: on_off(config, "trust")?,
                link_state,
                rate,
            },
            mtu,
            ipam,
            sysfs_root: path("sysfsRoot", DEFAULT_SYSFS_ROOT)?,
            data_dir: path("dataDir", DEFAULT_DATA_DIR)?,
            device_info_file: string(runtime, "CNIDeviceInfoFile")?.map(PathBuf::from),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<NetConf, CniError> {
        NetConf::parse(v.as_object().unwrap(), &CniArgs::default())
    }

    #[test]
    fn reads_every_key() {
        let c = parse(json!({
            "name": "n", "pciBusID": "0000:AF:06.0", "vlan": 100, "vlanQoS": 3,
            "vlanProto": "802.1ad", "mac": "0A:00:00:00:00:01", "spoofchk": "off", "trust": "on",
            "link_state": "enable", "max_tx_rate": 100, "mtu": 9000,
            "ipam": {"type": "host-local"}, "sysfsRoot": "/tmp/sys", "dataDir": "/tmp/d",
            "runtimeConfig": {"CNIDeviceInfoFile": "/run/x"}
        }))
        .unwrap();
        assert_eq!(c.device_id, "0000:af:06.0");
        assert_eq!(c.vf.vlan, Some((100, 3, VlanProto::Dot1Ad)));
        assert_eq!(c.vf.mac.as_deref(), Some("0a:00:00:00:00:01"));
        assert_eq!(c.vf.spoofchk, Some(false));
        assert_eq!(c.vf.trust, Some(true));
        assert_eq!(c.vf.link_state, Some(LinkState::Enable));
        assert_eq!(c.vf.rate, Some((0, 100)));
        assert_eq!(c.mtu, Some(9000));
        assert_eq!(c.sysfs_root, PathBuf::from("/tmp/sys"));
        assert_eq!(c.device_info_file, Some(PathBuf::from("/run/x")));
    }

    #[test]
    fn runtime_config_wins() {
        let c = NetConf::parse(
            json!({"name": "n", "deviceID": "0000:af:06.0", "mac": "0a:00:00:00:00:01",
                   "runtimeConfig": {"deviceID": "0000:af:06.1", "mac": "0a:00:00:00:00:02"}})
            .as_object()
            .unwrap(),
            &CniArgs::parse("MAC=0a:00:00:00:00:03").unwrap(),
        )
        .unwrap();
        assert_eq!(c.device_id, "0000:af:06.1");
        assert_eq!(c.vf.mac.as_deref(), Some("0a:00:00:00:00:02"));
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn refuses_bad_values_with_code_7() {
        let base = json!({"name": "n", "deviceID": "0000:af:06.0"});
        for (key, value) in [
            ("deviceID", json!("../../etc")),
            ("deviceID", json!(7)),
            ("vlan", json!(4095)),
            ("vlan", json!(-1)),
            ("vlan", json!("5")),
            ("vlanQoS", json!(8)),
            ("vlanProto", json!("802.1x")),
            ("mac", json!("zz")),
            ("mac", json!("01:00:5e:00:00:01")),
            ("spoofchk", json!("yes")),
            ("trust", json!(true)),
            ("link_state", json!("up")),
            ("mtu", json!(10)),
            ("ipam", json!({})),
            ("ipam", json!({"subnet": "10.0.0.0/24"})),
        ] {
            let mut v = base.clone();
            v[key] = value.clone();
            if key == "ipam" && value == json!({}) {
                assert!(parse(v).is_ok());
                continue;
            }
            assert_eq!(parse(v).unwrap_err().code, 7, "{key}={value}");
        }
        assert_eq!(parse(json!({"name": "n"})).unwrap_err().code, 7);
        let qos_alone = json!({"name": "n", "deviceID": "0000:af:06.0", "vlanQoS": 2});
        assert_eq!(parse(qos_alone).unwrap_err().code, 7);
        let rates =
            json!({"name": "n", "deviceID": "0000:af:06.0", "min_tx_rate": 20, "max_tx_rate": 10});
        assert_eq!(parse(rates).unwrap_err().code, 7);
    }

    #[test]
    fn resets_touch_only_what_was_set() {
        let req = VfRequest {
            vlan: Some((5, 1, VlanProto::Dot1Ad)),
            trust: Some(true),
            ..VfRequest::default()
        };
        assert_eq!(
            req.changes(),
            vec![
                VfChange::Vlan {
                    vlan: 5,
                    qos: 1,
                    proto: VlanProto::Dot1Ad
                },
                VfChange::Trust { on: true }
            ]
        );
        assert_eq!(
            req.resets(&VfConfig::default()),
            vec![
                VfChange::Vlan {
                    vlan: 0,
                    qos: 0,
                    proto: VlanProto::Dot1Q
                },
                VfChange::Trust { on: false }
            ]
        );
    }

    #[test]
    fn pci_addresses() {
        assert!(is_pci_address("0000:af:06.0"));
        assert!(!is_pci_address("0000:af:06.8"));
        assert!(!is_pci_address("0000:af:06"));
        assert!(!is_pci_address("0000/af:06.0"));
    }
}
