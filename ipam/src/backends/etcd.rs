//! The etcd store: one key per allocated address, taken with a transaction that compares its
//! create revision with 0 (create-if-absent), so two allocators can never both take an address,
//! whatever their timing; no locks, no leases. The key layout is in [`keys`].
//!
//! * ADD is two round trips when nothing races: one read-only transaction fetches the
//!   attachment's current address (a repeated ADD returns it), the taken keys of the first
//!   [`search::PROBE`] addresses of the range, and how many keys are taken in intervals of
//!   doubling size; then one transaction creates the lowest free address's key with its two
//!   index keys, provided the address is still free and the attachment still holds nothing in
//!   the pool. When the first addresses are all taken, the counts lead to the first gap
//!   (one more round trip per factor of 64 it is narrowed by, see [`search`]), so a densely
//!   allocated /64 is not read whole on every ADD.
//! * A lost race brings, in the same answer, the taken keys from the lowest free address on;
//!   the next candidate is a random one of the next few free addresses (the other losers would
//!   all try the lowest), at most [`MAX_ATTEMPTS`] transactions in all
//!   ([`StoreError::Contention`]).
//! * DEL reads the container index, then deletes each address with its index keys in one
//!   transaction that compares the index keys' mod revisions, so nothing changed in between
//!   (a repeated ADD of the pod under a new container moves the index) is deleted.
//!   [`Store::release_exact`] compares the allocation key's mod revision after reading its
//!   owner.
//! * Every request has a deadline; a missed deadline or a transport failure is
//!   [`StoreError::Unavailable`] (CNI code 11), naming the endpoints.

mod connect;
pub mod keys;
pub mod search;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, GetOptions, KeyValue, KvClient, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use serde::{Deserialize, Serialize};

use self::keys::PoolKeys;
use self::search::{Next, Scan};
use crate::error::{EtcdError, StoreError};
use crate::range::IpRange;
use crate::store::{Allocation, Owner, Pool, PoolUsage, Store};

/// The key prefix Plexus uses unless configured otherwise.
pub const DEFAULT_PREFIX: &str = crate::config::DEFAULT_ETCD_PREFIX;
/// Keys read per range request, unless [`EtcdStore::with_page_size`] says otherwise.
pub const PAGE: i64 = 4096;
/// Transactions one ADD or DEL may try before it gives up on contention.
pub const MAX_ATTEMPTS: u32 = 100;

/// What an allocation key holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    /// The holder.
    #[serde(flatten)]
    owner: Owner,
    /// The pool's CIDR.
    cidr: String,
}

/// A [`Store`] on etcd (v3 API).
#[derive(Clone)]
pub struct EtcdStore {
    /// Boxed: the client is large, and stores are held in enums of backends.
    kv: Box<KvClient>,
    endpoints: String,
    prefix: String,
    timeout: Duration,
    page: i64,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl EtcdStore {
    /// Reads at most `keys` keys per range request (at least 1), instead of [`PAGE`].
    pub fn with_page_size(mut self, keys: i64) -> EtcdStore {
        self.page = keys.max(1);
        self
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Reads `[start, end)`, keys only, from `start` on, at most a page of keys; whether more follow.
    async fn taken_page(
        &self,
        start: String,
        end: Vec<u8>,
    ) -> Result<(Vec<KeyValue>, bool), StoreError> {
        let options = GetOptions::new()
            .with_range(end)
            .with_keys_only()
            .with_limit(self.page);
        let mut answer = self
            .call("a read of taken addresses", |mut kv| async move {
                kv.get(start, Some(options)).await
            })
            .await?;
        let more = answer.more();
        Ok((answer.take_kvs(), more))
    }

    /// A read of the taken keys of `interval` (offsets of `range`). A key range rather than
    /// a limit: etcd 3.4 gathers every key of a range before it applies the limit.
    fn keys_op(&self, keys: &PoolKeys, range: &IpRange, (lo, hi): (u128, u128)) -> TxnOp {
        let (from, to) = keys.ips(range.address(lo), range.address(hi));
        TxnOp::get(
            from,
            Some(GetOptions::new().with_range(to).with_keys_only()),
        )
    }

    /// A read of how many addresses of `interval` (offsets of `range`) are taken.
    fn count_op(&self, keys: &PoolKeys, range: &IpRange, (lo, hi): (u128, u128)) -> TxnOp {
        let (from, to) = keys.ips(range.address(lo), range.address(hi));
        TxnOp::get(
            from,
            Some(GetOptions::new().with_range(to).with_count_only()),
        )
    }

    /// Where to start reading keys to find the lowest free address in `gap` (an interval with
    /// fewer taken keys than usable addresses): the start of an interval of at most
    /// [`search::NARROW`] addresses that still has one, found by counting parts of the gap.
    async fn narrow(
        &self,
        keys: &PoolKeys,
        range: &IpRange,
        mut gap: (u128, u128),
    ) -> Result<u128, StoreError> {
        while gap.1 - gap.0 >= search::NARROW {
            let parts = search::split(gap);
            let ops: Vec<TxnOp> = parts
                .iter()
                .map(|p| self.count_op(keys, range, *p))
                .collect();
            let answer = self
                .txn("a count of taken addresses", Txn::new().and_then(ops))
                .await?;
            let counts: Vec<i64> = gets(&answer).iter().map(|a| a.count()).collect();
            match search::first_gap(range, &parts, &counts) {
                Some(part) => gap = part,
                // Filled meanwhile: read on from the gap's start.
                None => break,
            }
        }
        Ok(gap.0)
    }

    /// Gives the attachment the address it holds (found in its index as `held`), rewriting
    /// the records when the owner changed (the pod's new sandbox takes it over, as in
    /// Whereabouts). `None` when the index changed meanwhile: start over.
    async fn adopt(
        &self,
        keys: &PoolKeys,
        owner: &Owner,
        held: &KeyValue,
    ) -> Result<Option<IpAddr>, StoreError> {
        let key = String::from_utf8_lossy(held.key()).into_owned();
        let ip = keys::key_address(held.key()).ok_or_else(|| corrupt(&key, "no address"))?;
        let old: Owner = decode(&key, held.value())?;
        if &old == owner {
            return Ok(Some(ip));
        }
        let new_owner_key = keys.owner_index(owner, ip);
        let new_pod_key = keys.pod_index(owner, ip);
        let mut ops = vec![TxnOp::put(keys.ip(ip), record(keys, owner), None)];
        let old_owner_key = keys.owner_index(&old, ip);
        if old_owner_key != new_owner_key {
            ops.push(TxnOp::delete(old_owner_key, None));
        }
        if let Some(old_pod_key) = keys.pod_index(&old, ip) {
            if Some(&old_pod_key) != new_pod_key.as_ref() {
                ops.push(TxnOp::delete(old_pod_key, None));
            }
        }
        ops.push(TxnOp::put(new_owner_key, json(owner), None));
        if let Some(new_pod_key) = new_pod_key {
            ops.push(TxnOp::put(new_pod_key, json(owner), None));
        }
        let txn = Txn::new()
            .when([Compare::mod_revision(
                held.key(),
                CompareOp::Equal,
                held.mod_revision(),
            )])
            .and_then(ops);
        let answer = self.txn("a takeover of an address", txn).await?;
        Ok(answer.succeeded().then_some(ip))
    }
}

impl Store for EtcdStore {
    async fn allocate(&self, pool: &Pool, owner: &Owner) -> Result<IpAddr, StoreError> {
        let range = &pool.range;
        let keys = PoolKeys::new(&self.prefix, pool);
        let attachment = keys.attachment_prefix(owner);
        let attachment_end = keys::prefix_end(&attachment);
        let (_, end) = keys.ips(range.first_address(), range.last_address());
        let probe = self.page.min(search::PROBE);
        let first = range.bounds().0;
        let mut attempts = 0;
        'fresh: while attempts < MAX_ATTEMPTS {
            attempts += 1;
            // Round trip 1: what the attachment holds, the first keys of the range, and how
            // many are taken in intervals of doubling size.
            let intervals = search::doubling(range, probe as u128);
            let mut ops = vec![
                TxnOp::get(
                    attachment.clone(),
                    Some(GetOptions::new().with_range(attachment_end.clone())),
                ),
                self.keys_op(&keys, range, intervals[0]),
            ];
            ops.extend(intervals.iter().map(|i| self.count_op(&keys, range, *i)));
            let answer = self
                .txn("a read of the pool", Txn::new().and_then(ops))
                .await?;
            let mut answers = gets(&answer).into_iter();
            let (Some(held), Some(page)) = (answers.next(), answers.next()) else {
                return Err(EtcdError::ShortAnswer.into());
            };
            if let Some(kv) = held.kvs().first() {
                match self.adopt(&keys, owner, kv).await? {
                    Some(ip) => return Ok(ip),
                    None => continue 'fresh,
                }
            }
            let counts: Vec<i64> = answers.map(|a| a.count()).collect();
            let mut scan = Scan::new(range, first);
            scan.absorb_interval(intervals[0], page.kvs())?;
            if matches!(scan.next(), Next::ReadFrom(_)) {
                // The first page is all taken: go where the counts say the first gap is.
                if let Some(gap) = search::first_gap(range, &intervals, &counts) {
                    let lo = self.narrow(&keys, range, gap).await?;
                    if lo > first {
                        scan = Scan::new(range, lo);
                    }
                }
            }
            let mut lost = 0u32;
            loop {
                let lowest = loop {
                    match scan.next() {
                        Next::Free(offset) => break offset,
                        // Counts made the scan start late: make sure with every key.
                        Next::Exhausted if scan.base() > first => scan = Scan::new(range, first),
                        Next::Exhausted => return Err(scan.exhausted()),
                        Next::ReadFrom(offset) => {
                            let from = keys.ip(range.address(offset));
                            let (kvs, more) = self.taken_page(from, end.clone()).await?;
                            scan.absorb(offset, &kvs, more)?;
                        }
                    }
                };
                // After a lost race, the others who lost it would all try the same next
                // address: each skips a random number of free ones instead (more, the more
                // it lost), so that they spread out. Without contention this is lowest-free.
                let candidate = match lost {
                    0 => lowest,
                    _ => scan
                        .nth_free_after(lowest, search::random_below(search::spread_window(lost))),
                };
                let ip = range.address(candidate);
                let ip_key = keys.ip(ip);
                let mut ops = vec![
                    TxnOp::put(ip_key.clone(), record(&keys, owner), None),
                    TxnOp::put(keys.owner_index(owner, ip), json(owner), None),
                ];
                if let Some(pod_key) = keys.pod_index(owner, ip) {
                    ops.push(TxnOp::put(pod_key, json(owner), None));
                }
                // Round trip 2: take it, if it is free and the attachment still holds nothing.
                let take = Txn::new()
                    .when([
                        Compare::create_revision(ip_key, CompareOp::Equal, 0),
                        Compare::create_revision(attachment.clone(), CompareOp::Equal, 0)
                            .with_range(attachment_end.clone()),
                    ])
                    .and_then(ops)
                    .or_else([
                        TxnOp::get(
                            attachment.clone(),
                            Some(GetOptions::new().with_range(attachment_end.clone())),
                        ),
                        TxnOp::get(
                            keys.ip(range.address(lowest)),
                            Some(
                                GetOptions::new()
                                    .with_range(end.clone())
                                    .with_keys_only()
                                    .with_limit(probe),
                            ),
                        ),
                    ]);
                let answer = self.txn("an allocation", take).await?;
                if answer.succeeded() {
                    return Ok(ip);
                }
                // Lost: to another allocator of this address, or of this very attachment.
                let (held, page) = two_gets(&answer)?;
                if let Some(kv) = held.kvs().first() {
                    match self.adopt(&keys, owner, kv).await? {
                        Some(ip) => return Ok(ip),
                        None => continue 'fresh,
                    }
                }
                if attempts >= MAX_ATTEMPTS {
                    break 'fresh;
                }
                attempts += 1;
                lost += 1;
                scan.absorb(lowest, page.kvs(), page.more())?;
                scan.mark_taken(candidate);
            }
        }
        Err(StoreError::Contention(attempts))
    }

    async fn release(
        &self,
        pool: &Pool,
        container_id: &str,
        ifname: &str,
    ) -> Result<Vec<IpAddr>, StoreError> {
        let keys = PoolKeys::new(&self.prefix, pool);
        let index = keys.owner_prefix(container_id, ifname);
        let index_end = keys::prefix_end(&index);
        for _ in 0..MAX_ATTEMPTS {
            let options = GetOptions::new().with_range(index_end.clone());
            let mut held = self
                .call("a read of the container's addresses", |mut kv| {
                    let index = index.clone();
                    async move { kv.get(index, Some(options)).await }
                })
                .await?;
            let held = held.take_kvs();
            if held.is_empty() {
                return Ok(Vec::new());
            }
            let mut compares = Vec::new();
            let mut ops = Vec::new();
            let mut released = Vec::new();
            for kv in &held {
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                let ip = keys::key_address(kv.key()).ok_or_else(|| corrupt(&key, "no address"))?;
                let owner: Owner = decode(&key, kv.value())?;
                compares.push(Compare::mod_revision(
                    kv.key(),
                    CompareOp::Equal,
                    kv.mod_revision(),
                ));
                ops.push(TxnOp::delete(keys.ip(ip), None));
                ops.push(TxnOp::delete(kv.key(), None));
                if let Some(pod_key) = keys.pod_index(&owner, ip) {
                    ops.push(TxnOp::delete(pod_key, None));
                }
                released.push(ip);
            }
            let txn = Txn::new().when(compares).and_then(ops);
            if self.txn("a release", txn).await?.succeeded() {
                return Ok(released);
            }
        }
        Err(StoreError::Contention(MAX_ATTEMPTS))
    }

    async fn usage(&self) -> Result<Vec<PoolUsage>, StoreError> {
        let mut pools: BTreeMap<(String, String), Vec<Allocation>> = BTreeMap::new();
        let mut start = format!("{}/", self.prefix).into_bytes();
        let end = keys::prefix_end(&format!("{}/", self.prefix));
        loop {
            let options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(self.page);
            let from = start.clone();
            let mut answer = self
                .call("a read of every allocation", |mut kv| async move {
                    kv.get(from, Some(options)).await
                })
                .await?;
            let more = answer.more();
            let kvs = answer.take_kvs();
            for kv in &kvs {
                let Some(parsed) = keys::parse_ip_key(&self.prefix, kv.key()) else {
                    continue;
                };
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                let record: Record = decode(&key, kv.value())?;
                pools
                    .entry((parsed.network, record.cidr))
                    .or_default()
                    .push(Allocation {
                        address: parsed.address,
                        owner: record.owner,
                    });
            }
            match kvs.last() {
                Some(last) if more => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        Ok(pools
            .into_iter()
            .map(|((network, cidr), mut allocations)| {
                allocations.sort_by_key(|a| a.address);
                PoolUsage {
                    network,
                    cidr,
                    allocations,
                }
            })
            .collect())
    }

    async fn release_exact(
        &self,
        network: &str,
        allocation: &Allocation,
    ) -> Result<bool, StoreError> {
        let key = keys::ip_key(&self.prefix, network, allocation.address);
        for _ in 0..MAX_ATTEMPTS {
            let mut answer = self
                .call("a read of an allocation", |mut kv| {
                    let key = key.clone();
                    async move { kv.get(key, None).await }
                })
                .await?;
            let Some(kv) = answer.take_kvs().into_iter().next() else {
                return Ok(false);
            };
            let record: Record = decode(&key, kv.value())?;
            if record.owner != allocation.owner {
                return Ok(false);
            }
            let cidr = record
                .cidr
                .parse()
                .map_err(|e| corrupt(&key, &format!("bad cidr {:?}: {e}", record.cidr)))?;
            let pool_keys = PoolKeys::of(&self.prefix, network, cidr);
            let mut ops = vec![
                TxnOp::delete(key.clone(), None),
                TxnOp::delete(
                    pool_keys.owner_index(&record.owner, allocation.address),
                    None,
                ),
            ];
            if let Some(pod_key) = pool_keys.pod_index(&record.owner, allocation.address) {
                ops.push(TxnOp::delete(pod_key, None));
            }
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    kv.mod_revision(),
                )])
                .and_then(ops);
            if self.txn("an exact release", txn).await?.succeeded() {
                return Ok(true);
            }
        }
        Err(StoreError::Contention(MAX_ATTEMPTS))
    }
}

/// The get answers of a transaction, in order.
fn gets(answer: &TxnResponse) -> Vec<etcd_client::GetResponse> {
    answer
        .op_responses()
        .into_iter()
        .filter_map(|r| match r {
            TxnOpResponse::Get(get) => Some(get),
            _ => None,
        })
        .collect()
}

/// The first two get answers of a transaction.
fn two_gets(
    answer: &TxnResponse,
) -> Result<(etcd_client::GetResponse, etcd_client::GetResponse), StoreError> {
    let mut gets = gets(answer).into_iter();
    match (gets.next(), gets.next()) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err(EtcdError::ShortAnswer.into()),
    }
}

/// The allocation record of `owner` in the pool of `keys`.
fn record(keys: &PoolKeys, owner: &Owner) -> Vec<u8> {
    json(&Record {
        owner: owner.clone(),
        cidr: keys.cidr(),
    })
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialize")
}

fn decode<T: for<'de> Deserialize<'de>>(key: &str, value: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(value).map_err(|e| corrupt(key, &e.to_string()))
}

fn corrupt(key: &str, reason: &str) -> StoreError {
    StoreError::Corrupt {
        key: key.to_string(),
        reason: reason.to_string(),
    }
}
