//! The API calls the store makes, one method per call: GET, LIST, create-if-absent, and
//! replace conditioned on the `resourceVersion` read, for blocks and their Leases.

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use plexus_crds::IpamBlock;

use super::block::Block;
use super::client::{ApiError, KubeClient};
use super::layout::NETWORK_LABEL;
use crate::error::{KubeStoreError, StoreError, Unexpected};

/// The objects of one namespace.
#[derive(Debug, Clone)]
pub struct Objects {
    client: KubeClient,
    namespace: String,
}

/// The field manager written on every change.
const MANAGER: &str = "plexus-ipam";
/// The resource name of blocks, as errors print it.
const BLOCKS: &str = "ipamblocks";
/// The resource name of Leases, as errors print it.
const LEASES: &str = "leases";

/// What a namespaced object kind of the store needs.
trait Kind:
    kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + serde::Serialize
    + std::fmt::Debug
{
}

impl<K> Kind for K where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug
{
}

impl Objects {
    /// The objects of `namespace` through `client`.
    pub fn new(client: KubeClient, namespace: &str) -> Objects {
        Objects {
            client,
            namespace: namespace.to_string(),
        }
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The client.
    pub fn client(&self) -> &KubeClient {
        &self.client
    }

    fn params() -> PostParams {
        PostParams {
            field_manager: Some(MANAGER.into()),
            ..PostParams::default()
        }
    }

    /// `resource "namespace/name"`, as errors name an object.
    fn object(&self, resource: &str, name: &str) -> String {
        format!("{resource} \"{}/{name}\"", self.namespace)
    }

    /// The objects of kind `K` in the namespace.
    fn api<K: Kind>(&self) -> Api<K> {
        Api::namespaced(self.client.client().clone(), &self.namespace)
    }

    /// GET `resource` `name`; `None` when it does not exist.
    async fn get<K: Kind>(&self, resource: &str, name: &str) -> Result<Option<K>, StoreError> {
        let object = self.object(resource, name);
        match self
            .client
            .call("get", object.as_str(), self.api::<K>().get(name))
            .await
        {
            Ok(found) => Ok(Some(found)),
            Err(ApiError::NotFound(_)) => Ok(None),
            Err(e) => Err(unexpected(e, || format!("get {object}"))),
        }
    }

    /// Creates `object` if no object of its name exists, or [`ApiError::AlreadyExists`]; a
    /// 404 (no namespace, no CRD) is a failure, not a race.
    async fn create<K: Kind>(&self, resource: &str, name: &str, new: &K) -> Result<K, ApiError> {
        let object = self.object(resource, name);
        let (api, params) = (self.api::<K>(), Self::params());
        let call = api.create(&params, new);
        match self.client.call("create", object.as_str(), call).await {
            Err(e @ ApiError::NotFound(_)) => Err(ApiError::Failed(unexpected(e, || {
                format!("create {object}")
            }))),
            result => result,
        }
    }

    /// Replaces `object` on the condition of its `resourceVersion`: the object written, or
    /// [`ApiError::Conflict`] (it changed) or [`ApiError::NotFound`] (it was deleted).
    async fn replace<K: Kind>(&self, resource: &str, name: &str, new: &K) -> Result<K, ApiError> {
        let (api, params) = (self.api::<K>(), Self::params());
        let call = api.replace(name, &params, new);
        self.client
            .call("update", self.object(resource, name), call)
            .await
    }

    /// Deletes `name` on the condition that it is still at `version`: `Ok` when deleted,
    /// [`ApiError::Conflict`] when it changed, [`ApiError::NotFound`] when gone.
    async fn delete<K: Kind>(
        &self,
        resource: &str,
        name: &str,
        version: &str,
    ) -> Result<(), ApiError> {
        let api = self.api::<K>();
        let params = precondition(version);
        let call = api.delete(name, &params);
        self.client
            .call("delete", self.object(resource, name), call)
            .await
            .map(drop)
    }

    /// LIST `resource` with the network label `label`, or all with `None`.
    async fn list<K: Kind>(
        &self,
        resource: &str,
        label: Option<&str>,
    ) -> Result<Vec<K>, StoreError> {
        let objects = format!("{resource} in {}", self.namespace);
        let api = self.api::<K>();
        let params = list_params(label);
        self.client
            .call("list", objects.as_str(), api.list(&params))
            .await
            .map(|list| list.items)
            .map_err(|e| unexpected(e, || format!("list {objects}")))
    }

    /// GET a block; `None` when it does not exist.
    pub async fn get_block(&self, name: &str) -> Result<Option<Block>, StoreError> {
        match self.get::<IpamBlock>(BLOCKS, name).await? {
            Some(object) => Block::read(object, &self.namespace).map(Some),
            None => Ok(None),
        }
    }

    /// Creates `block` if no block of its name exists: the created block, or
    /// [`ApiError::AlreadyExists`].
    pub async fn create_block(&self, block: &Block) -> Result<Block, ApiError> {
        let mut object = block.to_object(&self.namespace);
        object.metadata.resource_version = None;
        let created = self.create(BLOCKS, &block.name, &object).await?;
        Block::read(created, &self.namespace).map_err(ApiError::Failed)
    }

    /// Replaces `block` on the condition that it is still at the `resourceVersion` it was read
    /// at: the block written, or [`ApiError::Conflict`] (it changed) or [`ApiError::NotFound`]
    /// (it was deleted).
    pub async fn replace_block(&self, block: &Block) -> Result<Block, ApiError> {
        let object = block.to_object(&self.namespace);
        let written = self.replace(BLOCKS, &block.name, &object).await?;
        Block::read(written, &self.namespace).map_err(ApiError::Failed)
    }

    /// LIST the blocks of the network labelled `label`, or every block with `None`.
    pub async fn list_blocks(&self, label: Option<&str>) -> Result<Vec<Block>, StoreError> {
        self.list::<IpamBlock>(BLOCKS, label)
            .await?
            .into_iter()
            .map(|o| Block::read(o, &self.namespace))
            .collect()
    }

    /// Deletes the block `name` on the condition that it is still at `version`: `Ok` when
    /// deleted, [`ApiError::Conflict`] when it changed, [`ApiError::NotFound`] when gone.
    pub async fn delete_block(&self, name: &str, version: &str) -> Result<(), ApiError> {
        self.delete::<IpamBlock>(BLOCKS, name, version).await
    }

    /// Deletes the Lease `name` on the condition that it is still at `version`, as
    /// [`Objects::delete_block`].
    pub async fn delete_lease(&self, name: &str, version: &str) -> Result<(), ApiError> {
        self.delete::<Lease>(LEASES, name, version).await
    }

    /// LIST every Lease of the namespace.
    pub async fn list_all_leases(&self) -> Result<Vec<Lease>, StoreError> {
        self.list(LEASES, None).await
    }

    /// LIST at most one block: whether the API server, the CRD and the grant are there.
    pub async fn probe(&self) -> Result<(), StoreError> {
        let objects = format!("{BLOCKS} in {}", self.namespace);
        let api = self.api::<IpamBlock>();
        self.client
            .call(
                "list",
                objects.as_str(),
                api.list_metadata(&ListParams::default().limit(1)),
            )
            .await
            .map(drop)
            .map_err(|e| unexpected(e, || format!("list {objects}")))
    }

    /// GET a Lease; `None` when it does not exist.
    pub async fn get_lease(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        self.get(LEASES, name).await
    }

    /// Creates `lease` if absent: the created Lease, or [`ApiError::AlreadyExists`].
    pub async fn create_lease(&self, lease: &Lease) -> Result<Lease, ApiError> {
        let name = lease.metadata.name.clone().unwrap_or_default();
        self.create(LEASES, &name, lease).await
    }

    /// Replaces `lease` on the condition of its `resourceVersion`: the Lease written, or
    /// [`ApiError::Conflict`] or [`ApiError::NotFound`].
    pub async fn replace_lease(&self, lease: &Lease) -> Result<Lease, ApiError> {
        let name = lease.metadata.name.clone().unwrap_or_default();
        self.replace(LEASES, &name, lease).await
    }

    /// LIST the Leases of the network labelled `label`.
    pub async fn list_leases(&self, label: &str) -> Result<Vec<Lease>, StoreError> {
        self.list(LEASES, Some(label)).await
    }
}

/// A delete conditioned on the object's `resourceVersion`.
fn precondition(version: &str) -> DeleteParams {
    DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: Some(version.to_string()),
            uid: None,
        }),
        ..DeleteParams::default()
    }
}

/// A LIST with the network label selector, if any.
fn list_params(label: Option<&str>) -> ListParams {
    match label {
        Some(value) => ListParams::default().labels(&format!("{NETWORK_LABEL}={value}")),
        None => ListParams::default(),
    }
}

/// The [`StoreError`] of an answer the caller did not expect at this point.
pub fn unexpected(e: ApiError, call: impl FnOnce() -> String) -> StoreError {
    let answer = match e {
        ApiError::Failed(e) => return e,
        ApiError::Conflict(_) => Unexpected::Conflict,
        ApiError::AlreadyExists(_) => Unexpected::AlreadyExists,
        ApiError::NotFound(_) => Unexpected::Missing,
    };
    KubeStoreError::Unexpected {
        call: call(),
        answer,
    }
    .into()
}
