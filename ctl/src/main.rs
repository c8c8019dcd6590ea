//! `plexusctl`: Plexus's administration command. The subcommands live in the `plexusctl` library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    plexusctl::run(plexusctl::Cli::parse())
}
