//! CHECK: the VF netdev is in the pod under `CNI_IFNAME` with the expected MAC.

use plexus_cni::links;
use plexus_cni::skel::Request;
use plexus_cni::{CniError, ErrorCode};

use crate::config::NetConf;
use crate::error::link;
use crate::state::StateDir;

/// Runs CHECK.
pub fn check(req: &Request) -> Result<(), CniError> {
    let conf = NetConf::parse(&req.config, &req.env.args)?;
    let env = &req.env;
    let state = StateDir::new(&conf.data_dir)
        .load(&env.container_id, &env.ifname)?
        .ok_or_else(|| {
            CniError::new(
                ErrorCode::UnknownContainer,
                format!("no attachment {}/{}", env.container_id, env.ifname),
            )
        })?;
    if state.host.is_none() {
        return Ok(()); // DPDK: nothing is in the pod.
    }
    let netns = env.netns.as_deref().ok_or_else(|| {
        CniError::new(
            ErrorCode::InvalidEnvironment,
            "CNI_NETNS is required for CHECK",
        )
    })?;
    let found = links::link(Some(netns), &env.ifname)
        .map_err(|e| link("looking into the pod", e))?
        .ok_or_else(|| {
            CniError::new(
                ErrorCode::IoFailure,
                format!("the pod has no interface {}", env.ifname),
            )
        })?;
    let expected = conf.vf.mac.or(state.pod_mac);
    if expected.is_some() && found.mac != expected {
        return Err(CniError::new(
            ErrorCode::IoFailure,
            format!(
                "{} has MAC {:?}, expected {:?}",
                env.ifname,
                found.mac.unwrap_or_default(),
                expected.unwrap_or_default()
            ),
        ));
    }
    Ok(())
}
