//! Devices that the kubelet's device plugins allocated to a pod, for NetworkAttachmentDefinitions
//! annotated `k8s.v1.cni.cncf.io/resourceName` (SR-IOV virtual functions and the like), and the
//! device-info files of the device-info specification.
//!
//! The devices come from the kubelet's PodResources API ([`podresources`]) and, when that
//! cannot answer, from its device-manager checkpoint ([`checkpoint`]). [`PodDevices`] asks at
//! most once per ADD, and only when some network names a resource; [`allocation`] hands the
//! devices out in sorted order and writes the chosen one into the delegate's configuration;
//! [`device_info`] passes device-info files between device plugin, delegate and the
//! network-status annotation.

pub mod allocation;
pub mod checkpoint;
pub mod device_info;
pub mod podresources;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use plexus_cni::{CniError, ErrorCode};
use thiserror::Error;

pub use allocation::{Device, ResourceMap};

use crate::config::PlexusConfig;

/// How long the PodResources API may take to answer.
pub const POD_RESOURCES_TIMEOUT: Duration = Duration::from_secs(2);

/// The devices of a network could not be found.
#[derive(Debug, Clone, Error)]
pub enum DeviceError {
    /// Neither the PodResources API nor the checkpoint could be read (code 5).
    #[error(
        "network {network} uses device-plugin resource {resource:?}, but the devices of pod {pod} \
         cannot be learnt: PodResources API {socket:?}: {api}; kubelet checkpoint {checkpoint:?}: {file}"
    )]
    Unavailable {
        /// The network (`namespace/name`).
        network: String,
        /// The resource it names.
        resource: String,
        /// `namespace/name` of the pod.
        pod: String,
        /// The PodResources socket.
        socket: PathBuf,
        /// Why the API did not answer.
        api: String,
        /// The checkpoint file.
        checkpoint: PathBuf,
        /// Why the checkpoint could not be used.
        file: String,
    },
    /// The network names a resource of which the kubelet allocated the pod no (more) device
    /// (code 7).
    #[error(
        "network {network} uses device-plugin resource {resource:?}, but {}; the pod must \
         request one {resource:?} per network that uses it",
        no_device(.pod, *.allocated, .source_name)
    )]
    NoDevice {
        /// The network (`namespace/name`).
        network: String,
        /// The resource it names.
        resource: String,
        /// `namespace/name` of the pod.
        pod: String,
        /// How many devices of the resource the pod has.
        allocated: usize,
        /// Where the devices were learnt from.
        source_name: &'static str,
    },
}

fn no_device(pod: &str, allocated: usize, source_name: &str) -> String {
    match allocated {
        0 => format!("the kubelet allocated no device of it to pod {pod} (says the {source_name})"),
        n => format!(
            "the {n} device(s) of it the kubelet allocated to pod {pod} (says the {source_name}) \
             are taken by earlier networks of the pod"
        ),
    }
}

impl From<DeviceError> for CniError {
    fn from(e: DeviceError) -> Self {
        let code = match &e {
            DeviceError::Unavailable { .. } => ErrorCode::IoFailure,
            DeviceError::NoDevice { .. } => ErrorCode::InvalidNetworkConfig,
        };
        CniError::new(code, e.to_string())
    }
}

/// The pod's allocated devices, learnt on first use and handed out one per network.
pub struct PodDevices {
    socket: PathBuf,
    checkpoint: PathBuf,
    namespace: String,
    name: String,
    uid: Option<String>,
    learnt: Option<Learnt>,
}

/// The pod's devices and where they were learnt, or why the API and the checkpoint each failed.
type Learnt = Result<(ResourceMap, &'static str), (String, String)>;

impl PodDevices {
    /// The devices of pod `namespace/name` (with UID `uid`, which the checkpoint is keyed by),
    /// from the sources `config` names. Nothing is read yet.
    pub fn new(config: &PlexusConfig, namespace: &str, name: &str, uid: Option<&str>) -> Self {
        PodDevices {
            socket: config.pod_resources_socket.clone(),
            checkpoint: config.kubelet_checkpoint_file.clone(),
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.map(str::to_string),
            learnt: None,
        }
    }

    /// The device for `network`, which names `resource`: the next of the pod's devices of that
    /// resource, else `requested` (the pod annotation's own `deviceID`), else an error.
    pub async fn take(
        &mut self,
        network: &str,
        resource: &str,
        requested: Option<&str>,
    ) -> Result<Device, DeviceError> {
        if self.learnt.is_none() {
            self.learnt = Some(self.learn().await);
        }
        let pod = format!("{}/{}", self.namespace, self.name);
        let device = |id: &str| Device {
            resource_name: resource.to_string(),
            device_id: id.to_string(),
        };
        match self.learnt.as_mut().expect("learnt above") {
            Ok((map, source_name)) => match map.take(resource) {
                Some(id) => Ok(device(&id)),
                None => requested.map(device).ok_or_else(|| DeviceError::NoDevice {
                    network: network.into(),
                    resource: resource.into(),
                    pod,
                    allocated: map.allocated(resource),
                    source_name,
                }),
            },
            Err((api, file)) => requested
                .map(device)
                .ok_or_else(|| DeviceError::Unavailable {
                    network: network.into(),
                    resource: resource.into(),
                    pod,
                    socket: self.socket.clone(),
                    api: api.clone(),
                    checkpoint: self.checkpoint.clone(),
                    file: file.clone(),
                }),
        }
    }

    /// Asks the PodResources API, else reads the checkpoint; on failure, why each failed.
    async fn learn(&self) -> Learnt {
        let api = match podresources::list(&self.socket, POD_RESOURCES_TIMEOUT).await {
            Ok(response) => {
                let devices = podresources::pod_devices(&response, &self.namespace, &self.name);
                return Ok((ResourceMap::new(devices), "PodResources API"));
            }
            Err(e) => e.to_string(),
        };
        tracing::info!(
            "PodResources API unavailable ({api}); reading the kubelet checkpoint {:?}",
            self.checkpoint
        );
        let file = match &self.uid {
            None => "the pod's UID (K8S_POD_UID) is not known".to_string(),
            Some(uid) => match checkpoint::Checkpoint::read(&self.checkpoint) {
                Ok(c) => return Ok((ResourceMap::new(c.pod_devices(uid)), "kubelet checkpoint")),
                Err(e) => e.to_string(),
            },
        };
        Err((api, file))
    }
}

/// Device IDs by resource name.
pub type DevicesByResource = BTreeMap<String, Vec<String>>;
