//! The pods of the node, watched (`spec.nodeName=<node>`) and fed to the [`Reconciler`]. The
//! agent's pod reflector can feed it instead; this watch is the stand-in until then. Only the
//! pods' metadata is watched: hot-plug reads nothing else.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;

use super::Reconciler;

/// Watches the pods of node `node` until the stream ends (it retries with backoff on errors).
pub async fn watch_pods(client: kube::Client, node: &str, reconciler: Reconciler) {
    let api: Api<PartialObjectMeta<Pod>> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Apply(meta) | Event::InitApply(meta)) => {
                reconciler.pod_changed(&pod_of(meta))
            }
            Ok(Event::Delete(meta)) => reconciler.pod_deleted(&pod_of(meta)),
            Ok(Event::Init | Event::InitDone) => {}
            Err(e) => tracing::warn!("watching the pods of node {node}: {e}"),
        }
    }
}

/// A pod object holding only this metadata.
fn pod_of(meta: PartialObjectMeta<Pod>) -> Pod {
    Pod {
        metadata: meta.metadata,
        ..Pod::default()
    }
}
