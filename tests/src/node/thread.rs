//! The thread that runs the node's jobs, inside the node's network namespace and a mount
//! namespace of its own ([`super::mounts`]).

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::mpsc;

use nix::sched::{setns, unshare, CloneFlags};

use super::Result;

/// A thread inside the node's network namespace and a private mount namespace, that runs jobs
/// for the node. Processes it spawns (and threads it starts) live in both namespaces, and die
/// with it (`PR_SET_PDEATHSIG`) if the test process dies.
pub struct NodeThread {
    jobs: mpsc::Sender<Box<dyn FnOnce() + Send>>,
}

impl NodeThread {
    /// Starts the thread, moves it into the network namespace at `netns` and gives it a mount
    /// namespace of its own in which no mount propagates to the host's.
    pub(super) fn start(netns: &Path) -> Result<NodeThread> {
        let file = File::open(netns)?;
        let (jobs, queue) = mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let (entered_tx, entered) = mpsc::channel();
        std::thread::Builder::new()
            .name("plexus-node".into())
            .spawn(move || {
                let result = enter(&file);
                let ok = result.is_ok();
                let _ = entered_tx.send(result);
                if ok {
                    for job in queue {
                        job();
                    }
                }
            })?;
        entered
            .recv()
            .map_err(|_| "the node thread died")?
            .map_err(|e| format!("cannot enter the node's namespaces: {e}"))?;
        Ok(NodeThread { jobs })
    }

    /// Runs `f` on the thread and returns its result; a panic in `f` is resumed here.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        let job = move || {
            let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
        };
        self.jobs
            .send(Box::new(job))
            .expect("the node thread is running");
        match rx.recv().expect("the node thread answers") {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

/// Enters the network namespace `netns` and a new mount namespace (unsharing the mount namespace
/// also unshares this thread's file system attributes, which threads otherwise share). Its
/// mounts are first cut off from the host's (private), then made shared among themselves, as
/// a systemd host's are: a container that mounts a node path with `HostToContainer`
/// propagation (the node agent's view of the pods' network namespaces) needs that, and nothing
/// mounted on the node reaches the host.
fn enter(netns: &File) -> nix::Result<()> {
    use nix::mount::{mount, MsFlags};
    setns(netns, CloneFlags::CLONE_NEWNET)?;
    unshare(CloneFlags::CLONE_NEWNS)?;
    for propagation in [MsFlags::MS_PRIVATE, MsFlags::MS_SHARED] {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | propagation,
            None::<&str>,
        )?;
    }
    Ok(())
}

/// Spawns `cmd` from the calling thread (the node thread: the child lives in its namespaces)
/// with `PR_SET_PDEATHSIG` set to SIGKILL, so that the child dies with that thread if nothing
/// stops it.
pub(super) fn spawn_tied_to_thread(cmd: &mut Command) -> std::io::Result<Child> {
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
    cmd.spawn()
}
