//! The `plexusd` node agent binary.

use std::path::PathBuf;

use clap::Parser;

/// Plexus's node agent: serves plexus-ipam's allocations on a unix socket.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The socket to listen on (its directory is created with mode 0700).
    #[arg(long, default_value = plexus_agent_api::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// This node's name (default: `NODE_NAME`, else the host name).
    #[arg(long)]
    node: Option<String>,
    /// Only ask the agent on --socket for `Ping` and exit 0 if it answers (a liveness check).
    #[arg(long)]
    probe: bool,
    /// The log level (error, warn, info, debug, trace).
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn main() {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log_level))
        .with_writer(std::io::stderr)
        // No colour codes in a container's log (kubectl logs), only on a terminal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let node = args.node.unwrap_or_else(plexus_ipam::config::node_name);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("plexusd: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if args.probe {
        match runtime.block_on(plexusd::probe::probe(&args.socket)) {
            Ok(answer) => println!("plexusd answers: {answer:?}"),
            Err(e) => {
                eprintln!("plexusd --probe: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    if let Err(e) = runtime.block_on(plexusd::run(&args.socket, &node)) {
        eprintln!("plexusd: {e}");
        std::process::exit(1);
    }
}
