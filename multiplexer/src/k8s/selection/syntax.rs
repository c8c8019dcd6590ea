//! The syntax checks of network selections: interface names, Kubernetes names, addresses.

use std::net::IpAddr;

use ipnet::IpNet;

use super::MAX_IFNAME_LEN;

/// characters are refused too).
pub(super) fn check_ifname(ifname: &str) -> Result<(), String> {
    if ifname.len() > MAX_IFNAME_LEN {
        return Err(format!(
            "interface name {ifname:?} is longer than {MAX_IFNAME_LEN} bytes"
        ));
    }
    if ifname
        .chars()
        .any(|c| c == '/' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "interface name {ifname:?} contains '/' or white space"
        ));
    }
    Ok(())
}

/// True for a DNS-1123 label: 1 to 63 lower-case letters, digits and `-`, starting and ending
/// with a letter or digit (namespaces, and names in the short annotation form).
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// True for a DNS-1123 subdomain: at most 253 characters of dot-separated DNS-1123 labels (the
/// rule for the names of most Kubernetes objects, NetworkAttachmentDefinitions included).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// True when `s` is an IP address, or an IP address with a prefix length (`10.1.1.11/24`).
pub(super) fn is_ip_or_cidr(s: &str) -> bool {
    if s.contains('/') {
        s.parse::<IpNet>().is_ok()
    } else {
        s.parse::<IpAddr>().is_ok()
    }
}

/// Parses a hardware address as Go's `net.ParseMAC` does: 6 (EUI-48), 8 (EUI-64) or 20
/// (IP over InfiniBand) bytes, written as hex pairs separated by `:` or `-`
/// (`00:00:5e:00:53:01`), or as groups of four hex digits separated by `.` (`0000.5e00.5301`).
pub fn parse_hardware_addr(s: &str) -> Option<Vec<u8>> {
    let valid_len = |n: usize| matches!(n, 6 | 8 | 20);
    let b = s.as_bytes();
    if b.len() < 14 {
        return None;
    }
    let hex = |pair: &[u8]| -> Option<u8> {
        if pair.len() != 2 || !pair.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()
    };
    if b[2] == b':' || b[2] == b'-' {
        let groups: Vec<&[u8]> = b.split(|c| *c == b[2]).collect();
        if !valid_len(groups.len()) {
            return None;
        }
        groups.into_iter().map(hex).collect()
    } else if b[4] == b'.' {
        let groups: Vec<&[u8]> = b.split(|c| *c == b'.').collect();
        if !valid_len(groups.len() * 2) || groups.iter().any(|g| g.len() != 4) {
            return None;
        }
        let mut out = Vec::with_capacity(groups.len() * 2);
        for g in groups {
            out.push(hex(&g[..2])?);
            out.push(hex(&g[2..])?);
        }
        Some(out)
    } else {
        None
    }
}
