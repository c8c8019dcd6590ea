//! ADD: attach the pod to every network in order, primary first; on any failure tear down what
//! was attempted and report the failure.

use std::collections::HashSet;
use std::path::Path;

use plexus_cni::config::NetworkConfigList;
use plexus_cni::list::{self, PluginFailure};
use plexus_cni::{CniError, CniResult, ErrorCode};
use serde_json::Value;

use super::Context;
use crate::cache::{CacheEntry, CachedAttachment, CACHE_KIND};
use crate::plan::{self, Attachment};
use crate::{links, readiness, resolve, teardown};

/// Runs ADD and returns the primary network's result in Plexus's own version.
pub(super) async fn run(ctx: &Context) -> Result<Value, CniError> {
    if let Some(file) = &ctx.config.readiness_indicator_file {
        readiness::wait_for(file, ctx.config.readiness_timeout()?).await?;
    }
    let delegates = resolve::static_delegates(&ctx.config)?;
    let plan = plan::assign_ifnames(delegates, &ctx.env.ifname)?;
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

    let mut primary: Option<CniResult> = None;
    for (index, attachment) in plan.iter().enumerate() {
        let network = &attachment.delegate.network;
        let rctx = ctx.runtime_context(&entry.attachments[index], &netns);
        match list::add(network, &rctx).await {
            Ok(result) => {
                entry.attachments[index].result = Some(result.to_value(network.version));
                if attachment.delegate.primary {
                    primary = Some(result);
                }
            }
            Err(failure) => {
                return Err(roll_back(ctx, &entry, index, &netns, attachment, &failure).await);
            }
        }
    }
    ctx.cache.store(&entry)?;
    let result = primary.unwrap_or_default();
    Ok(result.to_value(ctx.version))
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
    if !failures.is_empty() {
        return Err(failures.to_cni_error(stale.attachments.len()));
    }
    ctx.cache.remove(&ctx.env.container_id)?;
    Ok(())
}

/// Deletes what was attempted after attachment `failed` failed (the plugins of that attachment
/// that started, then every earlier attachment, in reverse), and returns the error to report.
/// After a complete rollback the cache entry is kept with no attachments; otherwise it keeps
/// them all so that the runtime's DEL can finish the job.
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
    let attempted = &entry.attachments[..=failed];
    let mut error = CniError {
        msg: format!(
            "attaching network {:?} as {}: {}",
            attachment.delegate.network.name, attachment.ifname, error.msg
        ),
        ..error
    };
    if failures.is_empty() {
        // Nothing is attached any more: the entry stays, empty, so that the runtime's DEL finds
        // nothing to undo instead of guessing from the configuration.
        let empty = CacheEntry {
            attachments: Vec::new(),
            ..entry.clone()
        };
        if let Err(e) = ctx.cache.store(&empty) {
            tracing::warn!("recording the complete rollback: {e}");
        }
    } else {
        let rollback = failures.to_cni_error(attempted.len());
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
