//! One file per CNI command, each reading as the stages it goes through (parse, plan, execute,
//! record). [`Plexus`] ties them to the plugin skeleton; this module only dispatches.

mod add;
mod check;
mod del;
mod gc;
mod status;

use plexus_cni::runtime::block_on;
use plexus_cni::skel::{Plugin, Request};
use plexus_cni::CniError;
use serde_json::Value;

use crate::parse::Invocation;

/// The `plexus` meta-plugin.
pub struct Plexus;

impl Plugin for Plexus {
    fn add(&self, req: &Request) -> Result<Value, CniError> {
        let inv = Invocation::from_request(req)?;
        block_on(add::run(&inv))
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        let inv = Invocation::from_request(req)?;
        block_on(del::run(&inv))
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let inv = Invocation::from_request(req)?;
        block_on(check::run(&inv))
    }

    fn status(&self, req: &Request) -> Result<(), CniError> {
        let inv = Invocation::from_request(req)?;
        block_on(status::run(&inv))
    }

    fn gc(&self, req: &Request) -> Result<(), CniError> {
        let inv = Invocation::from_request(req)?;
        block_on(gc::run(&inv, &req.config))
    }
}
