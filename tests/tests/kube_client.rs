//! Plexus's Kubernetes API client (`plexus::k8s::client::KubeApi`) against a real
//! kube-apiserver 1.20 (`plexus_tests::cluster::LocalCluster`), as Plexus's least-privilege
//! service account: reads, the annotation patch and its uid precondition, RBAC, token rotation,
//! timeouts and unreachable servers.
//!
//! Needs the cached kube-apiserver (`cargo xtask apiserver`), not root. Without it the tests
//! are skipped, except in CI.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Secret};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, PostParams};
use kube::core::ObjectMeta;
use plexus::k8s::client::{KubeApi, KubeError};
use plexus_cni::CniError;
use plexus_crds::{NetworkAttachmentDefinition, NetworkAttachmentDefinitionSpec};
use plexus_tests::cluster::{self, LocalCluster, SA_USER};
use plexus_tests::runtime;

const STATUS: &str = "k8s.v1.cni.cncf.io/network-status";
const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";
const TIMEOUT: Duration = Duration::from_secs(5);

/// One cluster, the scenarios in order (each names what it shows when it fails).
#[test]
fn kube_api_against_a_real_apiserver() {
    let Some(apiserver) = cluster::apiserver_or_skip() else {
        return;
    };
    let cluster = LocalCluster::start_with(&apiserver).expect("a local cluster");
    eprintln!(
        "local cluster started in {:.2}s",
        cluster.startup_time().as_secs_f64()
    );
    runtime().block_on(async {
        let api = KubeApi::from_kubeconfig(cluster.sa_kubeconfig(), TIMEOUT)
            .await
            .expect("a client from the service account's kubeconfig");
        assert_eq!(api.server(), cluster.url);

        missing_objects_are_none(&api).await;
        let uid = pod_created_by_admin_is_read_by_the_service_account(&cluster, &api).await;
        network_status_patch_sets_one_annotation(&cluster, &api, &uid).await;
        patch_with_a_wrong_uid_is_refused(&cluster, &api).await;
        nad_is_read(&cluster, &api).await;
        secrets_are_forbidden(&api).await;
        missing_rbac_is_forbidden_and_named(&cluster, &api).await;
        requests_are_in_the_audit_log(&cluster).await;
        rotated_token_is_used_by_the_next_call(&cluster, &api).await;
        first_request_latency(&cluster).await;
        hung_server_times_out_and_is_named(&cluster).await;
        untrusted_certificate_is_a_tls_error(&cluster).await;
        nad_without_the_crd_is_an_error(&cluster, &api).await;
        host_name_in_the_kubeconfig(&cluster).await;
    });
}

/// A host name instead of the IP address in the kubeconfig: resolved in Rust (here from
/// `/etc/hosts`; the static binaries never call glibc's resolver), and the certificate is
/// verified against that name: the API server's own certificate does not name `localhost`, so
/// the handshake fails on exactly that until the kubeconfig's `tls-server-name` names one it does.
async fn host_name_in_the_kubeconfig(cluster: &LocalCluster) {
    let text = std::fs::read_to_string(cluster.sa_kubeconfig()).unwrap();
    let by_name = text.replace("https://127.0.0.1:", "https://localhost:");
    assert_ne!(text, by_name, "the kubeconfig names 127.0.0.1");
    let client = |name: &str, kubeconfig: String| {
        let path = cluster.dir().join(name);
        std::fs::write(&path, kubeconfig).unwrap();
        async move {
            KubeApi::from_kubeconfig(&path, TIMEOUT)
                .await
                .expect("a client from a kubeconfig naming localhost")
        }
    };

    let api = client("sa-localhost.kubeconfig", by_name.clone()).await;
    let err = api.get_pod("default", "nope").await.unwrap_err();
    eprintln!("localhost, not in the certificate: {err}");
    assert!(
        err.to_string().contains("not valid for name \"localhost\""),
        "{err}"
    );

    let server_line = by_name
        .lines()
        .find(|line| line.trim_start().starts_with("server: "))
        .expect("a server line");
    let with_tls_name = by_name.replace(
        server_line,
        &format!("{server_line}\n    tls-server-name: kubernetes"),
    );
    let api = client("sa-localhost-tls-name.kubeconfig", with_tls_name).await;
    assert!(api.get_pod("default", "nope").await.unwrap().is_none());
}

async fn missing_objects_are_none(api: &KubeApi) {
    assert!(api.get_pod("default", "nope").await.unwrap().is_none());
    assert!(api.get_pod("no-such-ns", "nope").await.unwrap().is_none());
    assert!(api.get_nad("default", "nope").await.unwrap().is_none());
}

fn pod(name: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            annotations: Some(BTreeMap::from([(NETWORKS.into(), "macvlan@net1".into())])),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: Some("busybox".into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

async fn pod_created_by_admin_is_read_by_the_service_account(
    cluster: &LocalCluster,
    api: &KubeApi,
) -> String {
    let pods: Api<Pod> = Api::namespaced(cluster.admin_client(), "default");
    let created = pods
        .create(&PostParams::default(), &pod("web"))
        .await
        .expect("admin creates a pod");
    let read = api
        .get_pod("default", "web")
        .await
        .expect("the service account may get pods")
        .expect("the pod exists");
    assert_eq!(read.metadata.uid, created.metadata.uid);
    assert_eq!(read.metadata.annotations.unwrap()[NETWORKS], "macvlan@net1");
    created.metadata.uid.unwrap()
}

fn annotations(pod: &Pod) -> BTreeMap<String, String> {
    pod.metadata.annotations.clone().unwrap_or_default()
}

async fn network_status_patch_sets_one_annotation(
    cluster: &LocalCluster,
    api: &KubeApi,
    uid: &str,
) {
    let status = r#"[{"name":"cbr0","interface":"eth0","ips":["10.1.0.5"],"default":true}]"#;
    api.patch_pod_annotation("default", "web", Some(uid), STATUS, status)
        .await
        .expect("the service account patches the annotation, uid matching");
    let pods: Api<Pod> = Api::namespaced(cluster.admin_client(), "default");
    let read = annotations(&pods.get("web").await.unwrap());
    assert_eq!(read[STATUS], status);
    assert_eq!(read[NETWORKS], "macvlan@net1", "other annotations stay");

    // Without a uid, and a second time: the value is replaced.
    api.patch_pod_annotation("default", "web", None, STATUS, "[]")
        .await
        .expect("patch without uid");
    let read = annotations(&pods.get("web").await.unwrap());
    assert_eq!(read[STATUS], "[]");
    assert_eq!(read.len(), 2);
}

async fn patch_with_a_wrong_uid_is_refused(cluster: &LocalCluster, api: &KubeApi) {
    let wrong = "00000000-0000-0000-0000-000000000000";
    let err = api
        .patch_pod_annotation("default", "web", Some(wrong), STATUS, "[\"stale\"]")
        .await
        .expect_err("a patch for another pod's uid must be refused");
    eprintln!("uid precondition: the API server answered: {err}");
    match &err {
        KubeError::Api { code, reason, .. } => {
            assert!(
                *code == 409 || *code == 422,
                "unexpected answer {code} {reason}"
            );
        }
        other => panic!("expected an API error, got {other:?}"),
    }
    assert!(err.to_string().contains(&cluster.url), "{err}");
    assert!(
        err.to_string().contains("patch pods \"default/web\""),
        "{err}"
    );
    let pods: Api<Pod> = Api::namespaced(cluster.admin_client(), "default");
    assert_eq!(annotations(&pods.get("web").await.unwrap())[STATUS], "[]");
    // The CNI error for it: not transient.
    assert_eq!(CniError::from(err).code, 107);
}

async fn nad_is_read(cluster: &LocalCluster, api: &KubeApi) {
    let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(cluster.admin_client(), "default");
    let config = r#"{"cniVersion":"1.0.0","type":"macvlan","master":"eth0"}"#;
    nads.create(
        &PostParams::default(),
        &NetworkAttachmentDefinition::new(
            "macvlan",
            NetworkAttachmentDefinitionSpec {
                config: config.into(),
            },
        ),
    )
    .await
    .expect("admin creates a NAD");
    let nad = api
        .get_nad("default", "macvlan")
        .await
        .expect("the service account may get NADs")
        .expect("the NAD exists");
    assert_eq!(nad.spec.config, config);
}

async fn secrets_are_forbidden(api: &KubeApi) {
    let secrets: Api<Secret> = Api::namespaced(api.client().clone(), cluster::SA_NAMESPACE);
    match secrets.get("plexus-token-1").await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(status.message.contains(SA_USER), "{}", status.message);
        }
        other => panic!("the service account must not read secrets: {other:?}"),
    }
    // Nor delete pods: it reads them (the node agent lists and watches its node's) and patches
    // one annotation, nothing more.
    let pods: Api<Pod> = Api::namespaced(api.client().clone(), "default");
    match pods.delete("web", &Default::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("the service account must not delete pods: {other:?}"),
    }
}

async fn missing_rbac_is_forbidden_and_named(cluster: &LocalCluster, api: &KubeApi) {
    let admin = cluster.admin_client();
    let bindings: Api<ClusterRoleBinding> = Api::all(admin.clone());
    bindings
        .delete("plexus", &DeleteParams::default())
        .await
        .expect("delete the binding");
    let deadline = Instant::now() + Duration::from_secs(10);
    let err = loop {
        match api.get_pod("default", "web").await {
            Err(e) => break e,
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Ok(_) => panic!("still allowed 10 s after the binding was deleted"),
        }
    };
    assert!(matches!(err, KubeError::Forbidden { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&cluster.url), "{text}");
    assert!(text.contains("get pods \"default/web\""), "{text}");
    assert!(text.contains(SA_USER), "{text}");
    eprintln!("without RBAC: {text}");
    assert_eq!(CniError::from(err).code, 107);

    cluster::apply_yaml(&admin, cluster::RBAC_YAML)
        .await
        .expect("re-apply the RBAC");
    let deadline = Instant::now() + Duration::from_secs(10);
    while api.get_pod("default", "web").await.is_err() {
        assert!(Instant::now() < deadline, "RBAC not back after 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn requests_are_in_the_audit_log(cluster: &LocalCluster) {
    let exe = std::env::current_exe().unwrap();
    let program = exe.file_name().unwrap().to_string_lossy().into_owned();
    let ours = |e: &serde_json::Value, verb: &str| {
        e["user"]["username"] == SA_USER
            && e["verb"] == verb
            && e["objectRef"]["resource"] == "pods"
            && e["userAgent"]
                .as_str()
                .is_some_and(|ua| ua.starts_with(&format!("{program}/")))
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let events = cluster.audit_events();
        let gets = events.iter().filter(|e| ours(e, "get")).count();
        let patches = events.iter().filter(|e| ours(e, "patch")).count();
        if gets >= 3 && patches >= 3 {
            eprintln!(
                "audit log: {} events, {gets} pod GETs and {patches} pod PATCHes by {SA_USER}",
                events.len()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "audit log: {gets} GETs and {patches} PATCHes of pods by the service account"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn rotated_token_is_used_by_the_next_call(cluster: &LocalCluster, api: &KubeApi) {
    // kube's own client, with kube's own token-file handling, for comparison.
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(cluster.sa_kubeconfig()).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let stock = kube::Client::try_from(config).unwrap();
    let stock_pods: Api<Pod> = Api::namespaced(stock, "default");
    stock_pods
        .get("web")
        .await
        .expect("kube's client works before the rotation");
    assert!(api.get_pod("default", "web").await.unwrap().is_some());

    let started = Instant::now();
    let (old, new) = cluster.rotate_sa_token().expect("token rotation");
    assert_ne!(old, new);
    eprintln!(
        "token rotated; the old one refused after {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let pod = api
        .get_pod("default", "web")
        .await
        .expect("the next call after a rotation uses the new token");
    assert!(pod.is_some());
    match stock_pods.get("web").await {
        Ok(_) => eprintln!("kube's own client after the rotation: still works"),
        Err(e) => eprintln!(
            "kube's own client after the rotation (re-reads a tokenFile at most once a minute): {e}"
        ),
    }
}

/// The first request of a fresh client (a new connection) with the tuned connector and with
/// kube's default one. Printed, not asserted: timings vary with the machine's load.
async fn first_request_latency(cluster: &LocalCluster) {
    let mut tuned = Vec::new();
    let mut stock = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let api = KubeApi::from_kubeconfig(cluster.sa_kubeconfig(), TIMEOUT)
            .await
            .unwrap();
        api.get_pod("default", "web").await.unwrap().unwrap();
        tuned.push(started.elapsed());

        let started = Instant::now();
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(cluster.sa_kubeconfig()).unwrap(),
            &Default::default(),
        )
        .await
        .unwrap();
        let pods: Api<Pod> = Api::namespaced(kube::Client::try_from(config).unwrap(), "default");
        pods.get("web").await.unwrap();
        stock.push(started.elapsed());
    }
    let ms = |v: &[Duration]| {
        v.iter()
            .map(|d| format!("{:.1}", d.as_secs_f64() * 1e3))
            .collect::<Vec<_>>()
            .join(" ")
    };
    eprintln!(
        "first GET on a new client, ms: TCP_NODELAY connector [{}], kube's default connector [{}]",
        ms(&tuned),
        ms(&stock)
    );
}

async fn hung_server_times_out_and_is_named(cluster: &LocalCluster) {
    let timeout = Duration::from_secs(1);
    let api = KubeApi::from_kubeconfig(cluster.sa_kubeconfig(), timeout)
        .await
        .unwrap();
    cluster.pause();
    let started = Instant::now();
    let result = api.get_pod("default", "web").await;
    let took = started.elapsed();
    cluster.resume();
    let err = result.expect_err("a hung API server must time out");
    assert!(matches!(err, KubeError::Timeout { .. }), "{err:?}");
    assert!(
        took >= timeout && took < timeout + Duration::from_millis(500),
        "{took:?}"
    );
    let text = err.to_string();
    assert!(text.contains(&cluster.url), "{text}");
    assert!(text.contains("get pods \"default/web\""), "{text}");
    eprintln!("hung server, after {took:?}: {text}");
    assert_eq!(CniError::from(err).code, 11);
    // And the server answers again.
    assert!(api.get_pod("default", "web").await.unwrap().is_some());
}

/// A server whose certificate is not trusted: not "unreachable" (a retry would not help).
async fn untrusted_certificate_is_a_tls_error(cluster: &LocalCluster) {
    let api = KubeApi::from_config(kube::Config::new(cluster.url.parse().unwrap()), TIMEOUT)
        .expect("a client without the cluster's CA");
    let err = api.get_pod("default", "web").await.unwrap_err();
    eprintln!("untrusted certificate: {err}");
    assert!(matches!(err, KubeError::Other { .. }), "{err:?}");
    assert!(err.to_string().contains(&cluster.url), "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");
    assert_eq!(CniError::from(err).code, 5);
}

async fn nad_without_the_crd_is_an_error(cluster: &LocalCluster, api: &KubeApi) {
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.admin_client());
    crds.delete(
        "network-attachment-definitions.k8s.cni.cncf.io",
        &DeleteParams::default(),
    )
    .await
    .expect("delete the NAD CRD");
    let deadline = Instant::now() + Duration::from_secs(20);
    let err = loop {
        match api.get_nad("default", "macvlan").await {
            Err(e) => break e,
            Ok(_) => {
                assert!(Instant::now() < deadline, "the NAD API is still served");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    eprintln!("NAD without the CRD: {err}");
    assert_eq!(err.status_code(), Some(404), "{err:?}");
}

/// A server nobody listens on: an error at once, naming it; try again later.
#[test]
fn unreachable_server_is_named() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("https://127.0.0.1:{port}");
    runtime().block_on(async {
        let config = kube::Config::new(url.parse().unwrap());
        let api = KubeApi::from_config(config, TIMEOUT).unwrap();
        let started = Instant::now();
        let err = api.get_pod("default", "web").await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(matches!(err, KubeError::Unreachable { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&url), "{text}");
        assert!(text.contains("get pods \"default/web\""), "{text}");
        eprintln!("{text}");
        assert_eq!(CniError::from(err).code, 11);
    });
}
