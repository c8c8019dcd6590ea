//! One Kubernetes API call: bounded by the connection's timeout, its failure sorted into a
//! [`KubeError`] that names the server, the verb and the object, and that error's CNI code.

use std::future::Future;
use std::time::Duration;

use plexus_cni::{CniError, ErrorCode};

use crate::{error_chain, is_tls_error, ConnectError, Connection};

/// Why a Kubernetes API call failed. Every variant names the API server; the call variants also
/// name the verb and the resource (`pods "ns/name"`).
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
    /// Any other error status from the server (409 conflict, 422 invalid, 429, 5xx, a 404).
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

    /// The server's reason (`Conflict`, `AlreadyExists`, `NotFound`, ...), for errors the
    /// server answered with a status other than 401 and 403.
    pub fn reason(&self) -> Option<&str> {
        match self {
            KubeError::Api { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// 409 Conflict: the object changed since it was read (its resourceVersion differs).
    pub fn is_conflict(&self) -> bool {
        self.status_code() == Some(409) && self.reason() == Some("Conflict")
    }

    /// 409 AlreadyExists: a create found the object there.
    pub fn is_already_exists(&self) -> bool {
        self.status_code() == Some(409) && self.reason() == Some("AlreadyExists")
    }

    /// 404 NotFound: the object does not exist. A bare 404 without that reason ("404 page not
    /// found") means the resource type is not served, and is not this.
    pub fn is_not_found(&self) -> bool {
        self.status_code() == Some(404) && self.reason() == Some("NotFound")
    }

    /// Whether retrying later may succeed: no answer, no connection, 429 or 5xx.
    pub fn is_transient(&self) -> bool {
        match self {
            KubeError::Timeout { .. } | KubeError::Unreachable { .. } => true,
            KubeError::Api { code, .. } => *code == 429 || *code >= 500,
            _ => false,
        }
    }

    /// The CNI code of this failure:
    ///
    /// * 11 (try again later) when the API server did not answer in time, could not be
    ///   reached, or answered 429 or 5xx: the condition is transient and the runtime retries;
    /// * 7 (invalid network configuration) when the client could not be built from the
    ///   configured kubeconfig or in-cluster files;
    /// * 5 (I/O failure) for TLS and undecodable answers;
    /// * 107 (API refused) for every other refusal (401, 403, 409, 422, ...).
    pub fn code(&self) -> ErrorCode {
        if self.is_transient() {
            ErrorCode::TryAgainLater
        } else if matches!(self, KubeError::Config { .. }) {
            ErrorCode::InvalidNetworkConfig
        } else if matches!(self, KubeError::Other { .. }) {
            ErrorCode::IoFailure
        } else {
            ErrorCode::ApiRefused
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

/// The CNI error of a failed call: [`KubeError::code`] and the error's message.
impl From<KubeError> for CniError {
    fn from(e: KubeError) -> CniError {
        CniError::new(e.code(), e.to_string())
    }
}

impl Connection {
    /// Runs `call`, the request `verb` on `resource` (`pods "ns/name"`), under the connection's
    /// timeout, and sorts its failure into a [`KubeError`].
    pub async fn call<T>(
        &self,
        verb: &'static str,
        resource: impl Into<String>,
        call: impl Future<Output = kube::Result<T>>,
    ) -> Result<T, KubeError> {
        let started = std::time::Instant::now();
        let outcome = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(classify(&self.server, verb, resource.into(), e)),
            Err(_) => Err(KubeError::Timeout {
                server: self.server.clone(),
                verb,
                resource: resource.into(),
                timeout: self.timeout,
            }),
        };
        if let Some(observer) = OBSERVER.get() {
            observer(verb, CallStatus::of(&outcome), started.elapsed());
        }
        outcome
    }
}

/// How a call ended, as an observer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallStatus {
    /// The server answered with success.
    Success,
    /// The server answered with this error status.
    Code(u16),
    /// No answer within the timeout.
    Timeout,
    /// No connection, or it broke.
    Unreachable,
    /// Anything else (TLS, an undecodable answer).
    Other,
}

impl CallStatus {
    /// The status of `outcome`.
    fn of<T>(outcome: &Result<T, KubeError>) -> CallStatus {
        match outcome {
            Ok(_) => CallStatus::Success,
            Err(KubeError::Timeout { .. }) => CallStatus::Timeout,
            Err(KubeError::Unreachable { .. }) => CallStatus::Unreachable,
            Err(e) => e.status_code().map_or(CallStatus::Other, CallStatus::Code),
        }
    }
}

/// Sees every [`Connection::call`] of the process once it ended: its verb, its status and
/// how long it took.
pub type CallObserver = dyn Fn(&'static str, CallStatus, Duration) + Send + Sync;

static OBSERVER: std::sync::OnceLock<Box<CallObserver>> = std::sync::OnceLock::new();

/// Makes `observer` see every API call of this process from now on (a process has one
/// observer, e.g. the node agent's metrics); `false` when one was set already.
pub fn observe_calls(observer: Box<CallObserver>) -> bool {
    OBSERVER.set(observer).is_ok()
}

/// Sorts a kube error into a [`KubeError`].
pub fn classify(server: &str, verb: &'static str, resource: String, e: kube::Error) -> KubeError {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            reason: reason.into(),
            message: "m".into(),
            ..kube::core::Status::default()
        }))
    }

    #[test]
    fn answers_are_told_apart() {
        let s = "https://x:6443";
        let conflict = classify(s, "update", "a".into(), status(409, "Conflict"));
        assert!(conflict.is_conflict() && !conflict.is_already_exists());
        let exists = classify(s, "create", "a".into(), status(409, "AlreadyExists"));
        assert!(exists.is_already_exists());
        assert!(classify(s, "get", "a".into(), status(404, "NotFound")).is_not_found());
        let bare = classify(
            s,
            "get",
            "a".into(),
            status(404, "Failed to parse error data"),
        );
        assert!(!bare.is_not_found());
        assert!(bare.to_string().contains("404 Not Found"), "{bare}");
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
        let overloaded = classify(
            &server,
            "get",
            "x".into(),
            status(503, "ServiceUnavailable"),
        );
        assert_eq!(CniError::from(overloaded).code, 11);
        let many = classify(&server, "get", "x".into(), status(429, "TooManyRequests"));
        assert!(many.is_transient());

        let forbidden = classify(
            &server,
            "patch",
            "pods \"a/b\"".into(),
            status(403, "Forbidden"),
        );
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
