//! [`PodLookup`] on the Kubernetes API: one GET of the pod (RBAC: `get pods`), or of the
//! `IPAMClaim` (RBAC: `get ipamclaims`).

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use plexus_crds::IpamClaim;

use super::client::{ApiError, KubeClient};
use crate::gc::{PodLookup, PodState};

/// Looks pods up with a GET each, never from a cache.
#[derive(Debug, Clone)]
pub struct KubePods {
    client: KubeClient,
}

impl KubePods {
    /// Pods through `client`.
    pub fn new(client: KubeClient) -> KubePods {
        KubePods { client }
    }
}

impl PodLookup for KubePods {
    async fn pod(&self, namespace: &str, name: &str) -> Result<PodState, String> {
        let api: Api<Pod> = Api::namespaced(self.client.client().clone(), namespace);
        let what = || format!("get pods \"{namespace}/{name}\"");
        let call = self.client.call(
            "get",
            format!("pods \"{namespace}/{name}\""),
            api.get_metadata(name),
        );
        match call.await {
            Ok(meta) => Ok(PodState::Present {
                uid: meta.metadata.uid.unwrap_or_default(),
            }),
            Err(ApiError::NotFound(_)) => Ok(PodState::Absent),
            Err(ApiError::Failed(e)) => Err(e.to_string()),
            Err(e) => Err(format!("{}: unexpected answer {e:?}", what())),
        }
    }

    async fn claim_exists(&self, namespace: &str, name: &str) -> Result<bool, String> {
        let api: Api<IpamClaim> = Api::namespaced(self.client.client().clone(), namespace);
        let what = || format!("get ipamclaims \"{namespace}/{name}\"");
        let call = self.client.call(
            "get",
            format!("ipamclaims \"{namespace}/{name}\""),
            api.get_metadata(name),
        );
        match call.await {
            Ok(_) => Ok(true),
            Err(ApiError::NotFound(_)) => Ok(false),
            Err(ApiError::Failed(e)) => Err(e.to_string()),
            Err(e) => Err(format!("{}: unexpected answer {e:?}", what())),
        }
    }
}
