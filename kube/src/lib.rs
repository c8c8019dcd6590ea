//! The Kubernetes API connection that `plexus` and `plexus-ipam` share.
//!
//! [`connect`] builds a `kube::Client` that differs from `kube::Client::try_from(config)` in
//! three ways:
//!
//! * **TCP_NODELAY.** kube's default connector leaves Nagle's algorithm on, so the first request
//!   on a fresh connection stalls on a delayed ACK: ≈ 50 ms after process start instead of
//!   ≈ 8 ms. A CNI plugin is a fresh process per call, so this decides most of its own cost.
//! * **Token files are re-read when they change**. Projected service-account
//!   tokens rotate (Multus #852: expired tokens are its most reported failure); kube re-reads a
//!   `tokenFile` at most once a minute and sends its trailing newline.
//! * **A user agent** `<program>/<version>`, so that audit logs tell Plexus's binaries apart.
//! * **Host names resolved in Rust** ([`resolve`]): the binaries link glibc statically, whose
//!   `getaddrinfo` would load the node's own NSS modules.
//!
//! [`Connection::call`] is the one Kubernetes call of both plugins: bounded by the connection's
//! timeout, its failure sorted into a [`KubeError`] that names the server, the verb and the
//! object, with one CNI code per kind of failure ([`KubeError::code`]).
//!
//! Connecting installs ring as rustls' process-wide crypto provider if none is installed yet:
//! with two TLS users in one binary (kube and etcd-client) rustls cannot pick one itself and
//! panics at the first connection.

#![warn(missing_docs)]

mod call;
mod errors;
pub mod resolve;
mod token_file;

use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::header::{AUTHORIZATION, USER_AGENT};
use http::{HeaderValue, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::{Body, ConfigExt};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tower::{BoxError, ServiceBuilder};

pub use call::{classify, observe_calls, CallObserver, CallStatus, KubeError};
pub use errors::{error_chain, is_tls_error};
use token_file::TokenFile;

/// The timeout of each API call unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why no client could be built: an unreadable kubeconfig, in-cluster files or token file, bad
/// certificates.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Kubernetes client for {server}: {message}")]
pub struct ConnectError {
    /// The API server URL, or where its configuration was looked for when no URL was read.
    pub server: String,
    /// What was wrong, with its causes.
    pub message: String,
}

/// A client and the URL of the API server it talks to. The client is cheap to clone (the
/// connection is shared).
#[derive(Clone)]
pub struct Connection {
    /// The kube client.
    pub client: Client,
    /// The API server's URL without a trailing slash, e.g. `https://10.43.0.1:443`.
    pub server: String,
    /// How long each [`call`](Connection::call) may take.
    pub timeout: Duration,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("server", &self.server)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The configuration of the kubeconfig at `path`, current context. A relative `tokenFile` in it
/// is relative to the kubeconfig's directory.
pub async fn kubeconfig(path: &Path) -> Result<Config, ConnectError> {
    let error = |e: &dyn StdError| ConnectError {
        server: format!("kubeconfig {}", path.display()),
        message: error_chain(e),
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| error(&e))?;
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| error(&e))
}

/// The in-cluster configuration: the server from `KUBERNETES_SERVICE_HOST` and
/// `KUBERNETES_SERVICE_PORT`, the token, CA bundle and namespace from
/// `/var/run/secrets/kubernetes.io/serviceaccount/`.
pub fn in_cluster() -> Result<Config, ConnectError> {
    Config::incluster_env().map_err(|e| ConnectError {
        server: "the in-cluster service account".into(),
        message: error_chain(&e),
    })
}

/// The configuration as `kubectl` finds one: `$KUBECONFIG`, `~/.kube/config`, else the
/// in-cluster service account.
pub async fn inferred() -> Result<Config, ConnectError> {
    Config::infer().await.map_err(|e| ConnectError {
        server: "KUBECONFIG, ~/.kube/config or the in-cluster service account".into(),
        message: error_chain(&e),
    })
}

/// A client from `config` whose connections time out after `timeout` and whose requests carry
/// the user agent `<program>/<version>`. A `token_file` in the config's `auth_info` (without an
/// inline `token`, which takes precedence) is re-read when the file changes.
pub fn connect(
    mut config: Config,
    timeout: Duration,
    program: &str,
) -> Result<Connection, ConnectError> {
    install_crypto_provider();
    let server = config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_string();
    let error = |message: String| ConnectError {
        server: server.clone(),
        message,
    };

    let auth = &mut config.auth_info;
    let token_file = if auth.token.is_none()
        && auth.auth_provider.is_none()
        && auth.username.is_none()
        && auth.token_file.is_some()
    {
        let path = PathBuf::from(auth.token_file.take().expect("checked above"));
        Some(Arc::new(TokenFile::open(path).map_err(error)?))
    } else {
        None
    };

    let mut http = HttpConnector::new_with_resolver(resolve::PureResolver::default());
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(timeout));
    let https = config
        .rustls_https_connector_with_connector(http)
        .map_err(|e| error(error_chain(&e)))?;
    let hyper = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(https);

    let user_agent = user_agent(program);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer().map_err(|e| error(error_chain(&e)))?)
        .layer(
            config
                .extra_headers_layer()
                .map_err(|e| error(error_chain(&e)))?,
        )
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
    Ok(Connection {
        client: Client::new(service, config.default_namespace),
        server,
        timeout,
    })
}

/// `<program>/<version>`; `plexus` when `program` is not a valid header value.
fn user_agent(program: &str) -> HeaderValue {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agent_names_program_and_version() {
        assert_eq!(
            user_agent("plexus-ipam"),
            format!("plexus-ipam/{}", env!("CARGO_PKG_VERSION")).as_str()
        );
        assert_eq!(user_agent("bad\nname"), "plexus");
    }
}
