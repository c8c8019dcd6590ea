//! The `fill` scenario: ADDs into a pool that already holds many allocations.

use std::net::IpAddr;
use std::time::Instant;

use plexus_ipam::backends::etcd::keys::PoolKeys;
use plexus_ipam::backends::local::LocalStore;
use plexus_ipam::backends::AnyStore;
use plexus_ipam::store::{Owner, Pool, Store};
use serde_json::{json, Value};

use super::{connect, ms, owner, runtime, text, Error};

/// `prefill` allocations written directly, then `adds` ADD + DEL cycles; the ADDs' latencies.
pub(crate) fn fill(spec: &Value, pool: &Pool, prefill: usize, adds: usize) -> Result<Value, Error> {
    let rt = runtime()?;
    let store = rt.block_on(connect(spec, "node0"))?;
    let started = Instant::now();
    match &store {
        AnyStore::Etcd(_) => rt.block_on(prefill_etcd(spec, pool, prefill))?,
        AnyStore::Local(local) => prefill_local(local, pool, prefill)?,
        AnyStore::Kubernetes(_) => return Err("fill is measured on etcd and local only".into()),
    }
    let prefill_s = started.elapsed().as_secs_f64();
    let mut latencies = Vec::with_capacity(adds);
    for i in 0..adds {
        let owner = owner("node0", &format!("probe-{i}"));
        let started = Instant::now();
        let address = rt.block_on(store.allocate(pool, &owner))?;
        latencies.push(ms(started.elapsed()));
        let expected = pool.range.address(pool.range.bounds().0 + prefill as u128);
        if address != expected {
            return Err(format!("ADD got {address}, not the lowest free {expected}").into());
        }
        rt.block_on(store.release(pool, &owner.container_id, &owner.ifname))?;
    }
    Ok(json!({"latencies_ms": latencies, "prefill_s": prefill_s}))
}

/// The first `count` usable addresses of the pool, each with its owner.
pub(crate) fn prefilled(pool: &Pool, count: usize) -> impl Iterator<Item = (IpAddr, Owner)> + '_ {
    let first = pool.range.bounds().0;
    (0..count).map(move |i| {
        (
            pool.range.address(first + i as u128),
            owner("node0", &format!("pre-{i}")),
        )
    })
}

/// Writes the allocation keys and index keys of `count` allocations, 40 to a transaction.
pub(crate) async fn prefill_etcd(spec: &Value, pool: &Pool, count: usize) -> Result<(), Error> {
    let endpoints: Vec<String> = serde_json::from_value(spec["endpoints"].clone())?;
    let mut client = etcd_client::Client::connect(&endpoints, None).await?;
    let keys = PoolKeys::new(text(spec, "prefix")?, pool);
    let all: Vec<_> = prefilled(pool, count).collect();
    for chunk in all.chunks(40) {
        let mut ops = Vec::new();
        for (address, owner) in chunk {
            let mut record = serde_json::to_value(owner)?;
            record["cidr"] = json!(keys.cidr());
            ops.push(etcd_client::TxnOp::put(
                keys.ip(*address),
                record.to_string(),
                None,
            ));
            let owner_json = serde_json::to_string(owner)?;
            ops.push(etcd_client::TxnOp::put(
                keys.owner_index(owner, *address),
                owner_json.clone(),
                None,
            ));
            if let Some(pod_key) = keys.pod_index(owner, *address) {
                ops.push(etcd_client::TxnOp::put(pod_key, owner_json, None));
            }
        }
        client.txn(etcd_client::Txn::new().and_then(ops)).await?;
    }
    Ok(())
}

/// Writes the local store's state file of the pool's network with `count` allocations.
pub(crate) fn prefill_local(store: &LocalStore, pool: &Pool, count: usize) -> Result<(), Error> {
    let cidr = pool.range.cidr().to_string();
    let allocations: serde_json::Map<String, Value> = prefilled(pool, count)
        .map(|(address, owner)| (address.to_string(), json!({"cidr": cidr, "owner": owner})))
        .collect();
    let state = json!({"version": 1, "network": pool.network, "allocations": allocations});
    let path = store.state_path(&pool.network);
    std::fs::create_dir_all(store.dir())?;
    std::fs::write(&path, state.to_string())?;
    Ok(())
}
