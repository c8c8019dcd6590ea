//! `cargo xtask fresh`: the README's first command on a machine that has nothing but Rust, and
//! the plugins on a node of an older distribution.
//!
//! 1. A minimal Debian bookworm root is built with `mmdebstrap` (minbase, plus what a machine
//!    "with Rust" has besides the toolchain: a C linker, the C library's development files,
//!    CA certificates). `/proc`, `/sys`, `/dev` and `/run` are mounted into it, the host's Rust
//!    toolchain read-only at `/opt/rust`, and a `git clone` of this repository is copied to
//!    `/root/plexus`; there `cargo xtask demo` runs with a cleared environment, so it installs
//!    every Debian package and downloads every crate itself. Nothing of the host's packages
//!    is visible inside.
//! 2. The `plexus` and `plexus-ipam` that build made are run with `CNI_COMMAND=VERSION` in an
//!    old Debian root (buster, glibc 2.28; when no mirror of buster answers, the oldest suite
//!    that does) and in an empty root holding nothing but the binary: both must answer with
//!    their version JSON.
//!
//! Everything runs in a private mount namespace, so no mount is ever visible to the host; the
//! mounts are undone and the roots removed at the end, also when a step fails. A root is only
//! removed once nothing is mounted below it any more.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use crate::cmd::{self, Result};
use crate::packages::{debian_archive_uri, ensure_debian_packages};

/// Arguments of `cargo xtask fresh`.
#[derive(clap::Args, Debug)]
pub struct FreshArgs {
    /// Skip the bookworm root and the demo; run only the old-distribution check, with binaries
    /// built here (debug profile).
    #[arg(long)]
    pub no_demo: bool,
}

/// What the host needs to build the roots.
const HOST_PACKAGES: &[(&str, &str)] = &[("mmdebstrap", "/usr/bin/mmdebstrap")];

/// Packages of the bookworm root besides `minbase`: what a Debian machine needs for Rust
/// itself (a linker and the C library's files; Rust's own toolchain is mounted) and to fetch
/// crates over HTTPS. Everything else the demo must install itself.
const RUST_PREREQUISITES: &str = "ca-certificates,gcc,libc6-dev";

/// Old suites to try, oldest first, with the archive that still serves them; the host's own
/// mirror is tried after each (see [`old_root`]).
const OLD_SUITES: &[(&str, &str)] = &[
    ("buster", "http://archive.debian.org/debian"),
    ("bullseye", ""),
];

/// The keyrings that sign the old suites (buster's keys moved to the removed keys).
const KEYRINGS: &[&str] = &[
    "/usr/share/keyrings/debian-archive-keyring.gpg",
    "/usr/share/keyrings/debian-archive-removed-keys.gpg",
];

/// Where the toolchain is mounted inside the bookworm root.
const TOOLCHAIN_MOUNT: &str = "opt/rust";
/// Where Debian keeps the CAs a machine's administrator added.
const LOCAL_CAS: &str = "/usr/local/share/ca-certificates";
/// coreutils' `chroot` (by path: the commands run with a cleared environment).
const CHROOT: &str = "/usr/sbin/chroot";
/// The binaries the old-distribution check runs.
const VERSION_BINARIES: &[&str] = &["plexus", "plexus-ipam"];

/// Why `fresh` refuses to run as another user.
const NEEDS_ROOT: &str = "cargo xtask fresh needs root: it builds Debian roots with mmdebstrap, \
                          mounts /proc, /sys, /dev and /run into them and runs commands there \
                          with chroot (try `sudo -E cargo xtask fresh`)";

/// Runs `cargo xtask fresh`.
pub fn run(args: &FreshArgs) -> Result {
    if !cmd::is_root() {
        return Err(NEEDS_ROOT.into());
    }
    let mut steps = Steps::default();
    let result = run_steps(args, &mut steps);
    steps.print();
    result
}

/// Every step in turn; `steps` records each one's time.
fn run_steps(args: &FreshArgs, steps: &mut Steps) -> Result {
    steps.time("host packages (mmdebstrap)", || {
        ensure_debian_packages(HOST_PACKAGES)
    })?;
    private_mounts()?;
    let mirror = debian_archive_uri()?;
    let binaries = tempfile::Builder::new()
        .prefix("plexus-fresh-bin-")
        .tempdir_in("/var/tmp")?;
    if args.no_demo {
        steps.time("build plexus, plexus-ipam here", || {
            copy_host_binaries(binaries.path())
        })?;
    } else {
        let root = Root::create("plexus-fresh-bookworm-")?;
        let outcome = demo_in_bookworm(&root, &mirror, binaries.path(), steps);
        steps.time("unmount, remove the bookworm root", || root.remove())?;
        outcome?;
    }
    old_distribution(&mirror, binaries.path(), steps)
}

/// Builds the bookworm root, runs the demo there, and copies the binaries it built to `out`.
fn demo_in_bookworm(root: &Root, mirror: &str, out: &Path, steps: &mut Steps) -> Result {
    steps.time("mmdebstrap bookworm (minbase)", || {
        mmdebstrap(
            "bookworm",
            mirror,
            "minbase",
            Some(RUST_PREREQUISITES),
            &root.path,
        )
    })?;
    steps.time("mount /proc /sys /dev /run, Rust", || {
        write_resolv_conf(&root.path)?;
        root.mount_proc()?;
        for dir in ["/sys", "/dev", "/run"] {
            root.bind(Path::new(dir), dir.trim_start_matches('/'), false)?;
        }
        root.bind(&toolchain()?, TOOLCHAIN_MOUNT, true)
    })?;
    steps.time("trust this machine's local CAs", || trust_local_cas(root))?;
    let project = root.path.join("root/plexus");
    steps.time("git clone", || {
        cmd::run(
            Command::new("git")
                .args(["clone", "--quiet", "--no-hardlinks"])
                .arg(cmd::workspace_root())
                .arg(&project),
        )
    })?;
    steps.time("cargo xtask demo (in the root)", || {
        root.run_shell("cd /root/plexus && cargo xtask demo")
    })?;
    let built = cmd::profile_dir(&project.join("target"), "debug");
    for name in VERSION_BINARIES {
        fs::copy(built.join(name), out.join(name))
            .map_err(|e| format!("copying {name} out of the root: {e}"))?;
    }
    Ok(())
}

/// `--no-demo`: builds the binaries here and copies them to `out`.
fn copy_host_binaries(out: &Path) -> Result {
    let root = cmd::workspace_root();
    cmd::run(cmd::cargo().current_dir(&root).args([
        "build",
        "-p",
        "plexus",
        "-p",
        "plexus-ipam",
        "--bin",
        "plexus",
        "--bin",
        "plexus-ipam",
    ]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|dir| root.join(dir))
        .unwrap_or_else(|| root.join("target"));
    for name in VERSION_BINARIES {
        fs::copy(
            cmd::profile_dir(&target, "debug").join(name),
            out.join(name),
        )?;
    }
    Ok(())
}

/// Runs the binaries of `binaries` with `VERSION` in the oldest Debian root that can be built,
/// then in an empty root.
fn old_distribution(mirror: &str, binaries: &Path, steps: &mut Steps) -> Result {
    let root = Root::create("plexus-fresh-old-")?;
    let outcome = steps.time("mmdebstrap an old suite", || old_root(&root.path, mirror));
    let outcome = outcome.and_then(|suite| {
        let libc = root.output(&["/usr/bin/getconf", "GNU_LIBC_VERSION"])?;
        println!("old root: Debian {suite}, {}", libc.trim());
        steps.time(&format!("VERSION in {suite}"), || {
            check_versions(&root, binaries)
        })
    });
    steps.time("remove the old root", || root.remove())?;
    outcome?;

    let empty = Root::create("plexus-fresh-empty-")?;
    let outcome = steps.time("VERSION in an empty root", || {
        println!("empty root: no files but the binary, no C library at all");
        check_versions(&empty, binaries)
    });
    steps.time("remove the empty root", || empty.remove())?;
    outcome
}

/// Builds the oldest suite of [`OLD_SUITES`] that a mirror serves into `root`; returns its name.
fn old_root(root: &Path, host_mirror: &str) -> Result<&'static str> {
    let mut failures = Vec::new();
    for (suite, archive) in OLD_SUITES {
        let mirrors = [*archive, host_mirror];
        for mirror in mirrors.iter().filter(|m| !m.is_empty()) {
            match mmdebstrap(suite, mirror, "essential", None, root) {
                Ok(()) => return Ok(suite),
                Err(e) => {
                    eprintln!("!! {suite} from {mirror}: {e}");
                    failures.push(format!("{suite} from {mirror}"));
                    empty_dir(root)?;
                }
            }
        }
        if *suite == "buster" {
            println!("NOTE: no mirror serves Debian buster (glibc 2.28); trying a newer suite");
        }
    }
    Err(format!(
        "no old Debian suite could be built: {}",
        failures.join(", ")
    )
    .into())
}

/// Runs each binary with `CNI_COMMAND=VERSION` inside `root` (copied to its top directory)
/// and checks that it answers with its version JSON.
fn check_versions(root: &Root, binaries: &Path) -> Result {
    for name in VERSION_BINARIES {
        fs::copy(binaries.join(name), root.path.join(name))
            .map_err(|e| format!("copying {name} into {}: {e}", root.path.display()))?;
        let stdin = r#"{"cniVersion":"1.0.0","name":"fresh","type":"plexus"}"#;
        let answer = root.plugin_version(name, stdin)?;
        let json: serde_json::Value = serde_json::from_str(&answer)
            .map_err(|e| format!("{name} VERSION answered {answer:?}: {e}"))?;
        if !json["supportedVersions"].is_array() {
            return Err(
                format!("{name} VERSION answered without supportedVersions: {answer}").into(),
            );
        }
        println!("{name} VERSION: {answer}");
    }
    Ok(())
}

/// `mmdebstrap --variant=<variant> <suite> <dir> <mirror>`, as root.
fn mmdebstrap(
    suite: &str,
    mirror: &str,
    variant: &str,
    include: Option<&str>,
    dir: &Path,
) -> Result {
    let mut command = Command::new("mmdebstrap");
    command
        .args(["--mode=root", "--format=directory", "--quiet"])
        .arg(format!("--variant={variant}"))
        .arg("--aptopt=Acquire::Check-Valid-Until \"false\"");
    for keyring in KEYRINGS {
        command.arg(format!("--keyring={keyring}"));
    }
    if let Some(include) = include {
        command.arg(format!("--include={include}"));
    }
    cmd::run(command.arg(suite).arg(dir).arg(mirror))
}

/// Gives the root the host's name servers (the content, not a link into the host's `/run`).
fn write_resolv_conf(root: &Path) -> Result {
    let conf =
        fs::read("/etc/resolv.conf").map_err(|e| format!("reading /etc/resolv.conf: {e}"))?;
    let path = root.join("etc/resolv.conf");
    let _ = fs::remove_file(&path);
    fs::write(&path, conf).map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(())
}

/// The certificate authorities this machine's administrator added (`/usr/local/share/
/// ca-certificates`), which a network that intercepts HTTPS needs: the root trusts them too, as
/// any fresh machine on this network would. Debian's own CA list is the root's.
fn trust_local_cas(root: &Root) -> Result {
    let host = Path::new(LOCAL_CAS);
    let Ok(entries) = fs::read_dir(host) else {
        return Ok(());
    };
    let inside = root.path.join(LOCAL_CAS.trim_start_matches('/'));
    fs::create_dir_all(&inside)?;
    for entry in entries.flatten() {
        if entry.path().extension().is_some_and(|e| e == "crt") {
            println!("trusting {}", entry.path().display());
            fs::copy(entry.path(), inside.join(entry.file_name()))?;
        }
    }
    root.run_shell("update-ca-certificates >/dev/null")
}

/// The directory of the Rust toolchain that runs us (`rustc --print sysroot`).
fn toolchain() -> Result<PathBuf> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = cmd::output(
        Command::new(rustc)
            .current_dir(cmd::workspace_root())
            .args(["--print", "sysroot"]),
    )?;
    Ok(PathBuf::from(sysroot.trim()))
}

/// Moves this process into a mount namespace of its own whose mounts do not propagate to the
/// host's, so that nothing mounted for a root is ever seen outside, even after a crash.
fn private_mounts() -> Result {
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making / private: {e}"))?;
    Ok(())
}

/// Removes everything inside `dir`, keeping `dir`.
fn empty_dir(dir: &Path) -> Result {
    ensure_nothing_mounted(dir)?;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() && !path.is_symlink() {
            fs::remove_dir_all(&path)?;
        } else {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Fails if anything is mounted at or below `dir` (`/proc/self/mountinfo`).
fn ensure_nothing_mounted(dir: &Path) -> Result {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    let below: Vec<&str> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| Path::new(point).starts_with(dir))
        .collect();
    if below.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "still mounted below {}: {}; not removing it",
            dir.display(),
            below.join(", ")
        )
        .into())
    }
}

/// A Debian root (or an empty one) under `/var/tmp`, and what is mounted in it.
struct Root {
    path: PathBuf,
    /// Mount points, in the order they were mounted.
    mounts: std::cell::RefCell<Vec<PathBuf>>,
}

impl Root {
    /// An empty directory `/var/tmp/<prefix>XXXXXX`.
    fn create(prefix: &str) -> Result<Root> {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in("/var/tmp")?;
        Ok(Root {
            path: dir.keep(),
            mounts: Default::default(),
        })
    }

    /// Mounts a new procfs at `<root>/proc`.
    fn mount_proc(&self) -> Result {
        let target = self.path.join("proc");
        mount(
            Some("proc"),
            &target,
            Some("proc"),
            MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| format!("mounting proc on {}: {e}", target.display()))?;
        self.mounts.borrow_mut().push(target);
        Ok(())
    }

    /// Bind-mounts `source` (with everything mounted below it) at `<root>/<inside>`.
    fn bind(&self, source: &Path, inside: &str, read_only: bool) -> Result {
        let target = self.path.join(inside);
        fs::create_dir_all(&target)?;
        let fail = |e: nix::Error| {
            format!(
                "bind-mounting {} on {}: {e}",
                source.display(),
                target.display()
            )
        };
        mount(
            Some(source),
            &target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(fail)?;
        self.mounts.borrow_mut().push(target.clone());
        if read_only {
            mount(
                None::<&str>,
                &target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .map_err(fail)?;
        }
        Ok(())
    }

    /// A `chroot` into the root with a cleared environment: only `HOME`, a `PATH` that starts
    /// with the mounted toolchain, and a `CARGO_HOME` of the root's own.
    fn chroot(&self) -> Command {
        let mut command = Command::new(CHROOT);
        command
            .env_clear()
            .env("HOME", "/root")
            .env("LANG", "C.UTF-8")
            .env(
                "PATH",
                format!("/{TOOLCHAIN_MOUNT}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
            )
            .env("CARGO_HOME", "/root/.cargo")
            .arg(&self.path);
        command
    }

    /// Runs a shell command line in the root.
    fn run_shell(&self, line: &str) -> Result {
        cmd::run(self.chroot().args(["/bin/sh", "-c", line]))
    }

    /// Runs a program of the root and returns its stdout.
    fn output(&self, argv: &[&str]) -> Result<String> {
        cmd::output(self.chroot().args(argv))
    }

    /// Runs `/<name>` of the root as a runtime runs a CNI plugin for VERSION; returns stdout.
    fn plugin_version(&self, name: &str, stdin: &str) -> Result<String> {
        let mut command = Command::new(CHROOT);
        command
            .env_clear()
            .env("CNI_COMMAND", "VERSION")
            .arg(&self.path)
            .arg(format!("/{name}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        eprintln!("+ {} <<< {stdin}", cmd::display(&command));
        let mut child = command.spawn()?;
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(stdin.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(format!(
                "{name} VERSION failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stdout)
            )
            .into());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Undoes the mounts (last first), then removes the root once nothing is mounted in it.
    fn remove(&self) -> Result {
        for target in self.mounts.borrow_mut().drain(..).rev() {
            if let Err(e) = umount2(&target, MntFlags::MNT_DETACH) {
                eprintln!("warning: unmounting {}: {e}", target.display());
            }
        }
        ensure_nothing_mounted(&self.path)?;
        fs::remove_dir_all(&self.path)
            .map_err(|e| format!("removing {}: {e}", self.path.display()).into())
    }
}

/// Each step's name, time and outcome, printed as a summary at the end.
#[derive(Default)]
struct Steps(Vec<(String, Duration, bool)>);

impl Steps {
    /// Runs one step, printing its banner and its time.
    fn time<T>(&mut self, name: &str, step: impl FnOnce() -> Result<T>) -> Result<T> {
        cmd::step(name);
        let started = Instant::now();
        let result = step();
        let took = started.elapsed();
        eprintln!("==> {name}: {:.1} s", took.as_secs_f64());
        self.0.push((name.to_string(), took, result.is_ok()));
        result
    }

    /// The summary: every step with its time.
    fn print(&self) {
        eprintln!("\n==> fresh: summary");
        for (name, took, ok) in &self.0 {
            let outcome = if *ok { "ok" } else { "FAILED" };
            eprintln!("  {name:<36} {:>7.1}s  {outcome}", took.as_secs_f64());
        }
        let total: Duration = self.0.iter().map(|(_, took, _)| *took).sum();
        eprintln!("  {:<36} {:>7.1}s", "total", total.as_secs_f64());
    }
}
