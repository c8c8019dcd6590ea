//! The wire protocol of Plexus's node agent `plexusd`, and its client.
//!
//! `plexusd` serves gRPC on a unix socket (default [`DEFAULT_SOCKET`], mode 0600). Phase 1
//! carries IPAM only ([`proto::ipam_client`], [`proto::ipam_server`]): `Allocate` and `Release`
//! take what `plexus-ipam`'s ADD and DEL need (the configuration, already merged with the flat
//! file, as JSON; the container, interface, pod and node) and answer what `plexus-ipam` would
//! print: the CNI result, or the CNI error (code, msg, details).
//!
//! `Pods` serves `plexus`: the pod's metadata and the NetworkAttachmentDefinitions it names
//! (`GetPod`), the network-status annotation written on the agent's warm connection
//! (`WriteStatus`), and failed attachments reported for a Warning Event (`ReportFailure`).
//!
//! The CNI binaries depend on this crate only, never on the agent's: [`client::AgentClient`]
//! connects within a deadline, and every failure to reach the agent is an [`AgentError`], on
//! which the caller does the work itself.

#![warn(missing_docs)]

pub mod client;
pub mod fallbacks;

pub use client::{AgentClient, AgentError};

/// The generated protocol types, client and server.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("plexus.agent.v1");
}

/// Where `plexusd` listens unless configured otherwise.
pub const DEFAULT_SOCKET: &str = "/run/plexus/plexusd.sock";

impl From<&plexus_cni::CniError> for proto::CniError {
    fn from(e: &plexus_cni::CniError) -> Self {
        proto::CniError {
            code: e.code,
            msg: e.msg.clone(),
            details: e.details.clone(),
        }
    }
}

impl From<proto::CniError> for plexus_cni::CniError {
    fn from(e: proto::CniError) -> Self {
        plexus_cni::CniError::new(plexus_cni::ErrorCode::from_code(e.code), e.msg)
            .with_details(e.details)
    }
}

impl proto::IpamReply {
    /// The reply carrying `outcome`: a result (ADD), nothing (DEL), or a CNI error.
    pub fn of(outcome: Result<Option<serde_json::Value>, plexus_cni::CniError>) -> Self {
        match outcome {
            Ok(result) => proto::IpamReply {
                result_json: result.map(|r| r.to_string()).unwrap_or_default(),
                error: None,
            },
            Err(e) => proto::IpamReply {
                result_json: String::new(),
                error: Some((&e).into()),
            },
        }
    }

    /// What the reply carries: the result (`None` when empty), or the CNI error.
    pub fn outcome(self) -> Result<Option<serde_json::Value>, plexus_cni::CniError> {
        if let Some(e) = self.error {
            return Err(e.into());
        }
        if self.result_json.is_empty() {
            return Ok(None);
        }
        serde_json::from_str(&self.result_json)
            .map(Some)
            .map_err(|e| {
                plexus_cni::CniError::new(
                    plexus_cni::ErrorCode::IoFailure,
                    format!("plexusd answered a result that is not JSON: {e}"),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::proto::IpamReply;
    use plexus_cni::{CniError, ErrorCode};

    #[test]
    fn a_reply_carries_the_result_or_the_cni_error() {
        let result = serde_json::json!({"cniVersion": "1.0.0", "ips": []});
        assert_eq!(
            IpamReply::of(Ok(Some(result.clone()))).outcome(),
            Ok(Some(result))
        );
        assert_eq!(IpamReply::of(Ok(None)).outcome(), Ok(None));
        let e = CniError::new(ErrorCode::PoolExhausted, "full").with_details("d");
        assert_eq!(IpamReply::of(Err(e.clone())).outcome(), Err(e));
    }
}
