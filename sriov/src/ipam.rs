//! The IPAM plugin, run as a delegate with the plugin's whole stdin, and its result applied in
//! the pod.

use std::path::Path;
use std::time::Duration;

use plexus_cni::env::{CniEnv, Command};
use plexus_cni::invoke::{self, Invocation};
use plexus_cni::links;
use plexus_cni::{CniError, CniResult, ErrorCode, SpecVersion};

/// How long one IPAM call may take before it is killed.
pub const IPAM_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the IPAM plugin `plugin` for `command` with the request's environment and `stdin`, and
/// returns its result for ADD (every address on interface 0). When a 1.1.0 request is refused
/// as incompatible, it is tried once more at 1.0.0.
pub fn run(
    plugin: &str,
    command: Command,
    env: &CniEnv,
    stdin: &[u8],
    version: SpecVersion,
) -> Result<Option<CniResult>, CniError> {
    let fail = |e: CniError| CniError {
        msg: format!("IPAM plugin {plugin:?} ({command}): {}", e.msg),
        ..e
    };
    let binary = invoke::find_plugin(plugin, &env.path).map_err(|e| fail(e.to_cni_error()))?;
    let invocation = Invocation {
        command: Some(command),
        container_id: env.container_id.clone(),
        netns: env
            .netns
            .as_deref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        ifname: env.ifname.clone(),
        args: env.args.to_env_string(),
        path: env.path.clone(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::new(ErrorCode::IoFailure, format!("starting a runtime: {e}")))?;
    let call = |input: &[u8]| {
        runtime
            .block_on(invoke::exec(&binary, &invocation, input, IPAM_TIMEOUT))
            .map_err(|e| e.to_cni_error())
    };
    let out = match call(stdin) {
        // An IPAM plugin that stops at 1.0.0 (the reference plugins) gets the 1.0.0 form of a
        // 1.1.0 configuration: 1.1 only added optional fields.
        Err(e)
            if e.code == ErrorCode::IncompatibleVersion.code()
                && version == SpecVersion::V1_1_0 =>
        {
            call(&downgraded(stdin).ok_or_else(|| fail(e.clone()))?)
        }
        other => other,
    }
    .map_err(fail)?;
    if command != Command::Add {
        return Ok(None);
    }
    let mut result = CniResult::parse(&out, version)
        .map_err(|e| fail(CniError::new(e.code(), e.to_string())))?;
    for ip in &mut result.ips {
        ip.interface = Some(0);
    }
    result.interfaces.clear();
    Ok(Some(result))
}

/// `stdin` with `cniVersion` set to 1.0.0, if it is a JSON object.
fn downgraded(stdin: &[u8]) -> Option<Vec<u8>> {
    let mut config: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(stdin).ok()?;
    config.insert("cniVersion".into(), "1.0.0".into());
    serde_json::to_vec(&config).ok()
}

/// Adds the result's addresses to `ifname` in the pod, then its routes (through the address
/// family's first gateway when a route names none).
pub fn apply(netns: &Path, ifname: &str, result: &CniResult) -> Result<(), links::LinkError> {
    for ip in &result.ips {
        links::add_address(Some(netns), ifname, ip.address)?;
    }
    for route in &result.routes {
        let gateway = route.gw.or_else(|| {
            result
                .ips
                .iter()
                .filter_map(|ip| ip.gateway)
                .find(|gw| gw.is_ipv4() == route.dst.addr().is_ipv4())
        });
        links::add_route(Some(netns), route.dst, gateway, Some(ifname))?;
    }
    Ok(())
}

/// The addresses of a result, as text (for the DPDK device-info).
pub fn addresses(result: &CniResult) -> Vec<String> {
    result.ips.iter().map(|ip| ip.address.to_string()).collect()
}
