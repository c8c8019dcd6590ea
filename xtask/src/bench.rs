//! `cargo xtask bench`: what Plexus costs on top of the plugins it delegates to.
//!
//! The bench builds the shipped binaries in release mode and runs every benchmark of
//! [`BENCHMARKS`] in turn against the real reference plugins, a real etcd and a real
//! kube-apiserver. Each benchmark is a function that sets up what it needs and returns one
//! [`Section`] of [`Figure`]s; the [`Report`] prints them all as a table and writes the same
//! figures as JSON to `<target dir>/plexus-bench.json`. A new benchmark is a new function added
//! to [`BENCHMARKS`].
//!
//! The parts, one job each:
//!
//! * [`latency`]: one pod's ADD and DEL through `plexus` against the same delegates run
//!   directly, with static delegates;
//! * [`memory`]: peak memory of one `plexus` ADD and DEL and of one `plexus-ipam` ADD;
//! * [`kubernetes`]: the same pod with two NetworkAttachmentDefinitions on the API server, and
//!   the API requests per ADD and DEL ([`audit`] reads them from the API server's audit log);
//! * [`pods`]: pods per second attached end to end, 200 pods over 4 simulated nodes, and
//!   (`pods_agent`) `--e2e-pods` pods over 8 nodes with and without the node agent;
//! * [`ipam`]: `plexus-ipam`'s stores under concurrency and in a large, full pool;
//! * [`agent`]: allocations through the node agent `plexusd` (group commit), 8 nodes with 1, 4
//!   and 16 in flight, next to the raw one-write-per-allocation ceiling, and `plexus-ipam`
//!   DEL/s with and without the agent;
//! * [`agent_kube`]: a Kubernetes ADD through `plexusd` and without it, next to its floor (a
//!   warm PATCH plus a process start), and `plexusd`'s memory with 1,000 pods and 200 NADs
//!   cached, before and after 10,000 cycles;
//! * [`sizes`]: each shipped binary's size, next to Multus's and Whereabouts's;
//! * [`cycle`] runs one pod through `plexus` or its delegates directly, [`process`] runs one
//!   process with its time and memory, [`lab`] is the node and its pods, [`report`] the figures.
//!
//! Most benchmarks move their thread into a throwaway node network namespace
//! ([`Lab::in_node`]) so that the host is never touched. Those that talk to the API server
//! cannot: `plexus` must reach it on the host's loopback, so their plugins run in the host's
//! own namespace ([`Lab::on_host`]) on a bridge without an address and a veth pair, both named
//! for this run and removed at the end.
//!
//! The pod is the integration tests' usual one: a bridge primary (`eth0`) and two macvlan
//! secondaries (`net1`, `net2`) on a veth master, all with host-local IPAM.

use std::fs;
use std::path::{Path, PathBuf};

use crate::cmd::{self, Result};

mod agent;
mod agent_kube;
mod audit;
mod cycle;
mod ipam;
mod kubernetes;
mod lab;
mod latency;
mod memory;
mod pods;
mod process;
mod report;
mod sizes;

use lab::Lab;
use report::{Report, Section};

/// Untimed runs before the timed ones, so that caches are warm.
const WARMUP_RUNS: u32 = 3;
/// The version Plexus and its delegates speak (the reference plugins go up to 1.0.0).
const CNI_VERSION: &str = "1.0.0";
/// `PATH` of every process the bench starts (everything else of our environment is cleared).
const PROCESS_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
/// `CNI_ARGS` of every call, as a runtime would pass them.
const CNI_ARGS: &str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=bench";
/// How long Plexus lets one delegate call take.
const DELEGATE_TIMEOUT_SECONDS: u64 = 20;

/// A benchmark: its key in the JSON, and the function that sets up what it needs, measures, and
/// returns its section.
type Benchmark = (&'static str, fn(&Binaries, &Settings) -> Result<Section>);

/// Every benchmark, in the order they run and are reported.
const BENCHMARKS: &[Benchmark] = &[
    ("latency", latency::latency),
    ("memory", memory::memory),
    ("ipam_memory", memory::ipam_memory),
    ("kubernetes", kubernetes::kubernetes),
    ("pods", pods::pods),
    ("pods_agent", pods::pods_agent),
    ("ipam_concurrency", ipam::concurrency),
    ("ipam_fill", ipam::fill),
    ("agent_ipam", agent::agent_ipam),
    ("agent_kube", agent_kube::agent_kube),
    ("agent_memory", agent_kube::agent_memory),
    ("sizes", sizes::sizes),
];

/// Why the bench refuses to run as another user.
const NEEDS_ROOT: &str = "cargo xtask bench needs root: it creates network namespaces and runs \
                          CNI plugins (try `sudo -E cargo xtask bench`)";

/// Runs `cargo xtask bench`.
pub fn run(args: &crate::BenchArgs) -> Result {
    if !cmd::is_root() {
        return Err(NEEDS_ROOT.into());
    }
    let selected = selected(&args.only)?;
    let root = cmd::workspace_root();
    let target = target_dir(&root);
    if !args.no_build {
        crate::binaries::build_release()?;
    }
    let settings = Settings {
        runs: args.runs,
        warmup: WARMUP_RUNS,
        e2e_pods: args.e2e_pods,
    };
    let binaries = Binaries {
        plexus: cmd::profile_dir(&target, "release").join("plexus"),
        plexus_ipam: cmd::profile_dir(&target, "release").join("plexus-ipam"),
        plugin_dir: plugin_dir(),
    };
    let started = std::time::Instant::now();
    let sections = run_benchmarks(&selected, &binaries, &settings)?;
    let report = Report {
        settings,
        sections,
        load: load_average(),
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    println!("\n{}", report.table());
    let path = target.join("plexus-bench.json");
    let mut json = report.to_json();
    if !args.only.is_empty() {
        keep_other_sections(&mut json, &path);
    }
    fs::write(&path, format!("{json:#}\n"))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// The benchmarks `--only` names (every one when it names none); an unknown name is an error
/// that lists the known ones.
fn selected(only: &[String]) -> Result<Vec<&'static Benchmark>> {
    for name in only {
        if !BENCHMARKS.iter().any(|(key, _)| key == name) {
            let known: Vec<&str> = BENCHMARKS.iter().map(|(key, _)| *key).collect();
            return Err(format!("no benchmark {name:?}; known: {}", known.join(", ")).into());
        }
    }
    Ok(BENCHMARKS
        .iter()
        .filter(|(key, _)| only.is_empty() || only.iter().any(|name| name == key))
        .collect())
}

/// After a run with `--only`: the sections of the last report at `path` that this run did not
/// measure are kept, in [`BENCHMARKS`] order, so that the file still holds every figure.
fn keep_other_sections(json: &mut serde_json::Value, path: &Path) {
    let Some(old) = fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
    else {
        return;
    };
    let mut merged = serde_json::Map::new();
    for (key, _) in BENCHMARKS {
        if let Some(section) = json["benchmarks"]
            .get(*key)
            .or_else(|| old["benchmarks"].get(*key))
        {
            merged.insert(key.to_string(), section.clone());
        }
    }
    json["benchmarks"] = serde_json::Value::Object(merged);
}

/// Runs the benchmarks in turn.
fn run_benchmarks(
    benchmarks: &[&Benchmark],
    binaries: &Binaries,
    settings: &Settings,
) -> Result<Vec<Section>> {
    benchmarks
        .iter()
        .map(|(key, bench)| {
            cmd::step(&format!("Benchmark: {key}"));
            let started = std::time::Instant::now();
            let mut section = bench(binaries, settings)?;
            section.key = key;
            eprintln!("  ({key}: {:.0} s)", started.elapsed().as_secs_f64());
            Ok(section)
        })
        .collect()
}

/// The 1, 5 and 15 minute load averages of the machine (`/proc/loadavg`), as the report
/// states them: the figures are only comparable at a similar load.
fn load_average() -> Option<[f64; 3]> {
    let text = fs::read_to_string("/proc/loadavg").ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

/// The programs every benchmark runs.
#[derive(Debug, Clone)]
struct Binaries {
    /// The release build of `plexus`.
    plexus: PathBuf,
    /// The release build of `plexus-ipam`.
    plexus_ipam: PathBuf,
    /// The reference CNI plugins.
    plugin_dir: PathBuf,
}

/// Cargo's target directory: `CARGO_TARGET_DIR` (relative to the workspace) or `target`.
fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// The reference CNI plugins: `CNI_PLUGIN_DIR` if set (as for the tests), else `/usr/lib/cni`.
fn plugin_dir() -> PathBuf {
    std::env::var_os("CNI_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/cni"))
}

/// How many runs each benchmark makes.
#[derive(Debug, Clone, Copy)]
struct Settings {
    /// Timed runs.
    runs: u32,
    /// Untimed runs before them.
    warmup: u32,
    /// Pods of the end-to-end benchmark with and without the agent.
    e2e_pods: usize,
}
