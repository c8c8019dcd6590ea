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

    fn blocks(&self) -> Api<IpamBlock> {
        Api::namespaced(self.client.client().clone(), &self.namespace)
    }

    fn leases(&self) -> Api<Lease> {
        Api::namespaced(self.client.client().clone(), &self.namespace)
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

    /// `verb resource "namespace/name"`, as errors name a call.
    fn what(&self, verb: &str, resource: &str, name: &str) -> String {
        format!("{verb} {}", self.object(resource, name))
    }

    /// GET a block; `None` when it does not exist.
    pub async fn get_block(&self, name: &str) -> Result<Option<Block>, StoreError> {
        let api = self.blocks();
        match self
            .client
            .call("get", self.object("ipamblocks", name), api.get(name))
            .await
        {
            Ok(object) => Block::read(object, &self.namespace).map(Some),
            Err(ApiError::NotFound) => Ok(None),
            Err(e) => Err(unexpected(e, || self.what("get", "ipamblocks", name))),
        }
    }

    /// Creates `block` if no block of its name exists: the created block, or
    /// [`ApiError::AlreadyExists`].
    pub async fn create_block(&self, block: &Block) -> Result<Block, ApiError> {
        let api = self.blocks();
        let mut object = block.to_object(&self.namespace);
        object.metadata.resource_version = None;
        let what = || self.what("create", "ipamblocks", &block.name);
        let created = self
            .client
            .call("create", what(), api.create(&Self::params(), &object))
            .await
            .map_err(|e| missing_is_fatal(e, what))?;
        Block::read(created, &self.namespace).map_err(ApiError::Failed)
    }

    /// Replaces `block` on the condition that it is still at the `resourceVersion` it was read
    /// at: the block written, or [`ApiError::Conflict`] (it changed) or [`ApiError::NotFound`]
    /// (it was deleted).
    pub async fn replace_block(&self, block: &Block) -> Result<Block, ApiError> {
        let api = self.blocks();
        let object = block.to_object(&self.namespace);
        let written = self
            .client
            .call(
                "update",
                self.object("ipamblocks", &block.name),
                api.replace(&block.name, &Self::params(), &object),
            )
            .await?;
        Block::read(written, &self.namespace).map_err(ApiError::Failed)
    }

    /// LIST the blocks of the network labelled `label`, or every block with `None`.
    pub async fn list_blocks(&self, label: Option<&str>) -> Result<Vec<Block>, StoreError> {
        let api = self.blocks();
        let params = list_params(label);
        let what = || format!("list ipamblocks in {}", self.namespace);
        let list = self
            .client
            .call(
                "list",
                format!("ipamblocks in {}", self.namespace),
                api.list(&params),
            )
            .await
            .map_err(|e| unexpected(e, what))?;
        list.items
            .into_iter()
            .map(|o| Block::read(o, &self.namespace))
            .collect()
    }

    /// Deletes the block `name` on the condition that it is still at `version`: `Ok` when
    /// deleted, [`ApiError::Conflict`] when it changed, [`ApiError::NotFound`] when gone.
    pub async fn delete_block(&self, name: &str, version: &str) -> Result<(), ApiError> {
        let api = self.blocks();
        self.client
            .call(
                "delete",
                self.object("ipamblocks", name),
                api.delete(name, &precondition(version)),
            )
            .await
            .map(drop)
    }

    /// Deletes the Lease `name` on the condition that it is still at `version`, as
    /// [`Objects::delete_block`].
    pub async fn delete_lease(&self, name: &str, version: &str) -> Result<(), ApiError> {
        let api = self.leases();
        self.client
            .call(
                "delete",
                self.object("leases", name),
                api.delete(name, &precondition(version)),
            )
            .await
            .map(drop)
    }

    /// LIST every Lease of the namespace.
    pub async fn list_all_leases(&self) -> Result<Vec<Lease>, StoreError> {
        let api = self.leases();
        let what = || format!("list leases in {}", self.namespace);
        let list = self
            .client
            .call(
                "list",
                format!("leases in {}", self.namespace),
                api.list(&list_params(None)),
            )
            .await
            .map_err(|e| unexpected(e, what))?;
        Ok(list.items)
    }

    /// LIST at most one block: whether the API server, the CRD and the grant are there.
    pub async fn probe(&self) -> Result<(), StoreError> {
        let api = self.blocks();
        let what = || format!("list ipamblocks in {}", self.namespace);
        self.client
            .call(
                "list",
                format!("ipamblocks in {}", self.namespace),
                api.list_metadata(&ListParams::default().limit(1)),
            )
            .await
            .map(drop)
            .map_err(|e| unexpected(e, what))
    }

    /// GET a Lease; `None` when it does not exist.
    pub async fn get_lease(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        let api = self.leases();
        match self
            .client
            .call("get", self.object("leases", name), api.get(name))
            .await
        {
            Ok(lease) => Ok(Some(lease)),
            Err(ApiError::NotFound) => Ok(None),
            Err(e) => Err(unexpected(e, || self.what("get", "leases", name))),
        }
    }

    /// Creates `lease` if absent: the created Lease, or [`ApiError::AlreadyExists`].
    pub async fn create_lease(&self, lease: &Lease) -> Result<Lease, ApiError> {
        let api = self.leases();
        let name = lease.metadata.name.clone().unwrap_or_default();
        let what = || self.what("create", "leases", &name);
        self.client
            .call("create", what(), api.create(&Self::params(), lease))
            .await
            .map_err(|e| missing_is_fatal(e, what))
    }

    /// Replaces `lease` on the condition of its `resourceVersion`: the Lease written, or
    /// [`ApiError::Conflict`] or [`ApiError::NotFound`].
    pub async fn replace_lease(&self, lease: &Lease) -> Result<Lease, ApiError> {
        let api = self.leases();
        let name = lease.metadata.name.clone().unwrap_or_default();
        self.client
            .call(
                "update",
                self.object("leases", &name),
                api.replace(&name, &Self::params(), lease),
            )
            .await
    }

    /// LIST the Leases of the network labelled `label`.
    pub async fn list_leases(&self, label: &str) -> Result<Vec<Lease>, StoreError> {
        let api = self.leases();
        let what = || format!("list leases in {}", self.namespace);
        let list = self
            .client
            .call(
                "list",
                format!("leases in {}", self.namespace),
                api.list(&list_params(Some(label))),
            )
            .await
            .map_err(|e| unexpected(e, what))?;
        Ok(list.items)
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
        ApiError::Conflict => Unexpected::Conflict,
        ApiError::AlreadyExists => Unexpected::AlreadyExists,
        ApiError::NotFound => Unexpected::Missing,
    };
    KubeStoreError::Unexpected {
        call: call(),
        answer,
    }
    .into()
}

/// A create answered 404: the namespace or the resource type is missing, not a race.
fn missing_is_fatal(e: ApiError, call: impl FnOnce() -> String) -> ApiError {
    match e {
        ApiError::NotFound => ApiError::Failed(unexpected(e, call)),
        e => e,
    }
}
