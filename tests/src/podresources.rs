//! A stand-in for the kubelet's PodResources API: the real gRPC service (Plexus's generated
//! server), served on a unix socket from a tokio runtime in a background thread, answering
//! `List` with the pods and devices a test sets.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plexus::devices::podresources::proto::pod_resources_lister_server::{
    PodResourcesLister, PodResourcesListerServer,
};
use plexus::devices::podresources::proto::{
    ContainerDevices, ContainerResources, ListPodResourcesRequest, ListPodResourcesResponse,
    PodResources,
};
use tonic::{Request, Response, Status};

#[derive(Default)]
struct State {
    pods: Mutex<Vec<PodResources>>,
    delay: Mutex<Duration>,
    calls: AtomicUsize,
}

struct Service(Arc<State>);

#[tonic::async_trait]
impl PodResourcesLister for Service {
    async fn list(
        &self,
        _request: Request<ListPodResourcesRequest>,
    ) -> Result<Response<ListPodResourcesResponse>, Status> {
        self.0.calls.fetch_add(1, Ordering::SeqCst);
        let delay = *self.0.delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok(Response::new(ListPodResourcesResponse {
            pod_resources: self.0.pods.lock().unwrap().clone(),
        }))
    }
}

/// A PodResources server on a unix socket; stopped (and its socket removed) on drop.
pub struct PodResourcesServer {
    /// The socket it serves on.
    pub socket: PathBuf,
    state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PodResourcesServer {
    /// Serves on `socket` (which must not exist), with no pods yet.
    pub fn start(socket: &Path) -> PodResourcesServer {
        let state = Arc::new(State::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, is_ready) = std::sync::mpsc::channel();
        let served = Arc::clone(&state);
        let path = socket.to_path_buf();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the PodResources server");
            rt.block_on(async move {
                let listener = tokio::net::UnixListener::bind(&path)
                    .unwrap_or_else(|e| panic!("bind {path:?}: {e}"));
                ready.send(()).expect("the test waits");
                tonic::transport::Server::builder()
                    .add_service(PodResourcesListerServer::new(Service(served)))
                    .serve_with_incoming_shutdown(
                        tokio_stream::wrappers::UnixListenerStream::new(listener),
                        async {
                            let _ = stopped.await;
                        },
                    )
                    .await
                    .expect("serve PodResources");
            });
        });
        is_ready
            .recv_timeout(Duration::from_secs(10))
            .expect("the PodResources server starts");
        PodResourcesServer {
            socket: socket.to_path_buf(),
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Sets the devices of pod `namespace/name`, one container per `(container, resource,
    /// device IDs)` entry, replacing what the pod had.
    pub fn set_pod(&self, namespace: &str, name: &str, devices: &[(&str, &str, &[&str])]) {
        let containers = devices
            .iter()
            .map(|(container, resource, ids)| ContainerResources {
                name: container.to_string(),
                devices: vec![ContainerDevices {
                    resource_name: resource.to_string(),
                    device_ids: ids.iter().map(|s| s.to_string()).collect(),
                    topology: None,
                }],
            })
            .collect();
        let mut pods = self.state.pods.lock().unwrap();
        pods.retain(|p| !(p.namespace == namespace && p.name == name));
        pods.push(PodResources {
            name: name.into(),
            namespace: namespace.into(),
            containers,
        });
    }

    /// Makes every answer wait this long first.
    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    /// How many `List` calls it has answered (or started to).
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }
}

impl Drop for PodResourcesServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}
