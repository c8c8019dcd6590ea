//! The Kubernetes API connection of `plexus-ipam`, built the way `plexus` builds its own (the
//! `plexus` crate is not a dependency, so the few parts needed are repeated here):
//!
//! * **TCP_NODELAY** on the connection: kube's default connector leaves Nagle's algorithm on,
//!   so the first request of a fresh process stalls on a delayed ACK (≈ 50 ms instead of
//!   ≈ 8 ms). A CNI plugin is a fresh process per call.
//! * A kubeconfig's **`tokenFile` is re-read when it changes** (one `stat` per request) and
//!   trimmed: projected service-account tokens rotate.
//! * **Every call is bounded** by the timeout given at construction, and every error names the
//!   server, the verb and the object.
//!
//! [`KubeClient::call`] sorts the answers the allocator acts on (409 conflict, 409 already
//! exists, 404 not found) from the failures, which become [`StoreError`]s: no answer or no
//! connection, 429 and 5xx are [`StoreError::Unavailable`] (code 11, try again later); any
//! other refusal (401, 403, 422, ...) is [`StoreError::Backend`].

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
use kube::client::{Body, ConfigExt};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tower::{BoxError, ServiceBuilder};

use crate::store::StoreError;

/// The timeout of each API call unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// An answer of the API server that the caller acts on, or a failure.
#[derive(Debug)]
pub enum ApiError {
    /// 409 Conflict: the object changed since it was read (its resourceVersion differs).
    Conflict,
    /// 409 AlreadyExists: a create found the object there.
    AlreadyExists,
    /// 404 NotFound: the object does not exist.
    NotFound,
    /// Anything else.
    Failed(StoreError),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Failed(e)
    }
}

/// A Kubernetes API client; cheap to clone (the connection is shared).
#[derive(Clone)]
pub struct KubeClient {
    client: Client,
    server: String,
    timeout: Duration,
}

impl std::fmt::Debug for KubeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeClient")
            .field("server", &self.server)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl KubeClient {
    /// A client for the current context of the kubeconfig at `path` (a relative `tokenFile`
    /// is relative to the kubeconfig's directory).
    pub async fn from_kubeconfig(path: &Path, timeout: Duration) -> Result<KubeClient, StoreError> {
        let config_error = |e: &dyn StdError| {
            StoreError::Backend(format!(
                "Kubernetes client from kubeconfig {}: {}",
                path.display(),
                error_chain(e)
            ))
        };
        let kubeconfig = Kubeconfig::read_from(path).map_err(|e| config_error(&e))?;
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| config_error(&e))?;
        KubeClient::from_config(config, timeout)
    }

    /// A client as `kubectl` finds one: `$KUBECONFIG`, `~/.kube/config`, else the in-cluster
    /// service account.
    pub async fn infer(timeout: Duration) -> Result<KubeClient, StoreError> {
        let config = Config::infer().await.map_err(|e| {
            StoreError::Backend(format!(
                "no Kubernetes client configuration (KUBECONFIG, ~/.kube/config or in-cluster): {}",
                error_chain(&e)
            ))
        })?;
        KubeClient::from_config(config, timeout)
    }

    /// A client from a kube [`Config`]; a `token_file` without an inline token is re-read when
    /// the file changes.
    pub fn from_config(mut config: Config, timeout: Duration) -> Result<KubeClient, StoreError> {
        install_crypto_provider();
        let server = config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string();
        let config_error = |e: &dyn StdError| {
            StoreError::Backend(format!(
                "Kubernetes client for {server}: {}",
                error_chain(e)
            ))
        };
        let auth = &mut config.auth_info;
        let token_file = if auth.token.is_none()
            && auth.auth_provider.is_none()
            && auth.username.is_none()
            && auth.token_file.is_some()
        {
            let path = PathBuf::from(auth.token_file.take().expect("checked above"));
            Some(Arc::new(TokenFile::open(path).map_err(|e| {
                StoreError::Backend(format!("Kubernetes client for {server}: {e}"))
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
        let user_agent =
            HeaderValue::from_static(concat!("plexus-ipam/", env!("CARGO_PKG_VERSION")));
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
        Ok(KubeClient {
            client: Client::new(service, config.default_namespace),
            server,
            timeout,
        })
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The kube client (same connection and credentials); calls made on it directly are not
    /// bounded by the timeout.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The namespace of the kubeconfig's context (`default` when it names none).
    pub fn default_namespace(&self) -> &str {
        self.client.default_namespace()
    }

    /// Runs `call` under the timeout; `what` names the verb and object for error messages
    /// (`get ipamblocks "kube-system/x"`).
    pub async fn call<T>(
        &self,
        what: impl FnOnce() -> String,
        call: impl Future<Output = kube::Result<T>>,
    ) -> Result<T, ApiError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(kube::Error::Api(status))) if status.is_conflict() => Err(ApiError::Conflict),
            Ok(Err(kube::Error::Api(status))) if status.is_already_exists() => {
                Err(ApiError::AlreadyExists)
            }
            Ok(Err(kube::Error::Api(status))) if status.is_not_found() => Err(ApiError::NotFound),
            Ok(Err(e)) => Err(ApiError::Failed(classify(&self.server, &what(), e))),
            Err(_) => Err(ApiError::Failed(StoreError::Unavailable(format!(
                "{}: the Kubernetes API at {} did not answer within {:?}",
                what(),
                self.server,
                self.timeout
            )))),
        }
    }
}

/// The [`StoreError`] of a failed call.
fn classify(server: &str, what: &str, e: kube::Error) -> StoreError {
    match e {
        kube::Error::Api(status) => {
            let message = if status.message.is_empty() {
                status.reason.clone()
            } else {
                status.message.clone()
            };
            let text = format!(
                "{what}: the Kubernetes API at {server} answered {} {}: {message}",
                status.code, status.reason
            );
            if status.code == 429 || status.code >= 500 {
                StoreError::Unavailable(text)
            } else if status.code == 403 {
                StoreError::Backend(format!(
                    "{text} (does the ClusterRole grant it? see examples/k3s/rbac.yaml)"
                ))
            } else if status.code == 404 {
                StoreError::Backend(format!(
                    "{text} (is the IPAMBlock CRD installed? `plexusctl crds | kubectl apply -f -`)"
                ))
            } else {
                StoreError::Backend(text)
            }
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) => StoreError::Unavailable(format!(
            "{what}: cannot reach the Kubernetes API at {server}: {}",
            error_chain(&e)
        )),
        e => StoreError::Backend(format!(
            "{what} on the Kubernetes API at {server}: {}",
            error_chain(&e)
        )),
    }
}

/// `e` and its causes, `: `-separated, each said once.
pub(crate) fn error_chain(e: &dyn StdError) -> String {
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

/// Installs ring as rustls' process-wide crypto provider unless one is installed already (kube
/// and etcd-client in one binary would otherwise make rustls panic at the first connection).
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// A bearer token read from a file, and read again whenever the file changes.
#[derive(Debug)]
struct TokenFile {
    path: PathBuf,
    state: Mutex<(Option<FileStamp>, HeaderValue)>,
}

/// What tells one version of a file from the next (an atomic swap changes the inode, an
/// in-place rewrite the modification time).
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
            state: Mutex::new((stamp, header)),
        })
    }

    /// The `Authorization` header of the file's current token (the last good one when the
    /// file cannot be read).
    fn header(&self) -> HeaderValue {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let stamp = FileStamp::of(&self.path);
        if stamp.is_some() && stamp != state.0 {
            match read_bearer(&self.path) {
                Ok(header) => *state = (stamp, header),
                Err(e) => tracing::warn!("keeping the last token: {e}"),
            }
        }
        state.1.clone()
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
    fn token_file_is_trimmed_and_reread_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let file = TokenFile::open(path.clone()).unwrap();
        assert_eq!(file.header(), "Bearer first");
        let next = dir.path().join("token.new");
        std::fs::write(&next, "second").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert_eq!(file.header(), "Bearer second");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(file.header(), "Bearer second");
    }

    #[test]
    fn refusals_and_outages_are_told_apart() {
        let status = |code: u16, reason: &str| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                reason: reason.into(),
                message: "m".into(),
                ..kube::core::Status::default()
            }))
        };
        let s = "https://x:6443";
        assert!(matches!(
            classify(s, "get", status(503, "ServiceUnavailable")),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            classify(s, "get", status(429, "TooManyRequests")),
            StoreError::Unavailable(_)
        ));
        let forbidden = classify(s, "update ipamblocks \"a/b\"", status(403, "Forbidden"));
        assert!(
            matches!(&forbidden, StoreError::Backend(m) if m.contains("rbac") && m.contains("a/b")),
            "{forbidden}"
        );
    }
}
