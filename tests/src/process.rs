//! Processes and files for the test library: children tied to this process, logs, ports.

use std::io;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock, PoisonError};

use crate::cluster::Result;

/// Writes `content` to `path` through a temporary file and a rename, so readers see the old or
/// the new content, never a partial one (what the kubelet does for projected volumes).
pub(crate) fn write_atomically(path: &Path, content: &str) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, path)
}

/// Runs `cmd` to completion; an error with its stderr if it fails.
pub(crate) fn run(cmd: &mut Command) -> Result {
    let out = cmd.stdin(Stdio::null()).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed ({}): {}",
            cmd.get_program().to_string_lossy(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into())
    }
}

/// Spawns `cmd` from a thread that lives as long as the process, with `PR_SET_PDEATHSIG` set
/// to SIGKILL: the child dies with this process even if nothing stops it. (The death signal
/// follows the spawning *thread*, so it cannot be a test's thread, which ends with the test.)
pub(crate) fn spawn_tied(cmd: &mut Command) -> io::Result<Child> {
    type Job = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("plexus-cluster-spawner".into())
            .spawn(move || {
                for (mut cmd, answer) in queue {
                    let _ = answer.send(cmd.spawn());
                }
            })
            .expect("the spawner thread starts");
        Mutex::new(jobs)
    });
    // Move the command (with its stdio) to the spawner thread, leaving a bare one behind.
    let program = cmd.get_program().to_owned();
    let mut owned = std::mem::replace(cmd, Command::new(program));
    // SAFETY: prctl is async-signal-safe, and the closure touches nothing else.
    unsafe {
        owned.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(io::Error::from)
        });
    }
    let (answer, result) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .send((owned, answer))
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    result
        .recv()
        .map_err(|_| io::Error::other("the spawner thread is gone"))?
}

/// Sends `sig` to process `pid` (0: none).
pub(crate) fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    if pid != 0 {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
    }
}

/// The last lines of a log file, for error messages.
pub(crate) fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Whether `path` is a regular file with an execute bit.
pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub(crate) fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `bytes` random bytes from `/dev/urandom`, as hex.
pub(crate) fn random_hex(bytes: usize) -> io::Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
