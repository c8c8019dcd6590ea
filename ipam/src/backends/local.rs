//! The embedded store: one JSON state file per network in a directory of the node, changed only
//! under an exclusive `flock` and written atomically, so that it survives a crash at any point
//! and is safe for any number of concurrent plugin processes on the node.
//!
//! Layout of the directory (default `/var/lib/cni/plexus-ipam`):
//!
//! * `n-<network>.json`: the state of one `network_name` (`n-.json` for the default, empty one;
//!   bytes other than `[A-Za-z0-9.-]` are written `_xx` in hex):
//!   `{"version":1,"network":"…","allocations":{"10.0.0.1":{"cidr":"10.0.0.0/24","owner":{…}}}}`.
//!   Allocations are keyed by address, so the ranges of one network that overlap share them: an
//!   address is never handed out twice within a network, whatever `enable_overlapping_ranges`
//!   says (turning it off in Whereabouts only saves API calls; here it would save nothing).
//! * `n-<network>.lock`: the lock file. Every read-modify-write holds an exclusive `flock` on
//!   it; the lock is released by the kernel if the process dies.
//! * `n-<network>.json.tmp`: the next state while it is written. A change is written to it,
//!   `fsync`ed, renamed over the state file, and the directory is `fsync`ed; a crash leaves the
//!   old state or the new one, never a mix. A leftover temporary file is simply overwritten.
//!
//! Readers that only list ([`LocalStore::list`], [`Store::usage`]) take no lock: a rename is
//! atomic, so they see one whole state.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::error::{LocalError, StoreError};
use crate::store::{Allocation, Owner, Pool, PoolUsage, Store};

/// The version of the state file format.
const FORMAT_VERSION: u32 = 1;

/// How long a call waits for the lock before it gives up with "try again later".
const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// The embedded local store.
#[derive(Debug, Clone)]
pub struct LocalStore {
    dir: PathBuf,
    lock_timeout: Duration,
}

/// One network's state file.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    #[serde(default)]
    version: u32,
    #[serde(default)]
    network: String,
    #[serde(default)]
    allocations: BTreeMap<IpAddr, Entry>,
}

/// Who holds an address and under which range it was allocated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    cidr: IpNet,
    owner: Owner,
}

/// The held lock of one network; dropping it unlocks.
struct Locked {
    _lock: Flock<File>,
}

impl LocalStore {
    /// A store in `dir`; the directory is created on first use.
    pub fn new(dir: impl Into<PathBuf>) -> LocalStore {
        LocalStore {
            dir: dir.into(),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        }
    }

    /// The same store, waiting at most `timeout` for a network's lock.
    pub fn with_lock_timeout(mut self, timeout: Duration) -> LocalStore {
        self.lock_timeout = timeout;
        self
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The state file of `network`.
    pub fn state_path(&self, network: &str) -> PathBuf {
        self.dir.join(format!("{}.json", file_stem(network)))
    }

    /// Checks that the directory exists (creating it) and is writable: what STATUS reports.
    pub fn check_writable(&self) -> Result<(), StoreError> {
        self.ensure_dir()?;
        let probe = self
            .dir
            .join(format!(".status-probe-{}", std::process::id()));
        let result = File::create(&probe).and_then(|mut f| f.write_all(b"ok"));
        let _ = fs::remove_file(&probe);
        result.map_err(|e| {
            StoreError::Unavailable(format!("{} is not writable: {e}", self.dir.display()))
        })
    }

    /// Every allocation of every network, by network and range, without taking a lock.
    pub fn list(&self) -> Result<Vec<PoolUsage>, StoreError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(&self.dir, "reading", e)),
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("n-"))
            })
            .collect();
        paths.sort();
        let mut out = Vec::new();
        for path in paths {
            let Some(state) = read_state(&path)? else {
                continue;
            };
            let mut by_cidr: BTreeMap<IpNet, Vec<Allocation>> = BTreeMap::new();
            for (address, entry) in state.allocations {
                by_cidr.entry(entry.cidr).or_default().push(Allocation {
                    address,
                    owner: entry.owner,
                });
            }
            for (cidr, allocations) in by_cidr {
                out.push(PoolUsage {
                    network: state.network.clone(),
                    cidr: cidr.to_string(),
                    allocations,
                });
            }
        }
        Ok(out)
    }

    /// [`Store::allocate`], synchronously.
    pub fn allocate_blocking(&self, pool: &Pool, owner: &Owner) -> Result<IpAddr, StoreError> {
        self.update(&pool.network, |state| {
            let range = &pool.range;
            let cidr = range.cidr();
            // A repeated ADD of the same attachment gets its address back (with the new
            // container ID), as long as the range still allows it.
            let held: Vec<IpAddr> = in_cidr(&state.allocations, &cidr)
                .filter(|(_, e)| e.cidr == cidr && e.owner.same_attachment(owner))
                .map(|(a, _)| *a)
                .collect();
            let mut changed = false;
            let mut keep = None;
            for address in held {
                if keep.is_none() && range.is_usable(address) {
                    keep = Some(address);
                    let entry = state.allocations.get_mut(&address).expect("just found");
                    if entry.owner != *owner {
                        entry.owner = owner.clone();
                        changed = true;
                    }
                } else {
                    state.allocations.remove(&address);
                    changed = true;
                }
            }
            if let Some(address) = keep {
                return Ok((changed, address));
            }
            let taken: BTreeSet<u128> = in_cidr(&state.allocations, &cidr)
                .filter_map(|(a, _)| range.offset(*a))
                .collect();
            match range.lowest_free(&taken, None) {
                Some(offset) => {
                    let address = range.address(offset);
                    state.allocations.insert(
                        address,
                        Entry {
                            cidr,
                            owner: owner.clone(),
                        },
                    );
                    Ok((true, address))
                }
                None => Err(StoreError::Exhausted {
                    range: range_text(pool),
                    used: taken.iter().filter(|&&o| range.is_usable_offset(o)).count() as u128,
                    size: range.usable_count(),
                }),
            }
        })
    }

    /// [`Store::release`], synchronously.
    pub fn release_blocking(
        &self,
        pool: &Pool,
        container_id: &str,
        ifname: &str,
    ) -> Result<Vec<IpAddr>, StoreError> {
        if !self.state_path(&pool.network).exists() {
            return Ok(Vec::new());
        }
        self.update(&pool.network, |state| {
            let cidr = pool.range.cidr();
            let gone: Vec<IpAddr> = in_cidr(&state.allocations, &cidr)
                .filter(|(_, e)| e.owner.container_id == container_id && e.owner.ifname == ifname)
                .map(|(a, _)| *a)
                .collect();
            for a in &gone {
                state.allocations.remove(a);
            }
            Ok((!gone.is_empty(), gone))
        })
    }

    /// [`Store::release_exact`], synchronously.
    pub fn release_exact_blocking(
        &self,
        network: &str,
        allocation: &Allocation,
    ) -> Result<bool, StoreError> {
        if !self.state_path(network).exists() {
            return Ok(false);
        }
        self.update(network, |state| {
            let held = state
                .allocations
                .get(&allocation.address)
                .is_some_and(|e| e.owner == allocation.owner);
            if held {
                state.allocations.remove(&allocation.address);
            }
            Ok((held, held))
        })
    }

    /// Runs `change` on the network's state under its lock; writes the state back when
    /// `change` says it changed it.
    fn update<T>(
        &self,
        network: &str,
        change: impl FnOnce(&mut State) -> Result<(bool, T), StoreError>,
    ) -> Result<T, StoreError> {
        self.ensure_dir()?;
        let _locked = self.lock(network)?;
        let path = self.state_path(network);
        let mut state = read_state(&path)?.unwrap_or_default();
        let (changed, out) = change(&mut state)?;
        if changed {
            state.version = FORMAT_VERSION;
            state.network = network.to_string();
            self.write_state(&path, &state)?;
        }
        Ok(out)
    }

    fn ensure_dir(&self) -> Result<(), StoreError> {
        fs::create_dir_all(&self.dir).map_err(|e| io_error(&self.dir, "creating", e))
    }

    /// Takes the network's exclusive lock, waiting at most the lock timeout.
    fn lock(&self, network: &str) -> Result<Locked, StoreError> {
        let path = self.dir.join(format!("{}.lock", file_stem(network)));
        let deadline = Instant::now() + self.lock_timeout;
        let mut pause = Duration::from_millis(1);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io_error(&path, "opening", e))?;
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(Locked { _lock: lock }),
                Err((f, Errno::EWOULDBLOCK)) | Err((f, Errno::EINTR)) => {
                    if Instant::now() >= deadline {
                        return Err(StoreError::Unavailable(format!(
                            "timed out after {:?} waiting for the lock {}",
                            self.lock_timeout,
                            path.display()
                        )));
                    }
                    file = f;
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(8));
                }
                Err((_, errno)) => {
                    return Err(LocalError::Lock {
                        path: path.clone(),
                        errno,
                    }
                    .into())
                }
            }
        }
    }

    /// Writes `state` to `path` atomically: a temporary file, fsync, rename, fsync of the
    /// directory.
    fn write_state(&self, path: &Path, state: &State) -> Result<(), StoreError> {
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        let bytes = serde_json::to_vec(state).map_err(|e| LocalError::Encode {
            path: path.to_path_buf(),
            source: e,
        })?;
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| io_error(path, "writing", e))
    }
}

impl Store for LocalStore {
    async fn allocate(&self, pool: &Pool, owner: &Owner) -> Result<IpAddr, StoreError> {
        self.allocate_blocking(pool, owner)
    }

    async fn release(
        &self,
        pool: &Pool,
        container_id: &str,
        ifname: &str,
    ) -> Result<Vec<IpAddr>, StoreError> {
        self.release_blocking(pool, container_id, ifname)
    }

    async fn usage(&self) -> Result<Vec<PoolUsage>, StoreError> {
        self.list()
    }

    async fn release_exact(
        &self,
        network: &str,
        allocation: &Allocation,
    ) -> Result<bool, StoreError> {
        self.release_exact_blocking(network, allocation)
    }
}

/// The allocations whose address lies inside `cidr`.
fn in_cidr<'a>(
    allocations: &'a BTreeMap<IpAddr, Entry>,
    cidr: &IpNet,
) -> impl Iterator<Item = (&'a IpAddr, &'a Entry)> {
    allocations.range(cidr.network()..=cidr.broadcast())
}

/// How a pool is named in messages: the CIDR, with the bounds when they are narrower.
fn range_text(pool: &Pool) -> String {
    let r = &pool.range;
    let cidr = r.cidr();
    let (first, last) = (r.first_address(), r.last_address());
    let whole = r.bounds() == (1, r.offset(cidr.broadcast()).unwrap_or(0).saturating_sub(1));
    let mut s = if whole {
        cidr.to_string()
    } else {
        format!("{cidr} ({first}-{last})")
    };
    if !pool.network.is_empty() {
        s = format!("{s} of network {:?}", pool.network);
    }
    s
}

/// Reads a state file; `None` when there is none.
fn read_state(path: &Path) -> Result<Option<State>, StoreError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path, "reading", e)),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StoreError::Corrupt {
            key: path.display().to_string(),
            reason: e.to_string(),
        })
}

/// The file name of a network: `n-` and the name, bytes outside `[A-Za-z0-9.-]` as `_xx`.
fn file_stem(network: &str) -> String {
    let mut s = String::from("n-");
    for b in network.bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' {
            s.push(b as char);
        } else {
            s.push_str(&format!("_{b:02x}"));
        }
    }
    s
}

fn io_error(path: &Path, action: &'static str, e: std::io::Error) -> StoreError {
    LocalError::Io {
        action,
        path: path.to_path_buf(),
        source: e,
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::range::IpRange;

    fn pool(network: &str, range: &str, exclude: &[&str]) -> Pool {
        let ex: Vec<String> = exclude.iter().map(|s| s.to_string()).collect();
        Pool {
            network: network.into(),
            range: IpRange::parse(range, None, None, &ex, None).unwrap(),
            overlapping: true,
        }
    }

    fn owner(pod: &str, cid: &str, ifname: &str) -> Owner {
        Owner {
            pod_namespace: if pod.is_empty() { "" } else { "default" }.into(),
            pod_name: pod.into(),
            pod_uid: String::new(),
            container_id: cid.into(),
            ifname: ifname.into(),
            node: "node-a".into(),
            claim: String::new(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn allocates_lowest_free_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("state"));
        let p = pool("", "10.0.0.0/29", &["10.0.0.2"]);
        let a = store
            .allocate_blocking(&p, &owner("a", "c1", "net1"))
            .unwrap();
        let b = store
            .allocate_blocking(&p, &owner("b", "c2", "net1"))
            .unwrap();
        assert_eq!((a, b), (ip("10.0.0.1"), ip("10.0.0.3")));
        // The same pod and interface, a new sandbox: the same address, the new container ID.
        let again = store
            .allocate_blocking(&p, &owner("a", "c9", "net1"))
            .unwrap();
        assert_eq!(again, a);
        let usage = store.list().unwrap();
        assert_eq!(usage.len(), 1);
        assert_eq!(usage[0].cidr, "10.0.0.0/29");
        assert_eq!(usage[0].allocations[0].owner.container_id, "c9");
        // Another interface of the same pod: another address.
        let other = store
            .allocate_blocking(&p, &owner("a", "c9", "net2"))
            .unwrap();
        assert_eq!(other, ip("10.0.0.4"));
        // Release by container and interface; the old container ID frees nothing.
        assert!(store.release_blocking(&p, "c1", "net1").unwrap().is_empty());
        assert_eq!(store.release_blocking(&p, "c9", "net1").unwrap(), [a]);
        assert!(store.release_blocking(&p, "c9", "net1").unwrap().is_empty());
        // The lowest free is reused.
        let c = store
            .allocate_blocking(&p, &owner("c", "c3", "net1"))
            .unwrap();
        assert_eq!(c, a);
    }

    #[test]
    fn exhaustion_and_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let p = pool("", "10.0.0.0/30", &[]);
        store
            .allocate_blocking(&p, &owner("", "c1", "eth0"))
            .unwrap();
        store
            .allocate_blocking(&p, &owner("", "c2", "eth0"))
            .unwrap();
        let err = store
            .allocate_blocking(&p, &owner("", "c3", "eth0"))
            .unwrap_err();
        assert_eq!(err.code().code(), 120);
        assert!(err.to_string().contains("2 of 2"), "{err}");
        store.release_blocking(&p, "c1", "eth0").unwrap();
        assert_eq!(
            store
                .allocate_blocking(&p, &owner("", "c3", "eth0"))
                .unwrap(),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn overlapping_ranges_of_a_network_share_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let wide = pool("blue", "10.0.0.0/24", &[]);
        let narrow = pool("blue", "10.0.0.0/28", &[]);
        let other_net = pool("red", "10.0.0.0/28", &[]);
        assert_eq!(
            store
                .allocate_blocking(&wide, &owner("a", "c1", "net1"))
                .unwrap(),
            ip("10.0.0.1")
        );
        assert_eq!(
            store
                .allocate_blocking(&narrow, &owner("b", "c2", "net1"))
                .unwrap(),
            ip("10.0.0.2")
        );
        // Another network is another collision domain.
        assert_eq!(
            store
                .allocate_blocking(&other_net, &owner("b", "c2", "net1"))
                .unwrap(),
            ip("10.0.0.1")
        );
        let usage = store.list().unwrap();
        let cidrs: Vec<(String, String, usize)> = usage
            .iter()
            .map(|u| (u.network.clone(), u.cidr.clone(), u.allocations.len()))
            .collect();
        assert_eq!(
            cidrs,
            [
                ("blue".into(), "10.0.0.0/24".into(), 1),
                ("blue".into(), "10.0.0.0/28".into(), 1),
                ("red".into(), "10.0.0.0/28".into(), 1)
            ]
        );
    }

    #[test]
    fn release_exact_only_frees_the_same_holder() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let p = pool("", "10.0.0.0/24", &[]);
        let o = owner("a", "c1", "net1");
        let a = store.allocate_blocking(&p, &o).unwrap();
        let stale = Allocation {
            address: a,
            owner: owner("a", "c0", "net1"),
        };
        assert!(!store.release_exact_blocking("", &stale).unwrap());
        assert!(!store.release_exact_blocking("other", &stale).unwrap());
        let exact = Allocation {
            address: a,
            owner: o,
        };
        assert!(store.release_exact_blocking("", &exact).unwrap());
        assert!(!store.release_exact_blocking("", &exact).unwrap());
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn a_64_with_many_allocations_and_high_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let p = Pool {
            network: String::new(),
            range: IpRange::parse(
                "caa5::/64",
                Some("caa5::ffff:ffff:ffff:fff0"),
                None,
                &[],
                None,
            )
            .unwrap(),
            overlapping: true,
        };
        let mut got = Vec::new();
        for i in 0..14 {
            got.push(
                store
                    .allocate_blocking(&p, &owner("", &format!("c{i}"), "net1"))
                    .unwrap(),
            );
        }
        assert_eq!(got[0], ip("caa5::ffff:ffff:ffff:fff0"));
        assert_eq!(got[13], ip("caa5::ffff:ffff:ffff:fffd"));
        assert_eq!(
            store
                .allocate_blocking(&p, &owner("", "c14", "net1"))
                .unwrap(),
            ip("caa5::ffff:ffff:ffff:fffe")
        );
        let err = store
            .allocate_blocking(&p, &owner("", "c15", "net1"))
            .unwrap_err();
        assert_eq!(err.code().code(), 120);
    }

    #[test]
    fn corrupt_state_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        fs::write(store.state_path(""), b"{not json").unwrap();
        let err = store
            .allocate_blocking(&pool("", "10.0.0.0/24", &[]), &owner("", "c", "e"))
            .unwrap_err();
        assert_eq!(err.code().code(), 122, "{err}");
        assert!(store.list().is_err());
    }

    #[test]
    fn a_held_lock_times_out_as_try_again_later() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).with_lock_timeout(Duration::from_millis(50));
        store.ensure_dir().unwrap();
        let held = store.lock("").unwrap();
        let err = store
            .allocate_blocking(&pool("", "10.0.0.0/24", &[]), &owner("", "c", "e"))
            .unwrap_err();
        assert_eq!(err.code().code(), 11, "{err}");
        drop(held);
        store
            .allocate_blocking(&pool("", "10.0.0.0/24", &[]), &owner("", "c", "e"))
            .unwrap();
    }

    #[test]
    fn leftover_temporary_file_is_harmless() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let p = pool("", "10.0.0.0/24", &[]);
        store.allocate_blocking(&p, &owner("", "c1", "e")).unwrap();
        fs::write(dir.path().join("n-.json.tmp"), b"garbage from a crash").unwrap();
        store.allocate_blocking(&p, &owner("", "c2", "e")).unwrap();
        assert_eq!(store.list().unwrap()[0].allocations.len(), 2);
    }

    #[test]
    fn threads_never_share_an_address() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let p = pool("", "10.0.0.0/24", &[]);
        let all: Vec<IpAddr> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|t| {
                    let (store, p) = (&store, &p);
                    s.spawn(move || {
                        (0..20)
                            .map(|i| {
                                store
                                    .allocate_blocking(p, &owner("", &format!("c{t}-{i}"), "e"))
                                    .unwrap()
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let distinct: BTreeSet<IpAddr> = all.iter().copied().collect();
        assert_eq!(distinct.len(), 160);
    }

    #[test]
    fn trait_methods_and_names() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("x"));
        let p = pool("a/b c", "10.0.0.0/24", &[]);
        plexus_cni::runtime::block_on(async {
            assert!(store.usage().await?.is_empty());
            assert!(store.release(&p, "c1", "e").await?.is_empty());
            let a = store.allocate(&p, &owner("", "c1", "e")).await?;
            assert_eq!(store.usage().await?[0].network, "a/b c");
            assert_eq!(store.release(&p, "c1", "e").await?, [a]);
            Ok::<_, plexus_cni::CniError>(())
        })
        .unwrap();
        assert!(store.state_path("a/b c").ends_with("n-a_2fb_20c.json"));
        assert_ne!(file_stem("_"), file_stem(""));
        assert_ne!(file_stem("_5f"), file_stem("_"));
        store.check_writable().unwrap();
    }
}
