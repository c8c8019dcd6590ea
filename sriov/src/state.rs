//! The VF's original state, saved before ADD changes anything, so that DEL (also after a crash)
//! and ADD's rollback can put everything back.
//!
//! One file per attachment, `<dataDir>/<containerID>-<ifname>.json`, written crash-safely: a
//! temporary file, fsync, rename over the final name, fsync of the directory. `<dataDir>/<vf
//! pci>.lock` is `flock`ed while an attachment of that VF is made or undone.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::config::VfRequest;
use crate::pf::VfConfig;
use crate::sysfs::Vf;

/// The format version written in every state file.
pub const FORMAT: u32 = 1;

/// Errors of the state files.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading, writing or locking failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
    /// The file is not JSON of a state file.
    #[error("state file {path} is unreadable: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: serde_json::Error,
    },
    /// The file is a state file of another format.
    #[error("state file {path} is unreadable: format {format} (this plugin writes {FORMAT})")]
    Format {
        /// The file.
        path: PathBuf,
        /// The format it says it has.
        format: u32,
    },
    /// The state could not be written as JSON.
    #[error("cannot encode state file {path}: {source}")]
    Encode {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
}

/// The VF netdev as it was in the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostNetdev {
    /// Its name.
    pub name: String,
    /// Its MAC.
    pub mac: Option<String>,
    /// Its MTU.
    pub mtu: Option<u32>,
    /// Whether it was up.
    pub up: bool,
    /// The temporary name it carries while it moves between namespaces.
    pub temp_name: String,
}

/// Everything needed to undo one attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedState {
    /// [`FORMAT`].
    pub format: u32,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_NETNS` at ADD.
    pub netns: String,
    /// The VF, as found in sysfs.
    pub vf: Vf,
    /// The netdev in the host (netdev mode only).
    pub host: Option<HostNetdev>,
    /// The VF's configuration on the PF before ADD.
    pub original: VfConfig,
    /// What ADD sets on the PF (and DEL resets).
    pub requested: VfRequest,
    /// The device-info file ADD created (and DEL removes), if it created one.
    pub device_info_created: Option<PathBuf>,
    /// The pod interface's MAC, once ADD has finished.
    pub pod_mac: Option<String>,
    /// What the runtime handed ADD, so that an attachment whose pod vanished without a DEL can
    /// still be undone in full, its IPAM allocation included. Absent in older state files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<SavedRequest>,
}

/// The parts of ADD's request that a DEL of the same attachment needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedRequest {
    /// Stdin: the network configuration, as the runtime sent it.
    pub stdin: String,
    /// `CNI_ARGS`.
    pub cni_args: String,
    /// `CNI_PATH`, split.
    pub cni_path: Vec<PathBuf>,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// The state directory at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StateDir { dir: dir.into() }
    }

    /// The file of an attachment.
    pub fn path(&self, container_id: &str, ifname: &str) -> PathBuf {
        self.dir.join(format!("{container_id}-{ifname}.json"))
    }

    /// Takes the lock of VF `pci` (blocking), creating the directory when needed. Dropping the
    /// returned guard releases it.
    pub fn lock(&self, pci: &str) -> Result<Flock<File>, StateError> {
        let path = self.dir.join(format!("{pci}.lock"));
        let io = |action, source| StateError::Io {
            action,
            path: path.clone(),
            source,
        };
        fs::create_dir_all(&self.dir).map_err(|e| io("creating the directory of", e))?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io("opening", e))?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| io("locking", e.into()))
    }

    /// Saves a state crash-safely.
    pub fn save(&self, state: &SavedState) -> Result<(), StateError> {
        let path = self.path(&state.container_id, &state.ifname);
        let tmp = self
            .dir
            .join(format!(".{}-{}.tmp", state.container_id, state.ifname));
        let io = |action, p: &Path| {
            let p = p.to_path_buf();
            move |source| StateError::Io {
                action,
                path: p,
                source,
            }
        };
        fs::create_dir_all(&self.dir).map_err(io("creating", &self.dir))?;
        let json = serde_json::to_vec_pretty(state).map_err(|source| StateError::Encode {
            path: path.clone(),
            source,
        })?;
        let mut file = File::create(&tmp).map_err(io("creating", &tmp))?;
        file.write_all(&json).map_err(io("writing", &tmp))?;
        file.sync_all().map_err(io("syncing", &tmp))?;
        drop(file);
        fs::rename(&tmp, &path).map_err(io("renaming onto", &path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing", &self.dir))
    }

    /// Loads the state of an attachment; `Ok(None)` when there is none.
    pub fn load(&self, container_id: &str, ifname: &str) -> Result<Option<SavedState>, StateError> {
        let path = self.path(container_id, ifname);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Io {
                    action: "reading",
                    path,
                    source,
                })
            }
        };
        let state: SavedState =
            serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt {
                path: path.clone(),
                source,
            })?;
        if state.format != FORMAT {
            return Err(StateError::Format {
                path,
                format: state.format,
            });
        }
        Ok(Some(state))
    }

    /// Removes the state of an attachment (a missing file is fine) and syncs the directory.
    pub fn remove(&self, container_id: &str, ifname: &str) -> Result<(), StateError> {
        let path = self.path(container_id, ifname);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(StateError::Io {
                    action: "removing",
                    path,
                    source: e,
                })
            }
            _ => {}
        }
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .or_else(|e| match e.kind() {
                io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            })
            .map_err(|source| StateError::Io {
                action: "syncing",
                path: self.dir.clone(),
                source,
            })
    }

    /// Every readable state file (unreadable ones are skipped: they belong to nobody).
    pub fn all(&self) -> Vec<SavedState> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice::<SavedState>(&b).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysfs::VfMode;

    fn state() -> SavedState {
        SavedState {
            format: FORMAT,
            container_id: "c1".into(),
            ifname: "net1".into(),
            netns: "/run/netns/p".into(),
            vf: Vf {
                pci: "0000:af:06.0".into(),
                pf: "ens1".into(),
                pf_pci: "0000:af:00.1".into(),
                index: 0,
                mode: VfMode::Netdev {
                    netdev: "ens1v0".into(),
                },
            },
            host: None,
            original: VfConfig::default(),
            requested: VfRequest::default(),
            device_info_created: None,
            pod_mac: None,
            request: Some(SavedRequest {
                stdin: r#"{"cniVersion":"1.0.0","name":"n","type":"plexus-sriov"}"#.into(),
                cni_args: "K8S_POD_NAME=p".into(),
                cni_path: vec!["/opt/cni/bin".into()],
            }),
        }
    }

    #[test]
    fn saves_loads_and_removes() {
        let d = tempfile::tempdir().unwrap();
        let dir = StateDir::new(d.path().join("state"));
        assert_eq!(dir.load("c1", "net1").unwrap(), None);
        dir.save(&state()).unwrap();
        assert_eq!(dir.load("c1", "net1").unwrap(), Some(state()));
        assert_eq!(dir.all().len(), 1);
        let _lock = dir.lock("0000:af:06.0").unwrap();
        dir.remove("c1", "net1").unwrap();
        dir.remove("c1", "net1").unwrap();
        assert_eq!(dir.load("c1", "net1").unwrap(), None);
        std::fs::write(dir.path("c2", "net1"), "{").unwrap();
        assert!(matches!(
            dir.load("c2", "net1"),
            Err(StateError::Corrupt { .. })
        ));
    }
}
