//! Addresses: list them and add them to links.

use std::net::IpAddr;
use std::path::Path;

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};

use super::worker::exec;
use crate::netlink::connection::{link_index, link_names, netlink};
use crate::netlink::error::{LinkError, Request};

/// An IP address assigned to an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressInfo {
    /// Name of the interface holding the address.
    pub ifname: String,
    /// Address with its prefix length (e.g. `10.0.0.2/24`).
    pub address: IpNet,
}

/// Lists all IPv4 and IPv6 addresses (including `lo` and IPv6 link-local).
pub fn addresses(netns: Option<&Path>) -> Result<Vec<AddressInfo>, LinkError> {
    exec(netns, move |handle| async move {
        let names = link_names(&handle).await?;
        let msgs: Vec<AddressMessage> = handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(netlink(Request::DumpAddresses))?;
        Ok(msgs
            .iter()
            .filter_map(|msg| {
                let address = address_of(msg)?;
                let ifname = names.get(&msg.header.index)?.clone();
                let address = IpNet::new(address, msg.header.prefix_len).ok()?;
                Some(AddressInfo { ifname, address })
            })
            .collect())
    })
}

/// Adds an address to a link (`ip addr add`).
pub fn add_address(netns: Option<&Path>, ifname: &str, address: IpNet) -> Result<(), LinkError> {
    let ifname = ifname.to_string();
    exec(netns, move |handle| async move {
        let index = link_index(&handle, &ifname).await?;
        handle
            .address()
            .add(index, address.addr(), address.prefix_len())
            .execute()
            .await
            .map_err(netlink(Request::AddAddress { address, ifname }))
    })
}

/// `IFA_LOCAL` (the interface's own address) if present, else `IFA_ADDRESS`.
fn address_of(msg: &AddressMessage) -> Option<IpAddr> {
    let find = |local: bool| {
        msg.attributes.iter().find_map(|attr| match attr {
            AddressAttribute::Local(ip) if local => Some(*ip),
            AddressAttribute::Address(ip) if !local => Some(*ip),
            _ => None,
        })
    };
    find(true).or_else(|| find(false))
}
