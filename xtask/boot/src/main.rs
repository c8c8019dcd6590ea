//! `cargo xtask …` starts here. Building the real `xtask` compiles gRPC bindings (etcd's and the
//! CRI's), whose build scripts need `protoc`; on a fresh machine that is not installed yet. This
//! tiny program, which has no dependencies, installs it from Debian when missing and then runs
//! `cargo run --package xtask` with the same arguments.

use std::path::Path;
use std::process::{exit, Command};

/// Debian packages needed before `xtask` can be built, with a file each one provides.
/// etcd-client's build script needs both the compiler and the well-known types it imports.
const BUILD_PACKAGES: &[(&str, &str)] = &[
    ("protobuf-compiler", "/usr/bin/protoc"),
    (
        "libprotobuf-dev",
        "/usr/include/google/protobuf/descriptor.proto",
    ),
];

fn run(cmd: &mut Command) -> bool {
    eprintln!("+ {cmd:?}");
    cmd.status().map(|s| s.success()).unwrap_or(false)
}

/// Installs the missing build packages (apt-get, as root).
fn ensure_build_packages() -> Result<(), String> {
    let missing: Vec<&str> = BUILD_PACKAGES
        .iter()
        .filter(|(_, marker)| !Path::new(marker).exists())
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !run(Command::new("apt-get").args(["update", "-qq"])) {
        return Err("apt-get update failed (are you root?)".into());
    }
    let mut install = Command::new("apt-get");
    install
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing);
    if !run(&mut install) {
        return Err(format!(
            "installing {} failed (are you root?)",
            missing.join(", ")
        ));
    }
    Ok(())
}

fn main() {
    if let Err(e) = ensure_build_packages() {
        eprintln!("error: {e}");
        exit(1);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["run", "--quiet", "--package", "xtask", "--"])
        .args(std::env::args_os().skip(1))
        .status();
    match status {
        Ok(s) => exit(s.code().unwrap_or(1)),
        Err(e) => {
            eprintln!("error: cannot run cargo: {e}");
            exit(1);
        }
    }
}
