//! Kubernetes set-up shared by the tests that run `plexus` against a local kube-apiserver:
//! the cluster with an admin client, namespaces, NetworkAttachmentDefinitions and pods created
//! as the admin, Plexus's configuration with the service account's kubeconfig, `plexus` run
//! with a pod's `CNI_ARGS`, and the pod's annotations and the service account's requests read
//! back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Namespace, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, PostParams};
use kube::core::ObjectMeta;
use plexus_crds::{NetworkAttachmentDefinition, NetworkAttachmentDefinitionSpec};
use plexus_tests::cluster::{self, LocalCluster, SA_USER};
use serde_json::Value;

use super::{run_plexus_raw, Outcome};

/// The pod annotation listing the networks a pod asks for.
pub const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";
/// The pod annotation overriding the cluster network.
pub const DEFAULT_NETWORK: &str = "v1.multus-cni.io/default-network";
/// The pod annotation Plexus writes with the attached networks.
pub const NETWORK_STATUS: &str = "k8s.v1.cni.cncf.io/network-status";
/// The NAD annotation naming the device-plugin resource of a network.
pub const RESOURCE_NAME: &str = "k8s.v1.cni.cncf.io/resourceName";

/// A local cluster with an admin client (for set-up and checks) on a runtime of its own.
pub struct Kube {
    /// The cluster; dropping it stops the API server.
    pub cluster: LocalCluster,
    /// The runtime the admin client's calls are blocked on.
    pub rt: tokio::runtime::Runtime,
    /// A `system:masters` client.
    pub admin: kube::Client,
}

impl Kube {
    /// Starts a cluster, or `None` when the test should skip (no kube-apiserver binary).
    pub fn start() -> Option<Kube> {
        let apiserver = cluster::apiserver_or_skip()?;
        Some(Kube::start_with(&apiserver))
    }

    /// Starts a cluster with this kube-apiserver binary.
    pub fn start_with(apiserver: &Path) -> Kube {
        let cluster = LocalCluster::start_with(apiserver).expect("a local cluster");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let admin = {
            let _in_runtime = rt.enter();
            cluster.admin_client()
        };
        Kube { cluster, rt, admin }
    }

    /// A new admin client, after the API server came back.
    pub fn reconnect(&mut self) {
        let _in_runtime = self.rt.enter();
        self.admin = self.cluster.admin_client();
    }

    /// Creates a namespace.
    pub fn namespace(&self, name: &str) {
        let api: Api<Namespace> = Api::all(self.admin.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        self.rt
            .block_on(api.create(&PostParams::default(), &ns))
            .expect("create namespace");
    }

    /// Creates a NAD; a `Null` config leaves `spec.config` empty.
    pub fn nad(&self, namespace: &str, name: &str, config: &Value) {
        self.nad_of_resource(namespace, name, config, None);
    }

    /// Creates a NAD, annotated with the device-plugin `resource` when given; a `Null` config
    /// leaves `spec.config` empty.
    pub fn nad_of_resource(
        &self,
        namespace: &str,
        name: &str,
        config: &Value,
        resource: Option<&str>,
    ) {
        let api: Api<NetworkAttachmentDefinition> = Api::namespaced(self.admin.clone(), namespace);
        let mut nad = NetworkAttachmentDefinition::new(
            name,
            NetworkAttachmentDefinitionSpec {
                config: if config.is_null() {
                    String::new()
                } else {
                    config.to_string()
                },
            },
        );
        nad.metadata.namespace = Some(namespace.into());
        if let Some(r) = resource {
            nad.metadata.annotations = Some([(RESOURCE_NAME.to_string(), r.to_string())].into());
        }
        self.rt
            .block_on(api.create(&PostParams::default(), &nad))
            .expect("create NAD");
    }

    /// Creates a pod of one busybox container `c` with these annotations; returns its UID.
    pub fn pod(&self, namespace: &str, name: &str, annotations: &[(&str, &str)]) -> String {
        self.create_pod(namespace, &pod_object(name, annotations, "c", &[]))
    }

    /// Creates `pod` in `namespace`; returns its UID.
    pub fn create_pod(&self, namespace: &str, pod: &Pod) -> String {
        let api: Api<Pod> = Api::namespaced(self.admin.clone(), namespace);
        let created = self
            .rt
            .block_on(api.create(&PostParams::default(), pod))
            .expect("create pod");
        created.metadata.uid.expect("uid")
    }

    /// The annotation `key` of a pod, if set.
    pub fn pod_annotation(&self, namespace: &str, name: &str, key: &str) -> Option<String> {
        let api: Api<Pod> = Api::namespaced(self.admin.clone(), namespace);
        let pod = self.rt.block_on(api.get(name)).expect("get pod");
        pod.metadata.annotations?.remove(key)
    }

    /// The pod's network-status annotation, parsed, if written.
    pub fn try_network_status(&self, namespace: &str, name: &str) -> Option<Value> {
        let text = self.pod_annotation(namespace, name, NETWORK_STATUS)?;
        Some(serde_json::from_str(&text).expect("network-status is JSON"))
    }

    /// The pod's network-status annotation, parsed; panics when it is missing.
    pub fn network_status(&self, namespace: &str, name: &str) -> Value {
        self.try_network_status(namespace, name)
            .unwrap_or_else(|| panic!("pod {namespace}/{name} has no network-status"))
    }

    /// The audit events of Plexus's service account after the first `from` events.
    pub fn plexus_events(&self, from: usize) -> Vec<Value> {
        self.cluster
            .audit_events()
            .into_iter()
            .skip(from)
            .filter(|e| e["user"]["username"] == SA_USER)
            .collect()
    }

    /// [`plexus_events`](Self::plexus_events), once one of them has this verb (the API server
    /// writes an event just after it answers) or 5 s have passed.
    pub fn plexus_events_until(&self, from: usize, verb: &str) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let events = self.plexus_events(from);
            if events.iter().any(|e| e["verb"] == verb) || start.elapsed() > Duration::from_secs(5)
            {
                return events;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The service account's requests after the first `from` events, as [`request`]s.
    pub fn plexus_requests(&self, from: usize) -> Vec<(String, String, String)> {
        self.plexus_events(from).iter().map(request).collect()
    }

    /// [`plexus_events_until`](Self::plexus_events_until), as [`request`]s.
    pub fn plexus_requests_until(&self, from: usize, verb: &str) -> Vec<(String, String, String)> {
        self.plexus_events_until(from, verb)
            .iter()
            .map(request)
            .collect()
    }
}

/// A pod object of one busybox container with these annotations and resource `limits`
/// (none: no resource requirements).
pub fn pod_object(
    name: &str,
    annotations: &[(&str, &str)],
    container: &str,
    limits: &[(&str, &str)],
) -> Pod {
    let resources = (!limits.is_empty()).then(|| ResourceRequirements {
        limits: Some(
            limits
                .iter()
                .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                .collect(),
        ),
        ..Default::default()
    });
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: container.into(),
                image: Some("busybox".into()),
                resources,
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An audit event as `(verb, resource, name)`.
pub fn request(event: &Value) -> (String, String, String) {
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    (
        text(&event["verb"]),
        text(&event["objectRef"]["resource"]),
        text(&event["objectRef"]["name"]),
    )
}

/// Writes the cluster network `network` as `10-pods.conf` in `conf_dir` (created) and returns
/// its path.
pub fn write_cluster_network(conf_dir: &Path, network: &Value) -> PathBuf {
    std::fs::create_dir_all(conf_dir).unwrap();
    let file = conf_dir.join("10-pods.conf");
    std::fs::write(&file, network.to_string()).unwrap();
    file
}

/// Plexus's configuration as the service account of `kube`: wrapping `cluster_network`, with
/// its cache in `cni_dir` and delegates in `bin_dir`, and the keys of `extra` on top.
pub fn plexus_config(
    kube: &Kube,
    cluster_network: &Path,
    cni_dir: &Path,
    bin_dir: &Path,
    extra: Value,
) -> Value {
    let mut config = serde_json::json!({
        "cniVersion": "1.0.0", "name": "plexus", "type": "plexus",
        "kubeconfig": kube.cluster.sa_kubeconfig(),
        "clusterNetwork": cluster_network,
        "cniDir": cni_dir, "binDir": bin_dir,
    });
    if let Value::Object(extra) = extra {
        config.as_object_mut().unwrap().extend(extra);
    }
    config
}

/// `CNI_ARGS` naming a pod as a container runtime does; `infra_container` adds
/// `K8S_POD_INFRA_CONTAINER_ID`.
pub fn pod_cni_args(
    namespace: &str,
    name: &str,
    uid: &str,
    infra_container: Option<&str>,
) -> String {
    let infra = infra_container
        .map(|c| format!(";K8S_POD_INFRA_CONTAINER_ID={c}"))
        .unwrap_or_default();
    format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name}{infra};K8S_POD_UID={uid}")
}

/// Where and how one pod's `plexus` call runs: its container, network namespace, `CNI_PATH`
/// and `CNI_ARGS`, on interface `eth0`.
pub struct PodCall<'a> {
    /// `CNI_CONTAINERID`.
    pub container: &'a str,
    /// `CNI_NETNS`.
    pub netns: &'a str,
    /// `CNI_PATH`.
    pub cni_path: &'a str,
    /// `CNI_ARGS`, e.g. from [`pod_cni_args`].
    pub args: &'a str,
}

impl PodCall<'_> {
    /// Runs `plexus` `command` with `config` on stdin and `extra_env` added to the CNI
    /// environment.
    pub fn run(&self, command: &str, config: &Value, extra_env: &[(&str, &str)]) -> Outcome {
        let mut env = vec![
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", self.container),
            ("CNI_NETNS", self.netns),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", self.cni_path),
            ("CNI_ARGS", self.args),
        ];
        env.extend_from_slice(extra_env);
        run_plexus_raw(&env, config.to_string().as_bytes())
    }
}
