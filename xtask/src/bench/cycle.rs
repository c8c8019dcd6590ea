//! One pod's ADD and DEL, through `plexus` or by calling its delegates directly as Plexus would.

use std::path::Path;
use std::time::Duration;

use plexus_cni::config::NetworkConfigList;
use plexus_cni::CniResult;
use serde_json::{Map, Value};

use super::lab::Pod;
use super::process::{ProcessRun, Spawn};
use super::Lab;
use crate::cmd::Result;

/// Wall times, in ms, of ADD and DEL cycles.
#[derive(Debug, Default)]
pub(super) struct Cycles {
    pub(super) add: Vec<f64>,
    pub(super) del: Vec<f64>,
}

impl Cycles {
    /// Records one cycle's ADD and DEL times.
    pub(super) fn push(&mut self, (add, del): (Duration, Duration)) {
        self.add.push(ms(add));
        self.del.push(ms(del));
    }
}

/// Milliseconds of a duration.
pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// ADD then DEL of a fresh pod through `plexus`; returns their wall times.
pub(super) fn plexus_cycle(lab: &Lab, config: &Value) -> Result<(Duration, Duration)> {
    let pod = lab.fresh_pod()?;
    let add = run_plexus(lab, "ADD", &pod, config, Spawn::Timed)?;
    let del = run_plexus(lab, "DEL", &pod, config, Spawn::Timed)?;
    Ok((add.elapsed, del.elapsed))
}

/// ADD then DEL of a fresh pod by calling the delegates directly; returns the sums of their
/// plugin calls' wall times.
pub(super) fn direct_cycle(
    lab: &Lab,
    networks: &[(String, NetworkConfigList)],
) -> Result<(Duration, Duration)> {
    let pod = lab.fresh_pod()?;
    let add = direct_add(lab, &pod, networks, Spawn::Timed)?;
    let del = direct_del(lab, &pod, networks, &add.results, Spawn::Timed)?;
    Ok((add.elapsed(), del))
}

/// Runs `plexus` for `command` on `pod`, as a runtime would, and fails unless it succeeds.
pub(super) fn run_plexus(
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
pub(super) struct DirectAdd {
    pub(super) runs: Vec<ProcessRun>,
    pub(super) results: Vec<CniResult>,
}

impl DirectAdd {
    /// The sum of the plugin calls' wall times.
    pub(super) fn elapsed(&self) -> Duration {
        self.runs.iter().map(|r| r.elapsed).sum()
    }
}

/// ADD of every network in order, each list's plugins in order with `prevResult` chained: the
/// calls Plexus makes, with the stdin it builds (the same library builds it here).
pub(super) fn direct_add(
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
pub(super) fn direct_del(
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
pub(super) fn run_delegate(
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
pub(super) fn cni_env(
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
