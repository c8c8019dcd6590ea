//! Links: list, create, delete and change them, and move them between namespaces.

use std::path::Path;

use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage};
use rtnetlink::{LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth};

use super::mac::{format_mac, parse_mac};
use super::worker::exec;
use crate::netlink::connection::{
    dump_links, errno, get_link, link_index, name_of, netlink, set_up_by_name,
};
use crate::netlink::error::{LinkError, NetnsError, Request};

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

/// Creates a veth pair `a`/`b` and brings both ends up.
pub fn create_veth(netns: Option<&Path>, a: &str, b: &str) -> Result<(), LinkError> {
    let (a, b) = (a.to_string(), b.to_string());
    exec(netns, move |handle| async move {
        handle
            .link()
            .add(LinkVeth::new(&a, &b).up().build())
            .execute()
            .await
            .map_err(netlink(Request::CreateVeth(a.clone(), b.clone())))?;
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
            .map_err(netlink(Request::CreateBridge(name.clone())))
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
            other => other.map_err(netlink(Request::DeleteLink(name.clone()))),
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
    modify(netns, name, Request::SetDown, |b| b.down())
}

/// Renames a link (`ip link set <name> name <new_name>`); the link must be down or the kernel
/// must allow renaming it while up.
pub fn set_name(netns: Option<&Path>, name: &str, new_name: &str) -> Result<(), LinkError> {
    let new_name = new_name.to_string();
    modify(netns, name, Request::Rename, move |b| b.name(new_name))
}

/// Sets a link's hardware address, given as `aa:bb:cc:dd:ee:ff`.
pub fn set_mac(netns: Option<&Path>, name: &str, mac: &str) -> Result<(), LinkError> {
    let bytes = parse_mac(mac).ok_or_else(|| LinkError::InvalidMac(mac.to_string()))?;
    modify(netns, name, Request::SetMac, move |b| {
        b.address(bytes.to_vec())
    })
}

/// Sets a link's MTU.
pub fn set_mtu(netns: Option<&Path>, name: &str, mtu: u32) -> Result<(), LinkError> {
    modify(netns, name, Request::SetMtu, move |b| b.mtu(mtu))
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
            .map_err(netlink(Request::MoveToNetns(name.clone())));
        drop(file);
        result
    })
}

/// Sends an `RTM_SETLINK` for the link called `name`, built by `build`; `request` names what is
/// done, given the link's name.
pub(super) fn modify<B>(
    netns: Option<&Path>,
    name: &str,
    request: fn(String) -> Request,
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
            .map_err(netlink(request(name)))
    })
}

fn link_info(msg: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        index: msg.header.index,
        name: name_of(msg),
        kind: None,
        mac: None,
        mtu: None,
        up: msg.header.flags.contains(LinkFlags::Up),
        master: None,
    };
    for attr in &msg.attributes {
        match attr {
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
