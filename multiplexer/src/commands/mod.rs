//! One file per CNI command. [`Plexus`] ties them to the plugin skeleton.

mod add;
mod check;
mod del;
mod gc;
mod status;

use std::path::PathBuf;
use std::time::Duration;

use plexus_cni::env::{CniArgs, CniEnv};
use plexus_cni::list::RuntimeContext;
use plexus_cni::skel::{Plugin, Request};
use plexus_cni::{CniError, ErrorCode, SpecVersion};
use serde_json::Value;

use crate::cache::{Cache, CachedAttachment};
use crate::config::PlexusConfig;
use crate::logging;

/// The `plexus` meta-plugin.
pub struct Plexus;

/// What every command works from: the checked configuration and environment.
pub(crate) struct Context {
    pub config: PlexusConfig,
    pub env: CniEnv,
    pub version: SpecVersion,
    pub plugin_dirs: Vec<PathBuf>,
    pub cache: Cache,
    pub delegate_timeout: Duration,
}

impl Context {
    fn new(req: &Request) -> Result<Self, CniError> {
        let config = PlexusConfig::from_map(&req.config)?;
        logging::init(&config);
        Ok(Context {
            version: config.version()?,
            plugin_dirs: config.plugin_dirs(&req.env.path),
            cache: Cache::new(&config.cni_dir),
            delegate_timeout: config.delegate_timeout()?,
            env: req.env.clone(),
            config,
        })
    }

    /// The netns path to hand delegates: the runtime's, or empty.
    pub fn netns(&self) -> String {
        self.env
            .netns
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The runtime context for one cached attachment.
    pub fn runtime_context(&self, attachment: &CachedAttachment, netns: &str) -> RuntimeContext {
        RuntimeContext {
            container_id: self.env.container_id.clone(),
            netns: netns.to_string(),
            ifname: attachment.ifname.clone(),
            args: delegate_args(&self.env.args, attachment.primary),
            plugin_dirs: self.plugin_dirs.clone(),
            capability_args: attachment.capability_args.clone(),
            timeout: self.delegate_timeout,
        }
    }
}

/// The `CNI_ARGS` of one delegate: all of the runtime's for the primary network, and for the
/// additional ones all but the requests meant for the primary interface alone (podman's
/// `IP=`/`MAC=`), which would make their IPAM fail or clash.
pub fn delegate_args(args: &CniArgs, primary: bool) -> String {
    if primary {
        args.to_env_string()
    } else {
        args.without_interface_requests().to_env_string()
    }
}

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
        let ctx = Context::new(req)?;
        block_on(add::run(&ctx))
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        let ctx = Context::new(req)?;
        block_on(del::run(&ctx))
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let ctx = Context::new(req)?;
        block_on(check::run(&ctx))
    }

    fn status(&self, req: &Request) -> Result<(), CniError> {
        let ctx = Context::new(req)?;
        block_on(status::run(&ctx))
    }

    fn gc(&self, req: &Request) -> Result<(), CniError> {
        let ctx = Context::new(req)?;
        block_on(gc::run(&ctx, &req.config))
    }
}
