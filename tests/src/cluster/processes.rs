//! The cluster's processes: etcd (number 0) and the API server (number 1), started tied to
//! this process, watched until ready, paused, killed and started again.

use std::future::Future;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use super::{apiserver_flags, get_text, LocalCluster, Result};
use crate::process::{signal, spawn_tied, tail};

/// How long etcd and the API server get to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(50);

impl LocalCluster {
    /// Freezes the API server (SIGSTOP): connections are still accepted by the kernel, but
    /// nothing answers, as with a hung or overloaded server.
    pub fn pause(&self) {
        signal(self.apiserver_pid, nix::sys::signal::Signal::SIGSTOP);
    }

    /// Lets a [`pause`](Self::pause)d API server run again (SIGCONT).
    pub fn resume(&self) {
        signal(self.apiserver_pid, nix::sys::signal::Signal::SIGCONT);
    }

    /// Kills the API server (SIGKILL, as a crash would), keeping etcd and its data running.
    pub fn kill_apiserver(&self) {
        let mut procs = self.procs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(child) = procs.get_mut(1) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the API server again after [`kill_apiserver`](Self::kill_apiserver), on the same
    /// port, etcd and keys, and waits until it is ready (`/readyz`).
    pub fn start_apiserver_again(&mut self) -> Result {
        let d = self.dir().to_path_buf();
        let api_log = d.join("apiserver.log");
        let log = std::fs::OpenOptions::new().append(true).open(&api_log)?;
        let mut api = Command::new(&self.apiserver);
        api.args(apiserver_flags(
            &d,
            &self.etcd_url,
            self.api_port,
            &self.extra_groups,
        ))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
        let child = spawn_tied(&mut api)
            .map_err(|e| format!("cannot start {}: {e}", self.apiserver.display()))?;
        self.apiserver_pid = child.id();
        {
            let mut procs = self.procs.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(old) = procs.get_mut(1) {
                let _ = old.kill();
                let _ = old.wait();
                *old = child;
            } else {
                procs.push(child);
            }
        }
        let this = &*self;
        this.block_on(async {
            let client = this.admin_client();
            this.wait_async(
                "kube-apiserver /readyz after a restart",
                &api_log,
                || async { get_text(&client, "/readyz").await.is_ok_and(|t| t == "ok") },
            )
            .await
        })
    }

    /// Spawns `cmd` with stdout and stderr going to `log`; it dies with this process.
    pub(super) fn spawn(&self, cmd: &mut Command, log: &Path) -> Result<u32> {
        let file = std::fs::File::create(log)?;
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = spawn_tied(cmd)
            .map_err(|e| format!("cannot start {}: {e}", cmd.get_program().to_string_lossy()))?;
        let pid = child.id();
        self.procs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(child);
        Ok(pid)
    }

    /// The exit status of process number `index`, if it has exited.
    fn exited(&self, index: usize) -> Option<std::process::ExitStatus> {
        let mut procs = self.procs.lock().unwrap_or_else(PoisonError::into_inner);
        procs
            .get_mut(index)
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Polls `ready` until it holds; fails, with the log's tail, if process `index` exits or
    /// the time is up.
    pub(super) fn wait_until(
        &self,
        what: &str,
        log: &Path,
        index: usize,
        mut ready: impl FnMut() -> bool,
    ) -> Result {
        let started = Instant::now();
        loop {
            if ready() {
                return Ok(());
            }
            self.check_running(what, log, index, started)?;
            std::thread::sleep(POLL);
        }
    }

    /// [`wait_until`](Self::wait_until) for the API server, async.
    pub(super) async fn wait_async<F: Future<Output = bool>>(
        &self,
        what: &str,
        log: &Path,
        mut ready: impl FnMut() -> F,
    ) -> Result {
        let started = Instant::now();
        loop {
            if ready().await {
                return Ok(());
            }
            self.check_running(what, log, 1, started)?;
            tokio::time::sleep(POLL).await;
        }
    }

    fn check_running(&self, what: &str, log: &Path, index: usize, started: Instant) -> Result {
        if let Some(status) = self.exited(index) {
            return Err(format!("waiting for {what}: it exited ({status}):\n{}", tail(log)).into());
        }
        if started.elapsed() > READY_TIMEOUT {
            return Err(format!("{what} not ready after {READY_TIMEOUT:?}:\n{}", tail(log)).into());
        }
        Ok(())
    }

    /// Runs `future` to completion on a fresh single-threaded runtime on another thread, so
    /// that it works whether or not the caller is inside a runtime.
    pub(super) fn block_on<T: Send>(&self, future: impl Future<Output = T> + Send) -> T {
        std::thread::scope(|scope| {
            let thread = scope.spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a Tokio runtime")
                    .block_on(future)
            });
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    pub(super) fn kill(&mut self) {
        let procs = std::mem::take(&mut *self.procs.lock().unwrap_or_else(PoisonError::into_inner));
        // The API server first, then etcd; nothing of a throwaway cluster is worth a graceful stop.
        for mut child in procs.into_iter().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
