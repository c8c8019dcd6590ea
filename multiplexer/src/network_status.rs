//! The `k8s.v1.cni.cncf.io/network-status` annotation written back after ADD.

use plexus_cni::{CniError, CniResult};

use crate::devices::device_info;
use crate::k8s::client::KubeApi;
use crate::k8s::pod_networks::PodInfo;
use crate::k8s::selection::NETWORK_STATUS_ANNOTATION;
use crate::k8s::status::{self, NetworkStatus};
use crate::plan::Attachment;

/// The status entries of every attachment, in order; the primary's is marked `default`. Each
/// carries the content of its device-info file, when it has one.
pub fn statuses(plan: &[Attachment], results: &[CniResult]) -> Vec<NetworkStatus> {
    plan.iter()
        .zip(results)
        .flat_map(|(a, r)| {
            status::statuses_for(
                &a.delegate.status_name,
                r,
                a.delegate.primary,
                device_info::read(&a.delegate.capability_args),
                &a.ifname,
            )
        })
        .collect()
}

/// Writes the annotation with one PATCH of that annotation alone, conditional on the pod's UID.
pub async fn write(
    api: &KubeApi,
    pod: &PodInfo,
    statuses: &[NetworkStatus],
) -> Result<(), CniError> {
    api.patch_pod_annotation(
        &pod.pod.namespace,
        &pod.pod.name,
        pod.status_uid.as_deref(),
        NETWORK_STATUS_ANNOTATION,
        &status::to_annotation(statuses),
    )
    .await
    .map_err(CniError::from)
}
