//! The client of `plexusd`: a connection over its unix socket within a deadline, and the IPAM
//! calls. Every way of not reaching the agent is an [`AgentError`]; an answer the agent gave
//! (a CNI result or error) is not one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use plexus_cni::CniError;
use serde_json::Value;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::proto::ipam_client::IpamClient;
use crate::proto::pods_client::PodsClient;
use crate::proto::{
    FailureRequest, IpamRequest, PingReply, PingRequest, PodReply, PodRequest, StatusRequest,
};

/// How long one call may take once connected, unless set otherwise: a CNI ADD's own budget.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the agent could not be reached (the caller then does the work itself).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// No socket at the path.
    #[error("no agent socket at {0}")]
    Missing(PathBuf),
    /// The socket refused or failed the connection.
    #[error("cannot connect to the agent at {path}: {reason}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The connection was not made within the deadline.
    #[error("the agent at {path} did not accept a connection within {timeout:?}")]
    Timeout {
        /// The socket.
        path: PathBuf,
        /// The deadline.
        timeout: Duration,
    },
    /// The call failed in transport (the agent went away, or answered no reply).
    #[error("the call to the agent failed: {0}")]
    Call(String),
}

/// A connection to `plexusd`.
#[derive(Debug, Clone)]
pub struct AgentClient {
    ipam: IpamClient<Channel>,
    pods: PodsClient<Channel>,
}

impl AgentClient {
    /// Connects to the agent at `socket`, giving up after `connect_timeout`; each call may then
    /// take [`DEFAULT_CALL_TIMEOUT`].
    pub async fn connect(socket: &Path, connect_timeout: Duration) -> Result<Self, AgentError> {
        if !socket.exists() {
            return Err(AgentError::Missing(socket.to_path_buf()));
        }
        let path = socket.to_path_buf();
        let endpoint = Endpoint::from_static("http://plexusd.sock")
            .connect_timeout(connect_timeout)
            .timeout(DEFAULT_CALL_TIMEOUT);
        let connect = endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }));
        let channel = match tokio::time::timeout(connect_timeout, connect).await {
            Err(_) => {
                return Err(AgentError::Timeout {
                    path: socket.to_path_buf(),
                    timeout: connect_timeout,
                })
            }
            Ok(Err(e)) => {
                return Err(AgentError::Connect {
                    path: socket.to_path_buf(),
                    reason: causes(&e),
                })
            }
            Ok(Ok(channel)) => channel,
        };
        Ok(AgentClient {
            ipam: IpamClient::new(channel.clone()),
            pods: PodsClient::new(channel),
        })
    }

    /// The agent's version and node.
    pub async fn ping(&mut self) -> Result<PingReply, AgentError> {
        let reply = self.ipam.ping(PingRequest {}).await.map_err(status)?;
        Ok(reply.into_inner())
    }

    /// ADD: the CNI result the agent wrote, or the CNI error it answered.
    pub async fn allocate(
        &mut self,
        request: IpamRequest,
    ) -> Result<Result<Value, CniError>, AgentError> {
        let reply = self.ipam.allocate(request).await.map_err(status)?;
        Ok(reply
            .into_inner()
            .outcome()
            .map(|r| r.unwrap_or(Value::Null)))
    }

    /// DEL: success, or the CNI error the agent answered.
    pub async fn release(
        &mut self,
        request: IpamRequest,
    ) -> Result<Result<(), CniError>, AgentError> {
        let reply = self.ipam.release(request).await.map_err(status)?;
        Ok(reply.into_inner().outcome().map(|_| ()))
    }
}

impl AgentClient {
    /// The pod and the NADs it names (the reply may carry a CNI error the agent answered).
    pub async fn get_pod(&mut self, request: PodRequest) -> Result<PodReply, AgentError> {
        let reply = self.pods.get_pod(request).await.map_err(status)?;
        Ok(reply.into_inner())
    }

    /// Writes the pod's network-status annotation: done, or the CNI error the agent answered.
    pub async fn write_status(
        &mut self,
        request: StatusRequest,
    ) -> Result<Result<(), CniError>, AgentError> {
        let reply = self.pods.write_status(request).await.map_err(status)?;
        Ok(match reply.into_inner().error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        })
    }

    /// Reports a failed attachment (the agent writes a Warning Event), waiting at most
    /// `timeout` for the agent to take it.
    pub async fn report_failure(
        &mut self,
        request: FailureRequest,
        timeout: Duration,
    ) -> Result<(), AgentError> {
        match tokio::time::timeout(timeout, self.pods.report_failure(request)).await {
            Ok(reply) => reply.map(drop).map_err(status),
            Err(_) => Err(AgentError::Call(format!("no answer within {timeout:?}"))),
        }
    }
}

/// A failed call as an [`AgentError`].
fn status(s: tonic::Status) -> AgentError {
    AgentError::Call(format!("{:?}: {}", s.code(), s.message()))
}

/// An error with its chain of causes.
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
