//! ADD: one address from each range, or none at all (the earlier ranges' addresses are
//! released again when a later range fails).

use plexus_cni::result::IpConfig;
use plexus_cni::{CniError, CniResult};
use tracing::{info, warn};

use crate::config::IpamConfig;
use crate::store::{Owner, Store};

/// ADD: one address from each range, or none at all.
pub async fn add(
    store: &impl Store,
    config: &IpamConfig,
    owner: &Owner,
) -> Result<CniResult, CniError> {
    let pools = config.pools();
    let mut result = CniResult::default();
    for (i, pool) in pools.iter().enumerate() {
        match store.allocate(pool, owner).await {
            Ok(address) => {
                info!(
                    "allocated {address} in {} to {} ({})",
                    pool.range.cidr(),
                    owner.display(),
                    owner.ifname
                );
                let gateway = config.gateway.filter(|g| g.is_ipv4() == address.is_ipv4());
                result.ips.push(IpConfig {
                    address: ipnet::IpNet::new(address, pool.range.prefix_len())
                        .expect("prefix of a valid range"),
                    gateway,
                    interface: None,
                });
            }
            Err(e) => {
                warn!("allocation in {} failed: {e}", pool.range.cidr());
                for earlier in &pools[..i] {
                    if let Err(undo) = store
                        .release(earlier, &owner.container_id, &owner.ifname)
                        .await
                    {
                        warn!(
                            "could not release the address taken in {}: {undo}",
                            earlier.range.cidr()
                        );
                    }
                }
                let mut err: CniError = e.into();
                if pools.len() > 1 {
                    err.msg = format!("range {} (#{}): {}", pool.range.cidr(), i + 1, err.msg);
                }
                return Err(err);
            }
        }
    }
    result.ips.extend(config.addresses.iter().cloned());
    result.routes = config.routes.clone();
    result.dns = config.dns.clone();
    Ok(result)
}
