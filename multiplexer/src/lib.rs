//! Plexus: a Multus-compatible CNI meta-plugin that gives pods several network interfaces.
//!
//! Every command goes through the same stages, one module each: [`parse`] → [`plan`] →
//! [`execute`] → [`record`]. [`commands`] has one file per CNI command, each reading as the
//! stages it uses; everything Kubernetes lives under [`k8s`], and device-plugin devices under
//! [`devices`].
//!
//! # One ADD, stage by stage
//!
//! Take a Kubernetes pod on K3s: `clusterNetwork` is Flannel's conflist, and the pod's
//! `k8s.v1.cni.cncf.io/networks` annotation asks for one NetworkAttachmentDefinition.
//!
//! 1. `main.rs` hands the request to `plexus_cni::skel`, which calls [`commands::Plexus`]
//!    (`commands/mod.rs`); that only dispatches to `commands/add.rs`.
//! 2. **Parse** (`parse.rs`, with `config.rs`): Plexus's configuration and the `CNI_*`
//!    variables become an [`parse::Invocation`].
//! 3. The pod: [`k8s::connect`] (`k8s/mod.rs`, the client in `k8s/client.rs`) connects to the
//!    API server and `k8s/pod_networks.rs` reads the pod's annotations.
//! 4. **Plan** (`plan/mod.rs`): `k8s/pod_networks.rs` turns the annotations into
//!    [`plan::Delegate`]s (`plan/delegate.rs`): the primary network where
//!    [`plan::primary_network`] says it comes from (here `clusterNetwork`, read by
//!    `resolve.rs`), then the NADs the annotation names (`k8s/selection/`, fetched and
//!    checked by `k8s/nad.rs` and `k8s/capability.rs`). [`plan::Plan::build`] gives each its
//!    interface name (`eth0`, `net1`), its `runtimeConfig` and device-info file
//!    (`devices/device_info.rs`), and decides the default route's owner
//!    (`k8s/default_route.rs`). The [`plan::Plan`] is a plain value; nothing has run yet.
//! 5. **Execute** (`execute/mod.rs`): after checking that no planned interface exists in the
//!    pod, [`execute::attach_all`] runs each attachment's delegates in order through
//!    `plexus_cni::list`, with a [`execute::DelegateEnv`]; `execute/routes.rs` applies a
//!    `default-route` request. On a failure, `execute/teardown.rs` undoes what was attempted.
//! 6. **Record** (`record.rs`): the cache entry (`cache.rs`) was written before the first
//!    delegate ran ([`record::begin`]); [`record::complete`] writes it again with every result
//!    while the network-status annotation (`k8s/status.rs`) is written to the pod.
//! 7. `commands/add.rs` returns the primary network's result.
//!
//! DEL reads the cache entry and tears it down with `execute/teardown.rs`; without an entry it
//! plans the attachments as ADD would ([`plan::attachments`]). CHECK runs each cached
//! attachment with a [`execute::DelegateEnv`]; GC tears down stale entries the same way.
//!
//! [`hotplug`] attaches one more network to a running pod, or detaches one attachment, from its
//! cache entry, through the same plan, execute and record stages (the node agent `plexusd`
//! calls it when a pod's networks annotation changes).

#![warn(missing_docs)]

pub mod cache;
pub mod commands;
pub mod config;
pub mod devices;
pub mod execute;
pub mod hotplug;
pub mod k8s;
pub mod parse;
pub mod plan;
pub mod readiness;
pub mod record;
pub mod resolve;

/// The netlink and network-namespace helpers, which live in `plexus-cni` (shared with `plexus-sriov`).
pub use plexus_cni::{links, netns};
