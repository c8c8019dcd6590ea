//! Tearing attachments down: every one is attempted, in reverse order, and every failure is
//! kept, so one broken network never stops the others from being cleaned.

use plexus_cni::config::NetworkConfigList;
use plexus_cni::list::{self, RuntimeContext};
use plexus_cni::{CniError, CniResult, ErrorCode};

use crate::cache::CachedAttachment;

/// The failures of a teardown, one line each.
#[derive(Debug, Default)]
pub struct TeardownFailures(pub Vec<String>);

impl TeardownFailures {
    /// True when nothing failed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The CNI error for these failures (code 106), out of `total` attachments.
    pub fn to_cni_error(&self, total: usize) -> CniError {
        CniError::new(
            ErrorCode::TeardownIncomplete,
            format!(
                "could not tear down {} of {} attachments: {}",
                self.0.len(),
                total,
                self.0.join("; ")
            ),
        )
    }
}

/// Runs DEL for each attachment, last first. `context` gives the runtime context of each.
pub async fn detach_all(
    attachments: &[CachedAttachment],
    context: impl Fn(&CachedAttachment) -> RuntimeContext,
) -> TeardownFailures {
    let mut failures = TeardownFailures::default();
    for attachment in attachments.iter().rev() {
        if let Err(e) = detach(attachment, &context(attachment)).await {
            failures.0.push(e);
        }
    }
    failures
}

/// DEL of one attachment with its cached configuration and result.
async fn detach(attachment: &CachedAttachment, ctx: &RuntimeContext) -> Result<(), String> {
    let network = NetworkConfigList::from_bytes(attachment.config.as_bytes()).map_err(|e| {
        format!(
            "{} ({}): cached configuration unreadable: {e}",
            attachment.ifname, attachment.network
        )
    })?;
    let prev = attachment
        .result
        .as_ref()
        .and_then(|r| CniResult::from_value(r, network.version).ok());
    list::del(&network, ctx, prev.as_ref())
        .await
        .map_err(|fs| describe(attachment, &fs))
}

/// One line for the failures of one attachment.
pub fn describe(attachment: &CachedAttachment, failures: &[list::PluginFailure]) -> String {
    let msgs: Vec<String> = failures.iter().map(|f| f.to_cni_error().msg).collect();
    format!(
        "{} ({}): {}",
        attachment.ifname,
        attachment.network,
        msgs.join("; ")
    )
}
