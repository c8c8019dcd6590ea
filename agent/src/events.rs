//! Events on pods, in Multus's reason and message format: an `AddedInterface` Normal Event per
//! attachment of a completed ADD ("Add net1 [10.1.1.3/24] from ns/nad"), and Warning Events
//! (a failed ADD's attachment, reason [`ADD_FAILED`]).
//!
//! An Event is queued, never written on the caller's time: one writer task creates them one
//! after the other, at most [`PER_SECOND`] a second, so a burst of ADDs never turns into a burst
//! of API requests. The queue holds [`QUEUE`] Events; when it is full, new ones are dropped and
//! counted ([`Events::dropped`]). Events are core/v1 Events (legacy form, source `plexusd` on
//! the node), as Multus writes them, each of its own (no series kept in memory, so nothing grows with the pods seen).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// The reason of the Warning Event of a failed ADD.
pub const ADD_FAILED: &str = "AttachmentFailed";

/// How many Events may wait to be written.
pub const QUEUE: usize = 1024;

/// How many Events are written a second at most.
pub const PER_SECOND: u32 = 50;

/// The component the Events name as their source.
const COMPONENT: &str = "plexusd";

/// One Event to write.
#[derive(Debug)]
struct PodEvent {
    namespace: String,
    name: String,
    uid: String,
    type_: &'static str,
    reason: String,
    message: String,
}

/// The queue of Events and its writer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Events {
    queue: mpsc::Sender<PodEvent>,
    dropped: Arc<AtomicU64>,
}

impl Events {
    /// Starts the writer of node `node`'s Events with `client` (on the current runtime).
    pub fn new(client: kube::Client, node: &str) -> Events {
        let (queue, waiting) = mpsc::channel(QUEUE);
        tokio::spawn(write_all(client, node.to_string(), waiting));
        Events {
            queue,
            dropped: Arc::default(),
        }
    }

    /// Queues the `AddedInterface` Event of one attachment: interface `ifname` with
    /// addresses `ips` (with prefix length) from `network` (`namespace/nad`, or a
    /// configuration's name).
    pub fn added_interface(
        &self,
        pod_namespace: &str,
        pod_name: &str,
        pod_uid: &str,
        ifname: &str,
        ips: &[String],
        network: &str,
    ) {
        self.queue(PodEvent {
            namespace: pod_namespace.to_string(),
            name: pod_name.to_string(),
            uid: pod_uid.to_string(),
            type_: "Normal",
            reason: "AddedInterface".into(),
            message: added_message(ifname, ips, network),
        });
    }

    /// Queues a Warning Event on the pod.
    pub fn warning(
        &self,
        pod_namespace: &str,
        pod_name: &str,
        pod_uid: &str,
        reason: &str,
        message: String,
    ) {
        self.queue(PodEvent {
            namespace: pod_namespace.to_string(),
            name: pod_name.to_string(),
            uid: pod_uid.to_string(),
            type_: "Warning",
            reason: reason.to_string(),
            message,
        });
    }

    /// How many Events were dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn queue(&self, event: PodEvent) {
        if self.queue.try_send(event).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                warn!("{dropped} Events dropped so far: the queue of {QUEUE} is full");
            }
        }
    }
}

/// Multus's message: `Add <ifname> [<ip> <ip>] from <network>`.
pub fn added_message(ifname: &str, ips: &[String], network: &str) -> String {
    format!("Add {ifname} [{}] from {network}", ips.join(" "))
}

/// Writes the queued Events one by one, at most [`PER_SECOND`] a second.
async fn write_all(client: kube::Client, node: String, mut waiting: mpsc::Receiver<PodEvent>) {
    let spacing = Duration::from_secs(1) / PER_SECOND;
    while let Some(event) = waiting.recv().await {
        let started = tokio::time::Instant::now();
        let api: Api<Event> = Api::namespaced(client.clone(), &event.namespace);
        if let Err(e) = api
            .create(&PostParams::default(), &object(&event, &node))
            .await
        {
            debug!(pod = %event.name, reason = %event.reason, "the Event was not written: {e}");
        }
        tokio::time::sleep_until(started + spacing).await;
    }
}

/// The Event object.
fn object(event: &PodEvent, node: &str) -> Event {
    let now = k8s_openapi::jiff::Timestamp::now();
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{:x}", event.name, now.as_nanosecond())),
            namespace: Some(event.namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(event.namespace.clone()),
            name: Some(event.name.clone()),
            uid: (!event.uid.is_empty()).then(|| event.uid.clone()),
            ..Default::default()
        },
        reason: Some(event.reason.clone()),
        message: Some(event.message.clone()),
        type_: Some(event.type_.into()),
        count: Some(1),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        source: Some(EventSource {
            component: Some(COMPONENT.into()),
            host: Some(node.to_string()),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multus_message() {
        assert_eq!(
            added_message(
                "net1",
                &["10.1.1.3/24".into(), "fd00::3/64".into()],
                "ns/nad"
            ),
            "Add net1 [10.1.1.3/24 fd00::3/64] from ns/nad"
        );
        assert_eq!(added_message("eth0", &[], "pods"), "Add eth0 [] from pods");
    }
}
