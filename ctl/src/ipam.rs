//! `plexusctl ipam`: inspects and cleans up `plexus-ipam`'s allocations.
//!
//! ```text
//! plexusctl ipam pools [--config FILE]... [--output json]   # size, used, free; each allocation's pod
//! plexusctl ipam import whereabouts [--apply]             # Whereabouts's allocations into the blocks
//! plexusctl ipam gc [--node NAME] [--dry-run] [--block-grace-seconds N] [--keep-blocks]
//!                                                           # release the addresses of pods that are gone,
//!                                                           # then delete the empty blocks nobody holds
//! ```
//!
//! The store is the Kubernetes one (`--kubeconfig`, else `$KUBECONFIG`, `~/.kube/config` or
//! the in-cluster service account; objects in `--namespace`, default `kube-system`), or etcd
//! with `--etcd-endpoints`, or the node's local store with `--local-path`.
//!
//! `pools` reports each configured range: those of the CNI configuration files given with
//! `--config`, and, with a Kubernetes client, of every NetworkAttachmentDefinition whose IPAM
//! is `plexus-ipam` or `whereabouts`. Allocations outside every configured range are listed
//! under the CIDR the store keeps them in.
//!
//! With the Kubernetes store, `pools` also lists every block with the node holding it.
//!
//! `gc` looks each allocation's pod up (Kubernetes is needed for that, whatever the store) and
//! releases those whose pod is gone or whose UID changed, asking again right before each
//! release ([`plexus_ipam::gc`]). With the Kubernetes store it then deletes the empty blocks
//! whose Lease expired more than the grace period ago (default 60 s), or whose node is gone
//! ([`plexus_ipam::backends::kubernetes::reclaim`]).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use kube::api::{Api, ListParams};
use plexus_crds::NetworkAttachmentDefinition;
use plexus_ipam::backends::etcd::EtcdStore;
use plexus_ipam::backends::kubernetes::{
    KubeClient, KubeOptions, KubePods, KubeStore, ReclaimOptions, ReclaimReport,
    DEFAULT_BLOCK_GRACE,
};
use plexus_ipam::backends::local::LocalStore;
use plexus_ipam::config::{self, IpamConfig};
use plexus_ipam::gc::{self, GcOptions, GcReport};
use plexus_ipam::import::{self, ImportOptions, Networks};
use plexus_ipam::pools;
use plexus_ipam::store::{Pool, Store};

use super::{print_stdout, Error};

/// How long each API or etcd call may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Arguments of `plexusctl ipam`.
#[derive(Args, Debug)]
pub struct IpamArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: IpamCommand,
}

/// The `plexusctl ipam` subcommands.
#[derive(Subcommand, Debug)]
pub enum IpamCommand {
    /// List each pool with its size, used and free counts, and each allocation with its pod.
    Pools(PoolsArgs),
    /// Release the addresses whose pod is gone or whose pod UID changed.
    Gc(GcArgs),
    /// Import another IPAM's allocations into plexus-ipam's blocks (a dry run unless --apply).
    #[command(subcommand)]
    Import(ImportCommand),
}

/// What `plexusctl ipam import` imports.
#[derive(Subcommand, Debug)]
pub enum ImportCommand {
    /// Whereabouts's IPPools and OverlappingRangeIPReservations.
    Whereabouts(ImportArgs),
}

/// Arguments of `plexusctl ipam import whereabouts`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The kubeconfig (default: $KUBECONFIG, ~/.kube/config, else in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The namespace of plexus-ipam's objects.
    #[arg(long, default_value = config::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// A CNI configuration (or list) file giving a network's block size and overlap setting;
    /// repeatable. The NetworkAttachmentDefinitions are read too.
    #[arg(long = "config")]
    pub configs: Vec<PathBuf>,
    /// Write the blocks (without it, only show what would be written).
    #[arg(long)]
    pub apply: bool,
    /// How to print.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// Where the allocations are.
#[derive(Args, Debug, Clone, Default)]
pub struct StoreArgs {
    /// The kubeconfig (default: $KUBECONFIG, ~/.kube/config, else in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The namespace of the IPAM objects.
    #[arg(long, default_value = config::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Use the etcd store at these endpoints (comma-separated) instead of Kubernetes.
    #[arg(long, value_delimiter = ',', conflicts_with = "local_path")]
    pub etcd_endpoints: Vec<String>,
    /// The etcd key prefix.
    #[arg(long, default_value = config::DEFAULT_ETCD_PREFIX)]
    pub etcd_prefix: String,
    /// Use this node's local store in this directory instead of Kubernetes.
    #[arg(long)]
    pub local_path: Option<PathBuf>,
}

/// How to print.
#[derive(ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Output {
    /// A table.
    #[default]
    Text,
    /// JSON.
    Json,
}

/// Arguments of `plexusctl ipam pools`.
#[derive(Args, Debug)]
pub struct PoolsArgs {
    /// Where the allocations are.
    #[command(flatten)]
    pub store: StoreArgs,
    /// A CNI configuration (or list) file whose IPAM ranges to report; repeatable.
    #[arg(long = "config")]
    pub configs: Vec<PathBuf>,
    /// How to print.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// Arguments of `plexusctl ipam gc`.
#[derive(Args, Debug)]
pub struct GcArgs {
    /// Where the allocations are.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Only the allocations this node made (what a node agent runs).
    #[arg(long)]
    pub node: Option<String>,
    /// Report what would be released; release nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How long an empty block is kept after its Lease expired (Kubernetes store).
    #[arg(long, default_value_t = DEFAULT_BLOCK_GRACE.as_secs())]
    pub block_grace_seconds: u64,
    /// Do not delete empty blocks (a run with --node never does: blocks are the cluster's).
    #[arg(long)]
    pub keep_blocks: bool,
    /// How to print.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// Runs `plexusctl ipam`.
pub fn run(args: &IpamArgs) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match &args.command {
            IpamCommand::Pools(a) => pools_command(a).await,
            IpamCommand::Gc(a) => gc_command(a).await,
            IpamCommand::Import(ImportCommand::Whereabouts(a)) => import_command(a).await,
        }
    })
}

/// A Kubernetes client from `--kubeconfig`, else found as kubectl finds one.
async fn kube_client(args: &StoreArgs) -> Result<KubeClient, Error> {
    Ok(match &args.kubeconfig {
        Some(path) => KubeClient::from_kubeconfig(path, TIMEOUT).await?,
        None => KubeClient::infer(TIMEOUT).await?,
    })
}

/// Runs `$body` with `$store` bound to the chosen store (a different type for each).
macro_rules! with_store {
    ($args:expr, $client:expr, |$store:ident| $body:expr) => {{
        let args: &StoreArgs = $args;
        if !args.etcd_endpoints.is_empty() {
            let $store =
                EtcdStore::connect(&args.etcd_endpoints, &args.etcd_prefix, TIMEOUT).await?;
            $body
        } else if let Some(path) = &args.local_path {
            let $store = LocalStore::new(path);
            $body
        } else {
            let client: KubeClient = match $client {
                Some(c) => c,
                None => kube_client(args).await?,
            };
            let $store = KubeStore::new(client, &args.namespace, KubeOptions::new(""));
            $body
        }
    }};
}

async fn pools_command(args: &PoolsArgs) -> Result<(), Error> {
    let mut configured: Vec<Pool> = Vec::new();
    for path in &args.configs {
        configured.extend(pools_of_file(path)?);
    }
    let client = if is_kube(&args.store) {
        Some(kube_client(&args.store).await?)
    } else {
        None
    };
    if let Some(client) = &client {
        match pools_of_nads(client).await {
            Ok(found) => configured.extend(found),
            Err(e) => eprintln!("plexusctl: not reading NetworkAttachmentDefinitions: {e}"),
        }
    }
    let usage = with_store!(&args.store, client.clone(), |store| store.usage().await?);
    let mut summaries = pools::summarize(&configured, &usage);
    let blocks = match client {
        Some(client) => kube_store(&args.store, client).blocks().await?,
        None => Vec::new(),
    };
    pools::attach_blocks(&mut summaries, &blocks);
    match args.output {
        Output::Json => print_stdout(&(serde_json::to_string_pretty(&summaries)? + "\n")),
        Output::Text if blocks.is_empty() => print_stdout(&pools::render(&summaries)),
        Output::Text => print_stdout(&format!(
            "{}\n{}",
            pools::render(&summaries),
            pools::render_blocks(&blocks)
        )),
    }
}

/// The Kubernetes store, for what only it does.
fn kube_store(args: &StoreArgs, client: KubeClient) -> KubeStore {
    KubeStore::new(client, &args.namespace, KubeOptions::new(""))
}

/// Whether the store is the Kubernetes one.
fn is_kube(args: &StoreArgs) -> bool {
    args.etcd_endpoints.is_empty() && args.local_path.is_none()
}

/// The pools of a CNI configuration (or list) file.
fn pools_of_file(path: &PathBuf) -> Result<Vec<Pool>, Error> {
    Ok(config_of_file(path)?.pools())
}

/// The IPAM configuration of a CNI configuration (or list) file.
fn config_of_file(path: &PathBuf) -> Result<IpamConfig, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let conf: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a JSON object: {e}", path.display()))?;
    Ok(IpamConfig::load_with(&conf, &[], "")
        .map_err(|e| format!("{}: {}", path.display(), e.msg))?)
}

/// The pools of every NetworkAttachmentDefinition whose IPAM this plugin handles.
async fn pools_of_nads(client: &KubeClient) -> Result<Vec<Pool>, Error> {
    Ok(configs_of_nads(client)
        .await?
        .iter()
        .flat_map(IpamConfig::pools)
        .collect())
}

/// The IPAM configuration of every NetworkAttachmentDefinition whose IPAM this plugin handles.
async fn configs_of_nads(client: &KubeClient) -> Result<Vec<IpamConfig>, Error> {
    let api: Api<NetworkAttachmentDefinition> = Api::all(client.client().clone());
    let nads = tokio::time::timeout(TIMEOUT, api.list(&ListParams::default()))
        .await
        .map_err(|_| format!("no answer from {} within {TIMEOUT:?}", client.server()))??;
    let mut found = Vec::new();
    for nad in nads.items {
        let Ok(conf) =
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&nad.spec.config)
        else {
            continue;
        };
        if let Ok(ipam) = IpamConfig::load_with(&conf, &[], "") {
            found.push(ipam);
        }
    }
    Ok(found)
}

async fn import_command(args: &ImportArgs) -> Result<(), Error> {
    let store_args = StoreArgs {
        kubeconfig: args.kubeconfig.clone(),
        namespace: args.namespace.clone(),
        ..StoreArgs::default()
    };
    let client = kube_client(&store_args).await?;
    let mut configs = Vec::new();
    for path in &args.configs {
        configs.push(config_of_file(path)?);
    }
    match configs_of_nads(&client).await {
        Ok(found) => configs.extend(found),
        Err(e) => eprintln!("plexusctl: not reading NetworkAttachmentDefinitions: {e}"),
    }
    let store = kube_store(&store_args, client);
    let options = ImportOptions {
        apply: args.apply,
        networks: Networks::from_configs(&configs),
    };
    let report = import::import_whereabouts(&store, &options).await?;
    match args.output {
        Output::Json => print_stdout(&(serde_json::to_string_pretty(&report)? + "\n")),
        Output::Text => print_stdout(&import::render(&report)),
    }
}

async fn gc_command(args: &GcArgs) -> Result<(), Error> {
    let client = kube_client(&args.store).await?;
    let pods = KubePods::new(client.clone());
    let options = GcOptions {
        node: args.node.clone(),
        dry_run: args.dry_run,
    };
    let report = with_store!(&args.store, Some(client.clone()), |store| {
        gc::collect(&store, &pods, &options).await?
    });
    // Blocks are the whole cluster's: reclaimed by a cluster-wide run, not a node's (`--node`).
    let blocks = if is_kube(&args.store) && !args.keep_blocks && args.node.is_none() {
        let store = kube_store(&args.store, client);
        let options = ReclaimOptions {
            grace: Duration::from_secs(args.block_grace_seconds),
            nodes: store.node_names().await,
            dry_run: args.dry_run,
        };
        Some(store.reclaim_blocks(&options).await?)
    } else {
        None
    };
    match args.output {
        Output::Json => {
            // The allocation report's keys, and the blocks' report under `blocks`.
            let mut json = serde_json::to_value(&report)?;
            json["blocks"] = serde_json::to_value(&blocks)?;
            print_stdout(&(serde_json::to_string_pretty(&json)? + "\n"))?
        }
        Output::Text => {
            let mut text = render_gc(&report, args.dry_run);
            if let Some(blocks) = &blocks {
                text.push_str(&render_reclaim(blocks, args.dry_run));
            }
            print_stdout(&text)?
        }
    }
    let block_errors = blocks.as_ref().map_or(0, |b| b.errors.len());
    if report.errors.is_empty() && block_errors == 0 {
        Ok(())
    } else {
        Err(format!(
            "{} allocation(s) could not be checked or released, {block_errors} block(s) not \
             deleted",
            report.errors.len()
        )
        .into())
    }
}

/// A block reclamation report as text.
fn render_reclaim(report: &ReclaimReport, dry_run: bool) -> String {
    let verb = if dry_run { "would delete" } else { "deleted" };
    let mut text = String::new();
    for name in &report.deleted {
        text.push_str(&format!("{verb} empty block {name}\n"));
    }
    for e in &report.errors {
        text.push_str(&format!("error: {e}\n"));
    }
    text.push_str(&format!(
        "{} blocks examined, {} {verb}, {} empty but held, {} changed meanwhile (kept), {} errors\n",
        report.examined,
        report.deleted.len(),
        report.kept_held,
        report.changed,
        report.errors.len()
    ));
    text
}

/// A GC report as text.
fn render_gc(report: &GcReport, dry_run: bool) -> String {
    let verb = if dry_run { "would release" } else { "released" };
    let mut text = String::new();
    for r in &report.released {
        let o = &r.allocation.owner;
        let network = if r.network.is_empty() {
            "-"
        } else {
            &r.network
        };
        text.push_str(&format!(
            "{verb} {} (network {network}) of {} {} container {} node {}\n",
            r.allocation.address,
            o.display(),
            o.ifname,
            o.container_id,
            if o.node.is_empty() { "-" } else { &o.node },
        ));
    }
    for e in &report.errors {
        text.push_str(&format!("error: {e}\n"));
    }
    text.push_str(&format!(
        "{} examined, {} {verb}, {} kept (pod back at the re-check), {} gone meanwhile, {} not pods, {} errors\n",
        report.examined,
        report.released.len(),
        report.kept_on_recheck,
        report.already_gone,
        report.not_pods,
        report.errors.len()
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cli, Command};
    use clap::Parser;

    #[test]
    fn ipam_subcommands_parse() {
        let cli = Cli::try_parse_from([
            "plexusctl",
            "ipam",
            "gc",
            "--kubeconfig",
            "/k",
            "--node",
            "n1",
            "--dry-run",
        ])
        .unwrap();
        let Command::Ipam(args) = cli.command else {
            panic!("not ipam")
        };
        let IpamCommand::Gc(gc) = &args.command else {
            panic!("not gc")
        };
        assert_eq!(gc.store.namespace, "kube-system");
        assert!(gc.dry_run);
        let cli = Cli::try_parse_from([
            "plexusctl",
            "ipam",
            "pools",
            "--etcd-endpoints",
            "a:2379,b:2379",
            "--output",
            "json",
        ])
        .unwrap();
        let Command::Ipam(args) = cli.command else {
            panic!("not ipam")
        };
        let IpamCommand::Pools(p) = &args.command else {
            panic!("not pools")
        };
        assert_eq!(p.store.etcd_endpoints, ["a:2379", "b:2379"]);
        assert_eq!(p.output, Output::Json);
        assert!(Cli::try_parse_from([
            "plexusctl",
            "ipam",
            "pools",
            "--etcd-endpoints",
            "a",
            "--local-path",
            "/x"
        ])
        .is_err());
    }
}
