//! Warnings on a pod, for refused or failed hot-plug edits: [`WarningSink`] is the seam (the
//! agent's Events writer can implement it), [`EventWarnings`] a plain one that writes a core/v1
//! Warning Event, at most once a minute for the same pod, reason and message.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ObjectMeta, PostParams};

/// The pod a warning is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodKey {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its UID.
    pub uid: String,
}

/// Where hot-plug's warnings go. `warning` must not block: it queues or spawns.
pub trait WarningSink: Send + Sync {
    /// A Warning on `pod`: `reason` is a CamelCase word, `message` names the cause.
    fn warning(&self, pod: &PodKey, reason: &str, message: String);
}

/// How often the same warning is written again while it repeats.
const REPEAT_AFTER: Duration = Duration::from_secs(60);

/// Writes Warning Events with the agent's client, rate-limited per pod, reason and message.
pub struct EventWarnings {
    client: kube::Client,
    node: String,
    written: Mutex<HashMap<(PodKey, String, String), Instant>>,
}

impl EventWarnings {
    /// Events written with `client`, reported from node `node`.
    pub fn new(client: kube::Client, node: &str) -> Self {
        EventWarnings {
            client,
            node: node.to_string(),
            written: Mutex::new(HashMap::new()),
        }
    }

    /// True when this warning was not written within [`REPEAT_AFTER`] (and notes it now).
    fn due(&self, key: (PodKey, String, String)) -> bool {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        written.retain(|_, at| now.duration_since(*at) < REPEAT_AFTER);
        if written.contains_key(&key) {
            return false;
        }
        written.insert(key, now);
        true
    }
}

impl WarningSink for EventWarnings {
    fn warning(&self, pod: &PodKey, reason: &str, message: String) {
        if !self.due((pod.clone(), reason.to_string(), message.clone())) {
            return;
        }
        let event = warning_event(pod, reason, message, &self.node);
        let api: Api<Event> = Api::namespaced(self.client.clone(), &pod.namespace);
        tokio::spawn(async move {
            if let Err(e) = api.create(&PostParams::default(), &event).await {
                tracing::warn!("cannot write a Warning Event: {e}");
            }
        });
    }
}

/// A core/v1 Warning Event on `pod`.
fn warning_event(pod: &PodKey, reason: &str, message: String, node: &str) -> Event {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let nanos = now.0.as_nanosecond();
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{nanos:x}", pod.name)),
            namespace: Some(pod.namespace.clone()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(pod.namespace.clone()),
            name: Some(pod.name.clone()),
            uid: Some(pod.uid.clone()),
            ..ObjectReference::default()
        },
        reason: Some(reason.into()),
        message: Some(message),
        type_: Some("Warning".into()),
        source: Some(EventSource {
            component: Some("plexusd".into()),
            host: Some(node.into()),
        }),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Event::default()
    }
}
