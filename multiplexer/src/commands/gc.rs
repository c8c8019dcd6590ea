//! GC: tear down cache entries of containers that are no longer valid, then forward GC to
//! every delegate network with the attachments that are still valid on it.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use plexus_cni::config::NetworkConfigList;
use plexus_cni::list::{self, valid_attachments, Attachment};
use plexus_cni::{CniError, ErrorCode};
use serde_json::{Map, Value};

use crate::cache::CacheEntry;
use crate::execute::{teardown, DelegateEnv};
use crate::parse::Invocation;
use crate::resolve;

/// Runs GC. Every step is attempted; all failures are reported together.
pub(super) async fn run(inv: &Invocation, config: &Map<String, Value>) -> Result<(), CniError> {
    let valid: HashSet<String> = valid_attachments(config)?
        .into_iter()
        .map(|a| a.container_id)
        .collect();
    let mut failures: Vec<String> = Vec::new();
    let mut live: Vec<CacheEntry> = Vec::new();
    for id in inv.cache.container_ids()? {
        match inv.cache.load(&id) {
            Ok(Some(entry)) if valid.contains(&id) => live.push(entry),
            Ok(Some(entry)) => failures.extend(remove_stale(inv, &entry).await),
            Ok(None) => {}
            Err(e) if valid.contains(&id) => failures.push(e.to_string()),
            Err(_) => {
                // Unreadable and not valid: nothing can be torn down from it any more.
                if let Err(e) = inv.cache.remove(&id) {
                    failures.push(e.to_string());
                }
            }
        }
    }

    // Every network Plexus knows of, with the attachments still valid on it.
    let mut networks: BTreeMap<String, NetworkConfigList> = BTreeMap::new();
    if let Ok(delegates) = resolve::static_delegates(&inv.config) {
        for d in delegates {
            networks.entry(d.network.name.clone()).or_insert(d.network);
        }
    }
    let mut in_use: BTreeMap<String, BTreeSet<Attachment>> = BTreeMap::new();
    for entry in &live {
        for a in &entry.attachments {
            if let Ok(n) = NetworkConfigList::from_bytes(a.config.as_bytes()) {
                networks.entry(n.name.clone()).or_insert(n);
            }
            in_use
                .entry(a.network.clone())
                .or_default()
                .insert(Attachment {
                    container_id: entry.container_id.clone(),
                    ifname: a.ifname.clone(),
                });
        }
    }
    for (name, network) in &networks {
        let valid: Vec<Attachment> = in_use
            .get(name)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        if let Err(fs) = list::gc(network, &inv.plugin_dirs, &valid, inv.delegate_timeout).await {
            failures.extend(fs.iter().map(|f| f.to_cni_error().msg));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            ErrorCode::TeardownIncomplete,
            format!("garbage collection incomplete: {}", failures.join("; ")),
        ))
    }
}

/// Tears down a stale container's attachments and drops its entry when that worked.
async fn remove_stale(inv: &Invocation, entry: &CacheEntry) -> Vec<String> {
    let env = DelegateEnv::for_entry(entry, inv.plugin_dirs.clone(), inv.delegate_timeout);
    let failures = teardown::detach_all(&entry.attachments, &env).await;
    crate::devices::device_info::remove_all(&entry.attachments);
    if !failures.is_empty() {
        return failures.0.iter().map(ToString::to_string).collect();
    }
    match inv.cache.remove(&entry.container_id) {
        Ok(()) => Vec::new(),
        Err(e) => vec![e.to_string()],
    }
}
