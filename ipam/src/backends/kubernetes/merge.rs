//! Writing given allocations into a block, for imports: the same compare-and-swap as every
//! ADD (create if absent, else replace on the `resourceVersion` read; a lost write reads the
//! block again and decides again), adding only addresses the version read does not hold.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use super::layout::Layout;
use super::KubeStore;
use crate::store::{Owner, StoreError};

/// An address that the block holds for another attachment than the one to write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldByOther {
    /// The address.
    pub address: IpAddr,
    /// The block object that holds it.
    pub block: String,
    /// Its holder in the block.
    pub holder: Owner,
}

/// What [`KubeStore::merge_into_block`] found or did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Merged {
    /// Addresses written now (or, for a dry run, that would be).
    pub added: Vec<IpAddr>,
    /// Addresses the block already holds for the same attachment.
    pub present: Vec<IpAddr>,
    /// Addresses the block holds for someone else: nothing was written to the block.
    pub conflicts: Vec<HeldByOther>,
}

impl KubeStore {
    /// Adds `allocations` (all inside `block` of `layout`) to the block; with `write` false,
    /// only reads it and says what would be done. Nothing is written when any address is held
    /// by another attachment (same pod namespace, name and interface counts as the same).
    pub async fn merge_into_block(
        &self,
        layout: &Layout,
        block: IpNet,
        allocations: &BTreeMap<IpAddr, Owner>,
        write: bool,
    ) -> Result<Merged, StoreError> {
        let name = layout.block_name(block);
        let mut writer = self.writer();
        let mut current = match self.objects.get_block(&name).await? {
            Some(b) => b,
            None => super::block::Block::absent(layout, block),
        };
        loop {
            let mut merged = Merged::default();
            let mut next = current.clone();
            for (ip, owner) in allocations {
                match current.allocations.get(ip) {
                    Some(held) if held.same_attachment(owner) => merged.present.push(*ip),
                    Some(held) => merged.conflicts.push(HeldByOther {
                        address: *ip,
                        block: name.clone(),
                        holder: held.clone(),
                    }),
                    None => {
                        next.allocations.insert(*ip, owner.clone());
                        merged.added.push(*ip);
                    }
                }
            }
            if !merged.conflicts.is_empty() || merged.added.is_empty() || !write {
                if !merged.conflicts.is_empty() {
                    merged.added.clear();
                }
                return Ok(merged);
            }
            let written = if current.version.is_none() {
                self.objects.create_block(&next).await
            } else {
                self.objects.replace_block(&next).await
            };
            match written {
                Ok(_) => return Ok(merged),
                Err(super::client::ApiError::Failed(e)) => return Err(e),
                Err(_) => {
                    writer.lost_write().await?;
                    current = writer.reread(&current).await?;
                }
            }
        }
    }
}
