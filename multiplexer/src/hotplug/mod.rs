//! Hot-plug: attaching one more network to a running pod, and detaching one attachment, after
//! its ADD, through the same stages as ADD and DEL.
//!
//! The pod's cache entry (`cache.rs`) holds its network namespace and every attachment's exact
//! configuration, so nothing is asked of the container runtime. [`HotPlug::plan`] parses the
//! pod's networks annotation and compares it with the entry's attachments (`identity.rs`), then
//! plans each new element exactly as ADD would (`k8s/pod_networks.rs`: namespace isolation, the
//! NAD, `cni-args`, capability checks; `plan/`: interface name, device-info file).
//! [`HotPlug::attach`] records the new attachment in the entry before its delegates run and
//! again with its result (as [`crate::record`] does for ADD), rolling it back on a failure;
//! [`HotPlug::detach`] tears one attachment down (`execute/teardown.rs`) and then drops it from
//! the entry. The runtime's DEL of the pod tears down whatever the entry holds, hot-plugged or
//! not. [`HotPlug::write_status`] writes the network-status of every attachment with one PATCH,
//! conditional on the pod's UID.
//!
//! Not hot-plugged (refused with a clear error): an element with `default-route` (the pod's
//! default route is decided once, at ADD) and a network whose NAD names a device-plugin
//! resource (its device was handed out at ADD).

pub mod identity;

use std::path::PathBuf;
use std::time::Duration;

use plexus_cni::env::CniArgs;
use plexus_cni::{CniError, CniResult, ErrorCode};

use crate::cache::{Cache, CacheEntry, CacheError};
use crate::config::PlexusConfig;
use crate::devices::device_info;
use crate::execute::{self, DelegateEnv};
use crate::k8s::client::KubeApi;
use crate::k8s::pod_networks::{self, PodInfo, PodRef};
use crate::k8s::selection::{self, NETWORKS_ANNOTATION};
use crate::k8s::status::{self, NetworkStatus};
use crate::k8s::LazyApi;
use crate::plan::{self, Naming, Plan, PlannedAttachment};
use crate::record;

pub use identity::Changes;

/// What a reconcile of one pod does: the interfaces to detach, then the attachments to make.
#[derive(Debug, Clone, Default)]
pub struct HotPlan {
    /// Interface names of the attachments to detach.
    pub detach: Vec<String>,
    /// The attachments to make, planned as ADD plans them.
    pub attach: Vec<PlannedAttachment>,
}

impl HotPlan {
    /// True when nothing changes.
    pub fn is_empty(&self) -> bool {
        self.detach.is_empty() && self.attach.is_empty()
    }
}

/// Hot-plug on one node: Plexus's configuration, its API client and its cache.
#[derive(Debug, Clone)]
pub struct HotPlug {
    config: PlexusConfig,
    api: KubeApi,
    cache: Cache,
    plugin_dirs: Vec<PathBuf>,
    timeout: Duration,
}

impl HotPlug {
    /// Hot-plug with Plexus's configuration `config` (as the CNI configuration file gives it)
    /// and API client `api`.
    pub fn new(config: PlexusConfig, api: KubeApi) -> Result<HotPlug, CniError> {
        Ok(HotPlug {
            cache: Cache::new(&config.cni_dir),
            plugin_dirs: config.plugin_dirs(&[]),
            timeout: config.delegate_timeout()?,
            config,
            api,
        })
    }

    /// Plexus's configuration.
    pub fn config(&self) -> &PlexusConfig {
        &self.config
    }

    /// The API client.
    pub fn api(&self) -> &KubeApi {
        &self.api
    }

    /// The cache entry of pod `pod`'s running sandbox: one whose `CNI_ARGS` name the pod (and
    /// its UID, when both have one), whose ADD completed (its primary has a result) and whose
    /// network namespace still exists. `None` when there is none.
    pub fn entry_of(&self, pod: &PodRef) -> Result<Option<CacheEntry>, CacheError> {
        for id in self.cache.container_ids()? {
            let Ok(Some(entry)) = self.cache.load(&id) else {
                continue;
            };
            let Some(owner) = CniArgs::parse(&entry.cni_args)
                .ok()
                .and_then(|args| PodRef::from_cni_args(&args))
            else {
                continue;
            };
            let same_uid = match (&owner.uid, &pod.uid) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            };
            let complete = entry
                .attachments
                .first()
                .is_some_and(|a| a.primary && a.result.is_some());
            if owner.namespace == pod.namespace
                && owner.name == pod.name
                && same_uid
                && complete
                && !entry.netns.is_empty()
                && std::path::Path::new(&entry.netns).exists()
            {
                return Ok(Some(entry));
            }
        }
        Ok(None)
    }

    /// True for an entry written by a Plexus that kept no attachment identities (an
    /// attachment other than the primary without a status name): its attachments cannot be
    /// matched with the annotation's elements, so the pod is not hot-plugged.
    pub fn predates_identities(entry: &CacheEntry) -> bool {
        entry
            .attachments
            .iter()
            .any(|a| !a.primary && a.status_name.is_none())
    }

    /// What to change so that `entry`'s attachments are what pod `info`'s networks annotation
    /// asks for. Nothing runs; a refusal (invalid annotation, missing NAD, namespace isolation,
    /// missing capability, interface name in use) is an error and changes nothing.
    pub async fn plan(&self, entry: &CacheEntry, info: &PodInfo) -> Result<HotPlan, CniError> {
        let text = info
            .annotations
            .get(NETWORKS_ANNOTATION)
            .map(String::as_str)
            .unwrap_or("");
        let wanted =
            selection::parse_networks(text, &info.pod.namespace).map_err(CniError::from)?;
        let defaults = entry
            .attachments
            .iter()
            .filter(|a| !a.primary && !a.selected)
            .count();
        let changes = identity::changes(&entry.attachments, &wanted, 1 + defaults)?;
        if let Some((sel, _)) = changes
            .attach
            .iter()
            .find(|(s, _)| s.default_route.is_some())
        {
            return Err(CniError::new(
                ErrorCode::InvalidNetworkConfig,
                format!(
                    "network {}/{} asks for the default route, which is decided at the pod's creation and not hot-plugged",
                    sel.namespace, sel.name
                ),
            ));
        }
        let (selections, names): (Vec<_>, Vec<_>) = changes.attach.into_iter().unzip();
        let api = LazyApi::with_client(&self.config, self.api.clone());
        let delegates =
            pod_networks::selected_delegates(&self.config, &api, info, selections).await?;
        let primary_ifname = entry
            .attachments
            .first()
            .map(|a| a.ifname.clone())
            .unwrap_or_default();
        let naming = Naming {
            primary_ifname: &primary_ifname,
            container_id: &entry.container_id,
            device_info_dir: &self.config.device_info_dir,
        };
        let mut attach = Vec::with_capacity(delegates.len());
        for (delegate, ifname) in delegates.into_iter().zip(names) {
            if let Some(device) = &delegate.device {
                return Err(CniError::new(
                    ErrorCode::InvalidNetworkConfig,
                    format!(
                        "network {} uses device-plugin resource {}, whose devices are handed out at the pod's creation and not hot-plugged",
                        delegate.status_name, device.resource_name
                    ),
                ));
            }
            attach.push(plan::named(delegate, ifname, naming));
        }
        Ok(HotPlan {
            detach: changes.detach,
            attach,
        })
    }

    /// What the delegates of `entry`'s container run with.
    fn delegate_env(&self, entry: &CacheEntry) -> DelegateEnv {
        DelegateEnv::for_entry(entry, self.plugin_dirs.clone(), self.timeout)
    }

    /// Stores `entry`, unless the runtime removed its file meanwhile (its DEL ran): then the
    /// pod is gone and nothing more is done for it.
    fn store(&self, entry: &CacheEntry) -> Result<(), CniError> {
        if self.cache.load(&entry.container_id)?.is_none() {
            return Err(CniError::new(
                ErrorCode::UnknownContainer,
                format!("container {} was deleted meanwhile", entry.container_id),
            ));
        }
        Ok(self.cache.store(entry)?)
    }

    /// Attaches `attachment` to `entry`'s pod as ADD attaches it: refused when its interface
    /// exists; recorded in the entry before its delegates run and again with its result. On a
    /// failure what was attempted is torn down and the entry loses it (or, when the teardown
    /// failed too, keeps it without a result, for the next reconcile or the runtime's DEL).
    pub async fn attach(
        &self,
        entry: &mut CacheEntry,
        attachment: &PlannedAttachment,
    ) -> Result<(), CniError> {
        let env = self.delegate_env(entry);
        let one = Plan {
            attachments: vec![attachment.clone()],
            default_route: None,
        };
        execute::refuse_names_in_use(&env.netns, &one)?;
        entry.attachments.push(record::cached(attachment));
        if let Err(e) = self.store(entry) {
            entry.attachments.pop();
            return Err(e);
        }
        let at = entry.attachments.len() - 1;
        let attached = execute::attach_all(
            &one,
            &env,
            &self.config.device_info_dir,
            &mut entry.attachments[at..],
        )
        .await;
        match attached {
            Ok(_) => match self.store(entry) {
                Ok(()) => Ok(()),
                Err(e) => {
                    // The runtime deleted the pod meanwhile: what was just attached is torn
                    // down, so that its addresses do not leak.
                    let made = &entry.attachments[at..];
                    if let Err(teardown) = execute::teardown::detach_and_clean(made, &env).await {
                        tracing::warn!("tearing down {}: {}", attachment.ifname, teardown.msg);
                    }
                    Err(e)
                }
            },
            Err(rollback) => {
                let mut error = rollback.error;
                if rollback.failures.is_empty() {
                    device_info::remove_all(&entry.attachments[at..]);
                    entry.attachments.pop();
                    self.store(entry)?;
                } else {
                    error.details = format!(
                        "rollback incomplete: {}",
                        rollback.failures.to_cni_error(1).msg
                    );
                }
                Err(error)
            }
        }
    }

    /// Detaches the attachment on interface `ifname` from `entry`'s pod as DEL does (its cached
    /// configuration and result, its device-info file), then drops it from the entry. A name
    /// the entry does not hold is already detached.
    pub async fn detach(&self, entry: &mut CacheEntry, ifname: &str) -> Result<(), CniError> {
        let Some(index) = entry.attachments.iter().position(|a| a.ifname == ifname) else {
            return Ok(());
        };
        let env = self.delegate_env(entry);
        execute::teardown::detach_and_clean(&entry.attachments[index..=index], &env).await?;
        entry.attachments.remove(index);
        self.store(entry)
    }

    /// Writes the network-status of `entry`'s attachments to pod `info` with one PATCH,
    /// conditional on its UID.
    pub async fn write_status(&self, info: &PodInfo, entry: &CacheEntry) -> Result<(), CniError> {
        status::write(&self.api, info, &statuses(entry)).await
    }
}

/// The network-status entries of every attachment of `entry` that has a result, in order.
pub fn statuses(entry: &CacheEntry) -> Vec<NetworkStatus> {
    let mut all = Vec::new();
    for a in &entry.attachments {
        let Some(value) = &a.result else { continue };
        let Ok(network) = a.network_config() else {
            continue;
        };
        let Ok(result) = CniResult::from_value(value, network.version) else {
            continue;
        };
        all.extend(status::statuses_for(
            a.status_name(),
            &result,
            a.primary,
            device_info::read(&a.capability_args),
            &a.ifname,
        ));
    }
    all
}
