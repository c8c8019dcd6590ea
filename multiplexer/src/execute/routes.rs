//! Making the pod's default routes what the plan says when one attachment owns them (the
//! networks annotation's `default-route`, decided in `plan/mod.rs`): every other default route
//! is removed from the pod and from the results, and the owner's gateways become the pod's
//! default routes.

use std::path::Path;

use ipnet::IpNet;
use plexus_cni::{CniError, CniResult, ErrorCode};

use crate::k8s::default_route::{self, DefaultRoute};
use crate::links::{self, LinkError};
use crate::plan::PlannedAttachment;

/// The index of the pod-side interface `ifname` in a result.
fn interface_index(result: &CniResult, ifname: &str) -> Option<usize> {
    result
        .interfaces
        .iter()
        .position(|i| i.name == ifname && i.sandbox.is_some())
}

/// Applies the owner's choice in the pod's namespace and in every result.
pub fn apply(
    netns: &Path,
    plan: &[PlannedAttachment],
    results: &mut [CniResult],
    owner: &DefaultRoute,
) -> Result<(), CniError> {
    let fail = |what: &str, e: LinkError| {
        CniError::new(ErrorCode::IoFailure, format!("default-route: {what}: {e}"))
    };
    for (attachment, _) in plan.iter().zip(results.iter()) {
        match links::delete_default_routes(Some(netns), &attachment.ifname) {
            Ok(_) | Err(LinkError::NotFound(_)) => {}
            Err(e) => {
                return Err(fail(
                    &format!("removing the default routes of {}", attachment.ifname),
                    e,
                ))
            }
        }
    }
    let owner_ifname = &plan[owner.index].ifname;
    for gw in &owner.gateways {
        let dst = match gw {
            std::net::IpAddr::V4(_) => IpNet::V4(Default::default()),
            std::net::IpAddr::V6(_) => IpNet::V6(Default::default()),
        };
        links::add_route(Some(netns), dst, Some(*gw), Some(owner_ifname)).map_err(|e| {
            fail(
                &format!("adding a default route via {gw} on {owner_ifname}"),
                e,
            )
        })?;
    }
    for (index, (attachment, result)) in plan.iter().zip(results.iter_mut()).enumerate() {
        let iface = interface_index(result, &attachment.ifname);
        default_route::apply(owner, index, result, iface);
    }
    Ok(())
}
