//! The agent's watch of its node's pods (`crate::cache::watch`) feeds the [`Reconciler`]: each
//! event of that watch is handed over here, so hot-plug needs no watch of its own.

use k8s_openapi::api::core::v1::Pod;
use kube::api::PartialObjectMeta;
use kube::runtime::watcher::Event;

use super::Reconciler;

/// Hands one event of the pods' watch to `reconciler`.
pub fn feed(reconciler: &Reconciler, event: &Event<PartialObjectMeta<Pod>>) {
    match event {
        Event::Apply(meta) | Event::InitApply(meta) => reconciler.pod_changed(&pod_of(meta)),
        Event::Delete(meta) => reconciler.pod_deleted(&pod_of(meta)),
        Event::Init | Event::InitDone => {}
    }
}

/// A pod object holding only this metadata.
fn pod_of(meta: &PartialObjectMeta<Pod>) -> Pod {
    Pod {
        metadata: meta.metadata.clone(),
        ..Pod::default()
    }
}
