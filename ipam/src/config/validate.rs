//! The validation step: every key read by serde ([`RawIpam`]) is checked and turned into the
//! [`IpamConfig`]; a wrong value is a CNI error 7 that names the key.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use plexus_cni::result::{Dns, IpConfig, Route};
use plexus_cni::{CniError, CniResult, SpecVersion};
use serde_json::{Map, Value};

use super::blocks::block_sizes;
use super::raw::{
    count, flag, given, string_or_list, strings, text, Field, Loose, Object, RawAddress, RawIpam,
    RawKubernetes,
};
use super::{
    invalid, Agent, Backend, EtcdAuth, IpamConfig, DEFAULT_AGENT_CONNECT_TIMEOUT_MS,
    DEFAULT_AGENT_SOCKET, DEFAULT_ETCD_PREFIX, DEFAULT_LOCAL_PATH, DEFAULT_NAMESPACE, IPAM_TYPES,
};
use crate::range::{parse_cidr_sloppy, parse_ip_sloppy, IpRange};

/// What the configuration holds besides the `ipam` keys.
pub struct Given {
    /// The CNI network's `name`.
    pub name: String,
    /// The IPAM `type`, checked.
    pub ipam_type: String,
    /// The flat file merged in.
    pub flat_file: Option<PathBuf>,
    /// This node's name.
    pub node_name: String,
    /// The `ipam` object as merged with the flat file.
    pub merged: Map<String, Value>,
}

/// The `type`: one of [`IPAM_TYPES`].
pub fn ipam_type(ipam: &Map<String, Value>) -> Result<String, CniError> {
    match ipam.get("type") {
        Some(Value::String(t)) if IPAM_TYPES.contains(&t.as_str()) => Ok(t.clone()),
        Some(Value::String(t)) => Err(invalid(format!(
            "ipam.type is {t:?}: this plugin handles \"plexus-ipam\" and \"whereabouts\""
        ))),
        _ => Err(invalid(
            "ipam.type must be \"plexus-ipam\" or \"whereabouts\"",
        )),
    }
}

/// The checked configuration of `raw`.
pub fn validate(raw: &RawIpam, given: Given) -> Result<IpamConfig, CniError> {
    let gateway = ip(&raw.gateway, "ipam.gateway")?;
    let ranges = ranges(raw, gateway)?;
    let (block_size_v4, block_size_v6) = block_sizes(raw, &ranges)?;
    let whereabouts_import_check = flag(
        &raw.whereabouts_import_check,
        "ipam.whereabouts_import_check",
    )?
    .unwrap_or(true);
    let network_name = text(&raw.network_name, "ipam.network_name")?.unwrap_or_default();
    let enable_overlapping_ranges = flag(
        &raw.enable_overlapping_ranges,
        "ipam.enable_overlapping_ranges",
    )?
    .unwrap_or(true);
    let (routes, dns) = routes_and_dns(raw)?;
    let addresses = static_addresses(&raw.addresses)?;
    let log_file = text(&raw.log_file, "ipam.log_file")?.map(PathBuf::from);
    let log_level = text(&raw.log_level, "ipam.log_level")?;
    let (kubeconfig, backend, etcd_auth) = backend(raw)?;
    let agent = Agent {
        socket: text(&raw.agent_socket, "ipam.agentSocket")?
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_AGENT_SOCKET)),
        connect_timeout: std::time::Duration::from_millis(
            count(&raw.agent_connect_timeout_ms, "ipam.agentConnectTimeoutMs")?
                .unwrap_or(DEFAULT_AGENT_CONNECT_TIMEOUT_MS),
        ),
    };
    Ok(IpamConfig {
        name: given.name,
        ipam_type: given.ipam_type,
        ranges,
        gateway,
        network_name,
        enable_overlapping_ranges,
        routes,
        dns,
        addresses,
        log_file,
        log_level,
        kubeconfig,
        backend,
        etcd_auth,
        flat_file: given.flat_file,
        node_name: given.node_name,
        block_size_v4,
        block_size_v6,
        whereabouts_import_check,
        agent,
        merged: given.merged,
    })
}

/// An IP address.
fn ip(field: &Field<String>, at: &str) -> Result<Option<IpAddr>, CniError> {
    text(field, at)?
        .map(|s| {
            parse_ip_sloppy(s.trim())
                .ok_or_else(|| invalid(format!("{at}: {s:?} is not an IP address")))
        })
        .transpose()
}

/// The top-level `range` first, then `ipRanges`; at least one.
fn ranges(raw: &RawIpam, gateway: Option<IpAddr>) -> Result<Vec<IpRange>, CniError> {
    let mut ranges = Vec::new();
    if let Some(range) = text(&raw.range, "ipam.range")? {
        let bounds = (&raw.range_start, &raw.range_end, &raw.exclude);
        ranges.push(range_of(&range, bounds, "ipam", gateway)?);
    } else {
        let set = [
            ("range_start", given(&raw.range_start)),
            ("range_end", given(&raw.range_end)),
            ("exclude", given(&raw.exclude)),
        ];
        if let Some((key, _)) = set.iter().find(|(_, set)| *set) {
            return Err(invalid(format!(
                "ipam.{key} is set but ipam.range is not: it applies only to the top-level range"
            )));
        }
    }
    match &raw.ip_ranges {
        None => {}
        Some(Loose::Valid(list)) => {
            for (i, entry) in list.iter().enumerate() {
                let at = format!("ipam.ipRanges[{i}]");
                let Object(Loose::Valid(entry)) = entry else {
                    return Err(invalid(format!("{at} must be an object")));
                };
                let range = text(&entry.range, &format!("{at}.range"))?
                    .ok_or_else(|| invalid(format!("{at}.range is missing")))?;
                let bounds = (&entry.range_start, &entry.range_end, &entry.exclude);
                ranges.push(range_of(&range, bounds, &at, gateway)?);
            }
        }
        Some(Loose::Other(_)) => return Err(invalid("ipam.ipRanges must be a list of objects")),
    }
    if ranges.is_empty() {
        return Err(invalid(
            "ipam: no range: set \"range\" (a CIDR, or start-end/prefix) or \"ipRanges\"",
        ));
    }
    Ok(ranges)
}

/// One range with its own `range_start`, `range_end` and `exclude`.
fn range_of(
    range: &str,
    (start, end, exclude): (&Field<String>, &Field<String>, &Field<Vec<String>>),
    at: &str,
    gateway: Option<IpAddr>,
) -> Result<IpRange, CniError> {
    let start = text(start, &format!("{at}.range_start"))?;
    let end = text(end, &format!("{at}.range_end"))?;
    let exclude = strings(exclude, &format!("{at}.exclude"))?;
    IpRange::parse(range, start.as_deref(), end.as_deref(), &exclude, gateway)
        .map_err(|e| invalid(format!("{at}: range {range:?}: {}", e.0)))
}

/// `routes` and `dns`, read with the checks of a CNI result.
fn routes_and_dns(raw: &RawIpam) -> Result<(Vec<Route>, Dns), CniError> {
    let mut probe = Map::new();
    probe.insert("cniVersion".into(), Value::from("1.1.0"));
    for (key, value, object) in [("routes", &raw.routes, false), ("dns", &raw.dns, true)] {
        match value {
            None => {}
            Some(v) if v.is_object() != object || !(v.is_object() || v.is_array()) => {
                let what = if object {
                    "an object"
                } else {
                    "a list of routes"
                };
                return Err(invalid(format!("ipam.{key} must be {what}")));
            }
            Some(v) => {
                probe.insert(key.into(), v.clone());
                CniResult::from_value(&Value::Object(probe.clone()), SpecVersion::V1_1_0)
                    .map_err(|e| invalid(format!("ipam.{key}: {e}")))?;
            }
        }
    }
    let r = CniResult::from_value(&Value::Object(probe), SpecVersion::V1_1_0)
        .map_err(|e| invalid(format!("ipam: {e}")))?;
    Ok((r.routes, r.dns))
}

/// `addresses`: `[{"address": "10.0.0.5/24", "gateway": "10.0.0.1"}]`.
fn static_addresses(field: &Field<Vec<Object<RawAddress>>>) -> Result<Vec<IpConfig>, CniError> {
    let list = match field {
        None => return Ok(Vec::new()),
        Some(Loose::Valid(list)) => list,
        Some(Loose::Other(_)) => return Err(invalid("ipam.addresses must be a list of objects")),
    };
    let mut out = Vec::new();
    for (i, entry) in list.iter().enumerate() {
        let at = format!("ipam.addresses[{i}]");
        let Object(Loose::Valid(entry)) = entry else {
            return Err(invalid(format!("{at} must be an object")));
        };
        let text = text(&entry.address, &format!("{at}.address"))?
            .ok_or_else(|| invalid(format!("{at}.address is missing")))?;
        let (ip_of, net) = parse_cidr_sloppy(text.trim()).ok_or_else(|| {
            invalid(format!(
                "{at}.address: {text:?} is not an address with a prefix length"
            ))
        })?;
        let address = IpNet::new(ip_of, net.prefix_len()).expect("prefix already checked");
        let gateway = ip(&entry.gateway, &format!("{at}.gateway"))?;
        out.push(IpConfig {
            address,
            gateway,
            interface: None,
        });
    }
    Ok(out)
}

/// The kubeconfig, the backend (`backend`, else Kubernetes with a kubeconfig, etcd with
/// endpoints, else local) and the etcd credentials.
fn backend(raw: &RawIpam) -> Result<(Option<PathBuf>, Backend, EtcdAuth), CniError> {
    let no_kubernetes = RawKubernetes::default();
    let kubernetes = match &raw.kubernetes {
        None => &no_kubernetes,
        Some(Object(Loose::Valid(k))) => k,
        Some(Object(Loose::Other(_))) => return Err(invalid("ipam.kubernetes must be an object")),
    };
    let kubeconfig = text(&kubernetes.kubeconfig, "ipam.kubernetes.kubeconfig")?.map(PathBuf::from);
    let namespace = match text(&kubernetes.namespace, "ipam.kubernetes.namespace")? {
        Some(ns) => ns,
        None => text(&raw.namespace, "ipam.namespace")?.unwrap_or_else(|| DEFAULT_NAMESPACE.into()),
    };
    let mut endpoints = string_or_list(&raw.etcd_endpoints, "ipam.etcd_endpoints")?;
    if endpoints.is_empty() {
        endpoints = string_or_list(&raw.etcd_host, "ipam.etcd_host")?;
    }
    let prefix =
        text(&raw.etcd_prefix, "ipam.etcd_prefix")?.unwrap_or_else(|| DEFAULT_ETCD_PREFIX.into());
    let local_path = text(&raw.local_path, "ipam.local_path")?
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_LOCAL_PATH));
    let etcd_auth = EtcdAuth {
        username: text(&raw.etcd_username, "ipam.etcd_username")?,
        password: text(&raw.etcd_password, "ipam.etcd_password")?,
        cert_file: text(&raw.etcd_cert_file, "ipam.etcd_cert_file")?.map(PathBuf::from),
        key_file: text(&raw.etcd_key_file, "ipam.etcd_key_file")?.map(PathBuf::from),
        ca_cert_file: text(&raw.etcd_ca_cert_file, "ipam.etcd_ca_cert_file")?.map(PathBuf::from),
    };
    let backend = match text(&raw.backend, "ipam.backend")?.as_deref() {
        Some("kubernetes") => Backend::Kubernetes {
            kubeconfig: kubeconfig.clone().ok_or_else(|| {
                invalid("ipam.backend is \"kubernetes\" but ipam.kubernetes.kubeconfig is not set")
            })?,
            namespace,
        },
        Some("etcd") => {
            if endpoints.is_empty() {
                return Err(invalid(
                    "ipam.backend is \"etcd\" but neither ipam.etcd_endpoints nor ipam.etcd_host is set",
                ));
            }
            Backend::Etcd { endpoints, prefix }
        }
        Some("local") => Backend::Local { path: local_path },
        Some(other) => {
            return Err(invalid(format!(
                "ipam.backend is {other:?}: it must be \"kubernetes\", \"etcd\" or \"local\""
            )))
        }
        None => match (&kubeconfig, endpoints.is_empty()) {
            (Some(k), _) => Backend::Kubernetes {
                kubeconfig: k.clone(),
                namespace,
            },
            (None, false) => Backend::Etcd { endpoints, prefix },
            (None, true) => Backend::Local { path: local_path },
        },
    };
    Ok((kubeconfig, backend, etcd_auth))
}
