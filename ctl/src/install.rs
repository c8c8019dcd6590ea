//! `plexusctl install`: puts Plexus on a node. A DaemonSet's init container runs it on every
//! node, and its main container runs it again with `--watch`.
//!
//! In this order, so that the runtime never sees a configuration whose parts are missing:
//!
//! 1. copies `plexus` (and `plexus-ipam` and `plexus-sriov` when they are there) from the
//!    directory of `plexusctl` (or `--source-dir`) into the CNI bin dir, atomically
//!    ([`binaries`], [`atomic`]): a runtime executing the old binary meanwhile never causes
//!    "Text file busy" (Multus #1221);
//! 2. creates Plexus's cache dir (`--cni-dir`, mode 0700);
//! 3. copies the service account's token and CA bundle into `<confDir>/plexus.d/` and writes
//!    `plexus.d/plexus.kubeconfig` naming them by path ([`kubeconfig`]);
//! 4. writes `<confDir>/00-plexus.conflist` wrapping the primary network found in the conf dir,
//!    waiting up to `--wait-for-primary` seconds for it ([`conflist`]), with `agentSocket`
//!    naming the node agent's socket (`--agent-socket`, default `/run/plexus/plexusd.sock`;
//!    empty with `--no-agent`, so that Plexus never asks an agent).
//!
//! Every file is written only when its content changes. The node's directories are K3s's when
//! `/var/lib/rancher/k3s` exists (or `--k3s`), else `/opt/cni/bin` and `/etc/cni/net.d`
//! ([`layout`]); all node paths are taken under `--root`, while the paths written into the
//! configuration are the node's own.
//!
//! With `--watch` it then checks every `--watch-interval` seconds (10) and copies the token and
//! CA bundle again when the kubelet has rotated them (Multus #852: a kubeconfig written once
//! stops working when its token expires), reinstalls a binary that went missing (older K3s
//! moves its bin dir on upgrade) and rewrites the conflist if the primary changed.
//!
//! **Nothing is ever deleted**, not on SIGTERM, not on exit. Multus's daemon removes its
//! configuration when it stops (Multus #1527); while it is gone the runtime falls back to
//! Flannel's file and pods scheduled meanwhile come up on Flannel alone, their extra networks
//! silently missing. Plexus's conflist stays, so such pods wait for `plexus` instead. To remove
//! Plexus from a node, delete `00-plexus.conflist` (and `plexus.d/`) by hand.

pub mod atomic;
pub mod binaries;
pub mod conflist;
pub mod kubeconfig;
pub mod layout;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};
use thiserror::Error;

use self::atomic::Change;
use self::binaries::Installed;
use self::layout::{Layout, LayoutOptions};
use plexus::config::DEFAULT_CNI_DIR;
use plexus_ipam::config::DEFAULT_AGENT_SOCKET;

/// Why `plexusctl install` failed.
#[derive(Debug, Error)]
pub enum InstallError {
    /// A file or directory could not be read, written or created.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// To what.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A node path on the command line is relative.
    #[error("{flag} must be an absolute path on the node, got {}", path.display())]
    Relative {
        /// The option.
        flag: &'static str,
        /// Its value.
        path: PathBuf,
    },
    /// `plexus` is not in the source directory.
    #[error("{} not found (plexusctl installs the binaries next to itself, or in --source-dir)", .0.display())]
    MissingBinary(PathBuf),
    /// The conf dir could not be listed.
    #[error("{0}")]
    Resolve(String),
    /// No primary network configuration appeared in time.
    #[error("no primary network configuration (.conf, .conflist or .json that is not Plexus's) in {} after waiting {waited} s; is the primary CNI (Flannel) running? See --wait-for-primary", dir.display())]
    NoPrimary {
        /// The conf dir.
        dir: PathBuf,
        /// How long it was waited for, in seconds.
        waited: u64,
    },
    /// The primary network's configuration cannot be wrapped.
    #[error("the primary network configuration {} cannot be used: {reason}", path.display())]
    BadPrimary {
        /// Its file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A service account file is empty.
    #[error("the service account file {} is empty", .0.display())]
    EmptyCredential(PathBuf),
    /// No API server address is known.
    #[error("no API server address: pass --server, set KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT, or pass --no-kubeconfig")]
    NoServer,
    /// A signal arrived while waiting for the primary network.
    #[error("stopped by a signal while waiting for the primary network configuration")]
    Interrupted,
    /// SIGTERM and SIGINT could not be caught for `--watch`.
    #[error("cannot wait for signals: {0}")]
    Signals(nix::Error),
}

impl InstallError {
    /// A closure turning an I/O error while doing `action` on `path` into an [`InstallError`].
    pub fn io(
        action: &'static str,
        path: impl AsRef<Path>,
    ) -> impl FnOnce(std::io::Error) -> InstallError {
        let path = path.as_ref().to_path_buf();
        move |source| InstallError::Io {
            action,
            path,
            source,
        }
    }
}

/// Arguments of `plexusctl install`.
#[derive(clap::Args, Debug, Clone)]
pub struct InstallArgs {
    /// The node's root directory as this process sees it; every node path is taken under it.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Use K3s's directories even if /var/lib/rancher/k3s does not exist (else detected).
    #[arg(long)]
    pub k3s: bool,
    /// K3s before v1.28.15+k3s1, v1.29.10+k3s1, v1.30.6+k3s1 and v1.31.2+k3s1: install into
    /// /var/lib/rancher/k3s/data/current/bin (used anyway when data/cni does not exist but
    /// data/current/bin does).
    #[arg(long)]
    pub k3s_legacy_bin_dir: bool,
    /// The CNI bin dir [default: /var/lib/rancher/k3s/data/cni on K3s, else /opt/cni/bin].
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// The CNI conf dir [default: /var/lib/rancher/k3s/agent/etc/cni/net.d on K3s, else
    /// /etc/cni/net.d].
    #[arg(long, value_name = "DIR")]
    pub conf_dir: Option<PathBuf>,
    /// Plexus's cache dir (`cniDir`).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_CNI_DIR)]
    pub cni_dir: PathBuf,
    /// Where `plexus`, `plexus-ipam` and `plexus-sriov` are copied from [default: the directory of plexusctl].
    /// Not under --root.
    #[arg(long, value_name = "DIR")]
    pub source_dir: Option<PathBuf>,
    /// The service account's token and ca.crt. Not under --root.
    #[arg(long, value_name = "DIR", default_value = kubeconfig::SA_DIR)]
    pub sa_dir: PathBuf,
    /// The API server URL [default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT].
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Write no kubeconfig (Plexus then runs only the primary and static networks).
    #[arg(long, conflicts_with_all = ["server"])]
    pub no_kubeconfig: bool,
    /// Wait up to this long for the primary network's configuration to appear.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub wait_for_primary: u64,
    /// `readinessindicatorfile`: ADD waits for it (e.g. /run/flannel/subnet.env on K3s).
    #[arg(long, value_name = "PATH")]
    pub readiness_indicator_file: Option<PathBuf>,
    /// `logFile` of the generated configuration.
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
    /// `logLevel` of the generated configuration.
    #[arg(long, value_name = "LEVEL", value_parser = ["debug", "verbose", "info", "warn", "error", "panic"])]
    pub log_level: Option<String>,
    /// `agentSocket`: where Plexus finds the node agent `plexusd` (the DaemonSet's `plexusd`
    /// container listens there). Without an agent listening, every call does the work itself.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_AGENT_SOCKET, conflicts_with = "no_agent")]
    pub agent_socket: PathBuf,
    /// Write an empty `agentSocket`: Plexus never asks the node agent.
    #[arg(long)]
    pub no_agent: bool,
    /// Keep running: refresh the credentials (and binaries and conflist) when they change.
    /// Deletes nothing when stopped.
    #[arg(long)]
    pub watch: bool,
    /// How often --watch checks, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10, requires = "watch",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub watch_interval: u64,
}

/// Everything one installation pass needs, worked out from the arguments once.
#[derive(Debug)]
struct Plan {
    layout: Layout,
    source_dir: PathBuf,
    /// The API server, unless `--no-kubeconfig`.
    server: Option<String>,
    sa_dir: PathBuf,
    settings: conflist::Settings,
}

impl Plan {
    fn new(args: &InstallArgs) -> Result<Plan, InstallError> {
        let absolute = |flag: &'static str, p: Option<&PathBuf>| match p {
            Some(path) if !path.is_absolute() => Err(InstallError::Relative {
                flag,
                path: path.clone(),
            }),
            _ => Ok(()),
        };
        absolute("--bin-dir", args.bin_dir.as_ref())?;
        absolute("--conf-dir", args.conf_dir.as_ref())?;
        absolute("--cni-dir", Some(&args.cni_dir))?;
        absolute(
            "--readiness-indicator-file",
            args.readiness_indicator_file.as_ref(),
        )?;
        absolute("--log-file", args.log_file.as_ref())?;
        absolute("--agent-socket", Some(&args.agent_socket))?;

        let layout = Layout::detect(
            &args.root,
            &LayoutOptions {
                k3s: args.k3s,
                k3s_legacy_bin_dir: args.k3s_legacy_bin_dir,
                bin_dir: args.bin_dir.clone(),
                conf_dir: args.conf_dir.clone(),
            },
        );
        let source_dir = match &args.source_dir {
            Some(dir) => dir.clone(),
            None => binaries::default_source_dir()?,
        };
        let server = if args.no_kubeconfig {
            None
        } else {
            Some(
                args.server
                    .clone()
                    .or_else(kubeconfig::server_from_env)
                    .ok_or(InstallError::NoServer)?,
            )
        };
        let settings = conflist::Settings {
            cluster_network: PathBuf::new(),
            conf_dir: layout.conf_dir.clone(),
            bin_dir: layout.bin_dir.clone(),
            cni_dir: args.cni_dir.clone(),
            kubeconfig: server
                .as_ref()
                .map(|_| kubeconfig::kubeconfig_path(&layout)),
            readiness_indicator_file: args.readiness_indicator_file.clone(),
            log_file: args.log_file.clone(),
            log_level: args.log_level.clone(),
            agent_socket: if args.no_agent {
                PathBuf::new()
            } else {
                args.agent_socket.clone()
            },
        };
        Ok(Plan {
            layout,
            source_dir,
            server,
            sa_dir: args.sa_dir.clone(),
            settings,
        })
    }

    /// The conf dir as this process sees it.
    fn conf_dir(&self) -> PathBuf {
        self.layout.host(&self.layout.conf_dir)
    }

    /// The generated conflist as this process sees it.
    fn conflist_path(&self) -> PathBuf {
        self.conf_dir().join(conflist::FILE_NAME)
    }
}

/// Prints one line of what was done.
fn say(message: impl std::fmt::Display) {
    println!("plexusctl install: {message}");
}

/// Prints a warning.
fn warn(message: impl std::fmt::Display) {
    eprintln!("plexusctl install: warning: {message}");
}

/// Runs `plexusctl install`.
pub fn run(args: &InstallArgs) -> Result<(), super::Error> {
    // With --watch, block SIGTERM, SIGINT and SIGHUP before anything else, so a signal during
    // the first pass is kept for the watch loop instead of killing the process between two
    // files.
    let signals = if args.watch {
        Some(stop_signals()?)
    } else {
        None
    };
    let plan = Plan::new(args)?;
    let l = &plan.layout;
    say(format_args!(
        "node layout: {} (bin dir {}, conf dir {}{})",
        l.flavor,
        l.bin_dir.display(),
        l.conf_dir.display(),
        if l.root == Path::new("/") {
            String::new()
        } else {
            format!(", under root {}", l.root.display())
        }
    ));
    install_binaries(&plan, false)?;
    create_cni_dir(&plan)?;
    sync_credentials(&plan, false)?;
    // With --watch, a signal while waiting for the primary ends the wait (and the process).
    let interrupted = || signals.as_ref().is_some_and(|rx| rx.try_recv().is_ok());
    let wait = Duration::from_secs(args.wait_for_primary);
    let primary = conflist::wait_for_primary(&plan.conf_dir(), wait, interrupted)?;
    write_conflist(&plan, &primary, true)?;
    say("done; nothing is removed when plexusctl stops");
    match signals {
        Some(signals) => watch(&plan, signals, Duration::from_secs(args.watch_interval)),
        None => Ok(()),
    }
}

/// Step 1: the binaries.
fn install_binaries(plan: &Plan, only_if_missing: bool) -> Result<(), InstallError> {
    let bin_dir = plan.layout.host(&plan.layout.bin_dir);
    for done in binaries::install(&plan.source_dir, &bin_dir, only_if_missing)? {
        match done {
            Installed::Done { dest, change, .. }
                if change == Change::Written || !only_if_missing =>
            {
                let verb = match change {
                    Change::Written => "installed",
                    Change::Unchanged => "already installed",
                };
                say(format_args!("{verb} {}", dest.display()));
            }
            Installed::Absent { name } if !only_if_missing => say(format_args!(
                "{name} is not in {}; not installed",
                plan.source_dir.display()
            )),
            _ => {}
        }
    }
    Ok(())
}

/// Step 2: Plexus's cache dir.
fn create_cni_dir(plan: &Plan) -> Result<(), InstallError> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = plan.layout.host(&plan.settings.cni_dir);
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(InstallError::io("create", &dir))?;
        say(format_args!("created {}", dir.display()));
    }
    Ok(())
}

/// Step 3: token, CA bundle and kubeconfig; with `changes_only`, only writes are reported.
fn sync_credentials(plan: &Plan, changes_only: bool) -> Result<(), InstallError> {
    let Some(server) = &plan.server else {
        if !changes_only {
            say("no kubeconfig (--no-kubeconfig)");
        }
        return Ok(());
    };
    for (path, change) in kubeconfig::sync(&plan.layout, &plan.sa_dir, server)? {
        if change == Change::Written || !changes_only {
            say(format_args!("{change} {}", path.display()));
        }
    }
    Ok(())
}

/// Step 4: the conflist wrapping `primary`.
fn write_conflist(
    plan: &Plan,
    primary: &conflist::Primary,
    report: bool,
) -> Result<Change, InstallError> {
    let name = primary.path.file_name().unwrap_or_default();
    let settings = conflist::Settings {
        cluster_network: plan.layout.conf_dir.join(name),
        ..plan.settings.clone()
    };
    let text = conflist::to_text(&conflist::render(primary, &settings)?);
    let path = plan.conflist_path();
    let change = atomic::write_if_changed(&path, text.as_bytes(), 0o644)
        .map_err(InstallError::io("write", &path))?;
    if report {
        say(format_args!(
            "primary network: {} ({:?})",
            primary.path.display(),
            primary
                .value
                .get("name")
                .and_then(|n| n.as_str())
                .unwrap_or("")
        ));
        for file in conflist::shadowing_files(&plan.conf_dir())? {
            warn(format_args!(
                "{} sorts before {}: the runtime will use it, not Plexus",
                file.display(),
                conflist::FILE_NAME
            ));
        }
    }
    if report || change == Change::Written {
        say(format_args!("{change} {}", path.display()));
    }
    Ok(change)
}

/// Blocks SIGTERM, SIGINT and SIGHUP in this (still single) thread, so every later thread
/// inherits the mask, and waits for them in a thread of their own.
fn stop_signals() -> Result<mpsc::Receiver<Signal>, InstallError> {
    let mut set = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(signal);
    }
    set.thread_block().map_err(InstallError::Signals)?;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(signal) = set.wait() {
                let _ = tx.send(signal);
            }
        })
        .map_err(InstallError::io("start", "the signal thread"))?;
    Ok(rx)
}

/// `--watch`: refreshes every `interval` until a signal arrives; then returns, deleting
/// nothing.
fn watch(
    plan: &Plan,
    signals: mpsc::Receiver<Signal>,
    interval: Duration,
) -> Result<(), super::Error> {
    say(format_args!(
        "watching the credentials, binaries and primary network every {} s",
        interval.as_secs()
    ));
    let mut last_problem = None;
    loop {
        match signals.recv_timeout(interval) {
            Ok(signal) => {
                say(format_args!(
                    "{signal}: stopping; {} and everything else installed stay in place",
                    plan.conflist_path().display()
                ));
                return Ok(());
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err("the signal thread stopped".into());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let problem = refresh(plan).err().map(|e| e.to_string());
        if problem.is_some() && problem != last_problem {
            warn(format_args!(
                "{}; keeping what is installed",
                problem.as_deref().unwrap_or_default()
            ));
        }
        last_problem = problem;
    }
}

/// One round of `--watch`.
fn refresh(plan: &Plan) -> Result<(), InstallError> {
    install_binaries(plan, true)?;
    sync_credentials(plan, true)?;
    match conflist::find_primary(&plan.conf_dir())? {
        Some(primary) => write_conflist(plan, &primary, false).map(drop),
        None => Err(InstallError::NoPrimary {
            dir: plan.conf_dir(),
            waited: 0,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: InstallArgs,
    }

    fn parse(argv: &[&str]) -> Result<InstallArgs, clap::Error> {
        let mut full = vec!["install"];
        full.extend_from_slice(argv);
        Cli::try_parse_from(full).map(|c| c.args)
    }

    #[test]
    fn arguments() {
        let a = parse(&["--k3s", "--wait-for-primary", "30", "--watch"]).unwrap();
        assert!(a.k3s && a.watch);
        assert_eq!(a.root, Path::new("/"));
        assert_eq!(a.watch_interval, 10);
        assert_eq!(a.cni_dir, Path::new(DEFAULT_CNI_DIR));
        assert!(parse(&["--watch-interval", "3"]).is_err(), "needs --watch");
        assert!(parse(&["--watch", "--watch-interval", "0"]).is_err());
        assert!(parse(&["--no-kubeconfig", "--server", "https://x"]).is_err());
        assert!(parse(&["--log-level", "loud"]).is_err());
        assert_eq!(a.agent_socket, Path::new(DEFAULT_AGENT_SOCKET));
        assert!(parse(&["--no-agent", "--agent-socket", "/x.sock"]).is_err());
    }

    #[test]
    fn the_agent_socket_is_written_or_left_empty() {
        let base = ["--source-dir", "/x", "--no-kubeconfig"];
        let socket = |extra: &[&str]| {
            let argv: Vec<&str> = base.iter().chain(extra).copied().collect();
            Plan::new(&parse(&argv).unwrap()).map(|p| p.settings.agent_socket)
        };
        assert_eq!(socket(&[]).unwrap(), Path::new(DEFAULT_AGENT_SOCKET));
        assert_eq!(
            socket(&["--agent-socket", "/run/x/a.sock"]).unwrap(),
            Path::new("/run/x/a.sock")
        );
        assert_eq!(socket(&["--no-agent"]).unwrap(), Path::new(""));
        assert!(matches!(
            socket(&["--agent-socket", "a.sock"]),
            Err(InstallError::Relative {
                flag: "--agent-socket",
                ..
            })
        ));
    }

    #[test]
    fn relative_node_paths_and_a_missing_server_are_refused() {
        let mut a = parse(&["--bin-dir", "bin", "--source-dir", "/x"]).unwrap();
        assert!(matches!(
            Plan::new(&a),
            Err(InstallError::Relative {
                flag: "--bin-dir",
                ..
            })
        ));
        a.bin_dir = None;
        a.server = None;
        if kubeconfig::server_from_env().is_none() {
            assert!(matches!(Plan::new(&a), Err(InstallError::NoServer)));
        }
        a.no_kubeconfig = true;
        let plan = Plan::new(&a).unwrap();
        assert!(plan.settings.kubeconfig.is_none());
    }
}
