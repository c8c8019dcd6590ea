//! Tearing attachments down: every one is attempted, in reverse order, and every failure is
//! kept as a [`TeardownError`], so one broken network never stops the others from being cleaned.
//! ADD's rollback, DEL and GC all tear down through here.

use plexus_cni::config::{ConfigError, NetworkConfigList};
use plexus_cni::list::{self, PluginFailure};
use plexus_cni::{CniError, CniResult, ErrorCode};
use thiserror::Error;

use super::DelegateEnv;
use crate::cache::CachedAttachment;
use crate::devices::device_info;

/// Why one attachment could not be torn down.
#[derive(Debug, Error)]
pub enum TeardownError {
    /// Its cached configuration does not parse, so its delegates cannot be run.
    #[error("{ifname} ({network}): cached configuration unreadable: {source}")]
    UnreadableConfig {
        /// The attachment's interface name.
        ifname: String,
        /// Its network.
        network: String,
        /// Why the configuration was refused.
        source: ConfigError,
    },
    /// Plugins of its network failed DEL.
    #[error("{ifname} ({network}): {}", messages(.failures))]
    Delegate {
        /// The attachment's interface name.
        ifname: String,
        /// Its network.
        network: String,
        /// The plugins that failed, each with why.
        failures: Vec<PluginFailure>,
    },
}

impl TeardownError {
    /// The failures of `attachment`'s plugins.
    pub fn delegate(attachment: &CachedAttachment, failures: Vec<PluginFailure>) -> Self {
        TeardownError::Delegate {
            ifname: attachment.ifname.clone(),
            network: attachment.network.clone(),
            failures,
        }
    }
}

/// The plugins' messages, as CNI errors give them, joined.
fn messages(failures: &[PluginFailure]) -> String {
    let msgs: Vec<String> = failures.iter().map(|f| f.to_cni_error().msg).collect();
    msgs.join("; ")
}

/// The failures of a teardown, in the order they happened.
#[derive(Debug, Default)]
pub struct TeardownFailures(pub Vec<TeardownError>);

impl TeardownFailures {
    /// True when nothing failed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The CNI error for these failures (code 106), out of `total` attachments.
    pub fn to_cni_error(&self, total: usize) -> CniError {
        let each: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        CniError::new(
            ErrorCode::TeardownIncomplete,
            format!(
                "could not tear down {} of {} attachments: {}",
                self.0.len(),
                total,
                each.join("; ")
            ),
        )
    }
}

/// Runs DEL for each attachment, last first.
pub async fn detach_all(attachments: &[CachedAttachment], env: &DelegateEnv) -> TeardownFailures {
    let mut failures = TeardownFailures::default();
    for attachment in attachments.iter().rev() {
        if let Err(e) = detach(attachment, env).await {
            failures.0.push(e);
        }
    }
    failures
}

/// Tears down every attachment and removes their device-info files; fails (code 106) when any
/// attachment could not be torn down.
pub async fn detach_and_clean(
    attachments: &[CachedAttachment],
    env: &DelegateEnv,
) -> Result<(), CniError> {
    let failures = detach_all(attachments, env).await;
    device_info::remove_all(attachments);
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.to_cni_error(attachments.len()))
    }
}

/// DEL of one attachment with its cached configuration and result.
async fn detach(attachment: &CachedAttachment, env: &DelegateEnv) -> Result<(), TeardownError> {
    let network =
        NetworkConfigList::from_bytes(attachment.config.as_bytes()).map_err(|source| {
            TeardownError::UnreadableConfig {
                ifname: attachment.ifname.clone(),
                network: attachment.network.clone(),
                source,
            }
        })?;
    let prev = attachment
        .result
        .as_ref()
        .and_then(|r| CniResult::from_value(r, network.version).ok());
    list::del(&network, &env.for_cached(attachment), prev.as_ref())
        .await
        .map_err(|failures| TeardownError::delegate(attachment, failures))
}
