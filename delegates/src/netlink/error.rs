//! The errors of link and namespace work, in one module because each can carry the other: a
//! link request fails when its namespace cannot be entered ([`LinkError::Netns`]), and creating
//! a namespace fails when its `lo` cannot be brought up ([`NetnsError::Loopback`]).
//!
//! Both are public as [`crate::links::LinkError`] and [`crate::netns::NetnsError`].

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use nix::errno::Errno;

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
        /// What was being done, naming the link, address or route.
        context: Request,
        /// Underlying error (boxed: it is large, and errors travel in every `Result`).
        source: Box<rtnetlink::Error>,
    },
    /// The named link does not exist.
    #[error("link {0:?} not found")]
    NotFound(String),
    /// A hardware address is not `aa:bb:cc:dd:ee:ff`.
    #[error("invalid MAC address {0:?}")]
    InvalidMac(String),
    /// A route could not be expressed as a netlink message (its gateway is of the other
    /// address family).
    #[error("invalid route: no route message for {destination}{}", via(.gateway))]
    InvalidRoute {
        /// The route's destination.
        destination: IpNet,
        /// The route's gateway, if it has one.
        gateway: Option<IpAddr>,
    },
}

/// A netlink request of the helpers, naming its link, address or route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Request {
    /// Listing every link.
    #[error("dumping links")]
    DumpLinks,
    /// Listing every address.
    #[error("dumping addresses")]
    DumpAddresses,
    /// Listing the routes.
    #[error("dumping routes")]
    DumpRoutes,
    /// Looking a link up by name.
    #[error("looking up link {0}")]
    LookUp(String),
    /// Creating a veth pair.
    #[error("creating veth {0}/{1}")]
    CreateVeth(String, String),
    /// Creating a bridge.
    #[error("creating bridge {0}")]
    CreateBridge(String),
    /// Deleting a link.
    #[error("deleting link {0}")]
    DeleteLink(String),
    /// Bringing a link up.
    #[error("bringing {0} up")]
    SetUp(String),
    /// Bringing a link down.
    #[error("bringing {0} down")]
    SetDown(String),
    /// Renaming a link.
    #[error("renaming {0}")]
    Rename(String),
    /// Setting a link's hardware address.
    #[error("setting the MAC address of {0}")]
    SetMac(String),
    /// Setting a link's MTU.
    #[error("setting the MTU of {0}")]
    SetMtu(String),
    /// Moving a link to another namespace.
    #[error("moving {0} to another namespace")]
    MoveToNetns(String),
    /// Reading the VF settings of a PF.
    #[error("reading the VFs of {0}")]
    ReadVfs(String),
    /// Changing a VF setting on a PF.
    #[error("configuring a VF of {0}")]
    ConfigureVf(String),
    /// Adding an address to a link.
    #[error("adding {address} to {ifname}")]
    AddAddress {
        /// The address.
        address: IpNet,
        /// The link.
        ifname: String,
    },
    /// Adding a route.
    #[error("adding route {0}")]
    AddRoute(IpNet),
    /// Deleting a default route of a link.
    #[error("deleting default route {destination} via {ifname}")]
    DeleteDefaultRoute {
        /// The route's destination, `0.0.0.0/0` or `::/0`.
        destination: IpNet,
        /// The link.
        ifname: String,
    },
}

/// ` via <gateway>`, or nothing without a gateway.
fn via(gateway: &Option<IpAddr>) -> String {
    gateway.map(|g| format!(" via {g}")).unwrap_or_default()
}

/// Errors of network namespace operations.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace file could not be opened.
    #[error("cannot open network namespace {path}: {source}")]
    Open {
        /// Path of the namespace file.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// `setns(2)` into the namespace failed.
    #[error("cannot enter network namespace {path}: {source}")]
    Setns {
        /// Path of the namespace file.
        path: PathBuf,
        /// Underlying error.
        source: Errno,
    },
    /// The helper thread could not be spawned.
    #[error("cannot spawn a network namespace thread: {0}")]
    Spawn(#[source] io::Error),
    /// The name is not usable as a file name under `/run/netns`.
    #[error("invalid network namespace name {0:?}")]
    InvalidName(String),
    /// A namespace with that name already exists.
    #[error("network namespace {0} already exists")]
    Exists(PathBuf),
    /// Preparing the directory of named namespaces (directory, shared mount, lock) failed.
    #[error("cannot prepare {path}: {source}")]
    RunDir {
        /// The directory, `/run/netns`.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// Creating the namespace file failed.
    #[error("cannot create {path}: {source}")]
    Create {
        /// Path of the namespace file.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// `unshare(CLONE_NEWNET)` failed.
    #[error("cannot create a network namespace: {0}")]
    Unshare(#[source] Errno),
    /// A mount or unmount failed.
    #[error("cannot {action} {path}: {source}")]
    Mount {
        /// What was being done ("bind-mount", "unmount", ...).
        action: &'static str,
        /// Path of the mount point.
        path: PathBuf,
        /// Underlying error.
        source: Errno,
    },
    /// Removing the namespace file failed.
    #[error("cannot remove {path}: {source}")]
    Remove {
        /// Path of the namespace file.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// Bringing `lo` up in a new namespace failed.
    #[error("cannot bring lo up in {path}: {source}")]
    Loopback {
        /// Path of the namespace file.
        path: PathBuf,
        /// Underlying error.
        source: Box<LinkError>,
    },
}
