//! The Kubernetes API client of `plexus-ipam`: [`plexus_kube`]'s connection and its one bounded
//! call ([`plexus_kube::Connection::call`]), every error naming the server, the verb and the
//! object.
//!
//! [`KubeClient::call`] sorts the answers the allocator acts on (409 conflict, 409 already
//! exists, 404 not found) from the failures, which are [`KubeError`]s: no answer or no
//! connection, 429 and 5xx are transient (code 11, try again later); any other refusal (401,
//! 403, 422, ...) is code 121 ([`StoreError::code`]).

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use kube::{Client, Config};
use plexus_kube::{Connection, KubeError};

use crate::store::StoreError;

pub use plexus_kube::{install_crypto_provider, DEFAULT_TIMEOUT};

/// An answer of the API server that the caller acts on (each with the server's answer, which
/// names the call and the object), or a failure.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 409 Conflict: the object changed since it was read (its resourceVersion differs).
    #[error(transparent)]
    Conflict(KubeError),
    /// 409 AlreadyExists: a create found the object there.
    #[error(transparent)]
    AlreadyExists(KubeError),
    /// 404 NotFound: the object does not exist.
    #[error(transparent)]
    NotFound(KubeError),
    /// Anything else.
    #[error(transparent)]
    Failed(StoreError),
}

impl From<KubeError> for ApiError {
    fn from(e: KubeError) -> ApiError {
        if e.is_conflict() {
            ApiError::Conflict(e)
        } else if e.is_already_exists() {
            ApiError::AlreadyExists(e)
        } else if e.is_not_found() {
            ApiError::NotFound(e)
        } else {
            ApiError::Failed(StoreError::Kubernetes(e))
        }
    }
}

/// A Kubernetes API client; cheap to clone (the connection is shared).
#[derive(Clone, Debug)]
pub struct KubeClient {
    connection: Connection,
}

impl KubeClient {
    /// A client for the current context of the kubeconfig at `path` (a relative `tokenFile`
    /// is relative to the kubeconfig's directory).
    pub async fn from_kubeconfig(path: &Path, timeout: Duration) -> Result<KubeClient, StoreError> {
        let config = plexus_kube::kubeconfig(path)
            .await
            .map_err(KubeError::from)?;
        KubeClient::from_config(config, timeout)
    }

    /// A client as `kubectl` finds one: `$KUBECONFIG`, `~/.kube/config`, else the in-cluster
    /// service account.
    pub async fn infer(timeout: Duration) -> Result<KubeClient, StoreError> {
        let config = plexus_kube::inferred().await.map_err(KubeError::from)?;
        KubeClient::from_config(config, timeout)
    }

    /// A client from a kube [`Config`]; a `token_file` without an inline token is re-read when
    /// the file changes.
    pub fn from_config(config: Config, timeout: Duration) -> Result<KubeClient, StoreError> {
        let connection =
            plexus_kube::connect(config, timeout, "plexus-ipam").map_err(KubeError::from)?;
        Ok(KubeClient { connection })
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.connection.server
    }

    /// The kube client (same connection and credentials); calls made on it directly are not
    /// bounded by the timeout.
    pub fn client(&self) -> &Client {
        &self.connection.client
    }

    /// The namespace of the kubeconfig's context (`default` when it names none).
    pub fn default_namespace(&self) -> &str {
        self.connection.client.default_namespace()
    }

    /// Runs `call`, the request `verb` on `resource` (`ipamblocks "kube-system/x"`), under the
    /// timeout.
    pub async fn call<T>(
        &self,
        verb: &'static str,
        resource: impl Into<String>,
        call: impl Future<Output = kube::Result<T>>,
    ) -> Result<T, ApiError> {
        Ok(self.connection.call(verb, resource, call).await?)
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
        let classify = |verb, resource: &str, e| {
            StoreError::Kubernetes(plexus_kube::classify(s, verb, resource.into(), e))
        };
        let code = |e: StoreError| e.code().code();
        assert_eq!(
            code(classify("get", "x", status(503, "ServiceUnavailable"))),
            11
        );
        assert_eq!(
            code(classify("get", "x", status(429, "TooManyRequests"))),
            11
        );
        let forbidden = classify("update", "ipamblocks \"a/b\"", status(403, "Forbidden"));
        let text = forbidden.to_string();
        assert!(text.contains("RBAC") && text.contains("a/b"), "{text}");
        assert_eq!(code(forbidden), 121);
        assert!(matches!(
            ApiError::from(plexus_kube::classify(
                s,
                "get",
                "x".into(),
                status(404, "NotFound")
            )),
            ApiError::NotFound(_)
        ));
    }
}
