//! CNI specification versions and what each of them allows.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// A version of the CNI specification that Plexus speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SpecVersion {
    /// 0.1.0: `ip4`/`ip6` results.
    V0_1_0,
    /// 0.2.0: `ip4`/`ip6` results.
    V0_2_0,
    /// 0.3.0: `interfaces`/`ips` results with `ips[].version`.
    V0_3_0,
    /// 0.3.1: as 0.3.0.
    V0_3_1,
    /// 0.4.0: adds CHECK.
    V0_4_0,
    /// 1.0.0: `ips[].version` removed.
    V1_0_0,
    /// 1.1.0: adds STATUS, GC and new optional result fields.
    V1_1_0,
}

/// Every version Plexus accepts, oldest first, as the VERSION command reports them.
pub const SUPPORTED_VERSIONS: [&str; 7] = [
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// The newest version Plexus implements.
pub const LATEST: SpecVersion = SpecVersion::V1_1_0;

/// A version string that is not one of [`SUPPORTED_VERSIONS`].
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("unsupported CNI version {0:?} (supported: {supported})", supported = SUPPORTED_VERSIONS.join(", "))]
pub struct UnknownVersion(pub String);

impl SpecVersion {
    /// Every version, oldest first.
    pub const ALL: [SpecVersion; 7] = [
        SpecVersion::V0_1_0,
        SpecVersion::V0_2_0,
        SpecVersion::V0_3_0,
        SpecVersion::V0_3_1,
        SpecVersion::V0_4_0,
        SpecVersion::V1_0_0,
        SpecVersion::V1_1_0,
    ];

    /// The version as it is written in JSON.
    pub fn as_str(self) -> &'static str {
        SUPPORTED_VERSIONS[self as usize]
    }

    /// True for 0.1.0 and 0.2.0, whose results use `ip4`/`ip6`.
    pub fn is_legacy(self) -> bool {
        self <= SpecVersion::V0_2_0
    }

    /// True for 0.3.x and 0.4.0, whose `ips[]` entries carry `version`.
    pub fn has_ip_version_field(self) -> bool {
        (SpecVersion::V0_3_0..=SpecVersion::V0_4_0).contains(&self)
    }

    /// CHECK exists from 0.4.0 on.
    pub fn has_check(self) -> bool {
        self >= SpecVersion::V0_4_0
    }

    /// DEL receives `prevResult` from 0.4.0 on.
    pub fn has_prev_result_on_del(self) -> bool {
        self >= SpecVersion::V0_4_0
    }

    /// STATUS and GC exist from 1.1.0 on.
    pub fn has_status_and_gc(self) -> bool {
        self >= SpecVersion::V1_1_0
    }
}

impl FromStr for SpecVersion {
    type Err = UnknownVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SUPPORTED_VERSIONS
            .iter()
            .position(|v| *v == s)
            .map(|i| SpecVersion::ALL[i])
            .ok_or_else(|| UnknownVersion(s.to_string()))
    }
}

impl fmt::Display for SpecVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for SpecVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for SpecVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Picks the version a configuration list runs at: the highest of `cniVersion` and `cniVersions`
/// that Plexus supports, as libcni does. Versions Plexus does not know are ignored.
pub fn negotiate<'a>(
    cni_version: Option<&'a str>,
    cni_versions: impl IntoIterator<Item = &'a str>,
) -> Option<SpecVersion> {
    cni_version
        .into_iter()
        .chain(cni_versions)
        .filter_map(|v| v.parse().ok())
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_version() {
        for v in SpecVersion::ALL {
            assert_eq!(v.as_str().parse::<SpecVersion>().unwrap(), v);
        }
        assert!("1.2.0".parse::<SpecVersion>().is_err());
        assert!("".parse::<SpecVersion>().is_err());
    }

    #[test]
    fn negotiation_takes_the_highest_known() {
        assert_eq!(
            negotiate(Some("0.4.0"), ["1.0.0", "9.9.9"]),
            Some(SpecVersion::V1_0_0)
        );
        assert_eq!(negotiate(None, []), None);
    }
}
