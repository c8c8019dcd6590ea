//! Writing a result at any version (see the module documentation of [`result`](super)).

use std::net::IpAddr;

use serde_json::{Map, Value};

use super::model::{CniResult, Dns, Route};
use crate::version::SpecVersion;

/// `result` written at `version`, including "cniVersion".
pub(super) fn to_value(result: &CniResult, version: SpecVersion) -> Value {
    let mut out = Map::new();
    out.insert("cniVersion".into(), Value::from(version.as_str()));
    if version.is_legacy() {
        write_legacy(result, &mut out);
    } else {
        write_modern(result, &mut out, version.has_ip_version_field());
    }
    if !result.dns.is_empty() {
        out.insert("dns".into(), dns_value(&result.dns));
    }
    Value::Object(out)
}

/// Writes `interfaces`, `ips` and `routes`; `old` selects the 0.3.x/0.4.0 shape.
fn write_modern(result: &CniResult, out: &mut Map<String, Value>, old: bool) {
    if !result.interfaces.is_empty() {
        let list = result
            .interfaces
            .iter()
            .map(|i| {
                let mut m = Map::new();
                m.insert("name".into(), Value::from(i.name.as_str()));
                put_str(&mut m, "mac", &i.mac);
                if !old {
                    put_u32(&mut m, "mtu", i.mtu);
                }
                put_str(&mut m, "sandbox", &i.sandbox);
                if !old {
                    put_str(&mut m, "socketPath", &i.socket_path);
                    put_str(&mut m, "pciID", &i.pci_id);
                }
                Value::Object(m)
            })
            .collect();
        out.insert("interfaces".into(), Value::Array(list));
    }
    if !result.ips.is_empty() {
        let list = result
            .ips
            .iter()
            .map(|ip| {
                let mut m = Map::new();
                if old {
                    let family = if ip.address.addr().is_ipv4() {
                        "4"
                    } else {
                        "6"
                    };
                    m.insert("version".into(), Value::from(family));
                }
                if let Some(index) = ip.interface {
                    m.insert("interface".into(), Value::from(index));
                }
                m.insert("address".into(), Value::from(ip.address.to_string()));
                put_addr(&mut m, "gateway", ip.gateway);
                Value::Object(m)
            })
            .collect();
        out.insert("ips".into(), Value::Array(list));
    }
    if !result.routes.is_empty() {
        let list = result.routes.iter().map(|r| route_value(r, !old)).collect();
        out.insert("routes".into(), Value::Array(list));
    }
}

/// Writes `ip4` and `ip6` as 0.1.0/0.2.0 have them.
fn write_legacy(result: &CniResult, out: &mut Map<String, Value>) {
    let first = |v4: bool| {
        result
            .ips
            .iter()
            .find(|ip| ip.address.addr().is_ipv4() == v4)
    };
    for (key, v4) in [("ip4", true), ("ip6", false)] {
        let Some(ip) = first(v4) else { continue };
        let mut block = Map::new();
        block.insert("ip".into(), Value::from(ip.address.to_string()));
        put_addr(&mut block, "gateway", ip.gateway);
        let routes: Vec<Value> = result
            .routes
            .iter()
            .filter(|r| r.dst.addr().is_ipv4() == v4)
            .map(|r| route_value(r, false))
            .collect();
        if !routes.is_empty() {
            block.insert("routes".into(), Value::Array(routes));
        }
        out.insert(key.into(), Value::Object(block));
    }
}

/// The `dns` object, with only the fields that are set.
fn dns_value(dns: &Dns) -> Value {
    let mut m = Map::new();
    put_list(&mut m, "nameservers", &dns.nameservers);
    put_str(&mut m, "domain", &dns.domain);
    put_list(&mut m, "search", &dns.search);
    put_list(&mut m, "options", &dns.options);
    Value::Object(m)
}

/// A route object; `full` adds the 1.1 fields.
fn route_value(r: &Route, full: bool) -> Value {
    let mut m = Map::new();
    m.insert("dst".into(), Value::from(r.dst.to_string()));
    put_addr(&mut m, "gw", r.gw);
    if full {
        put_u32(&mut m, "mtu", r.mtu);
        put_u32(&mut m, "advmss", r.advmss);
        put_u32(&mut m, "priority", r.priority);
        put_u32(&mut m, "table", r.table);
        put_u32(&mut m, "scope", r.scope);
    }
    Value::Object(m)
}

fn put_str(m: &mut Map<String, Value>, key: &str, value: &Option<String>) {
    if let Some(s) = value.as_deref().filter(|s| !s.is_empty()) {
        m.insert(key.into(), Value::from(s));
    }
}

fn put_u32(m: &mut Map<String, Value>, key: &str, value: Option<u32>) {
    if let Some(n) = value {
        m.insert(key.into(), Value::from(n));
    }
}

fn put_addr(m: &mut Map<String, Value>, key: &str, value: Option<IpAddr>) {
    if let Some(a) = value {
        m.insert(key.into(), Value::from(a.to_string()));
    }
}

fn put_list(m: &mut Map<String, Value>, key: &str, list: &[String]) {
    if !list.is_empty() {
        m.insert(key.into(), Value::from(list.to_vec()));
    }
}
