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

    /// As [`Agent::start`], with the binary `bin` (a release build, for benchmarks).
    pub fn start_bin(bin: &Path, node: &str, socket: &Path, hint_dir: &Path, log: &Path) -> Agent {
        let mut command = Agent::command(bin, node, socket, log);
        command.env("PLEXUS_IPAM_AFFINITY_DIR", hint_dir);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        Agent::adopt(child, socket, log)
    }

    /// The command that starts `plexusd` (the binary `bin`) for `node` on `socket`, logging to
    /// `log`.
    pub fn command(bin: &Path, node: &str, socket: &Path, log: &Path) -> Command {
        assert!(
            bin.exists(),
            "{} is missing: run `cargo build --workspace --bins` first",
            bin.display()
        );
        let stderr = std::fs::File::create(log).expect("the agent's log file");
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

    /// Kills the agent at once (SIGKILL), leaving its socket file behind.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What the agent logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
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
