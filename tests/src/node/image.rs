//! Plexus's image as `cargo xtask image` builds it (from the `Containerfile`): its reference
//! and the OCI archive it is written to, which the node imports into containerd before
//! `examples/k3s/04-plexus-daemonset.yaml` is applied.

use std::path::PathBuf;

use super::{examples_dir, Result};

/// The image's repository: a registry-style name that no public registry serves, so a node
/// that lacks the image fails to pull it rather than fetching someone else's. Users who push it
/// to a registry retag it.
pub const REPOSITORY: &str = "localhost/plexus";

/// The environment variable that names the image archive to import (else [`default_archive`]).
pub const ARCHIVE_ENV: &str = "PLEXUS_IMAGE_ARCHIVE";

/// The image's reference: [`REPOSITORY`] tagged with the crate version, e.g.
/// `localhost/plexus:0.1.0`.
pub fn reference() -> String {
    format!("{REPOSITORY}:{}", env!("CARGO_PKG_VERSION"))
}

/// The archive's file name, e.g. `plexus-image-0.1.0.oci.tar`.
pub fn archive_file_name() -> String {
    format!("plexus-image-{}.oci.tar", env!("CARGO_PKG_VERSION"))
}

/// Where `cargo xtask image` writes the archive when the target directory is the workspace's
/// `target/`.
pub fn default_archive() -> PathBuf {
    examples_dir()
        .join("../../target")
        .join(archive_file_name())
}

/// The archive to import: [`ARCHIVE_ENV`], else [`default_archive`]; an error saying to run
/// `cargo xtask image` if it is missing.
pub fn archive() -> Result<PathBuf> {
    let path = std::env::var_os(ARCHIVE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(default_archive);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "no image archive {} (from {ARCHIVE_ENV} or target/): run `cargo xtask image`",
            path.display()
        )
        .into())
    }
}

/// The images the objects of `yaml` name (`image:` of every container and init container).
pub fn images_named(yaml: &str) -> Vec<String> {
    yaml.lines()
        .filter_map(|line| line.trim().strip_prefix("image:"))
        .map(|image| image.trim().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemonset_names_the_image_the_archive_carries() {
        let yaml =
            std::fs::read_to_string(examples_dir().join("04-plexus-daemonset.yaml")).unwrap();
        let images = images_named(&yaml);
        assert_eq!(
            images,
            [reference(), reference(), reference()],
            "install, plexus and plexusd"
        );
    }
}
