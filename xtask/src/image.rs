//! `cargo xtask image`: Plexus's container image, built offline from the `Containerfile`.
//!
//! The shipped binaries are built in release mode and checked to be static
//! ([`crate::binaries`]), copied into a build context of their own, and `buildah build` makes
//! the image `FROM scratch` with `--pull=never` (nothing is ever fetched) and `--network=none`,
//! its timestamps set to the last commit's so that the same sources give the same image. buildah
//! keeps its images in a storage directory under `target/` (the `vfs` driver: no mounts), not
//! in the machine's, and the directory is removed afterwards. The image is written with
//! `buildah push` as an OCI archive, `target/plexus-image-<version>.oci.tar`, tagged
//! [`image::reference`] (`localhost/plexus:<version>`), the reference
//! `examples/k3s/04-plexus-daemonset.yaml` uses; containerd's importers need the
//! `io.containerd.image.name` annotation to keep that name, so it is added to the archive's
//! index. Finally the image's size is printed: the archive's, and its content unpacked.

use std::path::{Path, PathBuf};
use std::process::Command;

use plexus_tests::node::image;

use crate::cmd::{self, Result};
use crate::packages::ensure_debian_packages;

/// What building the image needs: Debian's buildah, and tar to look into the archive.
const IMAGE_PACKAGES: &[(&str, &str)] = &[("buildah", "/usr/bin/buildah"), ("tar", "/bin/tar")];

/// The image that was built.
#[derive(Debug, Clone)]
pub struct Built {
    /// The OCI archive.
    pub archive: PathBuf,
    /// Its size in bytes (the layer compressed with gzip).
    pub archive_size: u64,
    /// The size of the image's files (the binaries), unpacked.
    pub content_size: u64,
}

/// `cargo xtask image`: builds the release binaries and the image, and prints where it is and
/// its size.
pub fn run() -> Result {
    let release = crate::binaries::build_release()?;
    crate::binaries::check(&release)?;
    let built = build(&release)?;
    print_built(&built);
    Ok(())
}

/// Prints where the image is and its size.
pub fn print_built(built: &Built) {
    println!(
        "image {}: {} ({:.1} MB; {:.1} MB unpacked)",
        image::reference(),
        built.archive.display(),
        built.archive_size as f64 / 1e6,
        built.content_size as f64 / 1e6
    );
    println!(
        "import it on a K3s node with `k3s ctr images import {}`",
        built.archive.display()
    );
}

/// Builds the image from the shipped binaries in `release` (built and checked by
/// [`crate::binaries`]); returns the archive.
pub fn build(release: &Path) -> Result<Built> {
    if !cmd::is_root() {
        return Err("cargo xtask image needs root (buildah's storage and its build)".into());
    }
    ensure_debian_packages(IMAGE_PACKAGES)?;
    let target = cmd::target_dir()?;
    let work = target.join("plexus-image");
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    let context = work.join("context");
    std::fs::create_dir_all(&context)?;
    let mut content_size = 0;
    for name in crate::binaries::shipped() {
        content_size += std::fs::copy(release.join(name), context.join(name))?;
    }
    let archive = target.join(image::archive_file_name());
    let result = build_in(&work, &context, &archive);
    std::fs::remove_dir_all(&work)?;
    result?;
    Ok(Built {
        archive_size: archive.metadata()?.len(),
        archive,
        content_size,
    })
}

/// Runs buildah with its storage in `work`: the image from `context`, pushed to `archive`.
fn build_in(work: &Path, context: &Path, archive: &Path) -> Result {
    let buildah = || {
        let mut buildah = Command::new("buildah");
        buildah
            .arg("--root")
            .arg(work.join("storage"))
            .arg("--runroot")
            .arg(work.join("run"))
            .args(["--storage-driver", "vfs"]);
        buildah
    };
    let reference = image::reference();
    cmd::step(&format!(
        "buildah build {reference} (FROM scratch, offline)"
    ));
    cmd::run(
        buildah()
            .args(["build", "--pull=never", "--network=none", "--layers=false"])
            .arg("--file")
            .arg(cmd::workspace_root().join("Containerfile"))
            .args([
                "--build-arg",
                &format!("VERSION={}", env!("CARGO_PKG_VERSION")),
            ])
            .args(["--timestamp", &commit_time()?])
            .args(["--tag", &reference])
            .arg(context),
    )?;
    cmd::step(&format!(
        "buildah push {reference} to {}",
        archive.display()
    ));
    if archive.exists() {
        std::fs::remove_file(archive)?;
    }
    let dest = format!("oci-archive:{}:{reference}", archive.display());
    cmd::run(buildah().args(["push", "--quiet", &reference, &dest]))?;
    name_for_containerd(archive, &reference, &work.join("archive"))
}

/// Adds `io.containerd.image.name` (the full reference) to the archive's `index.json`:
/// `ctr images import` (and K3s's) keeps an OCI archive's image only under that annotation or
/// with `--base-name`.
fn name_for_containerd(archive: &Path, reference: &str, dir: &Path) -> Result {
    std::fs::create_dir_all(dir)?;
    cmd::run(
        Command::new("tar")
            .arg("-xf")
            .arg(archive)
            .arg("-C")
            .arg(dir),
    )?;
    let index_path = dir.join("index.json");
    let mut index: serde_json::Value = serde_json::from_slice(&std::fs::read(&index_path)?)?;
    let manifests = index["manifests"]
        .as_array_mut()
        .filter(|m| m.len() == 1)
        .ok_or("the archive's index.json should list exactly one manifest")?;
    manifests[0]["annotations"]["io.containerd.image.name"] = reference.into();
    std::fs::write(&index_path, serde_json::to_vec(&index)?)?;
    let mut entries: Vec<String> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    std::fs::remove_file(archive)?;
    cmd::run(
        Command::new("tar")
            .args(["--sort=name", "--owner=0", "--group=0", "--numeric-owner"])
            .args(["--mtime=@0", "-cf"])
            .arg(archive)
            .arg("-C")
            .arg(dir)
            .args(&entries),
    )
}

/// The last commit's time (seconds since the epoch), for the image's timestamps; 0 outside a
/// git checkout.
fn commit_time() -> Result<String> {
    let out = Command::new("git")
        .current_dir(cmd::workspace_root())
        .args(["log", "-1", "--format=%ct"])
        .output();
    Ok(match out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        _ => "0".to_string(),
    })
}
