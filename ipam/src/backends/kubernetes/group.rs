//! Group commit: the allocations and releases that reach one block while a write of it is in
//! flight are carried together by the next write, one conditional replace (or create) for all
//! of them. It is what the node agent `plexusd` runs; a store without a [`GroupCommit`] writes
//! once per request, as before.
//!
//! The protocol, per block (keyed by API server, namespace and block name):
//!
//! 1. A request puts itself on the block's queue, then waits for the block's write turn (a
//!    fair lock; nothing waits on a timer).
//! 2. Whoever gets the turn takes every queued request (its own, unless an earlier turn already
//!    answered it) and applies them in order to the block as last known: the block written by
//!    the previous turn, else read now. Each allocation gets the lowest free address of its
//!    range left after the ones before it; each release removes what its container and
//!    interface hold.
//! 3. If anything changed, one write on the `resourceVersion` the changes were based on (a
//!    create when the block is absent). Success answers every request of the turn; a 409 or
//!    404 reads the block again and applies all of them again (at most the store's
//!    `max_conflicts` times, then [`StoreError::Contention`] for all); any other failure
//!    answers all with it and forgets the block.
//! 4. An answer that needed no write (an address already held, a full block, nothing to
//!    release) is given only from a block read during this turn or confirmed by this turn's
//!    successful write: a block known from an earlier turn is read again first.
//!
//! The objects and the compare-and-swap are exactly the single writer's ([`super::place`]), so
//! the invariants of [`super`] hold unchanged, and a plain `plexus-ipam` writing the same block
//! only makes a turn read again.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use super::block::Block;
use super::client::ApiError;
use super::hints::{attachment_key, AttachmentHint, HintFile};
use super::layout::Layout;
use super::objects::Objects;
use super::place::{Placed, Writer};
use crate::error::{KubeStoreError, StoreError};
use crate::store::Owner;

/// What a request asks of a block.
#[derive(Debug, Clone)]
pub enum Change {
    /// Put the attachment in the block (its range and block size in the layout).
    Place {
        /// The attachment.
        owner: Owner,
        /// The pool's layout.
        layout: Box<Layout>,
        /// The node's hints for the pool, where the attachment's block is recorded before the
        /// write (one update per hint file and turn).
        hints: HintFile,
    },
    /// Remove what this container and interface hold in the block.
    Release {
        /// The container ID.
        container_id: String,
        /// The interface.
        ifname: String,
    },
}

/// The answer to a [`Change`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Where a [`Change::Place`] went.
    Placed(Placed),
    /// The addresses a [`Change::Release`] removed.
    Released(Vec<IpAddr>),
}

/// Counters of the group commits done, for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct GroupStats {
    /// Successful block writes.
    pub writes: AtomicU64,
    /// Changes carried by successful writes (allocations and releases written).
    pub changes: AtomicU64,
    /// Writes lost to another writer (each followed by a read and a new attempt).
    pub conflicts: AtomicU64,
}

impl GroupStats {
    /// `(writes, changes, conflicts)` now.
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.writes.load(Ordering::Relaxed),
            self.changes.load(Ordering::Relaxed),
            self.conflicts.load(Ordering::Relaxed),
        )
    }
}

/// A request waiting for its block's write.
struct Queued {
    change: Change,
    reply: oneshot::Sender<Result<Outcome, StoreError>>,
}

/// The slow path of one pool of one node: one request at a time lists the network and claims
/// a block; the requests that waited meanwhile try the node's blocks again first.
#[derive(Debug, Default)]
pub(crate) struct SlowPath {
    /// Held while a request runs the slow path.
    pub(crate) turn: tokio::sync::Mutex<()>,
    /// How many slow paths finished.
    pub(crate) done: std::sync::atomic::AtomicU64,
}

/// One block's queue, its write turn, and the block as last read or written.
#[derive(Default)]
struct Queue {
    pending: Mutex<Vec<Queued>>,
    turn: tokio::sync::Mutex<()>,
    known: Mutex<Option<Block>>,
}

/// The group committer of a process: one queue per block, and one slow-path turn per pool
/// and node.
#[derive(Default)]
pub struct GroupCommit {
    queues: Mutex<HashMap<String, Arc<Queue>>>,
    slow_paths: Mutex<HashMap<std::path::PathBuf, Arc<SlowPath>>>,
    stats: GroupStats,
    on_write: std::sync::OnceLock<Box<WriteObserver>>,
}

/// Sees the number of changes each successful block write carried.
pub type WriteObserver = dyn Fn(usize) + Send + Sync;

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl GroupCommit {
    /// A committer with no queue yet.
    pub fn new() -> GroupCommit {
        GroupCommit::default()
    }

    /// The counters.
    pub fn stats(&self) -> &GroupStats {
        &self.stats
    }

    /// Makes `observer` see every successful block write from now on (one observer; `false`
    /// when one was set already).
    pub fn observe_writes(&self, observer: Box<WriteObserver>) -> bool {
        self.on_write.set(observer).is_ok()
    }

    /// The slow-path turns of the pool whose hint file is `hints` (one pool of one node).
    pub(crate) fn slow_path(&self, hints: &std::path::Path) -> Arc<SlowPath> {
        lock(&self.slow_paths)
            .entry(hints.to_path_buf())
            .or_default()
            .clone()
    }

    /// The block as the last write of it left it, if this process wrote it (no round trip; may
    /// be stale, so only a starting point).
    pub(crate) fn known(&self, objects: &Objects, name: &str) -> Option<Block> {
        lock(&self.queue(objects, name).known).clone()
    }

    /// Applies `change` to `block` (read or absent; its name, CIDR and network identify the
    /// block) in the next write of it, and answers once that write succeeded. A caller that
    /// may be cancelled (a server's request handler) should run this in a task of its own: a
    /// turn cancelled mid-write answers its batch "abandoned" (code 11), not knowing whether
    /// the write was applied.
    pub(crate) async fn submit(
        &self,
        writer: &Writer<'_>,
        block: &Block,
        change: Change,
    ) -> Result<Outcome, StoreError> {
        let queue = self.queue(writer.objects, &block.name);
        let (reply, mut answer) = oneshot::channel();
        lock(&queue.pending).push(Queued { change, reply });
        let turn = queue.turn.lock().await;
        if let Ok(done) = answer.try_recv() {
            return done;
        }
        let batch = std::mem::take(&mut *lock(&queue.pending));
        if batch.is_empty() {
            // Taken by a turn that was cancelled before it answered.
            return Err(StoreError::Unavailable(
                "the block write carrying this request was abandoned".into(),
            ));
        }
        // A copy: readers meanwhile (a request's fast path) still find the block as last
        // written, as a starting point, instead of reading it from the API server.
        let mut known = lock(&queue.known).clone();
        self.commit(writer, &mut known, block, batch).await;
        *lock(&queue.known) = known;
        drop(turn);
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the block write carrying this request was abandoned".into(),
            ))
        })
    }

    /// The queue of block `name` of the objects' server and namespace.
    fn queue(&self, objects: &Objects, name: &str) -> Arc<Queue> {
        let key = format!(
            "{}\n{}\n{name}",
            objects.client().server(),
            objects.namespace()
        );
        lock(&self.queues).entry(key).or_default().clone()
    }

    /// One write turn: `batch` applied to the block and written at once (see the module
    /// documentation); every request of the batch answered.
    async fn commit(
        &self,
        writer: &Writer<'_>,
        known: &mut Option<Block>,
        template: &Block,
        batch: Vec<Queued>,
    ) {
        let mut conflicts = 0u32;
        let (mut block, mut fresh) = match known.take() {
            Some(block) => (block, false),
            None => match writer.reread(template).await {
                Ok(block) => (block, true),
                Err(e) => return fail(batch, e),
            },
        };
        let mut intents_recorded = false;
        loop {
            let (next, outcomes) = apply(&block, &batch, writer.objects.namespace());
            if !intents_recorded {
                // Before the write: a retry after a crash right after it finds this block.
                record_intents(&block.name, &batch, &outcomes);
                intents_recorded = true;
            }
            if next == block {
                if !fresh {
                    match writer.reread(&block).await {
                        Ok(read) => (block, fresh) = (read, true),
                        Err(e) => return fail(batch, e),
                    }
                    continue;
                }
                *known = Some(block);
                return answer(batch, outcomes);
            }
            let written = if block.version.is_none() {
                writer.objects.create_block(&next).await
            } else {
                writer.objects.replace_block(&next).await
            };
            match written {
                Ok(written) => {
                    let changed = outcomes.iter().filter(|o| changes(o)).count() as u64;
                    self.stats.writes.fetch_add(1, Ordering::Relaxed);
                    self.stats.changes.fetch_add(changed, Ordering::Relaxed);
                    if let Some(observer) = self.on_write.get() {
                        observer(changed as usize);
                    }
                    *known = Some(written);
                    return answer(batch, outcomes);
                }
                Err(ApiError::Conflict(_) | ApiError::AlreadyExists(_) | ApiError::NotFound(_)) => {
                    self.stats.conflicts.fetch_add(1, Ordering::Relaxed);
                    conflicts += 1;
                    if conflicts > writer.max_conflicts {
                        return fail(batch, StoreError::Contention(conflicts));
                    }
                    match writer.reread(&block).await {
                        Ok(read) => (block, fresh) = (read, true),
                        Err(e) => return fail(batch, e),
                    }
                }
                Err(ApiError::Failed(e)) => return fail(batch, e),
            }
        }
    }
}

/// The block with every change of `batch` applied in order, and each change's outcome.
fn apply(
    block: &Block,
    batch: &[Queued],
    namespace: &str,
) -> (Block, Vec<Result<Outcome, StoreError>>) {
    let mut next = block.clone();
    let outcomes = batch
        .iter()
        .map(|q| match &q.change {
            Change::Place { owner, layout, .. } => place(&mut next, owner, layout, namespace),
            Change::Release {
                container_id,
                ifname,
            } => {
                let ips = next.held_by(container_id, ifname);
                for ip in &ips {
                    next.allocations.remove(ip);
                }
                Ok(Outcome::Released(ips))
            }
        })
        .collect();
    (next, outcomes)
}

/// Puts `owner` into `block` as [`super::place::Op::place`] decides it.
fn place(
    block: &mut Block,
    owner: &Owner,
    layout: &Layout,
    namespace: &str,
) -> Result<Outcome, StoreError> {
    if block.version.is_some() && !layout.owns(&block.network, &block.range, block.cidr) {
        return Err(KubeStoreError::ForeignBlock {
            namespace: namespace.to_string(),
            name: block.name.clone(),
            network: block.network.clone(),
            range: block.range.clone(),
        }
        .into());
    }
    let placed = match block.find(owner) {
        Some((ip, held)) if held == owner => Placed::Held(ip),
        Some((ip, _)) => {
            block.allocations.insert(ip, owner.clone());
            Placed::Held(ip)
        }
        None => match layout.lowest_free(block.cidr, &block.taken()) {
            None => Placed::Full,
            Some(ip) => {
                block.allocations.insert(ip, owner.clone());
                let last = layout.lowest_free(block.cidr, &block.taken()).is_none();
                Placed::New { ip, last }
            }
        },
    };
    Ok(Outcome::Placed(placed))
}

/// Records in the hint files that the attachments placed are in the block `name`: one update
/// of each hint file the batch names.
fn record_intents(name: &str, batch: &[Queued], outcomes: &[Result<Outcome, StoreError>]) {
    let mut by_file: HashMap<&std::path::Path, (&HintFile, Vec<&Owner>)> = HashMap::new();
    for (q, outcome) in batch.iter().zip(outcomes) {
        if let (Change::Place { owner, hints, .. }, Ok(Outcome::Placed(placed))) =
            (&q.change, outcome)
        {
            if *placed != Placed::Full {
                let entry = by_file.entry(hints.path()).or_insert((hints, Vec::new()));
                entry.1.push(owner);
            }
        }
    }
    for (hints, owners) in by_file.into_values() {
        hints.update(|h| {
            for owner in owners {
                let hint = AttachmentHint {
                    block: name.to_string(),
                    container_id: owner.container_id.clone(),
                    ifname: owner.ifname.clone(),
                };
                h.attachments.insert(attachment_key(owner), hint);
            }
        });
    }
}

/// Whether an outcome changed the block.
fn changes(outcome: &Result<Outcome, StoreError>) -> bool {
    match outcome {
        Ok(Outcome::Placed(Placed::New { .. })) => true,
        Ok(Outcome::Released(ips)) => !ips.is_empty(),
        _ => false,
    }
}

/// Answers every request with its outcome.
fn answer(batch: Vec<Queued>, outcomes: Vec<Result<Outcome, StoreError>>) {
    for (q, outcome) in batch.into_iter().zip(outcomes) {
        let _ = q.reply.send(outcome);
    }
}

/// Answers every request with the failure of their shared write.
fn fail(batch: Vec<Queued>, e: StoreError) {
    let code = e.code();
    let msg = e.to_string();
    for q in batch {
        let _ = q.reply.send(Err(StoreError::Shared {
            code,
            msg: msg.clone(),
        }));
    }
}

/// Locks a mutex, whether or not a holder panicked.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
