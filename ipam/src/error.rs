//! Why a store operation failed: [`StoreError`], with one enum per backend for the failures
//! that are that backend's own ([`KubeStoreError`], [`EtcdError`], [`LocalError`]).

use std::path::PathBuf;

use plexus_cni::{CniError, ErrorCode};
use plexus_kube::KubeError;
use thiserror::Error;

/// Why a store operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// Every usable address of the range is taken.
    #[error(
        "no free address left in range {range}: {used} of {size} usable addresses are allocated"
    )]
    Exhausted {
        /// The range.
        range: String,
        /// Allocated addresses.
        used: u128,
        /// Usable addresses.
        size: u128,
    },
    /// The datastore could not be reached or did not answer in time; trying again may work.
    #[error("{0}")]
    Unavailable(String),
    /// Too many concurrent writers kept winning the race; trying again may work.
    #[error("gave up after {0} conflicting writes")]
    Contention(u32),
    /// A Kubernetes API call failed (a transient failure is code 11, any other 121).
    #[error("{0}{hint}", hint = kube_hint(.0))]
    Kubernetes(#[from] KubeError),
    /// The Kubernetes store met an answer, an object or a setting it cannot work with.
    #[error(transparent)]
    KubeStore(#[from] KubeStoreError),
    /// The etcd store failed.
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    /// The local store's files failed.
    #[error(transparent)]
    Local(#[from] LocalError),
    /// A range could not be built (import of an allocation outside any configured range).
    #[error("range {range}: {reason}")]
    InvalidRange {
        /// The range or address.
        range: String,
        /// Why.
        reason: String,
    },
    /// Another IPAM's allocations in the range were not imported (the guard of
    /// `plexus-ipam`'s Kubernetes store): a configuration error.
    #[error("{0}")]
    NotImported(String),
    /// The cluster is not set up for what the configuration asks (an `IPAMBlock` CRD that
    /// drops the `ipamClaim` field): a configuration error.
    #[error("{0}")]
    Misconfigured(String),
    /// The failure of a block write that carried several requests (group commit), as that
    /// write reported it.
    #[error("{msg}")]
    Shared {
        /// The failure's CNI code.
        code: ErrorCode,
        /// The failure.
        msg: String,
    },
    /// A stored record could not be read.
    #[error("corrupt record {key}: {reason}")]
    Corrupt {
        /// Which record.
        key: String,
        /// Why.
        reason: String,
    },
}

impl StoreError {
    /// The CNI error code of this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            StoreError::Exhausted { .. } => ErrorCode::PoolExhausted,
            StoreError::Unavailable(_) | StoreError::Contention(_) => ErrorCode::TryAgainLater,
            StoreError::Kubernetes(e) if e.is_transient() => ErrorCode::TryAgainLater,
            StoreError::Kubernetes(_)
            | StoreError::KubeStore(_)
            | StoreError::Etcd(_)
            | StoreError::Local(_)
            | StoreError::InvalidRange { .. } => ErrorCode::IpamBackendFailed,
            StoreError::NotImported(_) | StoreError::Misconfigured(_) => {
                ErrorCode::InvalidNetworkConfig
            }
            StoreError::Corrupt { .. } => ErrorCode::IpamCorruptRecord,
            StoreError::Shared { code, .. } => *code,
        }
    }
}

impl From<StoreError> for CniError {
    fn from(e: StoreError) -> Self {
        CniError::new(e.code(), e.to_string())
    }
}

/// What the IPAM adds to a Kubernetes refusal: where to look.
fn kube_hint(e: &KubeError) -> &'static str {
    match e.status_code() {
        Some(403) => {
            " (does the RBAC grant it? examples/k3s/01-rbac.yaml grants the IPAM's objects in one \
             namespace, which kubernetes.namespace must name)"
        }
        Some(404) => " (is the IPAMBlock CRD installed? `plexusctl crds | kubectl apply -f -`)",
        _ => "",
    }
}

/// What the Kubernetes store cannot work with.
#[derive(Debug, Error)]
pub enum KubeStoreError {
    /// No node name, which names the holder of the node's blocks.
    #[error("the node name is empty: set NODE_NAME (it names the holder of the node's blocks)")]
    NoNodeName,
    /// A block size that does not fit the range's family.
    #[error("block prefix /{prefix} is not valid for {range}")]
    BlockPrefix {
        /// The configured prefix length.
        prefix: u8,
        /// The range.
        range: String,
    },
    /// A block of another size overlaps the range.
    #[error(
        "block {block} of network {network:?} is a /{found} but this range uses /{wanted} \
         blocks: every range of a network must use the same block size"
    )]
    BlockSize {
        /// The block's CIDR.
        block: String,
        /// The network.
        network: String,
        /// The block's prefix length.
        found: u8,
        /// The range's block prefix length.
        wanted: u8,
    },
    /// The object of a block's name holds another network's or range's block.
    #[error(
        "ipamblocks \"{namespace}/{name}\" belongs to network {network:?} range {range:?}, not \
         to this pool: two network names map to one object name"
    )]
    ForeignBlock {
        /// The namespace.
        namespace: String,
        /// The object's name.
        name: String,
        /// Its network.
        network: String,
        /// Its range.
        range: String,
    },
    /// A Lease of a block's Lease name that plexus-ipam did not write.
    #[error(
        "leases \"{namespace}/{name}\" has the name of the Lease of block {block} but was not \
         written by plexus-ipam ({why}); it is left as it is: rename or delete it, or give \
         plexus-ipam a namespace of its own (kubernetes.namespace)"
    )]
    ForeignLease {
        /// The namespace.
        namespace: String,
        /// The Lease's name.
        name: String,
        /// The block's CIDR.
        block: String,
        /// What gives it away.
        why: String,
    },
    /// The guard against a forgotten Whereabouts import could not look.
    #[error(
        "{source} (set \"whereabouts_import_check\": false if Whereabouts was never used here)"
    )]
    Guard {
        /// Why the list failed.
        source: Box<StoreError>,
    },
    /// An answer the call did not expect.
    #[error("{call}: {answer}")]
    Unexpected {
        /// The verb and object (`create ipamblocks "ns/x"`).
        call: String,
        /// The answer.
        answer: Unexpected,
    },
}

/// An answer a call did not expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Unexpected {
    /// 409 Conflict.
    #[error("unexpected conflict")]
    Conflict,
    /// 409 AlreadyExists.
    #[error("unexpectedly exists already")]
    AlreadyExists,
    /// 404 where no object was named: a namespace or an API that is not there.
    #[error(
        "not found (does the namespace exist, and is the IPAMBlock CRD installed? \
         `plexusctl crds | kubectl apply -f -`)"
    )]
    Missing,
    /// 404 on an IPAMClaim's status.
    #[error("not found (was the claim deleted, or does its CRD lack the status subresource?)")]
    ClaimStatus,
}

/// What the etcd store cannot do.
#[derive(Debug, Error)]
pub enum EtcdError {
    /// No endpoint in the configuration.
    #[error("no etcd endpoints configured")]
    NoEndpoints,
    /// A TLS file could not be read.
    #[error("cannot read etcd TLS file {}: {source}", path.display())]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A client certificate without its key, or a key without its certificate.
    #[error("etcd_cert_file and etcd_key_file go together")]
    HalfIdentity,
    /// A transaction's answer lacks reads it asked for.
    #[error("etcd answered a transaction with too few reads")]
    ShortAnswer,
    /// etcd refused a request.
    #[error("etcd at {endpoints}: {what} failed: {source}")]
    Refused {
        /// The endpoints.
        endpoints: String,
        /// The request.
        what: String,
        /// The client's error.
        source: etcd_client::Error,
    },
}

/// What the local store could not do with its files.
#[derive(Debug, Error)]
pub enum LocalError {
    /// A file operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done (`opening`, `reading`, ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The lock could not be taken.
    #[error("locking {}: {errno}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        errno: nix::errno::Errno,
    },
    /// The state could not be encoded.
    #[error("encoding {}: {source}", path.display())]
    Encode {
        /// The state file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
}
