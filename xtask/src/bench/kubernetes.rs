//! Latency of one Kubernetes pod's ADD and DEL through `plexus` on the real API server (the
//! primary from a file, two NetworkAttachmentDefinitions), against the same delegates run
//! directly; and the API requests each ADD and DEL made.

use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1 as k8s;
use kube::api::{Api, ObjectMeta, PostParams};
use plexus::k8s::pod_networks::POD_ANNOTATIONS_CAPABILITY;
use plexus_crds::{NetworkAttachmentDefinition, NetworkAttachmentDefinitionSpec};
use plexus_tests::cluster::{self, LocalCluster, SA_USER};
use serde_json::{json, Value};

use super::audit::{epoch_micros, request_kind_figures, requests_in, settled_sa_requests, Window};
use super::cycle::{direct_cycle, run_plexus, Cycles};
use super::latency::overhead_pair;
use super::process::Spawn;
use super::report::{Figure, Section, Spread};
use super::{Binaries, Lab, Settings, CNI_VERSION, DELEGATE_TIMEOUT_SECONDS};
use crate::cmd::{self, Result};

/// The annotation naming a pod's NetworkAttachmentDefinitions.
pub(super) const NETWORKS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks";
/// The namespace of the benchmark's pods and NetworkAttachmentDefinitions.
pub(super) const KUBE_NAMESPACE: &str = "default";
/// The pods' [`NETWORKS_ANNOTATION`]: both NetworkAttachmentDefinitions (`net1`, `net2`).
const KUBE_NETWORKS: &str = "storage,backup";

/// Where `plexus` gets the pod's annotations from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Annotations {
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
pub(super) struct KubePod {
    pub(super) name: String,
    pub(super) uid: String,
}

/// The timed runs through `plexus` in one [`Annotations`] mode.
#[derive(Debug, Default)]
struct KubeRuns {
    times: Cycles,
    /// Each run's ADD and DEL windows.
    windows: Vec<(Window, Window)>,
}

/// A pod of one busybox container `c` asking for `networks` in its [`NETWORKS_ANNOTATION`].
pub(super) fn annotated_pod(name: &str, networks: &str) -> k8s::Pod {
    k8s::Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            annotations: Some([(NETWORKS_ANNOTATION.to_string(), networks.to_string())].into()),
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
    }
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
pub(super) fn kubernetes(binaries: &Binaries, settings: &Settings) -> Result<Section> {
    let apiserver = crate::apiserver::ensure()?;
    let lab = &Lab::on_host(binaries)?;
    let cluster = &LocalCluster::start_with(&apiserver).map_err(|e| e as cmd::Error)?;
    let pods = kube_set_up(lab, cluster, settings.warmup + settings.runs, None)?;
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
            figures.extend(request_kind_figures(
                &format!("{key}_first_run"),
                first,
                1.0,
            ));
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
/// and `count` pods annotated with both (on `node`, when given); returns the pods.
pub(super) fn kube_set_up(
    lab: &Lab,
    cluster: &LocalCluster,
    count: u32,
    node: Option<&str>,
) -> Result<Vec<KubePod>> {
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
            let mut pod = annotated_pod(&name, KUBE_NETWORKS);
            if let Some(spec) = pod.spec.as_mut() {
                spec.node_name = node.map(str::to_string);
            }
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
pub(super) fn kube_config(lab: &Lab, cluster: &LocalCluster, mode: Annotations) -> Value {
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
pub(super) fn kube_cycle(
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
