//! `plexusctl crds`: prints the CustomResourceDefinition of every resource Plexus reads or
//! writes (from `plexus_crds`), as one multi-document YAML stream.
//!
//! ```text
//! plexusctl crds | kubectl apply -f -
//! ```

use super::{print_stdout, Error};

/// Arguments of `plexusctl crds` (none yet).
#[derive(clap::Args, Debug, Default)]
pub struct CrdsArgs {}

/// Prints every CRD as YAML, the documents separated by `---` lines.
pub fn run(_args: &CrdsArgs) -> Result<(), Error> {
    print_stdout(&plexus_crds::crd_yaml())
}
