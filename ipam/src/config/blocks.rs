//! The Kubernetes store's block sizes: `block_size_v4`, `block_size_v6` and Whereabouts's
//! `node_slice_size`.

use plexus_cni::CniError;

use super::raw::{prefix, RawIpam};
use super::{invalid, MAX_BLOCK_ADDRESSES, MIN_BLOCK_ADDRESSES};
use crate::range::IpRange;

/// The block sizes: `block_size_v4` and `block_size_v6`, and `node_slice_size` mapped onto
/// the block size of the ranges' family. Refused (code 7, naming the key):
///
/// * a value that is not a prefix length (`"/26"`, `"26"` or `26`), or a block of fewer than
///   [`MIN_BLOCK_ADDRESSES`] or more than [`MAX_BLOCK_ADDRESSES`] addresses;
/// * `node_slice_size` with ranges of both families (one slice size cannot fit both), larger
///   than a range (a slice is part of its range), or disagreeing with the family's
///   `block_size_v4`/`block_size_v6`.
///
/// A block larger than a range is allowed for `block_size_v4`/`block_size_v6` (the range then
/// lives in the one block that contains it, as with the defaults).
pub fn block_sizes(
    ipam: &RawIpam,
    ranges: &[IpRange],
) -> Result<(Option<u8>, Option<u8>), CniError> {
    let mut v4 = checked(
        prefix(&ipam.block_size_v4, "ipam.block_size_v4")?,
        false,
        "ipam.block_size_v4",
    )?;
    let mut v6 = checked(
        prefix(&ipam.block_size_v6, "ipam.block_size_v6")?,
        true,
        "ipam.block_size_v6",
    )?;
    let Some(slice) = prefix(&ipam.node_slice_size, "ipam.node_slice_size")? else {
        return Ok((v4, v6));
    };
    let has_v4 = ranges.iter().any(|r| r.is_ipv4());
    let has_v6 = ranges.iter().any(|r| !r.is_ipv4());
    if has_v4 && has_v6 {
        return Err(invalid(format!(
            "ipam.node_slice_size /{slice} cannot apply to both IPv4 and IPv6 ranges: \
             set block_size_v4 and block_size_v6 instead"
        )));
    }
    let (explicit, key, v6_family) = if has_v6 {
        (&mut v6, "block_size_v6", true)
    } else {
        (&mut v4, "block_size_v4", false)
    };
    check_block_prefix(slice, v6_family, "ipam.node_slice_size")?;
    if let Some(range) = ranges.iter().find(|r| slice < r.prefix_len()) {
        return Err(invalid(format!(
            "ipam.node_slice_size /{slice} is larger than the range {}: a node's slice must \
             lie inside the range",
            range.cidr()
        )));
    }
    match *explicit {
        Some(given) if given != slice => Err(invalid(format!(
            "ipam.node_slice_size /{slice} disagrees with ipam.{key} /{given}: give one of them"
        ))),
        _ => {
            *explicit = Some(slice);
            Ok((v4, v6))
        }
    }
}

/// A block size of one family, checked.
fn checked(prefix: Option<u8>, v6: bool, at: &str) -> Result<Option<u8>, CniError> {
    if let Some(prefix) = prefix {
        check_block_prefix(prefix, v6, at)?;
    }
    Ok(prefix)
}

/// Refuses a block prefix whose block holds too few or too many addresses.
fn check_block_prefix(prefix: u8, v6: bool, at: &str) -> Result<(), CniError> {
    let bits: u8 = if v6 { 128 } else { 32 };
    let min_prefix = bits - MAX_BLOCK_ADDRESSES.ilog2() as u8;
    let max_prefix = bits - MIN_BLOCK_ADDRESSES.ilog2() as u8;
    if (min_prefix..=max_prefix).contains(&prefix) {
        return Ok(());
    }
    let family = if v6 { "IPv6" } else { "IPv4" };
    Err(invalid(format!(
        "{at}: /{prefix} is not a valid {family} block size: blocks hold {MIN_BLOCK_ADDRESSES} \
         to {MAX_BLOCK_ADDRESSES} addresses (/{max_prefix} to /{min_prefix})"
    )))
}
