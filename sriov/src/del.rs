//! DEL, and the teardown that ADD's rollback shares: IPAM DEL, the PF settings reset to their
//! saved values, the netdev brought back to the host as it was, the device-info file ADD created
//! removed, and the state file removed last, only when everything succeeded.

use std::path::Path;

use plexus_cni::env::Command;
use plexus_cni::skel::Request;
use plexus_cni::{CniError, ErrorCode};

use crate::config;
use crate::ipam;
use crate::pf::PfControl;
use crate::setup;
use crate::state::{SavedState, StateDir};

/// Runs DEL. Without a state file there is nothing to undo, and DEL succeeds.
pub fn del(pf: &dyn PfControl, req: &Request) -> Result<(), CniError> {
    let states = StateDir::new(config::data_dir(&req.config));
    let env = &req.env;
    let Some(state) = states.load(&env.container_id, &env.ifname)? else {
        return Ok(());
    };
    let _lock = states.lock(&state.vf.pci)?;
    let ipam = config::ipam_type(&req.config);
    let failures = teardown(pf, &state, ipam.as_deref(), req, env.netns.as_deref());
    if !failures.is_empty() {
        return Err(CniError::new(
            ErrorCode::IoFailure,
            format!(
                "DEL of {}/{} is incomplete (the state is kept for a retry)",
                env.container_id, env.ifname
            ),
        )
        .with_details(failures.join("; ")));
    }
    states.remove(&state.container_id, &state.ifname)?;
    Ok(())
}

/// Undoes everything an attachment may have done, going on after a failure, and returns what
/// failed. `netns` is the pod's namespace, if the runtime still has one.
pub fn teardown(
    pf: &dyn PfControl,
    state: &SavedState,
    ipam_plugin: Option<&str>,
    req: &Request,
    netns: Option<&Path>,
) -> Vec<String> {
    let mut failures = Vec::new();
    if let Some(plugin) = ipam_plugin {
        if let Err(e) = ipam::run(plugin, Command::Del, &req.env, &req.stdin, req.version) {
            failures.push(e.to_string());
        }
    }
    for change in state.requested.resets(&state.original) {
        if let Err(e) = pf.apply(&state.vf.pf, state.vf.index, &change) {
            failures.push(format!("resetting {change} on PF {}: {e}", state.vf.pf));
        }
    }
    if let Some(host) = &state.host {
        let pod_mac = state.pod_mac.as_deref().or(state.requested.mac.as_deref());
        if let Err(e) = setup::restore(host, netns, &state.ifname, pod_mac) {
            failures.push(format!("bringing VF netdev {} back: {e}", host.name));
        }
    }
    if let Some(path) = &state.device_info_created {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                failures.push(format!("removing {}: {e}", path.display()))
            }
            _ => {}
        }
    }
    failures
}
