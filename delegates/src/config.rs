//! Network configurations and configuration lists, kept exactly as the user wrote them.
//!
//! A configuration is held as a JSON object whose keys keep their order and whose numbers keep
//! their text, so that a delegate receives what the user wrote plus what the runtime injects
//! (`name`, `cniVersion`, `runtimeConfig`, `prevResult`) and nothing else changes.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use thiserror::Error;

use crate::error::{CniError, ErrorCode};
use crate::version::{self, SpecVersion};

/// Why a configuration was refused.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// Not JSON.
    #[error("configuration is not valid JSON: {0}")]
    Decode(#[from] serde_json::Error),
    /// JSON, but not a usable configuration.
    #[error("invalid network configuration: {0}")]
    Invalid(#[from] InvalidConfig),
    /// A version that Plexus does not speak.
    #[error(
        "incompatible CNI version: network {network:?} asks for version {version:?}, \
         which Plexus does not support"
    )]
    Version {
        /// The network's name.
        network: String,
        /// Its `cniVersion` as written.
        version: String,
    },
}

/// What makes a JSON value not a usable configuration.
#[derive(Debug, Error)]
pub enum InvalidConfig {
    /// The configuration is not a JSON object.
    #[error("a network configuration must be a JSON object")]
    NotAnObject,
    /// A key that must hold a string holds something else.
    #[error("\"{0}\" must be a string")]
    NotAString(&'static str),
    /// A key that must hold a boolean (libcni's `readBool`) holds something else.
    #[error("\"{key}\" must be a boolean, got {value}")]
    NotABoolean {
        /// The key.
        key: &'static str,
        /// What it holds.
        value: Value,
    },
    /// The network has no `name`, or an empty one.
    #[error("missing network \"name\"")]
    MissingName,
    /// The network's name is not usable (see [`validate_network_name`]).
    #[error("invalid network name {0:?}: must match ^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$")]
    InvalidName(String),
    /// `plugins` is not a list.
    #[error("network {0:?}: \"plugins\" must be a list")]
    PluginsNotAList(String),
    /// `plugins` is an empty list.
    #[error("network {0:?}: \"plugins\" is empty")]
    NoPlugins(String),
    /// An entry of `plugins` is not an object.
    #[error("network {network:?} plugin {index} is not an object")]
    PluginNotAnObject {
        /// The network's name.
        network: String,
        /// The entry's position in `plugins`.
        index: usize,
    },
    /// A plugin (an entry of `plugins`, or a single configuration) is not usable.
    #[error("{}: {problem}", plugin_name(network, *index))]
    Plugin {
        /// The network's name.
        network: String,
        /// The entry's position in `plugins`; `None` for a single configuration.
        index: Option<usize>,
        /// What is wrong with it.
        problem: PluginProblem,
    },
}

/// What is wrong with one plugin's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PluginProblem {
    /// It has no `type`, or an empty one.
    #[error("missing \"type\"")]
    MissingType,
    /// Its `type` is not a string.
    #[error("\"type\" must be a string")]
    TypeNotAString,
    /// Its `capabilities` is not an object.
    #[error("\"capabilities\" must be an object")]
    CapabilitiesNotAnObject,
}

/// `network "<name>"`, or `network "<name>" plugin <index>` for an entry of `plugins`.
fn plugin_name(network: &str, index: Option<usize>) -> String {
    match index {
        Some(index) => format!("network {network:?} plugin {index}"),
        None => format!("network {network:?}"),
    }
}

impl ConfigError {
    /// The CNI error code this failure is reported with.
    pub fn code(&self) -> ErrorCode {
        match self {
            ConfigError::Decode(_) => ErrorCode::DecodingFailure,
            ConfigError::Invalid(_) => ErrorCode::InvalidNetworkConfig,
            ConfigError::Version { .. } => ErrorCode::IncompatibleVersion,
        }
    }
}

impl From<ConfigError> for CniError {
    fn from(e: ConfigError) -> Self {
        CniError::new(e.code(), e.to_string())
    }
}

/// One plugin of a list: its `type`, its capabilities, and every key as written.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    /// The plugin binary's name.
    pub plugin_type: String,
    /// `capabilities`: the runtimeConfig keys the plugin accepts.
    pub capabilities: BTreeMap<String, bool>,
    /// The whole object as written.
    pub raw: Map<String, Value>,
}

impl PluginConfig {
    /// The plugin of `network` at `index` in `plugins` (`None`: the single configuration).
    fn from_object(
        raw: Map<String, Value>,
        network: &str,
        index: Option<usize>,
    ) -> Result<Self, ConfigError> {
        let refuse = |problem| InvalidConfig::Plugin {
            network: network.to_string(),
            index,
            problem,
        };
        let plugin_type = match raw.get("type") {
            Some(Value::String(t)) if !t.is_empty() => t.clone(),
            Some(Value::String(_)) | None => Err(refuse(PluginProblem::MissingType))?,
            Some(_) => Err(refuse(PluginProblem::TypeNotAString))?,
        };
        let capabilities = match raw.get("capabilities") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| Ok((k.clone(), read_bool(v, "capabilities")?)))
                .collect::<Result<_, ConfigError>>()?,
            Some(_) => Err(refuse(PluginProblem::CapabilitiesNotAnObject))?,
        };
        Ok(PluginConfig {
            plugin_type,
            capabilities,
            raw,
        })
    }

    /// True when the plugin declares the capability.
    pub fn has_capability(&self, name: &str) -> bool {
        self.capabilities.get(name).copied().unwrap_or(false)
    }
}

/// A network: a configuration list, or a single configuration seen as a list of one.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    /// `name`.
    pub name: String,
    /// `cniVersion` as written (may be empty).
    pub cni_version: String,
    /// The version the list runs at: the highest known of `cniVersion` and `cniVersions`.
    pub version: SpecVersion,
    /// `disableCheck`.
    pub disable_check: bool,
    /// `disableGC`.
    pub disable_gc: bool,
    /// The plugins, in order.
    pub plugins: Vec<PluginConfig>,
    /// True when the source was a single configuration (no `plugins`).
    pub single: bool,
    /// The whole object as written.
    pub raw: Map<String, Value>,
}

/// libcni's `readBool`: a JSON bool, or the strings "true"/"false".
fn read_bool(v: &Value, key: &'static str) -> Result<bool, ConfigError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        other => Err(InvalidConfig::NotABoolean {
            key,
            value: other.clone(),
        }
        .into()),
    }
}

fn opt_bool(raw: &Map<String, Value>, key: &'static str) -> Result<bool, ConfigError> {
    raw.get(key)
        .filter(|v| !v.is_null())
        .map(|v| read_bool(v, key))
        .transpose()
        .map(|b| b.unwrap_or(false))
}

impl NetworkConfigList {
    /// Parses a configuration list (an object with `plugins`) or a single configuration (an
    /// object with `type`).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ConfigError> {
        let value: Value = serde_json::from_slice(bytes)?;
        Self::from_value(value)
    }

    /// As [`NetworkConfigList::from_bytes`], from a parsed value.
    pub fn from_value(value: Value) -> Result<Self, ConfigError> {
        let Value::Object(raw) = value else {
            return Err(InvalidConfig::NotAnObject.into());
        };
        let name = match raw.get("name") {
            Some(Value::String(n)) => n.clone(),
            None | Some(Value::Null) => String::new(),
            Some(_) => return Err(InvalidConfig::NotAString("name").into()),
        };
        if name.is_empty() {
            return Err(InvalidConfig::MissingName.into());
        }
        validate_network_name(&name)?;
        let cni_version = match raw.get("cniVersion") {
            Some(Value::String(v)) => v.clone(),
            None | Some(Value::Null) => String::new(),
            Some(_) => return Err(InvalidConfig::NotAString("cniVersion").into()),
        };
        let listed: Vec<&str> = match raw.get("cniVersions") {
            Some(Value::Array(vs)) => vs.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let version = if cni_version.is_empty() && listed.is_empty() {
            // libcni treats a missing version as 0.1.0.
            SpecVersion::V0_1_0
        } else {
            version::negotiate(
                Some(cni_version.as_str()).filter(|v| !v.is_empty()),
                listed.iter().copied(),
            )
            .ok_or_else(|| ConfigError::Version {
                network: name.clone(),
                version: cni_version.clone(),
            })?
        };
        let disable_check = opt_bool(&raw, "disableCheck")?;
        let disable_gc = opt_bool(&raw, "disableGC")?;
        let (plugins, single) = match raw.get("plugins") {
            Some(Value::Array(items)) => {
                if items.is_empty() {
                    return Err(InvalidConfig::NoPlugins(name).into());
                }
                let plugins = items
                    .iter()
                    .enumerate()
                    .map(|(index, p)| match p {
                        Value::Object(m) => {
                            PluginConfig::from_object(m.clone(), &name, Some(index))
                        }
                        _ => Err(InvalidConfig::PluginNotAnObject {
                            network: name.clone(),
                            index,
                        }
                        .into()),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                (plugins, false)
            }
            Some(_) => return Err(InvalidConfig::PluginsNotAList(name).into()),
            None => (
                vec![PluginConfig::from_object(raw.clone(), &name, None)?],
                true,
            ),
        };
        Ok(NetworkConfigList {
            name,
            cni_version,
            version,
            disable_check,
            disable_gc,
            plugins,
            single,
            raw,
        })
    }

    /// The configuration as written.
    pub fn to_value(&self) -> Value {
        Value::Object(self.raw.clone())
    }

    /// The configuration as written, serialized.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.raw).unwrap_or_default()
    }

    /// The stdin for plugin `index`, as libcni builds it: the plugin's own keys, `name` and
    /// `cniVersion` from the list, `runtimeConfig` holding only the capability arguments the plugin
    /// declares (left out when none apply), and `prevResult` when given. `capabilities` is removed.
    pub fn plugin_request(
        &self,
        index: usize,
        capability_args: &Map<String, Value>,
        prev_result: Option<&Value>,
    ) -> Map<String, Value> {
        let plugin = &self.plugins[index];
        let mut conf = plugin.raw.clone();
        conf.insert("name".into(), Value::String(self.name.clone()));
        conf.insert(
            "cniVersion".into(),
            Value::String(self.version.as_str().to_string()),
        );
        conf.shift_remove("capabilities");
        let runtime: Map<String, Value> = capability_args
            .iter()
            .filter(|(k, _)| plugin.has_capability(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if runtime.is_empty() {
            conf.shift_remove("runtimeConfig");
        } else {
            conf.insert("runtimeConfig".into(), Value::Object(runtime));
        }
        match prev_result {
            Some(prev) => {
                conf.insert("prevResult".into(), prev.clone());
            }
            None => {
                conf.shift_remove("prevResult");
            }
        }
        conf
    }

    /// True when at least one plugin of the list declares the capability.
    pub fn has_capability(&self, name: &str) -> bool {
        self.plugins.iter().any(|p| p.has_capability(name))
    }
}

/// Checks a network name: non-empty, the container ID pattern, no path characters.
pub fn validate_network_name(name: &str) -> Result<(), ConfigError> {
    crate::env::validate_container_id(name)
        .map_err(|_| InvalidConfig::InvalidName(name.to_string()).into())
}

/// Calls `f` on every plugin object of a raw configuration: each object in `plugins` of a
/// configuration list, or the configuration itself when it has no `plugins` array. Does nothing
/// when `config` is not an object.
pub fn for_each_plugin_mut(config: &mut Value, mut f: impl FnMut(&mut Map<String, Value>)) {
    let Value::Object(map) = config else {
        return;
    };
    match map.get_mut("plugins") {
        Some(Value::Array(plugins)) => {
            for plugin in plugins {
                if let Value::Object(p) = plugin {
                    f(p);
                }
            }
        }
        _ => f(map),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn for_each_plugin_mut_visits_a_lists_plugins_or_the_configuration() {
        let mark = |config: &mut Value| {
            for_each_plugin_mut(config, |p| drop(p.insert("x".into(), json!(1))))
        };
        let mut list = json!({"name": "l", "plugins": [{"type": "a"}, 7, {"type": "b"}]});
        mark(&mut list);
        assert_eq!(
            list,
            json!({"name": "l", "plugins": [{"type": "a", "x": 1}, 7, {"type": "b", "x": 1}]})
        );
        let mut single = json!({"type": "a", "plugins": "not a list"});
        mark(&mut single);
        assert_eq!(single["x"], 1);
        let mut other = json!([1]);
        mark(&mut other);
        assert_eq!(other, json!([1]));
    }

    #[test]
    fn keeps_unknown_keys_and_their_order() {
        let text = r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge","zeta":1.50,"alpha":{"x":[1,2]},"capabilities":{"portMappings":true}}]}"#;
        let list = NetworkConfigList::from_bytes(text.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(list.to_bytes()).unwrap(), text);
        let req = list.plugin_request(0, &Map::new(), None);
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            r#"{"type":"bridge","zeta":1.50,"alpha":{"x":[1,2]},"name":"n","cniVersion":"1.0.0"}"#
        );
    }

    #[test]
    fn runtime_config_is_filtered_by_capabilities() {
        let list = NetworkConfigList::from_value(json!({
            "cniVersion": "1.0.0", "name": "n",
            "plugins": [{"type": "a", "capabilities": {"ips": true, "mac": false}}, {"type": "b"}]
        }))
        .unwrap();
        let args: Map<String, Value> =
            serde_json::from_value(json!({"ips": ["10.0.0.1/24"], "mac": "aa:bb:cc:dd:ee:ff"}))
                .unwrap();
        let a = list.plugin_request(0, &args, None);
        assert_eq!(a["runtimeConfig"], json!({"ips": ["10.0.0.1/24"]}));
        let b = list.plugin_request(1, &args, Some(&json!({"cniVersion": "1.0.0"})));
        assert!(b.get("runtimeConfig").is_none());
        assert_eq!(b["prevResult"], json!({"cniVersion": "1.0.0"}));
        assert!(list.has_capability("ips"));
        assert!(!list.has_capability("mac"));
    }

    #[test]
    fn single_conf_is_a_list_of_one() {
        let list = NetworkConfigList::from_value(
            json!({"cniVersion": "0.3.1", "name": "n", "type": "macvlan", "disableCheck": "true"}),
        )
        .unwrap();
        assert!(list.single);
        assert!(list.disable_check);
        assert_eq!(list.plugins[0].plugin_type, "macvlan");
        assert_eq!(list.version, SpecVersion::V0_3_1);
    }

    #[test]
    fn picks_the_highest_version() {
        let list = NetworkConfigList::from_value(
            json!({"cniVersion": "0.4.0", "cniVersions": ["1.0.0", "7.0.0"], "name": "n", "plugins": [{"type": "x"}]}),
        )
        .unwrap();
        assert_eq!(list.version, SpecVersion::V1_0_0);
    }

    #[test]
    fn refuses_bad_configs() {
        for bad in [
            json!([]),
            json!({"type": "x"}),
            json!({"name": "n"}),
            json!({"name": "n", "plugins": []}),
            json!({"name": "n", "plugins": [{"type": 3}]}),
            json!({"name": "n", "plugins": [{}]}),
            json!({"name": "a/b", "type": "x"}),
            json!({"name": "n", "cniVersion": "9.9.9", "type": "x"}),
            json!({"name": "n", "type": "x", "disableCheck": 3}),
        ] {
            assert!(NetworkConfigList::from_value(bad.clone()).is_err(), "{bad}");
        }
    }
}
