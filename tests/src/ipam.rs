//! Small values the plexus-ipam tests build again and again: a pool, an owner, an address.

use std::net::IpAddr;

use plexus_ipam::range::IpRange;
use plexus_ipam::store::{Owner, Pool};

/// The range `cidr` with no start, end, gateway or exclusions.
pub fn range(cidr: &str) -> IpRange {
    IpRange::parse(cidr, None, None, &[], None).expect("a valid range")
}

/// The pool of `network` over all of `cidr`, shared by overlapping ranges.
pub fn pool(network: &str, cidr: &str) -> Pool {
    Pool {
        network: network.into(),
        range: range(cidr),
        overlapping: true,
    }
}

/// The `net1` of pod `namespace/pod` on `node`, with a uid and container id made from its name.
pub fn owner_in(namespace: &str, pod: &str, node: &str) -> Owner {
    Owner {
        pod_namespace: namespace.into(),
        pod_name: pod.into(),
        pod_uid: format!("uid-{pod}"),
        container_id: format!("ctr-{pod}"),
        ifname: "net1".into(),
        node: node.into(),
        claim: String::new(),
    }
}

/// [`owner_in`] the `default` namespace.
pub fn owner(pod: &str, node: &str) -> Owner {
    owner_in("default", pod, node)
}

/// `s` as an address.
pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address")
}
