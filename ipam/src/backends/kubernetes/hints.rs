//! The node's affinity hints: a small local file per pool that remembers which blocks this
//! node holds (with its Lease's `resourceVersion` and renewal time) and which block each
//! attachment was put in, so that the common ADD goes straight to a block (GET + replace, no
//! LIST) and a repeated ADD or a DEL finds its block.
//!
//! Hints are **only an optimisation**: nothing about correctness rests on them. A hint may be
//! stale, lost or wrong (another node took the block over, the file was deleted); the worst
//! outcome is an extra round trip or an address taken from a block this node no longer holds,
//! which is still a compare-and-swap write on that block.
//!
//! The file is `<dir>/<API server>/<namespace>/<node>/<pool key>.json`. Every change holds an
//! exclusive `flock` on `<pool key>.lock` while it re-reads, changes and writes the file; the
//! write goes to a temporary file that is renamed over the old one, so a reader (which takes no
//! lock) or a process killed at any point sees a whole file. A missing or unreadable file reads
//! as "no hints".

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::layout::to_u128;
use crate::store::Owner;

/// What the node remembers of one pool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hints {
    /// The blocks this node holds the Lease of, by block name.
    #[serde(default)]
    pub blocks: BTreeMap<String, BlockHint>,
    /// The block each attachment was last put in, by [`attachment_key`].
    #[serde(default)]
    pub attachments: BTreeMap<String, AttachmentHint>,
}

/// A block held by this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockHint {
    /// The block CIDR.
    pub cidr: IpNet,
    /// The `resourceVersion` of its Lease as this node last wrote it.
    pub lease_version: String,
    /// When this node acquired the Lease (Unix seconds).
    pub acquired: i64,
    /// When this node last renewed the Lease (Unix seconds, this node's clock).
    pub renewed: i64,
    /// Whether the block had no free address when last read.
    #[serde(default)]
    pub full: bool,
}

/// The block an attachment was put in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentHint {
    /// The block name.
    pub block: String,
    /// The container ID it was put there for.
    pub container_id: String,
    /// The interface.
    pub ifname: String,
}

impl Hints {
    /// The held blocks, lowest address first.
    pub fn blocks_in_order(&self) -> Vec<(String, BlockHint)> {
        let mut blocks: Vec<_> = self
            .blocks
            .iter()
            .map(|(n, h)| (n.clone(), h.clone()))
            .collect();
        blocks.sort_by_key(|(_, h)| to_u128(h.cidr.network()));
        blocks
    }
}

/// The key of an attachment: the pod and interface (as [`Owner::same_attachment`] matches),
/// or the container and interface outside Kubernetes.
pub fn attachment_key(owner: &Owner) -> String {
    if owner.pod_name.is_empty() {
        format!("ctr/{}/{}", owner.container_id, owner.ifname)
    } else {
        format!(
            "pod/{}/{}/{}",
            owner.pod_namespace, owner.pod_name, owner.ifname
        )
    }
}

/// One pool's hint file.
#[derive(Debug, Clone)]
pub struct HintFile {
    path: PathBuf,
}

impl HintFile {
    /// The hint file of pool `key` for `node`, in `dir`, for the cluster at `server`, objects in
    /// `namespace`.
    pub fn new(dir: &Path, server: &str, namespace: &str, node: &str, key: &str) -> HintFile {
        let path = dir
            .join(file_part(server))
            .join(file_part(namespace))
            .join(file_part(node))
            .join(format!("{}.json", file_part(key)));
        HintFile { path }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The hints; none when the file is missing or unreadable.
    pub fn load(&self) -> Hints {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!("ignoring unreadable hint file {}: {e}", self.path.display());
                Hints::default()
            }),
            Err(_) => Hints::default(),
        }
    }

    /// Re-reads the file under its lock, applies `change` and writes the result; returns the
    /// hints as changed. A failure to write is logged, not returned: hints are an optimisation.
    pub fn update(&self, change: impl FnOnce(&mut Hints)) -> Hints {
        let lock = self.lock();
        let mut hints = self.load();
        let before = hints.clone();
        change(&mut hints);
        if hints != before {
            if let Err(e) = self.write(&hints) {
                tracing::warn!("cannot write hint file {}: {e}", self.path.display());
            }
        }
        drop(lock);
        hints
    }

    /// The exclusive lock of the file, when it can be taken.
    fn lock(&self) -> Option<Flock<File>> {
        let dir = self.path.parent()?;
        std::fs::create_dir_all(dir).ok()?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.path.with_extension("lock"))
            .ok()?;
        Flock::lock(file, FlockArg::LockExclusive).ok()
    }

    /// Writes `hints` to a temporary file and renames it over the file.
    fn write(&self, hints: &Hints) -> std::io::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let mut file = File::create(&tmp)?;
        file.write_all(&serde_json::to_vec(hints).map_err(std::io::Error::other)?)?;
        drop(file);
        std::fs::rename(&tmp, &self.path)
    }
}

/// `s` as one path component: `[A-Za-z0-9.-]` kept, anything else `_`.
fn file_part(s: &str) -> String {
    let part: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    match part.as_str() {
        "" | "." | ".." => format!("_{part}"),
        _ => part,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_survive_a_round_trip_and_a_missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let file = HintFile::new(
            dir.path(),
            "https://127.0.0.1:6443",
            "kube-system",
            "n1",
            "k",
        );
        assert!(file
            .path()
            .ends_with("https___127.0.0.1_6443/kube-system/n1/k.json"));
        assert_eq!(file.load(), Hints::default());
        let hint = BlockHint {
            cidr: "10.0.0.64/26".parse().unwrap(),
            lease_version: "5".into(),
            acquired: 1,
            renewed: 2,
            full: false,
        };
        let low = BlockHint {
            cidr: "10.0.0.0/26".parse().unwrap(),
            ..hint.clone()
        };
        file.update(|h| {
            h.blocks.insert("b".into(), hint.clone());
            h.blocks.insert("a".into(), low.clone());
        });
        let loaded = file.load();
        let order: Vec<_> = loaded
            .blocks_in_order()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(order, ["a", "b"]);
        std::fs::write(file.path(), "{not json").unwrap();
        assert_eq!(file.load(), Hints::default());
    }

    #[test]
    fn attachments_are_keyed_by_pod_or_container() {
        let mut owner = Owner {
            pod_namespace: "ns".into(),
            pod_name: "p".into(),
            pod_uid: String::new(),
            container_id: "c".into(),
            ifname: "net1".into(),
            node: String::new(),
            claim: String::new(),
        };
        assert_eq!(attachment_key(&owner), "pod/ns/p/net1");
        owner.pod_name.clear();
        assert_eq!(attachment_key(&owner), "ctr/c/net1");
        assert_eq!(file_part(".."), "_..");
    }
}
