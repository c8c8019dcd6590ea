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

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, ConnectOptions, KvClient, Txn, TxnOp};
use kube::api::{Api, PostParams};
use plexus_crds::{IpamBlock, IpamBlockSpec};
use plexus_ipam::backends::etcd::keys::PoolKeys;
use plexus_ipam::backends::etcd::EtcdStore;
use plexus_ipam::backends::kubernetes::client::{ApiError, KubeClient};
use plexus_ipam::backends::kubernetes::layout::{Layout, NETWORK_LABEL};
use plexus_ipam::backends::kubernetes::{
    KubeOptions, KubeStore, DEFAULT_BLOCK_PREFIX_V4, DEFAULT_BLOCK_PREFIX_V6, DEFAULT_NAMESPACE,
};
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
            return Ok(Allocator::Store(AnyStore::connect(spec, &node).await?));
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

/// Addresses a raw allocator writes before it starts over (a /26 block's worth).
const RAW_BLOCK: u128 = 64;

/// A common Kubernetes ADD's round trips without Plexus: GET its own block, replace it on the
/// `resourceVersion` read with one record more.
struct RawKube {
    client: KubeClient,
    api: Api<IpamBlock>,
    name: String,
    range: plexus_ipam::range::IpRange,
    /// The first offset of this allocator's addresses.
    base: u128,
    done: u128,
}

impl RawKube {
    async fn connect(spec: &Value, pool: &Pool, n: usize) -> Result<RawKube, Error> {
        let client =
            KubeClient::from_kubeconfig(&PathBuf::from(text(spec, "kubeconfig")?), TIMEOUT).await?;
        let namespace = match spec["namespace"].as_str() {
            None | Some("") => DEFAULT_NAMESPACE,
            Some(ns) => ns,
        };
        let api = Api::namespaced(client.client().clone(), namespace);
        let layout = Layout::new(pool, DEFAULT_BLOCK_PREFIX_V4, DEFAULT_BLOCK_PREFIX_V6)?;
        let base = pool.range.bounds().0 + RAW_BLOCK * n as u128;
        let cidr = ipnet::IpNet::new(pool.range.address(base), layout.block_prefix)?.trunc();
        let name = format!("raw-{}", layout.block_name(cidr));
        let mut object = IpamBlock::new(
            &name,
            IpamBlockSpec {
                network: pool.network.clone(),
                cidr: cidr.to_string(),
                range: String::new(),
                allocations: Default::default(),
            },
        );
        object.metadata.labels = Some([(NETWORK_LABEL.to_string(), layout.network_label())].into());
        let params = PostParams::default();
        match client
            .call("create", name.clone(), api.create(&params, &object))
            .await
        {
            Ok(_) | Err(ApiError::AlreadyExists) => {}
            Err(e) => return Err(format!("create {name}: {e:?}").into()),
        }
        Ok(RawKube {
            client,
            api,
            name,
            range: pool.range.clone(),
            base,
            done: 0,
        })
    }

    async fn once(&mut self, owner: &Owner) -> Result<u64, Error> {
        let name = &self.name;
        let ip = self
            .range
            .address(self.base + self.done % RAW_BLOCK)
            .to_string();
        self.done += 1;
        let mut lost = 0;
        loop {
            let mut object = self
                .client
                .call("get", name.as_str(), self.api.get(name))
                .await
                .map_err(|e| format!("get {name}: {e:?}"))?;
            let allocations = &mut object.spec.allocations;
            if allocations.len() as u128 >= RAW_BLOCK {
                allocations.clear();
            }
            allocations.insert(ip.clone(), record(owner));
            let params = PostParams {
                field_manager: Some("plexus-ipam".into()),
                ..PostParams::default()
            };
            match self
                .client
                .call(
                    "update",
                    name.as_str(),
                    self.api.replace(name, &params, &object),
                )
                .await
            {
                Ok(_) => return Ok(lost),
                Err(ApiError::Conflict) => lost += 1,
                Err(e) => return Err(format!("update {name}: {e:?}").into()),
            }
        }
    }
}

/// The record of an allocation in a block, as the store writes it.
fn record(owner: &Owner) -> plexus_crds::BlockAllocation {
    plexus_crds::BlockAllocation {
        pod_namespace: owner.pod_namespace.clone(),
        pod_name: owner.pod_name.clone(),
        pod_uid: owner.pod_uid.clone(),
        container_id: owner.container_id.clone(),
        ifname: owner.ifname.clone(),
        node: owner.node.clone(),
        ipam_claim: owner.claim.clone(),
    }
}

/// A common etcd ADD's round trips without Plexus: a read-only transaction reading one key,
/// then a transaction taking it (create revision 0) with its two index keys.
struct RawEtcd {
    kv: KvClient,
    keys: PoolKeys,
    range: plexus_ipam::range::IpRange,
    base: u128,
    done: u128,
}

impl RawEtcd {
    async fn connect(spec: &Value, pool: &Pool, n: usize) -> Result<RawEtcd, Error> {
        let endpoints: Vec<String> = serde_json::from_value(spec["endpoints"].clone())?;
        let options = ConnectOptions::new()
            .with_connect_timeout(TIMEOUT)
            .with_timeout(TIMEOUT);
        let client = etcd_client::Client::connect(&endpoints, Some(options)).await?;
        let tag = spec["tag"].as_str().unwrap_or_default();
        let prefix = format!("{}/raw{tag}", text(spec, "prefix")?);
        Ok(RawEtcd {
            kv: client.kv_client(),
            keys: PoolKeys::new(&prefix, pool),
            range: pool.range.clone(),
            // Far enough apart that no two allocators write one key.
            base: pool.range.bounds().0 + 1024 * n as u128,
            done: 0,
        })
    }

    async fn once(&mut self, owner: &Owner) -> Result<u64, Error> {
        let mut lost = 0;
        loop {
            let ip = self.range.address(self.base + self.done);
            self.done += 1;
            let ip_key = self.keys.ip(ip);
            let read = Txn::new().and_then([TxnOp::get(ip_key.clone(), None)]);
            self.kv.txn(read).await?;
            let mut value = serde_json::to_value(owner)?;
            value["cidr"] = json!(self.keys.cidr());
            let owner_json = serde_json::to_string(owner)?;
            let mut ops = vec![
                TxnOp::put(ip_key.clone(), value.to_string(), None),
                TxnOp::put(self.keys.owner_index(owner, ip), owner_json.clone(), None),
            ];
            if let Some(pod_key) = self.keys.pod_index(owner, ip) {
                ops.push(TxnOp::put(pod_key, owner_json, None));
            }
            let take = Txn::new()
                .when([Compare::create_revision(ip_key, CompareOp::Equal, 0)])
                .and_then(ops);
            if self.kv.txn(take).await?.succeeded() {
                return Ok(lost);
            }
            lost += 1;
        }
    }
}

/// What the server counted so far.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    /// Requests (Kubernetes: on IPAMBlocks and Leases; etcd: Range and Txn).
    requests: f64,
    /// Of those, answered 409 Conflict (Kubernetes only).
    conflicts: f64,
}

/// Reads the server's request counters from its `/metrics`.
enum Meter {
    /// The API server, with an admin client.
    Kube(KubeClient),
    /// etcd's client port, `host:port` (plain HTTP).
    Etcd(String),
    /// Nothing to read.
    None,
}

impl Meter {
    async fn connect(spec: &Value) -> Result<Meter, Error> {
        Ok(
            match (
                spec["backend"].as_str(),
                spec["metrics_kubeconfig"].as_str(),
            ) {
                (Some("kubernetes"), Some(path)) => {
                    Meter::Kube(KubeClient::from_kubeconfig(&PathBuf::from(path), TIMEOUT).await?)
                }
                (Some("etcd"), _) => {
                    let endpoints: Vec<String> = serde_json::from_value(spec["endpoints"].clone())?;
                    let first = endpoints.first().ok_or("no etcd endpoint")?;
                    Meter::Etcd(first.trim_start_matches("http://").to_string())
                }
                _ => Meter::None,
            },
        )
    }

    async fn read(&self) -> Result<Counts, Error> {
        match self {
            Meter::Kube(client) => {
                let request = http::Request::get("/metrics").body(Vec::new())?;
                let text = client.client().request_text(request).await?;
                Ok(kube_counts(&text))
            }
            Meter::Etcd(address) => {
                let mut stream = TcpStream::connect(address)?;
                stream.set_read_timeout(Some(TIMEOUT))?;
                write!(stream, "GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n")?;
                let mut text = String::new();
                stream.read_to_string(&mut text)?;
                Ok(etcd_counts(&text))
            }
            Meter::None => Ok(Counts::default()),
        }
    }
}

/// The value of label `name` in a Prometheus sample line.
fn label<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!("{name}=\""))? + name.len() + 2;
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

/// The value of a Prometheus sample line.
fn sample(line: &str) -> f64 {
    line.rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// `apiserver_request_total` of IPAMBlocks and Leases: all, and those answered 409.
fn kube_counts(metrics: &str) -> Counts {
    let mut counts = Counts::default();
    for line in metrics.lines() {
        if !line.starts_with("apiserver_request_total{") {
            continue;
        }
        if !matches!(label(line, "resource"), Some("ipamblocks" | "leases")) {
            continue;
        }
        let value = sample(line);
        counts.requests += value;
        if label(line, "code") == Some("409") {
            counts.conflicts += value;
        }
    }
    counts
}

/// `grpc_server_handled_total` of `Range` and `Txn`.
fn etcd_counts(metrics: &str) -> Counts {
    let requests = metrics
        .lines()
        .filter(|l| l.starts_with("grpc_server_handled_total{"))
        .filter(|l| matches!(label(l, "grpc_method"), Some("Range" | "Txn")))
        .map(sample)
        .sum();
    Counts {
        requests,
        conflicts: 0.0,
    }
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
