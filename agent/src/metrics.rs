//! The agent's metrics, in Prometheus's text format (OpenMetrics) at `/metrics` on a localhost
//! port (`--metrics-address`, default [`DEFAULT_ADDRESS`]).
//!
//! Families (all prefixed `plexus_`):
//!
//! * `cni_calls_total` and `cni_call_seconds` by `verb` (ADD, DEL, CHECK) and `result`
//!   (`success` or the CNI error code): the calls the agent served;
//! * `api_requests_total` and `api_request_seconds` by `verb` and `status` (`success`, the
//!   HTTP code, `timeout`, `unreachable`, `other`): every call through
//!   [`plexus_kube::Connection::call`] in this process;
//! * `ipam_allocations_total`: addresses handed out; `ipam_batch_size`: changes carried by each
//!   group-commit block write; `ipam_pool_allocated` and `ipam_pool_size` by `network`, as the
//!   last housekeeping run found them;
//! * `cache_age_seconds` by `cache` (`pods`, `nads`): how long ago the cache's watch last
//!   delivered anything (quiet objects make it grow; a failing watch shows in the log);
//! * `fallbacks_total` by `binary`, `verb` and `reason`: CNI calls done without the agent,
//!   counted from the fallback log beside the socket ([`plexus_agent_api::fallbacks`]) when
//!   the metrics are read;
//! * `housekeeping_runs_total` by `job` and `result`, `housekeeping_released_total` by `job`.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tracing::info;

/// Where the metrics are served unless configured otherwise.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:9883";

/// A verb and how it ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbResult {
    verb: String,
    result: String,
}

/// An API request's verb and status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbStatus {
    verb: String,
    status: String,
}

/// One fallback's binary, verb and reason.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Fallback {
    binary: String,
    verb: String,
    reason: String,
}

/// A label set of one label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Network {
    network: String,
}

/// A label set of one label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheName {
    cache: String,
}

/// A label set of one label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Job {
    job: String,
}

/// A housekeeping job and how its run ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobResult {
    job: String,
    result: String,
}

/// A float gauge.
type FloatGauge = Gauge<f64, AtomicU64>;
/// A histogram family.
type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latency buckets: 1 ms to about 16 s.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Batch-size buckets: 1 to 256.
fn sizes() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 9))
}

/// The agent's metrics; cheap to share (`Arc`), every method callable from any task.
pub struct Metrics {
    registry: Registry,
    cni_calls: Family<VerbResult, Counter>,
    cni_seconds: Histograms<VerbResult>,
    api_requests: Family<VerbStatus, Counter>,
    api_seconds: Histograms<VerbStatus>,
    allocations: Counter,
    batch_sizes: Histogram,
    pool_allocated: Family<Network, FloatGauge>,
    pool_size: Family<Network, FloatGauge>,
    cache_age: Family<CacheName, FloatGauge>,
    fallbacks: Family<Fallback, Counter>,
    housekeeping_runs: Family<JobResult, Counter>,
    housekeeping_released: Family<Job, Counter>,
    /// The socket whose fallback log is counted at each read.
    socket: PathBuf,
    /// The caches whose age is read at each read of the metrics.
    caches: std::sync::Mutex<Vec<(&'static str, CacheAge)>>,
}

/// How old a cache's view is; `None` before it heard from its watch.
pub type CacheAge = Box<dyn Fn() -> Option<Duration> + Send + Sync>;

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// Empty metrics of the agent on `socket`.
    pub fn new(socket: PathBuf) -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("plexus"),
            cni_calls: Family::default(),
            cni_seconds: Family::new_with_constructor(seconds),
            api_requests: Family::default(),
            api_seconds: Family::new_with_constructor(seconds),
            allocations: Counter::default(),
            batch_sizes: sizes(),
            pool_allocated: Family::default(),
            pool_size: Family::default(),
            cache_age: Family::default(),
            fallbacks: Family::default(),
            housekeeping_runs: Family::default(),
            housekeeping_released: Family::default(),
            socket,
            caches: std::sync::Mutex::default(),
        };
        let r = &mut m.registry;
        r.register(
            "cni_calls",
            "CNI calls served, by verb and result",
            m.cni_calls.clone(),
        );
        r.register(
            "cni_call_seconds",
            "Latency of the CNI calls served",
            m.cni_seconds.clone(),
        );
        r.register(
            "api_requests",
            "Kubernetes API requests, by verb and status",
            m.api_requests.clone(),
        );
        r.register(
            "api_request_seconds",
            "Latency of the Kubernetes API requests",
            m.api_seconds.clone(),
        );
        r.register(
            "ipam_allocations",
            "Addresses handed out",
            m.allocations.clone(),
        );
        r.register(
            "ipam_batch_size",
            "Changes carried by each group-commit block write",
            m.batch_sizes.clone(),
        );
        r.register(
            "ipam_pool_allocated",
            "Addresses allocated per network (last housekeeping run)",
            m.pool_allocated.clone(),
        );
        r.register(
            "ipam_pool_size",
            "Addresses of the ranges per network (last housekeeping run)",
            m.pool_size.clone(),
        );
        r.register(
            "cache_age_seconds",
            "How old each cache's view is",
            m.cache_age.clone(),
        );
        r.register(
            "fallbacks",
            "CNI calls done without the agent, by binary, verb and reason",
            m.fallbacks.clone(),
        );
        r.register(
            "housekeeping_runs",
            "Housekeeping runs, by job and result",
            m.housekeeping_runs.clone(),
        );
        r.register(
            "housekeeping_released",
            "What housekeeping removed, by job",
            m.housekeeping_released.clone(),
        );
        m
    }

    /// A CNI call served: `verb` (ADD, DEL, CHECK), `result` (`success` or the CNI error
    /// code), and how long it took.
    pub fn cni_call(&self, verb: &str, result: &str, took: Duration) {
        let labels = VerbResult {
            verb: verb.into(),
            result: result.into(),
        };
        self.cni_calls.get_or_create(&labels).inc();
        self.cni_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// A Kubernetes API request ended with `status`.
    pub fn api_request(&self, verb: &str, status: plexus_kube::CallStatus, took: Duration) {
        use plexus_kube::CallStatus;
        let status = match status {
            CallStatus::Success => "success".to_string(),
            CallStatus::Code(code) => code.to_string(),
            CallStatus::Timeout => "timeout".to_string(),
            CallStatus::Unreachable => "unreachable".to_string(),
            CallStatus::Other => "other".to_string(),
        };
        let labels = VerbStatus {
            verb: verb.into(),
            status,
        };
        self.api_requests.get_or_create(&labels).inc();
        self.api_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// `count` addresses handed out.
    pub fn allocated(&self, count: u64) {
        self.allocations.inc_by(count);
    }

    /// A group-commit block write carried `changes` changes.
    pub fn batch(&self, changes: usize) {
        self.batch_sizes.observe(changes as f64);
    }

    /// Network `network` has `allocated` of `size` addresses.
    pub fn pool_usage(&self, network: &str, allocated: u64, size: f64) {
        let labels = Network {
            network: network.into(),
        };
        self.pool_allocated
            .get_or_create(&labels)
            .set(allocated as f64);
        self.pool_size.get_or_create(&labels).set(size);
    }

    /// The view of cache `cache` is `age` old.
    pub fn cache_age(&self, cache: &str, age: Duration) {
        let labels = CacheName {
            cache: cache.into(),
        };
        self.cache_age.get_or_create(&labels).set(age.as_secs_f64());
    }

    /// Reads the age of cache `cache` with `age` each time the metrics are read.
    pub fn track_cache(&self, cache: &'static str, age: CacheAge) {
        self.caches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((cache, age));
    }

    /// `binary` did `verb` without the agent because of `reason`.
    pub fn fallback(&self, binary: &str, verb: &str, reason: &str) {
        let labels = Fallback {
            binary: binary.into(),
            verb: verb.into(),
            reason: reason.into(),
        };
        self.fallbacks.get_or_create(&labels).inc();
    }

    /// A housekeeping run of `job` ended (`result` `success` or `failure`), having removed
    /// `released` things.
    pub fn housekeeping(&self, job: &str, result: &str, released: u64) {
        let labels = JobResult {
            job: job.into(),
            result: result.into(),
        };
        self.housekeeping_runs.get_or_create(&labels).inc();
        self.housekeeping_released
            .get_or_create(&Job { job: job.into() })
            .inc_by(released);
    }

    /// The metrics as text, after counting the fallbacks recorded since the last read.
    pub fn render(&self) -> String {
        for (binary, verb, reason) in plexus_agent_api::fallbacks::take(&self.socket) {
            self.fallback(&binary, &verb, &reason);
        }
        for (cache, age) in self.caches.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            if let Some(age) = age() {
                self.cache_age(cache, age);
            }
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Makes every Kubernetes API call of this process count in `metrics`.
    pub fn observe_api_calls(metrics: &Arc<Metrics>) {
        let metrics = metrics.clone();
        plexus_kube::observe_calls(Box::new(move |verb, status, took| {
            metrics.api_request(verb, status, took)
        }));
    }
}

/// The HTTP content type of [`Metrics::render`]'s text.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `metrics` at `/metrics` on `listener` until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
) -> std::io::Result<()> {
    use axum::routing::get;
    info!("metrics at http://{}/metrics", listener.local_addr()?);
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
                    metrics.render(),
                )
            }
        }),
    );
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_rendered() {
        let dir = std::env::temp_dir().join(format!("plexusd-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("plexusd.sock");
        let m = Metrics::new(socket.clone());
        m.cni_call("ADD", "success", Duration::from_millis(3));
        m.api_request(
            "update",
            plexus_kube::CallStatus::Code(409),
            Duration::from_millis(2),
        );
        m.allocated(2);
        m.batch(5);
        m.pool_usage("net1", 3, 254.0);
        m.cache_age("pods", Duration::from_secs(2));
        m.housekeeping("ipam-gc", "success", 1);
        plexus_agent_api::fallbacks::record(
            &socket,
            "plexus-ipam",
            "ADD",
            &plexus_agent_api::AgentError::Missing(socket.clone()),
        );
        let text = m.render();
        for line in [
            "plexus_cni_calls_total{verb=\"ADD\",result=\"success\"} 1",
            "plexus_api_requests_total{verb=\"update\",status=\"409\"} 1",
            "plexus_ipam_allocations_total 2",
            "plexus_ipam_batch_size_count 1",
            "plexus_ipam_pool_allocated{network=\"net1\"} 3.0",
            "plexus_ipam_pool_size{network=\"net1\"} 254.0",
            "plexus_cache_age_seconds{cache=\"pods\"} 2.0",
            "plexus_fallbacks_total{binary=\"plexus-ipam\",verb=\"ADD\",reason=\"missing\"} 1",
            "plexus_housekeeping_runs_total{job=\"ipam-gc\",result=\"success\"} 1",
            "plexus_housekeeping_released_total{job=\"ipam-gc\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
