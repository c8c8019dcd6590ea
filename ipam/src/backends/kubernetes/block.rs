//! A block object read from the API server, checked and turned into addresses and owners.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;
use kube::api::ObjectMeta;
use plexus_crds::{BlockAllocation, IpamBlock, IpamBlockSpec};

use super::layout::{Layout, NETWORK_LABEL};
use crate::store::{Owner, StoreError};

/// A block as read: its name, CIDR, `resourceVersion` (absent for a block not created yet)
/// and allocations by address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The object name.
    pub name: String,
    /// The network.
    pub network: String,
    /// The range key (`spec.range`; empty for blocks shared by overlapping ranges).
    pub range: String,
    /// The block CIDR.
    pub cidr: IpNet,
    /// The `resourceVersion` read; `None` when the object does not exist.
    pub version: Option<String>,
    /// The allocations.
    pub allocations: BTreeMap<IpAddr, Owner>,
}

impl Block {
    /// A block of `layout` that does not exist yet.
    pub fn absent(layout: &Layout, cidr: IpNet) -> Block {
        Block {
            name: layout.block_name(cidr),
            network: layout.network.clone(),
            range: layout.own_range.map(|r| r.to_string()).unwrap_or_default(),
            cidr,
            version: None,
            allocations: BTreeMap::new(),
        }
    }

    /// Checks and converts an object; `namespace` names it in errors.
    pub fn read(object: IpamBlock, namespace: &str) -> Result<Block, StoreError> {
        let name = object.metadata.name.clone().unwrap_or_default();
        let corrupt = |reason: String| StoreError::Corrupt {
            key: format!("ipamblocks/{namespace}/{name}"),
            reason,
        };
        let cidr: IpNet = object
            .spec
            .cidr
            .parse()
            .map_err(|_| corrupt(format!("spec.cidr {:?} is not a CIDR", object.spec.cidr)))?;
        if cidr.trunc() != cidr {
            return Err(corrupt(format!("spec.cidr {cidr} has host bits set")));
        }
        let mut allocations = BTreeMap::new();
        for (key, a) in object.spec.allocations {
            let ip: IpAddr = key
                .parse()
                .map_err(|_| corrupt(format!("allocation key {key:?} is not an address")))?;
            if !cidr.contains(&ip) {
                return Err(corrupt(format!("allocation {ip} lies outside {cidr}")));
            }
            allocations.insert(ip, owner_of(a));
        }
        Ok(Block {
            name,
            network: object.spec.network,
            range: object.spec.range,
            cidr,
            version: object.metadata.resource_version,
            allocations,
        })
    }

    /// The object to write: this block's content with the `resourceVersion` read (the
    /// precondition of a replace), labelled with its network.
    pub fn to_object(&self, namespace: &str) -> IpamBlock {
        let spec = IpamBlockSpec {
            network: self.network.clone(),
            cidr: self.cidr.to_string(),
            range: self.range.clone(),
            allocations: self
                .allocations
                .iter()
                .map(|(ip, owner)| (ip.to_string(), record_of(owner)))
                .collect(),
        };
        let mut object = IpamBlock::new(&self.name, spec);
        object.metadata = ObjectMeta {
            name: Some(self.name.clone()),
            namespace: Some(namespace.to_string()),
            resource_version: self.version.clone(),
            labels: Some(
                [(
                    NETWORK_LABEL.to_string(),
                    super::layout::network_label(&self.network),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        };
        object
    }

    /// The addresses allocated in the block.
    pub fn taken(&self) -> BTreeSet<IpAddr> {
        self.allocations.keys().copied().collect()
    }

    /// The address this attachment holds here, with its recorded owner.
    pub fn find(&self, owner: &Owner) -> Option<(IpAddr, &Owner)> {
        self.allocations
            .iter()
            .find(|(_, held)| held.same_attachment(owner))
            .map(|(ip, held)| (*ip, held))
    }

    /// The addresses held by this container and interface that its DEL releases: not those
    /// bound to an `IPAMClaim`, which only the claim's deletion frees.
    pub fn held_by(&self, container_id: &str, ifname: &str) -> Vec<IpAddr> {
        self.allocations
            .iter()
            .filter(|(_, o)| {
                o.container_id == container_id && o.ifname == ifname && o.claim.is_empty()
            })
            .map(|(ip, _)| *ip)
            .collect()
    }
}

/// Indexes blocks by name.
pub fn by_name(blocks: Vec<Block>) -> HashMap<String, Block> {
    blocks.into_iter().map(|b| (b.name.clone(), b)).collect()
}

/// The store's owner of a stored record.
fn owner_of(a: BlockAllocation) -> Owner {
    Owner {
        pod_namespace: a.pod_namespace,
        pod_name: a.pod_name,
        pod_uid: a.pod_uid,
        container_id: a.container_id,
        ifname: a.ifname,
        node: a.node,
        claim: a.ipam_claim,
    }
}

/// The stored record of an owner.
fn record_of(o: &Owner) -> BlockAllocation {
    BlockAllocation {
        pod_namespace: o.pod_namespace.clone(),
        pod_name: o.pod_name.clone(),
        pod_uid: o.pod_uid.clone(),
        container_id: o.container_id.clone(),
        ifname: o.ifname.clone(),
        node: o.node.clone(),
        ipam_claim: o.claim.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_reads_back_what_it_writes_and_refuses_strays() {
        let owner = Owner {
            pod_namespace: "ns".into(),
            pod_name: "p".into(),
            pod_uid: "u".into(),
            container_id: "c".into(),
            ifname: "net1".into(),
            node: "n1".into(),
            claim: String::new(),
        };
        let mut block = Block {
            name: "n-10.0.0.0-26".into(),
            network: "n".into(),
            range: String::new(),
            cidr: "10.0.0.0/26".parse().unwrap(),
            version: Some("7".into()),
            allocations: BTreeMap::new(),
        };
        block
            .allocations
            .insert("10.0.0.5".parse().unwrap(), owner.clone());
        let object = block.to_object("kube-system");
        assert_eq!(object.metadata.labels.as_ref().unwrap()[NETWORK_LABEL], "n");
        assert_eq!(Block::read(object.clone(), "kube-system").unwrap(), block);
        assert_eq!(block.held_by("c", "net1").len(), 1);
        assert!(block.find(&owner).is_some());

        let mut stray = object;
        stray
            .spec
            .allocations
            .insert("10.0.1.1".into(), BlockAllocation::default());
        let e = Block::read(stray, "kube-system").unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
    }
}
