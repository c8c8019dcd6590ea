//! Finding the lowest free address of a range from what etcd says is taken, without reading
//! every taken key when the range is large and densely allocated.
//!
//! An ADD first reads one page of taken keys from the start of the range, and with it (in the
//! same transaction) the *number* of taken keys in intervals of doubling size from the start
//! ([`doubling`]). When the page has a gap, that is the answer. Otherwise the first interval
//! holding fewer keys than usable addresses has a gap; it is cut into [`SPLIT`] parts and
//! counted again until it is small ([`NARROW`]), and the keys are read from there. Counts only
//! guide where to read: the lowest free address is decided from keys actually read, and
//! whether it is really free is decided by etcd when the ADD takes it. (A count can only
//! mislead when addresses that are not usable, excluded after they were allocated, are held;
//! then a lower free address may be passed over, and exhaustion is always confirmed by a
//! full read.)

use std::collections::BTreeSet;

use etcd_client::KeyValue;

use super::keys;
use crate::range::IpRange;
use crate::store::StoreError;

/// Keys of the first page an ADD reads, and of the page read after a lost race.
pub const PROBE: i64 = 256;
/// Intervals are cut until they hold at most this many addresses.
pub const NARROW: u128 = 512;
/// Parts an interval is cut into per round trip.
pub const SPLIT: u128 = 64;
/// At most this many doubling intervals (etcd allows 128 operations per transaction).
const MAX_INTERVALS: usize = 100;

/// Intervals of offsets (inclusive) of `range` from its first usable offset: `size`, `2 size`,
/// `4 size`, ... addresses long, the last one ending at the last usable offset.
pub fn doubling(range: &IpRange, size: u128) -> Vec<(u128, u128)> {
    let (first, last) = range.bounds();
    let mut out = Vec::new();
    let mut lo = first;
    let mut size = size.max(1);
    while lo <= last {
        let mut hi = lo.saturating_add(size - 1).min(last);
        if out.len() + 1 == MAX_INTERVALS {
            hi = last;
        }
        out.push((lo, hi));
        match hi.checked_add(1) {
            Some(next) => lo = next,
            None => break,
        }
        size = size.saturating_mul(2);
    }
    out
}

/// `(lo, hi)` cut into at most [`SPLIT`] consecutive parts.
pub fn split((lo, hi): (u128, u128)) -> Vec<(u128, u128)> {
    let part = (hi - lo) / SPLIT + 1;
    let mut out = Vec::new();
    let mut start = lo;
    loop {
        let end = start.saturating_add(part - 1).min(hi);
        out.push((start, end));
        if end == hi {
            return out;
        }
        start = end + 1;
    }
}

/// How many usable offsets `[lo, hi]` holds: inside the bounds and not excluded.
pub fn usable_in(range: &IpRange, lo: u128, hi: u128) -> u128 {
    let (first, last) = range.bounds();
    let (lo, hi) = (lo.max(first), hi.min(last));
    if lo > hi {
        return 0;
    }
    let excluded: u128 = range
        .excluded()
        .iter()
        .map(|&(a, b)| {
            let (a, b) = (a.max(lo), b.min(hi));
            if a > b {
                0
            } else {
                b - a + 1
            }
        })
        .sum();
    (hi - lo + 1) - excluded
}

/// The first interval that holds fewer taken keys (`counts`, in the same order) than usable
/// addresses.
pub fn first_gap(
    range: &IpRange,
    intervals: &[(u128, u128)],
    counts: &[i64],
) -> Option<(u128, u128)> {
    intervals
        .iter()
        .zip(counts)
        .find(|(&(lo, hi), &count)| (count.max(0) as u128) < usable_in(range, lo, hi))
        .map(|(interval, _)| *interval)
}

/// What to do next in the search of a free address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try to take this offset.
    Free(u128),
    /// Read the taken addresses from this offset on: the ones known are all taken.
    ReadFrom(u128),
    /// Nothing is free.
    Exhausted,
}

/// The taken offsets known of a range, from `base` (everything below is taken, or assumed to
/// be) up to `known` (inclusive), or to the end once `complete`.
#[derive(Debug)]
pub struct Scan<'a> {
    range: &'a IpRange,
    base: u128,
    taken: BTreeSet<u128>,
    known: Option<u128>,
    complete: bool,
}

impl<'a> Scan<'a> {
    /// Nothing known yet, from `base` on.
    pub fn new(range: &'a IpRange, base: u128) -> Scan<'a> {
        Scan {
            range,
            base,
            taken: BTreeSet::new(),
            known: None,
            complete: false,
        }
    }

    /// Where the scan starts.
    pub fn base(&self) -> u128 {
        self.base
    }

    /// Takes in a page of taken keys read from offset `from` (`base`, or within what is
    /// known): what it covers replaces what was known there. `more` says the page was cut.
    pub fn absorb(&mut self, from: u128, kvs: &[KeyValue], more: bool) -> Result<(), StoreError> {
        let offsets = self.offsets(kvs)?;
        let upto = match offsets.last() {
            Some(last) if more => *last,
            _ => u128::MAX,
        };
        self.absorb_offsets(from, upto, offsets);
        Ok(())
    }

    /// Takes in every taken key of the interval `(from, upto)` of offsets.
    pub fn absorb_interval(
        &mut self,
        (from, upto): (u128, u128),
        kvs: &[KeyValue],
    ) -> Result<(), StoreError> {
        let offsets = self.offsets(kvs)?;
        let upto = if upto >= self.range.bounds().1 {
            u128::MAX
        } else {
            upto
        };
        self.absorb_offsets(from, upto, offsets);
        Ok(())
    }

    fn offsets(&self, kvs: &[KeyValue]) -> Result<Vec<u128>, StoreError> {
        let mut offsets = Vec::with_capacity(kvs.len());
        for kv in kvs {
            let offset = keys::key_address(kv.key())
                .and_then(|ip| self.range.offset(ip))
                .ok_or_else(|| StoreError::Corrupt {
                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                    reason: "not an address key of the range".into(),
                })?;
            offsets.push(offset);
        }
        Ok(offsets)
    }

    /// What is taken in `[from, upto]` (to the end for `u128::MAX`) is exactly `offsets`.
    fn absorb_offsets(&mut self, from: u128, upto: u128, offsets: Vec<u128>) {
        self.taken.retain(|o| *o < from || *o > upto);
        self.taken.extend(offsets);
        if upto == u128::MAX {
            self.complete = true;
        } else {
            self.known = Some(self.known.map_or(upto, |k| k.max(upto)));
        }
    }

    /// Records that `offset` is taken (a lost race).
    pub fn mark_taken(&mut self, offset: u128) {
        self.taken.insert(offset);
    }

    /// The lowest free offset known, or what to read to find one.
    pub fn next(&self) -> Next {
        let hi = match (self.complete, self.known) {
            (true, _) => u128::MAX,
            (false, Some(known)) => known,
            (false, None) => return Next::ReadFrom(self.base),
        };
        match self.range.lowest_free(&self.taken, Some((self.base, hi))) {
            Some(offset) => Next::Free(offset),
            None if self.complete => Next::Exhausted,
            None => Next::ReadFrom(hi + 1),
        }
    }

    /// The `n`th free offset after the free offset `lowest` within what is known (the last
    /// one there is when there are fewer).
    pub fn nth_free_after(&self, lowest: u128, n: u32) -> u128 {
        let hi = if self.complete {
            u128::MAX
        } else {
            self.known.unwrap_or(lowest)
        };
        let mut offset = lowest;
        for _ in 0..n {
            let Some(from) = offset.checked_add(1) else {
                break;
            };
            match self.range.lowest_free(&self.taken, Some((from, hi))) {
                Some(next) => offset = next,
                None => break,
            }
        }
        offset
    }

    /// The error of a range found full.
    pub fn exhausted(&self) -> StoreError {
        let used = self
            .taken
            .iter()
            .filter(|o| self.range.is_usable_offset(**o))
            .count() as u128;
        StoreError::Exhausted {
            range: self.range.cidr().to_string(),
            used,
            size: self.range.usable_count(),
        }
    }
}

/// How many free addresses an allocator that lost `lost` races in a row spreads over: 4, 8,
/// 16, 32, then 64.
pub fn spread_window(lost: u32) -> u32 {
    4u32 << lost.saturating_sub(1).min(4)
}

/// A number in `[0, n)` (`n` > 0) that differs between processes and calls; no need for a
/// good generator, only for allocators not to agree.
pub fn random_below(n: u32) -> u32 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    (hasher.finish() % u64::from(n.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(s: &str, exclude: &[&str]) -> IpRange {
        let exclude: Vec<String> = exclude.iter().map(|s| s.to_string()).collect();
        IpRange::parse(s, None, None, &exclude, None).unwrap()
    }

    #[test]
    fn doubling_intervals_cover_the_range_in_order() {
        let r = range("10.0.0.0/24", &[]);
        assert_eq!(
            doubling(&r, 16),
            [(1, 16), (17, 48), (49, 112), (113, 240), (241, 254)]
        );
        let v6 = range("fd00::/64", &[]);
        let intervals = doubling(&v6, 256);
        assert_eq!(intervals[0], (1, 256));
        assert_eq!(intervals.last().unwrap().1, (1u128 << 64) - 2);
        assert!(intervals.windows(2).all(|w| w[0].1 + 1 == w[1].0));
        assert!(intervals.len() < MAX_INTERVALS);
        let all = range("::/0", &[]);
        let intervals = doubling(&all, 1);
        assert!(intervals.len() <= MAX_INTERVALS);
        assert_eq!(intervals.last().unwrap().1, u128::MAX - 1);
    }

    #[test]
    fn split_cuts_into_at_most_64_consecutive_parts() {
        let parts = split((100, 100 + 8191));
        assert_eq!(parts.len(), 64);
        assert_eq!(parts[0], (100, 227));
        assert_eq!(parts.last().unwrap().1, 100 + 8191);
        assert_eq!(split((5, 7)), [(5, 5), (6, 6), (7, 7)]);
        let huge = split((1, u128::MAX - 1));
        assert!(huge.len() <= 64 && huge.last().unwrap().1 == u128::MAX - 1);
    }

    #[test]
    fn usable_counts_leave_out_excludes_and_bounds() {
        let r = range("10.0.0.0/24", &["10.0.0.10/31", "10.0.0.100"]);
        assert_eq!(usable_in(&r, 0, 255), 254 - 3);
        assert_eq!(usable_in(&r, 9, 12), 2);
        assert_eq!(usable_in(&r, 255, 255), 0);
        let intervals = doubling(&r, 16);
        assert_eq!(
            first_gap(&r, &intervals, &[14, 31, 0, 0, 0]),
            Some((17, 48))
        );
        assert_eq!(first_gap(&r, &intervals, &[14, 32, 63, 128, 14]), None);
    }

    #[test]
    fn spreading_stays_small() {
        assert_eq!(
            (1..=7).map(spread_window).collect::<Vec<_>>(),
            [4, 8, 16, 32, 64, 64, 64]
        );
        assert!((0..100).all(|_| random_below(4) < 4));
    }
}
