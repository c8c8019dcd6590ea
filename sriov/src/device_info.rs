//! The device-info file (NPWG device-info specification 1.1.0) at
//! `runtimeConfig.CNIDeviceInfoFile`.
//!
//! * Netdev mode: a file that is already there (copied from the device plugin's) is left alone;
//!   otherwise one with `pci-address` and `pf-pci-address` is written, so the network status
//!   always has device information.
//! * DPDK mode: the file is written (or the existing one extended and replaced) with the key
//!   [`DPDK_KEY`]: `{"driver": "vfio-pci", "addressesApplied": false, "addresses": [...]}`,
//!   telling the application which addresses IPAM allocated, because nothing applies them.
//!
//! Files are mode 0444 and replaced atomically (temporary file, fsync, rename).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde_json::{json, Map, Value};

use crate::sysfs::Vf;

/// The extension key of a DPDK VF's device-info.
pub const DPDK_KEY: &str = "cni.plexus.dev/dpdk";

/// Writes the device-info of a netdev VF unless the file exists; returns whether it wrote one.
pub fn write_netdev(path: &Path, vf: &Vf) -> io::Result<bool> {
    if path.exists() {
        return Ok(false);
    }
    write_atomic(path, &base(Map::new(), vf))?;
    Ok(true)
}

/// Writes (or extends and replaces) the device-info of a DPDK VF; returns whether the file is
/// new.
pub fn write_dpdk(path: &Path, vf: &Vf, driver: &str, addresses: &[String]) -> io::Result<bool> {
    let existing = match fs::read(path) {
        Ok(bytes) => Some(serde_json::from_slice::<Value>(&bytes).ok()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let created = existing.is_none();
    let start = match existing.flatten() {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let mut info = base(start, vf);
    info.insert(
        DPDK_KEY.into(),
        json!({"driver": driver, "addressesApplied": false, "addresses": addresses}),
    );
    write_atomic(path, &info)?;
    Ok(created)
}

/// `start` with `type`, `version` and the PCI addresses filled in where missing.
fn base(mut info: Map<String, Value>, vf: &Vf) -> Map<String, Value> {
    info.entry("type").or_insert_with(|| json!("pci"));
    info.entry("version").or_insert_with(|| json!("1.1.0"));
    let pci = info.entry("pci").or_insert_with(|| json!({}));
    if let Value::Object(pci) = pci {
        pci.entry("pci-address").or_insert_with(|| json!(vf.pci));
        pci.entry("pf-pci-address")
            .or_insert_with(|| json!(vf.pf_pci));
    }
    info
}

/// Writes `info` to `path` with mode 0444, replacing any file there atomically.
fn write_atomic(path: &Path, info: &Map<String, Value>) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(&tmp)?;
    file.write_all(&serde_json::to_vec(info).map_err(io::Error::other)?)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysfs::VfMode;
    use std::os::unix::fs::PermissionsExt;

    fn vf() -> Vf {
        Vf {
            pci: "0000:af:06.1".into(),
            pf: "ens1".into(),
            pf_pci: "0000:af:00.1".into(),
            index: 1,
            mode: VfMode::Dpdk {
                driver: "vfio-pci".into(),
            },
        }
    }

    #[test]
    fn netdev_keeps_an_existing_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("cni/dev.json");
        assert!(write_netdev(&p, &vf()).unwrap());
        let v: Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
        assert_eq!(v["pci"]["pf-pci-address"], "0000:af:00.1");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o444
        );
        assert!(!write_netdev(&p, &vf()).unwrap());
    }

    #[test]
    fn dpdk_extends_and_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("dev.json");
        fs::write(&p, r#"{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:af:06.1","rdma-device":"x"}}"#).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o444)).unwrap();
        assert!(!write_dpdk(&p, &vf(), "vfio-pci", &["10.0.0.2/24".into()]).unwrap());
        let v: Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
        assert_eq!(v["pci"]["rdma-device"], "x");
        assert_eq!(v["pci"]["pf-pci-address"], "0000:af:00.1");
        assert_eq!(v[DPDK_KEY]["addressesApplied"], false);
        assert_eq!(v[DPDK_KEY]["addresses"][0], "10.0.0.2/24");
    }
}
