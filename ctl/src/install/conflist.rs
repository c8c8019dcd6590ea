//! `00-plexus.conflist`: the configuration that puts Plexus in front of the node's primary
//! network.
//!
//! The primary is the alphabetically first `.conf`, `.conflist` or `.json` file of the conf dir
//! that is not Plexus's own (Flannel's `10-flannel.conflist` on K3s), which is the one the
//! runtime would use without Plexus. The generated list has one plugin, `plexus`, whose
//! `clusterNetwork` is that file; it answers in the primary's `cniVersion` and declares the
//! union of the primary's capabilities (so port mappings and bandwidth limits still reach it)
//! plus `io.kubernetes.cri.pod-annotations`. Its name sorts first, so the runtime loads it
//! instead of the primary.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use plexus_cni::SpecVersion;
use serde_json::{json, Map, Value};

use super::InstallError;
use plexus::resolve;

/// The generated file's name.
pub const FILE_NAME: &str = "00-plexus.conflist";
/// The generated list's network name (Multus's is `multus-cni-network`).
pub const NETWORK_NAME: &str = "plexus-cni-network";
/// The capability through which containerd hands the pod's annotations to the plugin.
pub const POD_ANNOTATIONS: &str = "io.kubernetes.cri.pod-annotations";
/// The version used when the primary names none.
const FALLBACK_VERSION: &str = "1.0.0";

/// The primary network's configuration file.
#[derive(Debug, Clone)]
pub struct Primary {
    /// Its path, as this process sees it.
    pub path: PathBuf,
    /// Its content.
    pub value: Value,
}

/// The node paths and options written into the plugin's configuration.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The primary's file (`clusterNetwork`).
    pub cluster_network: PathBuf,
    /// `confDir`.
    pub conf_dir: PathBuf,
    /// `binDir`.
    pub bin_dir: PathBuf,
    /// `cniDir`.
    pub cni_dir: PathBuf,
    /// `kubeconfig`, if any.
    pub kubeconfig: Option<PathBuf>,
    /// `readinessindicatorfile`, if any.
    pub readiness_indicator_file: Option<PathBuf>,
    /// `logFile`, if any.
    pub log_file: Option<PathBuf>,
    /// `logLevel`, if any.
    pub log_level: Option<String>,
    /// `agentSocket`: where the node agent `plexusd` listens; empty when Plexus must never ask
    /// it (`--no-agent`).
    pub agent_socket: PathBuf,
}

/// True when a configuration runs Plexus itself.
fn is_plexus(value: &Value) -> bool {
    let plexus = |v: &Value| v.get("type").and_then(Value::as_str) == Some("plexus");
    plexus(value)
        || value
            .get("plugins")
            .and_then(Value::as_array)
            .is_some_and(|ps| ps.iter().any(plexus))
}

/// The configuration files of `dir` in name order, without Plexus's generated file.
fn candidates(dir: &Path) -> Result<Vec<PathBuf>, InstallError> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let files = resolve::config_files(dir).map_err(|e| InstallError::Resolve(e.to_string()))?;
    Ok(files
        .into_iter()
        .filter(|f| f.file_name().is_none_or(|n| n != FILE_NAME))
        .collect())
}

/// The primary of `dir` (a path this process opens), if there is one yet. A file that is not
/// valid JSON is an error rather than skipped: the runtime would not skip it either.
pub fn find_primary(dir: &Path) -> Result<Option<Primary>, InstallError> {
    for path in candidates(dir)? {
        let value = resolve::read_config_file(&path).map_err(|e| InstallError::BadPrimary {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if !is_plexus(&value) {
            return Ok(Some(Primary { path, value }));
        }
    }
    Ok(None)
}

/// [`find_primary`], retried every half second for up to `wait`, or until `interrupted` says
/// so ([`InstallError::Interrupted`]).
pub fn wait_for_primary(
    dir: &Path,
    wait: Duration,
    interrupted: impl Fn() -> bool,
) -> Result<Primary, InstallError> {
    let deadline = Instant::now() + wait;
    loop {
        if interrupted() {
            return Err(InstallError::Interrupted);
        }
        let error = match find_primary(dir) {
            Ok(Some(primary)) => return Ok(primary),
            Ok(None) => InstallError::NoPrimary {
                dir: dir.to_path_buf(),
                waited: wait.as_secs(),
            },
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(error);
        }
        std::thread::sleep(Duration::from_millis(500).min(deadline - Instant::now()));
    }
}

/// Configuration files of `dir` that sort before [`FILE_NAME`] and are not Plexus's: the
/// runtime would load one of them instead of Plexus.
pub fn shadowing_files(dir: &Path) -> Result<Vec<PathBuf>, InstallError> {
    Ok(candidates(dir)?
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n < FILE_NAME))
        .filter(|p| !resolve::read_config_file(p).is_ok_and(|v| is_plexus(&v)))
        .collect())
}

/// The capabilities the primary declares (`true` ones only; of every plugin of a list), plus
/// [`POD_ANNOTATIONS`].
pub fn capabilities(primary: &Value) -> Map<String, Value> {
    let mut caps = Map::new();
    let plugins: Vec<&Value> = match primary.get("plugins").and_then(Value::as_array) {
        Some(list) => list.iter().collect(),
        None => vec![primary],
    };
    for plugin in plugins {
        if let Some(declared) = plugin.get("capabilities").and_then(Value::as_object) {
            for (name, on) in declared {
                if on.as_bool() == Some(true) && !caps.contains_key(name) {
                    caps.insert(name.clone(), Value::Bool(true));
                }
            }
        }
    }
    caps.insert(POD_ANNOTATIONS.into(), Value::Bool(true));
    caps
}

/// The generated configuration list for `primary`.
pub fn render(primary: &Primary, settings: &Settings) -> Result<Value, InstallError> {
    let bad = |reason: String| InstallError::BadPrimary {
        path: primary.path.clone(),
        reason,
    };
    let value = &primary.value;
    match value.get("plugins") {
        Some(Value::Array(list)) if !list.is_empty() => {}
        Some(_) => return Err(bad("\"plugins\" is not a non-empty list".into())),
        None if value.get("type").is_some_and(Value::is_string) => {}
        None => return Err(bad("it has neither \"plugins\" nor \"type\"".into())),
    }
    let version = match value.get("cniVersion") {
        None => FALLBACK_VERSION.to_string(),
        Some(Value::String(v)) => {
            v.parse::<SpecVersion>().map_err(|e| bad(e.to_string()))?;
            v.clone()
        }
        Some(other) => return Err(bad(format!("\"cniVersion\" is not a string: {other}"))),
    };

    let path = |p: &Path| Value::String(p.to_string_lossy().into_owned());
    let mut plugin = Map::new();
    plugin.insert("type".into(), json!("plexus"));
    plugin.insert("clusterNetwork".into(), path(&settings.cluster_network));
    plugin.insert("confDir".into(), path(&settings.conf_dir));
    plugin.insert("binDir".into(), path(&settings.bin_dir));
    plugin.insert("cniDir".into(), path(&settings.cni_dir));
    if let Some(k) = &settings.kubeconfig {
        plugin.insert("kubeconfig".into(), path(k));
    }
    if let Some(r) = &settings.readiness_indicator_file {
        plugin.insert("readinessindicatorfile".into(), path(r));
    }
    if let Some(f) = &settings.log_file {
        plugin.insert("logFile".into(), path(f));
    }
    if let Some(l) = &settings.log_level {
        plugin.insert("logLevel".into(), json!(l));
    }
    plugin.insert("agentSocket".into(), path(&settings.agent_socket));
    plugin.insert("capabilities".into(), Value::Object(capabilities(value)));
    Ok(json!({
        "cniVersion": version,
        "name": NETWORK_NAME,
        "plugins": [plugin],
    }))
}

/// The file's text: pretty JSON and a final newline.
pub fn to_text(conflist: &Value) -> String {
    let mut text = serde_json::to_string_pretty(conflist).expect("JSON values serialize");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flannel() -> Value {
        json!({"name": "cbr0", "cniVersion": "1.0.0", "plugins": [
            {"type": "flannel", "delegate": {"isDefaultGateway": true}},
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "bandwidth", "capabilities": {"bandwidth": true, "off": false}}
        ]})
    }

    #[test]
    fn finds_the_first_non_plexus_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(find_primary(dir.path()).unwrap().is_none());
        assert!(find_primary(&dir.path().join("missing")).unwrap().is_none());
        let own = json!({"name": "x", "plugins": [{"type": "plexus"}]});
        std::fs::write(dir.path().join(FILE_NAME), "not even JSON").unwrap();
        std::fs::write(dir.path().join("05-old-plexus.conf"), own.to_string()).unwrap();
        std::fs::write(
            dir.path().join("10-flannel.conflist"),
            flannel().to_string(),
        )
        .unwrap();
        std::fs::write(dir.path().join("20-other.conf"), "{}").unwrap();
        std::fs::write(dir.path().join("README.md"), "x").unwrap();
        let p = find_primary(dir.path()).unwrap().unwrap();
        assert_eq!(p.path, dir.path().join("10-flannel.conflist"));
        assert!(shadowing_files(dir.path()).unwrap().is_empty());
        std::fs::write(dir.path().join("00-a.conf"), "{broken").unwrap();
        assert!(matches!(
            find_primary(dir.path()),
            Err(InstallError::BadPrimary { .. })
        ));
        assert_eq!(
            shadowing_files(dir.path()).unwrap(),
            [dir.path().join("00-a.conf")]
        );
    }

    #[test]
    fn waits_for_the_primary() {
        let dir = tempfile::tempdir().unwrap();
        let err = wait_for_primary(dir.path(), Duration::ZERO, || false).unwrap_err();
        assert!(matches!(err, InstallError::NoPrimary { .. }), "{err}");
        let file = dir.path().join("10-flannel.conflist");
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            std::fs::write(file, flannel().to_string()).unwrap();
        });
        let p = wait_for_primary(dir.path(), Duration::from_secs(10), || false).unwrap();
        assert_eq!(p.value["name"], "cbr0");
        writer.join().unwrap();
        let err = wait_for_primary(&dir.path().join("none"), Duration::from_secs(10), || true);
        assert!(matches!(err, Err(InstallError::Interrupted)));
    }

    #[test]
    fn renders_the_wrapper() {
        let primary = Primary {
            path: "/x/10-flannel.conflist".into(),
            value: flannel(),
        };
        let settings = Settings {
            cluster_network: "/n/10-flannel.conflist".into(),
            conf_dir: "/n".into(),
            bin_dir: "/b".into(),
            cni_dir: "/var/lib/cni/plexus".into(),
            kubeconfig: Some("/n/plexus.d/plexus.kubeconfig".into()),
            agent_socket: "/run/plexus/plexusd.sock".into(),
            ..Default::default()
        };
        let out = render(&primary, &settings).unwrap();
        assert_eq!(
            out,
            json!({"cniVersion": "1.0.0", "name": "plexus-cni-network", "plugins": [{
                "type": "plexus", "clusterNetwork": "/n/10-flannel.conflist", "confDir": "/n",
                "binDir": "/b", "cniDir": "/var/lib/cni/plexus",
                "kubeconfig": "/n/plexus.d/plexus.kubeconfig",
                "agentSocket": "/run/plexus/plexusd.sock",
                "capabilities": {"portMappings": true, "bandwidth": true,
                                 "io.kubernetes.cri.pod-annotations": true}
            }]})
        );
        assert!(to_text(&out).ends_with("}\n"));

        let conf = Primary {
            path: "/x/10-b.conf".into(),
            value: json!({"type": "bridge", "capabilities": {"ips": true}}),
        };
        let out = render(&conf, &settings).unwrap();
        assert_eq!(out["cniVersion"], FALLBACK_VERSION);
        assert_eq!(out["plugins"][0]["capabilities"]["ips"], true);
        for bad in [
            json!({"cniVersion": "9.9.9", "type": "bridge"}),
            json!({"cniVersion": "1.0.0", "plugins": []}),
            json!({"cniVersion": "1.0.0"}),
        ] {
            let p = Primary {
                path: "/x/y.conf".into(),
                value: bad.clone(),
            };
            assert!(render(&p, &settings).is_err(), "{bad}");
        }
    }
}
