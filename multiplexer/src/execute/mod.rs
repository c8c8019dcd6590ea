//! Stage 3 of ADD, execute: run the planned attachments' delegates in order through
//! [`plexus_cni::list`], make the pod's default routes what the plan says (`routes.rs`), and on
//! any failure roll back what was attempted (`teardown.rs`, which DEL and GC use as well).
//!
//! Delegates run with a [`DelegateEnv`], a plain value: the container, its network namespace,
//! `CNI_ARGS`, where plugins are and how long each may take.

pub mod routes;
pub mod teardown;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use plexus_cni::env::CniArgs;
use plexus_cni::list::{self, PluginFailure, RuntimeContext};
use plexus_cni::{CniError, CniResult, ErrorCode};
use serde_json::{Map, Value};

use crate::cache::{CacheEntry, CachedAttachment};
use crate::devices::device_info;
use crate::links;
use crate::plan::{Plan, PlannedAttachment};
use teardown::{TeardownError, TeardownFailures};

/// The `CNI_ARGS` delegates get.
#[derive(Debug, Clone)]
pub enum DelegateArgs {
    /// Parsed: the primary gets them all, the other networks all but the interface requests
    /// ([`delegate_args`]).
    Parsed(CniArgs),
    /// A cached text that does not parse: every network gets it as it is.
    Unparsed(String),
}

/// What the delegates of one container are run with.
#[derive(Debug, Clone)]
pub struct DelegateEnv {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`; empty for none.
    pub netns: PathBuf,
    /// The runtime's `CNI_ARGS`.
    pub args: DelegateArgs,
    /// Where plugin binaries are looked for, in order.
    pub plugin_dirs: Vec<PathBuf>,
    /// The limit for each plugin call.
    pub timeout: Duration,
}

impl DelegateEnv {
    /// What the delegates of the container of cache entry `entry` are run with: its namespace
    /// (none when it is gone) and `CNI_ARGS` as cached.
    pub fn for_entry(entry: &CacheEntry, plugin_dirs: Vec<PathBuf>, timeout: Duration) -> Self {
        let netns = PathBuf::from(&entry.netns);
        DelegateEnv {
            container_id: entry.container_id.clone(),
            netns: if netns.exists() {
                netns
            } else {
                PathBuf::new()
            },
            args: match CniArgs::parse(&entry.cni_args) {
                Ok(args) => DelegateArgs::Parsed(args),
                Err(_) => DelegateArgs::Unparsed(entry.cni_args.clone()),
            },
            plugin_dirs,
            timeout,
        }
    }

    /// The runtime context of one attachment.
    pub fn runtime_context(
        &self,
        ifname: &str,
        primary: bool,
        capability_args: &Map<String, Value>,
    ) -> RuntimeContext {
        RuntimeContext {
            container_id: self.container_id.clone(),
            netns: self.netns.clone(),
            ifname: ifname.to_string(),
            args: match &self.args {
                DelegateArgs::Parsed(args) => delegate_args(args, primary),
                DelegateArgs::Unparsed(text) => text.clone(),
            },
            plugin_dirs: self.plugin_dirs.clone(),
            capability_args: capability_args.clone(),
            timeout: self.timeout,
        }
    }

    /// The runtime context of a cached attachment.
    pub fn for_cached(&self, attachment: &CachedAttachment) -> RuntimeContext {
        self.runtime_context(
            &attachment.ifname,
            attachment.primary,
            &attachment.capability_args,
        )
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

/// What a failed ADD undid: the error to report, what could not be undone, and how many
/// attachments were attempted.
#[derive(Debug)]
pub struct Rollback {
    /// The failure that started the rollback.
    pub error: CniError,
    /// What could not be torn down.
    pub failures: TeardownFailures,
    /// How many attachments had been attempted.
    pub attempted: usize,
}

/// Refuses to start when an interface the plan would create already exists in the pod.
pub fn refuse_names_in_use(netns: &Path, plan: &Plan) -> Result<(), CniError> {
    let existing: HashSet<String> = links::links(Some(netns))
        .map_err(|e| {
            CniError::new(
                ErrorCode::InvalidEnvironment,
                format!("cannot list the interfaces of network namespace {netns:?}: {e}"),
            )
        })?
        .into_iter()
        .map(|l| l.name)
        .collect();
    match plan
        .attachments
        .iter()
        .find(|a| existing.contains(&a.ifname))
    {
        Some(a) => Err(CniError::new(
            ErrorCode::InterfaceNameConflict,
            format!(
                "interface {:?} (network {:?}) already exists in network namespace {netns:?}",
                a.ifname, a.network.name
            ),
        )),
        None => Ok(()),
    }
}

/// Runs ADD of every planned attachment in order. `recorded` are their cache records, in the
/// same order: each gets its result as soon as it has one, so that a rollback hands every
/// earlier attachment's DEL its result. On a failure, what was attempted is torn down.
pub async fn attach_all(
    plan: &Plan,
    env: &DelegateEnv,
    device_info_dir: &Path,
    recorded: &mut [CachedAttachment],
) -> Result<Vec<CniResult>, Rollback> {
    let mut results: Vec<CniResult> = Vec::with_capacity(plan.attachments.len());
    for (index, attachment) in plan.attachments.iter().enumerate() {
        let rctx = env.for_cached(&recorded[index]);
        device_info::prepare(attachment, device_info_dir);
        match list::add(&attachment.network, &rctx).await {
            Ok(result) => {
                recorded[index].result = Some(result.to_value(attachment.network.version));
                results.push(result);
            }
            Err(failure) => {
                return Err(roll_back(env, recorded, index, attachment, &failure).await);
            }
        }
    }
    Ok(results)
}

/// Deletes every attachment after a failure that followed them all (the default route, the
/// network-status write).
pub async fn roll_back_all(
    env: &DelegateEnv,
    recorded: &[CachedAttachment],
    error: CniError,
) -> Rollback {
    Rollback {
        error,
        failures: teardown::detach_all(recorded, env).await,
        attempted: recorded.len(),
    }
}

/// Deletes what was attempted after attachment `failed` failed: the plugins of that attachment
/// that started, then every earlier attachment, in reverse.
async fn roll_back(
    env: &DelegateEnv,
    recorded: &[CachedAttachment],
    failed: usize,
    attachment: &PlannedAttachment,
    failure: &PluginFailure,
) -> Rollback {
    let error = failure.to_cni_error();
    let mut failures = TeardownFailures::default();
    let failed_one = &recorded[failed];
    let rctx = env.for_cached(failed_one);
    if let Err(fs) = list::del_first(
        &attachment.network,
        &rctx,
        None,
        failure.plugins_attempted(),
    )
    .await
    {
        let real: Vec<PluginFailure> = fs
            .into_iter()
            .filter(|f| !f.same_refusal(failure))
            .collect();
        if !real.is_empty() {
            failures.0.push(TeardownError::delegate(failed_one, real));
        }
    }
    failures
        .0
        .extend(teardown::detach_all(&recorded[..failed], env).await.0);
    Rollback {
        error: CniError {
            msg: format!(
                "attaching network {:?} as {}: {}",
                attachment.network.name, attachment.ifname, error.msg
            ),
            ..error
        },
        failures,
        attempted: failed + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(args: DelegateArgs) -> DelegateEnv {
        DelegateEnv {
            container_id: "c1".into(),
            netns: PathBuf::from("/run/netns/pod"),
            args,
            plugin_dirs: vec![PathBuf::from("/opt/cni/bin")],
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn only_the_primary_gets_the_interface_requests() {
        let args = CniArgs::parse("IgnoreUnknown=1;IP=10.1.1.5;K8S_POD_NAME=web").unwrap();
        let env = env(DelegateArgs::Parsed(args));
        let caps = json!({"portMappings": []}).as_object().unwrap().clone();
        let primary = env.runtime_context("eth0", true, &caps);
        assert_eq!(primary.args, "IgnoreUnknown=1;IP=10.1.1.5;K8S_POD_NAME=web");
        assert_eq!(primary.netns, Path::new("/run/netns/pod"));
        assert_eq!(
            (primary.ifname.as_str(), primary.container_id.as_str()),
            ("eth0", "c1")
        );
        assert_eq!(primary.capability_args, caps);
        let other = env.runtime_context("net1", false, &Map::new());
        assert_eq!(other.args, "IgnoreUnknown=1;K8S_POD_NAME=web");
    }

    #[test]
    fn unparsed_cached_args_go_to_every_network_as_they_are() {
        let env = env(DelegateArgs::Unparsed("not args".into()));
        assert_eq!(
            env.runtime_context("net1", false, &Map::new()).args,
            "not args"
        );
        assert_eq!(
            env.runtime_context("eth0", true, &Map::new()).args,
            "not args"
        );
    }
}
