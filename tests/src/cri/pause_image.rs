//! A pause image built by hand: no registry is reachable from the test
//! machines, so the sandbox image containerd's CRI plugin asks for is made
//! here from Debian's `busybox-static` binary. So is the busybox image the
//! pods of a kubelet run ([`write_busybox_archive`]).
//!
//! The result is an OCI image layout in a tar archive (`oci-layout`,
//! `index.json`, and `blobs/sha256/` holding the config, the manifest and
//! one gzipped layer), which `ctr images import` accepts.

use std::io::{self, Write};
use std::path::Path;
use std::sync::OnceLock;

use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The reference the image is tagged with: the sandbox image containerd 1.6
/// asks for by default.
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.6";

/// The reference of the pods' image, as containerd resolves `busybox:1.36`.
pub const BUSYBOX_IMAGE: &str = "docker.io/library/busybox:1.36";

/// The busybox applets the images link to (a pod's `sleep`, `ip`, `ping`, ...).
const APPLETS: &[&str] = &["sh", "sleep", "ip", "ping", "cat", "ls", "hostname"];

/// Where Debian's `busybox-static` installs its binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// The sandbox's command: sleep until SIGTERM, then exit 0. PID 1 has no
/// default signal actions, so the shell traps the signal itself.
const PAUSE_COMMAND: &str = "trap 'exit 0' TERM INT; sleep 2147483647 & wait";

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// A content-addressed blob of the image.
struct Blob {
    digest: String,
    bytes: Vec<u8>,
}

impl Blob {
    fn new(bytes: Vec<u8>) -> Blob {
        Blob {
            digest: sha256(&bytes),
            bytes,
        }
    }

    /// An OCI descriptor of this blob.
    fn descriptor(&self, media_type: &str) -> Value {
        json!({"mediaType": media_type, "digest": self.digest, "size": self.bytes.len()})
    }
}

/// Writes the pause image archive, tagged [`PAUSE_IMAGE`], to `path`.
pub fn write_archive(path: &Path) -> io::Result<()> {
    std::fs::write(path, archive()?)
}

/// Writes the busybox image archive, tagged [`BUSYBOX_IMAGE`] and running
/// `sh` unless the pod names a command, to `path`.
pub fn write_busybox_archive(path: &Path) -> io::Result<()> {
    let process = json!({"Cmd": ["sh"], "Env": ["PATH=/bin"], "WorkingDir": "/"});
    std::fs::write(path, build_archive(BUSYBOX_IMAGE, process)?)
}

/// The pause image archive, built once per process (hashing a few
/// megabytes is slow in debug builds, and every test needs the same image).
pub fn archive() -> io::Result<&'static [u8]> {
    static ARCHIVE: OnceLock<Vec<u8>> = OnceLock::new();
    if let Some(archive) = ARCHIVE.get() {
        return Ok(archive);
    }
    let process = json!({
        "Entrypoint": ["/bin/sh", "-c", PAUSE_COMMAND],
        "Env": ["PATH=/bin"],
        "WorkingDir": "/",
    });
    let built = build_archive(PAUSE_IMAGE, process)?;
    Ok(ARCHIVE.get_or_init(|| built))
}

/// Builds the OCI layout archive of image `name`, a rootfs holding busybox
/// with the image config's `process` part.
fn build_archive(name: &str, process: Value) -> io::Result<Vec<u8>> {
    let busybox = std::fs::read(BUSYBOX)?;
    let rootfs = rootfs_tar(&busybox)?;
    let diff_id = sha256(&rootfs);
    let layer = Blob::new(gzip(&rootfs)?);
    let config = Blob::new(image_config(&diff_id, process).to_string().into_bytes());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": config.descriptor(CONFIG_TYPE),
        "layers": [layer.descriptor(LAYER_TYPE)],
    });
    let manifest = Blob::new(manifest.to_string().into_bytes());
    let mut manifest_entry = manifest.descriptor(MANIFEST_TYPE);
    manifest_entry["platform"] = json!({"architecture": oci_arch(), "os": "linux"});
    manifest_entry["annotations"] = json!({
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": name,
    });
    let index = json!({"schemaVersion": 2, "manifests": [manifest_entry]});

    let mut archive = tar::Builder::new(Vec::new());
    append_file(
        &mut archive,
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
        0o644,
    )?;
    append_file(
        &mut archive,
        "index.json",
        index.to_string().as_bytes(),
        0o644,
    )?;
    append_dir(&mut archive, "blobs")?;
    append_dir(&mut archive, "blobs/sha256")?;
    for blob in [&layer, &config, &manifest] {
        let name = format!("blobs/sha256/{}", blob.digest.trim_start_matches("sha256:"));
        append_file(&mut archive, &name, &blob.bytes, 0o644)?;
    }
    archive.into_inner()
}

/// The image configuration: what it runs (`process`) and the layer's diff id.
fn image_config(diff_id: &str, process: Value) -> Value {
    json!({
        "created": "1970-01-01T00:00:00Z",
        "architecture": oci_arch(),
        "os": "linux",
        "config": process,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    })
}

/// The image's root filesystem as an uncompressed tar (what `podman import`
/// takes): busybox as `/bin/busybox` and its [`APPLETS`].
pub fn rootfs_archive() -> io::Result<Vec<u8>> {
    rootfs_tar(&std::fs::read(BUSYBOX)?)
}

/// The uncompressed root filesystem: busybox and its [`APPLETS`] in `/bin`,
/// plus the mount points runc needs (the sandbox's root is read-only).
fn rootfs_tar(busybox: &[u8]) -> io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    for dir in ["bin", "dev", "etc", "proc", "run", "sys", "tmp", "var"] {
        append_dir(&mut tar, dir)?;
    }
    append_file(&mut tar, "bin/busybox", busybox, 0o755)?;
    for applet in APPLETS {
        append_symlink(&mut tar, &format!("bin/{applet}"), "busybox")?;
    }
    for file in ["etc/hostname", "etc/hosts", "etc/resolv.conf"] {
        append_file(&mut tar, file, b"", 0o644)?;
    }
    tar.into_inner()
}

/// A tar header with fixed owner and time, so the image is reproducible.
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, path: &str) -> io::Result<()> {
    let mut header = header(tar::EntryType::Directory, 0o755, 0);
    tar.append_data(&mut header, path, io::empty())
}

fn append_file<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    data: &[u8],
    mode: u32,
) -> io::Result<()> {
    let mut header = header(tar::EntryType::Regular, mode, data.len() as u64);
    tar.append_data(&mut header, path, data)
}

fn append_symlink<W: Write>(tar: &mut tar::Builder<W>, path: &str, target: &str) -> io::Result<()> {
    let mut header = header(tar::EntryType::Symlink, 0o777, 0);
    tar.append_link(&mut header, path, target)
}

/// Gzip without compression: a valid `tar+gzip` layer, and deflating a
/// few megabytes in a debug build costs more time than the smaller import
/// saves.
fn gzip(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::none());
    encoder.write_all(data)?;
    encoder.finish()
}

/// `sha256:<hex>` of `data`.
fn sha256(data: &[u8]) -> String {
    let hex: String = Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// This machine's architecture as OCI names it.
fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_is_prefixed_hex() {
        assert_eq!(
            sha256(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn rootfs_holds_busybox_and_its_applets() {
        let tar = rootfs_tar(b"not really busybox").unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        for name in [
            "bin/busybox",
            "bin/sh",
            "bin/sleep",
            "proc",
            "etc/resolv.conf",
        ] {
            assert!(
                names.iter().any(|n| n.trim_end_matches('/') == name),
                "{name} in {names:?}"
            );
        }
    }
}
