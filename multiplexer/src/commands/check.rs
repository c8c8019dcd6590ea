//! CHECK: verify every cached attachment of the container, not only the static ones.

use plexus_cni::list;
use plexus_cni::{CniError, CniResult, ErrorCode};

use super::add::network_of;
use super::Context;

/// Runs CHECK over each attachment in ADD order, with its ADD result as `prevResult`.
pub(super) async fn run(ctx: &Context) -> Result<(), CniError> {
    let id = &ctx.env.container_id;
    let entry = ctx.cache.load(id)?.ok_or_else(|| {
        CniError::new(
            ErrorCode::UnknownContainer,
            format!("no attachments are recorded for container {id:?}"),
        )
    })?;
    let netns = ctx.netns();
    for attachment in &entry.attachments {
        let network = network_of(attachment)?;
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
        list::check(&network, &ctx.runtime_context(attachment, &netns), &result)
            .await
            .map_err(|f| f.to_cni_error())?;
    }
    Ok(())
}
