//! PF-side VF settings: read a VF's configuration from its PF and change it.
//!
//! [`PfControl`] is the seam. [`NetlinkPf`] talks to the kernel (`IFLA_VFINFO_LIST` on the PF,
//! as `ip link set <pf> vf <n> ...`). [`RecordingPf`] is the test hook selected by the environment
//! variable [`RECORDER_ENV`]: it appends one JSON line per call to a file and answers reads from
//! the changes recorded there, so tests can run the real binary without SR-IOV hardware.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use netlink_packet_route::link::{
    LinkVfInfo, VfInfo, VfInfoLinkState, VfInfoMac, VfInfoRate, VfInfoSpoofCheck, VfInfoTrust,
    VfLinkState, VfVlan, VfVlanInfo, VlanProtocol,
};
use plexus_cni::links::{self, LinkError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The environment variable that selects [`RecordingPf`] (a test hook): its value is the file.
pub const RECORDER_ENV: &str = "PLEXUS_SRIOV_PF_RECORDER";

/// Errors of PF-side operations.
#[derive(Debug, thiserror::Error)]
pub enum PfError {
    /// A netlink request failed.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The PF does not report the VF.
    #[error("PF {pf} reports no VF {vf}")]
    NoSuchVf {
        /// The PF's netdev name.
        pf: String,
        /// The VF index.
        vf: u32,
    },
    /// The recorder file could not be used.
    #[error("PF recorder {path}: {source}")]
    Recorder {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: RecorderError,
    },
}

/// Why the recorder file of [`RecordingPf`] could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RecorderError {
    /// Reading or appending failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A line is not a JSON object, or not a [`VfChange`].
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// A VLAN protocol: `802.1q` (the default) or `802.1ad`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum VlanProto {
    /// 802.1Q.
    #[default]
    #[serde(rename = "802.1q")]
    Dot1Q,
    /// 802.1ad (QinQ).
    #[serde(rename = "802.1ad")]
    Dot1Ad,
}

impl FromStr for VlanProto {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "802.1q" => Ok(VlanProto::Dot1Q),
            "802.1ad" => Ok(VlanProto::Dot1Ad),
            _ => Err(format!(
                "\"vlanProto\" must be \"802.1q\" or \"802.1ad\", not {s:?}"
            )),
        }
    }
}

/// A VF's link state as its PF reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    /// Follows the PF's link.
    #[default]
    Auto,
    /// Always up.
    Enable,
    /// Always down.
    Disable,
}

impl FromStr for LinkState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(LinkState::Auto),
            "enable" => Ok(LinkState::Enable),
            "disable" => Ok(LinkState::Disable),
            _ => Err(format!(
                "\"link_state\" must be \"auto\", \"enable\" or \"disable\", not {s:?}"
            )),
        }
    }
}

/// A VF's configuration as its PF reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VfConfig {
    /// The administrative MAC (`00:00:00:00:00:00` when none is set).
    pub mac: String,
    /// VLAN id (0 = none).
    pub vlan: u32,
    /// VLAN QoS.
    pub qos: u32,
    /// VLAN protocol.
    pub proto: VlanProto,
    /// Spoof checking.
    pub spoofchk: bool,
    /// Trusted.
    pub trust: bool,
    /// Minimum TX rate in Mbps.
    pub min_tx_rate: u32,
    /// Maximum TX rate in Mbps.
    pub max_tx_rate: u32,
    /// Link state.
    pub link_state: LinkState,
}

impl Default for VfConfig {
    /// What a freshly created VF usually reports.
    fn default() -> Self {
        VfConfig {
            mac: "00:00:00:00:00:00".into(),
            vlan: 0,
            qos: 0,
            proto: VlanProto::Dot1Q,
            spoofchk: true,
            trust: false,
            min_tx_rate: 0,
            max_tx_rate: 0,
            link_state: LinkState::Auto,
        }
    }
}

/// One change of a VF's settings on its PF.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum VfChange {
    /// Set the administrative MAC.
    Mac {
        /// The MAC.
        mac: String,
    },
    /// Set VLAN, QoS and protocol.
    Vlan {
        /// VLAN id (0 = none).
        vlan: u32,
        /// QoS.
        qos: u32,
        /// Protocol.
        proto: VlanProto,
    },
    /// Set the TX rate limits.
    Rate {
        /// Minimum in Mbps.
        min_tx_rate: u32,
        /// Maximum in Mbps.
        max_tx_rate: u32,
    },
    /// Turn spoof checking on or off.
    Spoofchk {
        /// On.
        on: bool,
    },
    /// Turn trust on or off.
    Trust {
        /// On.
        on: bool,
    },
    /// Set the link state.
    LinkState {
        /// The state.
        state: LinkState,
    },
}

impl VfChange {
    /// Applies the change to a configuration (what the PF would then report).
    pub fn apply_to(&self, config: &mut VfConfig) {
        match self {
            VfChange::Mac { mac } => config.mac = mac.clone(),
            VfChange::Vlan { vlan, qos, proto } => {
                (config.vlan, config.qos, config.proto) = (*vlan, *qos, *proto)
            }
            VfChange::Rate {
                min_tx_rate,
                max_tx_rate,
            } => (config.min_tx_rate, config.max_tx_rate) = (*min_tx_rate, *max_tx_rate),
            VfChange::Spoofchk { on } => config.spoofchk = *on,
            VfChange::Trust { on } => config.trust = *on,
            VfChange::LinkState { state } => config.link_state = *state,
        }
    }
}

impl fmt::Display for VfChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let json = serde_json::to_string(self).map_err(|_| fmt::Error)?;
        f.write_str(&json)
    }
}

/// Reads and changes VF settings on a PF.
pub trait PfControl {
    /// The current configuration of VF `vf` of the PF netdev `pf`.
    fn vf_config(&self, pf: &str, vf: u32) -> Result<VfConfig, PfError>;
    /// Applies one change to VF `vf` of `pf`.
    fn apply(&self, pf: &str, vf: u32, change: &VfChange) -> Result<(), PfError>;
}

/// The PF control the binary uses: [`RecordingPf`] when [`RECORDER_ENV`] is set, else netlink.
pub fn from_env() -> Box<dyn PfControl> {
    match std::env::var_os(RECORDER_ENV) {
        Some(path) if !path.is_empty() => Box::new(RecordingPf::new(PathBuf::from(path))),
        _ => Box::new(NetlinkPf),
    }
}

/// The kernel's PF: netlink in the namespace the plugin runs in.
#[derive(Debug, Clone, Copy, Default)]
pub struct NetlinkPf;

impl PfControl for NetlinkPf {
    fn vf_config(&self, pf: &str, vf: u32) -> Result<VfConfig, PfError> {
        links::vf_infos(None, pf)?
            .iter()
            .find(|info| vf_index(info) == Some(vf))
            .map(config_of)
            .ok_or_else(|| PfError::NoSuchVf {
                pf: pf.to_string(),
                vf,
            })
    }

    fn apply(&self, pf: &str, vf: u32, change: &VfChange) -> Result<(), PfError> {
        let info = match change {
            VfChange::Mac { mac } => {
                let bytes =
                    links::parse_mac(mac).ok_or_else(|| LinkError::InvalidMac(mac.clone()))?;
                VfInfo::Mac(VfInfoMac::new(vf, &bytes))
            }
            VfChange::Vlan { vlan, qos, proto } => {
                let protocol = match proto {
                    VlanProto::Dot1Q => VlanProtocol::Ieee8021Q,
                    VlanProto::Dot1Ad => VlanProtocol::Ieee8021Ad,
                };
                VfInfo::VlanList(vec![VfVlan::Info(VfVlanInfo::new(
                    vf, *vlan, *qos, protocol,
                ))])
            }
            VfChange::Rate {
                min_tx_rate,
                max_tx_rate,
            } => VfInfo::Rate(VfInfoRate::new(vf, *min_tx_rate, *max_tx_rate)),
            VfChange::Spoofchk { on } => VfInfo::SpoofCheck(VfInfoSpoofCheck::new(vf, *on)),
            VfChange::Trust { on } => VfInfo::Trust(VfInfoTrust::new(vf, *on)),
            VfChange::LinkState { state } => VfInfo::LinkState(VfInfoLinkState::new(
                vf,
                match state {
                    LinkState::Auto => VfLinkState::Auto,
                    LinkState::Enable => VfLinkState::Enable,
                    LinkState::Disable => VfLinkState::Disable,
                },
            )),
        };
        Ok(links::set_vf(None, pf, LinkVfInfo(vec![info]))?)
    }
}

/// The VF index an `IFLA_VF_INFO` entry is about.
fn vf_index(info: &LinkVfInfo) -> Option<u32> {
    info.0.iter().find_map(|item| match item {
        VfInfo::Mac(m) => Some(m.vf_id),
        VfInfo::Vlan(v) => Some(v.vf_id),
        VfInfo::SpoofCheck(s) => Some(s.vf_id),
        _ => None,
    })
}

/// A VF's configuration from its `IFLA_VF_INFO` entry.
fn config_of(info: &LinkVfInfo) -> VfConfig {
    let mut config = VfConfig::default();
    for item in &info.0 {
        match item {
            VfInfo::Mac(m) => {
                config.mac = m.mac[..6]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":")
            }
            VfInfo::Vlan(v) => (config.vlan, config.qos) = (v.vlan_id, v.qos),
            VfInfo::VlanList(list) => {
                if let Some(VfVlan::Info(v)) = list.first() {
                    (config.vlan, config.qos) = (v.vlan_id, v.qos);
                    config.proto = match v.protocol {
                        VlanProtocol::Ieee8021Ad => VlanProto::Dot1Ad,
                        _ => VlanProto::Dot1Q,
                    };
                }
            }
            VfInfo::Rate(r) => {
                (config.min_tx_rate, config.max_tx_rate) = (r.min_tx_rate, r.max_tx_rate)
            }
            VfInfo::SpoofCheck(s) => config.spoofchk = s.enabled,
            VfInfo::Trust(t) => config.trust = t.enabled,
            VfInfo::LinkState(l) => {
                config.link_state = match l.state {
                    VfLinkState::Enable => LinkState::Enable,
                    VfLinkState::Disable => LinkState::Disable,
                    _ => LinkState::Auto,
                }
            }
            _ => {}
        }
    }
    config
}

/// A recording fake PF (test hook). Every call appends one JSON line to the file:
/// `{"pf":"ens1f0","vf":0,"op":"get"}` for a read and `{"pf":..,"vf":..,"op":"vlan","vlan":100,
/// "qos":3,"proto":"802.1ad"}` (the [`VfChange`] fields) for a change. A read answers
/// [`VfConfig::default`] with every change recorded for that VF applied in order; a test may
/// write change lines first to give a VF another starting configuration.
#[derive(Debug, Clone)]
pub struct RecordingPf {
    path: PathBuf,
}

impl RecordingPf {
    /// A recorder writing to `path` (created when missing).
    pub fn new(path: PathBuf) -> Self {
        RecordingPf { path }
    }

    /// The recorder's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, source: impl Into<RecorderError>) -> PfError {
        PfError::Recorder {
            path: self.path.clone(),
            source: source.into(),
        }
    }

    fn append(&self, pf: &str, vf: u32, op: Value) -> Result<(), PfError> {
        let mut line = serde_json::json!({"pf": pf, "vf": vf});
        if let (Some(line), Value::Object(op)) = (line.as_object_mut(), op) {
            line.extend(op);
        }
        let mut text = line.to_string();
        text.push('\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| self.error(e))?;
        // One write of a whole line: appends of concurrent plugins do not interleave.
        file.write_all(text.as_bytes()).map_err(|e| self.error(e))
    }
}

impl PfControl for RecordingPf {
    fn vf_config(&self, pf: &str, vf: u32) -> Result<VfConfig, PfError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(self.error(e)),
        };
        let mut config = VfConfig::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let value: Value = serde_json::from_str(line).map_err(|e| self.error(e))?;
            if value["pf"] != pf || value["vf"] != vf || value["op"] == "get" {
                continue;
            }
            let change: VfChange = serde_json::from_value(value).map_err(|e| self.error(e))?;
            change.apply_to(&mut config);
        }
        self.append(pf, vf, serde_json::json!({"op": "get"}))?;
        Ok(config)
    }

    fn apply(&self, pf: &str, vf: u32, change: &VfChange) -> Result<(), PfError> {
        let op = serde_json::to_value(change).map_err(|e| self.error(e))?;
        self.append(pf, vf, op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_replays_changes() {
        let dir = tempfile::tempdir().unwrap();
        let pf = RecordingPf::new(dir.path().join("calls"));
        assert_eq!(pf.vf_config("p", 1).unwrap(), VfConfig::default());
        let vlan = VfChange::Vlan {
            vlan: 7,
            qos: 2,
            proto: VlanProto::Dot1Ad,
        };
        pf.apply("p", 1, &vlan).unwrap();
        pf.apply("p", 2, &VfChange::Trust { on: true }).unwrap();
        let got = pf.vf_config("p", 1).unwrap();
        assert_eq!((got.vlan, got.qos, got.proto), (7, 2, VlanProto::Dot1Ad));
        assert!(!got.trust);
        let text = std::fs::read_to_string(pf.path()).unwrap();
        assert_eq!(text.lines().count(), 4);
        assert!(text
            .lines()
            .any(|l| l == r#"{"pf":"p","vf":1,"op":"vlan","vlan":7,"qos":2,"proto":"802.1ad"}"#));
    }

    #[test]
    fn reads_kernel_vf_entries() {
        let info = LinkVfInfo(vec![
            VfInfo::Mac(VfInfoMac::new(3, &[2, 0, 0, 0, 0, 9])),
            VfInfo::VlanList(vec![VfVlan::Info(VfVlanInfo::new(
                3,
                5,
                1,
                VlanProtocol::Ieee8021Ad,
            ))]),
            VfInfo::Trust(VfInfoTrust::new(3, true)),
        ]);
        assert_eq!(vf_index(&info), Some(3));
        let c = config_of(&info);
        assert_eq!(c.mac, "02:00:00:00:00:09");
        assert_eq!((c.vlan, c.qos, c.proto), (5, 1, VlanProto::Dot1Ad));
        assert!(c.trust);
    }
}
