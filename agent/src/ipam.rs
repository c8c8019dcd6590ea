//! The IPAM service: `plexus-ipam`'s ADD and DEL, run with the warm stores. A request is
//! checked as the plugin checks stdin (the configuration validated again, the version known,
//! the container and interface given), and answered with what the plugin would print.

use std::sync::Arc;
use std::time::Instant;

use plexus_agent_api::proto::ipam_server::Ipam;
use plexus_agent_api::proto::{IpamReply, IpamRequest, PingReply, PingRequest};
use plexus_cni::{CniError, ErrorCode, SpecVersion};
use plexus_ipam::config::IpamConfig;
use plexus_ipam::plugin::{add, del};
use plexus_ipam::store::Owner;
use serde_json::{Map, Value};
use tonic::{Request, Response, Status};
use tracing::debug;

use crate::metrics::Metrics;
use crate::stores::Stores;

/// The IPAM service of one node.
#[derive(Debug)]
pub struct IpamService {
    node: String,
    stores: Arc<Stores>,
    metrics: Option<Arc<Metrics>>,
}

impl IpamService {
    /// The service of `node`, with nothing warm yet.
    pub fn new(node: &str) -> IpamService {
        IpamService {
            node: node.to_string(),
            stores: Arc::new(Stores::new()),
            metrics: None,
        }
    }

    /// The service, serving from `stores` and counting its calls in `metrics`.
    pub fn with(mut self, stores: Arc<Stores>, metrics: Arc<Metrics>) -> IpamService {
        self.stores = stores;
        self.metrics = Some(metrics);
        self
    }

    /// Counts a call of `verb` that began at `started` and ended with `outcome`, and the
    /// addresses it handed out.
    fn count(&self, verb: &str, started: Instant, outcome: &Result<Option<Value>, CniError>) {
        let Some(metrics) = &self.metrics else { return };
        let result = match outcome {
            Ok(_) => "success".to_string(),
            Err(e) => e.code.to_string(),
        };
        metrics.cni_call(verb, &result, started.elapsed());
        if let Ok(Some(result)) = outcome {
            let ips = result["ips"].as_array().map_or(0, Vec::len);
            metrics.allocated(ips as u64);
        }
    }

    /// The calls, on the same warm stores.
    fn calls(&self) -> Calls {
        Calls {
            stores: self.stores.clone(),
        }
    }
}

/// The calls, run in tasks of their own: a caller that goes away (a killed `plexus-ipam`)
/// never cancels a block write that carries other callers' requests.
#[derive(Debug, Clone)]
struct Calls {
    stores: Arc<Stores>,
}

impl Calls {
    /// ADD: the result at the request's version.
    async fn allocate(&self, request: &IpamRequest) -> Result<Value, CniError> {
        let (config, version, owner) = checked(request)?;
        config.check_version(version)?;
        let store = self.kube_store(&config).await?;
        let result = add(&*store, &config, &owner).await?;
        Ok(result.to_value(version))
    }

    /// DEL.
    async fn release(&self, request: &IpamRequest) -> Result<(), CniError> {
        let (config, _, owner) = checked(request)?;
        let store = self.kube_store(&config).await?;
        del(&*store, &config, &owner.container_id, &owner.ifname).await
    }

    /// The warm Kubernetes store of `config`; code 7 for another backend.
    async fn kube_store(
        &self,
        config: &IpamConfig,
    ) -> Result<Arc<plexus_ipam::backends::kubernetes::KubeStore>, CniError> {
        self.stores.store(config).await?.ok_or_else(|| {
            CniError::new(
                ErrorCode::InvalidNetworkConfig,
                "plexusd serves the Kubernetes store only (set kubernetes.kubeconfig)",
            )
        })
    }
}

/// A call's task that did not finish, as a CNI error.
fn panicked(e: tokio::task::JoinError) -> CniError {
    CniError::new(
        ErrorCode::TryAgainLater,
        format!("plexusd: the call failed: {e}"),
    )
}

#[tonic::async_trait]
impl Ipam for IpamService {
    async fn ping(&self, _: Request<PingRequest>) -> Result<Response<PingReply>, Status> {
        let (writes, changes, conflicts) = self.stores.group().stats().snapshot();
        Ok(Response::new(PingReply {
            version: env!("CARGO_PKG_VERSION").to_string(),
            node: self.node.clone(),
            block_writes: writes,
            block_changes: changes,
            block_conflicts: conflicts,
        }))
    }

    async fn allocate(&self, request: Request<IpamRequest>) -> Result<Response<IpamReply>, Status> {
        let request = request.into_inner();
        debug!(container = %request.container_id, ifname = %request.ifname, "ADD");
        let calls = self.calls();
        let started = Instant::now();
        let outcome = tokio::spawn(async move { calls.allocate(&request).await.map(Some) })
            .await
            .unwrap_or_else(|e| Err(panicked(e)));
        self.count("ADD", started, &outcome);
        Ok(Response::new(IpamReply::of(outcome)))
    }

    async fn release(&self, request: Request<IpamRequest>) -> Result<Response<IpamReply>, Status> {
        let request = request.into_inner();
        debug!(container = %request.container_id, ifname = %request.ifname, "DEL");
        let calls = self.calls();
        let started = Instant::now();
        let outcome = tokio::spawn(async move { calls.release(&request).await.map(|()| None) })
            .await
            .unwrap_or_else(|e| Err(panicked(e)));
        self.count("DEL", started, &outcome);
        Ok(Response::new(IpamReply::of(outcome)))
    }
}

/// The request checked as the plugin checks its input: the configuration (validated again,
/// no flat file read), its CNI version, and the owner of the addresses.
fn checked(request: &IpamRequest) -> Result<(IpamConfig, SpecVersion, Owner), CniError> {
    let invalid = |msg: &str| CniError::new(ErrorCode::InvalidNetworkConfig, msg);
    let config: Map<String, Value> = match serde_json::from_str(&request.config_json) {
        Ok(Value::Object(map)) => map,
        _ => return Err(invalid("config_json must be a JSON object")),
    };
    let version = match config.get("cniVersion") {
        Some(Value::String(v)) => v
            .parse()
            .map_err(|e| CniError::new(ErrorCode::IncompatibleVersion, format!("{e}")))?,
        _ => return Err(invalid("config_json has no cniVersion")),
    };
    if request.container_id.is_empty() || request.ifname.is_empty() {
        return Err(invalid("container_id and ifname are required"));
    }
    if request.node_name.is_empty() {
        return Err(invalid("node_name is required"));
    }
    let config = IpamConfig::load_with(&config, &[], &request.node_name)?;
    let owner = Owner {
        pod_namespace: request.pod_namespace.clone(),
        pod_name: request.pod_name.clone(),
        pod_uid: request.pod_uid.clone(),
        container_id: request.container_id.clone(),
        ifname: request.ifname.clone(),
        node: request.node_name.clone(),
        claim: String::new(),
    };
    Ok((config, version, owner))
}
