//! Asking the node agent `plexusd` first: a Kubernetes ADD or DEL (not bound to a claim) is
//! sent to the agent at `agentSocket`; when the socket is missing, refuses, does not connect
//! within `agentConnectTimeoutMs`, or the call breaks off, the plugin does the work itself,
//! exactly as without an agent, and logs that it fell back. An answer of the agent (a result
//! or a CNI error) is final.
//!
//! A fallback after a broken call is safe: the agent writes the attachment's hint before its
//! block write, so the plugin's own ADD finds an address the agent already wrote, and a lost
//! write was never seen by anyone.

use plexus_agent_api::proto::IpamRequest;
use plexus_agent_api::{AgentClient, AgentError};
use plexus_cni::{CniError, SpecVersion};
use serde_json::{Map, Value};
use tracing::{debug, info};

use crate::config::{Backend, IpamConfig};
use crate::store::Owner;

/// What the agent said, or why it was not asked (then the plugin does the work).
pub type Asked<T> = Result<Result<T, CniError>, Unasked>;

/// Why the agent was not asked, or did not answer.
#[derive(Debug, thiserror::Error)]
pub enum Unasked {
    /// The configuration does not use the Kubernetes store.
    #[error("not the Kubernetes store")]
    NotKubernetes,
    /// The agent could not be reached.
    #[error(transparent)]
    Unreachable(#[from] AgentError),
}

/// The request the agent is sent for `config`, `owner` and the CNI `version`.
pub fn request(config: &IpamConfig, owner: &Owner, version: SpecVersion) -> IpamRequest {
    let mut object = Map::new();
    object.insert("cniVersion".into(), Value::String(version.to_string()));
    object.insert("name".into(), Value::String(config.name.clone()));
    object.insert("ipam".into(), Value::Object(config.merged.clone()));
    IpamRequest {
        config_json: Value::Object(object).to_string(),
        container_id: owner.container_id.clone(),
        ifname: owner.ifname.clone(),
        pod_namespace: owner.pod_namespace.clone(),
        pod_name: owner.pod_name.clone(),
        pod_uid: owner.pod_uid.clone(),
        node_name: owner.node.clone(),
    }
}

/// ADD through the agent: the CNI result it wrote.
pub async fn add(config: &IpamConfig, owner: &Owner, version: SpecVersion) -> Asked<Value> {
    let mut client = connect(config).await?;
    let asked = client.allocate(request(config, owner, version)).await;
    Ok(asked?)
}

/// DEL through the agent.
pub async fn del(config: &IpamConfig, owner: &Owner, version: SpecVersion) -> Asked<()> {
    let mut client = connect(config).await?;
    let asked = client.release(request(config, owner, version)).await;
    Ok(asked?)
}

/// A connection to the configured agent, for the Kubernetes store only.
async fn connect(config: &IpamConfig) -> Result<AgentClient, Unasked> {
    if !matches!(config.backend, Backend::Kubernetes { .. }) {
        return Err(Unasked::NotKubernetes);
    }
    let agent = &config.agent;
    Ok(AgentClient::connect(&agent.socket, agent.connect_timeout).await?)
}

/// Logs why the plugin does the work itself (a missing socket only at debug level: running
/// without an agent is a normal set-up).
/// A failure to reach the agent is also recorded in its fallback log, which the agent counts.
pub fn fell_back(config: &IpamConfig, verb: &str, why: &Unasked) {
    if let Unasked::Unreachable(e) = why {
        plexus_agent_api::fallbacks::record(&config.agent.socket, "plexus-ipam", verb, e);
    }
    match why {
        Unasked::NotKubernetes => {}
        Unasked::Unreachable(AgentError::Missing(_)) => {
            debug!("{verb} without the node agent: {why}")
        }
        Unasked::Unreachable(e) => info!("{verb} without the node agent (fell back): {e}"),
    }
}
