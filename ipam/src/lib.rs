//! `plexus-ipam`: a cluster-wide IPAM plugin that accepts Whereabouts's configuration keys.
//!
//! * [`config`] reads the plugin's configuration (Whereabouts's keys, the flat file, Plexus's
//!   `backend` choice) and refuses what is invalid at load.
//! * [`range`] is the address arithmetic: a range with its bounds, excluded parts and gateway,
//!   addressed by 128-bit offsets so that a whole IPv6 /64 is usable.
//! * [`store`] is what every backend does: allocate, release, list; [`backends`] holds the
//!   Kubernetes, etcd and embedded local stores.
//! * [`plugin`] is the CNI plugin (ADD, DEL, CHECK, STATUS, GC, VERSION); [`gc`] releases the
//!   addresses of pods that are gone; [`pools`] describes pools for `plexusctl ipam pools`;
//!   [`import`] brings Whereabouts's allocations into the Kubernetes store.

#![warn(missing_docs)]

pub mod backends;
pub mod config;
pub mod error;
pub mod gc;
pub mod import;
pub mod plugin;
pub mod pools;
pub mod range;
pub mod store;
