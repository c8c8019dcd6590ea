//! The Kubernetes side of Plexus: the pod annotations Multus defines, NetworkAttachmentDefinitions,
//! capability arguments, default-route ownership and the network-status annotation.
//!
//! Everything but [`client`] is pure (no network, no API client) so that it can be tested on its
//! own; [`client`] fetches pods and NADs and writes the status.

pub mod capability;
pub mod client;
pub mod default_route;
pub mod nad;
pub mod selection;
pub mod status;
