//! `cargo xtask fuzz`, and the fuzzing step of `cargo xtask test`: runs the `cargo fuzz`
//! targets of `fuzz/` for a while each, installing cargo-fuzz first when it is missing.
//!
//! The only toolchain is stable, so cargo-fuzz runs with `RUSTC_BOOTSTRAP=1`, which lets stable
//! accept the `-Z` flags it passes. Each target starts from its committed seeds in
//! `fuzz/corpus/<target>/` (read only) and grows a working corpus in `fuzz/work/<target>/`
//! (ignored by git). A crash fails the run; libFuzzer saves its input in
//! `fuzz/artifacts/<target>/`, and it belongs in `fuzz/regressions/<target>/` once fixed.

use std::path::Path;
use std::process::Command;

use crate::cmd::{self, Result};

/// How long each target runs in `cargo xtask test` unless `PLEXUS_FUZZ_SECONDS` says otherwise.
pub const DEFAULT_SECONDS: u64 = 30;

/// The sanitizer the targets are built with. AddressSanitizer works on the stable toolchain
/// with `RUSTC_BOOTSTRAP=1`.
const SANITIZER: &str = "address";

/// Arguments of `cargo xtask fuzz`.
#[derive(clap::Args, Debug)]
pub struct FuzzArgs {
    /// Seconds each target runs.
    #[arg(long, default_value_t = 300)]
    pub seconds: u64,
    /// Run only this target (default: every target, one after the other).
    pub target: Option<String>,
}

/// `cargo xtask fuzz`: runs the targets for `args.seconds` each.
pub fn run(args: &FuzzArgs) -> Result {
    let targets = match &args.target {
        Some(t) => vec![t.clone()],
        None => list_targets()?,
    };
    run_targets(&targets, args.seconds)
}

/// The seconds per target for `cargo xtask test`: `PLEXUS_FUZZ_SECONDS`, else
/// [`DEFAULT_SECONDS`]. `0` skips fuzzing, which CI (env `CI` set) does not allow.
pub fn seconds_for_test() -> Result<u64> {
    let seconds = match std::env::var("PLEXUS_FUZZ_SECONDS") {
        Ok(s) => s
            .trim()
            .parse::<u64>()
            .map_err(|e| format!("PLEXUS_FUZZ_SECONDS={s:?}: {e}"))?,
        Err(_) => DEFAULT_SECONDS,
    };
    if seconds == 0 && std::env::var_os("CI").is_some() {
        return Err("PLEXUS_FUZZ_SECONDS=0 skips fuzzing, which CI must run".into());
    }
    Ok(seconds)
}

/// Builds the targets, then runs each for `seconds`; fails naming every target that crashed.
pub fn run_targets(targets: &[String], seconds: u64) -> Result {
    ensure_cargo_fuzz()?;
    let root = cmd::workspace_root();
    cmd::run(fuzz_command(&root).args(["build", "-s", SANITIZER]))?;
    let mut crashed = Vec::new();
    for target in targets {
        cmd::step(&format!("fuzzing {target} for {seconds}s"));
        let work = root.join("fuzz/work").join(target);
        std::fs::create_dir_all(&work)?;
        let seeds = root.join("fuzz/corpus").join(target);
        let mut run = fuzz_command(&root);
        run.args(["run", "-s", SANITIZER, target])
            .arg(&work)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            // One input taking this long is a hang, reported like a crash.
            .arg("-timeout=10")
            .arg("-rss_limit_mb=2048")
            .arg("-print_final_stats=1");
        // libFuzzer reports every new input; that goes to a log, and only its summary (or, on
        // a crash, its end) is printed.
        let log_path = root.join("fuzz/work").join(format!("{target}.log"));
        let log = std::fs::File::create(&log_path)?;
        run.stdout(log.try_clone()?).stderr(log);
        let ok = cmd::status(&mut run)?.success();
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        print_summary(&text, ok);
        if !ok {
            crashed.push(target.clone());
        }
    }
    if crashed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "fuzz target(s) crashed: {}; the inputs are in {}",
            crashed.join(", "),
            root.join("fuzz/artifacts").display()
        )
        .into())
    }
}

/// Prints libFuzzer's final statistics from its log; after a failure, the log's last lines.
fn print_summary(log: &str, ok: bool) {
    let lines: Vec<&str> = log.lines().collect();
    let shown: Vec<&str> = if ok {
        lines
            .iter()
            .copied()
            .filter(|l| l.starts_with("stat::") || l.starts_with("Done "))
            .collect()
    } else {
        lines[lines.len().saturating_sub(40)..].to_vec()
    };
    for line in shown {
        println!("    {line}");
    }
}

/// The targets `fuzz/Cargo.toml` declares (installing cargo-fuzz first when it is missing).
pub fn list_targets() -> Result<Vec<String>> {
    ensure_cargo_fuzz()?;
    let root = cmd::workspace_root();
    let out = cmd::output(fuzz_command(&root).arg("list"))?;
    let targets: Vec<String> = out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if targets.is_empty() {
        return Err("cargo fuzz list printed no target".into());
    }
    Ok(targets)
}

/// `cargo fuzz` in the repository's root, on the stable toolchain.
fn fuzz_command(root: &Path) -> Command {
    let mut c = cmd::cargo();
    c.current_dir(root).env("RUSTC_BOOTSTRAP", "1").arg("fuzz");
    c
}

/// Installs cargo-fuzz from crates.io when `cargo fuzz` does not run.
fn ensure_cargo_fuzz() -> Result {
    let works = cmd::cargo()
        .args(["fuzz", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if works {
        return Ok(());
    }
    cmd::step("installing cargo-fuzz");
    cmd::run(cmd::cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    Ok(())
}
