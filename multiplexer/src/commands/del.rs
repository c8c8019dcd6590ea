//! DEL: tear down every attachment of the container, from the cache when there is one, else from
//! what the configuration names. Never reports success without trying.

use plexus_cni::{CniError, ErrorCode};

use super::Context;
use crate::cache::{CacheError, CachedAttachment};
use crate::delegate::Delegate;
use crate::devices::device_info;
use crate::k8s::pod_networks::{self, PodRef};
use crate::{plan, resolve, teardown};

/// Runs DEL. A missing network namespace is tolerated; a repeated DEL succeeds.
pub(super) async fn run(ctx: &Context) -> Result<(), CniError> {
    let netns = existing_netns(ctx);
    let id = &ctx.env.container_id;
    let attachments = match ctx.cache.load(id) {
        Ok(Some(entry)) => entry.attachments,
        Ok(None) => {
            let attachments = without_cache(ctx).await?;
            let failures =
                teardown::detach_all(&attachments, |a| ctx.runtime_context(a, &netns)).await;
            device_info::remove_all(&attachments);
            if !failures.is_empty() {
                return Err(failures.to_cni_error(attachments.len()));
            }
            return Ok(());
        }
        Err(corrupt @ CacheError::Corrupt { .. }) => {
            // Tear down what the configuration names, but say that the cache was unreadable: the
            // file stays for inspection (GC removes it once the container is gone).
            let attachments = without_cache(ctx).await?;
            let failures =
                teardown::detach_all(&attachments, |a| ctx.runtime_context(a, &netns)).await;
            device_info::remove_all(&attachments);
            let mut error = CniError::from(corrupt);
            if !failures.is_empty() {
                error.details = failures.to_cni_error(attachments.len()).msg;
            }
            return Err(error);
        }
        Err(e) => return Err(e.into()),
    };
    let failures = teardown::detach_all(&attachments, |a| ctx.runtime_context(a, &netns)).await;
    device_info::remove_all(&attachments);
    if !failures.is_empty() {
        return Err(failures.to_cni_error(attachments.len()));
    }
    ctx.cache.remove(id)?;
    Ok(())
}

/// The namespace path to give delegates: empty when the runtime gave none or it is gone.
fn existing_netns(ctx: &Context) -> String {
    match &ctx.env.netns {
        Some(p) if p.exists() => p.to_string_lossy().into_owned(),
        _ => String::new(),
    }
}

/// The attachments of a container with no cache entry: the pod's networks as the API server
/// describes them now, else those the configuration names.
///
/// The usual reason for a missing entry is an earlier DEL that completed (containerd deletes
/// twice: at StopPodSandbox and at RemovePodSandbox), so an API server that cannot be asked is
/// no reason to fail: what the configuration names is torn down, and the DEL succeeds.
async fn without_cache(ctx: &Context) -> Result<Vec<CachedAttachment>, CniError> {
    if let (Some(pod), Ok(Some(api))) = (
        PodRef::from_cni_args(&ctx.env.args),
        crate::k8s::connect(&ctx.config).await,
    ) {
        let from_api = async {
            let info = pod_networks::load_pod(&api, pod, &ctx.config.runtime_config).await?;
            pod_networks::pod_delegates(&ctx.config, &api, &info).await
        };
        match from_api.await {
            Ok(delegates) => return planned(ctx, delegates),
            // The pod is gone, its networks cannot be planned (ADD would have failed the same
            // way before attaching anything), or the API server cannot be asked.
            Err(e) => tracing::info!("DEL without a cache entry: {}", e.msg),
        }
    }
    from_config(ctx)
}

/// The attachments the configuration names, for a container with no cache entry.
fn from_config(ctx: &Context) -> Result<Vec<CachedAttachment>, CniError> {
    let delegates = resolve::static_delegates(&ctx.config).map_err(|e| {
        let e = CniError::from(e);
        CniError::new(
            ErrorCode::CacheFailure,
            format!(
                "no usable cache entry for container {:?} and the configuration names no network to tear down: {}",
                ctx.env.container_id, e.msg
            ),
        )
    })?;
    planned(ctx, delegates)
}

/// The attachments ADD would have made of these delegates, with their device-info files.
fn planned(ctx: &Context, delegates: Vec<Delegate>) -> Result<Vec<CachedAttachment>, CniError> {
    let mut plan = plan::assign_ifnames(delegates, &ctx.env.ifname)?;
    device_info::offer(
        &mut plan,
        &ctx.config.device_info_dir,
        &ctx.env.container_id,
    );
    Ok(plan.iter().map(plan::Attachment::to_cached).collect())
}
