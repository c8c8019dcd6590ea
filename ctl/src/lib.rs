//! `plexusctl`, Plexus's administration command: one module per subcommand.
//!
//! * `plexusctl crds` ([`crds`]): the CustomResourceDefinitions Plexus uses, as YAML.
//! * `plexusctl install` ([`install`]): puts Plexus's binaries, kubeconfig and conflist on a node.
//! * `plexusctl ipam` ([`ipam`]): `pools` (occupancy of `plexus-ipam`'s pools) and `gc` (release
//!   the addresses of pods that are gone).
//!
//! A subcommand is a `clap::Args` struct and a `run` function in its module, plus one variant of
//! [`Command`] and one arm in [`run`].

#![warn(missing_docs)]

pub mod crds;
pub mod install;
pub mod ipam;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The error a subcommand returns; `plexusctl` prints it and exits with status 1.
pub type Error = Box<dyn std::error::Error>;

/// Plexus's administration command.
#[derive(Parser, Debug)]
#[command(name = "plexusctl", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the CustomResourceDefinitions Plexus uses, as YAML for `kubectl apply -f -`.
    Crds(crds::CrdsArgs),
    /// Install Plexus on this node: binaries, kubeconfig and 00-plexus.conflist (DaemonSet).
    Install(Box<install::InstallArgs>),
    /// Inspect and clean up plexus-ipam's allocations: `pools`, `gc`.
    Ipam(ipam::IpamArgs),
}

/// Runs the subcommand; errors are printed on stderr.
pub fn run(cli: Cli) -> ExitCode {
    let result = match &cli.command {
        Command::Crds(args) => crds::run(args),
        Command::Install(args) => install::run(args),
        Command::Ipam(args) => ipam::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("plexusctl: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `text` to stdout. A closed pipe (`plexusctl crds | head`) is not an error.
pub(crate) fn print_stdout(text: &str) -> Result<(), Error> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn crds_parses() {
        let cli = Cli::try_parse_from(["plexusctl", "crds"]).unwrap();
        assert!(matches!(cli.command, Command::Crds(_)));
    }
}
