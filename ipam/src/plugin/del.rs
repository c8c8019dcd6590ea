//! DEL: every range is attempted; the failures are reported together.

use plexus_cni::CniError;
use tracing::info;

use crate::config::IpamConfig;
use crate::store::{Store, StoreError};

/// DEL: releases this container's and interface's addresses in every range.
pub async fn del(
    store: &impl Store,
    config: &IpamConfig,
    container_id: &str,
    ifname: &str,
) -> Result<(), CniError> {
    let mut failures: Vec<(String, StoreError)> = Vec::new();
    for pool in config.pools() {
        match store.release(&pool, container_id, ifname).await {
            Ok(released) => {
                for a in released {
                    info!("released {a} of {container_id} ({ifname})");
                }
            }
            Err(e) => failures.push((pool.range.cidr().to_string(), e)),
        }
    }
    match failures.len() {
        0 => Ok(()),
        _ => {
            let code = failures[0].1.code();
            let msg = failures
                .iter()
                .map(|(cidr, e)| format!("releasing in {cidr}: {e}"))
                .collect::<Vec<_>>()
                .join("; ");
            Err(CniError::new(code, msg))
        }
    }
}
