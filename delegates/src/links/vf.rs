//! The SR-IOV VF settings a PF holds (`IFLA_VFINFO_LIST`).

use std::path::Path;

use futures::TryStreamExt;
use netlink_packet_route::link::{LinkAttribute, LinkExtentMask, LinkMessage, LinkVfInfo};
use netlink_packet_route::AddressFamily;

use super::link::modify;
use super::worker::exec;
use crate::netlink::connection::{link_index, netlink};
use crate::netlink::error::{LinkError, Request};

/// The SR-IOV VF entries (`IFLA_VFINFO_LIST`) a PF reports, asked for with the VF extension mask.
pub fn vf_infos(netns: Option<&Path>, pf: &str) -> Result<Vec<LinkVfInfo>, LinkError> {
    let pf = pf.to_string();
    exec(netns, move |handle| async move {
        let index = link_index(&handle, &pf).await?;
        let msgs: Vec<LinkMessage> = handle
            .link()
            .get()
            .match_index(index)
            .set_filter_mask(AddressFamily::Unspec, vec![LinkExtentMask::Vf])
            .execute()
            .try_collect()
            .await
            .map_err(netlink(Request::ReadVfs(pf.clone())))?;
        Ok(msgs
            .into_iter()
            .flat_map(|msg| msg.attributes)
            .filter_map(|attr| match attr {
                LinkAttribute::VfInfoList(list) => Some(list),
                _ => None,
            })
            .flatten()
            .collect())
    })
}

/// Sends one VF setting (an `IFLA_VF_INFO` with its VF index inside) to the PF `pf`, as
/// `ip link set <pf> vf <n> ...` does.
pub fn set_vf(netns: Option<&Path>, pf: &str, info: LinkVfInfo) -> Result<(), LinkError> {
    modify(netns, pf, Request::ConfigureVf, move |b| {
        b.append_extra_attribute(LinkAttribute::VfInfoList(vec![info]))
    })
}
