//! The etcd key layout. Under the store's prefix `P`, a network `N` (`network_name`) and a
//! pool CIDR `C`, every segment escaped (see [`escape`]):
//!
//! ```text
//! P/N/ips/A                    an allocation: its owner and its pool's CIDR (JSON Record)
//! P/N/owners/CID/IF/C/A        index by container and interface, for DEL (JSON Owner)
//! P/N/pods/NS/NAME/IF/C/A      index by pod and interface, for a repeated ADD (JSON Owner)
//! ```
//!
//! `A` is the address as `4-` and 8 hex digits, or `6-` and 32 hex digits: within one family
//! the keys sort as the addresses do, so the addresses of a range are one contiguous key range.
//! Allocations are keyed by address within the network, so the pools of one network whose
//! ranges overlap share them: an address is never handed out twice within a network, whatever
//! `enable_overlapping_ranges` says (as in the local store: turning it off in Whereabouts only
//! saves API calls, and here it would save nothing).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::store::{Owner, Pool};

/// Escapes one key segment: bytes other than ASCII letters, digits, `.`, `_`, `:` and `-`
/// become `%XX`, and the empty string becomes `~`, so that a segment never holds `/` and
/// distinct strings give distinct segments.
pub fn escape(s: &str) -> String {
    if s.is_empty() {
        return "~".into();
    }
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The inverse of [`escape`]; `None` for a segment it cannot have made.
pub fn unescape(s: &str) -> Option<String> {
    if s == "~" {
        return Some(String::new());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The address segment `A`.
pub fn address_segment(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("4-{:08x}", u32::from(v4)),
        IpAddr::V6(v6) => format!("6-{:032x}", u128::from(v6)),
    }
}

/// The address of an address segment.
pub fn parse_address_segment(s: &str) -> Option<IpAddr> {
    let (family, hex) = s.split_once('-')?;
    match (family, hex.len()) {
        ("4", 8) => Some(Ipv4Addr::from(u32::from_str_radix(hex, 16).ok()?).into()),
        ("6", 32) => Some(Ipv6Addr::from(u128::from_str_radix(hex, 16).ok()?).into()),
        _ => None,
    }
}

/// The address a key ends with (its last segment).
pub fn key_address(key: &[u8]) -> Option<IpAddr> {
    let key = std::str::from_utf8(key).ok()?;
    parse_address_segment(key.rsplit('/').next()?)
}

/// The keys of one pool.
#[derive(Debug, Clone)]
pub struct PoolKeys {
    /// `P/N`.
    network: String,
    /// `C`, escaped.
    cidr_segment: String,
    /// The pool's CIDR.
    cidr: IpNet,
}

impl PoolKeys {
    /// The keys of `pool` under `prefix`.
    pub fn new(prefix: &str, pool: &Pool) -> PoolKeys {
        PoolKeys::of(prefix, &pool.network, pool.range.cidr())
    }

    /// The keys of the pool `cidr` of `network` under `prefix`.
    pub fn of(prefix: &str, network: &str, cidr: IpNet) -> PoolKeys {
        let cidr = cidr.trunc();
        PoolKeys {
            network: network_key(prefix, network),
            cidr_segment: escape(&cidr.to_string()),
            cidr,
        }
    }

    /// The pool's CIDR as stored in records.
    pub fn cidr(&self) -> String {
        self.cidr.to_string()
    }

    /// `P/N/ips/A`.
    pub fn ip(&self, ip: IpAddr) -> String {
        format!("{}/ips/{}", self.network, address_segment(ip))
    }

    /// The key range `[start, end)` of the addresses from `first` to `last`.
    pub fn ips(&self, first: IpAddr, last: IpAddr) -> (String, Vec<u8>) {
        let mut end = self.ip(last).into_bytes();
        end.push(0);
        (self.ip(first), end)
    }

    /// `P/N/owners/CID/IF/C/`: the addresses of the pool held by a container's interface.
    pub fn owner_prefix(&self, container_id: &str, ifname: &str) -> String {
        format!(
            "{}/owners/{}/{}/{}/",
            self.network,
            escape(container_id),
            escape(ifname),
            self.cidr_segment
        )
    }

    /// `P/N/pods/NS/NAME/IF/C/`: the addresses of the pool held by a pod's interface.
    pub fn pod_prefix(&self, namespace: &str, name: &str, ifname: &str) -> String {
        format!(
            "{}/pods/{}/{}/{}/{}/",
            self.network,
            escape(namespace),
            escape(name),
            escape(ifname),
            self.cidr_segment
        )
    }

    /// The owner index key of `ip` held by `owner`.
    pub fn owner_index(&self, owner: &Owner, ip: IpAddr) -> String {
        self.owner_prefix(&owner.container_id, &owner.ifname) + &address_segment(ip)
    }

    /// The pod index key of `ip` held by `owner`, when the owner is a pod.
    pub fn pod_index(&self, owner: &Owner, ip: IpAddr) -> Option<String> {
        (!owner.pod_name.is_empty()).then(|| {
            self.pod_prefix(&owner.pod_namespace, &owner.pod_name, &owner.ifname)
                + &address_segment(ip)
        })
    }

    /// Where a repeated ADD of `owner`'s attachment finds its address: the pod index for a
    /// pod (Whereabouts matches by pod and interface), else the container index.
    pub fn attachment_prefix(&self, owner: &Owner) -> String {
        if owner.pod_name.is_empty() {
            self.owner_prefix(&owner.container_id, &owner.ifname)
        } else {
            self.pod_prefix(&owner.pod_namespace, &owner.pod_name, &owner.ifname)
        }
    }
}

/// `P/N`.
pub fn network_key(prefix: &str, network: &str) -> String {
    format!("{prefix}/{}", escape(network))
}

/// `P/N/ips/A`.
pub fn ip_key(prefix: &str, network: &str, ip: IpAddr) -> String {
    format!(
        "{}/ips/{}",
        network_key(prefix, network),
        address_segment(ip)
    )
}

/// What an allocation key names: its network and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpKey {
    /// `N`, unescaped.
    pub network: String,
    /// `A`.
    pub address: IpAddr,
}

/// Reads `key` as an allocation key under `prefix`; `None` for the index keys.
pub fn parse_ip_key(prefix: &str, key: &[u8]) -> Option<IpKey> {
    let key = std::str::from_utf8(key).ok()?;
    let rest = key.strip_prefix(prefix)?.strip_prefix('/')?;
    let parts: Vec<&str> = rest.split('/').collect();
    let [network, "ips", address] = parts.as_slice() else {
        return None;
    };
    Some(IpKey {
        network: unescape(network)?,
        address: parse_address_segment(address)?,
    })
}

/// The first key after every key that starts with `prefix` (etcd's `with_prefix` end).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trips_and_never_yields_a_slash() {
        for s in ["", "~", "a/b", "net-1", "10.0.0.0/24", "ns_x.y:z", "é%"] {
            let e = escape(s);
            assert!(!e.contains('/') && !e.is_empty(), "{s:?} -> {e}");
            assert_eq!(unescape(&e).as_deref(), Some(s), "{e}");
        }
        assert_ne!(escape(""), escape("~"));
        assert_eq!(escape("10.0.0.0/24"), "10.0.0.0%2F24");
        assert_eq!(unescape("%4"), None);
    }

    #[test]
    fn address_segments_sort_numerically_within_a_family() {
        let v4: Vec<IpAddr> = ["10.0.0.9", "10.0.0.10", "10.0.1.0", "9.255.255.255"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let mut by_key = v4.clone();
        by_key.sort_by_key(|ip| address_segment(*ip));
        let mut by_value = v4.clone();
        by_value.sort();
        assert_eq!(by_key, by_value);
        let v6: IpAddr = "fd00::8000:0:0:1".parse().unwrap();
        let seg = address_segment(v6);
        assert_eq!(seg, "6-fd000000000000008000000000000001");
        assert_eq!(parse_address_segment(&seg), Some(v6));
        assert_eq!(
            parse_address_segment("4-0a000001"),
            Some("10.0.0.1".parse().unwrap())
        );
        assert_eq!(parse_address_segment("4-0a00001"), None);
        assert_eq!(parse_address_segment("6-0a000001"), None);
    }

    #[test]
    fn allocation_keys_parse_and_index_keys_do_not() {
        let cidr: IpNet = "10.0.0.0/24".parse().unwrap();
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        for network in ["", "a/b", "ips", "pods"] {
            let keys = PoolKeys::of("/p", network, cidr);
            assert_eq!(keys.ip(ip), ip_key("/p", network, ip));
            let parsed = parse_ip_key("/p", keys.ip(ip).as_bytes()).unwrap();
            assert_eq!(parsed.network, network);
            assert_eq!(parsed.address, ip);
            assert_eq!(parse_ip_key("/q", keys.ip(ip).as_bytes()), None);
            let owner = Owner {
                pod_namespace: "ns".into(),
                pod_name: "web".into(),
                pod_uid: String::new(),
                container_id: "ips".into(),
                ifname: "net1".into(),
                node: String::new(),
                claim: String::new(),
            };
            let index = keys.owner_index(&owner, ip);
            assert!(index.starts_with(&keys.owner_prefix("ips", "net1")));
            assert_eq!(parse_ip_key("/p", index.as_bytes()), None);
            let pod = keys.pod_index(&owner, ip).unwrap();
            assert!(pod.starts_with(&keys.attachment_prefix(&owner)));
            assert_eq!(parse_ip_key("/p", pod.as_bytes()), None);
            assert_eq!(key_address(pod.as_bytes()), Some(ip));
            let (start, end) = keys.ips(cidr.network(), cidr.broadcast());
            assert!(start.as_str() <= keys.ip(ip).as_str());
            assert!(keys.ip(cidr.broadcast()).as_bytes() < end.as_slice());
            let v6: IpAddr = "::a00:7".parse().unwrap();
            assert!(
                keys.ip(v6).as_bytes() >= end.as_slice(),
                "families do not mix"
            );
        }
    }

    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }
}
