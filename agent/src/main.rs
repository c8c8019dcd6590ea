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
    /// Plexus's CNI configuration file (e.g. `/etc/cni/net.d/00-plexus.conflist`): with it,
    /// running pods' networks are hot-plugged when their networks annotation changes.
    #[arg(long)]
    plexus_config: Option<PathBuf>,
    /// Hot-plug on this node (with `--plexus-config`); `false` turns it off.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    hotplug: bool,
    /// Where to serve the Prometheus metrics (`/metrics`); `off` serves none.
    #[arg(long, default_value = plexusd::metrics::DEFAULT_ADDRESS)]
    metrics_address: String,
    /// Seconds between housekeeping runs (IPAM GC of the node, cache pruning); 0: never.
    #[arg(long, default_value_t = plexusd::housekeeping::DEFAULT_INTERVAL_SECS)]
    housekeeping_interval_secs: u64,
    /// plexus's attachment cache directory (its `cniDir`), pruned by housekeeping.
    #[arg(long, default_value = plexus::config::DEFAULT_CNI_DIR)]
    cache_dir: PathBuf,
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
    let metrics_address = match args.metrics_address.as_str() {
        "off" => None,
        address => match address.parse() {
            Ok(address) => Some(address),
            Err(e) => {
                eprintln!("plexusd: --metrics-address {address:?}: {e}");
                std::process::exit(1);
            }
        },
    };
    let options = plexusd::Options {
        metrics_address,
        housekeeping_interval: (args.housekeeping_interval_secs > 0)
            .then(|| std::time::Duration::from_secs(args.housekeeping_interval_secs)),
        cache_dir: args.cache_dir,
        plexus_config: args.plexus_config,
        hotplug: args.hotplug,
    };
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
    if let Err(e) = runtime.block_on(plexusd::run(&args.socket, &node, &options)) {
        eprintln!("plexusd: {e}");
        std::process::exit(1);
    }
}
