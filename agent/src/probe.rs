//! `plexusd --probe`: the DaemonSet's liveness check. The image has no shell and no other tool,
//! so the agent's own binary connects to the running agent's socket and asks `Ping`.

use std::path::Path;
use std::time::Duration;

use plexus_agent_api::AgentClient;

/// How long the probe waits to connect and for the answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks the agent on `socket` for `Ping`; its counters, or why it did not answer.
pub async fn probe(socket: &Path) -> Result<String, String> {
    let answer = tokio::time::timeout(PROBE_TIMEOUT, async {
        let mut client = AgentClient::connect(socket, PROBE_TIMEOUT).await?;
        client.ping().await
    })
    .await;
    match answer {
        Ok(Ok(reply)) => Ok(format!("{reply:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no answer on {} within {PROBE_TIMEOUT:?}",
            socket.display()
        )),
    }
}
