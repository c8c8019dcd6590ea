//! The plugin side of the CNI environment: `CNI_COMMAND` and friends, read and validated as the
//! specification says.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::{CniError, ErrorCode};

/// A CNI command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// Attach a container.
    Add,
    /// Detach a container.
    Del,
    /// Verify an attachment.
    Check,
    /// Report readiness (1.1).
    Status,
    /// Remove what no valid attachment needs (1.1).
    Gc,
    /// Report the supported versions.
    Version,
}

impl Command {
    /// The command as it is written in `CNI_COMMAND`.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }
}

impl FromStr for Command {
    type Err = CniError;

    fn from_str(s: &str) -> Result<Self, CniError> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            other => {
                return Err(CniError::new(
                    ErrorCode::InvalidEnvironment,
                    format!("unknown CNI_COMMAND {other:?}"),
                ))
            }
        })
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `CNI_ARGS` keys that request something for one interface only.
const INTERFACE_REQUEST_KEYS: &[&str] = &["IP", "MAC", "GATEWAY"];

/// `CNI_ARGS`: `K1=V1;K2=V2`, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs(pub Vec<(String, String)>);

impl CniArgs {
    /// Parses `CNI_ARGS`. Empty segments are skipped; a segment without `=` is an error.
    pub fn parse(s: &str) -> Result<Self, CniError> {
        let mut pairs = Vec::new();
        for part in s.split(';').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                CniError::new(
                    ErrorCode::InvalidEnvironment,
                    format!("CNI_ARGS: invalid pair {part:?} (want KEY=VALUE)"),
                )
            })?;
            pairs.push((k.to_string(), v.to_string()));
        }
        Ok(CniArgs(pairs))
    }

    /// The value of a key, the last one when it is given twice.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The arguments without the requests that name one interface's own address or MAC
    /// (`IP`, `MAC`, `GATEWAY`, as podman's `--network net:ip=…,mac=…` sends them): a
    /// meta-plugin passes those to the interface the runtime asked for, not to every
    /// additional one, whose ranges they would not fit.
    pub fn without_interface_requests(&self) -> CniArgs {
        CniArgs(
            self.0
                .iter()
                .filter(|(k, _)| !INTERFACE_REQUEST_KEYS.contains(&k.as_str()))
                .cloned()
                .collect(),
        )
    }

    /// The arguments written back as `K1=V1;K2=V2`.
    pub fn to_env_string(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// The validated environment of one plugin call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniEnv {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID` (empty for VERSION, STATUS and GC).
    pub container_id: String,
    /// `CNI_NETNS`; `None` when empty or unset (allowed on DEL).
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME` (empty for VERSION, STATUS and GC).
    pub ifname: String,
    /// `CNI_ARGS`, parsed.
    pub args: CniArgs,
    /// `CNI_PATH`, split on `:`.
    pub path: Vec<PathBuf>,
}

/// Checks a container ID against the specification's pattern `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    let mut chars = id.chars();
    let ok = match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {
            chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(CniError::new(
            ErrorCode::InvalidEnvironment,
            format!("invalid CNI_CONTAINERID {id:?}: must match ^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$"),
        ))
    }
}

/// Checks an interface name as the specification says: 1 to 15 bytes, not `.` or `..`, and no
/// `/`, `:` or white space.
pub fn validate_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("interface name is empty".into());
    }
    if name.len() > 15 {
        return Err(format!("interface name {name:?} is longer than 15 bytes"));
    }
    if name == "." || name == ".." {
        return Err(format!("interface name {name:?} is not allowed"));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(format!(
            "interface name {name:?} contains '/', ':' or white space"
        ));
    }
    Ok(())
}

impl CniEnv {
    /// Reads the environment through `lookup` (use [`CniEnv::from_process`] for the real one) and
    /// validates what the command requires. Missing variables are named in the error (code 4).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<CniEnv, CniError> {
        let get = |k: &str| lookup(k).filter(|v| !v.is_empty());
        let command: Command = get("CNI_COMMAND")
            .ok_or_else(|| {
                CniError::new(
                    ErrorCode::InvalidEnvironment,
                    "required env variables [CNI_COMMAND] missing",
                )
            })?
            .parse()?;
        let needs_container = matches!(command, Command::Add | Command::Del | Command::Check);
        let needs_netns = matches!(command, Command::Add | Command::Check);
        let mut missing = Vec::new();
        if needs_container && get("CNI_CONTAINERID").is_none() {
            missing.push("CNI_CONTAINERID");
        }
        if needs_netns && get("CNI_NETNS").is_none() {
            missing.push("CNI_NETNS");
        }
        if needs_container && get("CNI_IFNAME").is_none() {
            missing.push("CNI_IFNAME");
        }
        if !missing.is_empty() {
            return Err(CniError::new(
                ErrorCode::InvalidEnvironment,
                format!("required env variables [{}] missing", missing.join(", ")),
            ));
        }
        let container_id = get("CNI_CONTAINERID").unwrap_or_default();
        let ifname = get("CNI_IFNAME").unwrap_or_default();
        if needs_container {
            validate_container_id(&container_id)?;
            validate_ifname(&ifname).map_err(|e| {
                CniError::new(
                    ErrorCode::InvalidEnvironment,
                    format!("invalid CNI_IFNAME: {e}"),
                )
            })?;
        }
        let args = CniArgs::parse(&get("CNI_ARGS").unwrap_or_default())?;
        let path = get("CNI_PATH")
            .map(|p| {
                p.split(':')
                    .filter(|d| !d.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default();
        Ok(CniEnv {
            command,
            container_id,
            netns: get("CNI_NETNS").map(PathBuf::from),
            ifname,
            args,
            path,
        })
    }

    /// Reads the process environment. A variable that is not valid UTF-8 is an error (code 4).
    pub fn from_process() -> Result<CniEnv, CniError> {
        for key in [
            "CNI_COMMAND",
            "CNI_CONTAINERID",
            "CNI_NETNS",
            "CNI_IFNAME",
            "CNI_ARGS",
            "CNI_PATH",
        ] {
            if let Err(std::env::VarError::NotUnicode(_)) = std::env::var(key) {
                return Err(CniError::new(
                    ErrorCode::InvalidEnvironment,
                    format!("{key} is not valid UTF-8"),
                ));
            }
        }
        Self::from_lookup(|k| std::env::var(k).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn interface_requests_are_left_out_for_additional_interfaces() {
        let args =
            CniArgs::parse("IgnoreUnknown=1;K8S_POD_NAME=c1;IP=10.0.0.5;MAC=02:00:00:00:00:01")
                .unwrap();
        assert_eq!(
            args.without_interface_requests().to_env_string(),
            "IgnoreUnknown=1;K8S_POD_NAME=c1"
        );
    }

    fn env(pairs: &[(&str, &str)]) -> Result<CniEnv, CniError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        CniEnv::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn add_needs_container_netns_and_ifname() {
        let e = env(&[("CNI_COMMAND", "ADD")]).unwrap_err();
        assert_eq!(e.code, 4);
        assert!(e.msg.contains("CNI_CONTAINERID"));
        assert!(e.msg.contains("CNI_NETNS"));
        assert!(e.msg.contains("CNI_IFNAME"));
    }

    #[test]
    fn del_does_not_need_netns() {
        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", ""),
        ])
        .unwrap();
        assert_eq!(e.netns, None);
    }

    #[test]
    fn version_needs_nothing() {
        assert_eq!(
            env(&[("CNI_COMMAND", "VERSION")]).unwrap().command,
            Command::Version
        );
    }

    #[test]
    fn rejects_bad_values() {
        let base = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
        ];
        for (k, v) in [
            ("CNI_CONTAINERID", "-abc"),
            ("CNI_CONTAINERID", "a/b"),
            ("CNI_IFNAME", "a-very-long-interface"),
            ("CNI_IFNAME", "a:b"),
            ("CNI_IFNAME", "a b"),
            ("CNI_IFNAME", ".."),
            ("CNI_ARGS", "novalue"),
            ("CNI_COMMAND", "FROB"),
        ] {
            let mut pairs = base.to_vec();
            pairs.retain(|(kk, _)| *kk != k);
            pairs.push((k, v));
            assert_eq!(env(&pairs).unwrap_err().code, 4, "{k}={v}");
        }
    }

    #[test]
    fn parses_cni_args() {
        let a = CniArgs::parse("IgnoreUnknown=1;K8S_POD_NAME=web;;X=a=b").unwrap();
        assert_eq!(a.get("K8S_POD_NAME"), Some("web"));
        assert_eq!(a.get("X"), Some("a=b"));
        assert_eq!(a.to_env_string(), "IgnoreUnknown=1;K8S_POD_NAME=web;X=a=b");
    }
}
