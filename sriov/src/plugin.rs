//! The plugin: CNI commands dispatched to [`add`](crate::add), [`del`](crate::del) and
//! [`check`](crate::check), with the PF control chosen from the environment.

use std::io::{Read, Write};

use plexus_cni::skel::{self, Plugin, Request};
use plexus_cni::{CniError, ErrorCode, SpecVersion};
use serde_json::Value;

use crate::pf::{self, PfControl};

/// The versions plexus-sriov speaks (its results always carry `interfaces`).
pub const SUPPORTED_VERSIONS: [&str; 4] = ["0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The SR-IOV plugin.
pub struct SriovPlugin {
    pf: Box<dyn PfControl>,
}

impl SriovPlugin {
    /// A plugin using `pf` for the PF-side settings.
    pub fn new(pf: Box<dyn PfControl>) -> Self {
        SriovPlugin { pf }
    }
}

/// Refuses requests older than 0.3.1.
fn supported(req: &Request) -> Result<(), CniError> {
    if req.version >= SpecVersion::V0_3_1 {
        Ok(())
    } else {
        Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            format!(
                "plexus-sriov speaks CNI {}, not {}",
                SUPPORTED_VERSIONS.join(", "),
                req.version.as_str()
            ),
        ))
    }
}

impl Plugin for SriovPlugin {
    fn add(&self, req: &Request) -> Result<Value, CniError> {
        supported(req)?;
        crate::add::add(self.pf.as_ref(), req)
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        supported(req)?;
        crate::del::del(self.pf.as_ref(), req)
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        supported(req)?;
        crate::check::check(req)
    }

    fn status(&self, _req: &Request) -> Result<(), CniError> {
        Ok(())
    }

    fn gc(&self, _req: &Request) -> Result<(), CniError> {
        Ok(())
    }
}

/// Runs the plugin on this process and returns the exit code. VERSION is answered here with
/// [`SUPPORTED_VERSIONS`]; every other command goes through `plexus_cni::skel`.
pub fn run() -> i32 {
    if std::env::var("CNI_COMMAND").as_deref() == Ok("VERSION") {
        let mut input = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut input);
        let asked = serde_json::from_slice::<Value>(&input)
            .ok()
            .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
            .unwrap_or_else(|| "1.1.0".into());
        let reply =
            serde_json::json!({"cniVersion": asked, "supportedVersions": SUPPORTED_VERSIONS});
        let _ = writeln!(std::io::stdout(), "{reply}");
        return 0;
    }
    skel::run(&SriovPlugin::new(pf::from_env()))
}
