//! Reading a result of any version (see the module documentation of [`result`](super)): the
//! JSON shapes of each version and their checked conversion to the canonical types.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::error::{InvalidValue, ResultError};
use super::model::{CniResult, Dns, Interface, IpConfig, Route};
use crate::version::SpecVersion;

/// Reads a result from a JSON value, at its own `cniVersion` or else at `fallback`.
pub(super) fn from_value(value: &Value, fallback: SpecVersion) -> Result<CniResult, ResultError> {
    let empty = Value::Object(Map::new());
    let object = match value {
        Value::Null => &empty,
        Value::Object(_) => value,
        other => {
            return Err(ResultError::Decode(serde_json::Error::invalid_type(
                unexpected(other),
                &"a CNI result object",
            )))
        }
    };
    let version = match object.get("cniVersion") {
        Some(Value::String(v)) if !v.is_empty() => v.parse::<SpecVersion>()?,
        _ => fallback,
    };
    if version.is_legacy() {
        let wire = wire::Legacy::deserialize(object)?;
        wire.into_result()
    } else {
        let wire = wire::Modern::deserialize(object)?;
        wire.into_result(version)
    }
}

/// How serde names a JSON value's type in an "invalid type" error.
fn unexpected(value: &Value) -> serde::de::Unexpected<'_> {
    use serde::de::Unexpected;
    match value {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(_) => Unexpected::Other("number"),
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}

/// Reads a value that may be `null`, giving the default for `null`.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The JSON shapes results are decoded from, and their checked conversion to the canonical types.
mod wire {
    use super::*;

    /// A 0.3.0 to 1.1.0 result.
    #[derive(Deserialize)]
    pub(super) struct Modern {
        #[serde(default, deserialize_with = "nullable")]
        interfaces: Vec<InterfaceW>,
        #[serde(default, deserialize_with = "nullable")]
        ips: Vec<IpW>,
        #[serde(default, deserialize_with = "nullable")]
        routes: Vec<RouteW>,
        #[serde(default)]
        dns: Option<DnsW>,
    }

    /// A 0.1.0 or 0.2.0 result.
    #[derive(Deserialize)]
    pub(super) struct Legacy {
        #[serde(default)]
        ip4: Option<LegacyIpW>,
        #[serde(default)]
        ip6: Option<LegacyIpW>,
        #[serde(default)]
        dns: Option<DnsW>,
    }

    #[derive(Deserialize)]
    struct InterfaceW {
        #[serde(default, deserialize_with = "nullable")]
        name: String,
        #[serde(default)]
        mac: Option<String>,
        #[serde(default)]
        mtu: Option<u32>,
        #[serde(default)]
        sandbox: Option<String>,
        #[serde(default, rename = "socketPath")]
        socket_path: Option<String>,
        #[serde(default, rename = "pciID")]
        pci_id: Option<String>,
    }

    #[derive(Deserialize)]
    struct IpW {
        address: String,
        #[serde(default)]
        gateway: Option<String>,
        #[serde(default)]
        interface: Option<usize>,
    }

    #[derive(Deserialize)]
    struct RouteW {
        dst: String,
        #[serde(default)]
        gw: Option<String>,
        #[serde(default)]
        mtu: Option<u32>,
        #[serde(default)]
        advmss: Option<u32>,
        #[serde(default)]
        priority: Option<u32>,
        #[serde(default)]
        table: Option<u32>,
        #[serde(default)]
        scope: Option<u32>,
    }

    #[derive(Deserialize)]
    struct LegacyIpW {
        ip: String,
        #[serde(default)]
        gateway: Option<String>,
        #[serde(default, deserialize_with = "nullable")]
        routes: Vec<RouteW>,
    }

    #[derive(Deserialize)]
    struct DnsW {
        #[serde(default, deserialize_with = "nullable")]
        nameservers: Vec<String>,
        #[serde(default)]
        domain: Option<String>,
        #[serde(default, deserialize_with = "nullable")]
        search: Vec<String>,
        #[serde(default, deserialize_with = "nullable")]
        options: Vec<String>,
    }

    impl Modern {
        pub(super) fn into_result(self, version: SpecVersion) -> Result<CniResult, ResultError> {
            let full = !version.has_ip_version_field();
            let interfaces = self
                .interfaces
                .into_iter()
                .map(|i| Interface {
                    name: i.name,
                    mac: non_empty(i.mac),
                    mtu: i.mtu.filter(|_| full),
                    sandbox: non_empty(i.sandbox),
                    socket_path: non_empty(i.socket_path).filter(|_| full),
                    pci_id: non_empty(i.pci_id).filter(|_| full),
                })
                .collect();
            let ips = self
                .ips
                .into_iter()
                .enumerate()
                .map(|(n, ip)| {
                    Ok(IpConfig {
                        address: net(&format!("ips[{n}].address"), &ip.address)?,
                        gateway: addr(&format!("ips[{n}].gateway"), ip.gateway)?,
                        interface: ip.interface,
                    })
                })
                .collect::<Result<_, ResultError>>()?;
            let routes = self
                .routes
                .into_iter()
                .enumerate()
                .map(|(n, r)| r.into_route(&format!("routes[{n}]"), full))
                .collect::<Result<_, ResultError>>()?;
            Ok(CniResult {
                interfaces,
                ips,
                routes,
                dns: self.dns.map(DnsW::into_dns).unwrap_or_default(),
            })
        }
    }

    impl Legacy {
        pub(super) fn into_result(self) -> Result<CniResult, ResultError> {
            let mut result = CniResult {
                dns: self.dns.map(DnsW::into_dns).unwrap_or_default(),
                ..CniResult::default()
            };
            for (key, block, v4) in [("ip4", self.ip4, true), ("ip6", self.ip6, false)] {
                let Some(block) = block else { continue };
                let address = net(&format!("{key}.ip"), &block.ip)?;
                if address.addr().is_ipv4() != v4 {
                    return Err(ResultError::Invalid {
                        field: format!("{key}.ip"),
                        value: block.ip,
                        problem: InvalidValue::WrongFamily(if v4 { 4 } else { 6 }),
                    });
                }
                result.ips.push(IpConfig {
                    address,
                    gateway: addr(&format!("{key}.gateway"), block.gateway)?,
                    interface: None,
                });
                for (n, r) in block.routes.into_iter().enumerate() {
                    result
                        .routes
                        .push(r.into_route(&format!("{key}.routes[{n}]"), false)?);
                }
            }
            Ok(result)
        }
    }

    impl RouteW {
        /// The route; `full` keeps the 1.1 fields.
        fn into_route(self, field: &str, full: bool) -> Result<Route, ResultError> {
            let keep = |v: Option<u32>| v.filter(|_| full);
            Ok(Route {
                dst: net(&format!("{field}.dst"), &self.dst)?,
                gw: addr(&format!("{field}.gw"), self.gw)?,
                mtu: keep(self.mtu),
                advmss: keep(self.advmss),
                priority: keep(self.priority),
                table: keep(self.table),
                scope: keep(self.scope),
            })
        }
    }

    impl DnsW {
        fn into_dns(self) -> Dns {
            Dns {
                nameservers: self.nameservers,
                domain: non_empty(self.domain),
                search: self.search,
                options: self.options,
            }
        }
    }

    fn non_empty(s: Option<String>) -> Option<String> {
        s.filter(|s| !s.is_empty())
    }

    /// An address with a prefix length, host bits kept.
    fn net(field: &str, s: &str) -> Result<IpNet, ResultError> {
        s.parse().map_err(|_| ResultError::Invalid {
            field: field.to_string(),
            value: s.to_string(),
            problem: InvalidValue::NotAPrefix,
        })
    }

    /// An optional plain address; an empty string counts as absent.
    fn addr(field: &str, s: Option<String>) -> Result<Option<IpAddr>, ResultError> {
        match s.as_deref() {
            None | Some("") => Ok(None),
            Some(s) => s.parse().map(Some).map_err(|_| ResultError::Invalid {
                field: field.to_string(),
                value: s.to_string(),
                problem: InvalidValue::NotAnAddress,
            }),
        }
    }
}
