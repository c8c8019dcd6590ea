//! Finding a VF's PF, index and netdev (or DPDK driver) in sysfs, under a configurable root.
//!
//! * PF netdev: `<root>/bus/pci/devices/<vf>/physfn/net/*` (the first, by name); the PF's PCI
//!   address is the `physfn` link's target.
//! * VF index: the `N` of the `virtfnN` link under `<root>/class/net/<pf>/device/` (else under
//!   `physfn/`) that points at the VF.
//! * VF netdev: `<root>/bus/pci/devices/<vf>/net/*` (the first, by name).
//! * DPDK: no netdev, and the `driver` link's target is `vfio-pci`, `uio_pci_generic` or `igb_uio`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The drivers that make a VF without a netdev a DPDK VF.
pub const DPDK_DRIVERS: [&str; 3] = ["vfio-pci", "uio_pci_generic", "igb_uio"];

/// Why a PCI device is not a VF this plugin can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotAVf {
    /// The device has no `physfn` link: it is not a VF.
    #[error("no physfn link")]
    NoPhysfn,
    /// The VF's PF has no netdev to configure it through.
    #[error("its PF has no netdev")]
    PfWithoutNetdev,
}

/// Errors of the sysfs lookup.
#[derive(Debug, thiserror::Error)]
pub enum SysfsError {
    /// There is no PCI device with that address.
    #[error("PCI device {0} not found in {1}")]
    NoDevice(String, PathBuf),
    /// The device is not a VF (no `physfn`), or its PF has no netdev.
    #[error("{0} is not an SR-IOV VF with a PF netdev: {1}")]
    NotAVf(String, NotAVf),
    /// The PF lists no `virtfnN` link to the VF.
    #[error("PF {pf} has no virtfn link to {vf}")]
    NoIndex {
        /// The PF's netdev.
        pf: String,
        /// The VF's PCI address.
        vf: String,
    },
    /// The VF has no netdev and no DPDK driver.
    #[error("VF {vf} has no netdev and its driver {driver:?} is not one of vfio-pci, uio_pci_generic, igb_uio")]
    NoNetdev {
        /// The VF's PCI address.
        vf: String,
        /// Its driver, if bound.
        driver: Option<String>,
    },
    /// Reading sysfs failed.
    #[error("reading {path}: {source}")]
    Io {
        /// What was read.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
}

/// How the VF is used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "mode")]
pub enum VfMode {
    /// A kernel netdev, moved into the pod.
    Netdev {
        /// Its name in the host.
        netdev: String,
    },
    /// Bound to a userspace (DPDK) driver; nothing is moved.
    Dpdk {
        /// The driver.
        driver: String,
    },
}

/// A VF found in sysfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vf {
    /// The VF's PCI address.
    pub pci: String,
    /// The PF's netdev name.
    pub pf: String,
    /// The PF's PCI address.
    pub pf_pci: String,
    /// The VF's index on the PF.
    pub index: u32,
    /// Netdev or DPDK.
    #[serde(flatten)]
    pub mode: VfMode,
}

/// The sysfs tree under a root (`/sys`, or a fake one in tests).
#[derive(Debug, Clone)]
pub struct Sysfs {
    root: PathBuf,
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> SysfsError + '_ {
    move |source| SysfsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The names in a directory, sorted; a missing directory has none.
fn names(dir: &Path) -> Result<Vec<String>, SysfsError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        out.push(
            entry
                .map_err(io_error(dir))?
                .file_name()
                .to_string_lossy()
                .into_owned(),
        );
    }
    out.sort();
    Ok(out)
}

/// The last component of a symbolic link's target, if `path` is a link.
fn link_basename(path: &Path) -> Option<String> {
    let target = fs::read_link(path).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

impl Sysfs {
    /// sysfs under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Sysfs { root: root.into() }
    }

    fn device(&self, pci: &str) -> PathBuf {
        self.root.join("bus/pci/devices").join(pci)
    }

    /// Looks the VF with PCI address `pci` up.
    pub fn vf(&self, pci: &str) -> Result<Vf, SysfsError> {
        let device = self.device(pci);
        if !device.exists() {
            return Err(SysfsError::NoDevice(pci.to_string(), self.root.clone()));
        }
        let physfn = device.join("physfn");
        let pf_pci = link_basename(&physfn)
            .ok_or_else(|| SysfsError::NotAVf(pci.to_string(), NotAVf::NoPhysfn))?;
        let pf = names(&physfn.join("net"))?
            .into_iter()
            .next()
            .ok_or_else(|| SysfsError::NotAVf(pci.to_string(), NotAVf::PfWithoutNetdev))?;
        let index = self.index(&pf, &physfn, pci)?;
        let mode = match names(&device.join("net"))?.into_iter().next() {
            Some(netdev) => VfMode::Netdev { netdev },
            None => {
                let driver = link_basename(&device.join("driver"));
                match driver {
                    Some(d) if DPDK_DRIVERS.contains(&d.as_str()) => VfMode::Dpdk { driver: d },
                    driver => {
                        return Err(SysfsError::NoNetdev {
                            vf: pci.to_string(),
                            driver,
                        })
                    }
                }
            }
        };
        Ok(Vf {
            pci: pci.to_string(),
            pf,
            pf_pci,
            index,
            mode,
        })
    }

    /// The VF's index: the `virtfnN` link to it under the PF's netdev device, else under `physfn`.
    fn index(&self, pf: &str, physfn: &Path, vf: &str) -> Result<u32, SysfsError> {
        let by_netdev = self.root.join("class/net").join(pf).join("device");
        for dir in [by_netdev.as_path(), physfn] {
            for name in names(dir)? {
                let Some(n) = name.strip_prefix("virtfn").and_then(|n| n.parse().ok()) else {
                    continue;
                };
                if link_basename(&dir.join(&name)).as_deref() == Some(vf) {
                    return Ok(n);
                }
            }
        }
        Err(SysfsError::NoIndex {
            pf: pf.to_string(),
            vf: vf.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn fake() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let dev = d.path().join("bus/pci/devices");
        fs::create_dir_all(dev.join("0000:af:00.1/net/ens1")).unwrap();
        fs::create_dir_all(dev.join("0000:af:06.0/net/ens1v0")).unwrap();
        fs::create_dir_all(dev.join("0000:af:06.1")).unwrap();
        fs::create_dir_all(d.path().join("bus/pci/drivers/vfio-pci")).unwrap();
        symlink("../0000:af:06.0", dev.join("0000:af:00.1/virtfn0")).unwrap();
        symlink("../0000:af:06.1", dev.join("0000:af:00.1/virtfn1")).unwrap();
        for vf in ["0000:af:06.0", "0000:af:06.1"] {
            symlink("../0000:af:00.1", dev.join(vf).join("physfn")).unwrap();
        }
        symlink(
            "../../../bus/pci/drivers/vfio-pci",
            dev.join("0000:af:06.1/driver"),
        )
        .unwrap();
        d
    }

    #[test]
    fn finds_netdev_and_dpdk_vfs() {
        let d = fake();
        let sys = Sysfs::new(d.path());
        let vf = sys.vf("0000:af:06.0").unwrap();
        assert_eq!(
            (vf.pf.as_str(), vf.pf_pci.as_str(), vf.index),
            ("ens1", "0000:af:00.1", 0)
        );
        assert_eq!(
            vf.mode,
            VfMode::Netdev {
                netdev: "ens1v0".into()
            }
        );
        let vf = sys.vf("0000:af:06.1").unwrap();
        assert_eq!(vf.index, 1);
        assert_eq!(
            vf.mode,
            VfMode::Dpdk {
                driver: "vfio-pci".into()
            }
        );
    }

    #[test]
    fn reports_what_is_missing() {
        let d = fake();
        let sys = Sysfs::new(d.path());
        assert!(matches!(
            sys.vf("0000:af:07.0"),
            Err(SysfsError::NoDevice(..))
        ));
        assert!(matches!(
            sys.vf("0000:af:00.1"),
            Err(SysfsError::NotAVf(..))
        ));
        fs::remove_file(d.path().join("bus/pci/devices/0000:af:06.1/driver")).unwrap();
        assert!(matches!(
            sys.vf("0000:af:06.1"),
            Err(SysfsError::NoNetdev { .. })
        ));
    }
}
