//! DEL, the exact release garbage collection uses, and the listing of every block.

use std::net::IpAddr;

use super::block::Block;
use super::client::ApiError;
use super::group::{Change, Outcome};
use super::layout::network_label;
use super::place::{Op, Writer};
use crate::store::{Allocation, PoolUsage, StoreError};

/// Releases every address of the op's pool held by this container and interface: from the
/// block the node's hints name for it (GET + replace), else from every block of the network
/// that holds it (LIST + replace each). Nothing held is fine.
pub async fn release(
    op: &mut Op<'_>,
    container_id: &str,
    ifname: &str,
) -> Result<Vec<IpAddr>, StoreError> {
    let hints = op.hints.load();
    let mut hinted: Vec<String> = hints
        .attachments
        .values()
        .filter(|a| a.container_id == container_id && a.ifname == ifname)
        .map(|a| a.block.clone())
        .collect();
    hinted.dedup();
    let mut released = Vec::new();
    let mut touched = Vec::new();
    for name in hinted {
        if let Some(block) = op.read_block(&name).await? {
            let freed = remove_held(op, block, container_id, ifname).await?;
            if !freed.is_empty() {
                touched.push(name);
                released.extend(freed);
            }
        }
    }
    if released.is_empty() {
        let label = op.layout.network_label();
        for block in op.objects().list_blocks(Some(&label)).await? {
            if !op.layout.owns(&block.network, &block.range, block.cidr)
                || block.held_by(container_id, ifname).is_empty()
            {
                continue;
            }
            let name = block.name.clone();
            let freed = remove_held(op, block, container_id, ifname).await?;
            if !freed.is_empty() {
                touched.push(name);
                released.extend(freed);
            }
        }
    }
    op.hints.update(|h| {
        h.attachments
            .retain(|_, a| !(a.container_id == container_id && a.ifname == ifname));
        for name in &touched {
            if let Some(hint) = h.blocks.get_mut(name) {
                hint.full = false;
            }
        }
    });
    Ok(released)
}

/// Removes from `block` what the container and interface hold: through the op's group
/// committer when it has one, else with its own compare-and-swap loop.
async fn remove_held(
    op: &mut Op<'_>,
    block: Block,
    container_id: &str,
    ifname: &str,
) -> Result<Vec<IpAddr>, StoreError> {
    let Some(group) = op.group else {
        return remove(&mut op.writer, block, |b| b.held_by(container_id, ifname)).await;
    };
    let change = Change::Release {
        container_id: container_id.to_string(),
        ifname: ifname.to_string(),
    };
    match group.submit(&op.writer, &block, change).await? {
        Outcome::Released(ips) => Ok(ips),
        Outcome::Placed(_) => unreachable!("a release answered as a placement"),
    }
}

/// Releases `allocation` of `network` only if a block still holds exactly it; `names` are the
/// blocks it was last seen in (empty: look it up with a LIST).
pub async fn release_exact(
    w: &mut Writer<'_>,
    network: &str,
    allocation: &Allocation,
    names: Vec<String>,
) -> Result<bool, StoreError> {
    let exact = |b: &Block| match b.allocations.get(&allocation.address) {
        Some(owner) if *owner == allocation.owner => vec![allocation.address],
        _ => Vec::new(),
    };
    let mut blocks = Vec::new();
    for name in &names {
        if let Some(block) = w.objects.get_block(name).await? {
            blocks.push(block);
        }
    }
    if !blocks.iter().any(|b| !exact(b).is_empty()) {
        blocks = w
            .objects
            .list_blocks(Some(&network_label(network)))
            .await?
            .into_iter()
            .filter(|b| b.network == network && !exact(b).is_empty())
            .collect();
    }
    let mut released = false;
    for block in blocks {
        if !exact(&block).is_empty() && !remove(w, block, exact).await?.is_empty() {
            released = true;
        }
    }
    Ok(released)
}

/// Removes from `block` the addresses `which` picks, with a replace on the `resourceVersion`
/// read; a lost write reads the block again and picks again. The addresses removed.
async fn remove(
    w: &mut Writer<'_>,
    mut block: Block,
    which: impl Fn(&Block) -> Vec<IpAddr>,
) -> Result<Vec<IpAddr>, StoreError> {
    loop {
        let ips = which(&block);
        if ips.is_empty() || block.version.is_none() {
            return Ok(Vec::new());
        }
        let mut next = block.clone();
        for ip in &ips {
            next.allocations.remove(ip);
        }
        match w.objects.replace_block(&next).await {
            Ok(_) => return Ok(ips),
            Err(ApiError::Conflict(_) | ApiError::NotFound(_) | ApiError::AlreadyExists(_)) => {
                w.lost_write().await?;
                block = w.reread(&block).await?;
            }
            Err(ApiError::Failed(e)) => return Err(e),
        }
    }
}

/// Every block of the namespace as a [`PoolUsage`] (its CIDR, network and allocations).
pub fn usage_of(blocks: Vec<Block>) -> Vec<PoolUsage> {
    blocks
        .into_iter()
        .map(|b| PoolUsage {
            network: b.network,
            cidr: b.cidr.to_string(),
            allocations: b
                .allocations
                .into_iter()
                .map(|(address, owner)| Allocation { address, owner })
                .collect(),
        })
        .collect()
}
