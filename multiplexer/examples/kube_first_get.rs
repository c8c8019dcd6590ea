//! Times the first Kubernetes API request of a fresh process, as a CNI plugin makes it: from
//! `main` to the answer of one pod GET, with Plexus's client or with kube's default one.
//!
//! ```text
//! cargo xtask apiserver --serve            # prints a kubeconfig; a pod must exist
//! cargo run --release --example kube_first_get -- KUBECONFIG NAMESPACE POD [--stock]
//! ```
//!
//! Prints the milliseconds.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use plexus::k8s::client::KubeApi;

fn main() {
    let started = Instant::now();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kubeconfig, namespace, name, rest @ ..] = args.as_slice() else {
        eprintln!("usage: kube_first_get KUBECONFIG NAMESPACE POD [--stock]");
        std::process::exit(2);
    };
    let stock = rest.iter().any(|a| a == "--stock");
    let kubeconfig = PathBuf::from(kubeconfig);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    let found = runtime.block_on(async {
        if stock {
            plexus::k8s::client::install_crypto_provider();
            let config = kube::Config::from_custom_kubeconfig(
                kube::config::Kubeconfig::read_from(&kubeconfig).expect("kubeconfig"),
                &Default::default(),
            )
            .await
            .expect("kube config");
            let client = kube::Client::try_from(config).expect("kube client");
            let pods: kube::Api<Pod> = kube::Api::namespaced(client, namespace);
            pods.get_opt(name).await.expect("GET").is_some()
        } else {
            let api = KubeApi::from_kubeconfig(&kubeconfig, Duration::from_secs(5))
                .await
                .expect("client");
            api.get_pod(namespace, name).await.expect("GET").is_some()
        }
    });
    println!(
        "{:.1} ms (pod {}found)",
        started.elapsed().as_secs_f64() * 1e3,
        if found { "" } else { "not " }
    );
}
