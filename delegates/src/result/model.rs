//! The canonical result: the 1.1 shape, which holds everything every older version can say.

use std::net::IpAddr;

use ipnet::IpNet;

/// Canonical result, the 1.1 shape (a superset of every version).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CniResult {
    /// The interfaces the plugin created or touched; `ips[].interface` indexes into this list.
    pub interfaces: Vec<Interface>,
    /// The addresses assigned, in order.
    pub ips: Vec<IpConfig>,
    /// The routes installed, in order.
    pub routes: Vec<Route>,
    /// DNS settings; empty when the plugin gave none.
    pub dns: Dns,
}

/// An interface in a result (`interfaces[]`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interface {
    /// The interface name, e.g. `eth0`.
    pub name: String,
    /// The hardware address, e.g. `00:11:22:33:44:55`.
    pub mac: Option<String>,
    /// The MTU (1.1 only).
    pub mtu: Option<u32>,
    /// The network namespace path the interface is in; absent for host interfaces.
    pub sandbox: Option<String>,
    /// The path of a vhost-user or similar socket (1.1 only).
    pub socket_path: Option<String>,
    /// The PCI address of a device, e.g. a VF's `0000:03:02.0` (1.1 only).
    pub pci_id: Option<String>,
}

/// An address in a result (`ips[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// The address with its prefix length; `10.1.0.5/16` keeps its host bits.
    pub address: IpNet,
    /// The default gateway for this subnet, if any.
    pub gateway: Option<IpAddr>,
    /// Index into [`CniResult::interfaces`] of the interface the address is on.
    pub interface: Option<usize>,
}

/// A route in a result (`routes[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The destination network; a prefix length of 0 makes it a default route.
    pub dst: IpNet,
    /// The next hop; absent means the plugin's default gateway.
    pub gw: Option<IpAddr>,
    /// The route's MTU (1.1 only).
    pub mtu: Option<u32>,
    /// The route's advertised MSS (1.1 only).
    pub advmss: Option<u32>,
    /// The route's priority (metric) (1.1 only).
    pub priority: Option<u32>,
    /// The routing table (1.1 only).
    pub table: Option<u32>,
    /// The route scope, as a number (1.1 only).
    pub scope: Option<u32>,
}

/// DNS settings in a result (`dns`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dns {
    /// Name server addresses, in order of preference.
    pub nameservers: Vec<String>,
    /// The local domain.
    pub domain: Option<String>,
    /// Search domains, in order.
    pub search: Vec<String>,
    /// Resolver options, e.g. `ndots:5`.
    pub options: Vec<String>,
}

impl Interface {
    /// An interface with a name and nothing else.
    pub fn new(name: impl Into<String>) -> Self {
        Interface {
            name: name.into(),
            ..Interface::default()
        }
    }
}

impl IpConfig {
    /// An address with no gateway and no interface index.
    pub fn new(address: IpNet) -> Self {
        IpConfig {
            address,
            gateway: None,
            interface: None,
        }
    }
}

impl Route {
    /// A route to `dst` with no other field set.
    pub fn new(dst: IpNet) -> Self {
        Route {
            dst,
            gw: None,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }

    /// True for a default route: `0.0.0.0/0`, `::/0`, or any other destination of prefix length 0.
    pub fn is_default(&self) -> bool {
        self.dst.prefix_len() == 0
    }
}

impl Dns {
    /// True when no DNS setting is present (an empty `domain` counts as absent).
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.as_deref().is_none_or(str::is_empty)
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

impl CniResult {
    /// True when the result has a default route (0.0.0.0/0 or ::/0).
    pub fn has_default_route(&self) -> bool {
        self.routes.iter().any(Route::is_default)
    }
}
