//! CHECK: this container and interface still hold their addresses.

use std::net::IpAddr;

use plexus_cni::{CniError, CniResult, ErrorCode};

use crate::config::IpamConfig;
use crate::store::Store;

/// CHECK: this container and interface still hold an address in every range (and the ones
/// `prev` lists, when given).
pub async fn check(
    store: &impl Store,
    config: &IpamConfig,
    container_id: &str,
    ifname: &str,
    prev: Option<&CniResult>,
) -> Result<(), CniError> {
    let usage = store.usage().await?;
    let mine: Vec<IpAddr> = usage
        .iter()
        .filter(|u| u.network == config.network_name)
        .flat_map(|u| &u.allocations)
        .filter(|a| a.owner.container_id == container_id && a.owner.ifname == ifname)
        .map(|a| a.address)
        .collect();
    for range in &config.ranges {
        if !mine.iter().any(|a| range.cidr().contains(a)) {
            return Err(CniError::new(
                ErrorCode::UnknownContainer,
                format!(
                    "container {container_id} ({ifname}) holds no address in {}",
                    range.cidr()
                ),
            ));
        }
    }
    if let Some(prev) = prev {
        for ip in &prev.ips {
            let in_ours = config
                .ranges
                .iter()
                .any(|r| r.cidr().contains(&ip.address.addr()));
            if in_ours && !mine.contains(&ip.address.addr()) {
                return Err(CniError::new(
                    ErrorCode::UnknownContainer,
                    format!(
                        "{} of container {container_id} ({ifname}) is no longer allocated to it",
                        ip.address.addr()
                    ),
                ));
            }
        }
    }
    Ok(())
}
