//! Who owns the pod's default route: the decisions behind the network selection key
//! `default-route` (multi-net-spec 4.1.2.1.9), without touching any network namespace.
//!
//! The rules, and where they differ from Multus:
//!
//! * At most one selection may carry `default-route` ([`owner`] refuses a second one). Multus only
//!   counts gateways over all selections, so it accepts an IPv4 gateway on one selection and an
//!   IPv6 gateway on another; the specification does not, and neither does Plexus.
//! * The owner may name at most one IPv4 and one IPv6 gateway (Multus: "does not support ECMP").
//! * When there is an owner, the default routes of every attachment, the cluster network and the
//!   owner included, are removed (both families); then the owner gets one default route through
//!   each of its gateways. An empty list therefore means "this pod has no default route", as in
//!   Multus, where an empty list marks every attachment for default-route removal and adds none.
//!   (Multus keeps a default route the owner's own plugin installed in a family it has a gateway
//!   for, next to the one it adds; Plexus replaces it, so the pod ends with exactly the asked
//!   gateways.) [`DefaultRoute::gateways_for`] says which gateways each attachment gets; [`apply`]
//!   strips a result's default routes and adds those.
//! * Without an owner nothing changes.

use std::net::IpAddr;

use ipnet::IpNet;
use plexus_cni::result::{CniResult, Route};
use plexus_cni::{CniError, ErrorCode};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::selection::NetworkSelection;

/// The attachment that owns the pod's default route, and its gateways.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefaultRoute {
    /// The owner's position in the attachment list given to [`owner`].
    pub index: usize,
    /// At most one IPv4 and one IPv6 gateway, in the order written; may be empty. IPv4-mapped
    /// IPv6 addresses (`::ffff:a.b.c.d`) are given as IPv4, as Go's `To4` reads them.
    pub gateways: Vec<IpAddr>,
}

impl DefaultRoute {
    /// The gateways attachment `index` gets a default route through: the owner's, or none.
    pub fn gateways_for(&self, index: usize) -> &[IpAddr] {
        if index == self.index {
            &self.gateways
        } else {
            &[]
        }
    }
}

/// Why the `default-route` requests cannot be honoured (code 7).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DefaultRouteError {
    /// Two selections carry `default-route`.
    #[error(
        "only one network may carry \"default-route\", but {first_name:?} (attachment {first}) \
         and {second_name:?} (attachment {second}) both do"
    )]
    SeveralOwners {
        /// The first owner's attachment index.
        first: usize,
        /// Its `namespace/name`.
        first_name: String,
        /// The second one's attachment index.
        second: usize,
        /// Its `namespace/name`.
        second_name: String,
    },
    /// More than one gateway of a family (that would be ECMP, which neither Multus nor Plexus
    /// supports).
    #[error(
        "network {name:?} (attachment {index}) asks for more than one {family} \"default-route\" \
         gateway ({gateways}); give at most one IPv4 and one IPv6 gateway"
    )]
    TooManyGateways {
        /// The attachment index.
        index: usize,
        /// Its `namespace/name`.
        name: String,
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// The gateways of that family, comma-separated.
        gateways: String,
    },
}

impl From<DefaultRouteError> for CniError {
    fn from(e: DefaultRouteError) -> Self {
        CniError::new(ErrorCode::InvalidNetworkConfig, e.to_string())
    }
}

/// The owner of the default route among the attachments, in attachment order (`None` for an
/// attachment without a selection, such as the cluster network). `Ok(None)` when no selection
/// carries `default-route`.
pub fn owner(
    selections: &[Option<&NetworkSelection>],
) -> Result<Option<DefaultRoute>, DefaultRouteError> {
    let mut found: Option<(usize, &NetworkSelection)> = None;
    for (index, sel) in selections.iter().enumerate() {
        let Some(sel) = sel.filter(|s| s.default_route.is_some()) else {
            continue;
        };
        if let Some((first, first_sel)) = found {
            return Err(DefaultRouteError::SeveralOwners {
                first,
                first_name: qualified(first_sel),
                second: index,
                second_name: qualified(sel),
            });
        }
        found = Some((index, sel));
    }
    let Some((index, sel)) = found else {
        return Ok(None);
    };
    let gateways: Vec<IpAddr> = sel
        .default_route
        .iter()
        .flatten()
        .map(|gw| gw.to_canonical())
        .collect();
    for (family, v4) in [("IPv4", true), ("IPv6", false)] {
        let of_family: Vec<String> = gateways
            .iter()
            .filter(|gw| gw.is_ipv4() == v4)
            .map(ToString::to_string)
            .collect();
        if of_family.len() > 1 {
            return Err(DefaultRouteError::TooManyGateways {
                index,
                name: qualified(sel),
                family,
                gateways: of_family.join(", "),
            });
        }
    }
    Ok(Some(DefaultRoute { index, gateways }))
}

fn qualified(sel: &NetworkSelection) -> String {
    format!("{}/{}", sel.namespace, sel.name)
}

/// Removes the default routes (prefix length 0) of the given families from a result.
pub fn strip_default_routes(result: &mut CniResult, v4: bool, v6: bool) {
    result.routes.retain(|r| {
        let strip = match r.dst {
            IpNet::V4(_) => v4,
            IpNet::V6(_) => v6,
        };
        !(r.is_default() && strip)
    });
}

/// Adds a default route through `gw` to a result (`0.0.0.0/0` or `::/0`), unless the same
/// route is already there. With `iface_index`, the addresses of `gw`'s family on that result
/// interface whose subnet contains `gw` also get it as their `gateway`, so that the
/// network-status `default` mark and readers of `ips[].gateway` see it.
pub fn set_default_gateway(result: &mut CniResult, gw: IpAddr, iface_index: Option<usize>) {
    let gw = gw.to_canonical();
    let dst = match gw {
        IpAddr::V4(_) => IpNet::V4(Default::default()),
        IpAddr::V6(_) => IpNet::V6(Default::default()),
    };
    if !result
        .routes
        .iter()
        .any(|r| r.dst == dst && r.gw == Some(gw))
    {
        let mut route = Route::new(dst);
        route.gw = Some(gw);
        result.routes.push(route);
    }
    if let Some(iface) = iface_index {
        for ip in result
            .ips
            .iter_mut()
            .filter(|ip| ip.interface == Some(iface) && ip.address.contains(&gw))
        {
            ip.gateway = Some(gw);
        }
    }
}

/// Applies the owner's decision to the result of attachment `index`: removes its default
/// routes and, on the owner, adds one through each gateway (see [`set_default_gateway`];
/// `iface_index` is the result interface the routes are on).
pub fn apply(
    owner: &DefaultRoute,
    index: usize,
    result: &mut CniResult,
    iface_index: Option<usize>,
) {
    // Every attachment loses its default routes of both families: the owner's are replaced by
    // its gateways.
    strip_default_routes(result, true, true);
    for gw in owner.gateways_for(index) {
        set_default_gateway(result, *gw, iface_index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexus_cni::SpecVersion;
    use serde_json::{json, Value};

    fn sel(name: &str, gws: Option<&[&str]>) -> NetworkSelection {
        NetworkSelection {
            default_route: gws.map(|g| g.iter().map(|s| s.parse().unwrap()).collect()),
            ..NetworkSelection::new("ns", name)
        }
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn owners() {
        let none = sel("a", None);
        let v4 = sel("b", Some(&["10.1.1.254"]));
        let dual = sel("c", Some(&["2001:db8::1", "10.1.1.254"]));
        let empty = sel("d", Some(&[]));
        let mapped = sel("e", Some(&["::ffff:10.0.0.1"]));
        let ok: Vec<(Vec<Option<&NetworkSelection>>, Option<DefaultRoute>)> = vec![
            (vec![], None),
            (vec![None], None),
            (vec![None, Some(&none), Some(&none)], None),
            (
                vec![None, Some(&none), Some(&v4)],
                Some(DefaultRoute {
                    index: 2,
                    gateways: ips(&["10.1.1.254"]),
                }),
            ),
            (
                vec![None, Some(&dual), Some(&none)],
                Some(DefaultRoute {
                    index: 1,
                    gateways: ips(&["2001:db8::1", "10.1.1.254"]),
                }),
            ),
            (
                vec![None, Some(&empty)],
                Some(DefaultRoute {
                    index: 1,
                    gateways: vec![],
                }),
            ),
            (
                vec![Some(&mapped)],
                Some(DefaultRoute {
                    index: 0,
                    gateways: ips(&["10.0.0.1"]),
                }),
            ),
        ];
        for (list, want) in ok {
            assert_eq!(owner(&list).unwrap(), want, "{list:?}");
        }

        let two_v4 = sel("f", Some(&["10.0.0.1", "10.0.0.2"]));
        let same_twice = sel("g", Some(&["10.0.0.1", "10.0.0.1"]));
        let two_v6 = sel("h", Some(&["2001:db8::1", "10.0.0.1", "2001:db8::2"]));
        let v4_mapped_and_v4 = sel("i", Some(&["10.0.0.1", "::ffff:10.0.0.2"]));
        let v6 = sel("j", Some(&["2001:db8::1"]));
        let bad: Vec<(Vec<Option<&NetworkSelection>>, &str)> = vec![
            (
                vec![None, Some(&v4), Some(&empty)],
                "\"ns/b\" (attachment 1) and \"ns/d\" (attachment 2)",
            ),
            // Multus accepts split v4/v6 ownership; the specification does not.
            (vec![None, Some(&v4), Some(&v6)], "only one network"),
            (vec![None, Some(&two_v4)], "more than one IPv4"),
            (vec![None, Some(&same_twice)], "10.0.0.1, 10.0.0.1"),
            (vec![None, Some(&two_v6)], "more than one IPv6"),
            (vec![Some(&v4_mapped_and_v4)], "more than one IPv4"),
        ];
        for (list, want) in bad {
            let e = owner(&list).unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
            assert_eq!(CniError::from(e).code, 7);
        }
    }

    fn result(v: Value) -> CniResult {
        CniResult::from_value(&v, SpecVersion::V1_0_0).unwrap()
    }

    fn routes(r: &CniResult) -> Value {
        r.to_value(SpecVersion::V1_0_0)
            .get("routes")
            .cloned()
            .unwrap_or(json!([]))
    }

    fn base() -> CniResult {
        result(json!({"cniVersion":"1.0.0",
            "interfaces":[{"name":"net1","sandbox":"/ns"}],
            "ips":[{"address":"10.1.1.11/24","interface":0},{"address":"2001:db8::11/64","interface":0}],
            "routes":[{"dst":"0.0.0.0/0","gw":"10.1.1.1"},{"dst":"10.0.0.0/8","gw":"10.1.1.1"},
                      {"dst":"::/0","gw":"2001:db8::1"},{"dst":"0.0.0.0/0"}]}))
    }

    #[test]
    fn strip() {
        let cases = [
            (
                (false, false),
                json!([{"dst":"0.0.0.0/0","gw":"10.1.1.1"},{"dst":"10.0.0.0/8","gw":"10.1.1.1"},{"dst":"::/0","gw":"2001:db8::1"},{"dst":"0.0.0.0/0"}]),
            ),
            (
                (true, false),
                json!([{"dst":"10.0.0.0/8","gw":"10.1.1.1"},{"dst":"::/0","gw":"2001:db8::1"}]),
            ),
            (
                (false, true),
                json!([{"dst":"0.0.0.0/0","gw":"10.1.1.1"},{"dst":"10.0.0.0/8","gw":"10.1.1.1"},{"dst":"0.0.0.0/0"}]),
            ),
            ((true, true), json!([{"dst":"10.0.0.0/8","gw":"10.1.1.1"}])),
        ];
        for ((v4, v6), want) in cases {
            let mut r = base();
            strip_default_routes(&mut r, v4, v6);
            assert_eq!(routes(&r), want, "{v4} {v6}");
        }
        let mut empty = CniResult::default();
        strip_default_routes(&mut empty, true, true);
        assert_eq!(empty, CniResult::default());
    }

    #[test]
    fn set_gateway() {
        let mut r = base();
        strip_default_routes(&mut r, true, true);
        set_default_gateway(&mut r, "10.1.1.254".parse().unwrap(), Some(0));
        set_default_gateway(&mut r, "10.1.1.254".parse().unwrap(), Some(0));
        set_default_gateway(&mut r, "2001:db8::fe".parse().unwrap(), None);
        set_default_gateway(&mut r, "::ffff:10.1.1.253".parse().unwrap(), Some(5));
        assert_eq!(
            routes(&r),
            json!([{"dst":"10.0.0.0/8","gw":"10.1.1.1"},{"dst":"0.0.0.0/0","gw":"10.1.1.254"},
                   {"dst":"::/0","gw":"2001:db8::fe"},{"dst":"0.0.0.0/0","gw":"10.1.1.253"}])
        );
        assert_eq!(r.ips[0].gateway, Some("10.1.1.254".parse().unwrap()));
        assert_eq!(r.ips[1].gateway, None);
        // A gateway outside the interface's subnets is routed but not recorded as ips[].gateway.
        let mut r = base();
        set_default_gateway(&mut r, "192.168.0.1".parse().unwrap(), Some(0));
        assert!(r.ips.iter().all(|ip| ip.gateway.is_none()));
    }

    #[test]
    fn apply_to_every_attachment() {
        let owner = DefaultRoute {
            index: 2,
            gateways: ips(&["10.1.1.254"]),
        };
        assert_eq!(owner.gateways_for(0), &[] as &[IpAddr]);
        assert_eq!(owner.gateways_for(2), ips(&["10.1.1.254"]).as_slice());
        let mut cluster = base();
        apply(&owner, 0, &mut cluster, Some(0));
        assert_eq!(
            routes(&cluster),
            json!([{"dst":"10.0.0.0/8","gw":"10.1.1.1"}])
        );
        let mut own = base();
        apply(&owner, 2, &mut own, Some(0));
        assert_eq!(
            routes(&own),
            json!([{"dst":"10.0.0.0/8","gw":"10.1.1.1"},{"dst":"0.0.0.0/0","gw":"10.1.1.254"}])
        );
        // An empty list: no default route anywhere.
        let nobody = DefaultRoute {
            index: 1,
            gateways: vec![],
        };
        for i in 0..3 {
            let mut r = base();
            apply(&nobody, i, &mut r, Some(0));
            assert_eq!(routes(&r), json!([{"dst":"10.0.0.0/8","gw":"10.1.1.1"}]));
        }
    }
}
