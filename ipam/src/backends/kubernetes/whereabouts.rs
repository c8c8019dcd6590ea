//! Reading Whereabouts's allocations: its `IPPool` and `OverlappingRangeIPReservation`
//! objects turned into addresses, networks and owners.
//!
//! * An `IPPool` is named `<normalized range>` or `<network_name>-<normalized range>` (the
//!   range with a `0` appended when it ends in `:`, then `:` and `/` written `-`), so the
//!   network is what comes before the range's part. Its allocation keys are decimal offsets
//!   from the range's network address; Whereabouts writes an offset of 2^63 or more as a
//!   negative 64-bit number, which is read back as the unsigned offset it stands for.
//! * An `OverlappingRangeIPReservation` is named after its address (`:` written `-`, with
//!   `<network_name>-` in front); the longest tail of the name that reads as an address is
//!   the address, and what comes before it is the network.
//!
//! A pool named otherwise (Whereabouts's node-slice pools, `<network>-<node>-<slice>`) is
//! read with everything before the slice's part as its network: give such networks their
//! `network_name` in Plexus as that, or import them by hand.

use std::net::IpAddr;

use ipnet::IpNet;
use plexus_crds::whereabouts::{IpPool, OverlappingRangeIpReservation};

use super::layout::{from_u128, to_u128};
use crate::store::Owner;

/// One Whereabouts allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The network (`network_name`, empty for none).
    pub network: String,
    /// The range of its pool (`None` for a reservation without a pool allocation).
    pub range: Option<IpNet>,
    /// The address.
    pub address: IpAddr,
    /// Its holder, as Plexus records it (no pod UID, no node).
    pub owner: Owner,
    /// Where it was read: `IPPool <namespace>/<name>` or `OverlappingRangeIPReservation …`.
    pub source: String,
}

/// `range` as Whereabouts writes it in object names.
pub fn normalize_range(range: &str) -> String {
    let mut s = range.to_string();
    if s.ends_with(':') {
        s.push('0');
    }
    s.replace([':', '/'], "-")
}

/// The network of a pool named `name` for `range` (`None` when the name does not end with
/// the range's part).
pub fn pool_network(name: &str, range: &str) -> Option<String> {
    let part = normalize_range(range);
    if name == part {
        return Some(String::new());
    }
    name.strip_suffix(&part)?
        .strip_suffix('-')
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

/// The address at offset `key` (decimal; negative: a 64-bit two's complement) of `range`.
pub fn address_at(range: IpNet, key: &str) -> Result<IpAddr, String> {
    let offset: u128 = match key.strip_prefix('-') {
        Some(_) => key
            .parse::<i64>()
            .map(|v| u128::from(v as u64))
            .map_err(|_| format!("allocation key {key:?} is not an offset"))?,
        None => key
            .parse::<u128>()
            .map_err(|_| format!("allocation key {key:?} is not an offset"))?,
    };
    let bits = u32::from(range.max_prefix_len() - range.prefix_len());
    if bits < 128 && offset >> bits != 0 {
        return Err(format!("offset {key} lies outside {range}"));
    }
    let base = to_u128(range.network());
    Ok(from_u128(range.addr().is_ipv4(), base + offset))
}

/// The network and address a reservation named `name` stands for.
pub fn reservation_address(name: &str) -> Option<(String, IpAddr)> {
    let starts = std::iter::once(0).chain(
        name.char_indices()
            .filter(|(_, c)| *c == '-')
            .map(|(i, _)| i + 1),
    );
    for start in starts {
        let tail = &name[start..];
        if let Ok(ip) = tail.replace('-', ":").parse::<IpAddr>() {
            let network = if start == 0 {
                String::new()
            } else {
                name[..start - 1].to_string()
            };
            return Some((network, ip));
        }
    }
    None
}

/// The owner of an allocation made for `podref` (`namespace/name`).
fn owner(podref: &str, container_id: &str, ifname: &str) -> Owner {
    let (namespace, name) = podref.split_once('/').unwrap_or(("", podref));
    Owner {
        pod_namespace: namespace.to_string(),
        pod_name: name.to_string(),
        pod_uid: String::new(),
        container_id: container_id.to_string(),
        ifname: ifname.to_string(),
        node: String::new(),
        claim: String::new(),
    }
}

/// The allocations of `pools` and the reservations not already covered by a pool allocation
/// of the same network, address and pod; what could not be read is in the second list.
pub fn entries(
    pools: &[IpPool],
    reservations: &[OverlappingRangeIpReservation],
) -> (Vec<Entry>, Vec<String>) {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for pool in pools {
        let ns = pool.metadata.namespace.clone().unwrap_or_default();
        let name = pool.metadata.name.clone().unwrap_or_default();
        let source = format!("IPPool {ns}/{name}");
        let Ok(range) = pool.spec.range.parse::<IpNet>() else {
            problems.push(format!(
                "{source}: range {:?} is not a CIDR",
                pool.spec.range
            ));
            continue;
        };
        let range = range.trunc();
        let network = pool_network(&name, &pool.spec.range)
            .or_else(|| pool_network(&name, &range.to_string()))
            .unwrap_or_else(|| name.clone());
        for (key, a) in &pool.spec.allocations {
            match address_at(range, key) {
                Ok(address) => out.push(Entry {
                    network: network.clone(),
                    range: Some(range),
                    address,
                    owner: owner(&a.podref, &a.id, &a.ifname),
                    source: source.clone(),
                }),
                Err(e) => problems.push(format!("{source}: {e}")),
            }
        }
    }
    for r in reservations {
        let ns = r.metadata.namespace.clone().unwrap_or_default();
        let name = r.metadata.name.clone().unwrap_or_default();
        let source = format!("OverlappingRangeIPReservation {ns}/{name}");
        let Some((network, address)) = reservation_address(&name) else {
            problems.push(format!("{source}: the name is not an address"));
            continue;
        };
        let o = owner(&r.spec.podref, &r.spec.containerid, &r.spec.ifname);
        let covered = out.iter().any(|e| {
            e.network == network
                && e.address == address
                && e.owner.pod_namespace == o.pod_namespace
                && e.owner.pod_name == o.pod_name
        });
        if !covered {
            out.push(Entry {
                network,
                range: None,
                address,
                owner: o,
                source,
            });
        }
    }
    (out, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_offsets_and_reservations() {
        assert_eq!(normalize_range("10.0.0.0/24"), "10.0.0.0-24");
        assert_eq!(normalize_range("caa5::/64"), "caa5---64");
        assert_eq!(
            pool_network("blue-10.0.0.0-24", "10.0.0.0/24").as_deref(),
            Some("blue")
        );
        assert_eq!(
            pool_network("10.0.0.0-24", "10.0.0.0/24").as_deref(),
            Some("")
        );
        assert_eq!(pool_network("other", "10.0.0.0/24"), None);
        let v4: IpNet = "10.0.0.0/24".parse().unwrap();
        assert_eq!(address_at(v4, "5").unwrap().to_string(), "10.0.0.5");
        assert!(address_at(v4, "256").is_err());
        assert!(address_at(v4, "x").is_err());
        let v6: IpNet = "caa5::/64".parse().unwrap();
        assert_eq!(
            address_at(v6, "-3844666706890850303").unwrap().to_string(),
            "caa5::caa5:0:0:1"
        );
        assert_eq!(
            reservation_address("10.10.0.1"),
            Some((String::new(), "10.10.0.1".parse().unwrap()))
        );
        assert_eq!(
            reservation_address("blue-net-10.10.0.1"),
            Some(("blue-net".into(), "10.10.0.1".parse().unwrap()))
        );
        assert_eq!(
            reservation_address("blue-2001--0"),
            Some(("blue".into(), "2001::".parse().unwrap()))
        );
        assert_eq!(reservation_address("nothing"), None);
    }
}
