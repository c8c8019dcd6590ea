//! The Kubernetes API client: the pod, its NetworkAttachmentDefinitions, and the
//! network-status annotation written back.
//!
//! Build one [`KubeApi`] per process ([`KubeApi::from_kubeconfig`], [`KubeApi::in_cluster`] or
//! [`KubeApi::from_config`]) and share it; it keeps one connection to the API server.
//!
//! The connection is [`plexus_kube`]'s (TCP_NODELAY, token files re-read when they rotate, a
//! user agent naming the program). Here every call is bounded by the timeout given at
//! construction ([`DEFAULT_TIMEOUT`]), and every error names the server, the verb and the
//! resource ([`KubeError`]).
//!
//! The methods are async; call them (and the constructors) inside a Tokio runtime with time
//! and I/O enabled.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PartialObjectMeta, Patch, PatchParams};
use kube::{Client, Config};
use plexus_cni::{CniError, ErrorCode};
use plexus_crds::NetworkAttachmentDefinition;
use plexus_kube::{error_chain, is_tls_error, ConnectError};

pub use plexus_kube::{install_crypto_provider, DEFAULT_TIMEOUT};

/// The resource name of NetworkAttachmentDefinitions, as errors print it.
const NAD_RESOURCE: &str = "network-attachment-definitions.k8s.cni.cncf.io";

/// Why a Kubernetes API call failed. Every variant names the API server; the call variants also
/// name the verb and the resource (`pods "ns/name"`). An object that does not exist is not an
/// error: the getters answer `Ok(None)`.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The client could not be built: unreadable kubeconfig, in-cluster files or token file,
    /// bad certificates.
    #[error("Kubernetes client for {server}: {message}")]
    Config {
        /// The API server URL, or the kubeconfig path when no URL could be read.
        server: String,
        /// What was wrong.
        message: String,
    },
    /// No answer within the timeout.
    #[error("{verb} {resource}: the Kubernetes API at {server} did not answer within {timeout:?}")]
    Timeout {
        /// The API server URL.
        server: String,
        /// The verb (`get`, `patch`).
        verb: &'static str,
        /// The resource and object.
        resource: String,
        /// The timeout that passed.
        timeout: Duration,
    },
    /// The connection could not be made or broke (refused, reset, closed).
    #[error("{verb} {resource}: cannot reach the Kubernetes API at {server}: {message}")]
    Unreachable {
        /// The API server URL.
        server: String,
        /// The verb.
        verb: &'static str,
        /// The resource and object.
        resource: String,
        /// The connection error, with its causes.
        message: String,
    },
    /// 401: the server did not accept the credentials (expired or invalidated token?).
    #[error("{verb} {resource}: the Kubernetes API at {server} did not accept the credentials (401 Unauthorized): {message}")]
    Unauthorized {
        /// The API server URL.
        server: String,
        /// The verb.
        verb: &'static str,
        /// The resource and object.
        resource: String,
        /// The server's message.
        message: String,
    },
    /// 403: the credentials are valid but RBAC does not allow the call.
    #[error(
        "{verb} {resource}: the Kubernetes API at {server} forbids it (403 Forbidden): {message}"
    )]
    Forbidden {
        /// The API server URL.
        server: String,
        /// The verb.
        verb: &'static str,
        /// The resource and object.
        resource: String,
        /// The server's message (it names the user).
        message: String,
    },
    /// Any other error status from the server (409 conflict, 422 invalid, 429, 5xx, or a 404
    /// that is not "object not found", such as an API that is not served).
    #[error(
        "{verb} {resource}: the Kubernetes API at {server} answered {code} {reason}: {message}"
    )]
    Api {
        /// The API server URL.
        server: String,
        /// The verb.
        verb: &'static str,
        /// The resource and object.
        resource: String,
        /// The HTTP status code.
        code: u16,
        /// The machine-readable reason (`Conflict`, `Invalid`, ...).
        reason: String,
        /// The server's message.
        message: String,
    },
    /// Anything else: TLS verification, an undecodable answer, ...
    #[error("{verb} {resource} on the Kubernetes API at {server}: {message}")]
    Other {
        /// The API server URL.
        server: String,
        /// The verb.
        verb: &'static str,
        /// The resource and object.
        resource: String,
        /// What went wrong, with its causes.
        message: String,
    },
}

impl KubeError {
    /// The HTTP status code, for errors the server answered.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            KubeError::Unauthorized { .. } => Some(401),
            KubeError::Forbidden { .. } => Some(403),
            KubeError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether retrying later may succeed: no answer, no connection, 429 or 5xx.
    pub fn is_transient(&self) -> bool {
        match self {
            KubeError::Timeout { .. } | KubeError::Unreachable { .. } => true,
            KubeError::Api { code, .. } => *code == 429 || *code >= 500,
            _ => false,
        }
    }
}

impl From<ConnectError> for KubeError {
    fn from(e: ConnectError) -> KubeError {
        KubeError::Config {
            server: e.server,
            message: e.message,
        }
    }
}

/// The CNI error for a failed API call:
///
/// * 11 (try again later) when the API server did not answer in time, could not be reached, or
///   answered 429 or 5xx: the condition is transient and the runtime retries the sandbox;
/// * 7 (invalid network configuration) when the client could not be built from the configured
///   kubeconfig or in-cluster files;
/// * 5 (I/O failure) for every other refusal (401, 403, 409, 422, ...): the exchange with the
///   API failed for a reason a retry does not fix; the message says which.
impl From<KubeError> for CniError {
    fn from(e: KubeError) -> CniError {
        let code = if e.is_transient() {
            ErrorCode::TryAgainLater
        } else if matches!(e, KubeError::Config { .. }) {
            ErrorCode::InvalidNetworkConfig
        } else if matches!(e, KubeError::Other { .. }) {
            ErrorCode::IoFailure
        } else {
            ErrorCode::ApiRefused
        };
        CniError::new(code, e.to_string())
    }
}

/// A Kubernetes API client for what Plexus reads and writes. Cheap to clone (the connection is
/// shared); build it once per process.
#[derive(Clone)]
pub struct KubeApi {
    client: Client,
    server: String,
    timeout: Duration,
}

impl std::fmt::Debug for KubeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeApi")
            .field("server", &self.server)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
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
        Ok(KubeApi {
            client: connection.client,
            server: connection.server,
            timeout,
        })
    }

    /// The API server's URL, e.g. `https://10.43.0.1:443`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The timeout of each call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The underlying kube client (same connection, same credentials), for calls not wrapped
    /// here. Those calls are not bounded by [`timeout`](Self::timeout).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The metadata (annotations, UID, ...) of the pod `namespace/name`, or `None` if it does
    /// not exist. Only the metadata is asked for (`PartialObjectMetadata`): a pod's spec, status
    /// and managed fields are most of its size, and Plexus reads none of them.
    pub async fn get_pod(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<PartialObjectMeta<Pod>>, KubeError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
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
        let api: Api<NetworkAttachmentDefinition> = Api::namespaced(self.client.clone(), namespace);
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
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let patch = annotation_patch(uid, key, value);
        let params = PatchParams {
            field_manager: Some("plexus".into()),
            ..PatchParams::default()
        };
        let resource = format!("pods \"{namespace}/{name}\"");
        // The answer is the patched pod; asking for its metadata only keeps it small.
        self.call("patch", resource, async {
            api.patch_metadata(name, &params, &Patch::Merge(&patch))
                .await
                .map(drop)
        })
        .await
    }

    /// Runs `call` under the timeout and turns its error into a [`KubeError`].
    async fn call<T>(
        &self,
        verb: &'static str,
        resource: String,
        call: impl Future<Output = kube::Result<T>>,
    ) -> Result<T, KubeError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(classify(&self.server, verb, resource, e)),
            Err(_) => Err(KubeError::Timeout {
                server: self.server.clone(),
                verb,
                resource,
                timeout: self.timeout,
            }),
        }
    }

    /// [`call`](Self::call) for a GET where "object not found" is `None`.
    async fn get_opt<T>(
        &self,
        verb: &'static str,
        resource: String,
        call: impl Future<Output = kube::Result<T>>,
    ) -> Result<Option<T>, KubeError> {
        let call = async {
            match call.await {
                Ok(value) => Ok(Some(value)),
                // "pods \"x\" not found". A bare 404 without the NotFound reason ("404 page not
                // found") means the resource type is not served: an error.
                Err(kube::Error::Api(status))
                    if status.code == 404 && status.reason == "NotFound" =>
                {
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        };
        self.call(verb, resource, call).await
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

/// Sorts a kube error into a [`KubeError`].
fn classify(server: &str, verb: &'static str, resource: String, e: kube::Error) -> KubeError {
    let server = server.to_string();
    match e {
        kube::Error::Api(status) => {
            let message = if status.message.is_empty() {
                status.reason.clone()
            } else {
                status.message.clone()
            };
            // kube's stand-in reason for an answer that was not a JSON Status ("404 page not
            // found"): say the HTTP reason instead.
            let reason =
                if status.reason.is_empty() || status.reason == "Failed to parse error data" {
                    http::StatusCode::from_u16(status.code)
                        .ok()
                        .and_then(|c| c.canonical_reason())
                        .unwrap_or("")
                        .to_string()
                } else {
                    status.reason.clone()
                };
            match status.code {
                401 => KubeError::Unauthorized {
                    server,
                    verb,
                    resource,
                    message,
                },
                403 => KubeError::Forbidden {
                    server,
                    verb,
                    resource,
                    message,
                },
                code => KubeError::Api {
                    server,
                    verb,
                    resource,
                    code,
                    reason,
                    message,
                },
            }
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) => {
            let message = match &e {
                kube::Error::HyperError(inner) => error_chain(inner),
                kube::Error::Service(inner) => error_chain(inner.as_ref()),
                _ => unreachable!("matched above"),
            };
            if is_tls_error(&e) {
                // Certificate verification or the handshake: configuration, not connectivity.
                KubeError::Other {
                    server,
                    verb,
                    resource,
                    message: format!("TLS: {message}"),
                }
            } else {
                KubeError::Unreachable {
                    server,
                    verb,
                    resource,
                    message,
                }
            }
        }
        e => KubeError::Other {
            server,
            verb,
            resource,
            message: error_chain(&e),
        },
    }
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

    #[test]
    fn transient_errors_become_try_again_later() {
        let server = "https://10.0.0.1:6443".to_string();
        let timeout = KubeError::Timeout {
            server: server.clone(),
            verb: "get",
            resource: "pods \"a/b\"".into(),
            timeout: Duration::from_secs(5),
        };
        let e = CniError::from(timeout);
        assert_eq!(e.code, 11);
        assert!(
            e.msg.contains(&server) && e.msg.contains("get pods \"a/b\""),
            "{}",
            e.msg
        );

        let overloaded = KubeError::Api {
            server: server.clone(),
            verb: "get",
            resource: "pods \"a/b\"".into(),
            code: 503,
            reason: "ServiceUnavailable".into(),
            message: "x".into(),
        };
        assert_eq!(CniError::from(overloaded).code, 11);

        let forbidden = KubeError::Forbidden {
            server: server.clone(),
            verb: "patch",
            resource: "pods \"a/b\"".into(),
            message: "no".into(),
        };
        assert_eq!(forbidden.status_code(), Some(403));
        let e = CniError::from(forbidden);
        assert_eq!(e.code, 107);
        assert!(
            e.msg.contains("forbids") && e.msg.contains(&server),
            "{}",
            e.msg
        );

        let config = KubeError::Config {
            server,
            message: "bad".into(),
        };
        assert_eq!(CniError::from(config).code, 7);
    }
}
