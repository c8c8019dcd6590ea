//! Warnings on a pod, for refused or failed hot-plug edits: [`WarningSink`] is what the
//! reconciler reports to, [`EventWarnings`] turns each into a Warning Event queued on the
//! agent's [`Events`], at most once a minute for the same pod, reason and message (a bad edit
//! is retried with backoff, and its Warning need not be repeated each time).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::events::Events;

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

/// Warning Events on the agent's queue, one per pod, reason and message a minute.
pub struct EventWarnings {
    events: Events,
    written: Mutex<HashMap<(PodKey, String, String), Instant>>,
}

impl EventWarnings {
    /// Warnings queued on `events`.
    pub fn new(events: Events) -> Self {
        EventWarnings {
            events,
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
        if self.due((pod.clone(), reason.to_string(), message.clone())) {
            self.events
                .warning(&pod.namespace, &pod.name, &pod.uid, reason, message);
        }
    }
}
