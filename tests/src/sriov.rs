//! A fake sysfs for `plexus-sriov`: PFs and VFs as sriov-cni's own tests lay them out, under a
//! temporary root given to the plugin as `sysfsRoot`.
//!
//! ```no_run
//! # use plexus_tests::sriov::FakeSysfs;
//! let dir = tempfile::tempdir().unwrap();
//! let sys = FakeSysfs::new(dir.path().join("sys"))
//!     .pf("0000:af:00.1", "enp175s0f1")
//!     .vf("0000:af:00.1", 0, "0000:af:06.0", Some("pxvf0"))
//!     .dpdk_vf("0000:af:00.1", 1, "0000:af:06.1", "vfio-pci");
//! ```
//!
//! A netdev VF's "netdev" is whatever link the test names, normally one end of a real veth pair
//! in the namespace `plexus-sriov` runs in.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// A fake sysfs tree (`bus/pci/devices`, `bus/pci/drivers`, `class/net`).
#[derive(Debug, Clone)]
pub struct FakeSysfs {
    root: PathBuf,
}

impl FakeSysfs {
    /// An empty tree at `root` (created). Panics on failure (it is test code).
    pub fn new(root: impl Into<PathBuf>) -> FakeSysfs {
        let root = root.into();
        for dir in ["bus/pci/devices", "bus/pci/drivers", "class/net"] {
            fs::create_dir_all(root.join(dir)).expect("create the fake sysfs");
        }
        FakeSysfs { root }
    }

    /// The root, for the plugin's `sysfsRoot`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn device(&self, pci: &str) -> PathBuf {
        self.root.join("bus/pci/devices").join(pci)
    }

    /// Adds a PF with PCI address `pci` and netdev `netdev` (`sriov_numvfs` 0).
    pub fn pf(self, pci: &str, netdev: &str) -> FakeSysfs {
        let dev = self.device(pci);
        fs::create_dir_all(dev.join("net").join(netdev)).expect("create the PF");
        fs::write(dev.join("sriov_numvfs"), "0\n").expect("write sriov_numvfs");
        link(
            &format!("../../../bus/pci/devices/{pci}"),
            &self.root.join("class/net").join(netdev).join("device"),
        );
        self.driver(pci, "ice")
    }

    /// Adds VF number `index` of the PF at `pf_pci`, with PCI address `pci`, bound to `iavf`,
    /// with the netdev `netdev` (or none).
    pub fn vf(self, pf_pci: &str, index: u32, pci: &str, netdev: Option<&str>) -> FakeSysfs {
        let dev = self.device(pci);
        fs::create_dir_all(&dev).expect("create the VF");
        if let Some(netdev) = netdev {
            fs::create_dir_all(dev.join("net").join(netdev)).expect("create the VF netdev");
        }
        link(&format!("../{pf_pci}"), &dev.join("physfn"));
        let pf = self.device(pf_pci);
        link(&format!("../{pci}"), &pf.join(format!("virtfn{index}")));
        let count = fs::read_dir(&pf)
            .expect("read the PF")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("virtfn"))
            .count();
        fs::write(pf.join("sriov_numvfs"), format!("{count}\n")).expect("write sriov_numvfs");
        self.driver(pci, "iavf")
    }

    /// Adds VF number `index` of the PF at `pf_pci` bound to the DPDK driver `driver` (no netdev).
    pub fn dpdk_vf(self, pf_pci: &str, index: u32, pci: &str, driver: &str) -> FakeSysfs {
        self.vf(pf_pci, index, pci, None).driver(pci, driver)
    }

    /// Binds the device at `pci` to `driver` (replacing its `driver` link).
    pub fn driver(self, pci: &str, driver: &str) -> FakeSysfs {
        fs::create_dir_all(self.root.join("bus/pci/drivers").join(driver)).expect("driver dir");
        let at = self.device(pci).join("driver");
        let _ = fs::remove_file(&at);
        link(&format!("../../../bus/pci/drivers/{driver}"), &at);
        self
    }
}

fn link(target: &str, at: &Path) {
    if let Some(parent) = at.parent() {
        fs::create_dir_all(parent).expect("create a link's directory");
    }
    let _ = fs::remove_file(at);
    symlink(target, at).unwrap_or_else(|e| panic!("link {} -> {target}: {e}", at.display()));
}
