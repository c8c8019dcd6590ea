//! ADD: parse, plan, execute, record. Attach the pod to every network in order, primary first;
//! on any failure tear down what was attempted and report the failure.

use plexus_cni::CniError;
use serde_json::Value;

use crate::execute::{self, routes, teardown, DelegateEnv};
use crate::k8s::agent::Agent;
use crate::k8s::pod_networks::{self, PodInfo, PodRef};
use crate::k8s::LazyApi;
use crate::parse::Invocation;
use crate::plan::{Delegate, Plan};
use crate::record::{self, RecordFailure, StatusTarget};
use crate::{k8s, readiness, resolve};

/// Runs ADD and returns the primary network's result in Plexus's own version.
pub(super) async fn run(inv: &Invocation) -> Result<Value, CniError> {
    if let Some(file) = &inv.config.readiness_indicator_file {
        readiness::wait_for(file, inv.config.readiness_timeout()?).await?;
    }
    // The pod, when the call is for a Kubernetes pod and Plexus can ask the API server: from
    // the node agent first, else read here.
    let api = LazyApi::new(&inv.config);
    let agent = Agent::new(&inv.config);
    let pod_ref = PodRef::from_cni_args(&inv.env.args).filter(|_| k8s::configured(&inv.config));
    let planned = plan_pod(inv, &api, &agent, pod_ref.clone()).await;
    let (pod, delegates) = match planned {
        Ok(planned) => planned,
        Err(e) => return Err(reported(&agent, pod_ref.as_ref(), None, e).await),
    };
    let plan = Plan::build(delegates, inv.naming())?;

    // Execute.
    let env = inv.delegate_env(inv.netns());
    execute::refuse_names_in_use(&env.netns, &plan)?;
    clear_stale_entry(inv).await?;
    let mut entry = record::begin(inv, &plan)?;
    let attached = execute::attach_all(
        &plan,
        &env,
        &inv.config.device_info_dir,
        &mut entry.attachments,
    );
    let mut results = match attached.await {
        Ok(results) => results,
        Err(rollback) => {
            let failed = rollback
                .attempted
                .checked_sub(1)
                .and_then(|i| plan.attachments.get(i))
                .map(|a| (a.ifname.as_str(), a.status_name.as_str()));
            let e = record::rolled_back(&inv.cache, &entry, rollback);
            return Err(reported(&agent, pod_ref.as_ref(), failed, e).await);
        }
    };
    if let Some(owner) = &plan.default_route {
        if let Err(e) = routes::apply(&env.netns, &plan.attachments, &mut results, owner) {
            return Err(roll_back_all(inv, &env, &entry, e).await);
        }
    }

    // Record.
    let status = pod.as_ref().map(|pod| StatusTarget {
        api: &api,
        agent: &agent,
        pod,
    });
    match record::complete(&inv.cache, &mut entry, &plan, &results, status).await {
        Ok(()) => {}
        Err(RecordFailure::NetworkStatus(e)) => {
            return Err(roll_back_all(inv, &env, &entry, e).await)
        }
        Err(RecordFailure::Cache(e)) => return Err(e.into()),
    }
    let primary = plan
        .attachments
        .iter()
        .zip(results)
        .find(|(a, _)| a.primary)
        .map(|(_, r)| r)
        .unwrap_or_default();
    Ok(primary.to_value(inv.version))
}

/// The pod (for a Kubernetes pod) and its delegates: the pod and its NADs from the node agent
/// when it answers, else read here; the configuration's static delegates otherwise.
async fn plan_pod(
    inv: &Invocation,
    api: &LazyApi<'_>,
    agent: &Agent,
    pod_ref: Option<PodRef>,
) -> Result<(Option<PodInfo>, Vec<Delegate>), CniError> {
    let Some(pod_ref) = pod_ref else {
        return Ok((None, resolve::static_delegates(&inv.config)?));
    };
    let (info, prefetched) = match agent.pod(&inv.config, &pod_ref).await {
        Ok(answer) => answer?,
        Err(_) => {
            let kube = api.require().await?;
            let info = pod_networks::load_pod(kube, pod_ref, &inv.config.runtime_config).await?;
            (info, Vec::new())
        }
    };
    let delegates = pod_networks::pod_delegates(&inv.config, api, &info, prefetched).await?;
    Ok((Some(info), delegates))
}

/// A failed ADD, reported to the node agent (a Warning Event on the pod) when it served it,
/// naming the attachment that failed (interface, network) when one did.
async fn reported(
    agent: &Agent,
    pod: Option<&PodRef>,
    failed: Option<(&str, &str)>,
    error: CniError,
) -> CniError {
    if let Some(pod) = pod {
        agent.report_failure(pod, failed, &error).await;
    }
    error
}

/// Rolls back every attachment after a failure that followed them all.
async fn roll_back_all(
    inv: &Invocation,
    env: &DelegateEnv,
    entry: &crate::cache::CacheEntry,
    error: CniError,
) -> CniError {
    let rollback = execute::roll_back_all(env, &entry.attachments, error).await;
    record::rolled_back(&inv.cache, entry, rollback)
}

/// A cache entry left by an earlier ADD of the same container that was never deleted: its
/// attachments are torn down first, so nothing it holds leaks.
async fn clear_stale_entry(inv: &Invocation) -> Result<(), CniError> {
    let Some(stale) = inv.cache.load(&inv.env.container_id)? else {
        return Ok(());
    };
    tracing::warn!(container = %inv.env.container_id, "tearing down a stale cache entry before ADD");
    let env = inv.delegate_env(stale.netns.clone().into());
    teardown::detach_and_clean(&stale.attachments, &env).await?;
    inv.cache.remove(&inv.env.container_id)?;
    Ok(())
}
