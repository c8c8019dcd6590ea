//! Stage 4 of ADD, record: the attachment cache (`cache.rs`) is written before the first
//! delegate runs and again with every result, and a Kubernetes pod gets its
//! `k8s.v1.cni.cncf.io/network-status` annotation (built and written by `k8s/status.rs`). A rollback is recorded
//! here too, so that the runtime's DEL knows what is left.

use plexus_cni::{CniError, CniResult};
use thiserror::Error;

use crate::cache::{Cache, CacheEntry, CacheError, CachedAttachment, CACHE_KIND};
use crate::devices::device_info;
use crate::execute::Rollback;
use crate::k8s::agent::Agent;
use crate::k8s::pod_networks::PodInfo;
use crate::k8s::status::{self, NetworkStatus};
use crate::k8s::LazyApi;
use crate::parse::Invocation;
use crate::plan::{Plan, PlannedAttachment};

/// Why the record of a complete ADD failed.
#[derive(Debug, Error)]
pub enum RecordFailure {
    /// The network-status annotation could not be written: the ADD must be rolled back. The
    /// error names the pod.
    #[error("{}", .0.msg)]
    NetworkStatus(CniError),
    /// The cache could not be written. The error names the file.
    #[error(transparent)]
    Cache(CacheError),
}

/// The cache record of a planned attachment, before it has a result.
pub fn cached(attachment: &PlannedAttachment) -> CachedAttachment {
    CachedAttachment {
        network: attachment.network.name.clone(),
        ifname: attachment.ifname.clone(),
        primary: attachment.primary,
        config: String::from_utf8_lossy(&attachment.network.to_bytes()).into_owned(),
        capability_args: attachment.capability_args.clone(),
        result: None,
        status_name: Some(attachment.status_name.clone()),
        selected: attachment.selected,
    }
}

/// Records the plan before anything runs (no results yet), so that a crash leaves what DEL
/// needs; returns the entry.
pub fn begin(inv: &Invocation, plan: &Plan) -> Result<CacheEntry, CacheError> {
    let entry = CacheEntry {
        kind: CACHE_KIND.into(),
        container_id: inv.env.container_id.clone(),
        netns: inv.netns().to_string_lossy().into_owned(),
        cni_args: inv.env.args.to_env_string(),
        cni_version: inv.version.as_str().into(),
        attachments: plan.attachments.iter().map(cached).collect(),
    };
    inv.cache.store(&entry)?;
    Ok(entry)
}

/// Where a Kubernetes pod's network-status annotation goes: through the node agent when it
/// served the pod, else (and when the call to it breaks) with Plexus's own client.
#[derive(Debug, Clone, Copy)]
pub struct StatusTarget<'a> {
    /// Plexus's own client.
    pub api: &'a LazyApi<'a>,
    /// The node agent.
    pub agent: &'a Agent,
    /// The pod.
    pub pod: &'a PodInfo,
}

impl StatusTarget<'_> {
    /// Writes the annotation of every attachment's result; answers after the write succeeded.
    async fn write(&self, plan: &Plan, results: &[CniResult]) -> Result<(), CniError> {
        let statuses = statuses(plan, results);
        if self.agent.is_up() {
            let annotation = status::to_annotation(&statuses);
            if let Ok(answer) = self
                .agent
                .write_status(self.pod, annotation, plan, results)
                .await
            {
                return answer;
            }
        }
        status::write(self.api.require().await?, self.pod, &statuses).await
    }
}

/// Records a complete ADD: every result in the cache and, for a Kubernetes pod (`status`), the
/// network-status annotation. One waits on the disk, the other on the API server, so both run
/// at once.
pub async fn complete(
    cache: &Cache,
    entry: &mut CacheEntry,
    plan: &Plan,
    results: &[CniResult],
    status: Option<StatusTarget<'_>>,
) -> Result<(), RecordFailure> {
    for ((cached, attachment), result) in entry
        .attachments
        .iter_mut()
        .zip(&plan.attachments)
        .zip(results)
    {
        cached.result = Some(result.to_value(attachment.network.version));
    }
    let recording = {
        let (cache, complete) = (cache.clone(), entry.clone());
        tokio::task::spawn_blocking(move || cache.store(&complete))
    };
    let written = match status {
        Some(target) => target.write(plan, results).await,
        None => Ok(()),
    };
    let recorded = recording.await.unwrap_or_else(|e| {
        Err(CacheError::Io {
            path: cache.path(&entry.container_id),
            source: std::io::Error::other(e),
        })
    });
    written.map_err(RecordFailure::NetworkStatus)?;
    recorded.map_err(RecordFailure::Cache)
}

/// Records a rollback and returns the error to report. After a complete rollback the cache
/// entry is kept with no attachments, so that the runtime's DEL finds nothing to undo instead
/// of guessing from the configuration; otherwise it keeps them all so that the runtime's DEL
/// can finish the job, and the error's details list what could not be undone.
pub fn rolled_back(cache: &Cache, entry: &CacheEntry, rollback: Rollback) -> CniError {
    let Rollback {
        mut error,
        failures,
        attempted,
    } = rollback;
    device_info::remove_all(&entry.attachments);
    if failures.is_empty() {
        let empty = CacheEntry {
            attachments: Vec::new(),
            ..entry.clone()
        };
        if let Err(e) = cache.store(&empty) {
            tracing::warn!("recording the complete rollback: {e}");
        }
    } else {
        let incomplete = failures.to_cni_error(attempted);
        error.details = if error.details.is_empty() {
            format!("rollback incomplete: {}", incomplete.msg)
        } else {
            format!("{}; rollback incomplete: {}", error.details, incomplete.msg)
        };
    }
    error
}

/// The status entries of every attachment, in order; the primary's is marked `default`. Each
/// carries the content of its device-info file, when it has one.
pub fn statuses(plan: &Plan, results: &[CniResult]) -> Vec<NetworkStatus> {
    plan.attachments
        .iter()
        .zip(results)
        .flat_map(|(a, r)| {
            status::statuses_for(
                &a.status_name,
                r,
                a.primary,
                device_info::read(&a.capability_args),
                &a.ifname,
            )
        })
        .collect()
}
