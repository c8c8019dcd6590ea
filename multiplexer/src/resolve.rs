//! Finding the networks a pod is attached to from Plexus's own configuration: the static
//! `delegates`, or `clusterNetwork` given as a file, a directory or a network name in `confDir`.

use std::path::{Path, PathBuf};

use plexus_cni::{CniError, ErrorCode};
use serde_json::Value;
use thiserror::Error;

use crate::config::PlexusConfig;
use crate::plan::{self, Delegate, PrimaryNetwork};

/// Why a network could not be found or read.
#[derive(Debug, Error)]
pub enum ResolveError {
    /// A file or directory could not be read.
    #[error("cannot read {path:?}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A configuration was refused.
    #[error("invalid network configuration {origin}: {source}")]
    Config {
        /// Where it came from.
        origin: String,
        /// Why.
        source: plexus_cni::config::ConfigError,
    },
    /// `clusterNetwork` names a directory that holds no network configuration.
    #[error("clusterNetwork directory {dir:?} holds no network configuration")]
    EmptyDirectory {
        /// The directory, as `clusterNetwork` gives it.
        dir: String,
    },
    /// `clusterNetwork` names a network that no configuration in `confDir` has.
    #[error("clusterNetwork {name:?}: no configuration with that name in confDir {conf_dir:?}")]
    NoSuchNetwork {
        /// The network's name.
        name: String,
        /// Where it was looked for.
        conf_dir: PathBuf,
    },
}

impl From<ResolveError> for CniError {
    fn from(e: ResolveError) -> Self {
        let code = match &e {
            ResolveError::Io { .. } => ErrorCode::IoFailure,
            ResolveError::Config { source, .. } => source.code(),
            ResolveError::EmptyDirectory { .. } | ResolveError::NoSuchNetwork { .. } => {
                ErrorCode::InvalidNetworkConfig
            }
        };
        CniError::new(code, e.to_string())
    }
}

/// The file extensions CNI configurations use.
const CONFIG_EXTENSIONS: [&str; 3] = ["conf", "conflist", "json"];

/// The configuration files of a directory, sorted by name.
pub fn config_files(dir: &Path) -> Result<Vec<PathBuf>, ResolveError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ResolveError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| CONFIG_EXTENSIONS.contains(&e))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Reads one configuration file as JSON.
pub fn read_config_file(path: &Path) -> Result<Value, ResolveError> {
    let bytes = std::fs::read(path).map_err(|source| ResolveError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ResolveError::Config {
        origin: path.display().to_string(),
        source: e.into(),
    })
}

/// True when a configuration runs Plexus itself (so it is never its own delegate).
fn is_plexus_config(value: &Value) -> bool {
    let is_plexus = |v: &Value| v.get("type").and_then(Value::as_str) == Some("plexus");
    is_plexus(value)
        || value
            .get("plugins")
            .and_then(Value::as_array)
            .is_some_and(|ps| ps.iter().any(is_plexus))
}

/// Loads the cluster network named by `clusterNetwork`.
pub fn cluster_network(spec: &str, config: &PlexusConfig) -> Result<Value, ResolveError> {
    if spec.contains('/') {
        let path = Path::new(spec);
        if path.is_dir() {
            for file in config_files(path)? {
                let value = read_config_file(&file)?;
                if !is_plexus_config(&value) {
                    return Ok(value);
                }
            }
            return Err(ResolveError::EmptyDirectory { dir: spec.into() });
        }
        return read_config_file(path);
    }
    find_by_name(&config.conf_dir, spec)?.ok_or_else(|| ResolveError::NoSuchNetwork {
        name: spec.into(),
        conf_dir: config.conf_dir.clone(),
    })
}

/// The configuration in `dir` whose `name` is `name`, in file-name order.
pub fn find_by_name(dir: &Path, name: &str) -> Result<Option<Value>, ResolveError> {
    if !dir.is_dir() {
        return Ok(None);
    }
    for file in config_files(dir)? {
        let Ok(value) = read_config_file(&file) else {
            continue;
        };
        if value.get("name").and_then(Value::as_str) == Some(name) {
            return Ok(Some(value));
        }
    }
    Ok(None)
}

/// The delegates Plexus's own configuration names: the cluster network or the first static
/// delegate is primary; the runtime's capability arguments go to the primary only.
pub fn static_delegates(config: &PlexusConfig) -> Result<Vec<Delegate>, ResolveError> {
    let values: Vec<(Value, String)> = match plan::primary_network(config, None) {
        PrimaryNetwork::ClusterNetwork(spec) => vec![(
            cluster_network(&spec, config)?,
            format!("clusterNetwork {spec:?}"),
        )],
        // Without a pod there is no selection: the primary is the first static delegate.
        PrimaryNetwork::FirstDelegate | PrimaryNetwork::Selected(_) => config
            .delegates
            .iter()
            .enumerate()
            .map(|(i, v)| (v.clone(), format!("delegates[{i}]")))
            .collect(),
    };
    values
        .into_iter()
        .enumerate()
        .map(|(i, (value, origin))| {
            let mut d = Delegate::from_value(value, &config.cni_version, i == 0)
                .map_err(|source| ResolveError::Config { origin, source })?;
            if d.primary {
                d.capability_args = config.runtime_config.clone();
            }
            Ok(d)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(extra: Value) -> PlexusConfig {
        let mut base = json!({"name": "plexus", "cniVersion": "1.0.0"});
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        PlexusConfig::from_map(base.as_object().unwrap()).unwrap()
    }

    #[test]
    fn cluster_network_from_dir_file_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let plexus = json!({"cniVersion":"1.0.0","name":"plexus","plugins":[{"type":"plexus"}]});
        let flannel = json!({"cniVersion":"1.0.0","name":"cbr0","plugins":[{"type":"flannel"}]});
        std::fs::write(dir.path().join("00-plexus.conflist"), plexus.to_string()).unwrap();
        std::fs::write(dir.path().join("10-flannel.conflist"), flannel.to_string()).unwrap();
        std::fs::write(dir.path().join("README"), "x").unwrap();
        let by_dir = config(json!({"clusterNetwork": dir.path().to_str().unwrap()}));
        let d = static_delegates(&by_dir).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].network.name, "cbr0");
        let file = dir.path().join("10-flannel.conflist");
        let by_file = config(json!({"clusterNetwork": file.to_str().unwrap()}));
        assert_eq!(static_delegates(&by_file).unwrap()[0].network.name, "cbr0");
        let by_name =
            config(json!({"clusterNetwork": "cbr0", "confDir": dir.path().to_str().unwrap()}));
        assert_eq!(static_delegates(&by_name).unwrap()[0].network.name, "cbr0");
        let missing =
            config(json!({"clusterNetwork": "nope", "confDir": dir.path().to_str().unwrap()}));
        assert!(static_delegates(&missing).is_err());
    }

    #[test]
    fn static_delegates_inherit_version_and_runtime_config_goes_to_primary() {
        let c = config(json!({
            "delegates": [{"name":"a","type":"bridge","capabilities":{"portMappings":true}},
                          {"name":"b","type":"macvlan","cniVersion":"0.3.1"}],
            "runtimeConfig": {"portMappings": []}
        }));
        let d = static_delegates(&c).unwrap();
        assert!(d[0].primary && !d[1].primary);
        assert_eq!(d[0].network.cni_version, "1.0.0");
        assert_eq!(d[1].network.cni_version, "0.3.1");
        assert!(d[0].capability_args.contains_key("portMappings"));
        assert!(d[1].capability_args.is_empty());
    }
}
