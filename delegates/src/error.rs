//! The CNI error object and the error codes Plexus uses.
//!
//! Codes 1–99 are the specification's. Plexus's own codes start at 100; every one is listed in
//! [`ErrorCode`] and in the README.

use serde::{Deserialize, Serialize};

/// An error code carried in a CNI error object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 1: incompatible CNI version.
    IncompatibleVersion,
    /// 2: unsupported field in the network configuration.
    UnsupportedField,
    /// 3: container unknown or does not exist.
    UnknownContainer,
    /// 4: invalid necessary environment variables.
    InvalidEnvironment,
    /// 5: I/O failure.
    IoFailure,
    /// 6: failed to decode content.
    DecodingFailure,
    /// 7: invalid network config.
    InvalidNetworkConfig,
    /// 11: try again later.
    TryAgainLater,
    /// 50: the plugin is not available (STATUS).
    PluginNotAvailable,
    /// 51: not available, and existing containers may have limited connectivity (STATUS).
    PluginNotAvailableLimitedConnectivity,
    /// 100: a delegate plugin failed; the message names the network and interface.
    DelegateFailed,
    /// 101: a delegate plugin binary was not found in the plugin path.
    PluginNotFound,
    /// 102: a delegate plugin did not answer within its timeout.
    DelegateTimeout,
    /// 103: a requested interface name is already used in the pod.
    InterfaceNameConflict,
    /// 104: Plexus's attachment cache could not be read or written.
    CacheFailure,
    /// 105: the readiness indicator file did not appear in time.
    NotReady,
    /// 106: DEL, GC or rollback could not tear every attachment down; each failure is listed.
    TeardownIncomplete,
    /// 107: the Kubernetes API refused a request (401, 403, 422, …); the message names it.
    ApiRefused,
    /// 120: every usable address of an IPAM range is allocated.
    PoolExhausted,
    /// 121: the IPAM datastore answered with an error.
    IpamBackendFailed,
    /// 122: an IPAM record in the datastore could not be read.
    IpamCorruptRecord,
    /// Any other code, as received from a delegate.
    Other(u32),
}

impl ErrorCode {
    /// The numeric code.
    pub fn code(self) -> u32 {
        match self {
            ErrorCode::IncompatibleVersion => 1,
            ErrorCode::UnsupportedField => 2,
            ErrorCode::UnknownContainer => 3,
            ErrorCode::InvalidEnvironment => 4,
            ErrorCode::IoFailure => 5,
            ErrorCode::DecodingFailure => 6,
            ErrorCode::InvalidNetworkConfig => 7,
            ErrorCode::TryAgainLater => 11,
            ErrorCode::PluginNotAvailable => 50,
            ErrorCode::PluginNotAvailableLimitedConnectivity => 51,
            ErrorCode::DelegateFailed => 100,
            ErrorCode::PluginNotFound => 101,
            ErrorCode::DelegateTimeout => 102,
            ErrorCode::InterfaceNameConflict => 103,
            ErrorCode::CacheFailure => 104,
            ErrorCode::NotReady => 105,
            ErrorCode::TeardownIncomplete => 106,
            ErrorCode::ApiRefused => 107,
            ErrorCode::PoolExhausted => 120,
            ErrorCode::IpamBackendFailed => 121,
            ErrorCode::IpamCorruptRecord => 122,
            ErrorCode::Other(c) => c,
        }
    }

    /// The code for a number.
    pub fn from_code(code: u32) -> Self {
        match code {
            1 => ErrorCode::IncompatibleVersion,
            2 => ErrorCode::UnsupportedField,
            3 => ErrorCode::UnknownContainer,
            4 => ErrorCode::InvalidEnvironment,
            5 => ErrorCode::IoFailure,
            6 => ErrorCode::DecodingFailure,
            7 => ErrorCode::InvalidNetworkConfig,
            11 => ErrorCode::TryAgainLater,
            50 => ErrorCode::PluginNotAvailable,
            51 => ErrorCode::PluginNotAvailableLimitedConnectivity,
            100 => ErrorCode::DelegateFailed,
            101 => ErrorCode::PluginNotFound,
            102 => ErrorCode::DelegateTimeout,
            103 => ErrorCode::InterfaceNameConflict,
            104 => ErrorCode::CacheFailure,
            105 => ErrorCode::NotReady,
            106 => ErrorCode::TeardownIncomplete,
            107 => ErrorCode::ApiRefused,
            120 => ErrorCode::PoolExhausted,
            121 => ErrorCode::IpamBackendFailed,
            122 => ErrorCode::IpamCorruptRecord,
            other => ErrorCode::Other(other),
        }
    }
}

/// The error object a CNI plugin prints on stdout when it fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniError {
    /// The CNI version of the request (the one the error is written in).
    #[serde(
        rename = "cniVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub cni_version: String,
    /// The numeric error code.
    pub code: u32,
    /// A short message.
    #[serde(default)]
    pub msg: String,
    /// Longer details, when there are any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        CniError {
            cni_version: String::new(),
            code: code.code(),
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// The same error with details added.
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// The error's code.
    pub fn error_code(&self) -> ErrorCode {
        ErrorCode::from_code(self.code)
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.msg, self.code)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for c in [
            1, 2, 3, 4, 5, 6, 7, 11, 50, 51, 100, 101, 102, 103, 104, 105, 106, 999,
        ] {
            assert_eq!(ErrorCode::from_code(c).code(), c);
        }
    }

    #[test]
    fn serializes_as_the_spec_says() {
        let mut e = CniError::new(ErrorCode::InvalidEnvironment, "missing CNI_IFNAME");
        e.cni_version = "1.0.0".into();
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cniVersion":"1.0.0","code":4,"msg":"missing CNI_IFNAME"})
        );
    }
}
