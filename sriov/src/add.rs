//! ADD: save the VF's original state, configure it on the PF, move its netdev into the pod, run
//! IPAM, write the device-info. Any failure undoes everything through [`crate::del::teardown`].

use std::path::Path;

use plexus_cni::env::{CniArgs, CniEnv, Command};
use plexus_cni::links;
use plexus_cni::netns;
use plexus_cni::result::Interface;
use plexus_cni::skel::{parse_request, Request};
use plexus_cni::{CniError, CniResult, ErrorCode};
use serde_json::Value;

use crate::config::{self, NetConf};
use crate::del::teardown;
use crate::error::link;
use crate::pf::PfControl;
use crate::state::{HostNetdev, SavedRequest, SavedState, StateDir, FORMAT};
use crate::sysfs::{Sysfs, Vf, VfMode};
use crate::{device_info, ipam, setup};

/// Runs ADD and returns the result at the request's version.
pub fn add(pf: &dyn PfControl, req: &Request) -> Result<Value, CniError> {
    let conf = NetConf::parse(&req.config, &req.env.args)?;
    let env = &req.env;
    let netns = env.netns.clone().ok_or_else(|| {
        CniError::new(
            ErrorCode::InvalidEnvironment,
            "CNI_NETNS is required for ADD",
        )
    })?;
    if !netns::exists(&netns) {
        return Err(CniError::new(
            ErrorCode::InvalidEnvironment,
            format!("CNI_NETNS {} is not a network namespace", netns.display()),
        ));
    }
    let sysfs = Sysfs::new(&conf.sysfs_root);
    let states = StateDir::new(&conf.data_dir);
    let pci = sysfs.vf(&conf.device_id)?.pci;
    let _lock = states.lock(&pci)?;
    check_free(pf, &states, &pci, &env.container_id, &env.ifname)?;
    // Looked up (again) after a stale attachment was undone: that renames its netdev back.
    let vf = sysfs.vf(&conf.device_id)?;
    let host = match &vf.mode {
        VfMode::Netdev { netdev } => Some(host_netdev(netdev, &netns, env)?),
        VfMode::Dpdk { .. } => None,
    };
    let original = pf.vf_config(&vf.pf, vf.index)?;
    let mut state = SavedState {
        format: FORMAT,
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
        netns: netns.to_string_lossy().into_owned(),
        vf,
        host,
        original,
        requested: conf.vf.clone(),
        device_info_created: None,
        pod_mac: None,
        request: Some(SavedRequest {
            stdin: String::from_utf8_lossy(&req.stdin).into_owned(),
            cni_args: env.args.to_env_string(),
            cni_path: env.path.clone(),
        }),
    };
    states.save(&state)?;
    match attach(pf, req, &conf, &netns, &states, &mut state) {
        Ok(result) => Ok(result.to_value(req.version)),
        Err(e) => {
            let failures = teardown(pf, &state, conf.ipam_type().as_deref(), req, Some(&netns));
            if failures.is_empty() {
                states.remove(&state.container_id, &state.ifname)?;
                Err(e)
            } else {
                let details = format!("rollback incomplete: {}", failures.join("; "));
                Err(e.with_details(details))
            }
        }
    }
}

/// Refuses an attachment that exists already, and a VF another live attachment holds. An
/// attachment whose namespace is gone (its pod vanished without a DEL) is undone first, as its
/// DEL would have: IPAM release, PF settings reset, netdev renamed back.
fn check_free(
    pf: &dyn PfControl,
    states: &StateDir,
    pci: &str,
    container_id: &str,
    ifname: &str,
) -> Result<(), CniError> {
    if states.load(container_id, ifname)?.is_some() {
        return Err(CniError::new(
            ErrorCode::InvalidEnvironment,
            format!("{container_id}/{ifname} is attached already; DEL it first"),
        ));
    }
    for other in states.all().into_iter().filter(|s| s.vf.pci == pci) {
        if netns::exists(Path::new(&other.netns)) {
            return Err(CniError::new(
                ErrorCode::InvalidNetworkConfig,
                format!(
                    "VF {pci} is in use by container {} ({})",
                    other.container_id, other.ifname
                ),
            ));
        }
        eprintln!(
            "plexus-sriov: undoing the stale attachment {}/{} (namespace {} is gone)",
            other.container_id, other.ifname, other.netns
        );
        undo_stale(pf, &other)?;
        states.remove(&other.container_id, &other.ifname)?;
    }
    Ok(())
}

/// Undoes an attachment whose pod is gone, with the request its ADD was given (older state
/// files without it only lose their state).
fn undo_stale(pf: &dyn PfControl, stale: &SavedState) -> Result<(), CniError> {
    let Some(saved) = &stale.request else {
        return Ok(());
    };
    let request = parse_request(
        CniEnv {
            command: Command::Del,
            container_id: stale.container_id.clone(),
            netns: None,
            ifname: stale.ifname.clone(),
            args: CniArgs::parse(&saved.cni_args)?,
            path: saved.cni_path.clone(),
        },
        saved.stdin.clone().into_bytes(),
    )?;
    let ipam = config::ipam_type(&request.config);
    let failures = teardown(pf, stale, ipam.as_deref(), &request, None);
    if failures.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            ErrorCode::TryAgainLater,
            format!(
                "the VF's stale attachment {}/{} could not be undone",
                stale.container_id, stale.ifname
            ),
        )
        .with_details(failures.join("; ")))
    }
}

/// The VF netdev as it is in the host now; the pod must not have `ifname` already.
fn host_netdev(
    netdev: &str,
    netns: &Path,
    env: &plexus_cni::env::CniEnv,
) -> Result<HostNetdev, CniError> {
    let link_info = links::link(None, netdev)
        .map_err(|e| link("looking up the VF netdev", e))?
        .ok_or_else(|| {
            CniError::new(
                ErrorCode::IoFailure,
                format!("VF netdev {netdev} is not in this network namespace"),
            )
        })?;
    if links::link(Some(netns), &env.ifname)
        .map_err(|e| link("looking into the pod", e))?
        .is_some()
    {
        return Err(CniError::new(
            ErrorCode::InterfaceNameConflict,
            format!("the pod already has an interface {}", env.ifname),
        ));
    }
    Ok(HostNetdev {
        name: link_info.name,
        mac: link_info.mac,
        mtu: link_info.mtu,
        up: link_info.up,
        temp_name: setup::temp_name(&env.container_id, &env.ifname),
    })
}

/// Everything ADD changes, after the state is saved.
fn attach(
    pf: &dyn PfControl,
    req: &Request,
    conf: &NetConf,
    netns: &Path,
    states: &StateDir,
    state: &mut SavedState,
) -> Result<CniResult, CniError> {
    let vf = state.vf.clone();
    for change in conf.vf.changes() {
        pf.apply(&vf.pf, vf.index, &change)
            .map_err(|e| CniError::from(e).with_details(format!("setting {change}")))?;
    }
    let sandbox = Some(netns.to_string_lossy().into_owned());
    let mut interface = Interface {
        name: req.env.ifname.clone(),
        sandbox,
        pci_id: Some(vf.pci.clone()),
        ..Interface::default()
    };
    if let Some(host) = &state.host {
        let moved = setup::move_into(
            host,
            netns,
            &req.env.ifname,
            conf.vf.mac.as_deref(),
            conf.mtu,
        )
        .map_err(|e| link("moving the VF netdev into the pod", e))?;
        interface.mac = moved.mac;
        interface.mtu = moved.mtu;
    } else {
        interface.mac = conf.vf.mac.clone();
    }
    let mut result = CniResult::default();
    if let Some(plugin) = conf.ipam_type() {
        let got = ipam::run(&plugin, Command::Add, &req.env, &req.stdin, req.version)?
            .unwrap_or_default();
        if state.host.is_some() {
            ipam::apply(netns, &req.env.ifname, &got)
                .map_err(|e| link("applying the IPAM result", e))?;
        }
        result = got;
    }
    if let Some(path) = &conf.device_info_file {
        write_device_info(path, &vf, &result, states, state)?;
    }
    state.pod_mac = interface.mac.clone();
    states.save(state)?;
    result.interfaces = vec![interface];
    Ok(result)
}

/// Writes the device-info file; a file it creates is recorded first, so DEL removes it.
fn write_device_info(
    path: &Path,
    vf: &Vf,
    result: &CniResult,
    states: &StateDir,
    state: &mut SavedState,
) -> Result<(), CniError> {
    if !path.exists() {
        state.device_info_created = Some(path.to_path_buf());
        states.save(state)?;
    }
    let written = match &vf.mode {
        VfMode::Netdev { .. } => device_info::write_netdev(path, vf),
        VfMode::Dpdk { driver } => {
            device_info::write_dpdk(path, vf, driver, &ipam::addresses(result))
        }
    };
    written.map(|_| ()).map_err(|e| {
        CniError::new(
            ErrorCode::IoFailure,
            format!("writing the device-info file {}: {e}", path.display()),
        )
    })
}
