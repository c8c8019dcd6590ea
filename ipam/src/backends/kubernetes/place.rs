//! Putting an attachment into one block: the compare-and-swap loop every ADD ends in.

use std::net::IpAddr;
use std::time::Duration;

use super::block::Block;
use super::client::ApiError;
use super::group::{Change, GroupCommit, Outcome};
use super::hints::{attachment_key, AttachmentHint, HintFile};
use super::layout::Layout;
use super::objects::Objects;
use crate::error::{KubeStoreError, StoreError};
use crate::store::Owner;

/// What became of an attempt to place an attachment in a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// A new address, written; `last` when it took the block's last free address.
    New {
        /// The address.
        ip: IpAddr,
        /// Whether the block has no free address left.
        last: bool,
    },
    /// The address the attachment already held in the block (a repeated ADD).
    Held(IpAddr),
    /// The block has no free address of the range.
    Full,
}

/// Writes to blocks, counting the writes lost to concurrent writers.
#[derive(Debug)]
pub struct Writer<'a> {
    /// The objects.
    pub objects: &'a Objects,
    /// Writes lost to a concurrent writer so far.
    pub conflicts: u32,
    /// How many may be lost before giving up with [`StoreError::Contention`].
    pub max_conflicts: u32,
}

impl Writer<'_> {
    /// Counts a lost write; gives up once too many were lost. Waits a moment (up to a few
    /// milliseconds, growing with the count) so that writers racing on one block spread out:
    /// this is for throughput only, correctness never depends on it.
    pub async fn lost_write(&mut self) -> Result<(), StoreError> {
        self.conflicts += 1;
        if self.conflicts > self.max_conflicts {
            return Err(StoreError::Contention(self.conflicts));
        }
        let ceiling = u64::from(self.conflicts.min(10)) * 1000;
        tokio::time::sleep(Duration::from_micros(jitter() % (ceiling + 1))).await;
        Ok(())
    }

    /// `block` read again; if it was deleted, the same block empty and absent.
    pub async fn reread(&self, block: &Block) -> Result<Block, StoreError> {
        Ok(match self.objects.get_block(&block.name).await? {
            Some(block) => block,
            None => Block {
                version: None,
                allocations: Default::default(),
                ..block.clone()
            },
        })
    }
}

/// One ADD or DEL of a pool in progress: the writer, the pool's layout and the node's hint
/// file for the pool.
#[derive(Debug)]
pub struct Op<'a> {
    /// The writer.
    pub writer: Writer<'a>,
    /// The pool's layout.
    pub layout: Layout,
    /// The node's hints for the pool.
    pub hints: HintFile,
    /// The group committer the writes go through, if any (the node agent's).
    pub group: Option<&'a GroupCommit>,
}

impl<'a> Op<'a> {
    /// The objects.
    pub fn objects(&self) -> &'a Objects {
        self.writer.objects
    }

    /// Places `owner` in `block` (as read, or [`Block::absent`]): returns the address the
    /// attachment already holds there (rewriting its record when the container or pod UID
    /// changed), else writes the lowest free address of the range in the block with a create
    /// (absent block) or a replace on the `resourceVersion` read. A lost write reads the block
    /// again and starts over.
    pub async fn place(&mut self, mut block: Block, owner: &Owner) -> Result<Placed, StoreError> {
        if let Some(group) = self.group {
            let change = Change::Place {
                owner: owner.clone(),
                layout: Box::new(self.layout.clone()),
                hints: self.hints.clone(),
            };
            return match group.submit(&self.writer, &block, change).await? {
                Outcome::Placed(placed) => Ok(placed),
                Outcome::Released(_) => unreachable!("a placement answered as a release"),
            };
        }
        let mut intent_written = false;
        loop {
            if block.version.is_some()
                && !self.layout.owns(&block.network, &block.range, block.cidr)
            {
                return Err(KubeStoreError::ForeignBlock {
                    namespace: self.objects().namespace().to_string(),
                    name: block.name.clone(),
                    network: block.network.clone(),
                    range: block.range.clone(),
                }
                .into());
            }
            let mut next = block.clone();
            let placed = match block.find(owner) {
                Some((ip, held)) if held == owner => {
                    self.remember(owner, &block.name);
                    return Ok(Placed::Held(ip));
                }
                Some((ip, _)) => {
                    next.allocations.insert(ip, owner.clone());
                    Placed::Held(ip)
                }
                None => {
                    let Some(ip) = self.layout.lowest_free(block.cidr, &block.taken()) else {
                        return Ok(Placed::Full);
                    };
                    next.allocations.insert(ip, owner.clone());
                    let last = self.layout.lowest_free(block.cidr, &next.taken()).is_none();
                    Placed::New { ip, last }
                }
            };
            if !intent_written {
                // Before the write: a retry after a crash right after it finds this block.
                self.remember(owner, &block.name);
                intent_written = true;
            }
            let written = if block.version.is_none() {
                self.objects().create_block(&next).await
            } else {
                self.objects().replace_block(&next).await
            };
            match written {
                Ok(written) => {
                    check_claim_kept(&written, placed, owner)?;
                    return Ok(placed);
                }
                Err(ApiError::Conflict(_) | ApiError::AlreadyExists(_) | ApiError::NotFound(_)) => {
                    self.writer.lost_write().await?;
                    block = self.writer.reread(&block).await?;
                }
                Err(ApiError::Failed(e)) => return Err(e),
            }
        }
    }

    /// The block `name`: as this process last wrote it when it goes through a group committer
    /// (a stale copy only costs the committer a read), else read now.
    pub async fn read_block(&self, name: &str) -> Result<Option<Block>, StoreError> {
        if let Some(known) = match self.group {
            Some(group) => group.known(self.objects(), name),
            None => None,
        } {
            return Ok(Some(known));
        }
        self.objects().get_block(name).await
    }

    /// Records in the hints that `owner` is (about to be) in the block `name`.
    fn remember(&self, owner: &Owner, name: &str) {
        let key = attachment_key(owner);
        let hint = AttachmentHint {
            block: name.to_string(),
            container_id: owner.container_id.clone(),
            ifname: owner.ifname.clone(),
        };
        self.hints.update(|h| {
            h.attachments.insert(key, hint);
        });
    }
}

/// Refuses a claim-bound write that the API server stored without its claim: an `IPAMBlock`
/// CRD from before `ipamClaim` existed prunes the field, which would bind the address to the pod
/// (its DEL then releases it, so nothing leaks).
fn check_claim_kept(written: &Block, placed: Placed, owner: &Owner) -> Result<(), StoreError> {
    let ip = match placed {
        Placed::New { ip, .. } | Placed::Held(ip) => ip,
        Placed::Full => return Ok(()),
    };
    if owner.claim.is_empty()
        || written.allocations.get(&ip).map(|o| &o.claim) == Some(&owner.claim)
    {
        return Ok(());
    }
    Err(StoreError::Misconfigured(format!(
        "ipamblocks \"{}\" was stored without its ipamClaim field: the IPAMBlock CRD predates \
         IPAMClaim support; re-apply it (`plexusctl crds | kubectl apply -f -`)",
        written.name
    )))
}

/// A few pseudo-random bits (time and process id), for spreading retries.
fn jitter() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (u64::from(nanos) ^ u64::from(std::process::id()).rotate_left(17))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        >> 16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_dropped_by_an_old_crd_is_a_configuration_error() {
        let mut owner = Owner {
            pod_namespace: "ns".into(),
            pod_name: "p".into(),
            pod_uid: "u".into(),
            container_id: "c".into(),
            ifname: "net1".into(),
            node: "n".into(),
            claim: "ns/vm".into(),
        };
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let mut written = Block {
            name: "b".into(),
            network: "n".into(),
            range: String::new(),
            cidr: "10.0.0.0/26".parse().unwrap(),
            version: Some("2".into()),
            allocations: Default::default(),
        };
        let mut pruned = owner.clone();
        pruned.claim.clear();
        written.allocations.insert(ip, pruned);
        let placed = Placed::New { ip, last: false };
        let e = check_claim_kept(&written, placed, &owner).unwrap_err();
        assert_eq!(e.code(), plexus_cni::ErrorCode::InvalidNetworkConfig, "{e}");
        written.allocations.insert(ip, owner.clone());
        check_claim_kept(&written, placed, &owner).unwrap();
        owner.claim.clear();
        check_claim_kept(&written, Placed::Held(ip), &owner).unwrap();
    }
}
