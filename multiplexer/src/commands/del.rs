//! DEL: tear down every attachment of the container, from the cache when there is one, else from
//! what the configuration names (planned as ADD would have). Never reports success without
//! trying.

use std::path::PathBuf;

use plexus_cni::{CniError, ErrorCode};

use crate::cache::{CacheError, CachedAttachment};
use crate::execute::teardown;
use crate::k8s::pod_networks::{self, PodRef};
use crate::k8s::LazyApi;
use crate::parse::Invocation;
use crate::plan::{self, Delegate};
use crate::{record, resolve};

/// Runs DEL. A missing network namespace is tolerated; a repeated DEL succeeds.
pub(super) async fn run(inv: &Invocation) -> Result<(), CniError> {
    let env = inv.delegate_env(existing_netns(inv));
    let id = &inv.env.container_id;
    match inv.cache.load(id) {
        Ok(Some(entry)) => {
            teardown::detach_and_clean(&entry.attachments, &env).await?;
            inv.cache.remove(id)?;
            Ok(())
        }
        Ok(None) => {
            let attachments = without_cache(inv).await?;
            teardown::detach_and_clean(&attachments, &env).await
        }
        Err(corrupt @ CacheError::Corrupt { .. }) => {
            // Tear down what the configuration names, but say that the cache was unreadable: the
            // file stays for inspection (GC removes it once the container is gone).
            let attachments = without_cache(inv).await?;
            let torn_down = teardown::detach_and_clean(&attachments, &env).await;
            let mut error = CniError::from(corrupt);
            if let Err(incomplete) = torn_down {
                error.details = incomplete.msg;
            }
            Err(error)
        }
        Err(e) => Err(e.into()),
    }
}

/// The namespace path to give delegates: empty when the runtime gave none or it is gone.
fn existing_netns(inv: &Invocation) -> PathBuf {
    match &inv.env.netns {
        Some(p) if p.exists() => p.clone(),
        _ => PathBuf::new(),
    }
}

/// The attachments of a container with no cache entry: the pod's networks as the API server
/// describes them now, else those the configuration names.
///
/// The usual reason for a missing entry is an earlier DEL that completed (containerd deletes
/// twice: at StopPodSandbox and at RemovePodSandbox), so an API server that cannot be asked is
/// no reason to fail: what the configuration names is torn down, and the DEL succeeds.
async fn without_cache(inv: &Invocation) -> Result<Vec<CachedAttachment>, CniError> {
    let lazy = LazyApi::new(&inv.config);
    if let (Some(pod), Ok(Some(api))) = (PodRef::from_cni_args(&inv.env.args), lazy.get().await) {
        let from_api = async {
            let info = pod_networks::load_pod(api, pod, &inv.config.runtime_config).await?;
            pod_networks::pod_delegates(&inv.config, &lazy, &info, Vec::new()).await
        };
        match from_api.await {
            Ok(delegates) => return planned(inv, delegates),
            // The pod is gone, its networks cannot be planned (ADD would have failed the same
            // way before attaching anything), or the API server cannot be asked.
            Err(e) => tracing::info!("DEL without a cache entry: {}", e.msg),
        }
    }
    from_config(inv)
}

/// The attachments the configuration names, for a container with no cache entry.
fn from_config(inv: &Invocation) -> Result<Vec<CachedAttachment>, CniError> {
    let delegates = resolve::static_delegates(&inv.config).map_err(|e| {
        let e = CniError::from(e);
        CniError::new(
            ErrorCode::CacheFailure,
            format!(
                "no usable cache entry for container {:?} and the configuration names no network to tear down: {}",
                inv.env.container_id, e.msg
            ),
        )
    })?;
    planned(inv, delegates)
}

/// The attachments ADD would have made of these delegates, with their device-info files.
fn planned(inv: &Invocation, delegates: Vec<Delegate>) -> Result<Vec<CachedAttachment>, CniError> {
    let attachments = plan::attachments(delegates, inv.naming())?;
    Ok(attachments.iter().map(record::cached).collect())
}
