//! The kubelet's device-manager checkpoint (`kubelet_internal_checkpoint`), read when the
//! PodResources API cannot answer:
//!
//! ```json
//! {"Data": {"PodDeviceEntries": [{"PodUID": "…", "ContainerName": "c", "ResourceName": "intel.com/x",
//!            "DeviceIDs": {"-1": ["0000:03:02.3"]}, "AllocResp": "…"}],
//!           "RegisteredDevices": {…}},
//!  "Checksum": 123}
//! ```
//!
//! `DeviceIDs` is keyed by NUMA node since Kubernetes 1.20, and a plain list before. The
//! checksum is not verified (the kubelet computes it over Go's own printing of the data).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use super::DevicesByResource;

/// The checkpoint could not be read.
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// Reading the file failed.
    #[error("reading {path:?}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a checkpoint.
    #[error("{path:?} is not a kubelet device checkpoint: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
}

/// The parts of the checkpoint Plexus reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Checkpoint {
    /// `Data`.
    #[serde(rename = "Data", default)]
    pub data: CheckpointData,
}

/// `Data` of the checkpoint.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CheckpointData {
    /// `PodDeviceEntries`.
    #[serde(
        rename = "PodDeviceEntries",
        default,
        deserialize_with = "null_default"
    )]
    pub pod_device_entries: Vec<PodDeviceEntry>,
}

/// One container's devices of one resource.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PodDeviceEntry {
    /// `PodUID`.
    #[serde(rename = "PodUID", default)]
    pub pod_uid: String,
    /// `ContainerName`.
    #[serde(rename = "ContainerName", default)]
    pub container_name: String,
    /// `ResourceName`.
    #[serde(rename = "ResourceName", default)]
    pub resource_name: String,
    /// `DeviceIDs`.
    #[serde(rename = "DeviceIDs", default)]
    pub device_ids: DeviceIds,
}

/// `DeviceIDs`: by NUMA node, or (older kubelets) a plain list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum DeviceIds {
    /// `{"<numa node>": [ids]}`.
    ByNumaNode(BTreeMap<String, Option<Vec<String>>>),
    /// `[ids]`.
    Plain(Vec<String>),
    /// `null`.
    None(()),
}

impl Default for DeviceIds {
    fn default() -> Self {
        DeviceIds::None(())
    }
}

impl DeviceIds {
    /// Every ID, whatever the NUMA node.
    pub fn all(&self) -> Vec<String> {
        match self {
            DeviceIds::ByNumaNode(by_node) => {
                by_node.values().flatten().flatten().cloned().collect()
            }
            DeviceIds::Plain(ids) => ids.clone(),
            DeviceIds::None(()) => Vec::new(),
        }
    }
}

fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl Checkpoint {
    /// Reads the checkpoint file.
    pub fn read(path: &Path) -> Result<Checkpoint, CheckpointError> {
        let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&bytes).map_err(|source| CheckpointError::Invalid {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Parses a checkpoint's text.
    pub fn parse(bytes: &[u8]) -> Result<Checkpoint, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The devices of the pod with this UID, by resource, over all its containers.
    pub fn pod_devices(&self, pod_uid: &str) -> DevicesByResource {
        let mut found = DevicesByResource::new();
        for entry in self
            .data
            .pod_device_entries
            .iter()
            .filter(|e| e.pod_uid == pod_uid)
        {
            found
                .entry(entry.resource_name.clone())
                .or_default()
                .extend(entry.device_ids.all());
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_device_id_shapes() {
        let text = r#"{"Data":{"PodDeviceEntries":[
            {"PodUID":"u1","ContainerName":"a","ResourceName":"intel.com/x","DeviceIDs":{"-1":["0000:03:02.5"],"0":["0000:03:02.3"]},"AllocResp":"CgA="},
            {"PodUID":"u1","ContainerName":"b","ResourceName":"intel.com/x","DeviceIDs":["0000:03:02.4"],"AllocResp":"CgA="},
            {"PodUID":"u1","ContainerName":"b","ResourceName":"intel.com/y","DeviceIDs":null},
            {"PodUID":"u2","ContainerName":"a","ResourceName":"intel.com/x","DeviceIDs":{"-1":["0000:03:02.6"]}}
          ],"RegisteredDevices":{"intel.com/x":["0000:03:02.3"]}},"Checksum":1234}"#;
        let c = Checkpoint::parse(text.as_bytes()).unwrap();
        let mut x = c.pod_devices("u1")["intel.com/x"].clone();
        x.sort();
        assert_eq!(x, ["0000:03:02.3", "0000:03:02.4", "0000:03:02.5"]);
        assert!(c.pod_devices("u1")["intel.com/y"].is_empty());
        assert_eq!(c.pod_devices("u2")["intel.com/x"], ["0000:03:02.6"]);
        assert!(c.pod_devices("u3").is_empty());
        let empty =
            Checkpoint::parse(br#"{"Data":{"PodDeviceEntries":null},"Checksum":0}"#).unwrap();
        assert!(empty.pod_devices("u1").is_empty());
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubelet_internal_checkpoint");
        let e = Checkpoint::read(&path).unwrap_err();
        assert!(matches!(e, CheckpointError::Io { .. }), "{e}");
        std::fs::write(&path, "[1]").unwrap();
        let e = Checkpoint::read(&path).unwrap_err();
        assert!(e.to_string().contains("kubelet_internal_checkpoint"), "{e}");
    }
}
