//! The networks of a Kubernetes pod: the primary (the default-network annotation, the cluster
//! network, or the first static delegate), then `defaultNetworks`, then the NetworkAttachment-
//! Definitions its `k8s.v1.cni.cncf.io/networks` annotation names, in order. A NAD annotated
//! `k8s.v1.cni.cncf.io/resourceName` gets the next of the pod's devices of that resource
//! ([`crate::devices`]).

use std::collections::{BTreeMap, HashMap};

use plexus_cni::env::CniArgs;
use plexus_cni::{CniError, ErrorCode};
use serde_json::{Map, Value};

use crate::config::PlexusConfig;
use crate::devices::{allocation, Device, PodDevices};
use crate::k8s::agent::Prefetched;
use crate::k8s::client::KubeApi;
use crate::k8s::selection::{self, NetworkSelection};
use crate::k8s::LazyApi;
use crate::k8s::{capability, nad};
use crate::plan::{self, Delegate, PrimaryNetwork};
use crate::resolve;
use plexus_crds::NetworkAttachmentDefinition;

/// The runtimeConfig key under which containerd hands a plugin the pod's annotations.
pub const POD_ANNOTATIONS_CAPABILITY: &str = "io.kubernetes.cri.pod-annotations";

/// The pod a CNI call is for, from `CNI_ARGS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    /// `K8S_POD_NAMESPACE`.
    pub namespace: String,
    /// `K8S_POD_NAME`.
    pub name: String,
    /// `K8S_POD_UID`, when the runtime gives it.
    pub uid: Option<String>,
}

impl PodRef {
    /// The pod named in `CNI_ARGS`; `None` when the call is not for a Kubernetes pod.
    pub fn from_cni_args(args: &CniArgs) -> Option<PodRef> {
        let get = |k| args.get(k).filter(|v| !v.is_empty()).map(str::to_string);
        Some(PodRef {
            namespace: get("K8S_POD_NAMESPACE")?,
            name: get("K8S_POD_NAME")?,
            uid: get("K8S_POD_UID"),
        })
    }

    /// `namespace/name`.
    pub fn display(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// What ADD knows about the pod.
#[derive(Debug, Clone)]
pub struct PodInfo {
    /// Which pod.
    pub pod: PodRef,
    /// Its annotations.
    pub annotations: BTreeMap<String, String>,
    /// The UID to make the network-status write conditional on (none for static pods, whose
    /// mirror object has another UID).
    pub status_uid: Option<String>,
}

/// True for a static pod (from a file on the node): its API object is a mirror with another UID.
fn is_static_pod(annotations: &BTreeMap<String, String>) -> bool {
    annotations.contains_key("kubernetes.io/config.mirror")
        || annotations
            .get("kubernetes.io/config.source")
            .map(String::as_str)
            == Some("file")
}

/// Reads the pod's annotations: from the runtime when it handed them over in `runtimeConfig`
/// (containerd does, for a plugin that declares the capability), else with one GET.
pub async fn load_pod(
    api: &KubeApi,
    pod: PodRef,
    runtime_config: &Map<String, Value>,
) -> Result<PodInfo, CniError> {
    if let Some(Value::Object(given)) = runtime_config.get(POD_ANNOTATIONS_CAPABILITY) {
        let annotations: BTreeMap<String, String> = given
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect();
        return Ok(given_pod(pod, annotations));
    }
    let object = api
        .get_pod(&pod.namespace, &pod.name)
        .await
        .map_err(CniError::from)?
        .ok_or_else(|| {
            CniError::new(
                ErrorCode::UnknownContainer,
                format!("pod {} does not exist", pod.display()),
            )
        })?;
    let annotations: BTreeMap<String, String> = object
        .metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    pod_info(pod, annotations, object.metadata.uid.clone())
}

/// The pod with the annotations the runtime handed over.
pub fn given_pod(pod: PodRef, annotations: BTreeMap<String, String>) -> PodInfo {
    let status_uid = pod.uid.clone().filter(|_| !is_static_pod(&annotations));
    PodInfo {
        pod,
        annotations,
        status_uid,
    }
}

/// The pod as the API server (or the node agent) described it: its annotations and UID. A UID
/// other than the runtime's means the pod was deleted and re-created (code 3), except for a
/// static pod, whose API object is a mirror with a UID of its own.
pub fn pod_info(
    pod: PodRef,
    annotations: BTreeMap<String, String>,
    actual_uid: Option<String>,
) -> Result<PodInfo, CniError> {
    if let (Some(want), Some(actual)) = (&pod.uid, &actual_uid) {
        if want != actual && !is_static_pod(&annotations) {
            return Err(CniError::new(
                ErrorCode::UnknownContainer,
                format!(
                    "pod {} has UID {actual}, not {want}: it was deleted and re-created",
                    pod.display()
                ),
            ));
        }
    }
    Ok(PodInfo {
        pod,
        annotations,
        status_uid: actual_uid,
    })
}

/// What a NetworkAttachmentDefinition gives: its delegate configuration and the device-plugin
/// resource its attachments use.
#[derive(Clone)]
struct NadNetwork {
    config: Value,
    resource_name: Option<String>,
}

/// One attachment's configuration, carrying the device it uses, if any.
struct NetworkFor {
    config: Value,
    device: Option<Device>,
    status_name: String,
}

/// Fetches NetworkAttachmentDefinitions (unless the node agent handed them over), each distinct
/// one once per call, and hands out the pod's devices to those that name a resource.
struct NadFetcher<'a> {
    api: &'a LazyApi<'a>,
    config: &'a PlexusConfig,
    seen: HashMap<(String, String), Option<NadNetwork>>,
    prefetched: HashMap<(String, String), Option<NetworkAttachmentDefinition>>,
    devices: PodDevices,
}

impl<'a> NadFetcher<'a> {
    /// A fetcher for pod `pod`'s networks; the NADs in `prefetched` are not read again.
    fn new(
        api: &'a LazyApi<'a>,
        config: &'a PlexusConfig,
        pod: &PodRef,
        prefetched: Prefetched,
    ) -> Self {
        NadFetcher {
            api,
            config,
            seen: HashMap::new(),
            prefetched: prefetched.into_iter().collect(),
            devices: PodDevices::new(config, &pod.namespace, &pod.name, pod.uid.as_deref()),
        }
    }

    /// NAD `namespace/name`; `None` when it does not exist.
    async fn nad(&mut self, namespace: &str, name: &str) -> Result<Option<NadNetwork>, CniError> {
        let key = (namespace.to_string(), name.to_string());
        if let Some(found) = self.seen.get(&key) {
            return Ok(found.clone());
        }
        let object = match self.prefetched.remove(&key) {
            Some(object) => object,
            None => self
                .api
                .require()
                .await?
                .get_nad(namespace, name)
                .await
                .map_err(CniError::from)?,
        };
        let found = self.network(namespace, name, object)?;
        self.seen.insert(key, found.clone());
        Ok(found)
    }

    /// What the NAD `namespace/name` gives (`None`: it does not exist).
    fn network(
        &self,
        namespace: &str,
        name: &str,
        object: Option<NetworkAttachmentDefinition>,
    ) -> Result<Option<NadNetwork>, CniError> {
        Ok(match object {
            Some(nad) => Some(NadNetwork {
                config: nad::delegate_config(
                    namespace,
                    name,
                    &nad.spec.config,
                    &self.config.conf_dir,
                )
                .map_err(CniError::from)?,
                resource_name: nad::resource_name(&nad),
            }),
            None => None,
        })
    }

    /// One attachment of NAD `namespace/name`, `None` when it does not exist. A NAD that names
    /// a resource gets the pod's next device of it (else `requested_device`, the annotation's
    /// own `deviceID`), written into its configuration.
    async fn attachment(
        &mut self,
        namespace: &str,
        name: &str,
        requested_device: Option<&str>,
    ) -> Result<Option<NetworkFor>, CniError> {
        let Some(nad) = self.nad(namespace, name).await? else {
            return Ok(None);
        };
        let status_name = nad::status_name(namespace, name);
        let mut config = nad.config;
        let device = match &nad.resource_name {
            Some(resource) => {
                let device = self
                    .devices
                    .take(&status_name, resource, requested_device)
                    .await?;
                allocation::inject_device_id(&mut config, &device.device_id);
                Some(device)
            }
            None => None,
        };
        Ok(Some(NetworkFor {
            config,
            device,
            status_name,
        }))
    }

    /// An attachment of a NAD that must exist.
    async fn required(&mut self, sel: &NetworkSelection) -> Result<NetworkFor, CniError> {
        let (namespace, name) = (&sel.namespace, &sel.name);
        self.attachment(namespace, name, sel.device_id.as_deref())
            .await?
            .ok_or_else(|| {
                CniError::new(
                    ErrorCode::InvalidNetworkConfig,
                    format!("NetworkAttachmentDefinition {namespace}/{name} does not exist"),
                )
            })
    }

    /// A network named by `clusterNetwork` or `defaultNetworks`: a NAD in `multusNamespace`, else
    /// a file of that name in `confDir`, else (with a `/`) a path.
    async fn by_name(&mut self, spec: &str) -> Result<NetworkFor, CniError> {
        if !spec.contains('/') {
            let ns = self.config.multus_namespace.clone();
            if let Some(found) = self.attachment(&ns, spec, None).await? {
                return Ok(found);
            }
        }
        let config = resolve::cluster_network(spec, self.config).map_err(CniError::from)?;
        let status_name = config
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or(spec)
            .to_string();
        Ok(NetworkFor {
            config,
            device: None,
            status_name,
        })
    }
}

/// The `args.cni` key that carries an element's `ipam-claim-reference` to its delegate.
pub const IPAM_CLAIM_ARG: &str = "ipam-claim-reference";

/// A delegate for a network a pod asked for, with its runtimeConfig checked against the
/// capabilities its plugins declare.
fn selected_delegate(
    network: NetworkFor,
    sel: NetworkSelection,
    config: &PlexusConfig,
    primary: bool,
    base_args: &Map<String, Value>,
) -> Result<Delegate, CniError> {
    let mut value = network.config;
    let mut cni_args = sel.cni_args.clone().unwrap_or_default();
    if let Some(claim) = &sel.ipam_claim_reference {
        // For the IPAM plugin, which gets the main plugin's input (plexus-ipam reads it).
        cni_args.insert(IPAM_CLAIM_ARG.into(), Value::String(claim.clone()));
    }
    capability::merge_cni_args(&mut value, &cni_args);
    let mut delegate = Delegate::from_value(value, &config.cni_version, primary).map_err(|e| {
        CniError::new(
            e.code(),
            format!("network {}/{}: {e}", sel.namespace, sel.name),
        )
    })?;
    let requested = capability::capability_args(&sel);
    capability::require_capabilities(&delegate.network, &requested).map_err(CniError::from)?;
    let mut args = base_args.clone();
    args.extend(requested);
    delegate.capability_args = args;
    delegate.set_device(network.device);
    delegate.status_name = network.status_name;
    if !primary {
        delegate.ifname_request = sel.interface.clone();
    }
    delegate.selection = Some(sel);
    Ok(delegate)
}

/// A delegate for a network named by Plexus's configuration (`clusterNetwork`,
/// `defaultNetworks`; `origin` says which in errors), offered `capability_args`.
fn named_delegate(
    network: NetworkFor,
    origin: &str,
    config: &PlexusConfig,
    primary: bool,
    capability_args: &Map<String, Value>,
) -> Result<Delegate, CniError> {
    let mut d = Delegate::from_value(network.config, &config.cni_version, primary)
        .map_err(|e| CniError::new(e.code(), format!("{origin}: {e}")))?;
    d.capability_args = capability_args.clone();
    d.set_device(network.device);
    d.status_name = network.status_name;
    Ok(d)
}

/// Refuses a NAD of another namespace under `namespaceIsolation`.
fn check_isolation(
    config: &PlexusConfig,
    pod: &PodRef,
    sel: &NetworkSelection,
) -> Result<(), CniError> {
    if !config.namespace_isolation
        || sel.namespace == pod.namespace
        || config
            .global_namespace_list()
            .contains(&sel.namespace.as_str())
    {
        return Ok(());
    }
    Err(CniError::new(
        ErrorCode::InvalidNetworkConfig,
        format!(
            "namespace isolation: pod {} may not use NetworkAttachmentDefinition {}/{} (allowed: its own namespace and {:?})",
            pod.display(),
            sel.namespace,
            sel.name,
            config.global_namespace_list()
        ),
    ))
}

/// Every network of the pod, in attachment order, the primary first. The NADs in `prefetched`
/// (the node agent's answer) are not read again; others are read with `api`.
pub async fn pod_delegates(
    config: &PlexusConfig,
    api: &LazyApi<'_>,
    info: &PodInfo,
    prefetched: Prefetched,
) -> Result<Vec<Delegate>, CniError> {
    let mut nads = NadFetcher::new(api, config, &info.pod, prefetched);
    let kubelet_args = &config.runtime_config;
    let mut delegates: Vec<Delegate> = Vec::new();

    // The primary network.
    let default_network = info
        .annotations
        .get(selection::DEFAULT_NETWORK_ANNOTATION)
        .map(|text| selection::parse_default_network(text, &config.multus_namespace))
        .transpose()
        .map_err(CniError::from)?;
    match plan::primary_network(config, default_network) {
        PrimaryNetwork::Selected(sel) => {
            let network = nads.required(&sel).await?;
            delegates.push(selected_delegate(
                network,
                *sel,
                config,
                true,
                kubelet_args,
            )?);
        }
        PrimaryNetwork::ClusterNetwork(spec) => {
            let network = nads.by_name(&spec).await?;
            let origin = format!("clusterNetwork {spec:?}");
            delegates.push(named_delegate(
                network,
                &origin,
                config,
                true,
                kubelet_args,
            )?);
        }
        PrimaryNetwork::FirstDelegate => {
            delegates.extend(resolve::static_delegates(config).map_err(CniError::from)?);
        }
    }

    // defaultNetworks, except for system namespaces.
    if !config.system_namespaces.contains(&info.pod.namespace) {
        for spec in &config.default_networks {
            let network = nads.by_name(spec).await?;
            let origin = format!("defaultNetworks {spec:?}");
            delegates.push(named_delegate(
                network,
                &origin,
                config,
                false,
                &Map::new(),
            )?);
        }
    }

    // The networks the pod asks for.
    if let Some(text) = info.annotations.get(selection::NETWORKS_ANNOTATION) {
        let selections =
            selection::parse_networks(text, &info.pod.namespace).map_err(CniError::from)?;
        delegates.extend(annotation_delegates(&mut nads, config, &info.pod, selections).await?);
    }
    Ok(delegates)
}

/// The delegates of elements `selections` of pod `info`'s networks annotation, made as ADD
/// makes them (namespace isolation, the NAD, `cni-args`, capability checks, devices): what
/// hot-plug attaches to a running pod.
pub async fn selected_delegates(
    config: &PlexusConfig,
    api: &LazyApi<'_>,
    info: &PodInfo,
    selections: Vec<NetworkSelection>,
) -> Result<Vec<Delegate>, CniError> {
    let mut nads = NadFetcher::new(api, config, &info.pod, Prefetched::default());
    annotation_delegates(&mut nads, config, &info.pod, selections).await
}

/// The delegates of networks annotation elements, in order.
async fn annotation_delegates(
    nads: &mut NadFetcher<'_>,
    config: &PlexusConfig,
    pod: &PodRef,
    selections: Vec<NetworkSelection>,
) -> Result<Vec<Delegate>, CniError> {
    let mut delegates = Vec::with_capacity(selections.len());
    for sel in selections {
        check_isolation(config, pod, &sel)?;
        let network = nads.required(&sel).await?;
        delegates.push(selected_delegate(network, sel, config, false, &Map::new())?);
    }
    Ok(delegates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_ref_from_cni_args() {
        let args = CniArgs::parse(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u1",
        )
        .unwrap();
        let pod = PodRef::from_cni_args(&args).unwrap();
        assert_eq!(pod.display(), "ns/web");
        assert_eq!(pod.uid.as_deref(), Some("u1"));
        assert!(PodRef::from_cni_args(&CniArgs::parse("K8S_POD_NAME=web").unwrap()).is_none());
    }

    #[test]
    fn static_pods_are_recognised() {
        let mut a = BTreeMap::new();
        assert!(!is_static_pod(&a));
        a.insert(
            "kubernetes.io/config.source".to_string(),
            "file".to_string(),
        );
        assert!(is_static_pod(&a));
    }
}
