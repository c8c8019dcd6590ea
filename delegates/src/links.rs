//! Synchronous netlink helpers for links, addresses and routes.
//!
//! Each call runs on a fresh thread with its own tokio current-thread
//! runtime and rtnetlink connection, so it is safe to call from anywhere,
//! including from inside another tokio runtime. With `netns: Some(path)` that
//! thread first enters the namespace (via [`netns::run_in`]); with `None` it
//! stays in the namespace of the calling thread (threads inherit it).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage, LinkVfInfo,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteScope, RouteType, RouteVia,
};
use netlink_packet_route::AddressFamily;
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use crate::netns::{self, NetnsError};

/// Errors of the netlink helpers.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Entering the network namespace failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// The helper thread or its tokio runtime could not be started.
    #[error("cannot start a netlink worker: {0}")]
    Runtime(#[source] io::Error),
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink socket: {0}")]
    Connection(#[source] io::Error),
    /// A netlink request failed.
    #[error("{context}: {source}")]
    Netlink {
        /// What was being done.
        context: String,
        /// Underlying error.
        source: rtnetlink::Error,
    },
    /// The named link does not exist.
    #[error("link {0:?} not found")]
    NotFound(String),
    /// A hardware address is not `aa:bb:cc:dd:ee:ff`.
    #[error("invalid MAC address {0:?}")]
    InvalidMac(String),
    /// A route could not be expressed as a netlink message.
    #[error("invalid route: {0}")]
    InvalidRoute(String),
}

/// A network interface as reported by `RTM_GETLINK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// `IFLA_INFO_KIND` ("veth", "bridge", ...); `None` for physical and
    /// loopback devices.
    pub kind: Option<String>,
    /// Hardware address as lowercase `aa:bb:..`, if the device has one.
    pub mac: Option<String>,
    /// MTU.
    pub mtu: Option<u32>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Index of the controller (bridge or bond master), if enslaved.
    pub master: Option<u32>,
}

/// An IP address assigned to an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressInfo {
    /// Name of the interface holding the address.
    pub ifname: String,
    /// Address with its prefix length (e.g. `10.0.0.2/24`).
    pub address: IpNet,
}

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

/// Lists all links.
pub fn links(netns: Option<&Path>) -> Result<Vec<LinkInfo>, LinkError> {
    exec(netns, move |handle| async move {
        let msgs = dump_links(&handle).await?;
        Ok(msgs.iter().map(link_info).collect())
    })
}

/// Looks a link up by name; `Ok(None)` if there is none.
pub fn link(netns: Option<&Path>, name: &str) -> Result<Option<LinkInfo>, LinkError> {
    let name = name.to_string();
    exec(netns, move |handle| async move {
        Ok(get_link(&handle, &name).await?.as_ref().map(link_info))
    })
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
            .map_err(netlink("dumping addresses"))?;
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

/// Creates a veth pair `a`/`b` and brings both ends up.
pub fn create_veth(netns: Option<&Path>, a: &str, b: &str) -> Result<(), LinkError> {
    let (a, b) = (a.to_string(), b.to_string());
    exec(netns, move |handle| async move {
        handle
            .link()
            .add(LinkVeth::new(&a, &b).up().build())
            .execute()
            .await
            .map_err(netlink(format!("creating veth {a}/{b}")))?;
        set_up_by_name(&handle, &b).await
    })
}

/// Creates a Linux bridge and brings it up.
pub fn create_bridge(netns: Option<&Path>, name: &str) -> Result<(), LinkError> {
    let name = name.to_string();
    exec(netns, move |handle| async move {
        handle
            .link()
            .add(LinkBridge::new(&name).build())
            .execute()
            .await
            .map_err(netlink(format!("creating bridge {name}")))
    })
}

/// Deletes a link; a missing link is not an error.
pub fn delete_link(netns: Option<&Path>, name: &str) -> Result<(), LinkError> {
    let name = name.to_string();
    exec(netns, move |handle| async move {
        let Some(msg) = get_link(&handle, &name).await? else {
            return Ok(());
        };
        match handle.link().del(msg.header.index).execute().await {
            Err(e) if errno(&e) == Some(nix::libc::ENODEV) => Ok(()),
            other => other.map_err(netlink(format!("deleting link {name}"))),
        }
    })
}

/// Brings a link up.
pub fn set_up(netns: Option<&Path>, name: &str) -> Result<(), LinkError> {
    let name = name.to_string();
    exec(netns, move |handle| async move {
        set_up_by_name(&handle, &name).await
    })
}

/// Brings a link down.
pub fn set_down(netns: Option<&Path>, name: &str) -> Result<(), LinkError> {
    modify(netns, name, "bringing {name} down", |b| b.down())
}

/// Renames a link (`ip link set <name> name <new_name>`); the link must be down or the kernel
/// must allow renaming it while up.
pub fn set_name(netns: Option<&Path>, name: &str, new_name: &str) -> Result<(), LinkError> {
    let new_name = new_name.to_string();
    modify(netns, name, "renaming {name}", move |b| b.name(new_name))
}

/// Sets a link's hardware address, given as `aa:bb:cc:dd:ee:ff`.
pub fn set_mac(netns: Option<&Path>, name: &str, mac: &str) -> Result<(), LinkError> {
    let bytes = parse_mac(mac).ok_or_else(|| LinkError::InvalidMac(mac.to_string()))?;
    modify(netns, name, "setting the MAC address of {name}", move |b| {
        b.address(bytes.to_vec())
    })
}

/// Sets a link's MTU.
pub fn set_mtu(netns: Option<&Path>, name: &str, mtu: u32) -> Result<(), LinkError> {
    modify(netns, name, "setting the MTU of {name}", move |b| {
        b.mtu(mtu)
    })
}

/// Moves a link into the network namespace at `target`. `target` is opened by the calling
/// thread first, so `/proc/thread-self/ns/net` names the caller's own namespace (use it to move a
/// link from a pod back to where the caller runs).
pub fn move_to_netns(netns: Option<&Path>, name: &str, target: &Path) -> Result<(), LinkError> {
    let file = std::fs::File::open(target).map_err(|source| {
        LinkError::Netns(NetnsError::Open {
            path: target.to_path_buf(),
            source,
        })
    })?;
    let name = name.to_string();
    exec(netns, move |handle| async move {
        let index = link_index(&handle, &name).await?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        let message = LinkUnspec::new_with_index(index).setns_by_fd(fd).build();
        let result = handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(netlink(format!("moving {name} to another namespace")));
        drop(file);
        result
    })
}

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
            .map_err(netlink(format!("reading the VFs of {pf}")))?;
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
    modify(netns, pf, "configuring a VF of {name}", move |b| {
        b.append_extra_attribute(LinkAttribute::VfInfoList(vec![info]))
    })
}

/// Parses `aa:bb:cc:dd:ee:ff` (either case) into six bytes.
pub fn parse_mac(mac: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = mac.split(':');
    for byte in &mut out {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Sends an `RTM_SETLINK` for the link called `name`, built by `build`; `context` names what is
/// done, with `{name}` replaced by the link's name.
fn modify<B>(
    netns: Option<&Path>,
    name: &str,
    context: &'static str,
    build: B,
) -> Result<(), LinkError>
where
    B: FnOnce(LinkMessageBuilder<LinkUnspec>) -> LinkMessageBuilder<LinkUnspec> + Send + 'static,
{
    let name = name.to_string();
    exec(netns, move |handle| async move {
        let index = link_index(&handle, &name).await?;
        let message = build(LinkUnspec::new_with_index(index)).build();
        handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(netlink(context.replace("{name}", &name)))
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
            .map_err(netlink(format!("adding {address} to {ifname}")))
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
        let invalid = |e: &dyn std::fmt::Display| LinkError::InvalidRoute(e.to_string());
        let mut builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(destination.network(), destination.prefix_len())
            .map_err(|e| invalid(&e))?;
        if let Some(gateway) = gateway {
            builder = builder.gateway(gateway).map_err(|e| invalid(&e))?;
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
            .map_err(netlink(format!("adding route {destination}")))
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
                other => other.map_err(netlink(format!(
                    "deleting default route {} via {ifname}",
                    info.destination
                )))?,
            }
            removed.push(info);
        }
        Ok(removed)
    })
}

/// Brings a link up in the calling thread's namespace, on the calling thread
/// (used right after `unshare`, where no extra thread may be spawned).
pub(crate) fn set_up_here(name: &str) -> Result<(), LinkError> {
    let name = name.to_string();
    block_on_here(move |handle| async move { set_up_by_name(&handle, &name).await })
}

/// Runs `work` with a fresh netlink handle on a dedicated thread, inside
/// `netns` if given.
fn exec<T, F, Fut>(netns: Option<&Path>, work: F) -> Result<T, LinkError>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, LinkError>>,
{
    let job = move || block_on_here(work);
    match netns {
        Some(path) => netns::run_in(path, job)?,
        None => {
            let handle = std::thread::Builder::new()
                .name("plexus-netlink".into())
                .spawn(job)
                .map_err(LinkError::Runtime)?;
            match handle.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    }
}

/// Runs `work` on the current thread with a current-thread runtime.
fn block_on_here<T, F, Fut>(work: F) -> Result<T, LinkError>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T, LinkError>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(LinkError::Runtime)?;
    runtime.block_on(async move {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(LinkError::Connection)?;
        let connection = tokio::spawn(connection);
        let result = work(handle).await;
        connection.abort();
        result
    })
}

fn netlink(context: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> LinkError {
    let context = context.into();
    move |source| LinkError::Netlink { context, source }
}

/// The positive errno of a netlink error reply.
fn errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|code| -code.get()),
        _ => None,
    }
}

async fn dump_links(handle: &Handle) -> Result<Vec<LinkMessage>, LinkError> {
    handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(netlink("dumping links"))
}

async fn link_names(handle: &Handle) -> Result<HashMap<u32, String>, LinkError> {
    Ok(dump_links(handle)
        .await?
        .iter()
        .map(|msg| {
            let info = link_info(msg);
            (info.index, info.name)
        })
        .collect())
}

async fn get_link(handle: &Handle, name: &str) -> Result<Option<LinkMessage>, LinkError> {
    // Names longer than IFNAMSIZ - 1 cannot exist (the kernel rejects them).
    if name.is_empty() || name.len() > 15 {
        return Ok(None);
    }
    let result: Result<Vec<LinkMessage>, _> = handle
        .link()
        .get()
        .match_name(name)
        .execute()
        .try_collect()
        .await;
    match result {
        Ok(msgs) => Ok(msgs.into_iter().next()),
        Err(e) if errno(&e) == Some(nix::libc::ENODEV) => Ok(None),
        Err(e) => Err(netlink(format!("looking up link {name}"))(e)),
    }
}

async fn link_index(handle: &Handle, name: &str) -> Result<u32, LinkError> {
    match get_link(handle, name).await? {
        Some(msg) => Ok(msg.header.index),
        None => Err(LinkError::NotFound(name.to_string())),
    }
}

async fn set_up_by_name(handle: &Handle, name: &str) -> Result<(), LinkError> {
    let index = link_index(handle, name).await?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(netlink(format!("bringing {name} up")))
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
            .map_err(netlink("dumping routes"))?;
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

fn link_info(msg: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        index: msg.header.index,
        name: String::new(),
        kind: None,
        mac: None,
        mtu: None,
        up: msg.header.flags.contains(LinkFlags::Up),
        master: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => info.name = name.clone(),
            LinkAttribute::Address(bytes) => info.mac = Some(format_mac(bytes)),
            LinkAttribute::Mtu(mtu) => info.mtu = Some(*mtu),
            LinkAttribute::Controller(index) => info.master = Some(*index),
            LinkAttribute::LinkInfo(infos) => {
                for item in infos {
                    if let NlLinkInfo::Kind(kind) = item {
                        info.kind = Some(kind.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    info
}

/// Formats a hardware address as lowercase `aa:bb:cc:dd:ee:ff`.
fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_is_lowercase_and_colon_separated() {
        assert_eq!(
            format_mac(&[0xAA, 0x0b, 0, 1, 0xff, 0x10]),
            "aa:0b:00:01:ff:10"
        );
        assert_eq!(format_mac(&[]), "");
    }

    #[test]
    fn macs_parse_in_either_case() {
        assert_eq!(
            parse_mac("AA:0b:00:01:ff:10"),
            Some([0xaa, 0x0b, 0, 1, 0xff, 0x10])
        );
        for bad in [
            "",
            "aa:bb",
            "aa:bb:cc:dd:ee:ff:00",
            "aa:bb:cc:dd:ee:f",
            "zz:bb:cc:dd:ee:ff",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }

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
