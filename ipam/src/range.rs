//! Address arithmetic for one range (to be completed: see the lead's contract below).

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use thiserror::Error;

/// A range that is not valid.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("invalid range: {0}")]
pub struct RangeError(pub String);

/// A usable range of addresses: a CIDR (host bits dropped), its first and last usable
/// addresses (never the network or broadcast address), the excluded parts and the gateway,
/// all addressed by offsets from the network address (128 bits, so a whole IPv6 /64 is usable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRange {
    cidr: IpNet,
    first: u128,
    last: u128,
    excludes: Vec<(u128, u128)>,
    gateway: Option<u128>,
}

impl IpRange {
    /// Parses Whereabouts's `range` (CIDR, or `start-end/prefix`), `range_start`,
    /// `range_end`, `exclude` (CIDRs or bare addresses) and `gateway`.
    pub fn parse(
        _range: &str,
        _range_start: Option<&str>,
        _range_end: Option<&str>,
        _exclude: &[String],
        _gateway: Option<IpAddr>,
    ) -> Result<IpRange, RangeError> {
        unimplemented!("range parsing")
    }

    /// The CIDR (network address and prefix).
    pub fn cidr(&self) -> IpNet {
        self.cidr
    }

    /// The offset of `ip` from the network address, when it is inside the CIDR.
    pub fn offset(&self, _ip: IpAddr) -> Option<u128> {
        unimplemented!()
    }

    /// The address at `offset` from the network address.
    pub fn address(&self, _offset: u128) -> IpAddr {
        unimplemented!()
    }

    /// True when `ip` may be handed out: inside the bounds, not excluded, not the gateway.
    pub fn is_usable(&self, _ip: IpAddr) -> bool {
        unimplemented!()
    }

    /// How many addresses may be handed out.
    pub fn usable_count(&self) -> u128 {
        unimplemented!()
    }

    /// The lowest usable offset within `[lo, hi]` (inclusive; the whole range when `None`) that
    /// is not in `taken`, skipping excluded parts arithmetically: the cost grows with the
    /// number of taken offsets, not with the size of the range.
    pub fn lowest_free(
        &self,
        _taken: &BTreeSet<u128>,
        _within: Option<(u128, u128)>,
    ) -> Option<u128> {
        let _ = (self.first, self.last, &self.excludes, self.gateway);
        unimplemented!()
    }
}
