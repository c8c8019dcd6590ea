//! Running external commands with a logged command line and a clear error.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

/// The error type every xtask step returns.
pub type Error = Box<dyn std::error::Error>;
/// Shorthand for `Result<T, Error>`.
pub type Result<T = ()> = std::result::Result<T, Error>;

/// Prints a step banner, so a long log reads as a sequence of steps.
pub fn step(what: &str) {
    eprintln!("\n==> {what}");
}

/// Renders a command as a shell-like line for logs and errors.
pub fn display(cmd: &Command) -> String {
    let mut line = String::new();
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            line.push_str(&format!(
                "{}={} ",
                key.to_string_lossy(),
                value.to_string_lossy()
            ));
        }
    }
    line.push_str(&cmd.get_program().to_string_lossy());
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Runs `cmd` with inherited stdio, logging it first; returns its exit status.
pub fn status(cmd: &mut Command) -> Result<ExitStatus> {
    eprintln!("+ {}", display(cmd));
    cmd.status()
        .map_err(|e| format!("cannot run `{}`: {e}", display(cmd)).into())
}

/// Runs `cmd` with inherited stdio and fails unless it exits with status 0.
pub fn run(cmd: &mut Command) -> Result {
    let status = status(cmd)?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed: {status}", display(cmd)).into())
    }
}

/// Runs `cmd`, capturing stdout (stderr is inherited); fails unless it exits with 0.
pub fn output(cmd: &mut Command) -> Result<String> {
    eprintln!("+ {}", display(cmd));
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run `{}`: {e}", display(cmd)))?;
    if !out.status.success() {
        return Err(format!("`{}` failed: {}", display(cmd), out.status).into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `cargo` that started us (`$CARGO`), or `cargo` from `PATH`.
///
/// In CI (env `CI` set) incremental compilation is off unless
/// `CARGO_INCREMENTAL` says otherwise: a clean clone gains nothing from it, and
/// its caches would double the target directory on a machine with little disk.
pub fn cargo() -> Command {
    let mut cargo =
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| OsStr::new("cargo").to_owned()));
    if std::env::var_os("CI").is_some() && std::env::var_os("CARGO_INCREMENTAL").is_none() {
        cargo.env("CARGO_INCREMENTAL", "0");
    }
    cargo
}

/// Cargo's target directory for this workspace (honours `CARGO_TARGET_DIR`).
pub fn target_dir() -> Result<PathBuf> {
    let json = output(cargo().current_dir(workspace_root()).args([
        "metadata",
        "--format-version",
        "1",
        "--no-deps",
    ]))?;
    let meta: serde_json::Value = serde_json::from_str(&json)?;
    meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| "cargo metadata gave no target_directory".into())
}

/// The target triple every build names (`build.target` in `.cargo/config.toml`, which links the
/// C library statically): binaries are in `<target dir>/x86_64-unknown-linux-gnu/<profile>`.
pub const BUILD_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Where a profile's (`debug`, `release`) binaries are, under cargo's target directory.
pub fn profile_dir(target_dir: &Path, profile: &str) -> PathBuf {
    target_dir.join(BUILD_TARGET).join(profile)
}

/// The workspace root: the parent of this crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// Whether this process runs as root (needed for `apt-get` and `/etc/apt`).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
