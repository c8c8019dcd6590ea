//! The datastores: Kubernetes, etcd and an embedded local store, and the choice between them
//! ([`AnyStore`]).

mod any;
pub mod etcd;
pub mod kubernetes;
pub mod local;

pub use any::{kube_options, AnyStore};
