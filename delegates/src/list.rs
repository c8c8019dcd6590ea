//! Running a whole network (a configuration list) as libcni does for a container runtime: ADD and
//! CHECK in order, DEL in reverse, with `prevResult` chained or taken from the ADD result, and GC
//! and STATUS for 1.1 networks.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;

use crate::config::NetworkConfigList;
use crate::env::Command;
use crate::error::{CniError, ErrorCode};
use crate::invoke::{self, Invocation, InvokeError};
use crate::result::{CniResult, ResultError};

/// The runtime's side of one attachment: who, where, and what runtimeConfig it offers.
#[derive(Debug, Clone, Default)]
pub struct RuntimeContext {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS` (empty when there is none, as on a DEL after the sandbox is gone).
    pub netns: PathBuf,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS`, joined.
    pub args: String,
    /// Where plugin binaries are looked for, in order.
    pub plugin_dirs: Vec<PathBuf>,
    /// Capability arguments; each plugin receives those it declares as `runtimeConfig`.
    pub capability_args: Map<String, Value>,
    /// The limit for each plugin call.
    pub timeout: Duration,
}

/// One entry of `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Attachment {
    /// The container ID.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// The interface name.
    pub ifname: String,
}

/// Reads a GC request's valid attachments: `cni.dev/valid-attachments`, or the older
/// `cni.dev/attachments` that the 1.1.0 specification text named. None given is an empty list.
pub fn valid_attachments(config: &Map<String, Value>) -> Result<Vec<Attachment>, CniError> {
    let value = config
        .get("cni.dev/valid-attachments")
        .or_else(|| config.get("cni.dev/attachments"))
        .cloned()
        .unwrap_or(Value::Array(Vec::new()));
    serde_json::from_value(value).map_err(|e| {
        CniError::new(
            ErrorCode::InvalidNetworkConfig,
            format!("invalid cni.dev/valid-attachments: {e}"),
        )
    })
}

/// One plugin of a network failed.
#[derive(Debug, Error)]
#[error("network {network:?}, plugin {plugin:?} ({command}): {source}")]
pub struct PluginFailure {
    /// The network's name.
    pub network: String,
    /// The plugin's type.
    pub plugin: String,
    /// The command.
    pub command: Command,
    /// The plugin's position in the list.
    pub index: usize,
    /// What went wrong.
    pub source: ListErrorKind,
}

/// What went wrong with one plugin.
#[derive(Debug, Error)]
pub enum ListErrorKind {
    /// Running it failed.
    #[error(transparent)]
    Invoke(#[from] InvokeError),
    /// It answered ADD with something that is not a result.
    #[error("its result could not be read: {0}")]
    Result(#[from] ResultError),
}

impl PluginFailure {
    /// True when the plugin process was started (so it may have changed something); false when
    /// it was refused, not found or could not be started.
    pub fn started(&self) -> bool {
        !matches!(
            self.source,
            ListErrorKind::Invoke(
                InvokeError::InvalidType(_)
                    | InvokeError::NotFound { .. }
                    | InvokeError::Spawn { .. }
            )
        )
    }

    /// The error object the plugin printed, when it ran and failed.
    pub fn plugin_error(&self) -> Option<&CniError> {
        match &self.source {
            ListErrorKind::Invoke(InvokeError::Plugin { error, .. }) => Some(error),
            _ => None,
        }
    }

    /// True when both failures are the same plugin refusing with the same error: a plugin that
    /// refuses its configuration on DEL exactly as it did on ADD never got far enough to change
    /// anything.
    pub fn same_refusal(&self, other: &PluginFailure) -> bool {
        self.index == other.index
            && self.plugin == other.plugin
            && matches!((self.plugin_error(), other.plugin_error()),
                (Some(a), Some(b)) if a.code == b.code && a.msg == b.msg)
    }

    /// How many plugins of the list may have changed something: those before this one, and this
    /// one if it started.
    pub fn plugins_attempted(&self) -> usize {
        self.index + usize::from(self.started())
    }

    /// The CNI error this failure is reported as: the plugin's own code when it gave one, with the
    /// network and plugin named in the message.
    pub fn to_cni_error(&self) -> CniError {
        let inner = match &self.source {
            ListErrorKind::Invoke(e) => e.to_cni_error(),
            ListErrorKind::Result(e) => CniError::new(ErrorCode::DecodingFailure, e.to_string()),
        };
        CniError {
            cni_version: String::new(),
            code: inner.code,
            msg: format!(
                "network {:?}, plugin {:?} ({}): {}",
                self.network, self.plugin, self.command, inner.msg
            ),
            details: inner.details,
        }
    }
}

fn invocation(command: Command, ctx: &RuntimeContext) -> Invocation {
    Invocation {
        command: Some(command),
        container_id: ctx.container_id.clone(),
        netns: ctx.netns.to_string_lossy().into_owned(),
        ifname: ctx.ifname.clone(),
        args: ctx.args.clone(),
        path: ctx.plugin_dirs.clone(),
    }
}

async fn run_plugin(
    list: &NetworkConfigList,
    index: usize,
    command: Command,
    inv: &Invocation,
    stdin: &Map<String, Value>,
    timeout: Duration,
) -> Result<Vec<u8>, PluginFailure> {
    let plugin_type = &list.plugins[index].plugin_type;
    let fail = |source: ListErrorKind| PluginFailure {
        network: list.name.clone(),
        plugin: plugin_type.clone(),
        command,
        index,
        source,
    };
    let bin = invoke::find_plugin(plugin_type, &inv.path).map_err(|e| fail(e.into()))?;
    let bytes = serde_json::to_vec(stdin).unwrap_or_default();
    tracing::debug!(network = %list.name, plugin = %plugin_type, %command, ifname = %inv.ifname, "running delegate plugin");
    invoke::exec(&bin, inv, &bytes, timeout)
        .await
        .map_err(|e| fail(e.into()))
}

/// ADD: runs every plugin in order, each with the previous one's result as `prevResult`, and
/// returns the last result.
pub async fn add(
    list: &NetworkConfigList,
    ctx: &RuntimeContext,
) -> Result<CniResult, PluginFailure> {
    let inv = invocation(Command::Add, ctx);
    let mut prev: Option<Value> = None;
    let mut result = CniResult::default();
    for index in 0..list.plugins.len() {
        let stdin = list.plugin_request(index, &ctx.capability_args, prev.as_ref());
        let out = run_plugin(list, index, Command::Add, &inv, &stdin, ctx.timeout).await?;
        result = CniResult::parse(&out, list.version).map_err(|e| PluginFailure {
            network: list.name.clone(),
            plugin: list.plugins[index].plugin_type.clone(),
            command: Command::Add,
            index,
            source: e.into(),
        })?;
        prev = Some(result.to_value(list.version));
    }
    Ok(result)
}

/// CHECK: runs every plugin in order with the ADD result as `prevResult`. Does nothing for a list
/// with `disableCheck` or a version without CHECK.
pub async fn check(
    list: &NetworkConfigList,
    ctx: &RuntimeContext,
    prev: &CniResult,
) -> Result<(), PluginFailure> {
    if list.disable_check || !list.version.has_check() {
        return Ok(());
    }
    let inv = invocation(Command::Check, ctx);
    let prev = prev.to_value(list.version);
    for index in 0..list.plugins.len() {
        let stdin = list.plugin_request(index, &ctx.capability_args, Some(&prev));
        run_plugin(list, index, Command::Check, &inv, &stdin, ctx.timeout).await?;
    }
    Ok(())
}

/// DEL: runs every plugin in reverse order, each with the ADD result as `prevResult` when there
/// is one (from 0.4.0 on). Every plugin is attempted; all failures are returned.
pub async fn del(
    list: &NetworkConfigList,
    ctx: &RuntimeContext,
    prev: Option<&CniResult>,
) -> Result<(), Vec<PluginFailure>> {
    del_first(list, ctx, prev, list.plugins.len()).await
}

/// DEL of only the first `count` plugins, in reverse order: the rollback of an ADD that failed
/// part-way through the list (see [`PluginFailure::plugins_attempted`]).
pub async fn del_first(
    list: &NetworkConfigList,
    ctx: &RuntimeContext,
    prev: Option<&CniResult>,
    count: usize,
) -> Result<(), Vec<PluginFailure>> {
    let inv = invocation(Command::Del, ctx);
    let prev = prev
        .filter(|_| list.version.has_prev_result_on_del())
        .map(|r| r.to_value(list.version));
    let mut failures = Vec::new();
    for index in (0..count.min(list.plugins.len())).rev() {
        let stdin = list.plugin_request(index, &ctx.capability_args, prev.as_ref());
        if let Err(e) = run_plugin(list, index, Command::Del, &inv, &stdin, ctx.timeout).await {
            failures.push(e);
        }
    }
    none_or_all(failures)
}

/// GC: sends every plugin the valid attachments (under both `cni.dev/valid-attachments` and the
/// older `cni.dev/attachments`). Skipped for `disableGC` and versions before 1.1.0. Every plugin is
/// attempted; all failures are returned.
pub async fn gc(
    list: &NetworkConfigList,
    plugin_dirs: &[PathBuf],
    valid: &[Attachment],
    timeout: Duration,
) -> Result<(), Vec<PluginFailure>> {
    if list.disable_gc || !list.version.has_status_and_gc() {
        return Ok(());
    }
    let inv = Invocation {
        command: Some(Command::Gc),
        path: plugin_dirs.to_vec(),
        ..Default::default()
    };
    let valid = serde_json::to_value(valid).unwrap_or(Value::Array(Vec::new()));
    let mut failures = Vec::new();
    for index in 0..list.plugins.len() {
        let mut stdin = list.plugin_request(index, &Map::new(), None);
        stdin.insert("cni.dev/valid-attachments".into(), valid.clone());
        stdin.insert("cni.dev/attachments".into(), valid.clone());
        if let Err(e) = run_plugin(list, index, Command::Gc, &inv, &stdin, timeout).await {
            failures.push(e);
        }
    }
    none_or_all(failures)
}

/// `Ok` when nothing failed, else every failure.
fn none_or_all(failures: Vec<PluginFailure>) -> Result<(), Vec<PluginFailure>> {
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

/// STATUS: asks every plugin in order and stops at the first that is not ready. Does nothing for
/// versions before 1.1.0.
pub async fn status(
    list: &NetworkConfigList,
    plugin_dirs: &[PathBuf],
    timeout: Duration,
) -> Result<(), PluginFailure> {
    if !list.version.has_status_and_gc() {
        return Ok(());
    }
    let inv = Invocation {
        command: Some(Command::Status),
        path: plugin_dirs.to_vec(),
        ..Default::default()
    };
    for index in 0..list.plugins.len() {
        let stdin = list.plugin_request(index, &Map::new(), None);
        run_plugin(list, index, Command::Status, &inv, &stdin, timeout).await?;
    }
    Ok(())
}
