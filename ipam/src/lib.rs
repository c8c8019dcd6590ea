//! `plexus-ipam`: the cluster-wide IPAM plugin that accepts Whereabouts's configuration keys.
//!
//! Not built yet: its allocator, backends and garbage collection arrive with the cluster IPAM
//! issue. Until then Plexus's examples and demo use the reference `host-local` IPAM.
