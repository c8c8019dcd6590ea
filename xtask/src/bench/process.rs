//! Running one process with its wall time and peak memory.

use std::io::{self, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::PROCESS_PATH;
use crate::cmd::Result;

/// How the bench starts a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Spawn {
    /// The standard library's fastest way (`posix_spawn`, a vfork), for timing. The child's
    /// `ru_maxrss` then starts at the bench's own peak RSS: `execve` records the peak of the
    /// memory it leaves, which a vfork child shares with its parent.
    Timed,
    /// A real `fork` (forced by a no-op `pre_exec`), for memory: the child leaves a copy of the
    /// bench's memory that holds only its touched private pages, so its `ru_maxrss` starts lower.
    Fresh,
}

/// One finished process: what it printed, how it ended, how long it took and its peak memory.
#[derive(Debug)]
pub(super) struct ProcessRun {
    pub(super) stdout: Vec<u8>,
    pub(super) status: ExitStatus,
    /// Wall time from just before the spawn to the end of `wait4`.
    pub(super) elapsed: Duration,
    /// `ru_maxrss` from `wait4`: the largest peak RSS of the process and of the descendants it
    /// waited for (the largest single process of its tree, not a sum).
    pub(super) max_rss_kib: u64,
}

impl ProcessRun {
    /// Runs `program` with only `PATH` and `env` in its environment, `stdin` as input and stderr
    /// inherited, and waits for it.
    pub(super) fn start(
        program: &Path,
        env: &[(&'static str, String)],
        stdin: &[u8],
        spawn: Spawn,
    ) -> Result<ProcessRun> {
        let mut command = Command::new(program);
        if spawn == Spawn::Fresh {
            // SAFETY: the closure does nothing, so it is async-signal-safe.
            unsafe { command.pre_exec(|| Ok(())) };
        }
        command
            .env_clear()
            .env("PATH", PROCESS_PATH)
            .envs(env.iter().map(|(k, v)| (*k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let fail = |e: io::Error| format!("running {}: {e}", program.display());
        let start = Instant::now();
        let mut child = command.spawn().map_err(fail)?;
        if let Some(mut pipe) = child.stdin.take() {
            // A plugin may exit without reading its stdin; the exit status tells.
            let _ = pipe.write_all(stdin);
        }
        let mut stdout = Vec::new();
        if let Some(mut pipe) = child.stdout.take() {
            pipe.read_to_end(&mut stdout).map_err(fail)?;
        }
        let (status, max_rss_kib) = wait4(child.id()).map_err(fail)?;
        let elapsed = start.elapsed();
        Ok(ProcessRun {
            stdout,
            status,
            elapsed,
            max_rss_kib,
        })
    }

    /// Fails with what the process printed unless it exited with 0.
    pub(super) fn check(&self, what: &str) -> Result {
        if self.status.success() {
            return Ok(());
        }
        Err(format!(
            "{what} failed ({}): {}",
            self.status,
            String::from_utf8_lossy(&self.stdout).trim()
        )
        .into())
    }
}

/// Reaps child `pid` with `wait4(2)`; returns its exit status and its `ru_maxrss` in KiB.
pub(super) fn wait4(pid: u32) -> io::Result<(ExitStatus, u64)> {
    let pid = libc::pid_t::try_from(pid).map_err(io::Error::other)?;
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is plain old data, for which all-zero bytes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are valid for writes for the duration of the call.
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if reaped == pid {
            let max_rss = u64::try_from(usage.ru_maxrss).unwrap_or(0);
            return Ok((ExitStatus::from_raw(status), max_rss));
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}
