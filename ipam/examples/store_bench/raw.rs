//! The `raw` scenario's clients: the round trips of a common ADD, made without Plexus.

use std::path::PathBuf;

use etcd_client::{Compare, CompareOp, ConnectOptions, KvClient, Txn, TxnOp};
use kube::api::{Api, PostParams};
use plexus_crds::{IpamBlock, IpamBlockSpec};
use plexus_ipam::backends::etcd::keys::PoolKeys;
use plexus_ipam::backends::kubernetes::client::{ApiError, KubeClient};
use plexus_ipam::backends::kubernetes::layout::{Layout, NETWORK_LABEL};
use plexus_ipam::backends::kubernetes::{
    DEFAULT_BLOCK_PREFIX_V4, DEFAULT_BLOCK_PREFIX_V6, DEFAULT_NAMESPACE,
};
use plexus_ipam::store::{Owner, Pool};
use serde_json::{json, Value};

use super::{text, Error, TIMEOUT};

/// Addresses a raw allocator writes before it starts over (a /26 block's worth).
pub(crate) const RAW_BLOCK: u128 = 64;

/// A common Kubernetes ADD's round trips without Plexus: GET its own block, replace it on the
/// `resourceVersion` read with one record more.
pub(crate) struct RawKube {
    client: KubeClient,
    api: Api<IpamBlock>,
    name: String,
    range: plexus_ipam::range::IpRange,
    /// The first offset of this allocator's addresses.
    base: u128,
    done: u128,
}

impl RawKube {
    pub(crate) async fn connect(spec: &Value, pool: &Pool, n: usize) -> Result<RawKube, Error> {
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
            Ok(_) | Err(ApiError::AlreadyExists(_)) => {}
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

    pub(crate) async fn once(&mut self, owner: &Owner) -> Result<u64, Error> {
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
                Err(ApiError::Conflict(_)) => lost += 1,
                Err(e) => return Err(format!("update {name}: {e:?}").into()),
            }
        }
    }
}

/// The record of an allocation in a block, as the store writes it.
pub(crate) fn record(owner: &Owner) -> plexus_crds::BlockAllocation {
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
pub(crate) struct RawEtcd {
    kv: KvClient,
    keys: PoolKeys,
    range: plexus_ipam::range::IpRange,
    base: u128,
    done: u128,
}

impl RawEtcd {
    pub(crate) async fn connect(spec: &Value, pool: &Pool, n: usize) -> Result<RawEtcd, Error> {
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

    pub(crate) async fn once(&mut self, owner: &Owner) -> Result<u64, Error> {
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
