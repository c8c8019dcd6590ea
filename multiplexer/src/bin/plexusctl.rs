//! `plexusctl`: Plexus's administration command. The subcommands live in `plexus::ctl`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    plexus::ctl::run(plexus::ctl::Cli::parse())
}
