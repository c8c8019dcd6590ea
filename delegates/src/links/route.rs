//! Routes of the main table: list, add, and delete the default routes of a link.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteScope, RouteType, RouteVia,
};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, RouteMessageBuilder};

use super::worker::exec;
use crate::netlink::connection::{errno, link_index, link_names, netlink};
use crate::netlink::error::{LinkError, Request};

/// A unicast route of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    /// Destination; `0.0.0.0/0` or `::/0` for a default route.
    pub destination: IpNet,
    /// Next hop, if any (`RTA_GATEWAY` or `RTA_VIA`).
    pub gateway: Option<IpAddr>,
    /// Output interface name, if any (none for multipath routes).
    pub ifname: Option<String>,
    /// Routing table id (always 254, the main table, for [`routes`]).
    pub table: u32,
}

/// Lists the unicast routes of the main table, IPv4 then IPv6.
///
/// Local, broadcast and multicast routes live in the local table and are not
/// listed. Kernel-made routes of the main table are kept, which includes the
/// IPv6 `fe80::/64` route of every interface with IPv6 enabled.
pub fn routes(netns: Option<&Path>) -> Result<Vec<RouteInfo>, LinkError> {
    exec(netns, move |handle| async move {
        let names = link_names(&handle).await?;
        Ok(dump_main_routes(&handle)
            .await?
            .iter()
            .map(|msg| route_info(msg, &names))
            .collect())
    })
}

/// Adds a route to the main table (`ip route add`). Without a gateway, an
/// IPv4 route gets link scope, as `ip` does.
pub fn add_route(
    netns: Option<&Path>,
    destination: IpNet,
    gateway: Option<IpAddr>,
    ifname: Option<&str>,
) -> Result<(), LinkError> {
    let ifname = ifname.map(str::to_string);
    exec(netns, move |handle| async move {
        let invalid = |_| LinkError::InvalidRoute {
            destination,
            gateway,
        };
        let mut builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(destination.network(), destination.prefix_len())
            .map_err(invalid)?;
        if let Some(gateway) = gateway {
            builder = builder.gateway(gateway).map_err(invalid)?;
        } else if destination.addr().is_ipv4() {
            builder = builder.scope(RouteScope::Link);
        }
        if let Some(ifname) = &ifname {
            builder = builder.output_interface(link_index(&handle, ifname).await?);
        }
        handle
            .route()
            .add(builder.build())
            .execute()
            .await
            .map_err(netlink(Request::AddRoute(destination)))
    })
}

/// Removes the IPv4 and IPv6 default routes of the main table whose output
/// interface is `ifname` and returns what was removed.
pub fn delete_default_routes(
    netns: Option<&Path>,
    ifname: &str,
) -> Result<Vec<RouteInfo>, LinkError> {
    let ifname = ifname.to_string();
    exec(netns, move |handle| async move {
        let index = link_index(&handle, &ifname).await?;
        let names = link_names(&handle).await?;
        let mut removed = Vec::new();
        for msg in dump_main_routes(&handle).await? {
            let via_link = msg.attributes.contains(&RouteAttribute::Oif(index));
            if msg.header.destination_prefix_length != 0 || !via_link {
                continue;
            }
            let info = route_info(&msg, &names);
            match handle.route().del(deletion_message(&msg)).execute().await {
                Err(e) if errno(&e) == Some(nix::libc::ESRCH) => continue,
                other => other.map_err(netlink(Request::DeleteDefaultRoute {
                    destination: info.destination,
                    ifname: ifname.clone(),
                }))?,
            }
            removed.push(info);
        }
        Ok(removed)
    })
}

/// Unicast routes of the main table, IPv4 then IPv6.
async fn dump_main_routes(handle: &Handle) -> Result<Vec<RouteMessage>, LinkError> {
    let requests = [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<Ipv6Addr>::new().build(),
    ];
    let mut routes = Vec::new();
    for request in requests {
        let msgs: Vec<RouteMessage> = handle
            .route()
            .get(request)
            .execute()
            .try_collect()
            .await
            .map_err(netlink(Request::DumpRoutes))?;
        routes.extend(msgs.into_iter().filter(|msg| {
            msg.header.kind == RouteType::Unicast
                && table_of(msg) == u32::from(RouteHeader::RT_TABLE_MAIN)
        }));
    }
    Ok(routes)
}
/// A message selecting exactly `route` for `RTM_DELROUTE`, without the
/// read-only attributes (cache info, preference, ...) of a dump.
fn deletion_message(route: &RouteMessage) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header = route.header.clone();
    msg.header.flags = Default::default();
    msg.attributes = route
        .attributes
        .iter()
        .filter(|attr| {
            matches!(
                attr,
                RouteAttribute::Destination(_)
                    | RouteAttribute::Gateway(_)
                    | RouteAttribute::Via(_)
                    | RouteAttribute::Oif(_)
                    | RouteAttribute::Priority(_)
                    | RouteAttribute::Table(_)
            )
        })
        .cloned()
        .collect();
    msg
}

fn table_of(msg: &RouteMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|attr| match attr {
            RouteAttribute::Table(table) => Some(*table),
            _ => None,
        })
        .unwrap_or(u32::from(msg.header.table))
}

fn route_info(msg: &RouteMessage, names: &HashMap<u32, String>) -> RouteInfo {
    let unspecified = match msg.header.address_family {
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let mut destination = unspecified;
    let mut gateway = None;
    let mut ifname = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(addr) => {
                destination = route_address(addr).unwrap_or(unspecified);
            }
            RouteAttribute::Gateway(addr) => gateway = route_address(addr),
            RouteAttribute::Via(RouteVia::Inet(v4)) => gateway = Some(IpAddr::V4(*v4)),
            RouteAttribute::Via(RouteVia::Inet6(v6)) => gateway = Some(IpAddr::V6(*v6)),
            RouteAttribute::Oif(index) => ifname = names.get(index).cloned(),
            _ => {}
        }
    }
    let destination = IpNet::new(destination, msg.header.destination_prefix_length)
        .unwrap_or_else(|_| IpNet::from(destination));
    RouteInfo {
        destination,
        gateway,
        ifname,
        table: table_of(msg),
    }
}

fn route_address(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_info_reads_default_routes() {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet6;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.attributes = vec![
            RouteAttribute::Gateway(RouteAddress::Inet6("fd00::1".parse().unwrap())),
            RouteAttribute::Oif(7),
        ];
        let names = HashMap::from([(7, "eth0".to_string())]);
        let info = route_info(&msg, &names);
        assert_eq!(info.destination, "::/0".parse::<IpNet>().unwrap());
        assert_eq!(info.gateway, Some("fd00::1".parse().unwrap()));
        assert_eq!(info.ifname.as_deref(), Some("eth0"));
        assert_eq!(info.table, 254);
    }

    #[test]
    fn deletion_message_drops_read_only_attributes() {
        let mut msg = RouteMessage::default();
        msg.attributes = vec![RouteAttribute::Oif(3), RouteAttribute::Expires(5)];
        assert_eq!(
            deletion_message(&msg).attributes,
            vec![RouteAttribute::Oif(3)]
        );
    }
}
