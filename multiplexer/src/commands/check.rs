//! CHECK: verify every cached attachment of the container, not only the static ones.

use plexus_cni::list;
use plexus_cni::{CniError, CniResult, ErrorCode};

use crate::parse::Invocation;

/// Runs CHECK over each attachment in ADD order, with its ADD result as `prevResult`.
pub(super) async fn run(inv: &Invocation) -> Result<(), CniError> {
    let id = &inv.env.container_id;
    let entry = inv.cache.load(id)?.ok_or_else(|| {
        CniError::new(
            ErrorCode::UnknownContainer,
            format!("no attachments are recorded for container {id:?}"),
        )
    })?;
    let env = inv.delegate_env(inv.netns());
    for attachment in &entry.attachments {
        let network = attachment.network_config()?;
        let result = attachment
            .result
            .as_ref()
            .and_then(|r| CniResult::from_value(r, network.version).ok())
            .ok_or_else(|| {
                CniError::new(
                    ErrorCode::CacheFailure,
                    format!(
                        "no ADD result is recorded for {} ({}): the ADD did not complete",
                        attachment.ifname, attachment.network
                    ),
                )
            })?;
        list::check(&network, &env.for_cached(attachment), &result)
            .await
            .map_err(|f| f.to_cni_error())?;
    }
    Ok(())
}
