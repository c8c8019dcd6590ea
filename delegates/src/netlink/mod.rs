//! The layer under [`links`](crate::links) and [`netns`](crate::netns): one rtnetlink connection
//! on the calling thread (`connection`) and the errors of link and namespace work (`error`).
//!
//! [`netns`](crate::netns) brings `lo` up in a new namespace with `connection::set_up_here`;
//! [`links`](crate::links) runs its requests with `connection::block_on_here`, inside a
//! namespace via [`netns::run_in`](crate::netns::run_in). Nothing here imports either of them.

pub(crate) mod connection;
pub(crate) mod error;
