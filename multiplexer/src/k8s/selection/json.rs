//! The JSON form of a network selection annotation: a list of network selection elements. Each
//! key is read and checked by its own function, and a refusal names the element and the key.

use std::net::IpAddr;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::syntax::{
    check_ifname, is_dns1123_label, is_dns1123_subdomain, is_ip_or_cidr, parse_hardware_addr,
};
use super::{Bandwidth, NetworkSelection, PortMapping, SelectionError};

/// Parses a JSON list of elements.
pub(super) fn parse(
    text: &str,
    default_namespace: &str,
    annotation: &'static str,
) -> Result<Vec<NetworkSelection>, SelectionError> {
    let value: Value = serde_json::from_str(text).map_err(|e| SelectionError::Json {
        annotation,
        message: e.to_string(),
    })?;
    let Value::Array(items) = value else {
        return Err(SelectionError::Json {
            annotation,
            message: format!("expected a list, got {}", json_kind(&value)),
        });
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| Element::new(item, index, annotation)?.selection(default_namespace))
        .collect()
}

/// One element, with where it is, for error messages.
struct Element<'a> {
    annotation: &'static str,
    index: usize,
    name: Option<String>,
    object: &'a Map<String, Value>,
}

impl<'a> Element<'a> {
    /// Element `index` of the list; it must be a JSON object.
    fn new(
        item: &'a Value,
        index: usize,
        annotation: &'static str,
    ) -> Result<Self, SelectionError> {
        let Value::Object(object) = item else {
            return Err(SelectionError::Element {
                annotation,
                index,
                name: None,
                key: None,
                message: format!("must be a JSON object, got {}", json_kind(item)),
            });
        };
        Ok(Element {
            annotation,
            index,
            name: object
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .map(String::from),
            object,
        })
    }

    fn error(&self, key: &'static str, message: impl Into<String>) -> SelectionError {
        SelectionError::Element {
            annotation: self.annotation,
            index: self.index,
            name: self.name.clone(),
            key: Some(key),
            message: message.into(),
        }
    }

    /// The value of `key` decoded as `T`; absent and `null` are `None`.
    fn get<T: DeserializeOwned>(&self, key: &'static str) -> Result<Option<T>, SelectionError> {
        match self.object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => T::deserialize(v)
                .map(Some)
                .map_err(|e| self.error(key, e.to_string())),
        }
    }

    /// A string key; absent, `null` and empty are `None`.
    fn string(&self, key: &'static str) -> Result<Option<String>, SelectionError> {
        Ok(self.get::<String>(key)?.filter(|s| !s.is_empty()))
    }

    /// The whole selection, every key checked in this order (the first refusal is reported).
    fn selection(&self, default_namespace: &str) -> Result<NetworkSelection, SelectionError> {
        Ok(NetworkSelection {
            name: self.name()?,
            namespace: self.namespace(default_namespace)?,
            interface: self.interface()?,
            ips: self.ips()?,
            mac: self.hardware_addr("mac", "a hardware address")?,
            infiniband_guid: self
                .hardware_addr("infiniband-guid", "an InfiniBand GUID (a hardware address)")?,
            default_route: self.default_route()?,
            cni_args: self.get::<Map<String, Value>>("cni-args")?,
            port_mappings: self
                .get::<Vec<PortMapping>>("portMappings")?
                .unwrap_or_default(),
            bandwidth: self.get::<Bandwidth>("bandwidth")?,
            device_id: self.string("deviceID")?,
            ipam_claim_reference: self.string("ipam-claim-reference")?,
        })
    }

    /// `name`: required, a Kubernetes object name.
    fn name(&self) -> Result<String, SelectionError> {
        let name = self
            .string("name")?
            .ok_or_else(|| self.error("name", "is missing or empty"))?;
        if !is_dns1123_subdomain(&name) {
            return Err(self.error(
                "name",
                format!(
                    "{name:?} is not a Kubernetes object name (lower-case letters, digits, '-' \
                     and '.', starting and ending with a letter or digit, at most 253 characters)"
                ),
            ));
        }
        Ok(name)
    }

    /// `namespace`: a DNS-1123 label, else `default_namespace`.
    fn namespace(&self, default_namespace: &str) -> Result<String, SelectionError> {
        match self.string("namespace")? {
            Some(ns) if !is_dns1123_label(&ns) => {
                Err(self.error("namespace", format!("{ns:?} is not a DNS-1123 label")))
            }
            Some(ns) => Ok(ns),
            None => Ok(default_namespace.to_string()),
        }
    }

    /// `interface`, else the legacy `interfaceRequest`.
    fn interface(&self) -> Result<Option<String>, SelectionError> {
        let interface = match self.string("interface")? {
            Some(i) => Some(("interface", i)),
            None => self
                .string("interfaceRequest")?
                .map(|i| ("interfaceRequest", i)),
        };
        if let Some((key, ifname)) = &interface {
            check_ifname(ifname).map_err(|m| self.error(key, m))?;
        }
        Ok(interface.map(|(_, i)| i))
    }

    /// `ips`: each an IP address or a CIDR.
    fn ips(&self) -> Result<Vec<String>, SelectionError> {
        let ips = self.get::<Vec<String>>("ips")?.unwrap_or_default();
        for (i, ip) in ips.iter().enumerate() {
            if !is_ip_or_cidr(ip) {
                return Err(self.error(
                    "ips",
                    format!("[{i}] {ip:?} is not an IP address or a CIDR"),
                ));
            }
        }
        Ok(ips)
    }

    /// A hardware-address key (`mac`, `infiniband-guid`); `what` names it in the refusal.
    fn hardware_addr(
        &self,
        key: &'static str,
        what: &str,
    ) -> Result<Option<String>, SelectionError> {
        let value = self.string(key)?;
        if let Some(v) = &value {
            if parse_hardware_addr(v).is_none() {
                return Err(self.error(key, format!("{v:?} is not {what}")));
            }
        }
        Ok(value)
    }

    /// `default-route`: IP addresses; `None` when absent.
    fn default_route(&self) -> Result<Option<Vec<IpAddr>>, SelectionError> {
        let Some(gws) = self.get::<Vec<String>>("default-route")? else {
            return Ok(None);
        };
        gws.iter()
            .enumerate()
            .map(|(i, gw)| {
                gw.parse::<IpAddr>().map_err(|_| {
                    self.error(
                        "default-route",
                        format!("[{i}] {gw:?} is not an IP address"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

/// How a JSON value is named in errors.
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
