//! ADD: attach the pod to every network in order, primary first; on any failure tear down what
//! was attempted and report the failure.

use std::collections::HashSet;
use std::path::Path;

use plexus_cni::config::NetworkConfigList;
use plexus_cni::list::{self, PluginFailure};
use plexus_cni::{CniError, CniResult, ErrorCode};
use serde_json::Value;

use super::Context;
use crate::cache::{CacheEntry, CacheError, CachedAttachment, CACHE_KIND};
use crate::devices::device_info;
use crate::k8s::client::KubeApi;
use crate::k8s::pod_networks::{self, PodInfo, PodRef};
use crate::plan::{self, Attachment};
use crate::{default_routes, links, network_status, readiness, resolve, teardown};

/// Runs ADD and returns the primary network's result in Plexus's own version.
pub(super) async fn run(ctx: &Context) -> Result<Value, CniError> {
    if let Some(file) = &ctx.config.readiness_indicator_file {
        readiness::wait_for(file, ctx.config.readiness_timeout()?).await?;
    }
    let kube = crate::k8s::connect(&ctx.config).await?;
    let pod = match (&kube, PodRef::from_cni_args(&ctx.env.args)) {
        (Some(api), Some(pod)) => {
            Some(pod_networks::load_pod(api, pod, &ctx.config.runtime_config).await?)
        }
        _ => None,
    };
    let delegates = match (&kube, &pod) {
        (Some(api), Some(info)) => pod_networks::pod_delegates(&ctx.config, api, info).await?,
        _ => resolve::static_delegates(&ctx.config)?,
    };
    let mut plan = plan::assign_ifnames(delegates, &ctx.env.ifname)?;
    device_info::offer(
        &mut plan,
        &ctx.config.device_info_dir,
        &ctx.env.container_id,
    );
    let route_owner = default_routes::owner(&plan)?;
    let netns = ctx.netns();
    refuse_names_in_use(Path::new(&netns), &plan)?;
    clear_stale_entry(ctx).await?;

    let mut entry = CacheEntry {
        kind: CACHE_KIND.into(),
        container_id: ctx.env.container_id.clone(),
        netns: netns.clone(),
        cni_args: ctx.env.args.to_env_string(),
        cni_version: ctx.version.as_str().into(),
        attachments: plan.iter().map(Attachment::to_cached).collect(),
    };
    ctx.cache.store(&entry)?;

    let mut results: Vec<CniResult> = Vec::with_capacity(plan.len());
    for (index, attachment) in plan.iter().enumerate() {
        let rctx = ctx.runtime_context(&entry.attachments[index], &netns);
        device_info::prepare(attachment, &ctx.config.device_info_dir);
        match list::add(&attachment.delegate.network, &rctx).await {
            Ok(result) => {
                entry.attachments[index].result =
                    Some(result.to_value(attachment.delegate.network.version));
                results.push(result);
            }
            Err(failure) => {
                return Err(roll_back(ctx, &entry, index, &netns, attachment, &failure).await);
            }
        }
    }
    if let Some(owner) = &route_owner {
        if let Err(e) = default_routes::apply(Path::new(&netns), &plan, &mut results, owner) {
            return Err(roll_back_all(ctx, &entry, &netns, e).await);
        }
    }
    for ((cached, attachment), result) in entry.attachments.iter_mut().zip(&plan).zip(&results) {
        cached.result = Some(result.to_value(attachment.delegate.network.version));
    }
    // The results are recorded while the network-status is written: one waits on the disk, the
    // other on the API server.
    let recording = {
        let (cache, complete) = (ctx.cache.clone(), entry.clone());
        tokio::task::spawn_blocking(move || cache.store(&complete))
    };
    let status = write_status(&plan, &results, kube.as_ref(), pod.as_ref()).await;
    let recorded = recording.await.unwrap_or_else(|e| {
        Err(CacheError::Io {
            path: ctx.cache.path(&ctx.env.container_id),
            source: std::io::Error::other(e),
        })
    });
    if let Err(e) = status {
        return Err(roll_back_all(ctx, &entry, &netns, e).await);
    }
    recorded?;
    let primary = plan
        .iter()
        .zip(results)
        .find(|(a, _)| a.delegate.primary)
        .map(|(_, r)| r)
        .unwrap_or_default();
    Ok(primary.to_value(ctx.version))
}

/// Writes the network-status annotation of a Kubernetes pod once every attachment is complete.
async fn write_status(
    plan: &[Attachment],
    results: &[CniResult],
    kube: Option<&KubeApi>,
    pod: Option<&PodInfo>,
) -> Result<(), CniError> {
    let (Some(api), Some(pod)) = (kube, pod) else {
        return Ok(());
    };
    let statuses = network_status::statuses(plan, results);
    network_status::write(api, pod, &statuses)
        .await
        .map_err(|e| CniError {
            msg: format!(
                "writing the network-status of pod {}: {}",
                pod.pod.display(),
                e.msg
            ),
            ..e
        })
}

/// Refuses to start when an interface Plexus is about to create already exists in the pod.
fn refuse_names_in_use(netns: &Path, plan: &[Attachment]) -> Result<(), CniError> {
    let existing: HashSet<String> = links::links(Some(netns))
        .map_err(|e| {
            CniError::new(
                ErrorCode::InvalidEnvironment,
                format!("cannot list the interfaces of network namespace {netns:?}: {e}"),
            )
        })?
        .into_iter()
        .map(|l| l.name)
        .collect();
    match plan.iter().find(|a| existing.contains(&a.ifname)) {
        Some(a) => Err(CniError::new(
            ErrorCode::InterfaceNameConflict,
            format!(
                "interface {:?} (network {:?}) already exists in network namespace {netns:?}",
                a.ifname, a.delegate.network.name
            ),
        )),
        None => Ok(()),
    }
}

/// A cache entry left by an earlier ADD of the same container that was never deleted: its
/// attachments are torn down first, so nothing it holds leaks.
async fn clear_stale_entry(ctx: &Context) -> Result<(), CniError> {
    let Some(stale) = ctx.cache.load(&ctx.env.container_id)? else {
        return Ok(());
    };
    tracing::warn!(container = %ctx.env.container_id, "tearing down a stale cache entry before ADD");
    let failures =
        teardown::detach_all(&stale.attachments, |a| ctx.runtime_context(a, &stale.netns)).await;
    device_info::remove_all(&stale.attachments);
    if !failures.is_empty() {
        return Err(failures.to_cni_error(stale.attachments.len()));
    }
    ctx.cache.remove(&ctx.env.container_id)?;
    Ok(())
}

/// Deletes every attachment after a failure that followed them all (the default route, the
/// network-status write), and returns the error to report.
async fn roll_back_all(
    ctx: &Context,
    entry: &CacheEntry,
    netns: &str,
    error: CniError,
) -> CniError {
    let failures =
        teardown::detach_all(&entry.attachments, |a| ctx.runtime_context(a, netns)).await;
    record_rollback(ctx, entry, failures, entry.attachments.len(), error)
}

/// Deletes what was attempted after attachment `failed` failed (the plugins of that attachment
/// that started, then every earlier attachment, in reverse), and returns the error to report.
async fn roll_back(
    ctx: &Context,
    entry: &CacheEntry,
    failed: usize,
    netns: &str,
    attachment: &Attachment,
    failure: &PluginFailure,
) -> CniError {
    let error = failure.to_cni_error();
    let mut failures = teardown::TeardownFailures::default();
    let failed_one = &entry.attachments[failed];
    let network = &attachment.delegate.network;
    let rctx = ctx.runtime_context(failed_one, netns);
    if let Err(fs) = list::del_first(network, &rctx, None, failure.plugins_attempted()).await {
        let real: Vec<PluginFailure> = fs
            .into_iter()
            .filter(|f| !f.same_refusal(failure))
            .collect();
        if !real.is_empty() {
            failures.0.push(teardown::describe(failed_one, &real));
        }
    }
    let earlier = &entry.attachments[..failed];
    failures.0.extend(
        teardown::detach_all(earlier, |a| ctx.runtime_context(a, netns))
            .await
            .0,
    );
    let error = CniError {
        msg: format!(
            "attaching network {:?} as {}: {}",
            attachment.delegate.network.name, attachment.ifname, error.msg
        ),
        ..error
    };
    record_rollback(ctx, entry, failures, failed + 1, error)
}

/// Records the outcome of a rollback and returns the error to report. After a complete rollback
/// the cache entry is kept with no attachments, so that the runtime's DEL finds nothing to undo
/// instead of guessing from the configuration; otherwise it keeps them all so that the runtime's
/// DEL can finish the job, and the error's details list what could not be undone.
fn record_rollback(
    ctx: &Context,
    entry: &CacheEntry,
    failures: teardown::TeardownFailures,
    attempted: usize,
    mut error: CniError,
) -> CniError {
    device_info::remove_all(&entry.attachments);
    if failures.is_empty() {
        let empty = CacheEntry {
            attachments: Vec::new(),
            ..entry.clone()
        };
        if let Err(e) = ctx.cache.store(&empty) {
            tracing::warn!("recording the complete rollback: {e}");
        }
    } else {
        let rollback = failures.to_cni_error(attempted);
        error.details = if error.details.is_empty() {
            format!("rollback incomplete: {}", rollback.msg)
        } else {
            format!("{}; rollback incomplete: {}", error.details, rollback.msg)
        };
    }
    error
}

/// Parses a cached configuration (used by the other commands).
pub(super) fn network_of(attachment: &CachedAttachment) -> Result<NetworkConfigList, CniError> {
    NetworkConfigList::from_bytes(attachment.config.as_bytes()).map_err(|e| {
        CniError::new(
            ErrorCode::CacheFailure,
            format!(
                "cached configuration of {} ({}) is unreadable: {e}",
                attachment.ifname, attachment.network
            ),
        )
    })
}
