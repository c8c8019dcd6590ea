//! The Kubernetes API client of `plexus-ipam`: [`plexus_kube`]'s connection (TCP_NODELAY, token
//! files re-read when they rotate), every call bounded by the timeout given at construction,
//! every error naming the server, the verb and the object.
//!
//! [`KubeClient::call`] sorts the answers the allocator acts on (409 conflict, 409 already
//! exists, 404 not found) from the failures, which become [`StoreError`]s: no answer or no
//! connection, 429 and 5xx are [`StoreError::Unavailable`] (code 11, try again later); any
//! other refusal (401, 403, 422, ...) is [`StoreError::Backend`].

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use kube::{Client, Config};
use plexus_kube::{error_chain, ConnectError};

use crate::store::StoreError;

pub use plexus_kube::{install_crypto_provider, DEFAULT_TIMEOUT};

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

impl From<ConnectError> for StoreError {
    fn from(e: ConnectError) -> StoreError {
        StoreError::Backend(e.to_string())
    }
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
        KubeClient::from_config(plexus_kube::kubeconfig(path).await?, timeout)
    }

    /// A client as `kubectl` finds one: `$KUBECONFIG`, `~/.kube/config`, else the in-cluster
    /// service account.
    pub async fn infer(timeout: Duration) -> Result<KubeClient, StoreError> {
        KubeClient::from_config(plexus_kube::inferred().await?, timeout)
    }

    /// A client from a kube [`Config`]; a `token_file` without an inline token is re-read when
    /// the file changes.
    pub fn from_config(config: Config, timeout: Duration) -> Result<KubeClient, StoreError> {
        let connection = plexus_kube::connect(config, timeout, "plexus-ipam")?;
        Ok(KubeClient {
            client: connection.client,
            server: connection.server,
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
                    "{text} (does the RBAC grant it? examples/k3s/rbac.yaml grants the \
                     IPAM's objects in one namespace, which kubernetes.namespace must name)"
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

#[cfg(test)]
mod tests {
    use super::*;

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
