//! Moving the VF netdev into the pod and back.
//!
//! Into the pod: down, renamed in the host to a temporary name derived from the attachment (so
//! it cannot clash with the pod's names nor with the host's), moved, renamed to `CNI_IFNAME`,
//! MAC and MTU set, up. Back: down, renamed to the temporary name inside the pod, moved to the
//! namespace the plugin runs in, renamed to its host name, MAC, MTU and up state restored. Both
//! directions look for the netdev under every name it can have, so they also finish what a
//! crashed call left half done.

use std::path::Path;

use plexus_cni::links::{self, LinkError, LinkInfo};
use plexus_cni::netns;

use crate::state::HostNetdev;

/// The temporary name of an attachment's netdev while it moves: `sv` and 13 hex digits of a hash
/// of the container ID and interface name (15 bytes, a valid interface name).
pub fn temp_name(container_id: &str, ifname: &str) -> String {
    // FNV-1a, 64 bits: stable across runs and builds.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in container_id.bytes().chain([0]).chain(ifname.bytes()) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("sv{:013x}", hash & 0x000f_ffff_ffff_ffff)
}

/// Moves the host netdev into `netns` as `ifname`, sets its MAC and MTU when given, brings it
/// up, and returns it as seen in the pod.
pub fn move_into(
    host: &HostNetdev,
    netns: &Path,
    ifname: &str,
    mac: Option<&str>,
    mtu: Option<u32>,
) -> Result<LinkInfo, LinkError> {
    links::set_down(None, &host.name)?;
    links::set_name(None, &host.name, &host.temp_name)?;
    links::move_to_netns(None, &host.temp_name, netns)?;
    links::set_name(Some(netns), &host.temp_name, ifname)?;
    if let Some(mac) = mac {
        links::set_mac(Some(netns), ifname, mac)?;
    }
    if let Some(mtu) = mtu {
        links::set_mtu(Some(netns), ifname, mtu)?;
    }
    links::set_up(Some(netns), ifname)?;
    links::link(Some(netns), ifname)?.ok_or_else(|| LinkError::NotFound(ifname.to_string()))
}

/// Brings the netdev back from the pod (when `netns` still exists and holds it as `ifname` or
/// under its temporary name) and restores its host name, MAC, MTU and up state. `pod_mac` helps
/// find a VF the kernel returned by itself when its namespace died (named `ifname` or `dev<N>`).
/// A netdev found nowhere is not an error: there is nothing left to restore.
pub fn restore(
    host: &HostNetdev,
    netns: Option<&Path>,
    ifname: &str,
    pod_mac: Option<&str>,
) -> Result<(), LinkError> {
    if let Some(ns) = netns.filter(|ns| netns::exists(ns)) {
        for name in [ifname, host.temp_name.as_str()] {
            if links::link(Some(ns), name)?.is_none() {
                continue;
            }
            links::set_down(Some(ns), name)?;
            if name != host.temp_name {
                links::set_name(Some(ns), name, &host.temp_name)?;
            }
            links::move_to_netns(Some(ns), &host.temp_name, Path::new(netns::THREAD_NETNS))?;
            break;
        }
    }
    let Some(current) = find_in_host(host, ifname, pod_mac)? else {
        return Ok(());
    };
    links::set_down(None, &current)?;
    if current != host.name {
        links::set_name(None, &current, &host.name)?;
    }
    if let Some(mac) = &host.mac {
        links::set_mac(None, &host.name, mac)?;
    }
    if let Some(mtu) = host.mtu {
        links::set_mtu(None, &host.name, mtu)?;
    }
    if host.up {
        links::set_up(None, &host.name)?;
    }
    Ok(())
}

/// The name the netdev has in the host now, if it is there.
fn find_in_host(
    host: &HostNetdev,
    ifname: &str,
    pod_mac: Option<&str>,
) -> Result<Option<String>, LinkError> {
    for name in [&host.name, &host.temp_name] {
        if links::link(None, name)?.is_some() {
            return Ok(Some(name.clone()));
        }
    }
    let Some(pod_mac) = pod_mac else {
        return Ok(None);
    };
    Ok(links::links(None)?
        .into_iter()
        .find(|l| {
            (l.name == ifname || l.name.starts_with("dev")) && l.mac.as_deref() == Some(pod_mac)
        })
        .map(|l| l.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_stable_and_valid() {
        let a = temp_name("c1", "net1");
        assert_eq!(a, temp_name("c1", "net1"));
        assert_ne!(a, temp_name("c1", "net2"));
        assert_ne!(temp_name("c1n", "et1"), temp_name("c1", "net1"));
        assert_eq!(a.len(), 15);
        assert!(plexus_cni::env::validate_ifname(&a).is_ok());
    }
}
