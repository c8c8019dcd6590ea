//! The measuring half of `cargo xtask bench`'s IPAM benchmark, built in release mode so that
//! the figures are those of optimised code (xtask itself runs unoptimised). It is a plain
//! program: one JSON argument says what to measure, and it prints one JSON line of samples.
//!
//! ```text
//! store_bench '{"backend":"etcd","endpoints":["http://127.0.0.1:2379"],"prefix":"/bench/1",
//!               "scenario":"concurrent","allocators":8,"adds":50,"range":"10.0.0.0/16"}'
//! store_bench '{"backend":"local","dir":"/tmp/x","scenario":"fill","range":"fd00::/64",
//!               "prefill":10000,"adds":100}'
//! ```
//!
//! * `concurrent`: `allocators` OS threads, each with its own current-thread Tokio runtime and
//!   its own store (its own etcd client or API connection, and for Kubernetes its own node
//!   name and hint directory), as separate nodes would have. Each first makes `warmup` untimed
//!   ADDs (its connection is then made, as a long-lived node agent's would be); then they start
//!   together and each makes `adds` ADDs of distinct pods. Prints every timed ADD's latency and
//!   the wall time of the timed part.
//! * `fill`: `prefill` allocations are written straight into the store (not through ADDs,
//!   which would take minutes), then `adds` ADD + DEL cycles of one more pod are made one after
//!   the other; the ADDs' latencies are printed. Backends `etcd` and `local`.
//!
//! Backends: `etcd` (`endpoints`, `prefix`), `local` (`dir`), `kubernetes` (`kubeconfig`,
//! `namespace`, `hint_dir`; `network` names the pool's network for all backends).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use plexus_ipam::backends::etcd::keys::PoolKeys;
use plexus_ipam::backends::etcd::EtcdStore;
use plexus_ipam::backends::kubernetes::{KubeOptions, KubeStore};
use plexus_ipam::backends::local::LocalStore;
use plexus_ipam::range::IpRange;
use plexus_ipam::store::{Owner, Pool, Store, StoreError};
use serde_json::{json, Value};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Every request's deadline.
const TIMEOUT: Duration = Duration::from_secs(30);

fn main() {
    let result = std::env::args()
        .nth(1)
        .ok_or_else(|| Error::from("usage: store_bench '<JSON spec>'"))
        .and_then(|arg| Ok(serde_json::from_str::<Value>(&arg)?))
        .and_then(|spec| run(&spec));
    match result {
        Ok(out) => println!("{out}"),
        Err(e) => {
            eprintln!("store_bench: {e}");
            std::process::exit(1);
        }
    }
}

fn run(spec: &Value) -> Result<Value, Error> {
    let range = IpRange::parse(text(spec, "range")?, None, None, &[], None)?;
    let pool = Pool {
        network: spec["network"].as_str().unwrap_or_default().to_string(),
        range,
        overlapping: true,
    };
    let adds = spec["adds"].as_u64().ok_or("no adds")? as usize;
    match text(spec, "scenario")? {
        "concurrent" => {
            let allocators = spec["allocators"].as_u64().ok_or("no allocators")? as usize;
            concurrent(spec, &pool, allocators, adds)
        }
        "fill" => {
            let prefill = spec["prefill"].as_u64().ok_or("no prefill")? as usize;
            fill(spec, &pool, prefill, adds)
        }
        other => Err(format!("unknown scenario {other}").into()),
    }
}

fn text<'a>(spec: &'a Value, key: &str) -> Result<&'a str, Error> {
    spec[key]
        .as_str()
        .ok_or_else(|| format!("no {key} in the spec").into())
}

/// One of the backends, connected.
enum AnyStore {
    Etcd(EtcdStore),
    Local(LocalStore),
    Kube(Box<KubeStore>),
}

impl AnyStore {
    async fn connect(spec: &Value, node: &str) -> Result<AnyStore, Error> {
        Ok(match text(spec, "backend")? {
            "etcd" => {
                let endpoints: Vec<String> = serde_json::from_value(spec["endpoints"].clone())?;
                AnyStore::Etcd(
                    EtcdStore::connect(&endpoints, text(spec, "prefix")?, TIMEOUT).await?,
                )
            }
            "local" => AnyStore::Local(LocalStore::new(text(spec, "dir")?)),
            "kubernetes" => {
                let mut options = KubeOptions::new(node);
                options.hint_dir = PathBuf::from(text(spec, "hint_dir")?).join(node);
                let store = KubeStore::from_kubeconfig(
                    &PathBuf::from(text(spec, "kubeconfig")?),
                    spec["namespace"].as_str().unwrap_or_default(),
                    TIMEOUT,
                    options,
                )
                .await?;
                AnyStore::Kube(Box::new(store))
            }
            other => return Err(format!("unknown backend {other}").into()),
        })
    }

    async fn allocate(&self, pool: &Pool, owner: &Owner) -> Result<IpAddr, StoreError> {
        match self {
            AnyStore::Etcd(s) => s.allocate(pool, owner).await,
            AnyStore::Local(s) => s.allocate(pool, owner).await,
            AnyStore::Kube(s) => s.allocate(pool, owner).await,
        }
    }

    async fn release(&self, pool: &Pool, owner: &Owner) -> Result<Vec<IpAddr>, StoreError> {
        let (id, ifname) = (&owner.container_id, &owner.ifname);
        match self {
            AnyStore::Etcd(s) => s.release(pool, id, ifname).await,
            AnyStore::Local(s) => s.release(pool, id, ifname).await,
            AnyStore::Kube(s) => s.release(pool, id, ifname).await,
        }
    }
}

fn owner(node: &str, name: &str) -> Owner {
    Owner {
        pod_namespace: "bench".into(),
        pod_name: name.into(),
        pod_uid: format!("uid-{name}"),
        container_id: format!("c-{name}"),
        ifname: "net1".into(),
        node: node.into(),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `allocators` threads, each its own node with its own store: `warmup` untimed ADDs each
/// (connections made, a Kubernetes node's first block claimed), then together `adds` ADDs each.
fn concurrent(spec: &Value, pool: &Pool, allocators: usize, adds: usize) -> Result<Value, Error> {
    let warmup = spec["warmup"].as_u64().unwrap_or(0);
    let barrier = Barrier::new(allocators + 1);
    let (latencies, wall) = std::thread::scope(|scope| -> Result<_, Error> {
        let workers: Vec<_> = (0..allocators)
            .map(|n| {
                let barrier = &barrier;
                scope.spawn(move || -> Result<Vec<f64>, Error> {
                    let node = format!("node{n}");
                    let rt = runtime()?;
                    let store = rt.block_on(async {
                        let store = AnyStore::connect(spec, &node).await?;
                        for i in 0..warmup {
                            let owner = owner(&node, &format!("{node}-warmup-{i}"));
                            store.allocate(pool, &owner).await?;
                        }
                        Ok::<_, Error>(store)
                    });
                    // Everyone reaches the barrier, even after an error, or the others hang.
                    barrier.wait();
                    let store = store?;
                    let mut latencies = Vec::with_capacity(adds);
                    for i in 0..adds {
                        let owner = owner(&node, &format!("{node}-{i}"));
                        let started = Instant::now();
                        rt.block_on(store.allocate(pool, &owner))?;
                        latencies.push(ms(started.elapsed()));
                    }
                    Ok(latencies)
                })
            })
            .collect();
        barrier.wait();
        let started = Instant::now();
        let mut latencies = Vec::new();
        for worker in workers {
            latencies.extend(worker.join().map_err(|_| "an allocator panicked")??);
        }
        Ok((latencies, started.elapsed()))
    })?;
    Ok(json!({"latencies_ms": latencies, "wall_s": wall.as_secs_f64()}))
}

/// `prefill` allocations written directly, then `adds` ADD + DEL cycles; the ADDs' latencies.
fn fill(spec: &Value, pool: &Pool, prefill: usize, adds: usize) -> Result<Value, Error> {
    let rt = runtime()?;
    let store = rt.block_on(AnyStore::connect(spec, "node0"))?;
    let started = Instant::now();
    match &store {
        AnyStore::Etcd(_) => rt.block_on(prefill_etcd(spec, pool, prefill))?,
        AnyStore::Local(local) => prefill_local(local, pool, prefill)?,
        AnyStore::Kube(_) => return Err("fill is measured on etcd and local only".into()),
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
        rt.block_on(store.release(pool, &owner))?;
    }
    Ok(json!({"latencies_ms": latencies, "prefill_s": prefill_s}))
}

/// The first `count` usable addresses of the pool, each with its owner.
fn prefilled(pool: &Pool, count: usize) -> impl Iterator<Item = (IpAddr, Owner)> + '_ {
    let first = pool.range.bounds().0;
    (0..count).map(move |i| {
        (
            pool.range.address(first + i as u128),
            owner("node0", &format!("pre-{i}")),
        )
    })
}

/// Writes the allocation keys and index keys of `count` allocations, 40 to a transaction.
async fn prefill_etcd(spec: &Value, pool: &Pool, count: usize) -> Result<(), Error> {
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
fn prefill_local(store: &LocalStore, pool: &Pool, count: usize) -> Result<(), Error> {
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
