//! What the agent knows of the cluster for `plexus`: the pods of its node (their UID and
//! annotations) and every NetworkAttachmentDefinition, kept by watches ([`watch`]), seeded from
//! the last [`crate::snapshot`] at start.
//!
//! A pod missing from the cache, present with another UID than the one asked for, or known only
//! from the snapshot when no UID is given, is read live, so a pod created a moment ago (or
//! re-created under its name) is never served stale. A NAD missing from the cache is read live
//! too (one created a moment ago); one found live is kept until its watch says otherwise.

pub mod watch;

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::PartialObjectMeta;
use plexus::k8s::client::{KubeApi, KubeError};
use plexus::k8s::selection::NETWORK_STATUS_ANNOTATION;
use plexus_crds::NetworkAttachmentDefinition;
use serde::{Deserialize, Serialize};

/// A namespaced object's `(namespace, name)`.
pub type Key = (String, String);

/// What `plexus` reads of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodMeta {
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.annotations`, but the network-status (written by Plexus, never read back) and
    /// `kubectl`'s last-applied configuration (often large).
    pub annotations: BTreeMap<String, String>,
}

/// Annotations the cache leaves out.
const UNCACHED_ANNOTATIONS: [&str; 2] = [
    NETWORK_STATUS_ANNOTATION,
    "kubectl.kubernetes.io/last-applied-configuration",
];

impl PodMeta {
    /// The pod's metadata as the cache keeps it; `None` without a namespace, name or UID.
    pub fn of(pod: &PartialObjectMeta<Pod>) -> Option<(Key, PodMeta)> {
        let m = &pod.metadata;
        let key = (m.namespace.clone()?, m.name.clone()?);
        let mut annotations = m.annotations.clone().unwrap_or_default();
        for key in UNCACHED_ANNOTATIONS {
            annotations.remove(key);
        }
        let uid = m.uid.clone()?;
        Some((key, PodMeta { uid, annotations }))
    }
}

/// A NAD as `plexus` reads it: its name, namespace, annotations and spec, as JSON.
pub fn nad_json(nad: &NetworkAttachmentDefinition) -> Option<(Key, String)> {
    let m = &nad.metadata;
    let key = (m.namespace.clone()?, m.name.clone()?);
    let mut kept = NetworkAttachmentDefinition::new(&key.1, nad.spec.clone());
    kept.metadata.namespace = Some(key.0.clone());
    kept.metadata.annotations = m.annotations.clone();
    let json = serde_json::to_string(&kept).ok()?;
    Some((key, json))
}

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The watch cache.
    Cache,
    /// The snapshot of a previous run, before the watch listed.
    Snapshot,
    /// A live read.
    Live,
}

impl Source {
    /// Its name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Cache => "cache",
            Source::Snapshot => "snapshot",
            Source::Live => "live",
        }
    }
}

/// One kind of object kept by a watch: its entries, and the list being received when a watch
/// (re)starts.
#[derive(Debug)]
pub struct Table<T> {
    entries: HashMap<Key, T>,
    listing: Option<HashMap<Key, T>>,
    /// Whether the entries come from a complete list of the watch (else from the snapshot).
    listed: bool,
    /// Changes since the start, for the snapshot.
    changes: u64,
    /// When the watch last delivered anything (an object, or the start or end of a list).
    heard: Option<Instant>,
}

impl<T: Clone> Table<T> {
    /// A table holding `entries` from a snapshot.
    pub fn seeded(entries: HashMap<Key, T>) -> Table<T> {
        Table {
            entries,
            listing: None,
            listed: false,
            changes: 0,
            heard: None,
        }
    }

    /// How long ago the watch last delivered anything; `None` before its first event.
    pub fn age(&self) -> Option<Duration> {
        self.heard.map(|at| at.elapsed())
    }

    /// The entry of `key` and where it came from.
    pub fn get(&self, key: &Key) -> Option<(T, Source)> {
        let source = if self.listed {
            Source::Cache
        } else {
            Source::Snapshot
        };
        self.entries.get(key).map(|v| (v.clone(), source))
    }

    /// Applies one watch event, the object already turned into its entry.
    pub fn apply(&mut self, event: kube::runtime::watcher::Event<Option<(Key, T)>>) {
        use kube::runtime::watcher::Event;
        self.changes += 1;
        self.heard = Some(Instant::now());
        match event {
            Event::Apply(Some((k, v))) => {
                self.entries.insert(k, v);
            }
            Event::Delete(Some((k, _))) => {
                self.entries.remove(&k);
            }
            Event::Init => self.listing = Some(HashMap::new()),
            Event::InitApply(Some((k, v))) => {
                self.listing.get_or_insert_default().insert(k, v);
            }
            Event::InitDone => {
                self.entries = self.listing.take().unwrap_or_default();
                self.entries.shrink_to_fit();
                self.listed = true;
            }
            Event::Apply(None) | Event::Delete(None) | Event::InitApply(None) => {}
        }
    }

    /// Keeps an entry read live.
    pub fn insert(&mut self, key: Key, value: T) {
        self.changes += 1;
        self.entries.insert(key, value);
    }

    /// The entries.
    pub fn entries(&self) -> &HashMap<Key, T> {
        &self.entries
    }

    /// How many changes the table saw.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Whether a watch listed everything.
    pub fn listed(&self) -> bool {
        self.listed
    }
}

/// The pods of the node and every NAD, with the client that reads them live.
#[derive(Debug)]
pub struct Cache {
    api: KubeApi,
    node: String,
    /// The node's pods.
    pub pods: RwLock<Table<PodMeta>>,
    /// Every NAD, as JSON.
    pub nads: RwLock<Table<String>>,
}

impl Cache {
    /// A cache of `node` over `api`, seeded with a snapshot's pods and NADs.
    pub fn new(
        api: KubeApi,
        node: &str,
        pods: HashMap<Key, PodMeta>,
        nads: HashMap<Key, String>,
    ) -> Cache {
        Cache {
            api,
            node: node.to_string(),
            pods: RwLock::new(Table::seeded(pods)),
            nads: RwLock::new(Table::seeded(nads)),
        }
    }

    /// The client.
    pub fn api(&self) -> &KubeApi {
        &self.api
    }

    /// The node.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The pod `namespace/name` of UID `uid` (empty: any), and where it came from; `None` when
    /// no pod by that name exists. Read live unless the cache has it with that UID.
    pub async fn pod(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> Result<(Option<PodMeta>, Source), KubeError> {
        let key = (namespace.to_string(), name.to_string());
        let cached = read(&self.pods).get(&key);
        if let Some((pod, source)) = cached {
            let trusted = match source {
                Source::Snapshot => !uid.is_empty() && pod.uid == uid,
                _ => uid.is_empty() || pod.uid == uid,
            };
            if trusted {
                return Ok((Some(pod), source));
            }
        }
        let live = self.api.get_pod(namespace, name).await?;
        Ok((
            live.as_ref().and_then(PodMeta::of).map(|(_, p)| p),
            Source::Live,
        ))
    }

    /// The NAD `namespace/name` as JSON, `None` when it does not exist; read live (and kept)
    /// when the cache does not have it.
    pub async fn nad(&self, namespace: &str, name: &str) -> Result<Option<String>, KubeError> {
        let key = (namespace.to_string(), name.to_string());
        if let Some((json, _)) = read(&self.nads).get(&key) {
            return Ok(Some(json));
        }
        let Some(nad) = self.api.get_nad(namespace, name).await? else {
            return Ok(None);
        };
        let Some((key, json)) = nad_json(&nad) else {
            return Ok(None);
        };
        write(&self.nads).insert(key, json.clone());
        Ok(Some(json))
    }
}

/// A read lock, even after a panic elsewhere (the tables stay consistent: each change is one
/// map operation).
pub fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

/// A write lock, even after a panic elsewhere.
pub fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}
