//! One rtnetlink connection on the calling thread, and the link lookups every request starts
//! with.

use std::collections::HashMap;
use std::future::Future;

use futures::TryStreamExt;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkUnspec};

use super::error::{LinkError, Request};

/// Runs `work` on the current thread with a current-thread runtime and a fresh connection.
pub(crate) fn block_on_here<T, F, Fut>(work: F) -> Result<T, LinkError>
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

/// Brings a link up in the calling thread's namespace, on the calling thread
/// (used right after `unshare`, where no extra thread may be spawned).
pub(crate) fn set_up_here(name: &str) -> Result<(), LinkError> {
    let name = name.to_string();
    block_on_here(move |handle| async move { set_up_by_name(&handle, &name).await })
}

/// Turns a failed request into [`LinkError::Netlink`] with what was being done.
pub(crate) fn netlink(context: Request) -> impl FnOnce(rtnetlink::Error) -> LinkError {
    move |source| LinkError::Netlink {
        context,
        source: Box::new(source),
    }
}

/// The positive errno of a netlink error reply.
pub(crate) fn errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|code| -code.get()),
        _ => None,
    }
}

/// Every link of the namespace.
pub(crate) async fn dump_links(handle: &Handle) -> Result<Vec<LinkMessage>, LinkError> {
    handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(netlink(Request::DumpLinks))
}

/// The name of every link, by index.
pub(crate) async fn link_names(handle: &Handle) -> Result<HashMap<u32, String>, LinkError> {
    Ok(dump_links(handle)
        .await?
        .iter()
        .map(|msg| (msg.header.index, name_of(msg)))
        .collect())
}

/// The link's `IFLA_IFNAME`; empty if it has none.
pub(crate) fn name_of(msg: &LinkMessage) -> String {
    msg.attributes
        .iter()
        .find_map(|attr| match attr {
            LinkAttribute::IfName(name) => Some(name.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// The link called `name`; `Ok(None)` if there is none.
pub(crate) async fn get_link(
    handle: &Handle,
    name: &str,
) -> Result<Option<LinkMessage>, LinkError> {
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
        Err(e) => Err(netlink(Request::LookUp(name.to_string()))(e)),
    }
}

/// The index of the link called `name`; [`LinkError::NotFound`] if there is none.
pub(crate) async fn link_index(handle: &Handle, name: &str) -> Result<u32, LinkError> {
    match get_link(handle, name).await? {
        Some(msg) => Ok(msg.header.index),
        None => Err(LinkError::NotFound(name.to_string())),
    }
}

/// Brings the link called `name` up.
pub(crate) async fn set_up_by_name(handle: &Handle, name: &str) -> Result<(), LinkError> {
    let index = link_index(handle, name).await?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(netlink(Request::SetUp(name.to_string())))
}
