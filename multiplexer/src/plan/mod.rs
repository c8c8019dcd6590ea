//! Stage 2 of ADD, plan: which networks the pod is attached to, in which order, under which
//! interface names, with which `runtimeConfig` and devices, and who owns its default route, all
//! decided before anything runs.
//!
//! The networks come from Plexus's configuration (`resolve.rs`) or, for a Kubernetes pod, from
//! its annotations and NetworkAttachmentDefinitions (`k8s/pod_networks.rs`); both ask
//! [`primary_network`] where the primary comes from. [`Plan::build`] turns those [`Delegate`]s
//! into a [`Plan`]: a plain value (it serializes) that a test can build and inspect without a
//! network namespace, and that a node agent can compute and hand over.
//!
//! Interface names follow Multus: the primary gets the runtime's `CNI_IFNAME`, every other
//! attachment the name it asks for or `net<position>`, and no name may be used twice.

pub mod delegate;

use std::path::Path;

use plexus_cni::config::NetworkConfigList;
use plexus_cni::env::validate_ifname;
use plexus_cni::{CniError, ErrorCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use delegate::Delegate;

use crate::config::PlexusConfig;
use crate::devices::{device_info, Device};
use crate::k8s::default_route::{self, DefaultRoute};
use crate::k8s::selection::NetworkSelection;

/// Where a pod's primary network comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum PrimaryNetwork {
    /// The pod's `v1.multus-cni.io/default-network` annotation selects it.
    Selected(Box<NetworkSelection>),
    /// Plexus's `clusterNetwork` names it.
    ClusterNetwork(String),
    /// The first of Plexus's static `delegates`.
    FirstDelegate,
}

/// Decides where the primary network comes from: the pod's default-network selection when it
/// has one, else `clusterNetwork`, else the first static delegate. The one place this is decided.
pub fn primary_network(
    config: &PlexusConfig,
    default_network: Option<NetworkSelection>,
) -> PrimaryNetwork {
    match (default_network, &config.cluster_network) {
        (Some(selection), _) => PrimaryNetwork::Selected(Box::new(selection)),
        (None, Some(spec)) => PrimaryNetwork::ClusterNetwork(spec.clone()),
        (None, None) => PrimaryNetwork::FirstDelegate,
    }
}

/// Everything ADD will do, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The attachments, in attachment order (the primary first).
    pub attachments: Vec<PlannedAttachment>,
    /// The attachment that owns the pod's default route, when one asked to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_route: Option<DefaultRoute>,
}

/// One network to attach, with every decision made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedAttachment {
    /// The network's configuration, exactly as it will be cached and run.
    #[serde(with = "network_json")]
    pub network: NetworkConfigList,
    /// Its interface name in the pod.
    pub ifname: String,
    /// True for the primary (cluster) network.
    pub primary: bool,
    /// Its name in the network-status annotation.
    pub status_name: String,
    /// The capability arguments (`runtimeConfig`) offered to its plugins.
    pub capability_args: Map<String, Value>,
    /// The device-plugin device it uses, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Device>,
    /// True when the pod's networks annotation asked for it (hot-plug reconciles these).
    #[serde(default, skip_serializing_if = "is_false")]
    pub selected: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Where the container's names come from: the runtime's interface name for the primary, the
/// container, and the device-info directory.
#[derive(Debug, Clone, Copy)]
pub struct Naming<'a> {
    /// `CNI_IFNAME`: the primary's interface name.
    pub primary_ifname: &'a str,
    /// `CNI_CONTAINERID`.
    pub container_id: &'a str,
    /// Plexus's `deviceInfoDir`.
    pub device_info_dir: &'a Path,
}

impl Plan {
    /// The plan of ADD: interface names, device-info files, and the default route's owner.
    pub fn build(delegates: Vec<Delegate>, naming: Naming<'_>) -> Result<Plan, CniError> {
        let selections: Vec<Option<&NetworkSelection>> =
            delegates.iter().map(|d| d.selection.as_ref()).collect();
        let owner = default_route::owner(&selections);
        let attachments = attachments(delegates, naming)?;
        Ok(Plan {
            attachments,
            default_route: owner.map_err(CniError::from)?,
        })
    }
}

/// The attachments of these delegates, named, each offered its device-info file; what DEL
/// tears down for a container without a cache entry.
pub fn attachments(
    delegates: Vec<Delegate>,
    naming: Naming<'_>,
) -> Result<Vec<PlannedAttachment>, CniError> {
    let mut planned: Vec<PlannedAttachment> = Vec::with_capacity(delegates.len());
    for (position, delegate) in delegates.into_iter().enumerate() {
        let ifname = ifname(&delegate, position, naming.primary_ifname)?;
        if let Some(other) = planned.iter().find(|a| a.ifname == ifname) {
            return Err(CniError::new(
                ErrorCode::InterfaceNameConflict,
                format!(
                    "interface name {ifname:?} is asked for by both network {:?} and network {:?}",
                    other.network.name, delegate.network.name
                ),
            ));
        }
        planned.push(named(delegate, ifname, naming));
    }
    Ok(planned)
}

/// One delegate planned under interface name `ifname`, offered its device-info file.
pub fn named(delegate: Delegate, ifname: String, naming: Naming<'_>) -> PlannedAttachment {
    let mut capability_args = delegate.capability_args;
    device_info::offer(
        &mut capability_args,
        naming.device_info_dir,
        &delegate.status_name,
        naming.container_id,
        &ifname,
    );
    PlannedAttachment {
        network: delegate.network,
        ifname,
        primary: delegate.primary,
        status_name: delegate.status_name,
        capability_args,
        selected: !delegate.primary && delegate.selection.is_some(),
        device: delegate.device,
    }
}

/// A delegate's interface name, as Multus gives it: the primary gets `primary_ifname`; another
/// delegate gets its requested name, or `net<position>` (positions are counted for requested
/// names too). An invalid requested name is refused.
fn ifname(delegate: &Delegate, position: usize, primary_ifname: &str) -> Result<String, CniError> {
    if delegate.primary {
        return Ok(primary_ifname.to_string());
    }
    match &delegate.ifname_request {
        Some(requested) => requested_ifname(delegate, requested),
        None => Ok(format!("net{position}")),
    }
}

/// A delegate's requested interface name, checked (code 7 when invalid).
pub fn requested_ifname(delegate: &Delegate, requested: &str) -> Result<String, CniError> {
    validate_ifname(requested).map_err(|e| {
        CniError::new(
            ErrorCode::InvalidNetworkConfig,
            format!("network {:?}: {e}", delegate.network.name),
        )
    })?;
    Ok(requested.to_string())
}

/// A network configuration in a serialized plan: its JSON object, as written.
mod network_json {
    use plexus_cni::config::NetworkConfigList;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::Value;

    pub fn serialize<S: Serializer>(network: &NetworkConfigList, s: S) -> Result<S::Ok, S::Error> {
        network.to_value().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NetworkConfigList, D::Error> {
        NetworkConfigList::from_value(Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(name: &str, primary: bool, request: Option<&str>) -> Delegate {
        let mut d = Delegate::from_value(
            json!({"cniVersion": "1.0.0", "name": name, "type": "x"}),
            "",
            primary,
        )
        .unwrap();
        d.ifname_request = request.map(String::from);
        d
    }

    fn naming() -> Naming<'static> {
        Naming {
            primary_ifname: "eth0",
            container_id: "c1",
            device_info_dir: Path::new("/run/devinfo"),
        }
    }

    fn names(plan: &Plan) -> Vec<&str> {
        plan.attachments.iter().map(|a| a.ifname.as_str()).collect()
    }

    #[test]
    fn numbers_by_position() {
        let plan = Plan::build(
            vec![
                d("a", true, None),
                d("b", false, Some("foo")),
                d("c", false, None),
            ],
            naming(),
        )
        .unwrap();
        assert_eq!(names(&plan), ["eth0", "foo", "net2"]);
    }

    #[test]
    fn refuses_duplicates_and_bad_names() {
        let e = Plan::build(
            vec![
                d("a", true, None),
                d("b", false, Some("net2")),
                d("c", false, None),
            ],
            naming(),
        )
        .unwrap_err();
        assert_eq!(e.code, 103);
        let e = Plan::build(
            vec![d("a", true, None), d("b", false, Some("eth0"))],
            naming(),
        )
        .unwrap_err();
        assert_eq!(e.code, 103);
        let e = Plan::build(
            vec![d("a", true, None), d("b", false, Some("way-too-long-name"))],
            naming(),
        )
        .unwrap_err();
        assert_eq!(e.code, 7);
    }

    #[test]
    fn a_plan_is_a_plain_value() {
        let mut cluster = d("cbr0", true, None);
        cluster
            .capability_args
            .insert("portMappings".into(), json!([]));
        let mut macvlan = d("macvlan", false, None);
        macvlan.status_name = "ns/macvlan".into();
        macvlan.selection = Some(NetworkSelection {
            default_route: Some(vec!["10.1.1.254".parse().unwrap()]),
            ..NetworkSelection::new("ns", "macvlan")
        });
        let plan = Plan::build(vec![cluster, macvlan], naming()).unwrap();
        assert_eq!(names(&plan), ["eth0", "net1"]);
        assert!(plan.attachments[0].primary && !plan.attachments[1].primary);
        assert_eq!(plan.attachments[1].status_name, "ns/macvlan");
        assert_eq!(
            plan.attachments[0].capability_args["CNIDeviceInfoFile"],
            json!("/run/devinfo/cni/cbr0-c1_eth0")
        );
        assert!(plan.attachments[0]
            .capability_args
            .contains_key("portMappings"));
        assert_eq!(
            plan.default_route,
            Some(DefaultRoute {
                index: 1,
                gateways: vec!["10.1.1.254".parse().unwrap()],
            })
        );
        let text = serde_json::to_string(&plan).unwrap();
        let back: Plan = serde_json::from_str(&text).unwrap();
        assert_eq!(back, plan);
    }

    #[test]
    fn two_default_route_owners_are_refused_after_the_names() {
        let owner = |name: &str| {
            let mut x = d(name, false, None);
            x.selection = Some(NetworkSelection {
                default_route: Some(vec![]),
                ..NetworkSelection::new("ns", name)
            });
            x
        };
        let e =
            Plan::build(vec![d("a", true, None), owner("b"), owner("c")], naming()).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("only one network"), "{}", e.msg);
        // DEL's attachments need no owner.
        let attached =
            attachments(vec![d("a", true, None), owner("b"), owner("c")], naming()).unwrap();
        assert_eq!(attached.len(), 3);
    }

    #[test]
    fn the_primary_comes_from_one_place() {
        let mut config = PlexusConfig::from_map(
            json!({"name": "plexus", "cniVersion": "1.0.0", "delegates": [{"name": "a", "type": "x"}]})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            primary_network(&config, None),
            PrimaryNetwork::FirstDelegate
        );
        config.cluster_network = Some("cbr0".into());
        assert_eq!(
            primary_network(&config, None),
            PrimaryNetwork::ClusterNetwork("cbr0".into())
        );
        let selected = NetworkSelection::new("kube-system", "other");
        assert_eq!(
            primary_network(&config, Some(selected.clone())),
            PrimaryNetwork::Selected(Box::new(selected))
        );
    }
}
