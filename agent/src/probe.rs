//! `plexusd --probe`: the DaemonSet's liveness check. The image has no shell and no other tool,
//! so the agent's own binary connects to the running agent's socket and asks `Ping`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use plexus_agent_api::proto::PingReply;
use plexus_agent_api::{AgentClient, AgentError};

/// How long the probe waits to connect and for the answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the agent did not answer the probe.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The socket is missing, refused, or the call failed.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// No answer in time.
    #[error("no answer on {} within {PROBE_TIMEOUT:?}", .0.display())]
    Timeout(PathBuf),
}

/// Asks the agent on `socket` for `Ping`; its counters, or why it did not answer.
pub async fn probe(socket: &Path) -> Result<PingReply, ProbeError> {
    let answer = tokio::time::timeout(PROBE_TIMEOUT, async {
        let mut client = AgentClient::connect(socket, PROBE_TIMEOUT).await?;
        client.ping().await
    })
    .await;
    match answer {
        Ok(answer) => Ok(answer?),
        Err(_) => Err(ProbeError::Timeout(socket.to_path_buf())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_while_the_agent_serves_and_fails_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run/plexusd.sock");
        let err = probe(&socket).await.unwrap_err();
        assert!(
            matches!(err, ProbeError::Agent(AgentError::Missing(_))),
            "{err}"
        );

        let serving = tokio::spawn({
            let socket = socket.clone();
            let options = crate::Options {
                metrics_address: None,
                housekeeping_interval: None,
                ..crate::Options::default()
            };
            async move { crate::run(&socket, "probed", &options).await }
        });
        let reply = loop {
            if let Ok(reply) = probe(&socket).await {
                break reply;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(reply.node, "probed");
        serving.abort();
    }
}
