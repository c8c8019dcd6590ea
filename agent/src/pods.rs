//! The `Pods` service: what `plexus`'s Kubernetes stage reads (the pod's UID and annotations,
//! the NetworkAttachmentDefinitions its annotations and the request name) served from the
//! [`Cache`], and the network-status annotation it writes, written here on the warm
//! connection with the same UID precondition, answered once the PATCH succeeded. The
//! `AddedInterface` Events of the attachments are queued after that ([`Events`]), and a failed
//! ADD that `plexus` reports gets a Warning Event.
//!
//! Every name in a request is checked as a Kubernetes object name before it goes into a path.
//! The agent reads the cluster with its own credentials: `KUBECONFIG` when set, else the
//! in-cluster service account, else the kubeconfig of Plexus's configuration file
//! (`--plexus-config`); without any it serves no pods and `plexus` falls back.

use std::path::Path;
use std::sync::Arc;

use futures::future::join_all;
use plexus::config::PlexusConfig;
use plexus::k8s::client::{KubeApi, KubeError, DEFAULT_TIMEOUT};
use plexus::k8s::selection::{
    parse_default_network, parse_networks, DEFAULT_NETWORK_ANNOTATION, NETWORKS_ANNOTATION,
    NETWORK_STATUS_ANNOTATION,
};
use plexus_agent_api::proto::pods_server::Pods;
use plexus_agent_api::proto::{
    FailureRequest, Nad, NadRef, PodReply, PodRequest, StatusReply, StatusRequest,
};
use plexus_cni::{CniError, ErrorCode};
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

use crate::cache::{read, watch, Cache};
use crate::events::{Events, ADD_FAILED};
use crate::metrics::Metrics;
use crate::snapshot;

/// The `Pods` service of one node.
#[derive(Debug, Clone)]
pub struct PodsService {
    served: Option<Served>,
}

/// The cache, the Events and the metrics, when the agent has a cluster to read.
#[derive(Debug, Clone)]
struct Served {
    cache: Arc<Cache>,
    events: Events,
    metrics: Arc<Metrics>,
}

impl PodsService {
    /// Starts serving node `node`: the client, the cache seeded from the snapshot beside
    /// `socket`, the watches, the snapshot's writer and the Events' writer. With Plexus's
    /// configuration file `plexus_config` and `hotplug`, the pods' watch also feeds hot-plug.
    pub async fn start(
        node: &str,
        socket: &Path,
        plexus_config: Option<&Path>,
        hotplug: bool,
        metrics: Arc<Metrics>,
    ) -> PodsService {
        let api = match connect(plexus_config).await {
            Ok(Some(api)) => api,
            Ok(None) => {
                info!("no KUBECONFIG, not in a cluster and no --plexus-config naming one: plexus's pods are not served");
                return PodsService { served: None };
            }
            Err(e) => {
                warn!("plexus's pods are not served: {e}");
                return PodsService { served: None };
            }
        };
        let path = snapshot::beside(socket);
        let (pods, nads) = snapshot::load(&path, node);
        let events = Events::new(api.client().clone(), node);
        let reconciler = match plexus_config {
            Some(config) if hotplug => {
                crate::hotplug::start(config, api.clone(), events.clone(), node)
            }
            _ => None,
        };
        let cache = Arc::new(Cache::new(api, node, pods, nads));
        watch::spawn(cache.clone(), reconciler);
        snapshot::spawn_saver(path, cache.clone());
        let pods_age = cache.clone();
        metrics.track_cache("pods", Box::new(move || read(&pods_age.pods).age()));
        let nads_age = cache.clone();
        metrics.track_cache("nads", Box::new(move || read(&nads_age.nads).age()));
        PodsService {
            served: Some(Served {
                cache,
                events,
                metrics,
            }),
        }
    }

    /// The cache and Events; `Unavailable` (plexus falls back) when the agent has no cluster.
    fn served(&self) -> Result<&Served, Status> {
        self.served
            .as_ref()
            .ok_or_else(|| Status::unavailable("plexusd has no Kubernetes configuration"))
    }
}

/// The agent's own client: `KUBECONFIG`, else the in-cluster service account, else the
/// kubeconfig that Plexus's configuration file `plexus_config` names, else none.
async fn connect(plexus_config: Option<&Path>) -> Result<Option<KubeApi>, KubeError> {
    if let Some(path) = std::env::var_os("KUBECONFIG").filter(|p| !p.is_empty()) {
        return KubeApi::from_kubeconfig(Path::new(&path), DEFAULT_TIMEOUT)
            .await
            .map(Some);
    }
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        return KubeApi::in_cluster(DEFAULT_TIMEOUT).map(Some);
    }
    let configured = plexus_config
        .and_then(|path| PlexusConfig::from_file(path).ok())
        .and_then(|config| config.kubeconfig);
    match configured {
        Some(path) => KubeApi::from_kubeconfig(&path, DEFAULT_TIMEOUT)
            .await
            .map(Some),
        None => Ok(None),
    }
}

#[tonic::async_trait]
impl Pods for PodsService {
    async fn get_pod(&self, request: Request<PodRequest>) -> Result<Response<PodReply>, Status> {
        let served = self.served()?.clone();
        let request = request.into_inner();
        debug!(namespace = %request.namespace, pod = %request.name, "GetPod");
        let reply = tokio::spawn(async move { pod_reply(&served.cache, request).await })
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(reply))
    }

    async fn write_status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusReply>, Status> {
        let served = self.served()?.clone();
        let request = request.into_inner();
        debug!(namespace = %request.namespace, pod = %request.name, "WriteStatus");
        // In a task of its own: a plexus that goes away does not cancel a PATCH half-way.
        let written = tokio::spawn(async move {
            let written = write_status(&served.cache, &request).await;
            if written.is_ok() {
                let took = std::time::Duration::from_micros(request.add_micros);
                served.metrics.cni_call("ADD", "success", took);
                for a in &request.attachments {
                    served.events.added_interface(
                        &request.namespace,
                        &request.name,
                        &request.event_uid,
                        &a.ifname,
                        &a.ips,
                        &a.network,
                    );
                }
            }
            written
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(StatusReply {
            error: written.err().map(|e| (&e).into()),
        }))
    }

    async fn report_failure(
        &self,
        request: Request<FailureRequest>,
    ) -> Result<Response<StatusReply>, Status> {
        let served = self.served()?;
        let r = request.into_inner();
        if let Err(e) = check_name(&r.namespace).and(check_name(&r.name)) {
            return Ok(Response::new(StatusReply {
                error: Some((&e).into()),
            }));
        }
        let took = std::time::Duration::from_micros(r.add_micros);
        served.metrics.cni_call("ADD", "failure", took);
        served.events.warning(
            &r.namespace,
            &r.name,
            &r.uid,
            ADD_FAILED,
            failure_message(&r),
        );
        Ok(Response::new(StatusReply { error: None }))
    }
}

/// The Warning's message: the attachment when known, and why it failed.
fn failure_message(r: &FailureRequest) -> String {
    match (r.ifname.as_str(), r.network.as_str()) {
        ("", "") => format!("ADD failed: {}", r.message),
        (ifname, "") => format!("Add {ifname} failed: {}", r.message),
        (ifname, network) => format!("Add {ifname} from {network} failed: {}", r.message),
    }
}

/// The answer to `GetPod`: the pod, and every NAD its annotations and the request name.
async fn pod_reply(cache: &Cache, request: PodRequest) -> PodReply {
    match pod_answer(cache, request).await {
        Ok(reply) => reply,
        Err(e) => PodReply {
            error: Some((&e).into()),
            ..PodReply::default()
        },
    }
}

async fn pod_answer(cache: &Cache, request: PodRequest) -> Result<PodReply, CniError> {
    check_name(&request.namespace)?;
    check_name(&request.name)?;
    let mut reply = PodReply::default();
    if request.annotations_given {
        reply.found = true;
        reply.uid = request.uid.clone();
        reply.annotations = request.annotations.clone();
        reply.pod_source = "runtime".into();
    } else {
        let (pod, source) = cache
            .pod(&request.namespace, &request.name, &request.uid)
            .await
            .map_err(CniError::from)?;
        reply.pod_source = source.as_str().into();
        if let Some(pod) = pod {
            reply.found = true;
            reply.uid = pod.uid;
            reply.annotations = pod.annotations.into_iter().collect();
        }
    }
    let wanted = named_nads(&request, &reply);
    let found = join_all(wanted.iter().map(|r| cache.nad(&r.namespace, &r.name))).await;
    for (r, found) in wanted.into_iter().zip(found) {
        let json = found.map_err(CniError::from)?;
        reply.nads.push(Nad {
            namespace: r.namespace,
            name: r.name,
            found: json.is_some(),
            json: json.unwrap_or_default(),
        });
    }
    Ok(reply)
}

/// The NADs the pod's annotations name (those that parse; plexus reports the others' errors),
/// then those the request adds, each once, every name checked.
fn named_nads(request: &PodRequest, reply: &PodReply) -> Vec<NadRef> {
    let mut named = Vec::new();
    if let Some(text) = reply.annotations.get(DEFAULT_NETWORK_ANNOTATION) {
        if let Ok(sel) = parse_default_network(text, &request.multus_namespace) {
            named.push((sel.namespace, sel.name));
        }
    }
    if let Some(text) = reply.annotations.get(NETWORKS_ANNOTATION) {
        if let Ok(selections) = parse_networks(text, &request.namespace) {
            named.extend(selections.into_iter().map(|s| (s.namespace, s.name)));
        }
    }
    named.extend(
        request
            .extra_nads
            .iter()
            .map(|r| (r.namespace.clone(), r.name.clone())),
    );
    let mut seen = std::collections::HashSet::new();
    named
        .into_iter()
        .filter(|(ns, name)| check_name(ns).is_ok() && check_name(name).is_ok())
        .filter(|key| seen.insert(key.clone()))
        .map(|(namespace, name)| NadRef { namespace, name })
        .collect()
}

/// The PATCH of the network-status annotation, conditional on the UID.
async fn write_status(cache: &Cache, request: &StatusRequest) -> Result<(), CniError> {
    check_name(&request.namespace)?;
    check_name(&request.name)?;
    let uid = (!request.uid.is_empty()).then_some(request.uid.as_str());
    cache
        .api()
        .patch_pod_annotation(
            &request.namespace,
            &request.name,
            uid,
            NETWORK_STATUS_ANNOTATION,
            &request.network_status,
        )
        .await
        .map_err(CniError::from)
}

/// A Kubernetes object name (DNS subdomain: lower-case letters, digits, `-` and `.`, at most
/// 253 characters), so that no request can make a path of its own.
fn check_name(name: &str) -> Result<(), CniError> {
    let valid = !name.is_empty()
        && name.len() <= 253
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if valid {
        Ok(())
    } else {
        Err(CniError::new(
            ErrorCode::InvalidNetworkConfig,
            format!("{name:?} is not a Kubernetes object name"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_make_a_path_are_refused() {
        assert!(check_name("web-1.a").is_ok());
        for bad in ["", ".", "..", "a/b", "../x", "A", "a?b", "a%2fb"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_nads_the_annotations_and_the_request_name() {
        let request = PodRequest {
            namespace: "ns".into(),
            multus_namespace: "kube-system".into(),
            extra_nads: vec![
                NadRef {
                    namespace: "kube-system".into(),
                    name: "pods".into(),
                },
                NadRef {
                    namespace: "..".into(),
                    name: "x".into(),
                },
            ],
            ..Default::default()
        };
        let mut reply = PodReply::default();
        reply
            .annotations
            .insert(NETWORKS_ANNOTATION.into(), "a, other/b@x, a".into());
        reply
            .annotations
            .insert(DEFAULT_NETWORK_ANNOTATION.into(), "prim".into());
        let named: Vec<String> = named_nads(&request, &reply)
            .into_iter()
            .map(|r| format!("{}/{}", r.namespace, r.name))
            .collect();
        assert_eq!(
            named,
            ["kube-system/prim", "ns/a", "other/b", "kube-system/pods"]
        );
    }
}
