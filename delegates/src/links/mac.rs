//! Hardware addresses as text: `aa:bb:cc:dd:ee:ff`.

/// Parses `aa:bb:cc:dd:ee:ff` (either case) into six bytes.
pub fn parse_mac(mac: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = mac.split(':');
    for byte in &mut out {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Formats a hardware address as lowercase `aa:bb:cc:dd:ee:ff`.
pub(super) fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_is_lowercase_and_colon_separated() {
        assert_eq!(
            format_mac(&[0xAA, 0x0b, 0, 1, 0xff, 0x10]),
            "aa:0b:00:01:ff:10"
        );
        assert_eq!(format_mac(&[]), "");
    }

    #[test]
    fn macs_parse_in_either_case() {
        assert_eq!(
            parse_mac("AA:0b:00:01:ff:10"),
            Some([0xaa, 0x0b, 0, 1, 0xff, 0x10])
        );
        for bad in [
            "",
            "aa:bb",
            "aa:bb:cc:dd:ee:ff:00",
            "aa:bb:cc:dd:ee:f",
            "zz:bb:cc:dd:ee:ff",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}
