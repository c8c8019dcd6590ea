//! One file per CNI command, each reading as the stages it goes through (parse, plan, execute,
//! record). [`Plexus`] ties them to the plugin skeleton; this module only dispatches.

mod add;
mod check;
mod del;
mod gc;
mod status;

use plexus_cni::skel::{Plugin, Request};
use plexus_cni::{CniError, ErrorCode};
use serde_json::Value;

use crate::parse::Invocation;

/// The `plexus` meta-plugin.
pub struct Plexus;

/// Runs an async command body on a single-threaded runtime, then logs (at debug level) the
/// process's peak memory, which `cargo xtask bench` reads.
fn block_on<T>(f: impl std::future::Future<Output = Result<T, CniError>>) -> Result<T, CniError> {
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::new(ErrorCode::IoFailure, format!("starting runtime: {e}")))?
        .block_on(f);
    if let Ok(usage) = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF) {
        tracing::debug!(peak_rss_kib = usage.max_rss(), "done");
    }
    outcome
}

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
