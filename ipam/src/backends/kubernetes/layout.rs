//! How a pool maps onto blocks and onto Kubernetes object names.
//!
//! A block is an aligned CIDR of a fixed prefix length (default /26 for IPv4, /122 for IPv6),
//! defined by absolute address: every range of a network that covers an address maps it to the
//! same block, so ranges of one network that overlap share block objects, and an address is
//! unique across them without any extra object. A range without overlap protection
//! (`enable_overlapping_ranges: false`) puts its range CIDR into the block's key, so its blocks
//! are its own. A range smaller than a block lives in the one block that contains it.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::error::{KubeStoreError, StoreError};
use crate::range::IpRange;
use crate::store::Pool;

/// The label that holds a block's (and its Lease's) network.
pub const NETWORK_LABEL: &str = "ipam.plexus.cni.dev/network";
/// The annotation of a block's Lease that holds the block CIDR.
pub const CIDR_ANNOTATION: &str = "ipam.plexus.cni.dev/cidr";
/// The prefix of a block Lease's name.
pub const LEASE_PREFIX: &str = "ipam-";

/// A pool's view of its blocks.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The network (`network_name`).
    pub network: String,
    /// The range.
    pub range: IpRange,
    /// The range CIDR when the pool's blocks are its own (no overlap sharing).
    pub own_range: Option<IpNet>,
    /// The block prefix length.
    pub block_prefix: u8,
}

impl Layout {
    /// The layout of `pool` with blocks of `/v4` or `/v6` by family. A block prefix shorter
    /// than the range's makes the range one block (the aligned block containing it).
    pub fn new(pool: &Pool, v4: u8, v6: u8) -> Result<Layout, StoreError> {
        let (bits, prefix) = match pool.range.cidr() {
            IpNet::V4(_) => (32, v4),
            IpNet::V6(_) => (128, v6),
        };
        if prefix == 0 || prefix > bits {
            return Err(KubeStoreError::BlockPrefix {
                prefix,
                range: pool.range.cidr().to_string(),
            }
            .into());
        }
        Ok(Layout {
            network: pool.network.clone(),
            range: pool.range.clone(),
            own_range: (!pool.overlapping).then(|| pool.range.cidr()),
            block_prefix: prefix,
        })
    }

    /// The block containing `ip`.
    pub fn block_of(&self, ip: IpAddr) -> IpNet {
        IpNet::new(ip, self.block_prefix)
            .expect("prefix checked at construction")
            .trunc()
    }

    /// The block's object name: `<network part>-<block CIDR>` (with `<range CIDR>-` before the
    /// block for a pool whose blocks are its own), `:` and `/` written `-`.
    pub fn block_name(&self, block: IpNet) -> String {
        let mut name = network_part(&self.network);
        if let Some(range) = self.own_range {
            name.push('-');
            name.push_str(&cidr_part(range));
        }
        name.push('-');
        name.push_str(&cidr_part(block));
        name
    }

    /// The Lease of the block named `block_name`.
    pub fn lease_name(block_name: &str) -> String {
        format!("{LEASE_PREFIX}{block_name}")
    }

    /// The value of [`NETWORK_LABEL`] for this network.
    pub fn network_label(&self) -> String {
        network_label(&self.network)
    }

    /// The pool's key among the node's hint files: the network, the range CIDR (with
    /// `own` when its blocks are its own) and the block size. Each range has its own file, so
    /// a slow path that rebuilds one range's hints leaves the other ranges' alone.
    pub fn hint_key(&self) -> String {
        let own = if self.own_range.is_some() { "-own" } else { "" };
        format!(
            "{}-{}{own}-{}",
            network_part(&self.network),
            cidr_part(self.range.cidr()),
            self.block_prefix
        )
    }

    /// Whether a block object with this spec belongs to this pool's blocks: same network, same
    /// range key, same family, and overlapping the range.
    pub fn owns(&self, network: &str, range: &str, cidr: IpNet) -> bool {
        let own = self.own_range.map(|r| r.to_string()).unwrap_or_default();
        network == self.network
            && range == own
            && self.range.is_ipv4() == matches!(cidr, IpNet::V4(_))
            && overlaps(cidr, self.range.cidr())
    }

    /// The inclusive range offsets of `block` that lie inside the range CIDR (`None` when the
    /// block is outside it).
    pub fn within(&self, block: IpNet) -> Option<(u128, u128)> {
        let range = self.range.cidr();
        if !overlaps(block, range) {
            return None;
        }
        let base = to_u128(range.network());
        let lo = to_u128(block.network()).max(base);
        let hi = to_u128(block.broadcast()).min(to_u128(range.broadcast()));
        Some((lo - base, hi - base))
    }

    /// The lowest usable address of `block` not in `taken` (the addresses allocated in it).
    pub fn lowest_free(&self, block: IpNet, taken: &BTreeSet<IpAddr>) -> Option<IpAddr> {
        let within = self.within(block)?;
        let offsets: BTreeSet<u128> = taken
            .iter()
            .filter_map(|ip| self.range.offset(*ip))
            .collect();
        self.range
            .lowest_free(&offsets, Some(within))
            .map(|o| self.range.address(o))
    }

    /// How many addresses of `taken` are usable addresses of the range.
    pub fn used_in_range<'a>(&self, taken: impl IntoIterator<Item = &'a IpAddr>) -> u128 {
        taken
            .into_iter()
            .filter(|ip| self.range.is_usable(**ip))
            .count() as u128
    }

    /// The lowest block at or after the start of `from` (or of the range, with `None`) that
    /// holds a usable address of the range; `skip` tells blocks to pass over. The cost grows
    /// with the number of blocks skipped, never with the size of the range.
    pub fn next_block(&self, from: Option<IpNet>, skip: impl Fn(IpNet) -> bool) -> Option<IpNet> {
        let empty = BTreeSet::new();
        let (_, last) = self.range.bounds();
        let mut start = match from {
            Some(block) => self.within(block)?.0,
            None => 0,
        };
        loop {
            let offset = self.range.lowest_free(&empty, Some((start, last)))?;
            let block = self.block_of(self.range.address(offset));
            if !skip(block) {
                return Some(block);
            }
            let (_, hi) = self.within(block)?;
            start = hi.checked_add(1)?;
        }
    }
}

/// The network as the start of an object name: the name itself when it is a valid DNS label
/// (lower case, digits, `-`, at most 40 characters), else `x` and a hash of it.
pub fn network_part(network: &str) -> String {
    let clean = !network.is_empty()
        && network.len() <= 40
        && network
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && network.as_bytes()[0].is_ascii_alphanumeric()
        && network.as_bytes()[network.len() - 1].is_ascii_alphanumeric();
    if clean {
        network.to_string()
    } else {
        format!("x{:016x}", fnv1a(network.as_bytes()))
    }
}

/// The value of [`NETWORK_LABEL`] for `network` (a valid label value: the same rule as
/// [`network_part`]).
pub fn network_label(network: &str) -> String {
    network_part(network)
}

/// A CIDR in an object name: `10.0.0.64/26` → `10.0.0.64-26`, `fd00::40/122` → `fd00--40-122`.
pub fn cidr_part(cidr: IpNet) -> String {
    cidr.to_string().replace([':', '/'], "-")
}

/// Whether two CIDRs share an address (aligned CIDRs either nest or are disjoint).
pub fn overlaps(a: IpNet, b: IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// An address as a number.
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address of a family with this numeric value.
pub fn from_u128(v4: bool, value: u128) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(value as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(value))
    }
}

/// 64-bit FNV-1a: a stable hash for names (not for security).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(range: &str, network: &str, overlapping: bool) -> Pool {
        Pool {
            network: network.into(),
            range: IpRange::parse(range, None, None, &[], None).unwrap(),
            overlapping,
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn names_are_valid_object_names_and_shared_by_overlapping_ranges() {
        let wide = Layout::new(&pool("10.0.0.0/16", "net-a", true), 26, 122).unwrap();
        let narrow = Layout::new(&pool("10.0.0.0/24", "net-a", true), 26, 122).unwrap();
        let block = wide.block_of("10.0.0.70".parse().unwrap());
        assert_eq!(block, net("10.0.0.64/26"));
        assert_eq!(wide.block_name(block), "net-a-10.0.0.64-26");
        assert_eq!(narrow.block_name(block), wide.block_name(block));
        let own = Layout::new(&pool("10.0.0.0/24", "net-a", false), 26, 122).unwrap();
        assert_eq!(own.block_name(block), "net-a-10.0.0.0-24-10.0.0.64-26");
        let v6 = Layout::new(&pool("fd00::/64", "", true), 26, 122).unwrap();
        let name = v6.block_name(v6.block_of("::1".parse().unwrap()));
        assert!(name.starts_with('x') && name.ends_with("----122"), "{name}");
        assert_eq!(network_part("Net_1"), network_part("Net_1"));
        assert_ne!(network_part("Net_1"), network_part("net-1"));
        assert_eq!(Layout::lease_name("a-10.0.0.0-26"), "ipam-a-10.0.0.0-26");
    }

    #[test]
    fn blocks_are_clipped_to_the_range_and_found_in_order() {
        // A /28 range inside one /26 block.
        let small = Layout::new(&pool("10.0.0.16/28", "n", true), 26, 122).unwrap();
        let block = small.block_of("10.0.0.20".parse().unwrap());
        assert_eq!(block, net("10.0.0.0/26"));
        assert_eq!(small.within(block), Some((0, 15)));
        assert_eq!(
            small.lowest_free(block, &BTreeSet::new()),
            Some("10.0.0.17".parse().unwrap())
        );
        assert_eq!(small.next_block(None, |_| false), Some(block));
        assert_eq!(small.next_block(None, |_| true), None);

        // A /24 range of four /26 blocks; skipping the first two.
        let wide = Layout::new(&pool("10.0.1.0/24", "n", true), 26, 122).unwrap();
        let skipped = [net("10.0.1.0/26"), net("10.0.1.64/26")];
        assert_eq!(
            wide.next_block(None, |b| skipped.contains(&b)),
            Some(net("10.0.1.128/26"))
        );
        assert_eq!(
            wide.next_block(Some(net("10.0.1.192/26")), |_| false),
            Some(net("10.0.1.192/26"))
        );
        let taken: BTreeSet<IpAddr> = ["10.0.1.1", "10.0.1.2"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(
            wide.lowest_free(net("10.0.1.0/26"), &taken),
            Some("10.0.1.3".parse().unwrap())
        );
        assert_eq!(wide.used_in_range(&taken), 2);
        // A whole /64 costs nothing to walk.
        let v6 = Layout::new(&pool("fd00::/64", "n", true), 26, 122).unwrap();
        let last = v6.next_block(Some(net("fd00::ffff:ffff:ffff:ffc0/122")), |_| false);
        assert_eq!(last, Some(net("fd00::ffff:ffff:ffff:ffc0/122")));
    }

    #[test]
    fn a_pool_owns_the_blocks_of_its_network_and_range_key() {
        let shared = Layout::new(&pool("10.0.0.0/24", "n", true), 26, 122).unwrap();
        assert!(shared.owns("n", "", net("10.0.0.64/26")));
        assert!(!shared.owns("m", "", net("10.0.0.64/26")));
        assert!(!shared.owns("n", "10.0.0.0/24", net("10.0.0.64/26")));
        assert!(!shared.owns("n", "", net("10.0.1.0/26")));
        let own = Layout::new(&pool("10.0.0.0/24", "n", false), 26, 122).unwrap();
        assert!(own.owns("n", "10.0.0.0/24", net("10.0.0.64/26")));
        assert!(Layout::new(&pool("10.0.0.0/24", "n", true), 33, 122).is_err());
    }
}
