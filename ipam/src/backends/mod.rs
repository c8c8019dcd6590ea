//! The datastores: Kubernetes, etcd and an embedded local store.

pub mod etcd;
pub mod kubernetes;
pub mod local;
