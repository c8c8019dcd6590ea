//! The kubelet's PodResources API (`v1.PodResourcesLister`), asked over its unix socket which
//! devices it allocated to which pod.

use std::error::Error as _;
use std::path::Path;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use thiserror::Error;
use tokio::net::UnixStream;
use tonic::transport::{Endpoint, Uri};

use super::DevicesByResource;

/// The generated messages, client and server of `k8s.io/kubelet/pkg/apis/podresources/v1` (the
/// part Plexus reads; see `multiplexer/proto/podresources/v1/api.proto`).
pub mod proto {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("v1");
}

use proto::pod_resources_lister_client::PodResourcesListerClient;
use proto::{ListPodResourcesRequest, ListPodResourcesResponse};

/// The largest answer accepted (the kubelet's answer grows with the pods of the node; Multus
/// accepts 16 MiB too).
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// The API did not answer.
#[derive(Debug, Error)]
pub enum PodResourcesError {
    /// The socket could not be connected to.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The call failed.
    #[error("List failed: {0}")]
    Call(String),
    /// No answer within the time limit.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// An error with its chain of causes, on one line.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// Calls `List` on the kubelet's socket, giving up after `timeout`.
pub async fn list(
    socket: &Path,
    timeout: Duration,
) -> Result<ListPodResourcesResponse, PodResourcesError> {
    let path = socket.to_path_buf();
    let call = async move {
        let channel = Endpoint::from_static("http://kubelet.sock")
            .connect_timeout(timeout)
            .timeout(timeout)
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move { UnixStream::connect(path).await.map(TokioIo::new) }
            }))
            .await
            .map_err(|e| PodResourcesError::Connect(with_causes(&e)))?;
        let mut client =
            PodResourcesListerClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES);
        client
            .list(ListPodResourcesRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| {
                let message = match status.source() {
                    Some(source) => format!("{}: {}", status.message(), with_causes(source)),
                    None => status.message().to_string(),
                };
                PodResourcesError::Call(format!("{:?}: {message}", status.code()))
            })
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| PodResourcesError::Timeout(timeout))?
}

/// The devices of pod `namespace/name`, by resource, over all its containers.
pub fn pod_devices(
    response: &ListPodResourcesResponse,
    namespace: &str,
    name: &str,
) -> DevicesByResource {
    let mut found = DevicesByResource::new();
    let pods = response
        .pod_resources
        .iter()
        .filter(|p| p.namespace == namespace && p.name == name);
    for device in pods.flat_map(|p| &p.containers).flat_map(|c| &c.devices) {
        found
            .entry(device.resource_name.clone())
            .or_default()
            .extend(device.device_ids.iter().cloned());
    }
    found
}

#[cfg(test)]
mod tests {
    use super::proto::{ContainerDevices, ContainerResources, PodResources};
    use super::*;

    fn devices(resource: &str, ids: &[&str]) -> ContainerDevices {
        ContainerDevices {
            resource_name: resource.into(),
            device_ids: ids.iter().map(|s| s.to_string()).collect(),
            topology: None,
        }
    }

    #[test]
    fn devices_of_one_pod() {
        let response = ListPodResourcesResponse {
            pod_resources: vec![
                PodResources {
                    name: "web".into(),
                    namespace: "a".into(),
                    containers: vec![
                        ContainerResources {
                            name: "c1".into(),
                            devices: vec![devices("intel.com/x", &["0000:03:02.4"])],
                        },
                        ContainerResources {
                            name: "c2".into(),
                            devices: vec![
                                devices("intel.com/x", &["0000:03:02.3"]),
                                devices("intel.com/y", &["0000:81:00.2"]),
                            ],
                        },
                    ],
                },
                PodResources {
                    name: "web".into(),
                    namespace: "b".into(),
                    containers: vec![ContainerResources {
                        name: "c".into(),
                        devices: vec![devices("intel.com/x", &["0000:03:02.7"])],
                    }],
                },
            ],
        };
        let found = pod_devices(&response, "a", "web");
        assert_eq!(found["intel.com/x"], ["0000:03:02.4", "0000:03:02.3"]);
        assert_eq!(found["intel.com/y"], ["0000:81:00.2"]);
        assert!(pod_devices(&response, "a", "other").is_empty());
    }

    #[tokio::test]
    async fn a_missing_socket_fails_fast() {
        let dir = tempfile::tempdir().unwrap();
        let started = std::time::Instant::now();
        let e = list(&dir.path().join("kubelet.sock"), Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(matches!(e, PodResourcesError::Connect(_)), "{e}");
        assert!(e.to_string().contains("No such file"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
