//! Why a result could not be read, and the CNI code it is reported with.

use thiserror::Error;

use crate::error::ErrorCode;
use crate::version::UnknownVersion;

/// Why a result could not be read.
#[derive(Debug, Error)]
pub enum ResultError {
    /// The bytes are not JSON, the result is not a JSON object, or a field has the wrong JSON type.
    #[error("failed to decode CNI result: {0}")]
    Decode(#[from] serde_json::Error),
    /// The result's `cniVersion` is not a version Plexus supports.
    #[error("CNI result: {0}")]
    UnknownVersion(#[from] UnknownVersion),
    /// A field has the right JSON type but an invalid value, such as an address that does not parse.
    #[error("invalid CNI result: {field}: {}", problem.describe(value))]
    Invalid {
        /// Where the bad value is, e.g. `ips[0].address`.
        field: String,
        /// The value as written.
        value: String,
        /// What is wrong with it.
        problem: InvalidValue,
    },
}

/// What is wrong with a value of a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidValue {
    /// Not an address with a prefix length, like `10.1.0.5/16`.
    NotAPrefix,
    /// Not an IP address.
    NotAnAddress,
    /// An address of the other family in a 0.1.0/0.2.0 `ip4` or `ip6` block; the family
    /// expected, 4 or 6.
    WrongFamily(u8),
}

impl InvalidValue {
    /// The problem, said of `value`.
    fn describe(self, value: &str) -> String {
        match self {
            InvalidValue::NotAPrefix => {
                format!("{value:?} is not an address with a prefix length, like 10.1.0.5/16")
            }
            InvalidValue::NotAnAddress => format!("{value:?} is not an IP address"),
            InvalidValue::WrongFamily(family) => format!("{value} is not an IPv{family} address"),
        }
    }
}

impl ResultError {
    /// The CNI error code this error is reported with: 1 for an unknown version, 6 (decoding
    /// failure) otherwise.
    pub fn code(&self) -> ErrorCode {
        match self {
            ResultError::UnknownVersion(_) => ErrorCode::IncompatibleVersion,
            ResultError::Decode(_) | ResultError::Invalid { .. } => ErrorCode::DecodingFailure,
        }
    }
}
