//! The watches that keep the [`Cache`] current: the pods of the node (metadata only, field
//! selector `spec.nodeName`) and every NetworkAttachmentDefinition, each a `kube::runtime`
//! watcher whose events are folded into a [`Table`](super::Table) (a reflector keeping only
//! what `plexus` reads). A broken watch resumes, or lists again, with kube's default backoff.

use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::{watcher, WatchStreamExt};
use plexus_crds::NetworkAttachmentDefinition;
use tracing::{info, warn};

use super::{nad_json, write, Cache, Key, PodMeta, Table};
use crate::hotplug::Reconciler;

/// Starts both watches on the runtime; each event of the pods' watch is also handed to
/// `hotplug`, when it runs.
pub fn spawn(cache: Arc<Cache>, hotplug: Option<Reconciler>) {
    let client = cache.api().client().clone();
    let pods: Api<PartialObjectMeta<Pod>> = Api::all(client.clone());
    let on_node = watcher::Config::default().fields(&format!("spec.nodeName={}", cache.node()));
    let stream = watcher(pods, on_node).default_backoff();
    tokio::spawn(fold(
        "pods",
        stream,
        cache.clone(),
        |c| &c.pods,
        |p| PodMeta::of(&p),
        move |event| {
            if let Some(reconciler) = &hotplug {
                crate::hotplug::feed(reconciler, event);
            }
        },
    ));
    let nads: Api<NetworkAttachmentDefinition> = Api::all(client);
    let stream = watcher(nads, watcher::Config::default()).default_backoff();
    tokio::spawn(fold(
        "NetworkAttachmentDefinitions",
        stream,
        cache,
        |c| &c.nads,
        |n| nad_json(&n),
        |_| {},
    ));
}

/// Folds a watch's events into the table `table` of `cache`, each object turned into its entry
/// by `entry`, after showing the event to `observe`.
async fn fold<K, T: Clone>(
    what: &'static str,
    stream: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    cache: Arc<Cache>,
    table: fn(&Cache) -> &RwLock<Table<T>>,
    entry: fn(K) -> Option<(Key, T)>,
    observe: impl Fn(&watcher::Event<K>),
) {
    let mut stream = std::pin::pin!(stream);
    let mut failing = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => {
                observe(&event);
                let listed = matches!(event, watcher::Event::InitDone);
                write(table(&cache)).apply(entries(event, entry));
                if listed {
                    info!(
                        "the watch of {what} listed {} objects",
                        super::read(table(&cache)).entries().len()
                    );
                }
                failing = false;
            }
            Err(e) if !failing => {
                warn!("the watch of {what} failed (retrying): {e}");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// The event with its object turned into its entry.
fn entries<K, T>(
    event: watcher::Event<K>,
    entry: fn(K) -> Option<(Key, T)>,
) -> watcher::Event<Option<(Key, T)>> {
    use watcher::Event;
    match event {
        Event::Apply(k) => Event::Apply(entry(k)),
        Event::Delete(k) => Event::Delete(entry(k)),
        Event::Init => Event::Init,
        Event::InitApply(k) => Event::InitApply(entry(k)),
        Event::InitDone => Event::InitDone,
    }
}
