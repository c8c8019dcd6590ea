//! Importing another IPAM's allocations into the Kubernetes store, so that switching to
//! `plexus-ipam` never hands out an address a running pod still holds.
//!
//! [`import_whereabouts`] reads every Whereabouts `IPPool` and `OverlappingRangeIPReservation`
//! ([`whereabouts`]), works out the `IPAMBlock` each address belongs to (the network's block
//! size and overlap setting from [`Networks`]), and compares with what the blocks hold:
//!
//! * an address the block holds for the same pod and interface is already imported (so a
//!   second run writes nothing);
//! * an address the block holds for another attachment, or that two Whereabouts objects give
//!   to two different pods, is a **conflict**: the import refuses, naming both holders, and
//!   writes nothing;
//! * every other address is added, one compare-and-swap write per block, only with
//!   [`ImportOptions::apply`] (otherwise the report says what would be written).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;
use plexus_crds::whereabouts::{IpPool, OverlappingRangeIpReservation};
use serde::Serialize;
use thiserror::Error;

use crate::backends::kubernetes::guard::list_if_served;
use crate::backends::kubernetes::layout::Layout;
use crate::backends::kubernetes::{KubeStore, DEFAULT_BLOCK_PREFIX_V4, DEFAULT_BLOCK_PREFIX_V6};
use crate::config::IpamConfig;
use crate::range::IpRange;
use crate::store::{Owner, Pool, StoreError};

use crate::backends::kubernetes::whereabouts::{self, Entry};

/// How one network is cut into blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkLayout {
    /// The IPv4 block prefix length.
    pub block_v4: u8,
    /// The IPv6 block prefix length.
    pub block_v6: u8,
    /// The ranges configured with `enable_overlapping_ranges: false` (their blocks are their
    /// own).
    pub own_ranges: Vec<IpNet>,
}

impl Default for NetworkLayout {
    fn default() -> Self {
        NetworkLayout {
            block_v4: DEFAULT_BLOCK_PREFIX_V4,
            block_v6: DEFAULT_BLOCK_PREFIX_V6,
            own_ranges: Vec::new(),
        }
    }
}

/// The block layout of each network, by `network_name`; a network not listed uses the
/// defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Networks(pub HashMap<String, NetworkLayout>);

impl Networks {
    /// The layouts the configurations give (the first configuration of a network decides its
    /// block sizes).
    pub fn from_configs<'a>(configs: impl IntoIterator<Item = &'a IpamConfig>) -> Networks {
        let mut map: HashMap<String, NetworkLayout> = HashMap::new();
        for c in configs {
            let entry = map
                .entry(c.network_name.clone())
                .or_insert_with(|| NetworkLayout {
                    block_v4: c.block_size_v4.unwrap_or(DEFAULT_BLOCK_PREFIX_V4),
                    block_v6: c.block_size_v6.unwrap_or(DEFAULT_BLOCK_PREFIX_V6),
                    own_ranges: Vec::new(),
                });
            if !c.enable_overlapping_ranges {
                entry.own_ranges.extend(c.ranges.iter().map(|r| r.cidr()));
            }
        }
        Networks(map)
    }

    fn of(&self, network: &str) -> NetworkLayout {
        self.0.get(network).cloned().unwrap_or_default()
    }
}

/// What [`import_whereabouts`] does.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Write the blocks; otherwise only report what would be written.
    pub apply: bool,
    /// How each network is cut into blocks.
    pub networks: Networks,
}

/// What an import writes (or would write) into one block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockImport {
    /// The block object's name.
    pub block: String,
    /// The network.
    pub network: String,
    /// The block CIDR.
    pub cidr: String,
    /// Addresses written (or to write), with their holders.
    pub added: Vec<(IpAddr, Owner)>,
    /// Addresses already imported.
    pub present: usize,
}

/// An address two holders claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conflict {
    /// The network.
    pub network: String,
    /// The address.
    pub address: IpAddr,
    /// The Whereabouts object and its holder.
    pub whereabouts: String,
    /// The other holder: a `plexus-ipam` block or another Whereabouts object.
    pub other: String,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let network = if self.network.is_empty() {
            "-"
        } else {
            &self.network
        };
        write!(
            f,
            "{} (network {network}): {} but {}",
            self.address, self.whereabouts, self.other
        )
    }
}

/// What [`import_whereabouts`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// Whether the blocks were written.
    pub applied: bool,
    /// `IPPool`s read.
    pub pools: usize,
    /// `OverlappingRangeIPReservation`s read.
    pub reservations: usize,
    /// Allocations found.
    pub allocations: usize,
    /// Per block: what is (or would be) added.
    pub blocks: Vec<BlockImport>,
    /// Whereabouts records that could not be read (skipped).
    pub unreadable: Vec<String>,
}

impl ImportReport {
    /// Addresses added (or to add) in all.
    pub fn added(&self) -> usize {
        self.blocks.iter().map(|b| b.added.len()).sum()
    }

    /// Addresses already imported in all.
    pub fn present(&self) -> usize {
        self.blocks.iter().map(|b| b.present).sum()
    }
}

/// Why an import failed.
#[derive(Debug, Error)]
pub enum ImportError {
    /// Reading or writing failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// Addresses held by two owners: nothing was written.
    #[error("{} address(es) are held by two owners, nothing was imported:\n  {}",
            .0.len(), .0.iter().map(|c| c.to_string()).collect::<Vec<_>>().join("\n  "))]
    Conflicts(Vec<Conflict>),
}

/// Whereabouts's objects in every namespace: `IPPool`s and reservations (none when its CRDs
/// are not installed).
pub async fn read_whereabouts(
    store: &KubeStore,
) -> Result<(Vec<IpPool>, Vec<OverlappingRangeIpReservation>), StoreError> {
    let client = store.client();
    let pools = list_if_served(client, "ippools.whereabouts.cni.cncf.io").await?;
    let reservations = list_if_served(
        client,
        "overlappingrangeipreservations.whereabouts.cni.cncf.io",
    )
    .await?;
    Ok((pools.unwrap_or_default(), reservations.unwrap_or_default()))
}

/// One block's worth of entries.
struct Target {
    layout: Layout,
    cidr: IpNet,
    entries: BTreeMap<IpAddr, Entry>,
}

/// Imports Whereabouts's allocations into `store`'s blocks (see the module documentation).
pub async fn import_whereabouts(
    store: &KubeStore,
    options: &ImportOptions,
) -> Result<ImportReport, ImportError> {
    let (pools, reservations) = read_whereabouts(store).await?;
    let (entries, unreadable) = whereabouts::entries(&pools, &reservations);
    let mut report = ImportReport {
        applied: options.apply,
        pools: pools.len(),
        reservations: reservations.len(),
        allocations: entries.len(),
        unreadable,
        ..ImportReport::default()
    };

    // Group by block; two Whereabouts holders of one address conflict.
    let mut conflicts = Vec::new();
    let mut targets: BTreeMap<String, Target> = BTreeMap::new();
    for entry in entries {
        let layout = match layout_of(&entry, &options.networks) {
            Ok(layout) => layout,
            Err(e) => {
                report.unreadable.push(format!("{}: {e}", entry.source));
                continue;
            }
        };
        let cidr = layout.block_of(entry.address);
        let name = layout.block_name(cidr);
        let target = targets.entry(name).or_insert_with(|| Target {
            layout,
            cidr,
            entries: BTreeMap::new(),
        });
        match target.entries.get(&entry.address) {
            Some(first) if first.owner.same_attachment(&entry.owner) => {}
            Some(first) => conflicts.push(Conflict {
                network: entry.network.clone(),
                address: entry.address,
                whereabouts: describe(&entry.source, &entry.owner),
                other: describe(&first.source, &first.owner),
            }),
            None => {
                target.entries.insert(entry.address, entry);
            }
        }
    }

    // Compare with the blocks; then write, only when nothing conflicts.
    for write in [false, true] {
        if write && (!options.apply || !conflicts.is_empty()) {
            break;
        }
        let mut blocks = Vec::new();
        for (name, target) in &targets {
            let wanted: BTreeMap<IpAddr, Owner> = target
                .entries
                .iter()
                .map(|(ip, e)| (*ip, e.owner.clone()))
                .collect();
            let merged = store
                .merge_into_block(&target.layout, target.cidr, &wanted, write)
                .await?;
            for held in &merged.conflicts {
                let entry = &target.entries[&held.address];
                conflicts.push(Conflict {
                    network: entry.network.clone(),
                    address: held.address,
                    whereabouts: describe(&entry.source, &entry.owner),
                    other: describe(
                        &format!("IPAMBlock {}/{}", store.namespace(), held.block),
                        &held.holder,
                    ),
                });
            }
            blocks.push(BlockImport {
                block: name.clone(),
                network: target.layout.network.clone(),
                cidr: target.cidr.to_string(),
                added: merged
                    .added
                    .iter()
                    .map(|ip| (*ip, wanted[ip].clone()))
                    .collect(),
                present: merged.present.len(),
            });
        }
        report.blocks = blocks;
    }
    if conflicts.is_empty() {
        Ok(report)
    } else {
        Err(ImportError::Conflicts(conflicts))
    }
}

/// A report as text: one line per address added (or to add), then the totals.
pub fn render(report: &ImportReport) -> String {
    use std::fmt::Write as _;
    let verb = if report.applied {
        "imported"
    } else {
        "would import"
    };
    let mut text = String::new();
    for b in &report.blocks {
        for (ip, o) in &b.added {
            let _ = writeln!(
                text,
                "{verb} {ip} (network {}) for {} {} container {} into {}",
                if b.network.is_empty() {
                    "-"
                } else {
                    &b.network
                },
                o.display(),
                if o.ifname.is_empty() { "-" } else { &o.ifname },
                if o.container_id.is_empty() {
                    "-"
                } else {
                    &o.container_id
                },
                b.block
            );
        }
    }
    for u in &report.unreadable {
        let _ = writeln!(text, "skipped: {u}");
    }
    let _ = writeln!(
        text,
        "{} IPPools, {} reservations, {} allocations: {} {verb}, {} already imported, {} blocks{}",
        report.pools,
        report.reservations,
        report.allocations,
        report.added(),
        report.present(),
        report.blocks.len(),
        if report.applied || report.added() == 0 {
            ""
        } else {
            " (dry run: nothing written; --apply writes)"
        }
    );
    text
}

/// `<source> gives it to <pod> (<interface>, container <id>)`.
fn describe(source: &str, owner: &Owner) -> String {
    let ifname = if owner.ifname.is_empty() {
        "-"
    } else {
        &owner.ifname
    };
    let container = if owner.container_id.is_empty() {
        "-"
    } else {
        &owner.container_id
    };
    format!(
        "{source} gives it to {} ({ifname}, container {container})",
        owner.display()
    )
}

/// The block layout for an entry: its network's sizes; its pool's range when that range's
/// blocks are its own, else (shared by overlapping ranges) its range or, for a reservation,
/// the block around the address.
fn layout_of(entry: &Entry, networks: &Networks) -> Result<Layout, StoreError> {
    let net = networks.of(&entry.network);
    let own = entry
        .range
        .filter(|r| net.own_ranges.iter().any(|o| o.trunc() == *r));
    let cidr = match entry.range {
        Some(range) => range,
        None => {
            let prefix = if entry.address.is_ipv4() {
                net.block_v4
            } else {
                net.block_v6
            };
            IpNet::new(entry.address, prefix)
                .map_err(|e| StoreError::InvalidRange {
                    range: format!("{}/{prefix}", entry.address),
                    reason: e.to_string(),
                })?
                .trunc()
        }
    };
    let range = IpRange::parse(&cidr.to_string(), None, None, &[], None).map_err(|e| {
        StoreError::InvalidRange {
            range: cidr.to_string(),
            reason: e.0,
        }
    })?;
    let pool = Pool {
        network: entry.network.clone(),
        range,
        overlapping: own.is_none(),
    };
    Layout::new(&pool, net.block_v4, net.block_v6)
}
