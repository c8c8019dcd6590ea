//! Network namespace handling without shelling out to `ip`.
//!
//! `setns(2)` changes the namespace of the calling *thread* only, so this
//! module never calls it on a caller's (possibly pooled) thread: [`run_in`]
//! spawns a dedicated `std::thread`, enters the namespace there, runs the work
//! and lets the thread exit. Named namespaces are created like `ip netns add`
//! does: a file under `/run/netns` with the namespace bind-mounted onto it.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::statfs::{statfs, NSFS_MAGIC};

use crate::netlink::connection::set_up_here;
pub use crate::netlink::error::NetnsError;

/// Directory holding named network namespaces (as used by iproute2).
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// The network namespace of the calling thread (not of the main thread).
pub const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// Runs `f` on a dedicated thread that has entered the network namespace at
/// `netns` and returns its result. A panic in `f` is resumed in the caller.
pub fn run_in<T: Send + 'static>(
    netns: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetnsError> {
    // Opened here: `/proc/thread-self/...` paths then refer to the caller.
    let file = File::open(netns).map_err(|source| NetnsError::Open {
        path: netns.to_path_buf(),
        source,
    })?;
    let path = netns.to_path_buf();
    on_new_thread("plexus-netns", move || {
        setns(&file, CloneFlags::CLONE_NEWNET)
            .map_err(|source| NetnsError::Setns { path, source })?;
        drop(file);
        Ok(f())
    })
    .map_err(NetnsError::Spawn)?
}

/// Runs `f` on a new thread called `name` and returns its result; an error only if the thread
/// cannot be started. A panic in `f` is resumed in the caller.
pub(crate) fn on_new_thread<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    let handle = std::thread::Builder::new().name(name.into()).spawn(f)?;
    match handle.join() {
        Ok(result) => Ok(result),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Creates a named network namespace at `/run/netns/<name>` (like
/// `ip netns add`), brings `lo` up in it and returns its path.
pub fn create_named(name: &str) -> Result<PathBuf, NetnsError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(NetnsError::InvalidName(name.to_string()));
    }
    prepare_run_dir()?;
    let path = Path::new(NETNS_RUN_DIR).join(name);
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o000)
        .open(&path)
        .map_err(|source| match source.kind() {
            io::ErrorKind::AlreadyExists => NetnsError::Exists(path.clone()),
            _ => NetnsError::Create {
                path: path.clone(),
                source,
            },
        })?;
    let target = path.clone();
    let made = on_new_thread("plexus-netns-new", move || -> Result<(), NetnsError> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(NetnsError::Unshare)?;
        mount(
            Some(THREAD_NETNS),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|source| NetnsError::Mount {
            action: "bind-mount the namespace on",
            path: target.clone(),
            source,
        })?;
        set_up_here("lo").map_err(|source| NetnsError::Loopback {
            path: target,
            source: Box::new(source),
        })
    })
    .map_err(NetnsError::Spawn)
    .and_then(|made| made);
    if let Err(e) = made {
        let _ = delete(&path);
        return Err(e);
    }
    Ok(path)
}

/// Deletes a namespace created by [`create_named`]: detaches the bind mount
/// and removes the file. A missing path is not an error.
pub fn delete(path: &Path) -> Result<(), NetnsError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (a file left over by a failed create).
        Ok(()) | Err(Errno::EINVAL) => {}
        Err(Errno::ENOENT) => return Ok(()),
        Err(source) => {
            return Err(NetnsError::Mount {
                action: "unmount",
                path: path.to_path_buf(),
                source,
            })
        }
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(NetnsError::Remove {
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// True if `path` exists and is a namespace file (lives on nsfs), such as a
/// mounted `/run/netns/<name>` or `/proc/<pid>/ns/net`.
pub fn exists(path: &Path) -> bool {
    statfs(path).is_ok_and(|fs| fs.filesystem_type() == NSFS_MAGIC)
}

/// Makes sure `/run/netns` exists and is a shared mount point, as iproute2
/// does: make it shared, and if that fails with `EINVAL` (not a mount point),
/// bind-mount it onto itself first. Serialised in-process by a mutex and
/// across processes by `flock` on the directory.
fn prepare_run_dir() -> Result<(), NetnsError> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Path::new(NETNS_RUN_DIR);
    let failed = |source: io::Error| NetnsError::RunDir {
        path: dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(failed)?;
    let handle = File::open(dir).map_err(failed)?;
    let _flock =
        Flock::lock(handle, FlockArg::LockExclusive).map_err(|(_, errno)| failed(errno.into()))?;
    let make_shared = || {
        mount(
            Some("none"),
            dir,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match make_shared() {
        Ok(()) => return Ok(()),
        Err(Errno::EINVAL) => {}
        Err(e) => return Err(failed(e.into())),
    }
    mount(
        Some(dir),
        dir,
        Some("none"),
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| failed(e.into()))?;
    make_shared().map_err(|e| failed(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_in_missing_namespace_is_an_error() {
        let err = run_in(Path::new("/nonexistent/netns"), || ()).unwrap_err();
        assert!(matches!(err, NetnsError::Open { .. }), "{err}");
    }

    #[test]
    fn invalid_names_are_rejected() {
        for name in ["", ".", "..", "a/b"] {
            assert!(matches!(
                create_named(name),
                Err(NetnsError::InvalidName(_))
            ));
        }
    }

    #[test]
    fn exists_is_false_for_regular_files_and_missing_paths() {
        assert!(!exists(Path::new("/nonexistent/netns")));
        assert!(!exists(Path::new("/proc/self/status")));
        assert!(exists(Path::new("/proc/self/ns/net")));
    }

    #[test]
    fn deleting_a_missing_namespace_is_ok() {
        delete(Path::new("/run/netns/plexus-never-created")).unwrap();
    }
}
