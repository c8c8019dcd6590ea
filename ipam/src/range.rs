//! Address arithmetic for one range.
//!
//! Every address is handled as its 128-bit offset from the range's network address, so the
//! whole of an IPv6 /64 (or any larger range) is usable; Whereabouts reads offsets back as signed
//! 64-bit integers, which loses every offset of 2^63 and above (its issue #83).
//!
//! What is accepted, with Whereabouts's edge cases:
//!
//! * `range` is a CIDR whose host bits are dropped (`192.168.2.225/28` is `192.168.2.224/28`),
//!   or `start-end/prefix` (`192.168.1.5-192.168.1.25/24`): the CIDR is `end/prefix`, the start
//!   must lie inside it, and start and end then replace `range_start` and `range_end`.
//! * The network and the all-ones (broadcast) address are never handed out, for IPv6 too as
//!   Whereabouts does; a /31, /32, /127 or /128 therefore has no usable address and is refused.
//! * `range_start` and `range_end` are **silently ignored** when they fall outside the usable
//!   addresses of the CIDR (or are of the other family), and `range_end` is ignored when it is
//!   below the start, exactly as Whereabouts's `GetIPRange` does. An unparsable one is an error.
//! * `exclude` holds CIDRs or bare addresses (a /32 or /128); each is clipped to the range and
//!   merged into sorted, disjoint intervals, so a huge excluded range costs nothing to skip.
//!   Excludes of the other family or outside the CIDR are ignored; one that does not parse is an
//!   error at load (Whereabouts accepts it and fails at the first allocation).
//! * The gateway, when it is inside the range, is never handed out (Whereabouts hands it out
//!   unless it is excluded by hand, its issue #107).
//! * IPv4 addresses with leading zeros (`00192.168.001.005`) are read as decimal, like
//!   Whereabouts's `ParseIPSloppy`.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
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
    /// Sorted, disjoint, non-adjacent inclusive intervals inside `[first, last]`; the gateway
    /// is one of them when it lies in the range.
    excludes: Vec<(u128, u128)>,
    gateway: Option<u128>,
}

impl IpRange {
    /// Parses Whereabouts's `range` (CIDR, or `start-end/prefix`), `range_start`,
    /// `range_end`, `exclude` (CIDRs or bare addresses) and `gateway`.
    pub fn parse(
        range: &str,
        range_start: Option<&str>,
        range_end: Option<&str>,
        exclude: &[String],
        gateway: Option<IpAddr>,
    ) -> Result<IpRange, RangeError> {
        let range = range.trim();
        if range.is_empty() {
            return Err(RangeError("the range is empty".into()));
        }
        let (cidr, start, end) = match range.split_once('-') {
            Some((start, rest)) => {
                let start = parse_ip_sloppy(start.trim()).ok_or_else(|| {
                    RangeError(format!("{range}: invalid range start IP {start:?}"))
                })?;
                let (end, cidr) = parse_cidr_sloppy(rest.trim()).ok_or_else(|| {
                    RangeError(format!(
                        "{range}: {rest:?} is not a CIDR (the form is start-end/prefix)"
                    ))
                })?;
                if !cidr.contains(&start) {
                    return Err(RangeError(format!(
                        "invalid range start for CIDR {cidr}: {start}"
                    )));
                }
                (cidr, Some(start), Some(end))
            }
            None => {
                let (_, cidr) = parse_cidr_sloppy(range).ok_or_else(|| {
                    RangeError(format!(
                        "{range:?} is not a CIDR (like 10.0.0.0/24) or start-end/prefix"
                    ))
                })?;
                let start = range_start
                    .map(|s| parse_bound("range_start", s))
                    .transpose()?;
                let end = range_end.map(|s| parse_bound("range_end", s)).transpose()?;
                (cidr, start, end)
            }
        };
        let max = max_offset(&cidr);
        if max < 3 {
            return Err(RangeError(format!(
                "{cidr} has no usable addresses (the network and broadcast addresses are never handed out)"
            )));
        }
        let mut r = IpRange {
            cidr,
            first: 1,
            last: max - 1,
            excludes: Vec::new(),
            gateway: None,
        };
        // Out-of-bounds start and end are ignored silently, as Whereabouts's GetIPRange does.
        if let Some(s) = start.and_then(|ip| r.offset(ip)) {
            if (r.first..=r.last).contains(&s) {
                r.first = s;
            }
        }
        if let Some(e) = end.and_then(|ip| r.offset(ip)) {
            if (r.first..=r.last).contains(&e) {
                r.last = e;
            }
        }
        let mut intervals = Vec::new();
        for text in exclude {
            let (v4, lo, hi) = parse_exclude(text)?;
            if let Some(iv) = r.clip(v4, lo, hi) {
                intervals.push(iv);
            }
        }
        if let Some(gw) = gateway {
            r.gateway = r.offset(gw);
            if let Some(g) = r.gateway {
                if (r.first..=r.last).contains(&g) {
                    intervals.push((g, g));
                }
            }
        }
        r.excludes = merge(intervals);
        Ok(r)
    }

    /// The CIDR (network address and prefix).
    pub fn cidr(&self) -> IpNet {
        self.cidr
    }

    /// The prefix length of the CIDR.
    pub fn prefix_len(&self) -> u8 {
        self.cidr.prefix_len()
    }

    /// True for an IPv4 range.
    pub fn is_ipv4(&self) -> bool {
        matches!(self.cidr, IpNet::V4(_))
    }

    /// The first and last usable offsets (inclusive), after `range_start` and `range_end`.
    pub fn bounds(&self) -> (u128, u128) {
        (self.first, self.last)
    }

    /// The first usable address.
    pub fn first_address(&self) -> IpAddr {
        self.address(self.first)
    }

    /// The last usable address.
    pub fn last_address(&self) -> IpAddr {
        self.address(self.last)
    }

    /// The excluded intervals of offsets (sorted, disjoint, inclusive, clipped to the bounds),
    /// the gateway included.
    pub fn excluded(&self) -> &[(u128, u128)] {
        &self.excludes
    }

    /// The gateway, when it lies inside the CIDR.
    pub fn gateway(&self) -> Option<IpAddr> {
        self.gateway.map(|g| self.address(g))
    }

    /// The offset of `ip` from the network address, when it is inside the CIDR.
    pub fn offset(&self, ip: IpAddr) -> Option<u128> {
        if !self.cidr.contains(&ip) {
            return None;
        }
        Some(to_u128(ip) - to_u128(self.cidr.network()))
    }

    /// The address at `offset` from the network address.
    ///
    /// An offset beyond the CIDR wraps around inside the address family; callers pass offsets
    /// of this range.
    pub fn address(&self, offset: u128) -> IpAddr {
        let base = to_u128(self.cidr.network());
        match self.cidr {
            IpNet::V4(_) => IpAddr::V4(Ipv4Addr::from(base.wrapping_add(offset) as u32)),
            IpNet::V6(_) => IpAddr::V6(Ipv6Addr::from(base.wrapping_add(offset))),
        }
    }

    /// The address at `offset` with the range's prefix length, as a CNI result has it.
    pub fn address_net(&self, offset: u128) -> IpNet {
        IpNet::new(self.address(offset), self.prefix_len()).expect("prefix of a valid CIDR")
    }

    /// True when `ip` may be handed out: inside the bounds, not excluded, not the gateway.
    pub fn is_usable(&self, ip: IpAddr) -> bool {
        self.offset(ip).is_some_and(|o| self.is_usable_offset(o))
    }

    /// As [`IpRange::is_usable`], for an offset.
    pub fn is_usable_offset(&self, offset: u128) -> bool {
        (self.first..=self.last).contains(&offset) && self.excluded_end(offset).is_none()
    }

    /// How many addresses may be handed out.
    pub fn usable_count(&self) -> u128 {
        let total = self.last - self.first + 1;
        let excluded: u128 = self.excludes.iter().map(|(lo, hi)| hi - lo + 1).sum();
        total - excluded
    }

    /// The lowest usable offset within `[lo, hi]` (inclusive; the whole range when `None`) that
    /// is not in `taken`, skipping excluded parts arithmetically: the cost grows with the
    /// number of taken offsets, not with the size of the range.
    pub fn lowest_free(
        &self,
        taken: &BTreeSet<u128>,
        within: Option<(u128, u128)>,
    ) -> Option<u128> {
        let (lo, hi) = match within {
            Some((lo, hi)) => (lo.max(self.first), hi.min(self.last)),
            None => (self.first, self.last),
        };
        if lo > hi {
            return None;
        }
        let mut taken_iter = taken.range(lo..=hi).peekable();
        let mut cand = lo;
        loop {
            if let Some(end) = self.excluded_end(cand) {
                if end >= hi {
                    return None;
                }
                cand = end + 1;
                continue;
            }
            while taken_iter.next_if(|&&t| t < cand).is_some() {}
            match taken_iter.peek() {
                Some(&&t) if t == cand => {
                    if cand >= hi {
                        return None;
                    }
                    cand += 1;
                    taken_iter.next();
                }
                _ => return Some(cand),
            }
        }
    }

    /// When `offset` is excluded, the end of its excluded interval (binary search).
    fn excluded_end(&self, offset: u128) -> Option<u128> {
        let i = self.excludes.partition_point(|&(lo, _)| lo <= offset);
        let (_, hi) = *self.excludes.get(i.checked_sub(1)?)?;
        (offset <= hi).then_some(hi)
    }

    /// The part of `[lo, hi]` (absolute addresses of the family `v4` as integers) inside the
    /// usable bounds, as offsets.
    fn clip(&self, v4: bool, lo: u128, hi: u128) -> Option<(u128, u128)> {
        if v4 != self.is_ipv4() {
            return None;
        }
        let base = to_u128(self.cidr.network());
        let abs_first = base + self.first;
        let abs_last = base + self.last;
        let a = lo.max(abs_first);
        let b = hi.min(abs_last);
        (a <= b).then(|| (a - base, b - base))
    }
}

/// The largest offset of a CIDR: the broadcast (all-ones) address's.
fn max_offset(cidr: &IpNet) -> u128 {
    let host_bits = u32::from(cidr.max_prefix_len() - cidr.prefix_len());
    if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    }
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Sorts and merges overlapping or adjacent intervals.
fn merge(mut intervals: Vec<(u128, u128)>) -> Vec<(u128, u128)> {
    intervals.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::with_capacity(intervals.len());
    for (lo, hi) in intervals {
        match out.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

fn parse_bound(key: &str, s: &str) -> Result<IpAddr, RangeError> {
    parse_ip_sloppy(s.trim())
        .ok_or_else(|| RangeError(format!("{key}: {s:?} is not an IP address")))
}

/// One `exclude` entry: the family (true for IPv4) and an inclusive interval of absolute
/// addresses.
fn parse_exclude(text: &str) -> Result<(bool, u128, u128), RangeError> {
    let t = text.trim();
    let net = if t.contains('/') {
        parse_cidr_sloppy(t).map(|(_, net)| net)
    } else {
        parse_ip_sloppy(t).map(IpNet::from)
    }
    .ok_or_else(|| {
        RangeError(format!(
            "exclude: {text:?} is neither a CIDR (like 10.0.0.0/28) nor an IP address"
        ))
    })?;
    let v4 = matches!(net, IpNet::V4(_));
    Ok((v4, to_u128(net.network()), to_u128(net.broadcast())))
}

/// Parses an address; IPv4 may have leading zeros, read as decimal (`ParseIPSloppy`).
pub fn parse_ip_sloppy(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() != 4 {
        return None;
    }
    let mut octets = [0u8; 4];
    for (o, p) in octets.iter_mut().zip(&parts) {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let digits = p.trim_start_matches('0');
        *o = if digits.is_empty() {
            0
        } else if digits.len() > 3 {
            return None;
        } else {
            digits.parse().ok()?
        };
    }
    Some(IpAddr::V4(Ipv4Addr::from(octets)))
}

/// Parses `address/prefix` (sloppy IPv4 allowed): the address as written and the network
/// (host bits dropped).
pub fn parse_cidr_sloppy(s: &str) -> Option<(IpAddr, IpNet)> {
    let (addr, prefix) = s.split_once('/')?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) || prefix.len() > 3 {
        return None;
    }
    let prefix: u8 = prefix.parse().ok()?;
    let ip = parse_ip_sloppy(addr)?;
    let net = match ip {
        IpAddr::V4(v4) => IpNet::V4(Ipv4Net::new(v4, prefix).ok()?),
        IpAddr::V6(v6) => IpNet::V6(Ipv6Net::new(v6, prefix).ok()?),
    };
    Some((ip, net.trunc()))
}

/// Whereabouts's `normalizeRange`: a CIDR as a Kubernetes object name (`10.0.0.0/8` →
/// `10.0.0.0-8`, `caa5::/64` → `caa5---64`): a trailing `:` gets a `0`, then every `:` and `/`
/// becomes `-`.
pub fn normalize_range(range: &str) -> String {
    let mut s = range.to_string();
    if s.ends_with(':') {
        s.push('0');
    }
    s.replace([':', '/'], "-")
}

/// Whereabouts's `IPPoolName`: the normalized range, prefixed with `<node>-` when a node is
/// given and then with `<network_name>-` when one is set (`test-10.0.0.0-8`,
/// `testnetwork-testnode-10.0.0.0-8`).
pub fn pool_name(network_name: &str, node_name: &str, range: &IpNet) -> String {
    let mut name = normalize_range(&range.to_string());
    if !node_name.is_empty() {
        name = format!("{node_name}-{name}");
    }
    if !network_name.is_empty() {
        name = format!("{network_name}-{name}");
    }
    name
}

/// Whereabouts's `NormalizeIP` (the name of an OverlappingRangeIPReservation): the address
/// with a `0` appended when it ends in `:`, every `:` as `-`, prefixed with `<network_name>-`
/// when one is set (`2001::` → `2001--0`).
pub fn normalize_ip(network_name: &str, ip: IpAddr) -> String {
    let mut s = ip.to_string();
    if s.ends_with(':') {
        s.push('0');
    }
    let s = s.replace(':', "-");
    if network_name.is_empty() {
        s
    } else {
        format!("{network_name}-{s}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn r(range: &str) -> IpRange {
        IpRange::parse(range, None, None, &[], None).unwrap()
    }

    fn rx(range: &str, exclude: &[&str]) -> IpRange {
        let ex: Vec<String> = exclude.iter().map(|s| s.to_string()).collect();
        IpRange::parse(range, None, None, &ex, None).unwrap()
    }

    fn set(offsets: &[u128]) -> BTreeSet<u128> {
        offsets.iter().copied().collect()
    }

    #[test]
    fn bounds_table() {
        // (range, start, end, first, last, usable)
        type Case<'a> = (
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            &'a str,
            &'a str,
            u128,
        );
        let cases: &[Case] = &[
            (
                "192.168.2.225/28",
                None,
                None,
                "192.168.2.225",
                "192.168.2.238",
                14,
            ),
            ("10.0.0.0/30", None, None, "10.0.0.1", "10.0.0.2", 2),
            (
                "10.0.0.0/24",
                Some("10.0.0.10"),
                Some("10.0.0.20"),
                "10.0.0.10",
                "10.0.0.20",
                11,
            ),
            // Out of bounds: ignored silently.
            (
                "10.0.0.0/24",
                Some("10.0.1.10"),
                Some("10.0.0.255"),
                "10.0.0.1",
                "10.0.0.254",
                254,
            ),
            (
                "10.0.0.0/24",
                Some("10.0.0.0"),
                None,
                "10.0.0.1",
                "10.0.0.254",
                254,
            ),
            // End below start: the end is ignored.
            (
                "10.0.0.0/24",
                Some("10.0.0.50"),
                Some("10.0.0.40"),
                "10.0.0.50",
                "10.0.0.254",
                205,
            ),
            // The other family: ignored.
            (
                "10.0.0.0/24",
                Some("2001:db8::5"),
                None,
                "10.0.0.1",
                "10.0.0.254",
                254,
            ),
            // start-end/prefix.
            (
                "192.168.1.5-192.168.1.25/24",
                None,
                None,
                "192.168.1.5",
                "192.168.1.25",
                21,
            ),
            // The dash form overrides range_start/range_end.
            (
                "192.168.1.5-192.168.1.25/24",
                Some("192.168.1.100"),
                None,
                "192.168.1.5",
                "192.168.1.25",
                21,
            ),
            // A dash-form end that is the broadcast is ignored.
            (
                "192.168.1.5-192.168.1.255/24",
                None,
                None,
                "192.168.1.5",
                "192.168.1.254",
                250,
            ),
            // Sloppy IPv4.
            (
                "00192.00168.1.5-000000192.168.1.25/24",
                None,
                None,
                "192.168.1.5",
                "192.168.1.25",
                21,
            ),
            (
                "2001:db8::/126",
                None,
                None,
                "2001:db8::1",
                "2001:db8::2",
                2,
            ),
            (
                "abcd::1/64",
                None,
                None,
                "abcd::1",
                "abcd::ffff:ffff:ffff:fffe",
                (1u128 << 64) - 2,
            ),
            (
                "::/0",
                None,
                None,
                "::1",
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe",
                u128::MAX - 1,
            ),
            (
                "0.0.0.0/0",
                None,
                None,
                "0.0.0.1",
                "255.255.255.254",
                (1u128 << 32) - 2,
            ),
        ];
        for (range, start, end, first, last, usable) in cases {
            let got = IpRange::parse(range, *start, *end, &[], None).unwrap();
            assert_eq!(got.first_address(), ip(first), "{range} {start:?} {end:?}");
            assert_eq!(got.last_address(), ip(last), "{range} {start:?} {end:?}");
            assert_eq!(got.usable_count(), *usable, "{range}");
        }
        assert_eq!(r("192.168.2.225/28").cidr().to_string(), "192.168.2.224/28");
    }

    #[test]
    fn invalid_ranges() {
        let cases: &[(&str, Option<&str>, &[&str], &str)] = &[
            ("", None, &[], "empty"),
            ("10.0.0.0", None, &[], "not a CIDR"),
            ("10.0.0.0/33", None, &[], "not a CIDR"),
            ("10.0.0.300/24", None, &[], "not a CIDR"),
            ("10.0.0.0/31", None, &[], "no usable addresses"),
            ("10.0.0.1/32", None, &[], "no usable addresses"),
            ("2001:db8::/127", None, &[], "no usable addresses"),
            ("2001:db8::1/128", None, &[], "no usable addresses"),
            (
                "192.168.1.5-192.168.2.25/24",
                None,
                &[],
                "invalid range start for CIDR 192.168.2.0/24: 192.168.1.5",
            ),
            ("x-192.168.2.25/24", None, &[], "invalid range start IP"),
            ("192.168.1.5-192.168.2.25", None, &[], "not a CIDR"),
            ("10.0.0.0/24", Some("banana"), &[], "range_start"),
            ("10.0.0.0/24", None, &["10.0.0.0/99"], "exclude"),
            ("10.0.0.0/24", None, &["nope"], "exclude"),
            ("10.0.0.0/24", None, &["10.0.0.0/24", ""], "exclude"),
        ];
        for (range, start, exclude, want) in cases {
            let ex: Vec<String> = exclude.iter().map(|s| s.to_string()).collect();
            let err = IpRange::parse(range, *start, None, &ex, None).unwrap_err();
            assert!(err.0.contains(want), "{range}: {err}");
        }
    }

    #[test]
    fn excludes_table() {
        // (range, excludes, expected lowest free with nothing taken, usable)
        let cases: &[(&str, &[&str], Option<&str>, u128)] = &[
            (
                "192.168.2.225/28",
                &["192.168.2.229/30", "192.168.2.236/32"],
                Some("192.168.2.225"),
                14 - 4 - 1,
            ),
            ("10.0.0.0/24", &["10.0.0.1"], Some("10.0.0.2"), 253),
            ("10.0.0.0/24", &["10.0.0.0/25"], Some("10.0.0.128"), 127),
            ("10.0.0.0/24", &["10.0.0.0/24"], None, 0),
            ("10.0.0.0/24", &["0.0.0.0/0"], None, 0),
            // Other family and outside: ignored.
            (
                "10.0.0.0/24",
                &["2001:db8::/64", "10.1.0.0/16"],
                Some("10.0.0.1"),
                254,
            ),
            // Overlapping and adjacent excludes merge.
            (
                "10.0.0.0/24",
                &["10.0.0.0/30", "10.0.0.2/31", "10.0.0.4/30", "10.0.0.8"],
                Some("10.0.0.9"),
                254 - 8,
            ),
            // Host bits of an excluded CIDR are dropped.
            ("10.0.0.0/24", &["10.0.0.5/30"], Some("10.0.0.1"), 250),
            ("10.0.0.0/24", &["10.0.0.1/30"], Some("10.0.0.4"), 251),
            // Huge excluded IPv6 ranges are skipped arithmetically.
            (
                "2001:db8::/32",
                &["2001:db8::/33"],
                Some("2001:db8:8000::"),
                (1u128 << 95) - 1,
            ),
            (
                "fd00::/8",
                &["fd00::/9", "fd80::/10"],
                Some("fdc0::"),
                (1u128 << 118) - 1,
            ),
            ("::/0", &["::/1"], Some("8000::"), (1u128 << 127) - 1),
            (
                "2001:db8::/64",
                &["2001:db8::1"],
                Some("2001:db8::2"),
                (1u128 << 64) - 3,
            ),
        ];
        for (range, exclude, want, usable) in cases {
            let got = rx(range, exclude);
            assert_eq!(
                got.lowest_free(&BTreeSet::new(), None)
                    .map(|o| got.address(o)),
                want.map(ip),
                "{range} {exclude:?}"
            );
            assert_eq!(got.usable_count(), *usable, "{range} {exclude:?}");
        }
    }

    #[test]
    fn gateway_is_never_handed_out() {
        let g = IpRange::parse("10.0.0.0/24", None, None, &[], Some(ip("10.0.0.1"))).unwrap();
        assert_eq!(g.gateway(), Some(ip("10.0.0.1")));
        assert!(!g.is_usable(ip("10.0.0.1")));
        assert_eq!(g.usable_count(), 253);
        assert_eq!(g.lowest_free(&BTreeSet::new(), None), Some(2));
        // A gateway of the other family or outside the CIDR changes nothing.
        for gw in ["2001:db8::1", "10.0.1.1"] {
            let g = IpRange::parse("10.0.0.0/24", None, None, &[], Some(ip(gw))).unwrap();
            assert_eq!(g.gateway(), None);
            assert_eq!(g.usable_count(), 254);
        }
        // Inside the CIDR but outside the bounds: known, and nothing to exclude.
        let g = IpRange::parse(
            "10.0.0.10-10.0.0.20/24",
            None,
            None,
            &[],
            Some(ip("10.0.0.1")),
        )
        .unwrap();
        assert_eq!(g.gateway(), Some(ip("10.0.0.1")));
        assert_eq!(g.usable_count(), 11);
        // Gateway inside an excluded part.
        let g = IpRange::parse(
            "10.0.0.0/29",
            None,
            None,
            &["10.0.0.0/30".into()],
            Some(ip("10.0.0.2")),
        )
        .unwrap();
        assert_eq!(g.usable_count(), 3);
        assert_eq!(g.lowest_free(&BTreeSet::new(), None), Some(4));
    }

    #[test]
    fn dual_stack_offsets_and_addresses() {
        let v4 = r("10.1.0.0/16");
        let v6 = r("fd00:10::/64");
        assert!(v4.is_ipv4() && !v6.is_ipv4());
        assert_eq!(v4.offset(ip("10.1.1.0")), Some(256));
        assert_eq!(v4.offset(ip("fd00:10::1")), None);
        assert_eq!(v6.offset(ip("10.1.1.0")), None);
        assert_eq!(v6.offset(ip("fd00:10::1:0")), Some(65536));
        assert_eq!(v4.address(256), ip("10.1.1.0"));
        // Whereabouts hands out x.y.1.0 in a /16; so do we.
        assert!(v4.is_usable(ip("10.1.1.0")));
        assert!(!v4.is_usable(ip("10.1.0.0")));
        assert!(!v4.is_usable(ip("10.1.255.255")));
        assert!(!v6.is_usable(ip("fd00:10::")));
        assert!(!v6.is_usable(ip("fd00:10::ffff:ffff:ffff:ffff")));
        assert_eq!(v4.address_net(5).to_string(), "10.1.0.5/16");
        assert_eq!(v6.address_net(5).to_string(), "fd00:10::5/64");
    }

    #[test]
    fn high_offsets_of_a_64() {
        // Whereabouts #83: offsets at and above 2^63 must work.
        let v6 = r("caa5::/64");
        let high = 1u128 << 63;
        let a = v6.address(high);
        assert_eq!(a, ip("caa5::8000:0:0:0"));
        assert_eq!(v6.offset(a), Some(high));
        assert!(v6.is_usable(a));
        let taken = set(&[high, high + 1]);
        assert_eq!(
            v6.lowest_free(&taken, Some((high, u128::MAX))),
            Some(high + 2)
        );
        let top = (1u128 << 64) - 2;
        assert_eq!(
            v6.lowest_free(&set(&[top - 1]), Some((top - 1, top))),
            Some(top)
        );
        assert_eq!(
            v6.lowest_free(&set(&[top - 1, top]), Some((top - 1, top))),
            None
        );
        let ranged =
            IpRange::parse("caa5::/64", Some("caa5::ffff:0:0:0"), None, &[], None).unwrap();
        assert_eq!(
            ranged.lowest_free(&BTreeSet::new(), None),
            Some(0xffffu128 << 48)
        );
    }

    #[test]
    fn lowest_free_table() {
        let g = rx("10.0.0.0/28", &["10.0.0.4/31"]); // usable 1..=14 minus 4,5
        type Case<'a> = (&'a [u128], Option<(u128, u128)>, Option<u128>);
        let cases: &[Case] = &[
            (&[], None, Some(1)),
            (&[1, 2, 3], None, Some(6)),
            (&[1, 3], None, Some(2)),
            (&[1, 2, 3, 6, 7], None, Some(8)),
            (&[2], Some((2, 14)), Some(3)),
            (&[], Some((4, 5)), None),
            (&[], Some((0, 0)), None),
            (&[], Some((15, 100)), None),
            (&[], Some((5, 3)), None),
            (&[14], Some((14, 14)), None),
            (&[1, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13], None, Some(14)),
            (&[1, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14], None, None),
            // Taken offsets outside the range are irrelevant.
            (&[0, 15, 99], None, Some(1)),
        ];
        for (taken, within, want) in cases {
            assert_eq!(
                g.lowest_free(&set(taken), *within),
                *want,
                "{taken:?} {within:?}"
            );
        }
    }

    #[test]
    fn exhaustion_in_order() {
        let g = IpRange::parse(
            "10.0.0.0/29",
            None,
            None,
            &["10.0.0.3".into()],
            Some(ip("10.0.0.1")),
        )
        .unwrap();
        let mut taken = BTreeSet::new();
        let mut got = Vec::new();
        while let Some(o) = g.lowest_free(&taken, None) {
            taken.insert(o);
            got.push(g.address(o).to_string());
        }
        assert_eq!(got, ["10.0.0.2", "10.0.0.4", "10.0.0.5", "10.0.0.6"]);
        assert_eq!(g.usable_count(), 4);
    }

    #[test]
    fn cost_does_not_depend_on_range_size() {
        // 10,000 taken offsets at the start of a /64, plus a /65-sized exclusion: answered by
        // walking the taken set once, never the range.
        let v6 = rx("fd00::/64", &["fd00::8000:0:0:0/65"]);
        let taken: BTreeSet<u128> = (1..=10_000).collect();
        assert_eq!(v6.lowest_free(&taken, None), Some(10_001));
        let top = (1u128 << 63) - 1;
        let taken: BTreeSet<u128> = (top - 9_999..=top).collect();
        assert_eq!(v6.lowest_free(&taken, Some((top - 9_999, u128::MAX))), None);
    }

    /// A small deterministic generator, so that the property loop needs no extra crate.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
    }

    #[test]
    fn lowest_free_is_never_excluded_taken_or_out_of_bounds() {
        let mut rng = Lcg(7);
        for round in 0..300 {
            let prefix = 24 + (rng.next() % 7) as u8; // /24 .. /30
            let size = 1u64 << (32 - prefix);
            let start = rng.next() % size;
            let end = rng.next() % size;
            let start_s = format!("10.9.{}.{}", (start >> 8) & 0xff, start & 0xff);
            let end_s = format!("10.9.{}.{}", (end >> 8) & 0xff, end & 0xff);
            let mut excludes = Vec::new();
            for _ in 0..(rng.next() % 5) {
                let p = prefix + (rng.next() % (33 - u64::from(prefix))) as u8;
                let at = rng.next() % size;
                excludes.push(format!("10.9.{}.{}/{p}", (at >> 8) & 0xff, at & 0xff));
            }
            let gw = rng.next() % size;
            let gw = ip(&format!("10.9.{}.{}", (gw >> 8) & 0xff, gw & 0xff));
            let range = format!("10.9.0.0/{prefix}");
            let g =
                IpRange::parse(&range, Some(&start_s), Some(&end_s), &excludes, Some(gw)).unwrap();
            let mut taken = BTreeSet::new();
            for _ in 0..(rng.next() % size) {
                taken.insert(u128::from(rng.next() % size));
            }
            let within = if rng.next().is_multiple_of(2) {
                None
            } else {
                let a = u128::from(rng.next() % size);
                Some((a, a + u128::from(rng.next() % size)))
            };
            let (lo, hi) = within.unwrap_or((0, u128::MAX));
            // Brute force.
            let want = (0..size as u128)
                .find(|&o| o >= lo && o <= hi && g.is_usable_offset(o) && !taken.contains(&o));
            let got = g.lowest_free(&taken, within);
            assert_eq!(
                got, want,
                "round {round}: {range} {excludes:?} {taken:?} {within:?}"
            );
            if let Some(o) = got {
                let a = g.address(o);
                assert!(g.is_usable(a) && a != gw && !taken.contains(&o));
                assert!(o != 0 && o != size as u128 - 1);
            }
            let count = (0..size as u128).filter(|&o| g.is_usable_offset(o)).count();
            assert_eq!(g.usable_count(), count as u128, "round {round}");
        }
    }

    #[test]
    fn pool_names() {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        assert_eq!(pool_name("", "", &net("10.0.0.0/8")), "10.0.0.0-8");
        assert_eq!(pool_name("test", "", &net("10.0.0.0/8")), "test-10.0.0.0-8");
        assert_eq!(
            pool_name("", "testnode", &net("10.0.0.0/8")),
            "testnode-10.0.0.0-8"
        );
        assert_eq!(
            pool_name("testnetwork", "testnode", &net("10.0.0.0/8")),
            "testnetwork-testnode-10.0.0.0-8"
        );
        assert_eq!(pool_name("", "", &net("caa5::/64")), "caa5---64");
        assert_eq!(normalize_range("10.0.0.0/8"), "10.0.0.0-8");
        assert_eq!(normalize_ip("", ip("10.10.0.1")), "10.10.0.1");
        assert_eq!(normalize_ip("net", ip("10.10.0.1")), "net-10.10.0.1");
        assert_eq!(normalize_ip("", ip("2001::")), "2001--0");
        assert_eq!(normalize_ip("", ip("2001::1")), "2001--1");
    }

    #[test]
    fn sloppy_parsing() {
        assert_eq!(parse_ip_sloppy("010.001.000.009"), Some(ip("10.1.0.9")));
        assert_eq!(parse_ip_sloppy("0000.0.0.0"), Some(ip("0.0.0.0")));
        assert_eq!(parse_ip_sloppy("256.0.0.1"), None);
        assert_eq!(parse_ip_sloppy("1.2.3"), None);
        assert_eq!(parse_ip_sloppy("1.2.3.-4"), None);
        assert_eq!(parse_ip_sloppy("1.2.3.4 "), None);
        assert_eq!(
            parse_cidr_sloppy("010.0.0.5/24").map(|(a, n)| (a, n.to_string())),
            Some((ip("10.0.0.5"), "10.0.0.0/24".into()))
        );
        assert_eq!(parse_cidr_sloppy("10.0.0.0/"), None);
        assert_eq!(parse_cidr_sloppy("10.0.0.0/+8"), None);
    }
}
