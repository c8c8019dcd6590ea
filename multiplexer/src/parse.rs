//! Stage 1 of a command, parse: Plexus's configuration (`config.rs`) and the runtime's CNI
//! input (`CNI_*` variables), checked and turned into an [`Invocation`] that the other stages
//! read. Logging starts here, from `logFile` and `logLevel` (Multus's keys), through
//! [`plexus_cni::logging`]: plugin stdout is reserved for the protocol, so logs go to stderr or a
//! file.

use std::path::PathBuf;
use std::time::Duration;

use plexus_cni::env::CniEnv;
use plexus_cni::skel::Request;
use plexus_cni::{CniError, SpecVersion};

use crate::cache::Cache;
use crate::config::PlexusConfig;
use crate::execute::{DelegateArgs, DelegateEnv};
use crate::plan::Naming;

/// One call of the plugin: the checked configuration and environment.
pub struct Invocation {
    /// Plexus's configuration.
    pub config: PlexusConfig,
    /// The runtime's `CNI_*` variables.
    pub env: CniEnv,
    /// Plexus's own CNI version (its configuration's `cniVersion`).
    pub version: SpecVersion,
    /// Where delegate plugins are looked for, in order.
    pub plugin_dirs: Vec<PathBuf>,
    /// The attachment cache.
    pub cache: Cache,
    /// The limit for each delegate plugin call.
    pub delegate_timeout: Duration,
}

impl Invocation {
    /// Reads a request; starts logging as its configuration says.
    pub fn from_request(req: &Request) -> Result<Self, CniError> {
        let config = PlexusConfig::from_map(&req.config)?;
        plexus_cni::logging::init(config.log_level.as_deref(), config.log_file.as_deref());
        Ok(Invocation {
            version: config.version()?,
            plugin_dirs: config.plugin_dirs(&req.env.path),
            cache: Cache::new(&config.cni_dir),
            delegate_timeout: config.delegate_timeout()?,
            env: req.env.clone(),
            config,
        })
    }

    /// The network namespace the runtime gave; empty when it gave none.
    pub fn netns(&self) -> PathBuf {
        self.env.netns.clone().unwrap_or_default()
    }

    /// How the plan names this container's attachments.
    pub fn naming(&self) -> Naming<'_> {
        Naming {
            primary_ifname: &self.env.ifname,
            container_id: &self.env.container_id,
            device_info_dir: &self.config.device_info_dir,
        }
    }

    /// What the delegates of this container are run with, in network namespace `netns`.
    pub fn delegate_env(&self, netns: PathBuf) -> DelegateEnv {
        DelegateEnv {
            container_id: self.env.container_id.clone(),
            netns,
            args: DelegateArgs::Parsed(self.env.args.clone()),
            plugin_dirs: self.plugin_dirs.clone(),
            timeout: self.delegate_timeout,
        }
    }
}
