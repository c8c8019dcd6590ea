//! Device-info files (device-info specification 1.1): a device plugin describes each device it
//! hands out in `<deviceInfoDir>/dp/<resource>-<deviceID>-device.json`; before a delegate's ADD,
//! Plexus copies the description of the attachment's device to the CNI-side file
//! `<deviceInfoDir>/cni/<network>-<containerID>_<ifname>` and offers its path to the delegate
//! (capability `CNIDeviceInfoFile`), which may add to it or write it itself. After ADD its
//! content goes into the attachment's `device-info` in the network-status annotation; DEL (and
//! a rollback) removes it. In every name, `/` becomes `-`.
//!
//! The path is offered to every attachment and kept with the attachment's capability arguments
//! in the cache, so DEL finds it without asking anyone. Like Multus, failing to copy, read or
//! remove a device-info file is logged, never fatal.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::cache::CachedAttachment;
use crate::plan::PlannedAttachment;

/// The capability (`runtimeConfig` key) under which a delegate gets the CNI-side file's path.
pub const CAPABILITY: &str = "CNIDeviceInfoFile";

fn flat(name: &str) -> String {
    name.replace('/', "-")
}

/// The device plugin's file for a device: `<dir>/dp/<resource>-<deviceID>-device.json`.
pub fn dp_path(dir: &Path, resource_name: &str, device_id: &str) -> PathBuf {
    dir.join("dp").join(format!(
        "{}-{}-device.json",
        flat(resource_name),
        flat(device_id)
    ))
}

/// The CNI-side file of an attachment: `<dir>/cni/<network>-<containerID>_<ifname>`, where
/// `network` is its name in the network-status annotation (`namespace/nad`).
pub fn cni_path(dir: &Path, network: &str, container_id: &str, ifname: &str) -> PathBuf {
    dir.join("cni")
        .join(flat(&format!("{network}-{container_id}_{ifname}")))
}

/// Offers an attachment (`network` as the network-status names it, interface `ifname`) its
/// CNI-side file, in its capability arguments.
pub fn offer(
    capability_args: &mut Map<String, Value>,
    dir: &Path,
    network: &str,
    container_id: &str,
    ifname: &str,
) {
    let path = cni_path(dir, network, container_id, ifname);
    capability_args.insert(
        CAPABILITY.into(),
        Value::String(path.to_string_lossy().into_owned()),
    );
}

/// The CNI-side file offered in these capability arguments, if any.
pub fn offered(capability_args: &Map<String, Value>) -> Option<PathBuf> {
    capability_args
        .get(CAPABILITY)
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// Before an attachment's ADD: removes a stale CNI-side file and, when the attachment uses a
/// device, copies the device plugin's description of it there (mode 0444).
pub fn prepare(attachment: &PlannedAttachment, dir: &Path) {
    let Some(cni) = offered(&attachment.capability_args) else {
        return;
    };
    remove(&cni);
    let Some(device) = &attachment.device else {
        return;
    };
    let dp = dp_path(dir, &device.resource_name, &device.device_id);
    let content = match fs::read(&dp) {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!("no device-info file {dp:?} for {}: {e}", device.device_id);
            return;
        }
    };
    if let Err(e) = write_read_only(&cni, &content) {
        tracing::warn!("copying device-info {dp:?} to {cni:?}: {e}");
    }
}

fn write_read_only(path: &Path, content: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)?;
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(path)?;
    f.write_all(content)?;
    f.sync_all()
}

/// After ADD: the content of the attachment's CNI-side file, when there is one and it is JSON.
pub fn read(capability_args: &Map<String, Value>) -> Option<Value> {
    let path = offered(capability_args)?;
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!("reading device-info {path:?}: {e}");
            return None;
        }
    };
    serde_json::from_slice(&bytes)
        .inspect_err(|e| tracing::warn!("device-info {path:?} is not JSON: {e}"))
        .ok()
}

/// Removes a CNI-side file; a missing one is fine.
fn remove(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("removing device-info {path:?}: {e}"),
    }
}

/// At DEL and rollback: removes the CNI-side files of these cached attachments.
pub fn remove_all(attachments: &[CachedAttachment]) {
    for path in attachments
        .iter()
        .filter_map(|a| offered(&a.capability_args))
    {
        remove(&path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::Device;
    use crate::plan::Delegate;
    use serde_json::json;

    #[test]
    fn paths() {
        let dir = Path::new("/var/run/k8s.cni.cncf.io/devinfo");
        assert_eq!(
            dp_path(dir, "intel.com/sriov_net", "0000:03:02.3"),
            Path::new(
                "/var/run/k8s.cni.cncf.io/devinfo/dp/intel.com-sriov_net-0000:03:02.3-device.json"
            )
        );
        assert_eq!(
            cni_path(dir, "default/sriov-a", "abc123", "net1"),
            Path::new("/var/run/k8s.cni.cncf.io/devinfo/cni/default-sriov-a-abc123_net1")
        );
        // A device ID from a pod annotation cannot leave the directory.
        let p = dp_path(dir, "x", "../../etc/passwd");
        assert_eq!(p.parent().unwrap(), dir.join("dp"));
    }

    #[test]
    fn copy_read_and_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut d = Delegate::from_value(
            json!({"cniVersion": "1.0.0", "name": "sriov-a", "type": "sriov"}),
            "",
            false,
        )
        .unwrap();
        d.status_name = "ns/sriov-a".into();
        d.device = Some(Device {
            resource_name: "intel.com/vf".into(),
            device_id: "0000:03:02.3".into(),
        });
        let mut plan = [PlannedAttachment {
            network: d.network,
            ifname: "net1".into(),
            primary: false,
            status_name: d.status_name,
            capability_args: d.capability_args,
            device: d.device,
            selected: true,
        }];
        let a = &mut plan[0];
        offer(&mut a.capability_args, dir, &a.status_name, "c1", &a.ifname);
        let cni = offered(&plan[0].capability_args).unwrap();
        assert_eq!(cni, dir.join("cni/ns-sriov-a-c1_net1"));

        // No device plugin file: nothing to copy; a stale file goes.
        fs::create_dir_all(dir.join("cni")).unwrap();
        fs::write(&cni, "stale").unwrap();
        prepare(&plan[0], dir);
        assert!(!cni.exists());

        let info =
            json!({"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:03:02.3"}});
        fs::create_dir_all(dir.join("dp")).unwrap();
        fs::write(
            dir.join("dp/intel.com-vf-0000:03:02.3-device.json"),
            info.to_string(),
        )
        .unwrap();
        prepare(&plan[0], dir);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&cni).unwrap().permissions().mode() & 0o777,
            0o444
        );
        assert_eq!(read(&plan[0].capability_args), Some(info));
        // Repeated: the file is replaced, not refused.
        prepare(&plan[0], dir);
        assert!(cni.exists());

        remove_all(&[crate::record::cached(&plan[0])]);
        assert!(!cni.exists());
        assert_eq!(read(&plan[0].capability_args), None);
        remove_all(&[crate::record::cached(&plan[0])]);
    }
}
