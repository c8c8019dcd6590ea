//! The datastores: Kubernetes, etcd and an embedded local store (in progress).
