//! The Kubernetes API client: the pod, its NetworkAttachmentDefinitions, and the
//! network-status annotation written back.
//!
//! Build one [`KubeApi`] per process ([`KubeApi::from_kubeconfig`], [`KubeApi::in_cluster`] or
//! [`KubeApi::from_config`]) and share it; it keeps one connection to the API server.
//!
//! Three things differ from `kube::Client::try_from(config)`:
//!
//! * **TCP_NODELAY.** kube's default connector leaves Nagle's algorithm on, so the first request
//!   on a fresh connection stalls on a delayed ACK: ≈ 50 ms after process start instead of
//!   ≈ 8 ms. A CNI plugin is a fresh process per call, so this decides most of its own cost. The
//!   client here is built from [`ConfigExt::rustls_https_connector_with_connector`] on an
//!   [`HttpConnector`] with `set_nodelay(true)`.
//! * **Token files are re-read when they change.** Projected service-account tokens rotate
//!   (Multus #852: expired tokens are its most reported failure). kube 5 re-reads a `tokenFile`
//!   at most once a minute, so for up to a minute after a rotation it keeps sending a token
//!   the server may already refuse, and it sends the file's trailing newline, which is not a
//!   valid header value. Here the file's identity (device, inode, size, modification time) is
//!   checked on every request (one `stat`), and the file is read again, trimmed, when it
//!   changed. If it cannot be read, the last token read is kept, as client-go does.
//! * **Every call is bounded** by the timeout given at construction ([`DEFAULT_TIMEOUT`]), and
//!   every error names the server, the verb and the resource ([`KubeError`]).
//!
//! Constructing a client installs ring as rustls' process-wide crypto provider if none is
//! installed yet: with two TLS users in one binary (kube and etcd-client) rustls cannot pick one
//! itself and panics at the first connection.
//!
//! The methods are async; call them (and the constructors) inside a Tokio runtime with time
//! and I/O enabled.

use std::error::Error as StdError;
use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::header::{AUTHORIZATION, USER_AGENT};
use http::{HeaderValue, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PartialObjectMeta, Patch, PatchParams};
use kube::client::{Body, ConfigExt};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use plexus_cni::{CniError, ErrorCode};
use plexus_crds::NetworkAttachmentDefinition;
use tower::{BoxError, ServiceBuilder};

/// The timeout of each API call unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

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
        let config_error = |e: &dyn StdError| KubeError::Config {
            server: format!("kubeconfig {}", path.display()),
            message: error_chain(e),
        };
        let kubeconfig = Kubeconfig::read_from(path).map_err(|e| config_error(&e))?;
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| config_error(&e))?;
        KubeApi::from_config(config, timeout)
    }

    /// The in-cluster client: the server from `KUBERNETES_SERVICE_HOST` and
    /// `KUBERNETES_SERVICE_PORT`, the token, CA bundle and namespace from
    /// `/var/run/secrets/kubernetes.io/serviceaccount/`. The token (a rotating projected token
    /// on current clusters) and the CA bundle are re-read when they change.
    pub fn in_cluster(timeout: Duration) -> Result<KubeApi, KubeError> {
        let config = Config::incluster_env().map_err(|e| KubeError::Config {
            server: "the in-cluster service account".into(),
            message: error_chain(&e),
        })?;
        KubeApi::from_config(config, timeout)
    }

    /// A client from a kube [`Config`]. A `token_file` in its `auth_info` (without an inline
    /// `token`, which takes precedence) is re-read when the file changes.
    pub fn from_config(mut config: Config, timeout: Duration) -> Result<KubeApi, KubeError> {
        install_crypto_provider();
        let server = config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string();
        let config_error = |e: &dyn StdError| KubeError::Config {
            server: server.clone(),
            message: error_chain(e),
        };

        let auth = &mut config.auth_info;
        let token_file = if auth.token.is_none()
            && auth.auth_provider.is_none()
            && auth.username.is_none()
            && auth.token_file.is_some()
        {
            let path = PathBuf::from(auth.token_file.take().expect("checked above"));
            Some(Arc::new(TokenFile::open(path).map_err(|e| {
                KubeError::Config {
                    server: server.clone(),
                    message: e,
                }
            })?))
        } else {
            None
        };

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let https = config
            .rustls_https_connector_with_connector(http)
            .map_err(|e| config_error(&e))?;
        let hyper = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(https);

        let user_agent = user_agent();
        let service = ServiceBuilder::new()
            .layer(config.base_uri_layer())
            .option_layer(config.auth_layer().map_err(|e| config_error(&e))?)
            .layer(config.extra_headers_layer().map_err(|e| config_error(&e))?)
            .map_request(move |mut request: Request<Body>| {
                let headers = request.headers_mut();
                if let Some(token_file) = &token_file {
                    headers.insert(AUTHORIZATION, token_file.header());
                }
                headers
                    .entry(USER_AGENT)
                    .or_insert_with(|| user_agent.clone());
                request
            })
            .map_err(BoxError::from)
            .service(hyper);
        Ok(KubeApi {
            client: Client::new(service, config.default_namespace),
            server,
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

/// Whether a rustls error (certificate verification, handshake) is among `e`'s causes. Those are
/// configuration problems, not an unreachable server.
fn is_tls_error(e: &(dyn StdError + 'static)) -> bool {
    if e.is::<rustls::Error>() {
        return true;
    }
    // `io::Error::source` skips the error it wraps (and hyper-rustls wraps the rustls error in
    // two of them), so look inside.
    if let Some(inner) = e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        if is_tls_error(inner) {
            return true;
        }
    }
    e.source().is_some_and(is_tls_error)
}

/// `e` and its causes, `: `-separated, each said once.
fn error_chain(e: &dyn StdError) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut cause = e.source();
    while let Some(err) = cause {
        let text = err.to_string();
        if !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
        cause = err.source();
    }
    parts.join(": ")
}

/// `<program>/<version>`, e.g. `plexus/0.1.0`, so that audit logs tell Plexus's binaries apart.
fn user_agent() -> HeaderValue {
    let program = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| !n.is_empty() && n.is_ascii())
        .unwrap_or_else(|| "plexus".into());
    HeaderValue::from_str(&format!("{program}/{}", env!("CARGO_PKG_VERSION")))
        .unwrap_or_else(|_| HeaderValue::from_static("plexus"))
}

/// Installs ring as rustls' process-wide crypto provider unless one is installed already.
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: one provider is installed either way.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// A bearer token read from a file and read again whenever the file changes.
#[derive(Debug)]
struct TokenFile {
    path: PathBuf,
    state: Mutex<TokenState>,
}

#[derive(Debug)]
struct TokenState {
    stamp: Option<FileStamp>,
    header: HeaderValue,
}

/// What tells one version of a file from the next: a kubelet-style atomic swap changes the
/// inode, an in-place rewrite the modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        let m = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        })
    }
}

impl TokenFile {
    /// Reads the token now; an unreadable, empty or invalid token file is an error.
    fn open(path: PathBuf) -> Result<TokenFile, String> {
        let stamp = FileStamp::of(&path);
        let header = read_bearer(&path)?;
        Ok(TokenFile {
            path,
            state: Mutex::new(TokenState { stamp, header }),
        })
    }

    /// The `Authorization` header for the file's current token.
    fn header(&self) -> HeaderValue {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let stamp = FileStamp::of(&self.path);
        if stamp.is_some() && stamp != state.stamp {
            match read_bearer(&self.path) {
                Ok(header) => {
                    state.header = header;
                    state.stamp = stamp;
                }
                Err(e) => tracing::warn!("keeping the last token: {e}"),
            }
        }
        state.header.clone()
    }
}

/// `Bearer <token>` for the trimmed content of the token file.
fn read_bearer(path: &Path) -> Result<HeaderValue, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("the token file {} is empty", path.display()));
    }
    let mut header = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| format!("the token file {} holds an invalid token", path.display()))?;
    header.set_sensitive(true);
    Ok(header)
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
    fn token_file_is_trimmed_and_reread_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let file = TokenFile::open(path.clone()).unwrap();
        assert_eq!(file.header(), "Bearer first");
        assert!(file.header().is_sensitive());

        // An atomic swap, as the kubelet does it: new inode.
        let next = dir.path().join("token.new");
        std::fs::write(&next, "second").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert_eq!(file.header(), "Bearer second");

        // A vanished or emptied file keeps the last token.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(file.header(), "Bearer second");
        std::fs::write(&path, "").unwrap();
        assert_eq!(file.header(), "Bearer second");
        std::fs::write(&path, "third").unwrap();
        assert_eq!(file.header(), "Bearer third");
    }

    #[test]
    fn unusable_token_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let missing = TokenFile::open(dir.path().join("none")).unwrap_err();
        assert!(missing.contains("cannot read the token file"), "{missing}");
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        let empty = TokenFile::open(dir.path().join("empty")).unwrap_err();
        assert!(empty.contains("is empty"), "{empty}");
        std::fs::write(dir.path().join("bad"), "a\u{1}b").unwrap();
        let bad = TokenFile::open(dir.path().join("bad")).unwrap_err();
        assert!(bad.contains("invalid token"), "{bad}");
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
