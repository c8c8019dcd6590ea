//! How the modules' errors are reported as CNI errors: a wrong `deviceID` (no such VF, no netdev,
//! no DPDK driver) is an invalid configuration (7); sysfs, netlink, PF and state failures are
//! I/O failures (5).

use plexus_cni::links::LinkError;
use plexus_cni::{CniError, ErrorCode};

use crate::pf::PfError;
use crate::state::StateError;
use crate::sysfs::SysfsError;

impl From<SysfsError> for CniError {
    fn from(e: SysfsError) -> Self {
        let code = match e {
            SysfsError::Io { .. } => ErrorCode::IoFailure,
            _ => ErrorCode::InvalidNetworkConfig,
        };
        CniError::new(code, e.to_string())
    }
}

impl From<PfError> for CniError {
    fn from(e: PfError) -> Self {
        CniError::new(ErrorCode::IoFailure, format!("PF: {e}"))
    }
}

impl From<StateError> for CniError {
    fn from(e: StateError) -> Self {
        CniError::new(ErrorCode::IoFailure, e.to_string())
    }
}

/// A netlink failure, with what was being done.
pub fn link(context: &str, e: LinkError) -> CniError {
    CniError::new(ErrorCode::IoFailure, format!("{context}: {e}"))
}
