//! A real `plexusd` process for tests and benchmarks: started on a socket of its own, waited
//! for until it answers `Ping`, killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use plexus_agent_api::proto::PingReply;
use plexus_agent_api::AgentClient;

/// A running `plexusd`.
#[derive(Debug)]
pub struct Agent {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
    metrics_port: Option<u16>,
}

impl Agent {
    /// Starts `plexusd` (from [`crate::plexus_bin_dir`]) for `node`, listening on `socket`,
    /// its hints under `hint_dir`, its log in `log`; waits until it answers.
    pub fn start(node: &str, socket: &Path, hint_dir: &Path, log: &Path) -> Agent {
        Agent::start_bin(
            &crate::plexus_bin_dir().join("plexusd"),
            node,
            socket,
            hint_dir,
            log,
        )
    }

    /// As [`Agent::start`], reading the cluster of `kubeconfig` (`KUBECONFIG`) for `plexus`:
    /// its watches of the node's pods and NADs, its Events.
    pub fn start_kube(
        bin: &Path,
        node: &str,
        socket: &Path,
        hint_dir: &Path,
        log: &Path,
        kubeconfig: &Path,
    ) -> Agent {
        Agent::start_with(
            bin,
            node,
            socket,
            hint_dir,
            log,
            &[],
            &[("KUBECONFIG", kubeconfig.as_os_str())],
        )
    }

    /// As [`Agent::start`], with the binary `bin` (a release build, for benchmarks).
    pub fn start_bin(bin: &Path, node: &str, socket: &Path, hint_dir: &Path, log: &Path) -> Agent {
        Agent::start_with(bin, node, socket, hint_dir, log, &[], &[])
    }

    /// As [`Agent::start`], hot-plugging the pods of `node` with Plexus's configuration file
    /// `plexus_config`, with `env` added to the agent's environment (e.g. a fault hook); its
    /// log is appended to `log`, so a restarted agent keeps the earlier log.
    pub fn start_hotplug(
        node: &str,
        socket: &Path,
        hint_dir: &Path,
        log: &Path,
        plexus_config: &Path,
        env: &[(&str, &str)],
    ) -> Agent {
        let config = plexus_config.as_os_str();
        let args: [&std::ffi::OsStr; 2] = ["--plexus-config".as_ref(), config];
        let bin = crate::plexus_bin_dir().join("plexusd");
        let env: Vec<(&str, &std::ffi::OsStr)> =
            env.iter().map(|(k, v)| (*k, v.as_ref())).collect();
        Agent::start_with(&bin, node, socket, hint_dir, log, &args, &env)
    }

    /// Starts binary `bin` with `args` added to the usual ones and `env` to its environment.
    /// Housekeeping is off unless `args` sets `--housekeeping-interval-secs`; the metrics are
    /// on a free localhost port ([`Agent::metrics`]).
    pub fn start_with(
        bin: &Path,
        node: &str,
        socket: &Path,
        hint_dir: &Path,
        log: &Path,
        args: &[&std::ffi::OsStr],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Agent {
        let metrics_port = free_port();
        let mut command = Agent::command(bin, node, socket, log);
        if !args.contains(&std::ffi::OsStr::new("--housekeeping-interval-secs")) {
            command.args(["--housekeeping-interval-secs", "0"]);
        }
        command
            .args(args)
            .arg("--metrics-address")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .env("PLEXUS_IPAM_AFFINITY_DIR", hint_dir)
            .env_remove("KUBECONFIG")
            .envs(env.iter().copied());
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let mut agent = Agent::adopt(child, socket, log);
        agent.metrics_port = Some(metrics_port);
        agent
    }

    /// The command that starts `plexusd` (the binary `bin`) for `node` on `socket`, appending
    /// its log to `log` (a restarted agent keeps the earlier log).
    pub fn command(bin: &Path, node: &str, socket: &Path, log: &Path) -> Command {
        assert!(
            bin.exists(),
            "{} is missing: run `cargo build --workspace --bins` first",
            bin.display()
        );
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("the agent's log file");
        let mut command = Command::new(bin);
        command
            .arg("--socket")
            .arg(socket)
            .arg("--node")
            .arg(node)
            .env("NODE_NAME", node)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        command
    }

    /// The agent `child` started (by [`Agent::command`], perhaps in another namespace),
    /// reachable from here at `socket`, logging to `log`; waits until it answers.
    pub fn adopt(child: Child, socket: &Path, log: &Path) -> Agent {
        let agent = Agent {
            child,
            socket: socket.to_path_buf(),
            log: log.to_path_buf(),
            metrics_port: None,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while agent.try_ping().is_none() {
            assert!(
                Instant::now() < deadline,
                "plexusd did not answer on {}: {}",
                socket.display(),
                agent.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        agent
    }

    /// The agent's process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The agent's answer to `Ping` (its counters), if it answers.
    pub fn try_ping(&self) -> Option<PingReply> {
        ping(&self.socket)
    }

    /// The agent's answer to `Ping`; panics when it does not answer.
    pub fn ping(&self) -> PingReply {
        self.try_ping()
            .unwrap_or_else(|| panic!("plexusd does not answer: {}", self.log_text()))
    }

    /// Waits up to `timeout` for the agent to exit by itself; its exit code, if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Kills the agent at once (SIGKILL), leaving its socket file behind.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The agent's metrics text (`GET /metrics`); panics when it does not answer.
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let port = self
            .metrics_port
            .expect("an agent started by Agent::start_with serves its metrics");
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("the agent's metrics port: {e}: {}", self.log_text()));
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .expect("ask for the metrics");
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .expect("read the metrics");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        answer
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default()
    }

    /// The value of the metric line `name{labels}` (its first sample with exactly that
    /// name and labels), 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics(), series)
    }

    /// What the agent logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The answer to `Ping` (the counters) of the agent listening on `socket`, if one answers.
pub fn ping(socket: &Path) -> Option<PingReply> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    runtime.block_on(async {
        let mut client = AgentClient::connect(socket, Duration::from_millis(500))
            .await
            .ok()?;
        client.ping().await.ok()
    })
}

/// The value of `series` (a name and its labels, as written) in metrics `text`; 0 when absent.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// A localhost TCP port free now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}
