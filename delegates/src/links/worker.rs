//! The thread every helper of [`links`](super) runs its request on.

use std::future::Future;
use std::path::Path;

use rtnetlink::Handle;

use crate::netlink::connection::block_on_here;
use crate::netlink::error::LinkError;
use crate::netns;

/// Runs `work` with a fresh netlink handle on a dedicated thread, inside
/// `netns` if given.
pub(super) fn exec<T, F, Fut>(netns: Option<&Path>, work: F) -> Result<T, LinkError>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, LinkError>>,
{
    let job = move || block_on_here(work);
    match netns {
        Some(path) => netns::run_in(path, job)?,
        None => netns::on_new_thread("plexus-netlink", job).map_err(LinkError::Runtime)?,
    }
}
