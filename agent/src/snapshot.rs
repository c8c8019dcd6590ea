//! The snapshot of the agent's cache: the node's pods and the NADs, written beside the socket
//! (`plexusd-cache.json`, mode 0600) once the watches have listed and then whenever they saw
//! changes, at most every [`EVERY`]; loaded at start, so that a restarted agent serves warm
//! while its watches list again. A pod known only from the snapshot is served only for the UID
//! asked for ([`crate::cache::Cache::pod`]).

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::cache::{read, Cache, Key, PodMeta};

/// How often the snapshot is written at most.
pub const EVERY: Duration = Duration::from_secs(5);

/// The snapshot's file name, in the socket's directory.
pub const FILE_NAME: &str = "plexusd-cache.json";

/// What the file holds.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// The node the pods are of.
    pub node: String,
    /// The node's pods: namespace, name, metadata.
    pub pods: Vec<(String, String, PodMeta)>,
    /// The NADs: namespace, name, JSON.
    pub nads: Vec<(String, String, String)>,
}

/// The snapshot file of the agent listening on `socket`.
pub fn beside(socket: &Path) -> PathBuf {
    socket.with_file_name(FILE_NAME)
}

/// The pods and NADs of the snapshot at `path` for `node`; nothing when there is none, it is
/// unreadable, or of another node.
pub fn load(path: &Path, node: &str) -> (HashMap<Key, PodMeta>, HashMap<Key, String>) {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) => {
            debug!("no snapshot at {}: {e}", path.display());
            return Default::default();
        }
    };
    let snapshot: Snapshot = match serde_json::from_slice(&text) {
        Ok(s) => s,
        Err(e) => {
            warn!(
                "the snapshot {} is unreadable, starting cold: {e}",
                path.display()
            );
            return Default::default();
        }
    };
    if snapshot.node != node {
        return Default::default();
    }
    info!(
        "starting warm from {}: {} pods, {} NADs",
        path.display(),
        snapshot.pods.len(),
        snapshot.nads.len()
    );
    let pods = snapshot
        .pods
        .into_iter()
        .map(|(ns, name, pod)| ((ns, name), pod))
        .collect();
    let nads = snapshot
        .nads
        .into_iter()
        .map(|(ns, name, nad)| ((ns, name), nad))
        .collect();
    (pods, nads)
}

/// Writes the cache's listed tables to `path` (a temporary file renamed over it).
pub fn save(path: &Path, cache: &Cache) -> std::io::Result<()> {
    let snapshot = {
        let pods = read(&cache.pods);
        let nads = read(&cache.nads);
        Snapshot {
            node: cache.node().to_string(),
            pods: pods
                .entries()
                .iter()
                .map(|((ns, name), p)| (ns.clone(), name.clone(), p.clone()))
                .collect(),
            nads: nads
                .entries()
                .iter()
                .map(|((ns, name), n)| (ns.clone(), name.clone(), n.clone()))
                .collect(),
        }
    };
    let text = serde_json::to_vec(&snapshot).map_err(std::io::Error::other)?;
    let temporary = path.with_extension("json.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(&text)?;
    drop(file);
    std::fs::rename(&temporary, path)
}

/// Writes the snapshot once both watches have listed, then whenever they changed, at most every
/// [`EVERY`].
pub fn spawn_saver(path: PathBuf, cache: Arc<Cache>) {
    tokio::spawn(async move {
        let mut saved = None;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let (listed, changes) = {
                let (pods, nads) = (read(&cache.pods), read(&cache.nads));
                (
                    pods.listed() && nads.listed(),
                    pods.changes() + nads.changes(),
                )
            };
            if !listed || saved == Some(changes) {
                continue;
            }
            match save(&path, &cache) {
                Ok(()) => saved = Some(changes),
                Err(e) => warn!("cannot write the snapshot {}: {e}", path.display()),
            }
            tokio::time::sleep(EVERY).await;
        }
    });
}
