//! `cargo xtask bench`: what Plexus costs on top of the plugins it delegates to.
//!
//! The bench builds `plexus` in release mode and runs every benchmark of [`BENCHMARKS`] in
//! turn against the real reference plugins. Each benchmark is a function that sets up the
//! [`Lab`] it needs and returns one [`Section`] of [`Figure`]s; the [`Report`] prints them all as
//! a table and writes the same figures as JSON to `<target dir>/plexus-bench.json`. A new
//! benchmark is a new function added to [`BENCHMARKS`].
//!
//! Most benchmarks move their thread into a throwaway node network namespace
//! ([`Lab::in_node`]) so that the host is never touched. The Kubernetes one cannot: `plexus`
//! must reach the local API server on the host's loopback, so its plugins run in the host's own
//! namespace ([`Lab::on_host`]) on a bridge without an address and a veth pair, both named for
//! this run and removed at the end.
//!
//! The pod is the integration tests' usual one: a bridge primary (`eth0`) and two macvlan
//! secondaries (`net1`, `net2`) on a veth master, all with host-local IPAM.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::marker::PhantomData;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1 as k8s;
use kube::api::{Api, ObjectMeta, PostParams};
use nix::sched::{setns, CloneFlags};
use plexus::pod_networks::POD_ANNOTATIONS_CAPABILITY;
use plexus::{links, netns};
use plexus_cni::config::NetworkConfigList;
use plexus_cni::CniResult;
use plexus_crds::{NetworkAttachmentDefinition, NetworkAttachmentDefinitionSpec};
use plexus_tests::cluster::{self, LocalCluster, SA_USER};
use plexus_tests::unique_name;
use serde_json::{json, Map, Value};

use crate::cmd::{self, Result};

mod ipam;

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
    ("latency", latency),
    ("memory", memory),
    ("kubernetes", kubernetes),
    ("ipam_concurrency", ipam::concurrency),
    ("ipam_fill", ipam::fill),
];

/// Why the bench refuses to run as another user.
const NEEDS_ROOT: &str = "cargo xtask bench needs root: it creates network namespaces and runs \
                          CNI plugins (try `sudo -E cargo xtask bench`)";

/// Runs `cargo xtask bench`.
pub fn run(args: &crate::BenchArgs) -> Result {
    if !cmd::is_root() {
        return Err(NEEDS_ROOT.into());
    }
    let root = cmd::workspace_root();
    let target = target_dir(&root);
    cmd::step("Building plexus (release)");
    cmd::run(
        cmd::cargo()
            .current_dir(&root)
            .args(["build", "--release", "-p", "plexus"]),
    )?;
    let settings = Settings {
        runs: args.runs,
        warmup: WARMUP_RUNS,
    };
    let binaries = Binaries {
        plexus: target.join("release/plexus"),
        plugin_dir: plugin_dir(),
    };
    let sections = run_benchmarks(&binaries, &settings)?;
    let report = Report { settings, sections };
    println!("\n{}", report.table());
    let path = target.join("plexus-bench.json");
    fs::write(&path, format!("{:#}\n", report.to_json()))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// Runs every benchmark of [`BENCHMARKS`] in turn.
fn run_benchmarks(binaries: &Binaries, settings: &Settings) -> Result<Vec<Section>> {
    BENCHMARKS
        .iter()
        .map(|(key, bench)| {
            cmd::step(&format!("Benchmark: {key}"));
            let mut section = bench(binaries, settings)?;
            section.key = key;
            Ok(section)
        })
        .collect()
}

/// The programs every benchmark runs.
#[derive(Debug, Clone)]
struct Binaries {
    /// The release build of `plexus`.
    plexus: PathBuf,
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

// ---------------------------------------------------------------------------------------------
// Benchmarks
// ---------------------------------------------------------------------------------------------

/// How many runs each benchmark makes.
#[derive(Debug, Clone, Copy)]
struct Settings {
    /// Timed runs.
    runs: u32,
    /// Untimed runs before them.
    warmup: u32,
}

/// Wall time of one ADD and one DEL of the pod through `plexus`, and of the same delegate calls
/// made directly by the bench; the difference is Plexus's own cost. The two are interleaved
/// (alternating which goes first) so that drift in the machine's load hits both alike.
fn latency(binaries: &Binaries, settings: &Settings) -> Result<Section> {
    let lab = &Lab::in_node(binaries)?;
    let config = lab.plexus_config(None);
    let networks = lab.networks()?;
    for _ in 0..settings.warmup {
        plexus_cycle(lab, &config)?;
        direct_cycle(lab, &networks)?;
    }
    let mut plexus = Cycles::default();
    let mut direct = Cycles::default();
    for run in 0..settings.runs {
        if run % 2 == 0 {
            plexus.push(plexus_cycle(lab, &config)?);
            direct.push(direct_cycle(lab, &networks)?);
        } else {
            direct.push(direct_cycle(lab, &networks)?);
            plexus.push(plexus_cycle(lab, &config)?);
        }
        eprint!(".");
    }
    eprintln!();
    let mut figures = Vec::new();
    for (command, plexus, direct) in [
        ("ADD", &plexus.add, &direct.add),
        ("DEL", &plexus.del, &direct.del),
    ] {
        figures.extend(overhead_figures(command, plexus, direct));
    }
    Ok(Section::new(
        format!(
            "Latency of one pod with 3 delegates, ms ({} runs after {} warm-up)",
            settings.runs, settings.warmup
        ),
        figures,
    ))
}

/// The figures comparing one command through Plexus with the same delegate calls made directly.
fn overhead_figures(command: &str, plexus: &[f64], direct: &[f64]) -> Vec<Figure> {
    let plexus = Spread::of(plexus);
    let direct = Spread::of(direct);
    let lower = command.to_ascii_lowercase();
    let overhead = overhead_pair(
        &format!("{lower}_overhead"),
        format!("{command} overhead (median plexus - direct)"),
        format!("{command} overhead relative to direct"),
        plexus.median,
        direct.median,
    );
    let mut figures = vec![
        Figure::spread(
            format!("plexus_{lower}"),
            format!("plexus {command}"),
            "ms",
            plexus,
        ),
        Figure::spread(
            format!("direct_{lower}"),
            format!("direct {command} (3 delegates)"),
            "ms",
            direct,
        ),
    ];
    figures.extend(overhead);
    figures
}

/// Plexus's overhead over the direct calls, from their medians: in ms (`key`) and relative to
/// the direct calls (`<key>_pct`).
fn overhead_pair(
    key: &str,
    label: String,
    relative_label: String,
    plexus: f64,
    direct: f64,
) -> [Figure; 2] {
    let overhead = plexus - direct;
    [
        Figure::value(key.to_string(), label, "ms", overhead),
        Figure::value(
            format!("{key}_pct"),
            relative_label,
            "%",
            100.0 * overhead / direct,
        ),
    ]
}

/// Peak memory of one `plexus` ADD and DEL: of the plexus process itself (which logs its own
/// `getrusage` peak at debug level), and of its whole process tree (from `wait4`), next to the
/// largest delegate run directly and to a trivial process started the same way (the floor below
/// which no `wait4` figure can go, see [`Spawn::Fresh`]).
fn memory(binaries: &Binaries, _settings: &Settings) -> Result<Section> {
    let lab = &Lab::in_node(binaries)?;
    let log = lab.dir.path().join("plexus-debug.log");
    let config = lab.plexus_config(Some(&log));
    let pod = lab.fresh_pod()?;
    let add = run_plexus(lab, "ADD", &pod, &config, Spawn::Fresh)?;
    let add_self = last_peak_rss(&log)?;
    let del = run_plexus(lab, "DEL", &pod, &config, Spawn::Fresh)?;
    let del_self = last_peak_rss(&log)?;
    drop(pod);

    let networks = lab.networks()?;
    let pod = lab.fresh_pod()?;
    let direct = direct_add(lab, &pod, &networks, Spawn::Fresh)?;
    direct_del(lab, &pod, &networks, &direct.results, Spawn::Fresh)?;
    let largest_delegate = direct.runs.iter().map(|r| r.max_rss_kib).max();
    let floor = ProcessRun::start(Path::new("/bin/true"), &[], &[], Spawn::Fresh)?;

    let kib = |key: &str, label: &str, value: u64| {
        Figure::value(key.into(), label.into(), "KiB", value as f64)
    };
    Ok(Section::new(
        "Peak memory (max RSS), one dedicated run".to_string(),
        vec![
            kib(
                "plexus_add_self_kib",
                "plexus ADD, plexus process itself",
                add_self,
            ),
            kib(
                "plexus_add_tree_kib",
                "plexus ADD, largest process of its tree",
                add.max_rss_kib,
            ),
            kib(
                "plexus_del_self_kib",
                "plexus DEL, plexus process itself",
                del_self,
            ),
            kib(
                "plexus_del_tree_kib",
                "plexus DEL, largest process of its tree",
                del.max_rss_kib,
            ),
            kib(
                "direct_add_largest_delegate_kib",
                "direct ADD, largest delegate",
                largest_delegate.unwrap_or(0),
            ),
            kib(
                "spawn_floor_kib",
                "floor: /bin/true started the same way",
                floor.max_rss_kib,
            ),
        ],
    ))
}

/// The last `peak_rss_kib=<N>` that plexus logged (at debug level, at the end of a command).
fn last_peak_rss(log: &Path) -> Result<u64> {
    let text =
        fs::read_to_string(log).map_err(|e| format!("cannot read {}: {e}", log.display()))?;
    text.lines()
        .rev()
        .find_map(|line| {
            let rest = &line[line.find("peak_rss_kib=")? + "peak_rss_kib=".len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .ok_or_else(|| format!("plexus logged no peak_rss_kib=<N> in {}", log.display()).into())
}

// ---------------------------------------------------------------------------------------------
// Kubernetes
// ---------------------------------------------------------------------------------------------

/// The annotation naming a pod's NetworkAttachmentDefinitions.
const NETWORKS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks";
/// The namespace of the benchmark's pods and NetworkAttachmentDefinitions.
const KUBE_NAMESPACE: &str = "default";
/// The pods' [`NETWORKS_ANNOTATION`]: both NetworkAttachmentDefinitions (`net1`, `net2`).
const KUBE_NETWORKS: &str = "storage,backup";
/// How long the audit log must stay unchanged before its events are counted.
const AUDIT_SETTLE: Duration = Duration::from_millis(500);

/// Where `plexus` gets the pod's annotations from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Annotations {
    /// A GET of the pod from the API server.
    FromApi,
    /// `runtimeConfig["io.kubernetes.cri.pod-annotations"]`, as containerd hands them over.
    FromRuntime,
}

impl Annotations {
    const ALL: [Annotations; 2] = [Annotations::FromApi, Annotations::FromRuntime];

    /// Its part of figure keys.
    fn key(self) -> &'static str {
        match self {
            Annotations::FromApi => "pod_get",
            Annotations::FromRuntime => "runtime_annotations",
        }
    }

    /// Its part of figure labels.
    fn label(self) -> &'static str {
        match self {
            Annotations::FromApi => "pod GET",
            Annotations::FromRuntime => "runtime annotations",
        }
    }
}

/// A Kubernetes pod of the benchmark: its name and UID.
struct KubePod {
    name: String,
    uid: String,
}

/// The wall-clock interval of one `plexus` run, in µs since the epoch, to find the API
/// requests it made in the audit log.
type Window = (i64, i64);

/// The timed runs through `plexus` in one [`Annotations`] mode.
#[derive(Debug, Default)]
struct KubeRuns {
    times: Cycles,
    /// Each run's ADD and DEL windows.
    windows: Vec<(Window, Window)>,
}

/// Wall time of one Kubernetes pod's ADD and DEL through `plexus`, as Plexus's service account
/// against a local API server: the primary from a `clusterNetwork` file, `net1` and `net2` from
/// the two NetworkAttachmentDefinitions that the pod's annotation names. Once with the pod read
/// from the API, once with its annotations handed over in runtimeConfig as containerd does (no
/// pod GET); and the same three delegates run directly, for Plexus's overhead in Kubernetes mode.
/// Also the API requests each ADD and DEL made, counted from the API server's audit log.
///
/// Runs on the host ([`Lab::on_host`]): `plexus` must reach the API server on its loopback.
/// Every run has a pod of its own; the three measurements of a run take turns going first.
fn kubernetes(binaries: &Binaries, settings: &Settings) -> Result<Section> {
    let apiserver = crate::apiserver::ensure()?;
    let lab = &Lab::on_host(binaries)?;
    let cluster = &LocalCluster::start_with(&apiserver).map_err(|e| e as cmd::Error)?;
    let pods = kube_set_up(lab, cluster, settings.warmup + settings.runs)?;
    let configs = Annotations::ALL.map(|mode| kube_config(lab, cluster, mode));
    let networks = lab.networks()?;

    let mut plexus: [KubeRuns; 2] = Default::default();
    let mut direct = Cycles::default();
    for (round, pod) in pods.iter().enumerate() {
        let timed = round >= settings.warmup as usize;
        for turn in 0..3 {
            match (round + turn) % 3 {
                2 => {
                    let cycle = direct_cycle(lab, &networks)?;
                    if timed {
                        direct.push(cycle);
                    }
                }
                mode => {
                    let (times, windows) = kube_cycle(lab, pod, &configs[mode])?;
                    if timed {
                        plexus[mode].times.push(times);
                        plexus[mode].windows.push(windows);
                    }
                }
            }
        }
        if timed {
            eprint!(".");
        }
    }
    eprintln!();

    let requests = settled_sa_requests(cluster);
    let mut figures = Vec::new();
    for (command, direct) in [("ADD", &direct.add), ("DEL", &direct.del)] {
        let lower = command.to_ascii_lowercase();
        let direct = Spread::of(direct);
        let mut overheads = Vec::new();
        for (mode, runs) in Annotations::ALL.into_iter().zip(&plexus) {
            let times = if command == "ADD" {
                &runs.times.add
            } else {
                &runs.times.del
            };
            let times = Spread::of(times);
            overheads.extend(overhead_pair(
                &format!("{lower}_overhead_{}", mode.key()),
                format!("{command} overhead, {} (median)", mode.label()),
                format!("{command} overhead, {}, relative", mode.label()),
                times.median,
                direct.median,
            ));
            figures.push(Figure::spread(
                format!("plexus_{lower}_{}", mode.key()),
                format!("plexus {command}, {}", mode.label()),
                "ms",
                times,
            ));
        }
        figures.push(Figure::spread(
            format!("direct_{lower}"),
            format!("direct {command} (3 delegates)"),
            "ms",
            direct,
        ));
        figures.extend(overheads);
    }
    figures.extend(request_figures(&plexus, &requests));
    Ok(Section::new(
        format!(
            "Kubernetes: primary file + 2 NADs on kube-apiserver {}, ms ({} runs after {} \
             warm-up); API requests from its audit log, by kind for the first run",
            cluster::APISERVER_VERSION,
            settings.runs,
            settings.warmup
        ),
        figures,
    ))
}

/// The API requests per ADD and per DEL in each mode (a spread over the runs), each followed by
/// the requests of the first timed run by verb and resource.
fn request_figures(plexus: &[KubeRuns; 2], requests: &[(i64, String)]) -> Vec<Figure> {
    let mut figures = Vec::new();
    let mut attributed = 0;
    for (index, command) in ["ADD", "DEL"].into_iter().enumerate() {
        let lower = command.to_ascii_lowercase();
        for (mode, runs) in Annotations::ALL.into_iter().zip(plexus) {
            let per_run: Vec<BTreeMap<String, u32>> = runs
                .windows
                .iter()
                .map(|windows| {
                    let window = if index == 0 { windows.0 } else { windows.1 };
                    requests_in(requests, window)
                })
                .collect();
            let counts: Vec<f64> = per_run
                .iter()
                .map(|by_kind| f64::from(by_kind.values().sum::<u32>()))
                .collect();
            attributed += counts.iter().sum::<f64>() as usize;
            let key = format!("{lower}_requests_{}", mode.key());
            figures.push(Figure::spread(
                key.clone(),
                format!("API requests per {command}, {}", mode.label()),
                "req",
                Spread::of(&counts),
            ));
            let first = per_run.into_iter().next().unwrap_or_default();
            for (kind, count) in first {
                figures.push(Figure::value(
                    format!(
                        "{key}_first_run_{}",
                        kind.replace([' ', '/', '-', '.'], "_")
                    ),
                    format!("    {kind}"),
                    "req",
                    f64::from(count),
                ));
            }
        }
    }
    // Every request of the service account after the first timed run began must belong to a
    // timed run (warm-up runs come first).
    let first_start = plexus
        .iter()
        .filter_map(|runs| runs.windows.first().map(|w| w.0 .0))
        .min()
        .unwrap_or(i64::MAX);
    let after = requests.iter().filter(|(at, _)| *at >= first_start).count();
    if after != attributed {
        eprintln!(
            "bench: {} API requests of {SA_USER} fell outside every timed plexus run",
            after.abs_diff(attributed)
        );
    }
    figures
}

/// Writes the primary's file (`clusterNetwork`) and creates the two NetworkAttachmentDefinitions
/// and `count` pods annotated with both; returns the pods.
fn kube_set_up(lab: &Lab, cluster: &LocalCluster, count: u32) -> Result<Vec<KubePod>> {
    let delegates = lab.delegates();
    let conf_dir = lab.dir.path().join("net.d");
    fs::create_dir_all(&conf_dir)?;
    fs::write(conf_dir.join("10-pods.conf"), delegates[0].to_string())?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = cluster.admin_client();
        let create = PostParams::default();
        let nads: Api<NetworkAttachmentDefinition> =
            Api::namespaced(client.clone(), KUBE_NAMESPACE);
        for config in &delegates[1..] {
            let name = config["name"].as_str().unwrap_or_default();
            let spec = NetworkAttachmentDefinitionSpec {
                config: config.to_string(),
            };
            nads.create(&create, &NetworkAttachmentDefinition::new(name, spec))
                .await
                .map_err(|e| format!("create NetworkAttachmentDefinition {name}: {e}"))?;
        }
        let pods: Api<k8s::Pod> = Api::namespaced(client, KUBE_NAMESPACE);
        let mut created = Vec::new();
        for n in 0..count {
            let name = format!("bench-{n}");
            let pod = k8s::Pod {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    annotations: Some(
                        [(NETWORKS_ANNOTATION.to_string(), KUBE_NETWORKS.to_string())].into(),
                    ),
                    ..ObjectMeta::default()
                },
                spec: Some(k8s::PodSpec {
                    containers: vec![k8s::Container {
                        name: "c".into(),
                        image: Some("busybox".into()),
                        ..k8s::Container::default()
                    }],
                    ..k8s::PodSpec::default()
                }),
                ..k8s::Pod::default()
            };
            let pod = pods
                .create(&create, &pod)
                .await
                .map_err(|e| format!("create pod {name}: {e}"))?;
            let uid = pod.metadata.uid.ok_or("a created pod without a UID")?;
            created.push(KubePod { name, uid });
        }
        Ok(created)
    })
}

/// Plexus's configuration for the Kubernetes pods: the service account's kubeconfig, the
/// primary's file as `clusterNetwork`; with [`Annotations::FromRuntime`], the pod's annotations
/// in runtimeConfig, as containerd passes them to a plugin that declares the capability.
fn kube_config(lab: &Lab, cluster: &LocalCluster, mode: Annotations) -> Value {
    let conf_dir = lab.dir.path().join("net.d");
    let mut config = json!({
        "cniVersion": CNI_VERSION, "name": "plexus", "type": "plexus",
        "kubeconfig": cluster.sa_kubeconfig(),
        "clusterNetwork": conf_dir.join("10-pods.conf"), "confDir": conf_dir,
        "cniDir": lab.dir.path().join("cache"), "binDir": lab.plugin_dir,
        "delegateTimeoutSeconds": DELEGATE_TIMEOUT_SECONDS
    });
    if mode == Annotations::FromRuntime {
        config["capabilities"] = json!({POD_ANNOTATIONS_CAPABILITY: true});
        config["runtimeConfig"] = json!({
            POD_ANNOTATIONS_CAPABILITY: {NETWORKS_ANNOTATION: KUBE_NETWORKS}
        });
    }
    config
}

/// ADD then DEL of a fresh sandbox of `pod` through `plexus`; returns their wall times and
/// their wall-clock windows.
fn kube_cycle(
    lab: &Lab,
    pod: &KubePod,
    config: &Value,
) -> Result<((Duration, Duration), (Window, Window))> {
    let sandbox = lab.fresh_kube_pod(KUBE_NAMESPACE, &pod.name, &pod.uid)?;
    let run = |command| -> Result<(Duration, Window)> {
        let start = epoch_micros(SystemTime::now());
        let run = run_plexus(lab, command, &sandbox, config, Spawn::Timed)?;
        let end = epoch_micros(SystemTime::now());
        Ok((run.elapsed, (start, end)))
    };
    let (add, add_window) = run("ADD")?;
    let (del, del_window) = run("DEL")?;
    Ok(((add, del), (add_window, del_window)))
}

/// Plexus's service account's requests in the audit log, once it has stopped growing: when
/// each was received (µs since the epoch) and what it was (`verb resource`).
fn settled_sa_requests(cluster: &LocalCluster) -> Vec<(i64, String)> {
    // The API server writes an event just after it answers, so the last ones may still come.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut requests = sa_requests(cluster);
    loop {
        std::thread::sleep(AUDIT_SETTLE);
        let now = sa_requests(cluster);
        if now.len() == requests.len() || Instant::now() > deadline {
            return now;
        }
        requests = now;
    }
}

/// Plexus's service account's requests in the audit log so far.
fn sa_requests(cluster: &LocalCluster) -> Vec<(i64, String)> {
    cluster
        .audit_events()
        .iter()
        .filter(|event| event["user"]["username"] == SA_USER)
        .filter_map(|event| {
            let received = parse_micro_time(event["requestReceivedTimestamp"].as_str()?)?;
            Some((received, request_kind(event)))
        })
        .collect()
}

/// What a request was, from its audit event: `verb resource[/subresource]`, or `verb URI` for a
/// request of no object.
fn request_kind(event: &Value) -> String {
    let verb = event["verb"].as_str().unwrap_or("?");
    let object = &event["objectRef"];
    match object["resource"].as_str() {
        Some(resource) => match object["subresource"].as_str() {
            Some(sub) => format!("{verb} {resource}/{sub}"),
            None => format!("{verb} {resource}"),
        },
        None => format!("{verb} {}", event["requestURI"].as_str().unwrap_or("?")),
    }
}

/// The requests received within `window`, counted by kind.
fn requests_in(requests: &[(i64, String)], (start, end): Window) -> BTreeMap<String, u32> {
    let mut counts = BTreeMap::new();
    for (_, kind) in requests.iter().filter(|(at, _)| (start..=end).contains(at)) {
        *counts.entry(kind.clone()).or_insert(0) += 1;
    }
    counts
}

/// Microseconds since the epoch.
fn epoch_micros(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Microseconds since the epoch of a Kubernetes `MicroTime` (`2006-01-02T15:04:05.000000Z`, in
/// UTC, as audit events give them).
fn parse_micro_time(text: &str) -> Option<i64> {
    let (date, time) = text.strip_suffix('Z')?.split_once('T')?;
    let numbers = |text: &str, sep: char| -> Option<Vec<i64>> {
        let parts: Option<Vec<i64>> = text.split(sep).map(|p| p.parse().ok()).collect();
        parts.filter(|p| p.len() == 3)
    };
    let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
    let (ymd, hms) = (numbers(date, '-')?, numbers(clock, ':')?);
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let micros: i64 = format!("{fraction:0<6}")[..6].parse().ok()?;
    let seconds =
        days_from_civil(ymd[0], ymd[1], ymd[2]) * 86_400 + hms[0] * 3_600 + hms[1] * 60 + hms[2];
    Some(seconds * 1_000_000 + micros)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

// ---------------------------------------------------------------------------------------------
// One pod, through plexus or directly
// ---------------------------------------------------------------------------------------------

/// Wall times, in ms, of ADD and DEL cycles.
#[derive(Debug, Default)]
struct Cycles {
    add: Vec<f64>,
    del: Vec<f64>,
}

impl Cycles {
    /// Records one cycle's ADD and DEL times.
    fn push(&mut self, (add, del): (Duration, Duration)) {
        self.add.push(ms(add));
        self.del.push(ms(del));
    }
}

/// Milliseconds of a duration.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// ADD then DEL of a fresh pod through `plexus`; returns their wall times.
fn plexus_cycle(lab: &Lab, config: &Value) -> Result<(Duration, Duration)> {
    let pod = lab.fresh_pod()?;
    let add = run_plexus(lab, "ADD", &pod, config, Spawn::Timed)?;
    let del = run_plexus(lab, "DEL", &pod, config, Spawn::Timed)?;
    Ok((add.elapsed, del.elapsed))
}

/// ADD then DEL of a fresh pod by calling the delegates directly; returns the sums of their
/// plugin calls' wall times.
fn direct_cycle(
    lab: &Lab,
    networks: &[(String, NetworkConfigList)],
) -> Result<(Duration, Duration)> {
    let pod = lab.fresh_pod()?;
    let add = direct_add(lab, &pod, networks, Spawn::Timed)?;
    let del = direct_del(lab, &pod, networks, &add.results, Spawn::Timed)?;
    Ok((add.elapsed(), del))
}

/// Runs `plexus` for `command` on `pod`, as a runtime would, and fails unless it succeeds.
fn run_plexus(
    lab: &Lab,
    command: &str,
    pod: &Pod,
    config: &Value,
    spawn: Spawn,
) -> Result<ProcessRun> {
    let env = cni_env(command, pod, "eth0", &lab.plugin_dir);
    let run = ProcessRun::start(&lab.plexus, &env, config.to_string().as_bytes(), spawn)?;
    run.check(&format!("plexus {command}"))?;
    Ok(run)
}

/// What a direct ADD of every network gave: each plugin call, and each network's result.
struct DirectAdd {
    runs: Vec<ProcessRun>,
    results: Vec<CniResult>,
}

impl DirectAdd {
    /// The sum of the plugin calls' wall times.
    fn elapsed(&self) -> Duration {
        self.runs.iter().map(|r| r.elapsed).sum()
    }
}

/// ADD of every network in order, each list's plugins in order with `prevResult` chained: the
/// calls Plexus makes, with the stdin it builds (the same library builds it here).
fn direct_add(
    lab: &Lab,
    pod: &Pod,
    networks: &[(String, NetworkConfigList)],
    spawn: Spawn,
) -> Result<DirectAdd> {
    let mut add = DirectAdd {
        runs: Vec::new(),
        results: Vec::new(),
    };
    for (ifname, list) in networks {
        let env = cni_env("ADD", pod, ifname, &lab.plugin_dir);
        let mut prev: Option<Value> = None;
        let mut result = CniResult::default();
        for index in 0..list.plugins.len() {
            let stdin = list.plugin_request(index, &Map::new(), prev.as_ref());
            let run = run_delegate(lab, list, index, &env, &stdin, spawn)?;
            result = CniResult::parse(&run.stdout, list.version)
                .map_err(|e| format!("{} ADD printed no result: {e}", list.name))?;
            prev = Some(result.to_value(list.version));
            add.runs.push(run);
        }
        add.results.push(result);
    }
    Ok(add)
}

/// DEL of every network in reverse order, each list's plugins in reverse, with the network's ADD
/// result as `prevResult` (from 0.4.0 on), as Plexus does; returns the sum of the calls' times.
fn direct_del(
    lab: &Lab,
    pod: &Pod,
    networks: &[(String, NetworkConfigList)],
    results: &[CniResult],
    spawn: Spawn,
) -> Result<Duration> {
    let mut elapsed = Duration::ZERO;
    for ((ifname, list), result) in networks.iter().zip(results).rev() {
        let env = cni_env("DEL", pod, ifname, &lab.plugin_dir);
        let prev = list
            .version
            .has_prev_result_on_del()
            .then(|| result.to_value(list.version));
        for index in (0..list.plugins.len()).rev() {
            let stdin = list.plugin_request(index, &Map::new(), prev.as_ref());
            elapsed += run_delegate(lab, list, index, &env, &stdin, spawn)?.elapsed;
        }
    }
    Ok(elapsed)
}

/// Runs plugin `index` of `list` with `env` and `stdin`, and fails unless it succeeds.
fn run_delegate(
    lab: &Lab,
    list: &NetworkConfigList,
    index: usize,
    env: &[(&'static str, String)],
    stdin: &Map<String, Value>,
    spawn: Spawn,
) -> Result<ProcessRun> {
    let plugin = &list.plugins[index].plugin_type;
    let stdin = serde_json::to_vec(stdin)?;
    let run = ProcessRun::start(&lab.plugin_dir.join(plugin), env, &stdin, spawn)?;
    run.check(&format!("{plugin} (network {})", list.name))?;
    Ok(run)
}

/// The CNI environment of one call on `pod`.
fn cni_env(
    command: &str,
    pod: &Pod,
    ifname: &str,
    plugin_dir: &Path,
) -> Vec<(&'static str, String)> {
    vec![
        ("CNI_COMMAND", command.to_string()),
        ("CNI_CONTAINERID", pod.id.clone()),
        ("CNI_NETNS", pod.netns.to_string_lossy().into_owned()),
        ("CNI_IFNAME", ifname.to_string()),
        ("CNI_ARGS", pod.cni_args.clone()),
        ("CNI_PATH", plugin_dir.to_string_lossy().into_owned()),
    ]
}

// ---------------------------------------------------------------------------------------------
// Running a process with its time and memory
// ---------------------------------------------------------------------------------------------

/// How the bench starts a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spawn {
    /// The standard library's fastest way (`posix_spawn`, a vfork), for timing. The child's
    /// `ru_maxrss` then starts at the bench's own peak RSS: `execve` records the peak of the
    /// memory it leaves, which a vfork child shares with its parent.
    Timed,
    /// A real `fork` (forced by a no-op `pre_exec`), for memory: the child leaves a copy of the
    /// bench's memory that holds only its touched private pages, so its `ru_maxrss` starts lower.
    Fresh,
}

/// One finished process: what it printed, how it ended, how long it took and its peak memory.
#[derive(Debug)]
struct ProcessRun {
    stdout: Vec<u8>,
    status: ExitStatus,
    /// Wall time from just before the spawn to the end of `wait4`.
    elapsed: Duration,
    /// `ru_maxrss` from `wait4`: the largest peak RSS of the process and of the descendants it
    /// waited for (the largest single process of its tree, not a sum).
    max_rss_kib: u64,
}

impl ProcessRun {
    /// Runs `program` with only `PATH` and `env` in its environment, `stdin` as input and stderr
    /// inherited, and waits for it.
    fn start(
        program: &Path,
        env: &[(&'static str, String)],
        stdin: &[u8],
        spawn: Spawn,
    ) -> Result<ProcessRun> {
        let mut command = Command::new(program);
        if spawn == Spawn::Fresh {
            // SAFETY: the closure does nothing, so it is async-signal-safe.
            unsafe { command.pre_exec(|| Ok(())) };
        }
        command
            .env_clear()
            .env("PATH", PROCESS_PATH)
            .envs(env.iter().map(|(k, v)| (*k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let fail = |e: io::Error| format!("running {}: {e}", program.display());
        let start = Instant::now();
        let mut child = command.spawn().map_err(fail)?;
        if let Some(mut pipe) = child.stdin.take() {
            // A plugin may exit without reading its stdin; the exit status tells.
            let _ = pipe.write_all(stdin);
        }
        let mut stdout = Vec::new();
        if let Some(mut pipe) = child.stdout.take() {
            pipe.read_to_end(&mut stdout).map_err(fail)?;
        }
        let (status, max_rss_kib) = wait4(child.id()).map_err(fail)?;
        let elapsed = start.elapsed();
        Ok(ProcessRun {
            stdout,
            status,
            elapsed,
            max_rss_kib,
        })
    }

    /// Fails with what the process printed unless it exited with 0.
    fn check(&self, what: &str) -> Result {
        if self.status.success() {
            return Ok(());
        }
        Err(format!(
            "{what} failed ({}): {}",
            self.status,
            String::from_utf8_lossy(&self.stdout).trim()
        )
        .into())
    }
}

/// Reaps child `pid` with `wait4(2)`; returns its exit status and its `ru_maxrss` in KiB.
fn wait4(pid: u32) -> io::Result<(ExitStatus, u64)> {
    let pid = libc::pid_t::try_from(pid).map_err(io::Error::other)?;
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is plain old data, for which all-zero bytes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are valid for writes for the duration of the call.
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if reaped == pid {
            let max_rss = u64::try_from(usage.ru_maxrss).unwrap_or(0);
            return Ok((ExitStatus::from_raw(status), max_rss));
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The node and its pods
// ---------------------------------------------------------------------------------------------

/// A throwaway "node" network namespace that the calling thread has entered: every process the
/// bench starts, and every netlink helper called with `netns: None`, works in it instead of on
/// the host. Dropping it returns the thread to its namespace and deletes this one.
///
/// It must be dropped on the thread that entered it, so it is neither `Send` nor `Sync`.
struct Node {
    path: PathBuf,
    original: File,
    _not_send: PhantomData<*const ()>,
}

impl Node {
    /// Creates the namespace `/run/netns/pxbench-<pid>` and moves the calling thread into it.
    fn enter() -> Result<Node> {
        let original = File::open(netns::THREAD_NETNS)?;
        let path = netns::create_named(&format!("pxbench-{}", std::process::id()))?;
        let entered = File::open(&path)
            .and_then(|target| setns(&target, CloneFlags::CLONE_NEWNET).map_err(io::Error::from));
        if let Err(e) = entered {
            let _ = netns::delete(&path);
            return Err(format!("cannot enter {}: {e}", path.display()).into());
        }
        Ok(Node {
            path,
            original,
            _not_send: PhantomData,
        })
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Err(e) = setns(&self.original, CloneFlags::CLONE_NEWNET) {
            eprintln!("bench: cannot return to the original network namespace: {e}");
        }
        if let Err(e) = netns::delete(&self.path) {
            eprintln!("bench: cannot delete {}: {e}", self.path.display());
        }
    }
}

/// The node's side of the benchmark pod: the macvlan master, the bridge's name, a state
/// directory (host-local data, Plexus's cache, logs) and the binaries. Either in a throwaway node
/// namespace that the calling thread has entered ([`Lab::in_node`]), or on the host with names of
/// its own ([`Lab::on_host`]).
struct Lab {
    plexus: PathBuf,
    plugin_dir: PathBuf,
    master: String,
    bridge: String,
    dir: tempfile::TempDir,
    /// The node namespace, `None` on the host. Declared last, so that it is dropped after the
    /// rest (which lives in it).
    node: Option<Node>,
}

impl Lab {
    /// Enters a new node namespace and creates the veth pair whose one end is the macvlan
    /// master there; the bridge is `pxbr0`, the gateway of its pods.
    fn in_node(binaries: &Binaries) -> Result<Lab> {
        let node = Node::enter()?;
        let pid = std::process::id();
        Lab::create(
            binaries,
            format!("pxbm{pid}"),
            format!("pxbp{pid}"),
            "pxbr0".into(),
            Some(node),
        )
    }

    /// Works in the host's own namespace, with a uniquely named macvlan master (a veth pair)
    /// and bridge, both removed on drop. The bridge gets no address (`isGateway: false`), so the
    /// host's addresses and routes do not change.
    fn on_host(binaries: &Binaries) -> Result<Lab> {
        Lab::create(
            binaries,
            unique_name("pxbm"),
            unique_name("pxbp"),
            unique_name("pxbbr"),
            None,
        )
    }

    fn create(
        binaries: &Binaries,
        master: String,
        peer: String,
        bridge: String,
        node: Option<Node>,
    ) -> Result<Lab> {
        let lab = Lab {
            plexus: binaries.plexus.clone(),
            plugin_dir: binaries.plugin_dir.clone(),
            master,
            bridge,
            dir: tempfile::tempdir()?,
            node,
        };
        // On failure, dropping `lab` removes whatever was created.
        links::create_veth(None, &lab.master, &peer)?;
        Ok(lab)
    }

    /// The delegates, primary first: a bridge and two macvlan networks. In a node namespace the
    /// bridge is the pods' gateway; on the host it gets no address and the pods no route.
    fn delegates(&self) -> Vec<Value> {
        let ipam_dir = self.dir.path().join("ipam");
        let gateway = self.node.is_some();
        let routes = if gateway {
            json!([{"dst": "0.0.0.0/0"}])
        } else {
            json!([])
        };
        let macvlan = |name: &str, octet: u8| {
            json!({
                "cniVersion": CNI_VERSION, "name": name,
                "plugins": [{
                    "type": "macvlan", "master": self.master, "mode": "bridge",
                    "ipam": {"type": "host-local", "subnet": format!("10.{octet}.0.0/24"),
                             "dataDir": ipam_dir}
                }]
            })
        };
        vec![
            json!({
                "cniVersion": CNI_VERSION, "name": "pods", "type": "bridge", "bridge": self.bridge,
                "isGateway": gateway,
                "ipam": {"type": "host-local", "subnet": "10.10.0.0/24",
                         "routes": routes, "dataDir": ipam_dir}
            }),
            macvlan("storage", 20),
            macvlan("backup", 30),
        ]
    }

    /// The delegates with the interface names Plexus gives them.
    fn networks(&self) -> Result<Vec<(String, NetworkConfigList)>> {
        ["eth0", "net1", "net2"]
            .into_iter()
            .zip(self.delegates())
            .map(|(ifname, value)| Ok((ifname.to_string(), NetworkConfigList::from_value(value)?)))
            .collect()
    }

    /// Plexus's configuration for the pod; with `debug_log`, it logs at debug level there.
    fn plexus_config(&self, debug_log: Option<&Path>) -> Value {
        let mut config = json!({
            "cniVersion": CNI_VERSION, "name": "plexus", "type": "plexus",
            "cniDir": self.dir.path().join("cache"), "binDir": self.plugin_dir,
            "delegateTimeoutSeconds": DELEGATE_TIMEOUT_SECONDS,
            "delegates": self.delegates()
        });
        if let Some(log) = debug_log {
            config["logLevel"] = json!("debug");
            config["logFile"] = json!(log);
        }
        config
    }

    /// A pod sandbox never used before: a new container ID and network namespace, and the
    /// usual `CNI_ARGS`.
    fn fresh_pod(&self) -> Result<Pod> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        Ok(Pod {
            id: format!("bench-{pid}-{n}"),
            netns: netns::create_named(&format!("pxbench-{pid}-pod{n}"))?,
            cni_args: CNI_ARGS.to_string(),
        })
    }

    /// A fresh sandbox of the Kubernetes pod `namespace/name` with this UID, with the
    /// `CNI_ARGS` the kubelet's runtime passes.
    fn fresh_kube_pod(&self, namespace: &str, name: &str, uid: &str) -> Result<Pod> {
        let mut pod = self.fresh_pod()?;
        pod.cni_args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};\
             K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={uid}",
            pod.id
        );
        Ok(pod)
    }
}

impl Drop for Lab {
    /// On the host, removes the macvlan master's veth pair and the bridge (which the bridge
    /// plugin created); a node namespace takes them with it.
    fn drop(&mut self) {
        if self.node.is_none() {
            for link in [&self.master, &self.bridge] {
                if let Err(e) = links::delete_link(None, link) {
                    eprintln!("bench: cannot delete {link}: {e}");
                }
            }
        }
    }
}

/// A pod sandbox: a container ID, its network namespace (deleted on drop), and the `CNI_ARGS`
/// of its calls.
struct Pod {
    id: String,
    netns: PathBuf,
    cni_args: String,
}

impl Drop for Pod {
    fn drop(&mut self) {
        if let Err(e) = netns::delete(&self.netns) {
            eprintln!("bench: cannot delete {}: {e}", self.netns.display());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Figures and the report
// ---------------------------------------------------------------------------------------------

/// Median and spread of a set of samples.
#[derive(Debug, Clone)]
struct Spread {
    median: f64,
    p10: f64,
    p90: f64,
    min: f64,
    max: f64,
    samples: Vec<f64>,
}

impl Spread {
    /// The spread of `samples` (which must not be empty).
    fn of(samples: &[f64]) -> Spread {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        Spread {
            median: percentile(&sorted, 50.0),
            p10: percentile(&sorted, 10.0),
            p90: percentile(&sorted, 90.0),
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            samples: samples.to_vec(),
        }
    }
}

/// The `p`th percentile of sorted samples, interpolating linearly between closest ranks.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = p / 100.0 * (sorted.len() - 1) as f64;
    let (low, high) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[low] + (sorted[high] - sorted[low]) * (rank - low as f64)
}

/// What a figure holds: a spread over runs, or a single value.
#[derive(Debug, Clone)]
enum Measure {
    Spread(Spread),
    Value(f64),
}

/// One figure: a row of the table and an entry of the JSON.
#[derive(Debug, Clone)]
struct Figure {
    /// Its key in the JSON.
    key: String,
    /// Its label in the table.
    label: String,
    /// `ms`, `%`, `KiB` or `req` (API requests).
    unit: &'static str,
    measure: Measure,
}

impl Figure {
    fn spread(key: String, label: String, unit: &'static str, spread: Spread) -> Figure {
        Figure {
            key,
            label,
            unit,
            measure: Measure::Spread(spread),
        }
    }

    fn value(key: String, label: String, unit: &'static str, value: f64) -> Figure {
        Figure {
            key,
            label,
            unit,
            measure: Measure::Value(value),
        }
    }

    /// A number of this figure, formatted for the table.
    fn format(&self, x: f64) -> String {
        match self.unit {
            "KiB" => format!("{x:.0}"),
            "req" if x.fract() == 0.0 => format!("{x:.0}"),
            "req" => format!("{x:.1}"),
            "%" => format!("{x:+.1}"),
            _ => format!("{x:.2}"),
        }
    }

    /// A number of this figure, rounded for the JSON.
    fn round(&self, x: f64) -> Value {
        json!((x * 1000.0).round() / 1000.0)
    }

    /// The figure as JSON.
    fn to_json(&self) -> Value {
        let mut out = json!({"label": self.label, "unit": self.unit});
        match &self.measure {
            Measure::Value(x) => out["value"] = self.round(*x),
            Measure::Spread(s) => {
                for (name, x) in [
                    ("median", s.median),
                    ("p10", s.p10),
                    ("p90", s.p90),
                    ("min", s.min),
                    ("max", s.max),
                ] {
                    out[name] = self.round(x);
                }
                out["samples"] = s.samples.iter().map(|x| self.round(*x)).collect();
            }
        }
        out
    }
}

/// One benchmark's part of the report.
#[derive(Debug, Clone)]
struct Section {
    /// Its key in the JSON (set from [`BENCHMARKS`]).
    key: &'static str,
    /// Its heading in the table.
    title: String,
    figures: Vec<Figure>,
}

impl Section {
    fn new(title: String, figures: Vec<Figure>) -> Section {
        Section {
            key: "",
            title,
            figures,
        }
    }

    /// The table's column headings for this section: a spread's, or a single value's.
    fn header(&self) -> String {
        let spreads = self
            .figures
            .iter()
            .any(|f| matches!(f.measure, Measure::Spread(_)));
        if spreads {
            format!(
                "  {:<LABEL_WIDTH$} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
                "figure", "median", "p10", "p90", "min", "max"
            )
        } else {
            format!("  {:<LABEL_WIDTH$} {:>9}\n", "figure", "value")
        }
    }
}

/// Every section, with the settings they were measured with.
struct Report {
    settings: Settings,
    sections: Vec<Section>,
}

/// Width of the label column of the table.
const LABEL_WIDTH: usize = 44;

impl Report {
    /// The report as a text table, one block per section.
    fn table(&self) -> String {
        let mut out = format!(
            "Plexus bench: pod with bridge eth0 + macvlan net1, net2 (host-local), CNI {CNI_VERSION}\n"
        );
        for section in &self.sections {
            out.push_str(&format!("\n{}\n", section.title));
            out.push_str(&section.header());
            for figure in &section.figures {
                out.push_str(&format!("  {:<LABEL_WIDTH$}", figure.label));
                match &figure.measure {
                    Measure::Spread(s) => {
                        for x in [s.median, s.p10, s.p90, s.min, s.max] {
                            out.push_str(&format!(" {:>9}", figure.format(x)));
                        }
                    }
                    Measure::Value(x) => {
                        out.push_str(&format!(" {:>9} {}", figure.format(*x), figure.unit));
                    }
                }
                out.push('\n');
            }
        }
        out
    }

    /// The report as JSON: settings, then each section's figures by key.
    fn to_json(&self) -> Value {
        let benchmarks: Map<String, Value> = self
            .sections
            .iter()
            .map(|section| {
                let figures: Map<String, Value> = section
                    .figures
                    .iter()
                    .map(|f| (f.key.clone(), f.to_json()))
                    .collect();
                (
                    section.key.to_string(),
                    json!({"title": section.title, "figures": figures}),
                )
            })
            .collect();
        json!({
            "cniVersion": CNI_VERSION,
            "runs": self.settings.runs,
            "warmupRuns": self.settings.warmup,
            "delegates": ["bridge eth0", "macvlan net1", "macvlan net2"],
            "benchmarks": benchmarks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate() {
        let s = Spread::of(&[4.0, 1.0, 3.0, 2.0, 5.0]);
        assert_eq!((s.median, s.min, s.max), (3.0, 1.0, 5.0));
        assert!((s.p10 - 1.4).abs() < 1e-9 && (s.p90 - 4.6).abs() < 1e-9);
        assert_eq!(Spread::of(&[7.0]).p90, 7.0);
    }

    #[test]
    fn peak_rss_is_read_from_the_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        fs::write(
            &log,
            "2025-01-01T00:00:00Z DEBUG done peak_rss_kib=100\n\
             2025-01-01T00:00:01Z DEBUG running delegate plugin\n\
             2025-01-01T00:00:02Z DEBUG done peak_rss_kib=2048\n",
        )
        .unwrap();
        assert_eq!(last_peak_rss(&log).unwrap(), 2048);
        fs::write(&log, "nothing\n").unwrap();
        assert!(last_peak_rss(&log).is_err());
    }

    #[test]
    fn micro_times_are_read_as_utc() {
        assert_eq!(parse_micro_time("1970-01-01T00:00:00.000001Z"), Some(1));
        assert_eq!(
            parse_micro_time("2025-01-01T00:00:00Z"),
            Some(1_735_689_600_000_000)
        );
        assert_eq!(
            parse_micro_time("2024-02-29T23:59:59.5Z"),
            Some(1_709_251_199_500_000)
        );
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(parse_micro_time("2025-01-01 00:00:00Z"), None);
        assert_eq!(parse_micro_time("2025-01-01T00:00:00"), None);
    }

    #[test]
    fn requests_are_counted_by_kind_within_a_window() {
        let event = json!({"verb": "patch", "objectRef": {"resource": "pods", "name": "web"}});
        assert_eq!(request_kind(&event), "patch pods");
        let event = json!({"verb": "get", "requestURI": "/api"});
        assert_eq!(request_kind(&event), "get /api");
        let requests = [
            (5, "get pods".to_string()),
            (10, "get pods".to_string()),
            (12, "patch pods".to_string()),
            (21, "get pods".to_string()),
        ];
        let counts = requests_in(&requests, (10, 20));
        assert_eq!(
            counts.into_iter().collect::<Vec<_>>(),
            [("get pods".to_string(), 1), ("patch pods".to_string(), 1)]
        );
    }
}
