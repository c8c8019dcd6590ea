//! The CNI protocol, both sides, for Plexus.
//!
//! * Plugin side: [`env`](mod@env) reads and validates a plugin's environment, [`skel`] runs a plugin's
//!   command and prints its result or error.
//! * Shared: [`config`] holds network configurations and lists without losing a key,
//!   [`result`] holds results of every version and converts between them, [`version`] and
//!   [`error`] the versions and error codes.
//! * Runtime side: [`invoke`] finds and runs a plugin binary, [`list`] runs a whole configuration
//!   list as libcni does.
//! * Plugins that move links: [`netns`] runs work inside a network namespace, [`links`] holds
//!   synchronous netlink helpers for links, addresses and routes. Both stand on a private
//!   `netlink` module (a connection on the calling thread, and their two error types); `links`
//!   uses `netns`, never the other way round.

#![warn(missing_docs)]

pub mod config;
pub mod env;
pub mod error;
pub mod invoke;
pub mod links;
pub mod list;
pub mod logging;
mod netlink;
pub mod netns;
pub mod result;
pub mod runtime;
pub mod skel;
pub mod version;

pub use error::{CniError, ErrorCode};
pub use result::CniResult;
pub use version::SpecVersion;
