//! The binaries users get: what `plexusctl install` copies onto a node, `plexusctl` itself and
//! the node agent `plexusd` (a container of the DaemonSet), built in release mode, checked to
//! need no C library and to stay small.
//!
//! A binary is static when its ELF file has no `PT_INTERP` program header (no dynamic loader
//! starts it) and no `DT_NEEDED` entry (it asks for no shared library): then it runs on a node
//! of any distribution, whatever its glibc.

use std::path::{Path, PathBuf};

use object::elf::{FileHeader64, DT_NEEDED, PT_INTERP};
use object::read::elf::{FileHeader, ProgramHeader};
use object::Endianness;

use crate::cmd::{self, Result};

/// The shipped binaries: those `plexusctl install` copies, `plexusctl` and `plexusd`.
pub fn shipped() -> Vec<&'static str> {
    plexusctl::install::binaries::BINARIES
        .iter()
        .map(|(name, _)| *name)
        .chain(["plexusctl", "plexusd"])
        .collect()
}

/// The largest a binary copied onto nodes (and `plexusctl`) may be, in bytes (15 MB).
pub const MAX_SIZE: u64 = 15_000_000;

/// The largest the node agent may be, in bytes (20 MB). It is never copied onto a node's disk
/// (the DaemonSet runs it from the image), and it links nearly the whole workspace: the plugin's
/// stages for hot-plug, the IPAM stores, a gRPC server, watches and a metrics endpoint.
pub const MAX_AGENT_SIZE: u64 = 20_000_000;

/// The size limit of the shipped binary `name`.
pub fn max_size(name: &str) -> u64 {
    if name == "plexusd" {
        MAX_AGENT_SIZE
    } else {
        MAX_SIZE
    }
}

/// The size of Multus's thick-plugin image binaries, in MB, for comparison.
pub const MULTUS_MB: f64 = 68.0;
/// The size of Whereabouts's binaries, in MB, for comparison.
pub const WHEREABOUTS_MB: f64 = 52.0;

/// What the ELF file of one binary says about its linking.
#[derive(Debug, Clone, PartialEq)]
pub struct Linking {
    /// The file's size in bytes.
    pub size: u64,
    /// The dynamic loader it names (`PT_INTERP`), if any.
    pub interpreter: Option<String>,
    /// The shared libraries it needs (`DT_NEEDED`).
    pub needed: Vec<String>,
}

impl Linking {
    /// Whether the binary needs no dynamic loader and no shared library.
    pub fn is_static(&self) -> bool {
        self.interpreter.is_none() && self.needed.is_empty()
    }
}

/// Reads the linking facts of the 64-bit ELF file at `path`.
pub fn inspect(path: &Path) -> Result<Linking> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let bad = |e: object::read::Error| format!("{} is not a valid ELF file: {e}", path.display());
    let header = FileHeader64::<Endianness>::parse(&*data).map_err(bad)?;
    let endian = header.endian().map_err(bad)?;
    let mut interpreter = None;
    for segment in header.program_headers(endian, &*data).map_err(bad)? {
        if segment.p_type(endian) == PT_INTERP {
            let name = segment.interpreter(endian, &*data).map_err(bad)?;
            interpreter = Some(String::from_utf8_lossy(name.unwrap_or_default()).into_owned());
        }
    }
    let sections = header.sections(endian, &*data).map_err(bad)?;
    let dynamic = sections.dynamic_table(endian, &*data).map_err(bad)?;
    let mut needed = Vec::new();
    for entry in &dynamic {
        if entry.tag == DT_NEEDED {
            let name = dynamic.string(entry).map_err(bad)?;
            needed.push(String::from_utf8_lossy(name).into_owned());
        }
    }
    Ok(Linking {
        size: data.len() as u64,
        interpreter,
        needed,
    })
}

/// Builds the shipped binaries in release mode; returns their directory.
pub fn build_release() -> Result<PathBuf> {
    cmd::step("building the shipped binaries (release)");
    let root = cmd::workspace_root();
    let mut build = cmd::cargo();
    build.current_dir(&root).arg("build").arg("--release");
    for package in [
        "plexus",
        "plexusctl",
        "plexus-ipam",
        "plexus-sriov",
        "plexusd",
    ] {
        build.args(["-p", package]);
    }
    for name in shipped() {
        build.args(["--bin", name]);
    }
    cmd::run(&mut build)?;
    Ok(cmd::profile_dir(&cmd::target_dir()?, "release"))
}

/// Checks every shipped binary in `dir`: static, and at most its [`max_size`]. Prints a line
/// per binary; fails naming every one that is not.
pub fn check(dir: &Path) -> Result {
    let mut problems = Vec::new();
    for name in shipped() {
        let path = dir.join(name);
        let linking = inspect(&path)?;
        println!(
            "  {name:<14} {:>5.1} MB  {}",
            linking.size as f64 / 1e6,
            if linking.is_static() {
                "static"
            } else {
                "DYNAMIC"
            }
        );
        if let Some(loader) = &linking.interpreter {
            problems.push(format!("{name} names the dynamic loader {loader}"));
        }
        if !linking.needed.is_empty() {
            problems.push(format!("{name} needs {}", linking.needed.join(", ")));
        }
        let limit = max_size(name);
        if linking.size > limit {
            problems.push(format!(
                "{name} is {:.1} MB, more than {:.0} MB",
                linking.size as f64 / 1e6,
                limit as f64 / 1e6
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; ").into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_binary_names_its_loader_and_libraries() {
        // Debian's coreutils are dynamically linked against glibc.
        let linking = inspect(Path::new("/usr/bin/true")).unwrap();
        assert!(!linking.is_static());
        assert!(linking.interpreter.unwrap().contains("ld-linux"));
        assert!(linking.needed.iter().any(|lib| lib.starts_with("libc.so")));
    }

    #[test]
    fn this_test_binary_is_static_like_every_build() {
        // `.cargo/config.toml` links every build of the workspace statically.
        let linking = inspect(&std::env::current_exe().unwrap()).unwrap();
        assert_eq!(linking.interpreter, None);
        assert_eq!(linking.needed, Vec::<String>::new());
    }

    #[test]
    fn a_file_that_is_not_elf_is_an_error() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "#!/bin/sh\n").unwrap();
        assert!(inspect(file.path()).is_err());
    }

    #[test]
    fn shipped_names_the_installed_binaries_plexusctl_and_plexusd() {
        assert_eq!(
            shipped(),
            [
                "plexus",
                "plexus-ipam",
                "plexus-sriov",
                "plexusctl",
                "plexusd"
            ]
        );
    }
}
