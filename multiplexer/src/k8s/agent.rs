//! Asking the node agent `plexusd` first: a Kubernetes ADD asks it for the pod and the
//! NetworkAttachmentDefinitions the pod names (served from its watch caches), and hands it the
//! network-status annotation to write on its warm connection.
//!
//! The connection is made lazily, once per process, on the process's one runtime thread. When
//! the socket is missing, refuses, does not connect within `agentConnectTimeoutMs`, or a call
//! breaks off, `plexus` does the work itself, exactly as without an agent, logs that it fell
//! back, and does not ask the agent again in this process. An answer of the agent (the pod, a
//! NAD that does not exist, a CNI error) is final. DEL never asks the agent.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use plexus_agent_api::proto::{Attachment, FailureRequest, NadRef, PodRequest, StatusRequest};
use plexus_agent_api::{AgentClient, AgentError};
use plexus_cni::{CniError, CniResult, ErrorCode};
use plexus_crds::NetworkAttachmentDefinition;
use serde_json::{Map, Value};
use tracing::{debug, info};

use crate::config::PlexusConfig;
use crate::k8s::pod_networks::{self, PodInfo, PodRef, POD_ANNOTATIONS_CAPABILITY};
use crate::plan::Plan;

/// How long a failed attachment's report may wait for the agent: it is best-effort.
const REPORT_TIMEOUT: Duration = Duration::from_millis(100);

/// The NADs the agent answered: `namespace/name` → the NAD, `None` when it does not exist.
pub type Prefetched = Vec<((String, String), Option<NetworkAttachmentDefinition>)>;

/// The agent as one `plexus` process reaches it.
#[derive(Debug)]
pub struct Agent {
    socket: std::path::PathBuf,
    connect_timeout: Duration,
    state: Mutex<State>,
    /// When this ADD began, for the agent's metrics.
    started: Instant,
}

/// Whether the agent was reached.
#[derive(Debug)]
enum State {
    /// Not asked yet.
    Unasked,
    /// Connected.
    Up(Box<AgentClient>),
    /// Unreachable, or a call broke: this process does the work itself.
    Down,
}

impl Agent {
    /// The agent `config` names, not connected yet.
    pub fn new(config: &PlexusConfig) -> Agent {
        Agent {
            socket: config.agent_socket.clone(),
            connect_timeout: Duration::from_millis(config.agent_connect_timeout_ms),
            state: Mutex::new(State::Unasked),
            started: Instant::now(),
        }
    }

    /// Microseconds since this ADD began (since [`Agent::new`]).
    fn elapsed_micros(&self) -> u64 {
        self.started
            .elapsed()
            .as_micros()
            .try_into()
            .unwrap_or(u64::MAX)
    }

    /// The connection, made at the first call; an error when the agent is down (the fallback
    /// logged and recorded once).
    async fn client(&self) -> Result<AgentClient, AgentError> {
        match &*self.state.lock().unwrap_or_else(|e| e.into_inner()) {
            State::Up(client) => return Ok((**client).clone()),
            State::Down => return Err(AgentError::Call("fell back earlier".into())),
            State::Unasked => {}
        }
        let connected = AgentClient::connect(&self.socket, self.connect_timeout).await;
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = match &connected {
            Ok(client) => State::Up(Box::new(client.clone())),
            Err(e) => {
                self.fell_back("ADD", e);
                State::Down
            }
        };
        connected
    }

    /// Whether the agent answered and no call to it broke.
    pub fn is_up(&self) -> bool {
        matches!(
            *self.state.lock().unwrap_or_else(|e| e.into_inner()),
            State::Up(_)
        )
    }

    /// Marks the agent down after a broken call, and logs the fallback.
    fn broke(&self, verb: &str, e: &AgentError) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = State::Down;
        self.fell_back(verb, e);
    }

    /// Logs that this process does `verb` without the agent, and records it beside the socket
    /// for the agent's metrics. The agent's absence (no socket) is logged at debug level.
    fn fell_back(&self, verb: &str, why: &AgentError) {
        match why {
            AgentError::Missing(_) => debug!("{verb} without the node agent: {why}"),
            _ => info!("{verb} without the node agent (fell back): {why}"),
        }
        plexus_agent_api::fallbacks::record(&self.socket, "plexus", verb, why);
    }

    /// The pod and the NADs it names, from the agent; `Err` when the agent was not reached (the
    /// caller then reads them itself).
    pub async fn pod(
        &self,
        config: &PlexusConfig,
        pod: &PodRef,
    ) -> Result<Result<(PodInfo, Prefetched), CniError>, AgentError> {
        let mut client = self.client().await?;
        let request = pod_request(config, pod);
        let reply = match client.get_pod(request).await {
            Ok(reply) => reply,
            Err(e) => {
                self.broke("ADD", &e);
                return Err(e);
            }
        };
        debug!(source = %reply.pod_source, "the pod from the node agent");
        if let Some(e) = reply.error {
            return Ok(Err(e.into()));
        }
        if !reply.found {
            return Ok(Err(CniError::new(
                ErrorCode::UnknownContainer,
                format!("pod {} does not exist", pod.display()),
            )));
        }
        let annotations: BTreeMap<String, String> = reply.annotations.into_iter().collect();
        let info = if config
            .runtime_config
            .contains_key(POD_ANNOTATIONS_CAPABILITY)
        {
            pod_networks::given_pod(pod.clone(), annotations)
        } else {
            let uid = (!reply.uid.is_empty()).then_some(reply.uid);
            match pod_networks::pod_info(pod.clone(), annotations, uid) {
                Ok(info) => info,
                Err(e) => return Ok(Err(e)),
            }
        };
        let mut nads = Vec::new();
        for nad in reply.nads {
            let object = match nad.found {
                true => match serde_json::from_str(&nad.json) {
                    Ok(object) => Some(object),
                    Err(e) => {
                        return Ok(Err(CniError::new(
                            ErrorCode::DecodingFailure,
                            format!(
                            "plexusd answered NetworkAttachmentDefinition {}/{} unreadably: {e}",
                            nad.namespace, nad.name
                        ),
                        )))
                    }
                },
                false => None,
            };
            nads.push(((nad.namespace, nad.name), object));
        }
        Ok(Ok((info, nads)))
    }

    /// Writes the pod's network-status annotation through the agent; `Err` when the agent was
    /// not reached (the caller then writes it itself).
    pub async fn write_status(
        &self,
        pod: &PodInfo,
        annotation: String,
        plan: &Plan,
        results: &[CniResult],
    ) -> Result<Result<(), CniError>, AgentError> {
        let mut client = self.client().await?;
        let attachments = plan
            .attachments
            .iter()
            .zip(results)
            .map(|(a, r)| Attachment {
                ifname: a.ifname.clone(),
                ips: r.ips.iter().map(|ip| ip.address.to_string()).collect(),
                network: a.status_name.clone(),
            })
            .collect();
        let request = StatusRequest {
            namespace: pod.pod.namespace.clone(),
            name: pod.pod.name.clone(),
            uid: pod.status_uid.clone().unwrap_or_default(),
            network_status: annotation,
            attachments,
            event_uid: pod.pod.uid.clone().unwrap_or_default(),
            add_micros: self.elapsed_micros(),
        };
        match client.write_status(request).await {
            Ok(answer) => Ok(answer.map_err(|e| CniError {
                msg: format!(
                    "writing the network-status of pod {}: {}",
                    pod.pod.display(),
                    e.msg
                ),
                ..e
            })),
            Err(e) => {
                self.broke("writing the network-status", &e);
                Err(e)
            }
        }
    }

    /// Reports a failed ADD of `pod` to the agent (a Warning Event naming the attachment that
    /// failed, interface and network, when one did), if the agent is up; waits at most
    /// [`REPORT_TIMEOUT`].
    pub async fn report_failure(
        &self,
        pod: &PodRef,
        failed: Option<(&str, &str)>,
        error: &CniError,
    ) {
        if !self.is_up() {
            return;
        }
        let Ok(mut client) = self.client().await else {
            return;
        };
        let request = FailureRequest {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone().unwrap_or_default(),
            ifname: failed.map(|f| f.0.to_string()).unwrap_or_default(),
            network: failed.map(|f| f.1.to_string()).unwrap_or_default(),
            message: error.msg.clone(),
            add_micros: self.elapsed_micros(),
        };
        if let Err(e) = client.report_failure(request, REPORT_TIMEOUT).await {
            debug!("the failed ADD was not reported to the node agent: {e}");
        }
    }
}

/// The request for `pod`: the NADs `clusterNetwork` and `defaultNetworks` may name in
/// `multusNamespace` ride along, and the runtime's annotations when it handed them over.
fn pod_request(config: &PlexusConfig, pod: &PodRef) -> PodRequest {
    let mut extra_nads = Vec::new();
    let by_name = config
        .cluster_network
        .iter()
        .cloned()
        .chain(config.default_networks.iter().cloned());
    for spec in by_name.filter(|s| !s.contains('/')) {
        extra_nads.push(NadRef {
            namespace: config.multus_namespace.clone(),
            name: spec,
        });
    }
    let given = match config.runtime_config.get(POD_ANNOTATIONS_CAPABILITY) {
        Some(Value::Object(given)) => Some(given),
        _ => None,
    };
    PodRequest {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        uid: pod.uid.clone().unwrap_or_default(),
        multus_namespace: config.multus_namespace.clone(),
        extra_nads,
        annotations_given: given.is_some(),
        annotations: given.map(strings).unwrap_or_default(),
    }
}

/// The string values of `map`.
fn strings(map: &Map<String, Value>) -> std::collections::HashMap<String, String> {
    map.iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(value: Value) -> PlexusConfig {
        let Value::Object(map) = value else {
            unreachable!()
        };
        PlexusConfig::from_map(&map).unwrap()
    }

    #[test]
    fn the_request_names_the_nads_looked_up_by_name_and_the_given_annotations() {
        let pod = PodRef {
            namespace: "ns".into(),
            name: "web".into(),
            uid: Some("u1".into()),
        };
        let plain = config(json!({
            "name": "plexus", "type": "plexus", "clusterNetwork": "pods",
            "defaultNetworks": ["extra", "/etc/cni/net.d/x.conf"], "multusNamespace": "mx",
            "agentSocket": "/tmp/a.sock", "agentConnectTimeoutMs": 50
        }));
        assert_eq!(plain.agent_socket, std::path::Path::new("/tmp/a.sock"));
        assert_eq!(plain.agent_connect_timeout_ms, 50);
        let request = pod_request(&plain, &pod);
        let extra: Vec<String> = request
            .extra_nads
            .iter()
            .map(|r| format!("{}/{}", r.namespace, r.name))
            .collect();
        assert_eq!(extra, ["mx/pods", "mx/extra"]);
        assert_eq!(
            (request.uid.as_str(), request.multus_namespace.as_str()),
            ("u1", "mx")
        );
        assert!(!request.annotations_given);

        let given = config(json!({
            "name": "plexus", "type": "plexus", "clusterNetwork": "/etc/cni/net.d/pods.conf",
            "runtimeConfig": {POD_ANNOTATIONS_CAPABILITY: {"a": "b", "n": 1}}
        }));
        assert_eq!(
            given.agent_socket,
            std::path::Path::new(plexus_agent_api::DEFAULT_SOCKET)
        );
        let request = pod_request(&given, &pod);
        assert!(request.extra_nads.is_empty());
        assert!(request.annotations_given);
        assert_eq!(request.annotations.len(), 1);
        assert_eq!(request.annotations["a"], "b");
    }
}
