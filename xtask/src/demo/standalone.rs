//! `cargo xtask demo`: two pods attached through `plexus` with static
//! delegates, a bridge network (their `eth0`) and a macvlan network (their
//! `net1`); their interfaces and routes, pings on both networks, and DEL.

use serde_json::json;

use super::{netns_path, show_pod, Names, Node, BRIDGE, CNI_BIN_DIR, MASTER};
use crate::cmd::{self, Result};
use plexus::links;

/// The node's and the pods' network namespaces.
pub(super) const NAMES: Names = Names {
    node: "plexus-demo-node",
    pods: ["plexus-demo-a", "plexus-demo-b"],
};

/// Runs every step inside the node; fails if a ping fails or anything is left.
pub(super) fn run(node: &Node) -> Result {
    node.set_up()?;
    let ipam = |subnet: &str| node.ipam(subnet);
    let config = json!({
        "cniVersion": "1.0.0",
        "name": "plexus-demo",
        "type": "plexus",
        "binDir": CNI_BIN_DIR,
        "cniDir": node.state.join("cache"),
        "delegates": [
            {
                "cniVersion": "1.0.0",
                "name": "demo-pods",
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "ipam": ipam("10.123.1.0/24"),
            },
            {
                "cniVersion": "1.0.0",
                "name": "demo-storage",
                "type": "macvlan",
                "master": MASTER,
                "mode": "bridge",
                "ipam": node.plexus_ipam("10.123.2.0/24"),
            },
        ],
    });
    let config = node.write_config(
        "plexus.conf",
        &config,
        "Plexus's configuration: the first delegate is the primary network (eth0), \
         the others are secondary (net1, ...)",
    )?;
    let cni_args = |pod: &str| format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME={pod}");
    for pod in node.pods {
        node.attach(pod, &config, &cni_args(pod))?;
    }
    for pod in node.pods {
        show_pod(pod)?;
    }
    ping_between_pods(node)?;
    cmd::step("detaching both pods (plexus DEL)");
    node.show_state()?;
    for pod in node.pods {
        node.plexus("DEL", pod, &config, &cni_args(pod))?;
    }
    node.check_nothing_left()
}

/// Pings pod B from pod A on both networks; fails if either ping fails.
fn ping_between_pods(node: &Node) -> Result {
    let [a, b] = node.pods;
    cmd::step(&format!("pinging from {a} to {b} on both networks"));
    let addresses = links::addresses(Some(&netns_path(b)))?;
    for (ifname, network) in [
        ("eth0", "bridge demo-pods"),
        ("net1", "macvlan demo-storage"),
    ] {
        let target = addresses
            .iter()
            .find(|x| x.ifname == ifname && x.address.addr().is_ipv4())
            .ok_or_else(|| format!("{b} has no IPv4 address on {ifname}"))?
            .address
            .addr();
        super::ping_from(a, target, &format!("{ifname} ({network})"))?;
    }
    Ok(())
}
