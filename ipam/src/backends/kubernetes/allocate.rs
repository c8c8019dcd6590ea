//! ADD: the node's own blocks first (no LIST), then the slow path that lists the network's
//! blocks and Leases to find the attachment, claim a block, or borrow an address.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::Ordering;

use ipnet::IpNet;
use k8s_openapi::api::coordination::v1::Lease;

use super::block::{by_name, Block};
use super::hints::{attachment_key, BlockHint};
use super::layout::Layout;
use super::leases::{self, Claim, Target};
use super::place::{Op, Placed};
use super::KubeOptions;
use crate::error::{KubeStoreError, StoreError};
use crate::store::Owner;

/// Allocates an address of the op's pool for `owner` (see the module documentation of
/// [`super`] for the order of the steps and their round trips).
pub async fn allocate(
    options: &KubeOptions,
    op: &mut Op<'_>,
    owner: &Owner,
) -> Result<IpAddr, StoreError> {
    // A claim-bound address may be in any block of the pool, made on any node: only the
    // slow path's LIST finds it.
    if !owner.claim.is_empty() {
        return slow_path(options, op, owner).await;
    }
    let Some(group) = op.group else {
        if let Some(ip) = fast_path(options, op, owner).await? {
            return Ok(ip);
        }
        return slow_path(options, op, owner).await;
    };
    // Under a group committer (the node agent), one slow path per pool at a time: requests
    // that found the node's blocks full while another listed the network and claimed a block
    // try the node's blocks again (together, so their writes are grouped), instead of each
    // listing the network.
    let slow = group.slow_path(op.hints.path());
    loop {
        let seen = slow.done.load(Ordering::SeqCst);
        if let Some(ip) = fast_path(options, op, owner).await? {
            return Ok(ip);
        }
        let turn = slow.turn.lock().await;
        if slow.done.load(Ordering::SeqCst) != seen {
            continue;
        }
        let result = slow_path(options, op, owner).await;
        slow.done.fetch_add(1, Ordering::SeqCst);
        drop(turn);
        return result;
    }
}

/// Steps 1 and 2: the attachment's hinted block, then the node's own blocks lowest first;
/// `None` when none of them has room.
async fn fast_path(
    options: &KubeOptions,
    op: &mut Op<'_>,
    owner: &Owner,
) -> Result<Option<IpAddr>, StoreError> {
    let hints = op.hints.load();
    let mut prefetched: Option<Block> = None;

    // A repeated ADD on this node: the block the attachment was last put in.
    if let Some(hint) = hints.attachments.get(&attachment_key(owner)) {
        let block = op.read_block(&hint.block).await?;
        if let Some(block) = block.filter(|b| op.layout.owns(&b.network, &b.range, b.cidr)) {
            if block.find(owner).is_some() {
                if let Some(ip) = address(op.place(block, owner).await?) {
                    return Ok(Some(ip));
                }
            } else {
                prefetched = Some(block);
            }
        }
    }

    // The common case: the lowest of this node's blocks that is not known to be full.
    for (name, hint) in hints.blocks_in_order() {
        if hint.full || op.layout.within(hint.cidr).is_none() {
            continue;
        }
        let age = leases::now_secs() - hint.renewed;
        // An expired claim is renewed before use (another node may have taken the block
        // over); one past a third of its duration after the address is written.
        let expired = age >= options.lease_secs();
        if expired && !renew(options, op, &name, &hint).await? {
            continue;
        }
        let block = match prefetched.take() {
            Some(block) if block.name == name => block,
            other => {
                prefetched = other;
                match op.read_block(&name).await? {
                    Some(block) => block,
                    None => Block::absent(&op.layout, hint.cidr),
                }
            }
        };
        match op.place(block, owner).await? {
            Placed::Full => mark_full(op, &name, true),
            Placed::Held(ip) => return Ok(Some(ip)),
            Placed::New { ip, last } => {
                if last {
                    mark_full(op, &name, true);
                }
                if !expired && age >= options.lease_secs() / 3 {
                    renew(options, op, &name, &hint).await?;
                }
                return Ok(Some(ip));
            }
        }
    }
    Ok(None)
}

/// Lists the network's blocks and Leases, then: the attachment's address anywhere in the
/// pool; else a free address in a block this node holds; else a block claimed (no Lease, or an
/// expired Lease on an empty block); else an address borrowed from any block; else exhausted.
async fn slow_path(
    options: &KubeOptions,
    op: &mut Op<'_>,
    owner: &Owner,
) -> Result<IpAddr, StoreError> {
    let (sorted, leases) = list(op).await?;
    // The attachment already holds an address of the pool (made on another node, say).
    if let Some(block) = sorted.iter().find(|b| b.find(owner).is_some()) {
        if let Some(ip) = address(op.place(block.clone(), owner).await?) {
            return Ok(ip);
        }
    }
    let listed = Listed {
        blocks: by_name(sorted),
        leases,
        label: op.layout.network_label(),
        now: leases::now_secs(),
    };
    let own = listed.own(&op.layout, &options.node);
    listed.refresh_hints(op, &own);
    if let Some(ip) = place_in_own(options, op, owner, &listed, &own).await? {
        return Ok(ip);
    }
    // The range's first block: not before the guard against a forgotten import.
    if listed.blocks.is_empty() && options.whereabouts_guard {
        super::guard::check(op.objects(), &op.layout).await?;
    }
    if let Some(ip) = claim_block(options, op, owner, &listed).await? {
        return Ok(ip);
    }
    if let Some(ip) = borrow(op, owner, &listed).await? {
        return Ok(ip);
    }
    let used = op
        .layout
        .used_in_range(listed.blocks.values().flat_map(|b| b.allocations.keys()));
    Err(StoreError::Exhausted {
        range: op.layout.range.cidr().to_string(),
        used,
        size: op.layout.range.usable_count(),
    })
}

/// The network's blocks of this range and block size, lowest first, and its Leases by name.
async fn list(op: &Op<'_>) -> Result<(Vec<Block>, HashMap<String, Lease>), StoreError> {
    let label = op.layout.network_label();
    let listed = op.objects().list_blocks(Some(&label)).await?;
    let leases: HashMap<String, Lease> = op
        .objects()
        .list_leases(&label)
        .await?
        .into_iter()
        .filter_map(|l| l.metadata.name.clone().map(|n| (n, l)))
        .collect();
    check_block_size(&op.layout, &listed)?;
    let mut blocks: Vec<Block> = listed
        .into_iter()
        .filter(|b| {
            op.layout.owns(&b.network, &b.range, b.cidr)
                && b.cidr.prefix_len() == op.layout.block_prefix
        })
        .collect();
    blocks.sort_by_key(|b| super::layout::to_u128(b.cidr.network()));
    Ok((blocks, leases))
}

/// What the slow path listed.
struct Listed {
    /// The range's blocks by name.
    blocks: HashMap<String, Block>,
    /// The network's Leases by name.
    leases: HashMap<String, Lease>,
    /// The network label.
    label: String,
    /// When they were listed, in seconds.
    now: i64,
}

impl Listed {
    /// Whether the block `name` at `cidr` has a free address of the range (an absent block:
    /// whether the range has one in it).
    fn free(&self, layout: &Layout, name: &str, cidr: IpNet) -> bool {
        match self.blocks.get(name) {
            Some(b) => layout.lowest_free(b.cidr, &b.taken()).is_some(),
            None => layout.lowest_free(cidr, &Default::default()).is_some(),
        }
    }

    /// The blocks this node holds, as the Leases say, lowest first.
    fn own(&self, layout: &Layout, node: &str) -> Vec<(IpNet, Lease)> {
        let mut own: Vec<(IpNet, Lease)> = Vec::new();
        for (name, lease) in &self.leases {
            let Some(cidr) = leases::cidr(lease).filter(|c| c.prefix_len() == layout.block_prefix)
            else {
                continue;
            };
            if leases::holder(lease) == node
                && *name == Layout::lease_name(&layout.block_name(cidr))
                && layout.within(cidr).is_some()
                && leases::foreign(lease, target(name, &self.label, cidr), node).is_none()
            {
                own.push((cidr, lease.clone()));
            }
        }
        own.sort_by_key(|(cidr, _)| super::layout::to_u128(cidr.network()));
        own
    }

    /// Brings the hints up to date: this node's blocks as `own` says, with their fullness; no
    /// attachment whose block no longer holds it (its pod went without a DEL).
    fn refresh_hints(&self, op: &Op<'_>, own: &[(IpNet, Lease)]) {
        let layout = &op.layout;
        let seen: HashSet<String> = own.iter().map(|(c, _)| layout.block_name(*c)).collect();
        op.hints.update(|h| {
            h.blocks.retain(|name, _| seen.contains(name));
            h.attachments
                .retain(|_, a| match self.blocks.get(&a.block) {
                    Some(b) => !b.held_by(&a.container_id, &a.ifname).is_empty(),
                    None => true,
                });
            for (cidr, lease) in own {
                let name = layout.block_name(*cidr);
                let mut hint = leases::hint_of(lease, *cidr);
                hint.full = !self.free(layout, &name, *cidr);
                h.blocks.insert(name, hint);
            }
        });
    }

    /// The listed block `name`, or an absent one.
    fn current(&self, layout: &Layout, name: &str, cidr: IpNet) -> Block {
        self.blocks
            .get(name)
            .cloned()
            .unwrap_or_else(|| Block::absent(layout, cidr))
    }
}

/// A free address in a block this node holds (an expired Lease claimed again first).
async fn place_in_own(
    options: &KubeOptions,
    op: &mut Op<'_>,
    owner: &Owner,
    listed: &Listed,
    own: &[(IpNet, Lease)],
) -> Result<Option<IpAddr>, StoreError> {
    for (cidr, lease) in own {
        let name = op.layout.block_name(*cidr);
        if !listed.free(&op.layout, &name, *cidr) {
            continue;
        }
        let placed = if leases::is_live(lease, listed.now) {
            place_listed(op, owner, listed, &name, *cidr).await?
        } else {
            claim_and_place(options, op, owner, listed, *cidr, Some(lease)).await?
        };
        if placed.is_some() {
            return Ok(placed);
        }
    }
    Ok(None)
}

/// Claims the block at `cidr` (whose Lease is `lease`, if any) and places the address there;
/// `None` when another node holds the block or it is full.
async fn claim_and_place(
    options: &KubeOptions,
    op: &mut Op<'_>,
    owner: &Owner,
    listed: &Listed,
    cidr: IpNet,
    lease: Option<&Lease>,
) -> Result<Option<IpAddr>, StoreError> {
    let name = op.layout.block_name(cidr);
    let lease_name = Layout::lease_name(&name);
    let target = target(&lease_name, &listed.label, cidr);
    let claim = leases::claim(
        op.objects(),
        target,
        &options.node,
        options.lease_duration,
        lease,
    )
    .await?;
    if !held(op, &name, cidr, claim) {
        return Ok(None);
    }
    place_listed(op, owner, listed, &name, cidr).await
}

/// Places the address in the listed copy of the block `name` (if it is stale, the write fails
/// and the block is read again); `None` when it is full.
async fn place_listed(
    op: &mut Op<'_>,
    owner: &Owner,
    listed: &Listed,
    name: &str,
    cidr: IpNet,
) -> Result<Option<IpAddr>, StoreError> {
    let block = listed.current(&op.layout, name, cidr);
    let placed = op.place(block, owner).await?;
    Ok(finish(op, name, placed))
}

/// Claims a block and places the address there: the lowest block with a free address and no
/// live Lease (an expired one only when the block holds nothing).
async fn claim_block(
    options: &KubeOptions,
    op: &mut Op<'_>,
    owner: &Owner,
    listed: &Listed,
) -> Result<Option<IpAddr>, StoreError> {
    let node = options.node.as_str();
    let mut tried = HashSet::new();
    loop {
        let candidate = op.layout.next_block(None, |cidr| {
            let name = op.layout.block_name(cidr);
            if tried.contains(&cidr) || !listed.free(&op.layout, &name, cidr) {
                return true;
            }
            match listed.leases.get(&Layout::lease_name(&name)) {
                None => false,
                Some(lease) if leases::holder(lease) == node => true,
                Some(lease) if leases::is_live(lease, listed.now) => true,
                Some(_) => listed
                    .blocks
                    .get(&name)
                    .is_some_and(|b| !b.allocations.is_empty()),
            }
        });
        let Some(cidr) = candidate else {
            return Ok(None);
        };
        tried.insert(cidr);
        let lease = listed
            .leases
            .get(&Layout::lease_name(&op.layout.block_name(cidr)));
        if let Some(ip) = claim_and_place(options, op, owner, listed, cidr, lease).await? {
            return Ok(Some(ip));
        }
    }
}

/// Borrows a free address of any block of the range, lowest first.
async fn borrow(
    op: &mut Op<'_>,
    owner: &Owner,
    listed: &Listed,
) -> Result<Option<IpAddr>, StoreError> {
    let mut tried = HashSet::new();
    while let Some(cidr) = op.layout.next_block(None, |cidr| {
        tried.contains(&cidr) || !listed.free(&op.layout, &op.layout.block_name(cidr), cidr)
    }) {
        tried.insert(cidr);
        let name = op.layout.block_name(cidr);
        let block = listed.current(&op.layout, &name, cidr);
        if let Some(ip) = address(op.place(block, owner).await?) {
            return Ok(Some(ip));
        }
    }
    Ok(None)
}

/// Renews the Lease of a block this node holds by its hint; false (and the hint dropped) when
/// another node holds it now.
async fn renew(
    options: &KubeOptions,
    op: &mut Op<'_>,
    name: &str,
    hint: &BlockHint,
) -> Result<bool, StoreError> {
    let lease_name = Layout::lease_name(name);
    let label = op.layout.network_label();
    let target = target(&lease_name, &label, hint.cidr);
    let claim = leases::renew(
        op.objects(),
        target,
        &options.node,
        options.lease_duration,
        hint,
    )
    .await?;
    Ok(held(op, name, hint.cidr, claim))
}

/// Records the outcome of a claim or renewal in the hints; whether the node holds the block.
fn held(op: &Op<'_>, name: &str, cidr: IpNet, claim: Claim) -> bool {
    match claim {
        Claim::Held(lease) => {
            let mut hint = leases::hint_of(&lease, cidr);
            op.hints.update(|h| {
                hint.full = h.blocks.get(name).is_some_and(|old| old.full);
                h.blocks.insert(name.to_string(), hint);
            });
            true
        }
        Claim::Lost => {
            op.hints.update(|h| {
                h.blocks.remove(name);
            });
            false
        }
    }
}

/// Records a block's fullness in the hints.
fn mark_full(op: &Op<'_>, name: &str, full: bool) {
    op.hints.update(|h| {
        if let Some(hint) = h.blocks.get_mut(name) {
            hint.full = full;
        }
    });
}

/// The address placed, if any, with the block's fullness recorded.
fn finish(op: &Op<'_>, name: &str, placed: Placed) -> Option<IpAddr> {
    match placed {
        Placed::New { ip, last } => {
            if last {
                mark_full(op, name, true);
            }
            Some(ip)
        }
        Placed::Held(ip) => Some(ip),
        Placed::Full => {
            mark_full(op, name, true);
            None
        }
    }
}

/// The Lease of a block.
fn target<'a>(lease_name: &'a str, label: &'a str, cidr: IpNet) -> Target<'a> {
    Target {
        name: lease_name,
        label,
        cidr,
    }
}

/// The address of a placement, if it gave one.
fn address(placed: Placed) -> Option<IpAddr> {
    match placed {
        Placed::New { ip, .. } | Placed::Held(ip) => Some(ip),
        Placed::Full => None,
    }
}

/// Refuses to go on when blocks of another size overlap the range: every range of a network
/// must use one block size, or two blocks could hold the same address.
fn check_block_size(layout: &Layout, blocks: &[Block]) -> Result<(), StoreError> {
    match blocks.iter().find(|b| {
        layout.owns(&b.network, &b.range, b.cidr) && b.cidr.prefix_len() != layout.block_prefix
    }) {
        Some(b) => Err(KubeStoreError::BlockSize {
            block: b.cidr.to_string(),
            network: layout.network.clone(),
            found: b.cidr.prefix_len(),
            wanted: layout.block_prefix,
        }
        .into()),
        None => Ok(()),
    }
}
