//! STATUS: Plexus is ready when the readiness file exists and every network it would attach
//! first says it is ready.

use plexus_cni::list;
use plexus_cni::{CniError, ErrorCode};

use crate::parse::Invocation;
use crate::{readiness, resolve};

/// Runs STATUS.
pub(super) async fn run(inv: &Invocation) -> Result<(), CniError> {
    if let Some(file) = &inv.config.readiness_indicator_file {
        if !file.exists() {
            let e = readiness::not_ready(file, None);
            return Err(CniError::new(ErrorCode::PluginNotAvailable, e.msg));
        }
    }
    let delegates = resolve::static_delegates(&inv.config).map_err(|e| {
        CniError::new(
            ErrorCode::PluginNotAvailable,
            format!("the default network is not available: {e}"),
        )
    })?;
    for d in &delegates {
        list::status(&d.network, &inv.plugin_dirs, inv.delegate_timeout)
            .await
            .map_err(|f| f.to_cni_error())?;
    }
    Ok(())
}
