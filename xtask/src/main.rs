//! Plexus's developer commands, run as `cargo xtask <command>`.
//!
//! - `test`: what CI runs — packages, fmt, clippy, build, tests ([`test`]).
//! - `demo`: a walk through Plexus on real clients ([`demo`]).
//! - `bench`: timing Plexus against its delegates ([`bench`]).
//! - `fuzz`: the fuzz targets of `fuzz/` ([`fuzz`]).
//! - `apiserver`: build and cache the Kubernetes binaries (API server, kubelet, controller-manager,
//!   scheduler) for the Kubernetes tests ([`apiserver`]).
//! - `image`: Plexus's container image, an OCI archive built offline ([`image`]).
//! - `fresh`: the demo in a bare Debian root, the plugins in an old one ([`fresh`]).

mod apiserver;
mod bench;
mod binaries;
mod cmd;
mod demo;
mod fresh;
mod fuzz;
mod image;
mod packages;
mod test;

use clap::{Parser, Subcommand};

/// Plexus's developer commands.
#[derive(Parser, Debug)]
#[command(name = "cargo xtask", about)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand, Debug)]
enum Commands {
    /// Install test prerequisites, then check fmt and clippy, build, and run every test.
    Test(test::TestArgs),
    /// Show Plexus at work with real CNI clients.
    Demo(DemoArgs),
    /// Measure Plexus's overhead over its delegates.
    Bench(BenchArgs),
    /// Build (once) and cache kube-apiserver, kubelet, kube-controller-manager and
    /// kube-scheduler, fetch kubectl, and print the API server's path.
    #[command(visible_alias = "kube-binaries")]
    Apiserver(apiserver::ApiserverArgs),
    /// Run the cargo-fuzz targets of fuzz/ (longer than `test` does).
    Fuzz(fuzz::FuzzArgs),
    /// Build Plexus's container image offline (FROM scratch, the static release binaries) as
    /// an OCI archive under target/, and print its size.
    Image,
    /// Run the demo in a bare Debian bookworm root, then the plugins in an old Debian root.
    Fresh(fresh::FreshArgs),
}

/// Arguments of `cargo xtask demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Also run a local Kubernetes API server and read network attachments from it.
    #[arg(long)]
    pub kube: bool,
}

/// Arguments of `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Timed runs of each measurement (after 3 untimed warm-up runs).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Run only these benchmarks (repeatable): latency, memory, ipam_memory, kubernetes, pods,
    /// pods_agent, ipam_concurrency, ipam_fill, agent_ipam, agent_kube, agent_memory, sizes.
    #[arg(long, value_name = "BENCHMARK")]
    pub only: Vec<String>,
    /// Use the release binaries already built instead of building them first.
    #[arg(long)]
    pub no_build: bool,
    /// Pods of the end-to-end benchmark with and without the node agent (`pods_agent`).
    #[arg(long, default_value_t = 1000)]
    pub e2e_pods: usize,
}

fn main() {
    let cli = Cli::parse();
    let result = match &cli.command {
        Commands::Test(args) => test::run(args),
        Commands::Demo(args) => demo::run(args),
        Commands::Bench(args) => bench::run(args),
        Commands::Apiserver(args) => apiserver::run(args),
        Commands::Fuzz(args) => fuzz::run(args),
        Commands::Fresh(args) => fresh::run(args),
        Commands::Image => image::run(),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
