//! One node for all the tests of a test binary, stopped when the process exits.

use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use super::{binaries_or_skip, KubeNode};

/// The node shared by the tests of this process, started by the first call (`None`, with a
/// message, when the binaries are missing outside CI). Holding the guard gives a test the node
/// to itself. The node is stopped when the process exits; if anything is left then, the
/// process exits with status 1, so that `cargo test` fails.
pub fn shared() -> Option<SharedNode> {
    static NODE: OnceLock<Option<Mutex<Option<KubeNode>>>> = OnceLock::new();
    extern "C" fn stop_at_exit() {
        let Some(Some(node)) = NODE.get() else { return };
        let node = node.lock().unwrap_or_else(PoisonError::into_inner).take();
        let Some(node) = node else { return };
        match node.stop() {
            Ok(()) => eprintln!("kubelet node: stopped, nothing left behind"),
            Err(e) => {
                eprintln!("kubelet node: left behind: {e}");
                // SAFETY: ends the process at once, with a failing status.
                unsafe { libc::_exit(1) };
            }
        }
    }
    let node = NODE.get_or_init(|| {
        let binaries = binaries_or_skip()?;
        let node = KubeNode::start(&binaries).unwrap_or_else(|e| panic!("{e}"));
        // SAFETY: registers a plain function, once.
        unsafe { libc::atexit(stop_at_exit) };
        Some(Mutex::new(Some(node)))
    });
    let guard = node
        .as_ref()?
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    guard.is_some().then_some(SharedNode(guard))
}

/// The shared node, held by one test at a time ([`shared`]).
pub struct SharedNode(MutexGuard<'static, Option<KubeNode>>);

impl std::ops::Deref for SharedNode {
    type Target = KubeNode;
    fn deref(&self) -> &KubeNode {
        self.0.as_ref().expect("the shared node runs")
    }
}

impl std::ops::DerefMut for SharedNode {
    fn deref_mut(&mut self) -> &mut KubeNode {
        self.0.as_mut().expect("the shared node runs")
    }
}
