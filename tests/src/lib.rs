//! Test kit for Plexus integration tests on real network namespaces.
//!
//! Root tests start with `if !plexus_tests::root_or_skip() { return; }`.
//! [`TestHost`] moves the test thread into a throwaway "node" namespace so
//! tests can run in parallel without touching the real host, and [`TestPod`]
//! is a named namespace standing in for a pod sandbox.
//!
//! [`cluster::LocalCluster`] is a throwaway Kubernetes API server (etcd plus the cached
//! kube-apiserver) set up with Plexus's CRDs, RBAC and service account.
//!
//! [`etcd::LocalEtcd`] is a throwaway single-member etcd, for the etcd IPAM backend.
//!
//! [`node::KubeNode`] is a real node: a local cluster, containerd and a kubelet, with Plexus
//! installed by `plexusctl install` in a K3s layout, driven with `kubectl`.
//!
//! [`podresources::PodResourcesServer`] stands in for the kubelet's PodResources API.

#![warn(missing_docs)]

use std::fs::File;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{setns, CloneFlags};
use plexus::links::{self, AddressInfo, LinkError, LinkInfo, RouteInfo};
use plexus::netns::{self, NetnsError};

pub mod agent;
pub mod cluster;
pub mod cri;
pub mod etcd;
pub mod ipam;
pub mod node;
pub mod podman;
pub mod podresources;
mod process;
pub mod sriov;

/// A single-threaded Tokio runtime with I/O and timers, for tests that drive async clients.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime")
}

/// True if running as root. Otherwise prints "skipped: needs root" and
/// returns false, unless the `CI` environment variable is set: root tests
/// must never be skipped silently in CI, so this panics there.
pub fn root_or_skip() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("this test needs root, and root tests must not be skipped in CI");
    }
    eprintln!("skipped: needs root");
    false
}

/// A name unique within this machine's current processes: `prefix` followed
/// by the process id (5 base-36 digits) and a per-process counter. It is at
/// most 15 bytes, so it is also a valid interface name; a longer ASCII
/// `prefix` is truncated.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let suffix = format!(
        "{}{}",
        base36(std::process::id(), 5),
        base36(COUNTER.fetch_add(1, Ordering::Relaxed), 1)
    );
    let mut keep = 15usize.saturating_sub(suffix.len()).min(prefix.len());
    while !prefix.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}{suffix}", &prefix[..keep])
}

fn base36(mut n: u32, width: usize) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    while n > 0 || out.len() < width {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII digits")
}

/// Creates a named namespace under a fresh [`unique_name`], retrying if a
/// leftover of an earlier run holds the name.
fn create_unique_netns(prefix: &str) -> (String, PathBuf) {
    for _ in 0..16 {
        let name = unique_name(prefix);
        match netns::create_named(&name) {
            Ok(path) => return (name, path),
            Err(NetnsError::Exists(_)) => continue,
            Err(e) => panic!("cannot create network namespace {name}: {e}"),
        }
    }
    panic!("cannot find a free network namespace name with prefix {prefix}");
}

/// Detaches every mount below `dir` (snapshots, sandbox `/dev/shm`, the kubelet's bind
/// mounts), the deepest first; returns those still there. Works in the mount namespace of the
/// calling thread.
pub fn unmount_under(dir: &Path) -> Vec<PathBuf> {
    let mounts_under = || -> Vec<PathBuf> {
        let mountinfo = std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap_or_default();
        let mut points: Vec<PathBuf> = mountinfo
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .map(|p| PathBuf::from(p.replace("\\040", " ")))
            .filter(|p| p.starts_with(dir))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        points
    };
    for point in mounts_under() {
        let _ = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH);
    }
    mounts_under()
}

/// Stops `child`: SIGTERM, then SIGKILL if it has not exited within `grace`.
pub fn terminate(child: &mut std::process::Child, grace: std::time::Duration) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = std::time::Instant::now() + grace;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Directory of the Plexus binaries: `PLEXUS_BIN_DIR` if set, else the cargo
/// profile directory of the running test (`target/<triple>/debug/deps/x` →
/// `target/<triple>/debug`).
pub fn plexus_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PLEXUS_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("path of the test executable");
    let dir = exe.parent().expect("test executable has a directory");
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir.parent().expect("deps has a parent").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Directory of the reference CNI plugins: `CNI_PLUGIN_DIR` if set, else
/// `/usr/lib/cni`.
pub fn cni_plugin_dir() -> PathBuf {
    std::env::var_os("CNI_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/cni"))
}

/// A throwaway "node" network namespace that the calling thread has entered.
///
/// Everything the thread does afterwards (netlink helpers with
/// `netns: None`, spawned plugin processes, which inherit the thread's
/// namespace) happens inside it instead of on the real host. Dropping it
/// moves the thread back to its original namespace and deletes this one.
///
/// It must be dropped on the thread that entered it; it is neither `Send`
/// nor `Sync`, so the compiler enforces that.
pub struct TestHost {
    name: String,
    path: PathBuf,
    original: File,
    _not_send: PhantomData<*const ()>,
}

impl TestHost {
    /// Creates a uniquely named namespace (prefix `pxh-`) and moves the
    /// calling thread into it. Panics on failure (it is test code).
    pub fn enter() -> TestHost {
        let original = File::open(netns::THREAD_NETNS).expect("open the thread's netns");
        let (name, path) = create_unique_netns("pxh-");
        let target = File::open(&path).expect("open the new netns");
        if let Err(e) = setns(&target, CloneFlags::CLONE_NEWNET) {
            let _ = netns::delete(&path);
            panic!("cannot enter {}: {e}", path.display());
        }
        TestHost {
            name,
            path,
            original,
            _not_send: PhantomData,
        }
    }

    /// Name of the namespace under `/run/netns`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Path of the namespace file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if let Err(e) = setns(&self.original, CloneFlags::CLONE_NEWNET) {
            eprintln!("TestHost: cannot return to the original netns: {e}");
        }
        if let Err(e) = netns::delete(&self.path) {
            eprintln!("TestHost: cannot delete {}: {e}", self.path.display());
        }
    }
}

/// A named network namespace standing in for a pod sandbox; deleted on drop.
pub struct TestPod {
    /// Name under `/run/netns`.
    pub name: String,
    /// Path of the namespace file (`/run/netns/<name>`).
    pub path: PathBuf,
}

impl TestPod {
    /// Creates a namespace named [`unique_name`]`(prefix)` with `lo` up.
    /// Panics on failure (it is test code).
    pub fn new(prefix: &str) -> TestPod {
        let (name, path) = create_unique_netns(prefix);
        TestPod { name, path }
    }

    /// Links inside the pod.
    pub fn links(&self) -> Result<Vec<LinkInfo>, LinkError> {
        links::links(Some(&self.path))
    }

    /// The link called `name` inside the pod, if any.
    pub fn link(&self, name: &str) -> Result<Option<LinkInfo>, LinkError> {
        links::link(Some(&self.path), name)
    }

    /// Addresses inside the pod.
    pub fn addresses(&self) -> Result<Vec<AddressInfo>, LinkError> {
        links::addresses(Some(&self.path))
    }

    /// Main-table routes inside the pod.
    pub fn routes(&self) -> Result<Vec<RouteInfo>, LinkError> {
        links::routes(Some(&self.path))
    }
}

impl Drop for TestPod {
    fn drop(&mut self) {
        let _ = netns::delete(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_fit_an_interface_name_and_differ() {
        let a = unique_name("veth-with-a-long-prefix");
        let b = unique_name("veth-with-a-long-prefix");
        assert!(a.len() <= 15 && b.len() <= 15, "{a} {b}");
        assert_ne!(a, b);
        assert!(unique_name("pxh-").starts_with("pxh-"));
    }

    #[test]
    fn base36_pads_to_width() {
        assert_eq!(base36(0, 5), "00000");
        assert_eq!(base36(35, 1), "z");
        assert_eq!(base36(36, 1), "10");
        assert_eq!(base36(4_194_304, 5), "2hwcg");
    }

    #[test]
    fn bin_dir_is_the_profile_dir() {
        if std::env::var_os("PLEXUS_BIN_DIR").is_none() {
            let dir = plexus_bin_dir();
            assert!(!dir.ends_with("deps"), "{dir:?}");
            assert!(dir.parent().is_some_and(|p| p.exists()), "{dir:?}");
        }
    }
}
