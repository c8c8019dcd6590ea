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
//! * `raw`: the API server's or etcd's own ceiling for the same round trips, without Plexus:
//!   the same threads, runtimes and client setup, and per "allocation" exactly the requests of
//!   a common ADD on an object of the same size. Kubernetes: each allocator GETs its own
//!   `IPAMBlock` and replaces it on the `resourceVersion` read with one more allocation record
//!   (emptied after 64, a /26's worth, so the object size follows a real block's). etcd: a
//!   read-only transaction reading one key, then a transaction that compares its create
//!   revision with 0 and puts the same three keys (record, container index, pod index) of the
//!   same sizes as the store's. A lost write (none expected: nothing is shared) is counted and
//!   retried.
//! * `fill`: `prefill` allocations are written straight into the store (not through ADDs,
//!   which would take minutes), then `adds` ADD + DEL cycles of one more pod are made one after
//!   the other; the ADDs' latencies are printed. Backends `etcd` and `local`.
//!
//! `tag`, when given, goes into the pods' names (and the raw etcd keys), so that a second
//! measurement in the same pool makes new ADDs rather than repeated ones.
//!
//! `concurrent` and `raw` also print what the server counted during the timed part, from its
//! `/metrics`: `requests` (Kubernetes: `apiserver_request_total` of `ipamblocks` and `leases`,
//! read with the admin kubeconfig `metrics_kubeconfig`; etcd: `grpc_server_handled_total` of
//! `Range` and `Txn`) and, on Kubernetes, `conflicts` (those answered 409); `raw` prints its own
//! count of lost writes as `lost`, and both the CPU time the process (the clients, not the
//! server) used in the timed part as `cpu_s`.
//!
//! Backends: `etcd` (`endpoints`, `prefix`), `local` (`dir`), `kubernetes` (`kubeconfig`,
//! `namespace`, `hint_dir`; `network` names the pool's network for all backends).

mod fill;
mod meter;
mod raw;

use std::path::PathBuf;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use plexus_ipam::backends::etcd::EtcdStore;
use plexus_ipam::backends::kubernetes::KubeOptions;
use plexus_ipam::backends::kubernetes::KubeStore;
use plexus_ipam::backends::local::LocalStore;
use plexus_ipam::backends::AnyStore;
use plexus_ipam::range::IpRange;
use plexus_ipam::store::{Owner, Pool, Store};
use serde_json::{json, Value};

use fill::fill;
use meter::Meter;
use raw::{RawEtcd, RawKube};

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
        scenario @ ("concurrent" | "raw") => {
            let allocators = spec["allocators"].as_u64().ok_or("no allocators")? as usize;
            concurrent(spec, &pool, allocators, adds, scenario == "raw")
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

/// The backend the spec names, connected as node `node`.
async fn connect(spec: &Value, node: &str) -> Result<AnyStore, Error> {
    Ok(match text(spec, "backend")? {
        "etcd" => {
            let endpoints: Vec<String> = serde_json::from_value(spec["endpoints"].clone())?;
            AnyStore::Etcd(EtcdStore::connect(&endpoints, text(spec, "prefix")?, TIMEOUT).await?)
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
            AnyStore::Kubernetes(Box::new(store))
        }
        other => return Err(format!("unknown backend {other}").into()),
    })
}

fn owner(node: &str, name: &str) -> Owner {
    Owner {
        pod_namespace: "bench".into(),
        pod_name: name.into(),
        pod_uid: format!("uid-{name}"),
        container_id: format!("c-{name}"),
        ifname: "net1".into(),
        node: node.into(),
        claim: String::new(),
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

/// `allocators` threads, each its own node with its own store (or, with `raw`, its own raw
/// client): `warmup` untimed ADDs each (connections made, a Kubernetes node's first block
/// claimed), then together `adds` ADDs each, with the server's request counts read before and
/// after.
fn concurrent(
    spec: &Value,
    pool: &Pool,
    allocators: usize,
    adds: usize,
    raw: bool,
) -> Result<Value, Error> {
    let warmup = spec["warmup"].as_u64().unwrap_or(0) as usize;
    let tag = spec["tag"].as_str().unwrap_or_default();
    let rt = runtime()?;
    let meter = rt.block_on(Meter::connect(spec))?;
    // Everyone connected and warmed up; then the start, once the counters are read.
    let ready = Barrier::new(allocators + 1);
    let go = Barrier::new(allocators + 1);
    let (outcomes, wall, before, after, cpu) = std::thread::scope(|scope| -> Result<_, Error> {
        let workers: Vec<_> = (0..allocators)
            .map(|n| {
                let (ready, go) = (&ready, &go);
                scope.spawn(move || -> Result<(Vec<f64>, u64), Error> {
                    let node = format!("node{n}");
                    let rt = runtime()?;
                    let allocator = rt.block_on(async {
                        let mut allocator = Allocator::connect(spec, pool, n, raw).await?;
                        for i in 0..warmup {
                            allocator
                                .once(pool, &owner(&node, &format!("{node}{tag}-warmup-{i}")))
                                .await?;
                        }
                        Ok::<_, Error>(allocator)
                    });
                    // Everyone reaches the barriers, even after an error, or the others hang.
                    ready.wait();
                    go.wait();
                    let mut allocator = allocator?;
                    let mut latencies = Vec::with_capacity(adds);
                    let mut lost = 0;
                    for i in 0..adds {
                        let owner = owner(&node, &format!("{node}{tag}-{i}"));
                        let started = Instant::now();
                        lost += rt.block_on(allocator.once(pool, &owner))?;
                        latencies.push(ms(started.elapsed()));
                    }
                    Ok((latencies, lost))
                })
            })
            .collect();
        ready.wait();
        let before = rt.block_on(meter.read());
        let cpu_before = cpu_s()?;
        go.wait();
        let started = Instant::now();
        let outcomes: Vec<_> = workers
            .into_iter()
            .map(|w| w.join().map_err(|_| Error::from("an allocator panicked")))
            .collect();
        let wall = started.elapsed();
        let cpu = cpu_s()? - cpu_before;
        let after = rt.block_on(meter.read());
        Ok((outcomes, wall, before, after, cpu))
    })?;
    let mut latencies = Vec::new();
    let mut lost = 0;
    for outcome in outcomes {
        let (samples, n) = outcome??;
        latencies.extend(samples);
        lost += n;
    }
    let (before, after) = (before?, after?);
    Ok(json!({
        "latencies_ms": latencies,
        "wall_s": wall.as_secs_f64(),
        "requests": after.requests - before.requests,
        "conflicts": after.conflicts - before.conflicts,
        "lost": lost,
        "cpu_s": cpu,
    }))
}

/// The CPU time (user and system) this process used so far, in seconds.
fn cpu_s() -> Result<f64, Error> {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Ok(secs(usage.user_time()) + secs(usage.system_time()))
}

/// One concurrent allocator: through a store, or the same round trips made raw.
enum Allocator {
    Store(AnyStore),
    Kube(RawKube),
    Etcd(RawEtcd),
}

impl Allocator {
    /// Allocator `n`, connected (and its raw object made).
    async fn connect(spec: &Value, pool: &Pool, n: usize, raw: bool) -> Result<Allocator, Error> {
        let node = format!("node{n}");
        if !raw {
            return Ok(Allocator::Store(connect(spec, &node).await?));
        }
        Ok(match text(spec, "backend")? {
            "kubernetes" => Allocator::Kube(RawKube::connect(spec, pool, n).await?),
            "etcd" => Allocator::Etcd(RawEtcd::connect(spec, pool, n).await?),
            other => return Err(format!("no raw scenario on {other}").into()),
        })
    }

    /// One ADD, or its raw round trips; the writes lost to others.
    async fn once(&mut self, pool: &Pool, owner: &Owner) -> Result<u64, Error> {
        match self {
            Allocator::Store(store) => Ok(store.allocate(pool, owner).await.map(|_| 0)?),
            Allocator::Kube(raw) => raw.once(owner).await,
            Allocator::Etcd(raw) => raw.once(owner).await,
        }
    }
}
