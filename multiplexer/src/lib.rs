//! Plexus: a Multus-compatible CNI meta-plugin that gives pods several network interfaces.
//!
//! The flow of a command is parse → plan → execute → record: [`config`] reads Plexus's own
//! configuration, [`resolve`] finds the delegate networks, [`plan`] names their interfaces,
//! [`commands`] runs them through `plexus_cni::list`, and [`cache`] records what was attached so
//! that DEL can always undo it.

pub mod cache;
pub mod commands;
pub mod config;
pub mod devices;
pub mod execute;
pub mod k8s;
pub mod parse;
pub mod plan;
pub mod readiness;
pub mod record;
pub mod resolve;

/// The netlink and network-namespace helpers, which live in `plexus-cni` (shared with `plexus-sriov`).
pub use plexus_cni::{links, netns};
