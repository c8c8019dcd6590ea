//! Housekeeping on a schedule (`--housekeeping-interval-secs`): every interval, one run of
//! two jobs, one after the other; a run that takes longer than the interval delays the next
//! (runs never overlap). Each run is logged and counted in the metrics.
//!
//! * **`ipam-gc`**: the IPAM garbage collection of this node ([`plexus_ipam::gc::collect`],
//!   as `plexus-ipam`'s GC verb does it) on every Kubernetes store the agent has served: an
//!   allocation of this node whose pod is gone, or is another pod now, is released (its pod
//!   asked twice, the release exact). The same pass sets the pool usage per network.
//! * **`cache-prune`**: the attachment cache of `plexus` ([`plexus::cache`]): an entry is
//!   removed when its container is gone — its network namespace no longer exists, the entry
//!   is older than [`CACHE_GRACE`], and its pod (from `CNI_ARGS`) is gone or is another pod
//!   now (a live GET). An entry that names a pod is kept while no API client is warm. The
//!   runtime's DEL needs an entry only while the sandbox exists, so nothing of a live
//!   container is removed; the addresses of a container whose DEL never came are released
//!   by `ipam-gc`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use plexus::cache::Cache;
use plexus_cni::env::CniArgs;
use plexus_ipam::backends::kubernetes::KubePods;
use plexus_ipam::gc::{collect, GcOptions, PodLookup, PodState};
use plexus_ipam::store::Store;
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::stores::Stores;

/// How old a cache entry of a gone container must be before it is removed.
pub const CACHE_GRACE: Duration = Duration::from_secs(600);

/// The default interval between runs.
pub const DEFAULT_INTERVAL_SECS: u64 = 600;

/// The housekeeping of one node.
#[derive(Debug, Clone)]
pub struct Housekeeping {
    /// The node.
    pub node: String,
    /// The stores the IPAM service made.
    pub stores: Arc<Stores>,
    /// Where runs are counted.
    pub metrics: Arc<Metrics>,
    /// `plexus`'s attachment cache directory.
    pub cache_dir: PathBuf,
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Allocations released by `ipam-gc`.
    pub released: usize,
    /// Cache entries removed.
    pub pruned: usize,
    /// What failed.
    pub errors: Vec<String>,
}

impl Housekeeping {
    /// Runs every `interval`, the first run one interval from now, until the process ends.
    pub async fn every(self, interval: Duration) {
        let start = tokio::time::Instant::now() + interval;
        let mut ticks = tokio::time::interval_at(start, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.run().await;
        }
    }

    /// One run of both jobs.
    pub async fn run(&self) -> RunReport {
        let mut report = RunReport::default();
        self.ipam_gc(&mut report).await;
        self.cache_prune(&mut report).await;
        info!(
            released = report.released,
            pruned = report.pruned,
            errors = report.errors.len(),
            "housekeeping run"
        );
        for e in &report.errors {
            warn!("housekeeping: {e}");
        }
        report
    }

    /// `ipam-gc` on every warm store, and the pool usage per network.
    async fn ipam_gc(&self, report: &mut RunReport) {
        let options = GcOptions {
            node: Some(self.node.clone()),
            dry_run: false,
        };
        let errors_before = report.errors.len();
        let mut released = 0;
        for store in self.stores.warm().await {
            let pods = KubePods::new(store.client().clone());
            match collect(&*store, &pods, &options).await {
                Ok(gc) => {
                    released += gc.released.len();
                    report.errors.extend(gc.errors);
                }
                Err(e) => report.errors.push(format!("ipam-gc: {e}")),
            }
            match store.usage().await {
                Ok(usage) => self.pool_usage(&usage),
                Err(e) => report.errors.push(format!("pool usage: {e}")),
            }
        }
        report.released += released;
        let result = result(report.errors.len() == errors_before);
        self.metrics
            .housekeeping("ipam-gc", result, released as u64);
    }

    /// Sets the pool usage of the networks served from `usage`.
    fn pool_usage(&self, usage: &[plexus_ipam::store::PoolUsage]) {
        for (network, size) in self.stores.network_sizes() {
            let allocated = usage
                .iter()
                .filter(|u| u.network == network)
                .map(|u| u.allocations.len() as u64)
                .sum();
            self.metrics.pool_usage(&network, allocated, size as f64);
        }
    }

    /// `cache-prune`.
    async fn cache_prune(&self, report: &mut RunReport) {
        let cache = Cache::new(&self.cache_dir);
        let pods = self
            .stores
            .warm()
            .await
            .first()
            .map(|s| KubePods::new(s.client().clone()));
        let mut pruned = 0;
        let mut ok = true;
        let ids = match cache.container_ids() {
            Ok(ids) => ids,
            Err(e) => {
                report.errors.push(format!("cache-prune: {e}"));
                self.metrics.housekeeping("cache-prune", "failure", 0);
                return;
            }
        };
        for id in ids {
            match gone(&cache, &id, pods.as_ref()).await {
                Ok(false) => {}
                Ok(true) => match cache.remove(&id) {
                    Ok(()) => {
                        info!("housekeeping removed the cache entry of gone container {id}");
                        pruned += 1;
                    }
                    Err(e) => {
                        ok = false;
                        report.errors.push(format!("cache-prune: {e}"));
                    }
                },
                Err(e) => {
                    ok = false;
                    report.errors.push(format!("cache-prune {id}: {e}"));
                }
            }
        }
        report.pruned += pruned;
        self.metrics
            .housekeeping("cache-prune", result(ok), pruned as u64);
    }
}

/// `success` or `failure`.
fn result(ok: bool) -> &'static str {
    if ok {
        "success"
    } else {
        "failure"
    }
}

/// Whether the container of cache entry `id` is gone (see the module documentation).
async fn gone(cache: &Cache, id: &str, pods: Option<&KubePods>) -> Result<bool, String> {
    let path = cache.path(id);
    let age = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .map(|t| SystemTime::now().duration_since(t).unwrap_or_default())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if age < CACHE_GRACE {
        return Ok(false);
    }
    let Some(entry) = cache.load(id).map_err(|e| e.to_string())? else {
        return Ok(false);
    };
    if entry.netns.is_empty() || std::path::Path::new(&entry.netns).exists() {
        return Ok(false);
    }
    let args = CniArgs::parse(&entry.cni_args).unwrap_or_default();
    let (Some(namespace), Some(name)) = (args.get("K8S_POD_NAMESPACE"), args.get("K8S_POD_NAME"))
    else {
        return Ok(true);
    };
    let Some(pods) = pods else { return Ok(false) };
    let uid = args.get("K8S_POD_UID").unwrap_or_default();
    Ok(match pods.pod(namespace, name).await? {
        PodState::Absent => true,
        PodState::Present { uid: now } => !uid.is_empty() && now != uid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexus::cache::{CacheEntry, CACHE_KIND};

    fn entry(id: &str, netns: &str, args: &str) -> CacheEntry {
        CacheEntry {
            kind: CACHE_KIND.into(),
            container_id: id.into(),
            netns: netns.into(),
            cni_args: args.into(),
            cni_version: String::new(),
            attachments: Vec::new(),
        }
    }

    /// Sets the entry's file back by `age`.
    fn age(cache: &Cache, id: &str, age: Duration) {
        let file = std::fs::File::options()
            .write(true)
            .open(cache.path(id))
            .unwrap();
        file.set_modified(SystemTime::now() - age).unwrap();
    }

    #[tokio::test]
    async fn only_old_entries_of_gone_namespaces_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join("cache"));
        let live_netns = dir.path().join("netns-live");
        std::fs::write(&live_netns, "").unwrap();
        let dead = dir.path().join("netns-dead");
        let old = CACHE_GRACE + Duration::from_secs(60);
        for (id, netns, args, how_old) in [
            ("live", live_netns.to_str().unwrap(), "", old),
            ("fresh", dead.to_str().unwrap(), "", Duration::ZERO),
            ("gone", dead.to_str().unwrap(), "", old),
            (
                "pod",
                dead.to_str().unwrap(),
                "K8S_POD_NAMESPACE=a;K8S_POD_NAME=b",
                old,
            ),
        ] {
            cache.store(&entry(id, netns, args)).unwrap();
            age(&cache, id, how_old);
        }
        assert!(!gone(&cache, "live", None).await.unwrap());
        assert!(!gone(&cache, "fresh", None).await.unwrap());
        assert!(gone(&cache, "gone", None).await.unwrap());
        // A pod is named and nobody can ask about it: kept.
        assert!(!gone(&cache, "pod", None).await.unwrap());
    }
}
