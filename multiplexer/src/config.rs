//! Plexus's own network configuration: the keys Multus users already write, plus a few of
//! Plexus's own (each documented here and in the README).

use std::path::PathBuf;
use std::time::Duration;

use plexus_cni::{CniError, ErrorCode, SpecVersion};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Multus's default directory for on-disk delegate configurations.
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/multus/net.d";
/// Where Plexus keeps its attachment cache by default.
pub const DEFAULT_CNI_DIR: &str = "/var/lib/cni/plexus";
/// Where delegate plugin binaries are looked for first by default.
pub const DEFAULT_BIN_DIR: &str = "/opt/cni/bin";
/// How long ADD waits for the readiness indicator file by default (Multus waits 45 s).
pub const DEFAULT_READINESS_TIMEOUT: Duration = Duration::from_secs(45);
/// How long one Kubernetes API call may take by default.
pub const DEFAULT_API_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one delegate plugin call may take by default.
pub const DEFAULT_DELEGATE_TIMEOUT: Duration = Duration::from_secs(60);
/// The kubelet's PodResources socket.
pub const DEFAULT_POD_RESOURCES_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";
/// The kubelet's device-manager checkpoint.
pub const DEFAULT_KUBELET_CHECKPOINT_FILE: &str =
    "/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint";
/// The device-info directory of the device-info specification (`dp/` and `cni/` below it).
pub const DEFAULT_DEVICE_INFO_DIR: &str = "/var/run/k8s.cni.cncf.io/devinfo";

/// The configuration `plexus` receives on stdin.
#[derive(Debug, Clone, Deserialize)]
pub struct PlexusConfig {
    /// Plexus's own network name.
    pub name: String,
    /// The version Plexus answers in (its result is converted to it).
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    /// Static delegates: the first is the primary network. Ignored when `clusterNetwork` is set.
    #[serde(default)]
    pub delegates: Vec<Value>,
    /// The primary network: a conf or conflist file, a directory (its alphabetically first
    /// configuration), or a network name found in `confDir`.
    #[serde(rename = "clusterNetwork", default)]
    pub cluster_network: Option<String>,
    /// Where on-disk delegate configurations are looked up by name.
    #[serde(rename = "confDir", default = "default_conf_dir")]
    pub conf_dir: PathBuf,
    /// Where Plexus keeps its attachment cache.
    #[serde(rename = "cniDir", default = "default_cni_dir")]
    pub cni_dir: PathBuf,
    /// Searched for delegate plugins before `CNI_PATH`.
    #[serde(rename = "binDir", default = "default_bin_dir")]
    pub bin_dir: PathBuf,
    /// Log to this file (appending) instead of stderr.
    #[serde(rename = "logFile", default)]
    pub log_file: Option<PathBuf>,
    /// `debug`, `verbose`, `error` or `panic` (Multus's levels), or `info`/`warn`.
    #[serde(rename = "logLevel", default)]
    pub log_level: Option<String>,
    /// Also log to stderr when `logFile` is set.
    #[serde(rename = "logToStderr", default)]
    pub log_to_stderr: Option<bool>,
    /// ADD waits for this file before attaching anything.
    #[serde(rename = "readinessindicatorfile", default)]
    pub readiness_indicator_file: Option<PathBuf>,
    /// Plexus's own: how long ADD waits for the readiness file, in seconds (default 45).
    #[serde(rename = "readinessTimeoutSeconds", default)]
    pub readiness_timeout_seconds: Option<f64>,
    /// Plexus's own: how long one delegate plugin call may take, in seconds (default 60).
    #[serde(rename = "delegateTimeoutSeconds", default)]
    pub delegate_timeout_seconds: Option<f64>,
    /// Capability arguments from the runtime; they go to the primary network only.
    #[serde(rename = "runtimeConfig", default)]
    pub runtime_config: Map<String, Value>,
    /// A kubeconfig file for reading pods and NetworkAttachmentDefinitions. Without it, Plexus
    /// uses the in-cluster environment when there is one, else runs its static delegates only.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// Where NetworkAttachmentDefinitions named by `clusterNetwork`, `defaultNetworks` and the
    /// default-network annotation live.
    #[serde(rename = "multusNamespace", default = "default_multus_namespace")]
    pub multus_namespace: String,
    /// Networks attached to every pod after the cluster network, except in `systemNamespaces`.
    #[serde(rename = "defaultNetworks", default)]
    pub default_networks: Vec<String>,
    /// Namespaces whose pods do not get `defaultNetworks`.
    #[serde(rename = "systemNamespaces", default = "default_system_namespaces")]
    pub system_namespaces: Vec<String>,
    /// Pods may only use NetworkAttachmentDefinitions of their own namespace (and of
    /// `globalNamespaces`).
    #[serde(rename = "namespaceIsolation", default)]
    pub namespace_isolation: bool,
    /// With `namespaceIsolation`: the namespaces whose definitions every pod may use, as a comma
    /// separated list (Multus's format).
    #[serde(rename = "globalNamespaces", default = "default_global_namespaces")]
    pub global_namespaces: String,
    /// Plexus's own: how long one Kubernetes API call may take, in seconds (default 5).
    #[serde(rename = "apiTimeoutSeconds", default)]
    pub api_timeout_seconds: Option<f64>,
    /// The kubelet's PodResources gRPC socket, asked for the devices of a NAD's `resourceName`.
    #[serde(
        rename = "podResourcesSocket",
        default = "default_pod_resources_socket"
    )]
    pub pod_resources_socket: PathBuf,
    /// The kubelet's device-manager checkpoint, read when the PodResources socket cannot answer.
    #[serde(
        rename = "kubeletCheckpointFile",
        default = "default_kubelet_checkpoint_file"
    )]
    pub kubelet_checkpoint_file: PathBuf,
    /// The device-info directory: device plugins write `dp/`, Plexus and delegates `cni/`.
    #[serde(rename = "deviceInfoDir", default = "default_device_info_dir")]
    pub device_info_dir: PathBuf,
    /// Where the node agent `plexusd` listens; a Kubernetes ADD asks it for the pod and its
    /// networks first (default `/run/plexus/plexusd.sock`).
    #[serde(rename = "agentSocket", default = "default_agent_socket")]
    pub agent_socket: PathBuf,
    /// How long to wait for the agent's socket to connect, in milliseconds (default 200).
    #[serde(
        rename = "agentConnectTimeoutMs",
        default = "default_agent_connect_timeout_ms"
    )]
    pub agent_connect_timeout_ms: u64,
    /// `hotplug`: `false` stops `plexusd` from attaching and detaching the networks of running
    /// pods when their networks annotation changes, for every pod of the node.
    #[serde(default = "yes")]
    pub hotplug: bool,
}

fn default_agent_socket() -> PathBuf {
    plexus_agent_api::DEFAULT_SOCKET.into()
}
fn default_agent_connect_timeout_ms() -> u64 {
    200
}

fn yes() -> bool {
    true
}

fn default_multus_namespace() -> String {
    "kube-system".into()
}
fn default_system_namespaces() -> Vec<String> {
    vec!["kube-system".into()]
}
fn default_global_namespaces() -> String {
    "default".into()
}

fn default_conf_dir() -> PathBuf {
    DEFAULT_CONF_DIR.into()
}
fn default_cni_dir() -> PathBuf {
    DEFAULT_CNI_DIR.into()
}
fn default_bin_dir() -> PathBuf {
    DEFAULT_BIN_DIR.into()
}
fn default_pod_resources_socket() -> PathBuf {
    DEFAULT_POD_RESOURCES_SOCKET.into()
}
fn default_kubelet_checkpoint_file() -> PathBuf {
    DEFAULT_KUBELET_CHECKPOINT_FILE.into()
}
fn default_device_info_dir() -> PathBuf {
    DEFAULT_DEVICE_INFO_DIR.into()
}

fn seconds(value: Option<f64>, default: Duration, key: &str) -> Result<Duration, CniError> {
    match value {
        None => Ok(default),
        Some(s) if (0.0..1e9).contains(&s) => Ok(Duration::from_secs_f64(s)),
        Some(s) => Err(CniError::new(
            ErrorCode::InvalidNetworkConfig,
            format!("\"{key}\" must be a number of seconds, got {s}"),
        )),
    }
}

impl PlexusConfig {
    /// Reads the configuration from stdin's parsed object. Wrong types are refused with code 7.
    pub fn from_map(config: &Map<String, Value>) -> Result<Self, CniError> {
        let parsed: PlexusConfig =
            serde_json::from_value(Value::Object(config.clone())).map_err(|e| {
                CniError::new(
                    ErrorCode::InvalidNetworkConfig,
                    format!("invalid plexus configuration: {e}"),
                )
            })?;
        parsed.version()?;
        parsed.readiness_timeout()?;
        parsed.delegate_timeout()?;
        parsed.api_timeout()?;
        if parsed.delegates.is_empty() && parsed.cluster_network.is_none() {
            return Err(CniError::new(
                ErrorCode::InvalidNetworkConfig,
                "at least one delegate or a clusterNetwork must be specified",
            ));
        }
        Ok(parsed)
    }

    /// Reads Plexus's configuration from a CNI configuration file, as the runtime would hand it
    /// over: a `.conf` of type `plexus`, or a `.conflist` whose `plexus` plugin gets the list's
    /// `cniVersion` and `name`. Code 7 when the file holds no Plexus configuration.
    pub fn from_file(path: &std::path::Path) -> Result<Self, CniError> {
        let invalid = |msg: String| CniError::new(ErrorCode::InvalidNetworkConfig, msg);
        let bytes = std::fs::read(path)
            .map_err(|e| CniError::new(ErrorCode::IoFailure, format!("{}: {e}", path.display())))?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
        let is_plexus = |v: &Value| v.get("type").and_then(Value::as_str) == Some("plexus");
        let mut plugin = match value.get("plugins").and_then(Value::as_array) {
            Some(plugins) => plugins
                .iter()
                .find(|p| is_plexus(p))
                .and_then(Value::as_object)
                .cloned()
                .ok_or_else(|| invalid(format!("{}: no plugin of type plexus", path.display())))?,
            None if is_plexus(&value) => value.as_object().cloned().unwrap_or_default(),
            None => return Err(invalid(format!("{}: not of type plexus", path.display()))),
        };
        for key in ["cniVersion", "name"] {
            if let Some(v) = value.get(key) {
                plugin.entry(key).or_insert_with(|| v.clone());
            }
        }
        PlexusConfig::from_map(&plugin)
    }

    /// The version Plexus answers in.
    pub fn version(&self) -> Result<SpecVersion, CniError> {
        if self.cni_version.is_empty() {
            return Ok(SpecVersion::V0_1_0);
        }
        self.cni_version
            .parse()
            .map_err(|e| CniError::new(ErrorCode::IncompatibleVersion, format!("{e}")))
    }

    /// How long ADD waits for the readiness file.
    pub fn readiness_timeout(&self) -> Result<Duration, CniError> {
        seconds(
            self.readiness_timeout_seconds,
            DEFAULT_READINESS_TIMEOUT,
            "readinessTimeoutSeconds",
        )
    }

    /// How long one delegate call may take.
    pub fn delegate_timeout(&self) -> Result<Duration, CniError> {
        seconds(
            self.delegate_timeout_seconds,
            DEFAULT_DELEGATE_TIMEOUT,
            "delegateTimeoutSeconds",
        )
    }

    /// How long one Kubernetes API call may take.
    pub fn api_timeout(&self) -> Result<Duration, CniError> {
        seconds(
            self.api_timeout_seconds,
            DEFAULT_API_TIMEOUT,
            "apiTimeoutSeconds",
        )
    }

    /// The namespaces listed in `globalNamespaces`.
    pub fn global_namespace_list(&self) -> Vec<&str> {
        self.global_namespaces
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// The plugin search path for delegates: `binDir`, then `CNI_PATH`, without repeats.
    pub fn plugin_dirs(&self, cni_path: &[PathBuf]) -> Vec<PathBuf> {
        let mut dirs = vec![self.bin_dir.clone()];
        for d in cni_path {
            if !dirs.contains(d) {
                dirs.push(d.clone());
            }
        }
        dirs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<PlexusConfig, CniError> {
        PlexusConfig::from_map(v.as_object().unwrap())
    }

    #[test]
    fn reads_multus_keys_with_defaults() {
        let c = parse(json!({
            "cniVersion": "1.0.0", "name": "plexus", "type": "plexus",
            "clusterNetwork": "/etc/cni/net.d/10-flannel.conflist",
            "kubeconfig": "/x", "somethingElse": 1
        }))
        .unwrap();
        assert_eq!(c.conf_dir, PathBuf::from(DEFAULT_CONF_DIR));
        assert_eq!(c.delegate_timeout().unwrap(), DEFAULT_DELEGATE_TIMEOUT);
        assert_eq!(
            c.pod_resources_socket,
            PathBuf::from(DEFAULT_POD_RESOURCES_SOCKET)
        );
        assert_eq!(
            c.device_info_dir,
            PathBuf::from("/var/run/k8s.cni.cncf.io/devinfo")
        );
        assert_eq!(
            c.plugin_dirs(&["/opt/cni/bin".into(), "/usr/lib/cni".into()]),
            vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
    }

    #[test]
    fn refuses_bad_configs() {
        for bad in [
            json!({"name": "p", "cniVersion": "1.0.0"}),
            json!({"name": "p", "cniVersion": "3.0.0", "delegates": [{}]}),
            json!({"name": "p", "delegates": "x"}),
            json!({"name": "p", "delegates": [{}], "readinessTimeoutSeconds": -1}),
            json!({"name": "p", "delegates": [{}], "confDir": 5}),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad}");
        }
    }
}
