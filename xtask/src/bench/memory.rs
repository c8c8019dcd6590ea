//! Peak memory of one `plexus` ADD and DEL, and of one `plexus-ipam` ADD on each cluster-wide
//! store.

use std::fs;
use std::path::Path;

use plexus_tests::cluster::{LocalCluster, IPAM_NAMESPACE};
use plexus_tests::etcd::LocalEtcd;
use serde_json::json;

use super::cycle::{direct_add, direct_del, run_plexus};
use super::process::{ProcessRun, Spawn};
use super::report::{Figure, Section, Spread};
use super::{Binaries, Lab, Settings, CNI_VERSION};
use crate::cmd::{self, Result};

/// ADDs (each followed by its DEL) measured per `plexus-ipam` store.
const IPAM_RUNS: u32 = 5;

/// Peak memory of one `plexus` ADD and DEL: of the plexus process itself (which logs its own
/// `getrusage` peak at debug level), and of its whole process tree (from `wait4`), next to the
/// largest delegate run directly and to a trivial process started the same way (the floor below
/// which no `wait4` figure can go, see [`Spawn::Fresh`]).
pub(super) fn memory(binaries: &Binaries, _settings: &Settings) -> Result<Section> {
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

/// Peak memory of one `plexus-ipam` ADD (and DEL) on the Kubernetes store (the real API server,
/// Plexus's service account) and on etcd, from `wait4` of a forked child ([`Spawn::Fresh`]);
/// [`IPAM_RUNS`] fresh processes each, after one untimed ADD and DEL that creates the pool.
pub(super) fn ipam_memory(binaries: &Binaries, _settings: &Settings) -> Result<Section> {
    let apiserver = crate::apiserver::ensure()?;
    let etcd = LocalEtcd::start().map_err(|e| e as cmd::Error)?;
    let cluster = LocalCluster::start_with(&apiserver).map_err(|e| e as cmd::Error)?;
    let dir = tempfile::tempdir()?;
    let mut figures = Vec::new();
    let stores = [
        (
            "kubernetes",
            "Kubernetes store",
            json!({"kubernetes": {"kubeconfig": cluster.sa_kubeconfig(), "namespace": IPAM_NAMESPACE}}),
        ),
        (
            "etcd",
            "etcd store",
            json!({"backend": "etcd", "etcd_endpoints": etcd.endpoints()}),
        ),
    ];
    for (key, label, store) in stores {
        let mut ipam = json!({"type": "plexus-ipam", "range": "10.40.0.0/24"});
        for (k, v) in store.as_object().into_iter().flatten() {
            ipam[k] = v.clone();
        }
        let config = json!({"cniVersion": CNI_VERSION, "name": "mem", "type": "macvlan",
                            "ipam": ipam});
        let mut add = Vec::new();
        let mut del = Vec::new();
        for run in 0..=IPAM_RUNS {
            let container = format!("ipam-mem-{run}");
            let env = ipam_env(binaries, &container, dir.path());
            let call = |command: &str| -> Result<ProcessRun> {
                let mut env = env.clone();
                env.push(("CNI_COMMAND", command.to_string()));
                let run = ProcessRun::start(
                    &binaries.plexus_ipam,
                    &env,
                    config.to_string().as_bytes(),
                    Spawn::Fresh,
                )?;
                run.check(&format!("plexus-ipam {command} ({label})"))?;
                Ok(run)
            };
            let added = call("ADD")?;
            let deleted = call("DEL")?;
            if run > 0 {
                add.push(added.max_rss_kib as f64);
                del.push(deleted.max_rss_kib as f64);
            }
        }
        for (command, samples) in [("ADD", &add), ("DEL", &del)] {
            figures.push(Figure::spread(
                format!("plexus_ipam_{}_{key}_kib", command.to_ascii_lowercase()),
                format!("plexus-ipam {command}, {label}"),
                "KiB",
                Spread::of(samples),
            ));
        }
    }
    let floor = ProcessRun::start(Path::new("/bin/true"), &[], &[], Spawn::Fresh)?;
    let floor = floor.max_rss_kib as f64;
    figures.push(Figure::spread(
        "spawn_floor_kib".into(),
        "floor: /bin/true started the same way".into(),
        "KiB",
        Spread::of(&[floor]),
    ));
    Ok(Section::new(
        format!(
            "Peak memory (max RSS) of plexus-ipam, KiB ({IPAM_RUNS} processes each, after one \
             untimed ADD and DEL)"
        ),
        figures,
    ))
}

/// The environment of one `plexus-ipam` call for the container `container` of pod
/// `default/<container>` on `node-0`, with its affinity hints under `dir`.
fn ipam_env(binaries: &Binaries, container: &str, dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("CNI_CONTAINERID", container.to_string()),
        ("CNI_NETNS", format!("/var/run/netns/{container}")),
        ("CNI_IFNAME", "net1".into()),
        (
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={container}"),
        ),
        ("CNI_PATH", binaries.plugin_dir.display().to_string()),
        ("NODE_NAME", "node-0".into()),
        (
            "PLEXUS_IPAM_AFFINITY_DIR",
            dir.join("affinity").display().to_string(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
