//! The Kubernetes API client: the pod, its NetworkAttachmentDefinitions, and the
//! network-status annotation written back.
//!
//! Build one [`KubeApi`] per process ([`KubeApi::from_kubeconfig`], [`KubeApi::in_cluster`] or
//! [`KubeApi::from_config`]) and share it; it keeps one connection to the API server.
//!
//! The connection is [`plexus_kube`]'s (TCP_NODELAY, token files re-read when they rotate, a
//! user agent naming the program), and so is the call: [`plexus_kube::Connection::call`]
//! bounds each call by the timeout given at construction ([`DEFAULT_TIMEOUT`]), and its
//! [`KubeError`] names the server, the verb and the resource and carries the CNI code.
//!
//! The methods are async; call them (and the constructors) inside a Tokio runtime with time
//! and I/O enabled.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PartialObjectMeta, Patch, PatchParams};
use kube::{Client, Config};
use plexus_crds::NetworkAttachmentDefinition;
use plexus_kube::Connection;

pub use plexus_kube::{install_crypto_provider, KubeError, DEFAULT_TIMEOUT};

/// The resource name of NetworkAttachmentDefinitions, as errors print it.
const NAD_RESOURCE: &str = "network-attachment-definitions.k8s.cni.cncf.io";

/// A Kubernetes API client for what Plexus reads and writes. Cheap to clone (the connection is
/// shared); build it once per process.
#[derive(Clone, Debug)]
pub struct KubeApi {
    connection: Connection,
}

impl KubeApi {
    /// A client for the current context of the kubeconfig at `path`. A relative `tokenFile` in
    /// it is relative to the kubeconfig's directory.
    pub async fn from_kubeconfig(path: &Path, timeout: Duration) -> Result<KubeApi, KubeError> {
        KubeApi::from_config(plexus_kube::kubeconfig(path).await?, timeout)
    }

    /// The in-cluster client: the server from `KUBERNETES_SERVICE_HOST` and
    /// `KUBERNETES_SERVICE_PORT`, the token, CA bundle and namespace from
    /// `/var/run/secrets/kubernetes.io/serviceaccount/`. The token (a rotating projected token
    /// on current clusters) is re-read when it changes.
    pub fn in_cluster(timeout: Duration) -> Result<KubeApi, KubeError> {
        KubeApi::from_config(plexus_kube::in_cluster()?, timeout)
    }

    /// A client from a kube [`Config`]. A `token_file` in its `auth_info` (without an inline
    /// `token`, which takes precedence) is re-read when the file changes.
    pub fn from_config(config: Config, timeout: Duration) -> Result<KubeApi, KubeError> {
        let connection = plexus_kube::connect(config, timeout, &program_name())?;
        Ok(KubeApi { connection })
    }

    /// The API server's URL, e.g. `https://10.43.0.1:443`.
    pub fn server(&self) -> &str {
        &self.connection.server
    }

    /// The timeout of each call.
    pub fn timeout(&self) -> Duration {
        self.connection.timeout
    }

    /// The underlying kube client (same connection, same credentials), for calls not wrapped
    /// here. Those calls are not bounded by [`timeout`](Self::timeout).
    pub fn client(&self) -> &Client {
        &self.connection.client
    }

    /// The metadata (annotations, UID, ...) of the pod `namespace/name`, or `None` if it does
    /// not exist. Only the metadata is asked for (`PartialObjectMetadata`): a pod's spec, status
    /// and managed fields are most of its size, and Plexus reads none of them.
    pub async fn get_pod(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<PartialObjectMeta<Pod>>, KubeError> {
        let api: Api<Pod> = Api::namespaced(self.connection.client.clone(), namespace);
        let resource = format!("pods \"{namespace}/{name}\"");
        self.get_opt("get", resource, api.get_metadata(name)).await
    }

    /// The NetworkAttachmentDefinition `namespace/name`, or `None` if it does not exist. A
    /// cluster without the NetworkAttachmentDefinition CRD is an error, not `None`.
    pub async fn get_nad(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<NetworkAttachmentDefinition>, KubeError> {
        let api: Api<NetworkAttachmentDefinition> =
            Api::namespaced(self.connection.client.clone(), namespace);
        let resource = format!("{NAD_RESOURCE} \"{namespace}/{name}\"");
        match self.get_opt("get", resource, api.get(name)).await {
            Err(KubeError::Api {
                server,
                verb,
                resource,
                code: 404,
                reason,
                message,
            }) => Err(KubeError::Api {
                server,
                verb,
                resource,
                code: 404,
                reason,
                message: format!(
                    "{message} (is the NetworkAttachmentDefinition CRD installed? `plexusctl crds | kubectl apply -f -`)"
                ),
            }),
            result => result,
        }
    }

    /// Sets one annotation of the pod `namespace/name` with a JSON merge patch, leaving every
    /// other annotation as it is. With `uid`, the patch carries `metadata.uid` so that the
    /// server refuses it if the pod by that name is another pod (one deleted and re-created
    /// since it was read).
    pub async fn patch_pod_annotation(
        &self,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
        key: &str,
        value: &str,
    ) -> Result<(), KubeError> {
        let api: Api<Pod> = Api::namespaced(self.connection.client.clone(), namespace);
        let patch = annotation_patch(uid, key, value);
        let params = PatchParams {
            field_manager: Some("plexus".into()),
            ..PatchParams::default()
        };
        let resource = format!("pods \"{namespace}/{name}\"");
        // The answer is the patched pod; asking for its metadata only keeps it small.
        self.connection
            .call("patch", resource, async {
                api.patch_metadata(name, &params, &Patch::Merge(&patch))
                    .await
                    .map(drop)
            })
            .await
    }

    /// [`Connection::call`] for a GET where "object not found" is `None`. A bare 404 without
    /// the NotFound reason ("404 page not found") means the resource type is not served: an
    /// error.
    async fn get_opt<T>(
        &self,
        verb: &'static str,
        resource: String,
        call: impl Future<Output = kube::Result<T>>,
    ) -> Result<Option<T>, KubeError> {
        match self.connection.call(verb, resource, call).await {
            Ok(value) => Ok(Some(value)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The merge patch that sets one annotation, with `metadata.uid` as a precondition if given.
fn annotation_patch(uid: Option<&str>, key: &str, value: &str) -> serde_json::Value {
    let mut metadata = serde_json::Map::new();
    if let Some(uid) = uid {
        metadata.insert("uid".into(), uid.into());
    }
    metadata.insert("annotations".into(), serde_json::json!({ key: value }));
    serde_json::json!({ "metadata": metadata })
}

/// This program's file name (`plexus`, `plexusctl`), for the user agent: audit logs then tell
/// Plexus's binaries apart.
fn program_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| !n.is_empty() && n.is_ascii())
        .unwrap_or_else(|| "plexus".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_patch_sets_one_annotation_and_the_uid_precondition() {
        assert_eq!(
            annotation_patch(None, "k8s.v1.cni.cncf.io/network-status", "[]"),
            serde_json::json!({"metadata": {"annotations": {"k8s.v1.cni.cncf.io/network-status": "[]"}}})
        );
        assert_eq!(
            annotation_patch(Some("u-1"), "a", "b"),
            serde_json::json!({"metadata": {"uid": "u-1", "annotations": {"a": "b"}}})
        );
    }
}
