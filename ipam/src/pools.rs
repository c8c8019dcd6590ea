//! Pool occupancy for `plexusctl ipam pools`: each configured pool with its size, used and
//! free counts and each allocation with its pod, from [`Store::usage`](crate::store::Store::usage)
//! and the configured ranges. Allocations that no configured pool covers are listed too, under
//! the CIDR the store found them in, without a size.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use serde::Serialize;

use crate::backends::kubernetes::BlockInfo;
use crate::store::{Allocation, Pool, PoolUsage};

/// One pool's occupancy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolSummary {
    /// The network (`network_name`; empty for the unnamed one).
    pub network: String,
    /// The range CIDR (configured), or the CIDR the store keeps the allocations under.
    pub cidr: String,
    /// Whether the pool is a configured range.
    pub configured: bool,
    /// Usable addresses, for a configured pool.
    pub size: Option<u128>,
    /// Allocated addresses.
    pub used: u128,
    /// Free usable addresses, for a configured pool.
    pub free: Option<u128>,
    /// The allocations, by address.
    pub allocations: Vec<Allocation>,
    /// The pool's blocks and the nodes holding them (Kubernetes store; see [`attach_blocks`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<BlockInfo>,
}

/// The occupancy of every configured pool (duplicates counted once) and of whatever else the
/// store holds. An allocation belongs to the first configured pool of its network whose range
/// CIDR contains it; `used` counts the usable addresses of the range that are allocated.
pub fn summarize(configured: &[Pool], usage: &[PoolUsage]) -> Vec<PoolSummary> {
    let mut pools: Vec<&Pool> = Vec::new();
    for pool in configured {
        if !pools
            .iter()
            .any(|p| p.network == pool.network && p.range == pool.range)
        {
            pools.push(pool);
        }
    }
    let mut mine: Vec<BTreeMap<IpAddr, Allocation>> = vec![BTreeMap::new(); pools.len()];
    let mut rest: BTreeMap<(String, String), BTreeMap<IpAddr, Allocation>> = BTreeMap::new();
    for u in usage {
        for a in &u.allocations {
            let home = pools
                .iter()
                .position(|p| p.network == u.network && p.range.cidr().contains(&a.address));
            match home {
                Some(i) => mine[i].insert(a.address, a.clone()),
                None => rest
                    .entry((u.network.clone(), u.cidr.clone()))
                    .or_default()
                    .insert(a.address, a.clone()),
            };
        }
    }
    let mut out: Vec<PoolSummary> = pools
        .iter()
        .zip(mine)
        .map(|(pool, allocations)| {
            let size = pool.range.usable_count();
            let usable: BTreeSet<&IpAddr> = allocations
                .keys()
                .filter(|ip| pool.range.is_usable(**ip))
                .collect();
            let used = usable.len() as u128;
            PoolSummary {
                network: pool.network.clone(),
                cidr: pool.range.cidr().to_string(),
                configured: true,
                size: Some(size),
                used: allocations.len() as u128,
                free: Some(size.saturating_sub(used)),
                allocations: allocations.into_values().collect(),
                blocks: Vec::new(),
            }
        })
        .collect();
    out.extend(
        rest.into_iter()
            .map(|((network, cidr), allocations)| PoolSummary {
                network,
                cidr,
                configured: false,
                size: None,
                used: allocations.len() as u128,
                free: None,
                allocations: allocations.into_values().collect(),
                blocks: Vec::new(),
            }),
    );
    out
}

/// Gives each summary the blocks of its network that overlap its CIDR (a block goes to the
/// first such summary).
pub fn attach_blocks(summaries: &mut [PoolSummary], blocks: &[BlockInfo]) {
    for block in blocks {
        let Ok(cidr) = block.cidr.parse::<ipnet::IpNet>() else {
            continue;
        };
        let home = summaries.iter_mut().find(|s| {
            s.network == block.network
                && s.cidr.parse::<ipnet::IpNet>().is_ok_and(|pool| {
                    pool.contains(&cidr.network()) || cidr.contains(&pool.network())
                })
        });
        if let Some(summary) = home {
            summary.blocks.push(block.clone());
        }
    }
}

/// Blocks as text, one line per block, grouped by the node holding it (`-`: no Lease):
/// `node network block used size lease`, the Lease `live`, `expired` or `none`.
pub fn render_blocks(blocks: &[BlockInfo]) -> String {
    let mut sorted: Vec<&BlockInfo> = blocks.iter().collect();
    sorted.sort_by(|a, b| (&a.node, &a.network, &a.name).cmp(&(&b.node, &b.network, &b.name)));
    let mut text = String::new();
    let _ = writeln!(text, "NODE\tNETWORK\tBLOCK\tUSED\tSIZE\tLEASE");
    for b in sorted {
        let dash = |s: &str| {
            if s.is_empty() {
                "-".to_string()
            } else {
                s.to_string()
            }
        };
        let lease = match (b.node.is_empty(), b.live) {
            (true, _) => "none",
            (false, true) => "live",
            (false, false) => "expired",
        };
        let _ = writeln!(
            text,
            "{}\t{}\t{}\t{}\t{}\t{lease}",
            dash(&b.node),
            dash(&b.network),
            b.cidr,
            b.used,
            b.size
        );
    }
    text
}

/// The summaries as text: one line per pool (`network cidr size used free`), then one
/// indented line per allocation (`address pod interface container node`).
pub fn render(summaries: &[PoolSummary]) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "NETWORK\tCIDR\tSIZE\tUSED\tFREE");
    let count = |n: Option<u128>| n.map_or_else(|| "-".to_string(), |n| n.to_string());
    for s in summaries {
        let network = if s.network.is_empty() {
            "-"
        } else {
            &s.network
        };
        let _ = writeln!(
            text,
            "{network}\t{}\t{}\t{}\t{}",
            s.cidr,
            count(s.size),
            s.used,
            count(s.free)
        );
        for a in &s.allocations {
            let o = &a.owner;
            let _ = writeln!(
                text,
                "  {}\t{}\t{}\t{}\t{}",
                a.address,
                o.display(),
                o.ifname,
                o.container_id,
                if o.node.is_empty() { "-" } else { &o.node }
            );
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::range::IpRange;
    use crate::store::Owner;

    fn alloc(ip: &str, pod: &str) -> Allocation {
        Allocation {
            address: ip.parse().unwrap(),
            owner: Owner {
                pod_namespace: "ns".into(),
                pod_name: pod.into(),
                pod_uid: String::new(),
                container_id: "c".into(),
                ifname: "net1".into(),
                node: "n1".into(),
                claim: String::new(),
            },
        }
    }

    #[test]
    fn pools_count_their_allocations_and_strays_are_listed_apart() {
        let pool = Pool {
            network: "n".into(),
            range: IpRange::parse("10.0.0.0/28", None, None, &[], None).unwrap(),
            overlapping: true,
        };
        let usage = vec![
            PoolUsage {
                network: "n".into(),
                cidr: "10.0.0.0/26".into(),
                allocations: vec![alloc("10.0.0.2", "b"), alloc("10.0.0.1", "a")],
            },
            PoolUsage {
                network: "n".into(),
                cidr: "10.0.1.0/26".into(),
                allocations: vec![alloc("10.0.1.1", "c")],
            },
        ];
        let out = summarize(&[pool.clone(), pool], &usage);
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[0].size, out[0].used, out[0].free),
            (Some(14), 2, Some(12))
        );
        assert_eq!(out[0].allocations[0].address.to_string(), "10.0.0.1");
        assert!(!out[1].configured);
        assert_eq!((out[1].cidr.as_str(), out[1].used), ("10.0.1.0/26", 1));
        let text = render(&out);
        assert!(text.contains("n\t10.0.0.0/28\t14\t2\t12"), "{text}");
        assert!(text.contains("  10.0.0.1\tns/a\tnet1\tc\tn1"), "{text}");
        assert!(text.contains("n\t10.0.1.0/26\t-\t1\t-"), "{text}");
    }
}
