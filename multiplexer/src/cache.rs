//! The attachment cache: what a pod was attached to, kept so that DEL always reaches every
//! delegate with exactly its ADD-time configuration, even after a crash or a reboot.
//!
//! One file per container, `<cniDir>/<containerID>`, mode 0600 in a 0700 directory, written
//! atomically (temporary file, fsync, rename, fsync of the directory). Format, version 1:
//!
//! ```json
//! {
//!   "kind": "plexusCacheV1",
//!   "containerID": "…",
//!   "netns": "/var/run/netns/…",
//!   "cniArgs": "IgnoreUnknown=1;K8S_POD_NAMESPACE=…",
//!   "cniVersion": "1.0.0",
//!   "attachments": [
//!     {
//!       "network": "cbr0",
//!       "ifname": "eth0",
//!       "primary": true,
//!       "config": "<the delegate's configuration, the exact JSON text it ran with>",
//!       "capabilityArgs": { "portMappings": [] },
//!       "result": { "cniVersion": "1.0.0", "interfaces": [], "ips": [] },
//!       "statusName": "cbr0"
//!     }
//!   ]
//! }
//! ```
//!
//! The file is written before the first delegate runs (with no `result`s) and again, with every
//! `result`, once all delegates have succeeded. Hot-plug (`hotplug/`) writes it the same way
//! around each attachment it adds (appended without a `result`, then with it) and after each
//! one it removes, so the runtime's DEL tears down hot-plugged attachments too.
//!
//! An attachment's identity is its interface name in the pod, with its network: `statusName`
//! (its name in the network-status annotation, `<namespace>/<nad>` for a NAD) and `selected`
//! (true when the pod's networks annotation asked for it, the attachments hot-plug reconciles).
//! Entries written before these keys existed have neither: their pods are not hot-plugged (their
//! attachments cannot be matched with the annotation's elements).
//!
//! `capabilityArgs` holds what each delegate was offered, so DEL offers the same: the runtime's
//! and the pod annotation's arguments, `deviceID` for an attachment with a device-plugin device,
//! and `CNIDeviceInfoFile`, the attachment's device-info file, which DEL also removes (entries
//! written before device-info support have none, and there is nothing to remove).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use plexus_cni::config::NetworkConfigList;
use plexus_cni::{CniError, ErrorCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;

/// The `kind` of a version-1 cache file.
pub const CACHE_KIND: &str = "plexusCacheV1";

/// A cache file could not be used.
#[derive(Debug, Error)]
pub enum CacheError {
    /// Reading or writing failed.
    #[error("attachment cache {path:?}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a cache file Plexus can read.
    #[error("attachment cache {path:?} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl From<CacheError> for CniError {
    fn from(e: CacheError) -> Self {
        CniError::new(ErrorCode::CacheFailure, e.to_string())
    }
}

/// One cached attachment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedAttachment {
    /// The delegate network's name.
    pub network: String,
    /// The interface name in the pod.
    pub ifname: String,
    /// True for the primary network.
    #[serde(default)]
    pub primary: bool,
    /// The delegate configuration, as the exact JSON text it ran with.
    pub config: String,
    /// The capability arguments it was offered.
    #[serde(rename = "capabilityArgs", default)]
    pub capability_args: Map<String, Value>,
    /// Its ADD result, once it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Its name in the network-status annotation (none in entries written before it was kept).
    #[serde(
        rename = "statusName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub status_name: Option<String>,
    /// True when the pod's networks annotation asked for it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub selected: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl CachedAttachment {
    /// Its name in the network-status annotation.
    pub fn status_name(&self) -> &str {
        self.status_name.as_deref().unwrap_or(&self.network)
    }

    /// The cached configuration, parsed (code 16 when it does not parse).
    pub fn network_config(&self) -> Result<NetworkConfigList, CniError> {
        NetworkConfigList::from_bytes(self.config.as_bytes()).map_err(|e| {
            CniError::new(
                ErrorCode::CacheFailure,
                format!(
                    "cached configuration of {} ({}) is unreadable: {e}",
                    self.ifname, self.network
                ),
            )
        })
    }
}

/// What a container is attached to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// Always [`CACHE_KIND`].
    pub kind: String,
    /// The container ID.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// The network namespace at ADD.
    #[serde(default)]
    pub netns: String,
    /// `CNI_ARGS` at ADD.
    #[serde(rename = "cniArgs", default)]
    pub cni_args: String,
    /// Plexus's own version at ADD.
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    /// The attachments, in ADD order.
    pub attachments: Vec<CachedAttachment>,
}

impl CacheEntry {
    /// Reads container `container_id`'s entry from the bytes of its file `path` (named in
    /// errors): it must be a version-1 entry of that container.
    pub fn from_bytes(path: &Path, container_id: &str, bytes: &[u8]) -> Result<Self, CacheError> {
        let corrupt = |reason: String| CacheError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let entry: CacheEntry =
            serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        if entry.kind != CACHE_KIND {
            return Err(corrupt(format!("unknown kind {:?}", entry.kind)));
        }
        if entry.container_id != container_id {
            return Err(corrupt(format!(
                "it belongs to container {:?}",
                entry.container_id
            )));
        }
        Ok(entry)
    }
}

/// The cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// The cache in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Cache { dir: dir.into() }
    }

    /// The file of a container.
    pub fn path(&self, container_id: &str) -> PathBuf {
        self.dir.join(container_id)
    }

    /// Reads a container's entry; `None` when there is none.
    pub fn load(&self, container_id: &str) -> Result<Option<CacheEntry>, CacheError> {
        let path = self.path(container_id);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CacheError::Io { path, source }),
        };
        CacheEntry::from_bytes(&path, container_id, &bytes).map(Some)
    }

    /// Writes a container's entry atomically: a crash leaves the old file or the new one,
    /// never a mix.
    pub fn store(&self, entry: &CacheEntry) -> Result<(), CacheError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CacheError::Io { path, source }
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io(&self.dir))?;
        let path = self.path(&entry.container_id);
        let tmp = self.dir.join(format!(
            ".{}.tmp-{}",
            entry.container_id,
            std::process::id()
        ));
        let bytes = serde_json::to_vec_pretty(entry).map_err(|e| CacheError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|source| {
            let _ = fs::remove_file(&tmp);
            CacheError::Io {
                path: path.clone(),
                source,
            }
        })
    }

    /// Removes a container's entry; a missing one is fine.
    pub fn remove(&self, container_id: &str) -> Result<(), CacheError> {
        let path = self.path(container_id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(CacheError::Io { path, source }),
        }
    }

    /// The container IDs that have an entry (leftover temporary files are not entries).
    pub fn container_ids(&self) -> Result<Vec<String>, CacheError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(CacheError::Io {
                    path: self.dir.clone(),
                    source,
                })
            }
        };
        let mut ids: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| plexus_cni::env::validate_container_id(n).is_ok())
            .collect();
        ids.sort();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> CacheEntry {
        CacheEntry {
            kind: CACHE_KIND.into(),
            container_id: id.into(),
            netns: "/run/netns/x".into(),
            cni_args: String::new(),
            cni_version: "1.0.0".into(),
            attachments: vec![CachedAttachment {
                network: "n".into(),
                ifname: "eth0".into(),
                primary: true,
                config: r#"{"cniVersion":"1.0.0","name":"n","type":"bridge","x":1.50}"#.into(),
                capability_args: Map::new(),
                result: None,
                status_name: None,
                selected: false,
            }],
        }
    }

    #[test]
    fn stores_loads_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join("c"));
        assert_eq!(cache.load("abc").unwrap(), None);
        cache.store(&entry("abc")).unwrap();
        assert_eq!(cache.load("abc").unwrap(), Some(entry("abc")));
        assert_eq!(cache.container_ids().unwrap(), ["abc"]);
        cache.remove("abc").unwrap();
        cache.remove("abc").unwrap();
        assert!(cache.container_ids().unwrap().is_empty());
    }

    #[test]
    fn corrupt_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        for bad in [
            "",
            "{",
            "[]",
            r#"{"kind":"other","containerID":"abc","attachments":[]}"#,
            r#"{"kind":"plexusCacheV1","containerID":"zzz","attachments":[]}"#,
        ] {
            std::fs::write(dir.path().join("abc"), bad).unwrap();
            let e = cache.load("abc").unwrap_err();
            assert_eq!(CniError::from(e).code, 104, "{bad}");
        }
    }
}
