//! The IPAM benchmarks: what an ADD costs in the cluster-wide stores of `plexus-ipam`.
//!
//! Both are measured through the store API (`plexus_ipam::store::Store`), in process, by the
//! `store_bench` example of `plexus-ipam` built in release mode (xtask itself is not optimised,
//! so it only sets up the datastores and reads the samples the example prints):
//!
//! * [`concurrency`]: ADDs per second and the p50/p99 latency of one ADD with 1, 8 and 32
//!   concurrent allocators, on a local etcd (Debian's, on loopback, data in `/dev/shm`) and on
//!   the real API server (the cached kube-apiserver with its own etcd, Plexus's service
//!   account). Each allocator is an OS thread with its own current-thread Tokio runtime and its
//!   own store, so its own etcd client or API connection, and on Kubernetes its own node name
//!   and hint directory: as separate nodes. Each makes [`WARMUP_ADDS`] untimed ADDs first (the
//!   connection is then open, as in a node agent; a CNI plugin process pays its connection on
//!   top), then all start together; every pool starts empty (a /16).
//!
//!   Next to each, the server's own ceiling: the example's `raw` scenario makes the same round
//!   trips as a common ADD, with the same threads and client setup, without Plexus's logic
//!   (API server: GET of the allocator's own `IPAMBlock` and a replace on its
//!   `resourceVersion` with one record more; etcd: a read transaction and a compare-and-put
//!   transaction of the same three keys), and the ratio. Plexus and raw are each measured in
//!   two halves, in the order Plexus, raw, raw, Plexus, so that the machine's changing load
//!   weighs on both alike. The server's `/metrics` counts the requests per ADD during the timed
//!   part (API server: IPAMBlocks and Leases; etcd: Range and Txn) and, on the API server, the
//!   409 Conflicts; beyond 2 per ADD they are the slow path, Lease work and lost races.
//! * [`fill`]: the latency of one ADD (followed by an untimed DEL, so the pool keeps its size)
//!   in an IPv6 /64 that holds 10,000 allocations, against the same in an empty IPv4 /24, on
//!   the embedded local store and on etcd. The 10,000 are written straight into the store.

use std::path::{Path, PathBuf};
use std::process::Command;

use plexus_tests::cluster::{LocalCluster, IPAM_NAMESPACE};
use plexus_tests::etcd::LocalEtcd;
use serde_json::{json, Value};

use super::report::{percentile, Figure, Section};
use super::{target_dir, Binaries, Settings};
use crate::cmd::{self, Result};

/// Allocators of the concurrency benchmark.
const ALLOCATORS: [usize; 3] = [1, 8, 32];
/// Timed ADDs of each concurrency measurement, split among its allocators (and made in two
/// halves); as many raw operations.
const TOTAL_ADDS: usize = 512;
/// Untimed ADDs of each allocator before the timed ones.
const WARMUP_ADDS: usize = 3;
/// Allocations the large pool holds in the fill benchmark.
const PREFILL: usize = 10_000;
/// Timed ADDs of each fill measurement.
const FILL_ADDS: usize = 200;

/// ADDs per second and ADD latency with 1, 8 and 32 concurrent allocators, on etcd and on the
/// API server, next to the server's own ceiling for the same round trips made raw, and the
/// requests and conflicts per ADD the server counted.
pub(super) fn concurrency(_binaries: &Binaries, _settings: &Settings) -> Result<Section> {
    let worker = build_worker()?;
    let etcd = LocalEtcd::start().map_err(|e| e as cmd::Error)?;
    let apiserver = crate::apiserver::ensure()?;
    let cluster = LocalCluster::start_with(&apiserver).map_err(|e| e as cmd::Error)?;
    let hints = tempfile::tempdir()?;
    let mut figures = Vec::new();
    for (backend, label) in [("etcd", "etcd"), ("kubernetes", "API server")] {
        for allocators in ALLOCATORS {
            let name = format!("c{allocators}");
            let mut spec = json!({
                "backend": backend,
                "scenario": "concurrent",
                "allocators": allocators,
                "adds": TOTAL_ADDS / allocators / 2,
                "warmup": WARMUP_ADDS,
                "range": "10.0.0.0/16",
                "network": format!("bench-{name}"),
            });
            match backend {
                "etcd" => {
                    spec["endpoints"] = json!(etcd.endpoints());
                    spec["prefix"] = json!(format!("/plexus-bench/{name}"));
                }
                _ => {
                    spec["kubeconfig"] = json!(cluster.sa_kubeconfig());
                    spec["namespace"] = json!(IPAM_NAMESPACE);
                    spec["metrics_kubeconfig"] = json!(cluster.kubeconfig);
                    spec["hint_dir"] = json!(hints.path().join(&name));
                }
            }
            // Each measured in two halves, in the order Plexus, raw, raw, Plexus, so that a
            // change in the machine's load weighs on both alike.
            let (mut plexus, mut raw) = (Run::default(), Run::default());
            for (scenario, tag) in [
                ("concurrent", "a"),
                ("raw", "a"),
                ("raw", "b"),
                ("concurrent", "b"),
            ] {
                spec["scenario"] = json!(scenario);
                // New pods in the second half: not repeated ADDs of the first's.
                spec["tag"] = json!(tag);
                let half = Run::of(&run_worker(&worker, &spec)?)?;
                match scenario {
                    "raw" => raw.add(half),
                    _ => plexus.add(half),
                }
            }
            let key = format!("{backend}_{allocators}");
            let who = format!("{label}, {allocators} allocator{}", plural(allocators));
            figures.push(Figure::value(
                format!("{key}_adds_per_s"),
                format!("{who}: ADDs/s"),
                "ADD/s",
                plexus.rate(),
            ));
            figures.extend(p50_p99(
                &format!("{key}_add"),
                &format!("{who}: ADD"),
                &plexus.latencies,
            ));
            figures.push(Figure::value(
                format!("{key}_raw_per_s"),
                format!("{who}: raw ceiling, same round trips without Plexus/s"),
                "op/s",
                raw.rate(),
            ));
            figures.extend(p50_p99(
                &format!("{key}_raw"),
                &format!("{who}: raw round trips"),
                &raw.latencies,
            ));
            figures.push(Figure::value(
                format!("{key}_of_raw_pct"),
                format!("{who}: Plexus ADDs/s as % of the raw ceiling"),
                "% of raw",
                100.0 * plexus.rate() / raw.rate(),
            ));
            figures.push(Figure::value(
                format!("{key}_requests_per_add"),
                format!("{who}: server requests per ADD"),
                "req/op",
                plexus.per_op(plexus.requests),
            ));
            figures.push(Figure::value(
                format!("{key}_raw_requests_per_op"),
                format!("{who}: server requests per raw op"),
                "req/op",
                raw.per_op(raw.requests),
            ));
            figures.push(Figure::value(
                format!("{key}_client_cpu_ms_per_add"),
                format!("{who}: client CPU per ADD"),
                "ms",
                plexus.per_op(plexus.cpu_s * 1000.0),
            ));
            figures.push(Figure::value(
                format!("{key}_raw_client_cpu_ms_per_op"),
                format!("{who}: client CPU per raw op"),
                "ms",
                raw.per_op(raw.cpu_s * 1000.0),
            ));
            if backend == "kubernetes" {
                figures.push(Figure::value(
                    format!("{key}_conflicts_per_add"),
                    format!("{who}: 409 Conflicts per ADD"),
                    "req/op",
                    plexus.per_op(plexus.conflicts),
                ));
            }
            eprint!(".");
        }
    }
    eprintln!();
    Ok(Section::new(
        format!(
            "IPAM: concurrent ADDs through the store API, {TOTAL_ADDS} per measurement (release \
             build, one thread and client per allocator), against the same round trips made \
             raw (GET + replace on resourceVersion / read txn + compare-and-put txn, own object \
             per allocator); requests counted by the server's /metrics"
        ),
        figures,
    ))
}

/// What measurements of the worker printed, added up.
#[derive(Default)]
struct Run {
    latencies: Vec<f64>,
    wall_s: f64,
    /// Requests the server counted during the timed part.
    requests: f64,
    /// Of those, answered 409 Conflict (API server only).
    conflicts: f64,
    /// CPU time of the clients (the worker process) in the timed part.
    cpu_s: f64,
}

impl Run {
    fn of(out: &Value) -> Result<Run> {
        Ok(Run {
            latencies: samples(out)?,
            wall_s: out["wall_s"].as_f64().ok_or("no wall_s")?,
            requests: out["requests"].as_f64().unwrap_or(0.0),
            conflicts: out["conflicts"].as_f64().unwrap_or(0.0),
            cpu_s: out["cpu_s"].as_f64().unwrap_or(0.0),
        })
    }

    /// Adds another measurement's figures.
    fn add(&mut self, other: Run) {
        self.latencies.extend(other.latencies);
        self.wall_s += other.wall_s;
        self.requests += other.requests;
        self.conflicts += other.conflicts;
        self.cpu_s += other.cpu_s;
    }

    /// Operations per second.
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.wall_s
    }

    /// `count` per operation.
    fn per_op(&self, count: f64) -> f64 {
        count / self.latencies.len() as f64
    }
}

/// ADD latency in a /64 holding 10,000 allocations against an empty /24, on the local store
/// and on etcd.
pub(super) fn fill(_binaries: &Binaries, _settings: &Settings) -> Result<Section> {
    let worker = build_worker()?;
    let etcd = LocalEtcd::start().map_err(|e| e as cmd::Error)?;
    let dir = tempfile::tempdir()?;
    let mut figures = Vec::new();
    for (backend, label) in [("local", "local store"), ("etcd", "etcd")] {
        for (pool, range, prefill) in [
            ("v6_64_10000", "fd00:1::/64", PREFILL),
            ("v4_24_empty", "10.1.0.0/24", 0),
        ] {
            let spec = json!({
                "backend": backend,
                "scenario": "fill",
                "range": range,
                "prefill": prefill,
                "adds": FILL_ADDS,
                "network": format!("fill-{pool}"),
                "dir": dir.path().join(pool),
                "endpoints": etcd.endpoints(),
                "prefix": format!("/plexus-bench/fill-{pool}"),
            });
            let out = run_worker(&worker, &spec)?;
            let latencies = samples(&out)?;
            let what = if prefill > 0 {
                format!("{label}, /64 holding {prefill}")
            } else {
                format!("{label}, empty /24")
            };
            figures.extend(p50_p99(
                &format!("{backend}_{pool}_add"),
                &format!("{what}: ADD"),
                &latencies,
            ));
            eprint!(".");
        }
    }
    eprintln!();
    Ok(Section::new(
        format!(
            "IPAM: one ADD in a large, full pool against a small, empty one ({FILL_ADDS} ADD + \
             DEL cycles, release build)"
        ),
        figures,
    ))
}

/// The p50 and p99 of `latencies` (ms) as two figures, keyed `<key>_p50_ms` and labelled
/// `<what> p50`.
fn p50_p99(key: &str, what: &str, latencies: &[f64]) -> [Figure; 2] {
    let mut sorted = latencies.to_vec();
    sorted.sort_by(f64::total_cmp);
    [(50.0, "p50"), (99.0, "p99")].map(|(p, name)| {
        Figure::value(
            format!("{key}_{name}_ms"),
            format!("{what} {name}"),
            "ms",
            percentile(&sorted, p),
        )
    })
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Builds the `store_bench` example in release mode; its path.
pub(super) fn build_worker() -> Result<PathBuf> {
    let root = cmd::workspace_root();
    cmd::step("Building plexus-ipam's store_bench (release)");
    cmd::run(cmd::cargo().current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "plexus-ipam",
        "--example",
        "store_bench",
    ]))?;
    Ok(cmd::profile_dir(&target_dir(&root), "release").join("examples/store_bench"))
}

/// Runs the worker with `spec`; the JSON it printed.
pub(super) fn run_worker(worker: &Path, spec: &Value) -> Result<Value> {
    let out = Command::new(worker)
        .arg(spec.to_string())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", worker.display()))?;
    if !out.status.success() {
        return Err(format!(
            "store_bench {spec} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The latencies (ms) the worker printed.
fn samples(out: &Value) -> Result<Vec<f64>> {
    let latencies: Vec<f64> = serde_json::from_value(out["latencies_ms"].clone())?;
    if latencies.is_empty() {
        return Err("store_bench printed no latencies".into());
    }
    Ok(latencies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p99_of_a_hundred_samples_is_near_the_top() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let [p50, p99] = p50_p99("k_add", "who: ADD", &samples);
        assert_eq!(p50.key, "k_add_p50_ms");
        assert!(
            matches!(p50.measure, super::super::report::Measure::Value(x) if (x - 50.5).abs() < 1e-9)
        );
        assert!(
            matches!(p99.measure, super::super::report::Measure::Value(x) if (x - 99.01).abs() < 1e-9)
        );
    }

    /// The benchmarks themselves, printed as the bench prints them:
    /// `cargo test -p xtask ipam_benchmarks -- --ignored --nocapture` (needs root for nothing,
    /// but the cached kube-apiserver for the concurrency part).
    #[test]
    #[ignore = "takes a minute; run by hand"]
    fn ipam_benchmarks() {
        let binaries = Binaries {
            plexus: PathBuf::new(),
            plexus_ipam: PathBuf::new(),
            plugin_dir: PathBuf::new(),
        };
        let settings = Settings {
            runs: 1,
            warmup: 0,
            e2e_pods: 0,
        };
        let mut sections = vec![fill(&binaries, &settings).unwrap()];
        sections.push(concurrency(&binaries, &settings).unwrap());
        let report = super::super::Report {
            settings,
            sections,
            load: None,
            elapsed_s: 0.0,
        };
        println!("{}", report.table());
        println!("{:#}", report.to_json());
    }
}
