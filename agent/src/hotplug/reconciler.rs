//! The reconciler: for each pod of the node whose networks annotation changed, attach what was
//! added, detach what was removed, and write the network-status once.
//!
//! Pods come in through [`Reconciler::pod_changed`] and [`Reconciler::pod_deleted`] (from the
//! watch in `watch.rs`, or from the agent's pod reflector). One worker task reconciles one pod
//! at a time, always from the pod's latest object. A pod is reconciled when its UID or its
//! networks annotation differ from what was last reconciled, so after a restart every running
//! pod is reconciled once: a step cut short by a crash is finished or rolled back then (an
//! attachment recorded without a result is torn down and attached again; a network-status that
//! does not match the cache entry is written again).
//!
//! A refused or failed edit leaves the attachments as they are (a failed attachment is rolled
//! back), writes a Warning naming the cause, keeps the network-status true to what is attached,
//! and is retried with exponential backoff (0.5 s doubling up to a minute) until the pod changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use plexus::hotplug::{self, HotPlug};
use plexus::k8s::pod_networks::{self, PodRef};
use plexus::k8s::selection::{NETWORKS_ANNOTATION, NETWORK_STATUS_ANNOTATION};
use plexus::k8s::status;
use plexus_cni::CniError;
use tokio::sync::mpsc;

use super::warnings::{PodKey, WarningSink};

/// The pod annotation that turns hot-plug off for one pod (`"false"`).
pub const HOTPLUG_ANNOTATION: &str = "plexus.cni.dev/hotplug";

/// The test-only fault hook: with `PLEXUSD_FAULT=exit-after-hotplug-add` the agent exits right
/// after a hot-plugged attachment is recorded, before the network-status is written.
const FAULT_ENV: &str = "PLEXUSD_FAULT";

/// The first retry's delay; each failure doubles it up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest delay between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What a reconcile did.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The pod's attachments are what its annotation asks for.
    Reconciled,
    /// Nothing to do: hot-plug is off for the pod, or it has no running sandbox on this node.
    Skipped,
}

/// Why a reconcile did not finish.
struct Failure {
    reason: &'static str,
    error: CniError,
}

impl Failure {
    fn refused(error: CniError) -> Self {
        Failure {
            reason: "HotPlugRefused",
            error,
        }
    }

    fn failed(error: CniError) -> Self {
        Failure {
            reason: "HotPlugFailed",
            error,
        }
    }

    fn message(&self) -> String {
        if self.error.details.is_empty() {
            self.error.msg.clone()
        } else {
            format!("{} ({})", self.error.msg, self.error.details)
        }
    }
}

/// What was last reconciled of a pod: its UID and networks annotation.
type Reconciled = (String, Option<String>);

#[derive(Default)]
struct State {
    latest: HashMap<String, Pod>,
    done: HashMap<String, Reconciled>,
    attempts: HashMap<String, u32>,
}

struct Inner {
    hotplug: HotPlug,
    sink: Arc<dyn WarningSink>,
    state: Mutex<State>,
    queue: mpsc::UnboundedSender<String>,
}

/// Reconciles the node's pods' attachments with their networks annotations. Cheap to clone.
#[derive(Clone)]
pub struct Reconciler {
    inner: Arc<Inner>,
}

/// `namespace/name` of a pod.
fn key_of(pod: &Pod) -> Option<String> {
    Some(format!(
        "{}/{}",
        pod.metadata.namespace.as_deref()?,
        pod.metadata.name.as_deref()?
    ))
}

/// The annotation `key` of a pod.
fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a String> {
    pod.metadata.annotations.as_ref()?.get(key)
}

/// What a reconcile of `pod` would record as done.
fn wanted(pod: &Pod) -> Option<Reconciled> {
    Some((
        pod.metadata.uid.clone()?,
        annotation(pod, NETWORKS_ANNOTATION).cloned(),
    ))
}

impl Reconciler {
    /// Starts the worker (inside a Tokio runtime) that reconciles with `hotplug`, writing
    /// warnings to `sink`.
    pub fn start(hotplug: HotPlug, sink: Arc<dyn WarningSink>) -> Reconciler {
        let (queue, work) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            hotplug,
            sink,
            state: Mutex::new(State::default()),
            queue,
        });
        tokio::spawn(worker(inner.clone(), work));
        Reconciler { inner }
    }

    /// A pod of the node was created or changed.
    pub fn pod_changed(&self, pod: &Pod) {
        let (Some(key), Some(wanted)) = (key_of(pod), wanted(pod)) else {
            return;
        };
        if pod.metadata.deletion_timestamp.is_some() {
            return;
        }
        // Only the metadata is kept (the spec and status are most of a pod's size).
        let mut metadata = pod.metadata.clone();
        metadata.managed_fields = None;
        let kept = Pod {
            metadata,
            ..Pod::default()
        };
        let mut state = self.inner.lock();
        state.latest.insert(key.clone(), kept);
        if state.done.get(&key) != Some(&wanted) {
            let _ = self.inner.queue.send(key);
        }
    }

    /// A pod of the node was deleted: forgotten (the runtime's DEL tears its attachments down).
    pub fn pod_deleted(&self, pod: &Pod) {
        let Some(key) = key_of(pod) else { return };
        let mut state = self.inner.lock();
        state.latest.remove(&key);
        state.done.remove(&key);
        state.attempts.remove(&key);
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes pod `pod`'s attachments what its networks annotation asks for.
    async fn reconcile(&self, pod: &Pod) -> Result<Outcome, Failure> {
        if annotation(pod, HOTPLUG_ANNOTATION).map(String::as_str) == Some("false") {
            return Ok(Outcome::Skipped);
        }
        let meta = &pod.metadata;
        let pod_ref = PodRef {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone(),
        };
        let entry = self
            .hotplug
            .entry_of(&pod_ref)
            .map_err(|e| Failure::failed(e.into()))?;
        let Some(mut entry) = entry else {
            return Ok(Outcome::Skipped);
        };
        if HotPlug::predates_identities(&entry) {
            tracing::info!(
                "pod {}/{}: its attachments were recorded by an older Plexus, not hot-plugged",
                pod_ref.namespace,
                pod_ref.name
            );
            return Ok(Outcome::Skipped);
        }
        let annotations = meta.annotations.clone().unwrap_or_default();
        let info =
            pod_networks::pod_info(pod_ref, annotations.into_iter().collect(), meta.uid.clone())
                .map_err(Failure::refused)?;

        let mut failure = None;
        match self.hotplug.plan(&entry, &info).await {
            Err(e) => failure = Some(Failure::refused(e)),
            Ok(plan) => {
                for ifname in &plan.detach {
                    if let Err(e) = self.hotplug.detach(&mut entry, ifname).await {
                        failure = Some(Failure::failed(e));
                        break;
                    }
                }
                for attachment in plan.attach.iter().filter(|_| failure.is_none()) {
                    if let Err(e) = self.hotplug.attach(&mut entry, attachment).await {
                        failure = Some(Failure::failed(e));
                        break;
                    }
                    if std::env::var(FAULT_ENV).as_deref() == Ok("exit-after-hotplug-add") {
                        tracing::error!(
                            "fault hook: exiting after hot-plugging {}",
                            attachment.ifname
                        );
                        std::process::exit(99);
                    }
                }
            }
        }

        // The network-status, true to what is attached, whatever happened.
        let text = status::to_annotation(&hotplug::statuses(&entry));
        if annotation(pod, NETWORK_STATUS_ANNOTATION) != Some(&text) {
            if let Err(e) = self.hotplug.write_status(&info, &entry).await {
                failure.get_or_insert(Failure::failed(e));
            }
        }
        match failure {
            Some(f) => Err(f),
            None => Ok(Outcome::Reconciled),
        }
    }
}

/// Reconciles queued pods one at a time; a failure is retried after a backoff.
async fn worker(inner: Arc<Inner>, mut work: mpsc::UnboundedReceiver<String>) {
    while let Some(key) = work.recv().await {
        let pod = {
            let state = inner.lock();
            match state.latest.get(&key) {
                Some(pod) if state.done.get(&key) != wanted(pod).as_ref() => pod.clone(),
                _ => continue,
            }
        };
        let outcome = inner.reconcile(&pod).await;
        let mut state = inner.lock();
        match outcome {
            Ok(outcome) => {
                state.attempts.remove(&key);
                if outcome == Outcome::Reconciled {
                    if let Some(done) = wanted(&pod) {
                        state.done.insert(key, done);
                    }
                }
            }
            Err(failure) => {
                let message = failure.message();
                tracing::warn!("hot-plug of pod {key}: {message}");
                let pod_key = PodKey {
                    namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                    name: pod.metadata.name.clone().unwrap_or_default(),
                    uid: pod.metadata.uid.clone().unwrap_or_default(),
                };
                inner.sink.warning(&pod_key, failure.reason, message);
                let attempts = state.attempts.entry(key.clone()).or_insert(0);
                *attempts += 1;
                let delay = backoff(*attempts);
                let queue = inner.queue.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = queue.send(key);
                });
            }
        }
    }
}

/// The delay before retry number `attempt` (1 for the first).
fn backoff(attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
    FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(4), Duration::from_secs(4));
        assert_eq!(backoff(30), MAX_BACKOFF);
    }
}
