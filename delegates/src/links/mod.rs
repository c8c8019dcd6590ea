//! Synchronous netlink helpers for links, addresses and routes.
//!
//! Each call runs on a fresh thread with its own tokio current-thread runtime and rtnetlink
//! connection (`worker`), so it is safe to call from anywhere, including from inside another
//! tokio runtime. With `netns: Some(path)` that thread first enters the namespace (via
//! [`netns::run_in`](crate::netns::run_in)); with `None` it stays in the namespace of the
//! calling thread (threads inherit it).
//!
//! * `link`: list, create, delete and change links, and move them between namespaces;
//! * `address`: list and add addresses;
//! * `route`: list, add and delete routes of the main table;
//! * `vf`: read and change the SR-IOV VF settings a PF holds;
//! * `mac`: hardware addresses as text.

mod address;
mod link;
mod mac;
mod route;
mod vf;
mod worker;

pub use crate::netlink::error::{LinkError, Request};
pub use address::{add_address, addresses, AddressInfo};
pub use link::{
    create_bridge, create_veth, delete_link, link, links, move_to_netns, set_down, set_mac,
    set_mtu, set_name, set_up, LinkInfo,
};
pub use mac::parse_mac;
pub use route::{add_route, delete_default_routes, routes, RouteInfo};
pub use vf::{set_vf, vf_infos};
