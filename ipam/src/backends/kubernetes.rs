//! The Kubernetes store: allocations in `IPAMBlock` objects changed only by compare-and-swap,
//! node affinity in Leases, no cluster-wide lock.
//!
//! # Objects
//!
//! * **Blocks.** Each range is cut into aligned blocks of a fixed size (default /26 for IPv4,
//!   /122 for IPv6, [`KubeOptions::block_prefix_v4`] / [`KubeOptions::block_prefix_v6`]),
//!   defined by absolute address. Each block that was ever used is one namespaced
//!   `IPAMBlock` (`ipam.plexus.cni.dev/v1alpha1`, [`plexus_crds::IpamBlock`]) in the
//!   configured namespace (default `kube-system`), named `<network>-<block CIDR>` (`:` and `/`
//!   written `-`; a network name that is not a clean DNS label is replaced by `x<hash>`),
//!   labelled `ipam.plexus.cni.dev/network=<network>`, holding `spec.network`, `spec.cidr`
//!   and `spec.allocations`: address → `{podNamespace, podName, podUID, containerID, ifname,
//!   node}`. Ranges of one network that overlap map an address to the same block, so an
//!   address is unique across them for free. A range with `enable_overlapping_ranges: false`
//!   puts its range CIDR in the name (`<network>-<range>-<block>`) and in `spec.range`: its
//!   blocks are its own.
//! * **Leases.** A node owns a block for a while through a `coordination.k8s.io/v1` Lease
//!   `ipam-<block name>` (`holderIdentity` = node name, `leaseDurationSeconds` default 300,
//!   `renewTime`, the block CIDR in the annotation `ipam.plexus.cni.dev/cidr`, the labels
//!   `app.kubernetes.io/managed-by=plexus`, network, `ipam.plexus.cni.dev/block` and
//!   `ipam.plexus.cni.dev/node`). It is claimed by creating it (create-if-absent), renewed by a
//!   replace on its `resourceVersion` once a third of its duration has passed, and taken over
//!   from another node only once expired **and** only when its block holds no allocation. A
//!   Lease of that name that plexus-ipam did not write (another manager, labels or CIDR that
//!   do not match, a holder that is not a node name) is an error, never replaced; no Lease is
//!   ever deleted (`kubernetes/leases.rs`).
//! * **Hints.** Each node keeps a small local file per range ([`hints`]; under
//!   `/var/lib/cni/plexus-ipam/k8s-affinity`, or `$PLEXUS_IPAM_AFFINITY_DIR`) naming the blocks
//!   it holds (with the Lease's `resourceVersion` and renewal time, and whether the block was
//!   full) and the block each attachment was put in. Hints only save round trips; losing or
//!   corrupting them costs a LIST, never an address.
//!
//! # ADD
//!
//! 1. If the hints name a block for this attachment (pod namespace/name and interface): GET it;
//!    an address held there is returned (a repeated ADD: 1 round trip; the record is rewritten
//!    when the container ID or pod UID changed, as Whereabouts does for a re-created
//!    StatefulSet pod).
//! 2. **The common case:** GET the lowest of the node's blocks not known to be full, take the
//!    lowest free usable address of the range in it ([`IpRange::lowest_free`] within the
//!    block's bounds), and replace the block with it added, on the `resourceVersion` read:
//!    **2 round trips**. A 409 Conflict reads the block again and retries; a full block is
//!    remembered as full and the next one is tried.
//! 3. Otherwise (no block of the node has room, or the node has none yet): LIST the network's
//!    blocks and Leases (by label), then, in order: the attachment's address anywhere in the
//!    pool (a repeated ADD after a move, or lost hints); a free address in a block whose Lease
//!    the node holds (the hints are rebuilt from the Leases); a new block: the lowest block of
//!    the range with a free address whose Lease is absent (created) or expired on an empty
//!    block (replaced on its `resourceVersion`), then the address written into it (create if
//!    absent, else replace); else a free address **borrowed** from any block of the range
//!    (still a compare-and-swap write on that block); else the range is exhausted
//!    ([`StoreError::Exhausted`], CNI code 120). A first ADD on a node takes 4 round trips
//!    (LIST, LIST, create Lease, create block), and one more (a LIST of Whereabouts's
//!    `IPPool`s, [`guard`]) when the range has no block at all yet.
//!
//! **Claim-bound ADD** (an owner with [`Owner::claim`], see [`claims`]): steps 1 and 2 are
//! skipped, since the claim's address may be in any block, made on any node; the slow path's
//! search for the attachment matches by claim ([`Owner::same_attachment`]) and rewrites the
//! record to name the new pod, container and node. One LIST more than a common ADD.
//!
//! Writes lost to concurrent writers are retried at most [`KubeOptions::max_conflicts`] times
//! in all, then [`StoreError::Contention`] (code 11, try again later). A node's Lease is
//! renewed (one more round trip) when an ADD finds it past a third of its duration; an expired
//! one is renewed before the block is used, and dropped from the hints if another node holds
//! it now.
//!
//! Round trips, as counted in the API server's audit log (tests/tests/ipam_kube.rs): common ADD
//! 2 (GET + update of one block); repeated ADD 1 (GET); DEL 2 (GET + update); first ADD of a
//! node in a range 4 (LIST blocks, LIST Leases, create Lease, create block), 5 for the range's
//! very first block (the guard's LIST of `IPPool`s). The LIST returns
//! every block of the network, so it is kept off the common path: a node lists about once per
//! block it fills.
//!
//! # DEL
//!
//! The block the hints name for the container and interface: GET + replace without the
//! address. Without a hint (another node's allocation, lost hints): LIST the network's blocks
//! and replace each that holds the container and interface. Nothing held is success. An address
//! bound to an `IPAMClaim` is never released by DEL (only garbage collection releases it, once
//! the claim is gone).
//!
//! # Invariants
//!
//! * **I1 (one home per address).** An address `a` of network `n` (with range key `k`, empty
//!   when overlapping ranges share) is only ever recorded in the block object whose name is a
//!   function of `(n, k, block(a))`, where `block(a)` is the aligned block of the network's
//!   block size containing `a`. Every writer computes the same name for the same address. (A
//!   block of another size overlapping the range is refused when seen: every range of a
//!   network must use one block size.)
//! * **I2 (atomic writes only).** A block is changed only by a create that fails if the object
//!   exists (409 AlreadyExists) or by a replace carrying the `resourceVersion` it read, which
//!   the API server applies only if the object is still at that version (409 Conflict
//!   otherwise; etcd compares the object's revision in the same transaction as the write).
//!   The plugin never deletes a block; garbage collection deletes only an **empty** block,
//!   with a precondition on the `resourceVersion` at which it read it empty ([`reclaim`]).
//!   An absent block and an empty one mean the same (no address of it is held), and a writer
//!   that read the deleted version gets 404 or 409 and reads again, so the proof below holds
//!   with "absent" and "empty" as one state.
//! * **I3 (add only the absent).** A write adds an address to a block only when the version it
//!   read does not hold it; a release removes only addresses it read as held by the releaser
//!   (DEL: by container ID and interface; garbage collection: by the exact allocation).
//! * **I4 (affinity is advice).** Leases, their expiry, clocks and hints decide only which
//!   block is tried first. Nothing in them is read when deciding whether an address is free.
//!
//! # Why an address is never handed out twice
//!
//! Fix an address `a`. By I1 every write that could add `a` goes to one object `B`. The API
//! server orders the successful writes to `B`: a create succeeds only when `B` does not exist,
//! and a replace based on version `v` succeeds only when `B` is still at `v`, producing the
//! next version. So every successful write is based on exactly the state the previous
//! successful write left (or on "absent" for the create), and the versions of `B` form one
//! chain. By I3 a write that adds `a` is based on a version in which `a` is free. Two
//! successful writes that both add `a` would therefore need, between them in the chain, a
//! successful write that removed `a`, that is a release of the first holder. So at every
//! version of `B`, `a` has at most one holder, and it gets a new one only after the old one
//! was released. This holds whatever the timing: processes may be killed at any point (one
//! API request is applied whole or not at all), clocks may disagree, Leases may expire or be
//! taken over while a node still uses a block, and two nodes may write the same block (a
//! borrowed address, a stale hint): the loser of a race gets 409 and reads again. By I4 none
//! of that reaches the decision. Overlapping ranges of a network share `B` by I1, so the
//! argument covers them too.
//!
//! Garbage collection releases with [`Store::release_exact`]: the address is removed only from
//! a version in which it is still held by exactly the same owner (address, pod, UID, container,
//! interface, node), so a release decided on an old snapshot cannot free the address of a newer
//! holder.
//!
//! # What the operator must keep constant
//!
//! I1 needs every node to cut a network into blocks the same way and to use the same
//! namespace. The block sizes are configuration keys (`block_size_v4`, `block_size_v6`, or
//! Whereabouts's `node_slice_size`; defaults [`DEFAULT_BLOCK_PREFIX_V4`] and
//! [`DEFAULT_BLOCK_PREFIX_V6`]), so every configuration of a network must give the same: a
//! slow path that sees a block of another size in the range refuses to allocate (a node's
//! hints are kept per block size, so a node whose size changed takes the slow path). Changing the
//! size of a network's blocks needs the network empty (its empty blocks reclaimed, see
//! below). An `IPAMBlock` deleted by hand while it holds allocations loses them: their
//! addresses can then be handed out again while their pods still use them.
//!
//! # Group commit
//!
//! A store made [`KubeStore::with_group`] (the node agent `plexusd`'s) sends its block writes
//! through a [`group::GroupCommit`]: the ADDs and DELs that reach one block while a write of it
//! is in flight are applied together and carried by the next write, one compare-and-swap as
//! above. Every write is still a create or a replace on the version its changes were based on,
//! so I1–I4 and the argument above hold unchanged, with plain processes writing alongside.
//!
//! # Crashes
//!
//! A process killed before its write leaves nothing; one killed after it leaves an allocation
//! that names the attachment. The runtime's next ADD of the attachment finds it (the hint is
//! written *before* the write), its DEL releases it, and if the pod is gone garbage collection
//! ([`crate::gc`]) does. A block Lease claimed by a dead node expires; its block is taken over
//! once it holds nothing, and until then other nodes borrow its free addresses.
//!
//! # Differences from Whereabouts
//!
//! No cluster-wide Lease and no `IPPool`/`OverlappingRangeIPReservation` objects; offsets are
//! 128-bit (the whole of an IPv6 /64 is usable). A repeated ADD is recognised in the node's own
//! blocks, or, when the slow path runs, anywhere in the pool; the common path does not look in
//! other nodes' blocks, so a pod re-created on another node while its old allocation still
//! exists gets a new address, and the old one goes with its DEL or to garbage collection (its
//! pod UID changed).

mod allocate;
mod block;
pub mod claims;
pub mod client;
pub mod group;
pub mod guard;
pub mod hints;
pub mod layout;
mod leases;
mod merge;
mod objects;
mod place;
pub mod pods;
pub mod reclaim;
mod release;
pub mod whereabouts;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

pub use self::client::{KubeClient, DEFAULT_TIMEOUT};
use self::group::GroupCommit;
use self::hints::HintFile;
use self::layout::Layout;
pub use self::merge::{HeldByOther, Merged};
pub use self::objects::unexpected;
use self::objects::Objects;
use self::place::{Op, Writer};
pub use self::pods::KubePods;
pub use self::reclaim::{BlockInfo, ReclaimOptions, ReclaimReport, DEFAULT_BLOCK_GRACE};
#[cfg(doc)]
use crate::range::IpRange;
use crate::store::{Allocation, Owner, Pool, PoolUsage, Store, StoreError};

/// The namespace of the objects unless configured otherwise.
pub const DEFAULT_NAMESPACE: &str = "kube-system";
/// The IPv4 block prefix length unless configured otherwise (64 addresses).
pub const DEFAULT_BLOCK_PREFIX_V4: u8 = 26;
/// The IPv6 block prefix length unless configured otherwise (64 addresses).
pub const DEFAULT_BLOCK_PREFIX_V6: u8 = 122;
/// How long a node's claim on a block lasts without renewal, unless configured otherwise.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(300);
/// Where nodes keep their hints unless configured otherwise.
pub const DEFAULT_HINT_DIR: &str = "/var/lib/cni/plexus-ipam/k8s-affinity";
/// The environment variable that overrides [`DEFAULT_HINT_DIR`].
pub const HINT_DIR_ENV: &str = "PLEXUS_IPAM_AFFINITY_DIR";
/// Writes one ADD or DEL may lose to concurrent writers before giving up.
pub const DEFAULT_MAX_CONFLICTS: u32 = 100;

/// How the store behaves on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeOptions {
    /// This node's name: the Lease holder identity and the key of its hints.
    pub node: String,
    /// The IPv4 block prefix length. Every range of a network must use the same.
    pub block_prefix_v4: u8,
    /// The IPv6 block prefix length. Every range of a network must use the same.
    pub block_prefix_v6: u8,
    /// How long a claim on a block lasts without renewal.
    pub lease_duration: Duration,
    /// Where the node's hints live.
    pub hint_dir: PathBuf,
    /// Writes one ADD or DEL may lose before giving up.
    pub max_conflicts: u32,
    /// Whether the first block of a range is created only after checking that no Whereabouts
    /// `IPPool` holds unimported allocations in the range ([`guard`]).
    pub whereabouts_guard: bool,
}

impl KubeOptions {
    /// The defaults for `node`; the hint directory is `$PLEXUS_IPAM_AFFINITY_DIR` when set.
    pub fn new(node: &str) -> KubeOptions {
        let hint_dir = std::env::var_os(HINT_DIR_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_HINT_DIR));
        KubeOptions {
            node: node.to_string(),
            block_prefix_v4: DEFAULT_BLOCK_PREFIX_V4,
            block_prefix_v6: DEFAULT_BLOCK_PREFIX_V6,
            lease_duration: DEFAULT_LEASE_DURATION,
            hint_dir,
            max_conflicts: DEFAULT_MAX_CONFLICTS,
            whereabouts_guard: true,
        }
    }

    /// How long a claim on a block lasts without renewal, in seconds.
    pub fn lease_secs(&self) -> i64 {
        self.lease_duration.as_secs() as i64
    }
}

/// A [`Store`] on the Kubernetes API.
#[derive(Debug)]
pub struct KubeStore {
    objects: Objects,
    options: KubeOptions,
    /// The blocks each `(network, address)` was last listed in, for [`Store::release_exact`].
    located: Mutex<HashMap<(String, IpAddr), Vec<String>>>,
    /// The group committer ADD and DEL write through, if any ([`group`]).
    group: Option<Arc<GroupCommit>>,
}

impl KubeStore {
    /// A store of the objects in `namespace` (empty: [`DEFAULT_NAMESPACE`]) through `client`.
    pub fn new(client: KubeClient, namespace: &str, options: KubeOptions) -> KubeStore {
        let namespace = if namespace.is_empty() {
            DEFAULT_NAMESPACE
        } else {
            namespace
        };
        KubeStore {
            objects: Objects::new(client, namespace),
            options,
            located: Mutex::new(HashMap::new()),
            group: None,
        }
    }

    /// This store with its ADD and DEL block writes going through `group` (the node agent's
    /// group commit), shared with the other stores of the process.
    pub fn with_group(mut self, group: Arc<GroupCommit>) -> KubeStore {
        self.group = Some(group);
        self
    }

    /// A store through the kubeconfig at `kubeconfig`, each call bounded by `timeout`.
    pub async fn from_kubeconfig(
        kubeconfig: &Path,
        namespace: &str,
        timeout: Duration,
        options: KubeOptions,
    ) -> Result<KubeStore, StoreError> {
        let client = KubeClient::from_kubeconfig(kubeconfig, timeout).await?;
        Ok(KubeStore::new(client, namespace, options))
    }

    /// The store the plugin uses: the kubeconfig at `kubeconfig`, objects in `namespace`,
    /// [`KubeOptions::new`]`(node)` (hints under `$PLEXUS_IPAM_AFFINITY_DIR` or
    /// [`DEFAULT_HINT_DIR`]), each call bounded by [`DEFAULT_TIMEOUT`].
    pub async fn open(
        kubeconfig: &Path,
        namespace: &str,
        node: &str,
    ) -> Result<KubeStore, StoreError> {
        KubeStore::open_with(kubeconfig, namespace, KubeOptions::new(node)).await
    }

    /// As [`KubeStore::open`], with `options` (the configured block sizes).
    pub async fn open_with(
        kubeconfig: &Path,
        namespace: &str,
        options: KubeOptions,
    ) -> Result<KubeStore, StoreError> {
        KubeStore::from_kubeconfig(kubeconfig, namespace, DEFAULT_TIMEOUT, options).await
    }

    /// Whether the store can be used now (the plugin's STATUS): one LIST of at most one block,
    /// which needs the API server, the CRD and the RBAC grant.
    pub async fn check(&self) -> Result<(), StoreError> {
        self.objects.probe().await
    }

    /// The namespace of the objects.
    pub fn namespace(&self) -> &str {
        self.objects.namespace()
    }

    /// The client.
    pub fn client(&self) -> &KubeClient {
        self.objects.client()
    }

    /// The options.
    pub fn options(&self) -> &KubeOptions {
        &self.options
    }

    /// The node's hint file for `pool`.
    pub fn hint_file(&self, pool: &Pool) -> Result<PathBuf, StoreError> {
        Ok(self.op(pool)?.hints.path().to_path_buf())
    }

    /// The Lease duration in seconds.
    fn writer(&self) -> Writer<'_> {
        Writer {
            objects: &self.objects,
            conflicts: 0,
            max_conflicts: self.options.max_conflicts,
        }
    }

    /// An operation on `pool`.
    fn op(&self, pool: &Pool) -> Result<Op<'_>, StoreError> {
        let layout = Layout::new(
            pool,
            self.options.block_prefix_v4,
            self.options.block_prefix_v6,
        )?;
        let hints = HintFile::new(
            &self.options.hint_dir,
            self.client().server(),
            self.namespace(),
            &self.options.node,
            &layout.hint_key(),
        );
        Ok(Op {
            writer: self.writer(),
            layout,
            hints,
            group: self.group.as_deref(),
        })
    }
}

impl Store for KubeStore {
    async fn allocate(&self, pool: &Pool, owner: &Owner) -> Result<IpAddr, StoreError> {
        if self.options.node.is_empty() {
            return Err(crate::error::KubeStoreError::NoNodeName.into());
        }
        let mut op = self.op(pool)?;
        allocate::allocate(&self.options, &mut op, owner).await
    }

    async fn release(
        &self,
        pool: &Pool,
        container_id: &str,
        ifname: &str,
    ) -> Result<Vec<IpAddr>, StoreError> {
        let mut op = self.op(pool)?;
        release::release(&mut op, container_id, ifname).await
    }

    async fn usage(&self) -> Result<Vec<PoolUsage>, StoreError> {
        let blocks = self.objects.list_blocks(None).await?;
        let mut located = self.located.lock().unwrap_or_else(PoisonError::into_inner);
        located.clear();
        for block in &blocks {
            for ip in block.allocations.keys() {
                located
                    .entry((block.network.clone(), *ip))
                    .or_default()
                    .push(block.name.clone());
            }
        }
        drop(located);
        Ok(release::usage_of(blocks))
    }

    async fn release_exact(
        &self,
        network: &str,
        allocation: &Allocation,
    ) -> Result<bool, StoreError> {
        let names = self
            .located
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(network.to_string(), allocation.address))
            .cloned()
            .unwrap_or_default();
        release::release_exact(&mut self.writer(), network, allocation, names).await
    }
}
