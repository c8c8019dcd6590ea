//! `cargo xtask test`: what CI runs (`.ci/run`), and what a developer runs
//! before committing.
//!
//! Steps: install the Debian packages the tests drive, check formatting, lint,
//! build the binaries, build the shipped ones in release mode and check that they are static
//! and small ([`crate::binaries`]) and build the image from them ([`crate::image`]), then run
//! every test with `PLEXUS_BIN_DIR` pointing at
//! the freshly built binaries, then run each fuzz target for a while
//! ([`crate::fuzz`], `PLEXUS_FUZZ_SECONDS`). A summary of the steps, and the
//! test counts, closes the output; the exit status is non-zero if any step failed.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::cmd::{self, Result};
use crate::packages::ensure_debian_packages;

/// Arguments of `cargo xtask test`.
#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// Extra arguments for `cargo test` (after `--`), e.g. a test name filter
    /// or `-- --nocapture`.
    #[arg(last = true)]
    pub cargo_test_args: Vec<String>,
}

/// Debian packages the tests use, each with a file that shows it is installed.
const TEST_PACKAGES: &[(&str, &str)] = &[
    ("containernetworking-plugins", "/usr/lib/cni/bridge"),
    ("iproute2", "/usr/sbin/ip"),
    ("protobuf-compiler", "/usr/bin/protoc"),
    ("etcd-server", "/usr/bin/etcd"),
    ("containerd", "/usr/bin/containerd"),
    ("runc", "/usr/sbin/runc"),
    ("podman", "/usr/bin/podman"),
    ("busybox-static", "/bin/busybox"),
];

/// Runs the whole check; fails if any step failed.
pub fn run(args: &TestArgs) -> Result {
    let root = cmd::workspace_root();
    let mut report = Report::new();

    cmd::step("test prerequisites");
    let ready = report.record("prerequisites", ensure_test_prerequisites());
    if !ready {
        return report.finish(None);
    }

    let target = cmd::target_dir()?;
    let bin_dir = cmd::profile_dir(&target, "debug");
    eprintln!("==> disk before the build: {}", disk_use(&target));
    let cargo_step = |report: &mut Report, name: &str, args: &[&str]| {
        cmd::step(name);
        let result = cmd::run(cmd::cargo().current_dir(&root).args(args));
        report.record(name, result)
    };
    cargo_step(&mut report, "cargo fmt", &["fmt", "--all", "--", "--check"]);
    cargo_step(
        &mut report,
        "cargo clippy",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    );
    let built = cargo_step(
        &mut report,
        "cargo build",
        &["build", "--workspace", "--bins"],
    );

    let mut image = None;
    if built {
        cmd::step("shipped binaries (release): static, at most 15 MB");
        let release = crate::binaries::build_release();
        let result = release
            .as_ref()
            .map_err(|e| e.to_string().into())
            .and_then(|dir| crate::binaries::check(dir));
        let checked = report.record("static binaries", result);
        if let (true, Ok(release)) = (checked, release) {
            cmd::step("Plexus's image (the DaemonSet test imports it)");
            let result = crate::image::build(&release).map(|built| {
                crate::image::print_built(&built);
                image = Some(built.archive);
            });
            report.record("image", result);
        } else {
            report.skip("image", "the release binaries failed");
        }
    } else {
        report.skip("static binaries", "the build failed");
    }

    let mut counts = None;
    if built {
        cmd::step("cargo test");
        let mut test = cmd::cargo();
        test.current_dir(&root)
            .env("PLEXUS_BIN_DIR", &bin_dir)
            .env(
                plexus_tests::node::image::ARCHIVE_ENV,
                image.as_deref().unwrap_or(std::path::Path::new("")),
            )
            .args(["test", "--workspace", "--no-fail-fast"])
            .args(&args.cargo_test_args);
        let result = run_counting(&mut test).and_then(|(c, status)| {
            counts = Some(c);
            if status.success() {
                Ok(())
            } else {
                Err(format!("{status}, {} test(s) failed", c.failed).into())
            }
        });
        report.record("cargo test", result);
    } else {
        report.skip("cargo test", "the build failed");
    }
    fuzz_step(&mut report);
    eprintln!("\n==> disk after the run: {}", disk_use(&target));
    report.finish(counts)
}

/// The size of the target directory and the free space on its file system, so
/// a run that nears a full disk says so before it fails on one.
fn disk_use(target: &std::path::Path) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    let used = directory_size(target) as f64 / GIB;
    match nix::sys::statvfs::statvfs(target) {
        Ok(fs) => {
            let free = fs.blocks_available() as f64 * fs.fragment_size() as f64 / GIB;
            format!(
                "{used:.1} GiB in {}, {free:.1} GiB free on its file system",
                target.display()
            )
        }
        Err(e) => format!(
            "{used:.1} GiB in {} (free space unknown: {e})",
            target.display()
        ),
    }
}

/// Total bytes of the regular files under `dir`, not following symlinks.
fn directory_size(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => directory_size(&entry.path()),
            Ok(t) if t.is_file() => entry.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// Runs each fuzz target for `PLEXUS_FUZZ_SECONDS` (default 30 s; 0 skips, except in CI).
fn fuzz_step(report: &mut Report) {
    let seconds = match crate::fuzz::seconds_for_test() {
        Ok(0) => {
            cmd::step("fuzzing skipped (PLEXUS_FUZZ_SECONDS=0)");
            report.steps.push((
                "fuzz".to_string(),
                "skipped: PLEXUS_FUZZ_SECONDS=0".to_string(),
                Duration::ZERO,
            ));
            return;
        }
        Ok(s) => s,
        Err(e) => {
            report.record("fuzz", Err(e));
            return;
        }
    };
    cmd::step("fuzz targets");
    let result =
        crate::fuzz::list_targets().and_then(|targets| crate::fuzz::run_targets(&targets, seconds));
    report.record("fuzz", result);
}

/// Everything the tests need on the machine before they run, including the
/// cached kube-apiserver of the Kubernetes-backed tests (built on first use;
/// the tests find it in the cache, or through `PLEXUS_KUBE_APISERVER`).
pub fn ensure_test_prerequisites() -> Result {
    ensure_debian_packages(TEST_PACKAGES)?;
    crate::apiserver::ensure()?;
    Ok(())
}

/// Totals of the `test result:` lines of a `cargo test` run.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Counts {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Counts {
    /// Adds one libtest summary line, e.g.
    /// `test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; ...`.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

/// Runs `cargo test`, echoing its stdout while counting the tests.
fn run_counting(test: &mut Command) -> Result<(Counts, ExitStatus)> {
    eprintln!("+ {}", cmd::display(test));
    let mut child = test.stdout(Stdio::piped()).spawn()?;
    let mut counts = Counts::default();
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut out = std::io::stdout().lock();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        counts.add_line(&line);
        writeln!(out, "{line}")?;
    }
    drop(out);
    Ok((counts, child.wait()?))
}

/// The outcome of each step, for the closing summary.
struct Report {
    steps: Vec<(String, String, Duration)>,
    failed: bool,
    lap_start: Instant,
}

impl Report {
    /// An empty report whose first step starts now.
    fn new() -> Self {
        Report {
            steps: Vec::new(),
            failed: false,
            lap_start: Instant::now(),
        }
    }

    /// Records a step's result; returns whether it succeeded.
    fn record(&mut self, name: &str, result: Result) -> bool {
        let elapsed = self.lap();
        let outcome = match result {
            Ok(()) => "ok".to_string(),
            Err(e) => {
                self.failed = true;
                eprintln!("!! {name} failed: {e}");
                format!("FAILED: {e}")
            }
        };
        let ok = outcome == "ok";
        self.steps.push((name.to_string(), outcome, elapsed));
        ok
    }

    /// Records a step that did not run.
    fn skip(&mut self, name: &str, why: &str) {
        self.failed = true;
        self.steps
            .push((name.to_string(), format!("skipped: {why}"), Duration::ZERO));
    }

    /// Time since the previous step ended.
    fn lap(&mut self) -> Duration {
        let now = Instant::now();
        now - std::mem::replace(&mut self.lap_start, now)
    }

    /// Prints the summary, ending with the test counts, and returns the verdict.
    fn finish(self, counts: Option<Counts>) -> Result {
        eprintln!("\n==> summary");
        for (name, outcome, took) in &self.steps {
            eprintln!("  {name:<14} {:>6.1}s  {outcome}", took.as_secs_f64());
        }
        if let Some(c) = counts {
            // A plain closing line, read by CI to count the tests.
            println!(
                "tests: {} passed, {} failed, {} skipped",
                c.passed, c.failed, c.ignored
            );
        }
        if self.failed {
            Err("cargo xtask test failed".into())
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_libtest_lines() {
        let mut c = Counts::default();
        c.add_line("test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        c.add_line(
            "test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        c.add_line("running 3 tests");
        assert_eq!(
            c,
            Counts {
                passed: 4,
                failed: 2,
                ignored: 1
            }
        );
    }
}
