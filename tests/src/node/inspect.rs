//! What the tests check on the node's pods: their addresses as the pod sees them, their
//! network-status, plexus-ipam's allocations and files left on the node.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;
use serde_json::Value;

use super::{KubeNode, NAMESPACE};
use crate::cluster::IPAM_NAMESPACE;

impl KubeNode {
    /// The IPv4 addresses of each interface of `pod` but `lo`, from `kubectl exec … ip -o addr`.
    pub fn exec_addresses(&self, pod: &str) -> BTreeMap<String, Vec<Ipv4Net>> {
        let out = self
            .kubectl(&["exec", pod, "-n", NAMESPACE, "--", "ip", "-o", "addr"])
            .unwrap();
        let mut found: BTreeMap<String, Vec<Ipv4Net>> = BTreeMap::new();
        for line in out.lines() {
            // `2: eth0    inet 10.42.0.5/24 brd 10.42.0.255 scope global eth0\ ...`
            let words: Vec<&str> = line.split_whitespace().collect();
            if let [_, ifname, "inet", address, ..] = words[..] {
                if ifname != "lo" {
                    found
                        .entry(ifname.to_string())
                        .or_default()
                        .push(address.parse().unwrap());
                }
            }
        }
        found
    }

    /// The pod's network-status, read with `kubectl get pod -o jsonpath`.
    pub fn network_status(&self, pod: &str) -> Vec<Value> {
        let text = self
            .kubectl(&[
                "get",
                "pod",
                pod,
                "-n",
                NAMESPACE,
                "-o",
                r"jsonpath={.metadata.annotations.k8s\.v1\.cni\.cncf\.io/network-status}",
            ])
            .unwrap();
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("network-status of {pod}: {e}: {text}"))
    }

    /// Asserts that `pod` has exactly the interfaces of `expected` (name, subnet), each with
    /// one address in its subnet, both in the pod (`kubectl exec`) and in its network-status,
    /// and `eth0` as the default; returns the addresses.
    pub fn check_interfaces(
        &self,
        pod: &str,
        expected: &[(&str, &str)],
    ) -> BTreeMap<String, Ipv4Addr> {
        let seen = self.exec_addresses(pod);
        println!("{pod}: ip -o addr: {seen:?}");
        let names: BTreeSet<&str> = seen.keys().map(String::as_str).collect();
        let wanted: BTreeSet<&str> = expected.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, wanted, "interfaces of {pod}");
        let status = self.network_status(pod);
        println!(
            "{pod}: network-status: {}",
            serde_json::to_string(&status).unwrap()
        );
        let reported = status_addresses(&status);
        let mut addresses = BTreeMap::new();
        for (ifname, net) in expected {
            let [address] = seen[*ifname][..] else {
                panic!("{pod} {ifname}: {:?}", seen[*ifname]);
            };
            let subnet: Ipv4Net = net.parse().unwrap();
            assert!(
                subnet.contains(&address.addr()),
                "{pod} {ifname} {address} not in {net}"
            );
            assert_eq!(
                reported.get(*ifname),
                Some(&vec![address.addr()]),
                "{pod}: network-status of {ifname}"
            );
            addresses.insert(ifname.to_string(), address.addr());
        }
        let default: Vec<&str> = status
            .iter()
            .filter(|e| e["default"] == true)
            .filter_map(|e| e["interface"].as_str())
            .collect();
        assert_eq!(default, ["eth0"], "{pod}: the default network");
        addresses
    }

    /// The IPv4 allocations of plexus-ipam's IPAMBlocks, as `address -> pod name`.
    pub fn ipam_allocations(&self) -> BTreeMap<Ipv4Addr, String> {
        let text = self
            .kubectl(&["get", "ipamblocks", "-n", IPAM_NAMESPACE, "-o", "json"])
            .unwrap();
        let list: Value = serde_json::from_str(&text).unwrap();
        let mut found = BTreeMap::new();
        for block in list["items"].as_array().into_iter().flatten() {
            for (address, owner) in block["spec"]["allocations"]
                .as_object()
                .into_iter()
                .flatten()
            {
                let address: Ipv4Addr = address
                    .parse()
                    .unwrap_or_else(|e| panic!("allocation {address}: {e}"));
                let pod = owner["podName"].as_str().unwrap_or("?").to_string();
                assert!(found.insert(address, pod).is_none(), "{address} twice");
            }
        }
        found
    }

    /// host-local's leases of the primary network left on the node (files named by an
    /// address).
    pub fn primary_leases(&self) -> Vec<String> {
        files_under(&self.leases_dir())
            .into_iter()
            .filter(|f| {
                Path::new(f)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.parse::<Ipv4Addr>().is_ok())
            })
            .collect()
    }
}

/// Each interface of a network-status with its IPv4 addresses.
pub fn status_addresses(status: &[Value]) -> BTreeMap<String, Vec<Ipv4Addr>> {
    status
        .iter()
        .map(|entry| {
            let ips = entry["ips"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|ip| ip.as_str()?.parse().ok())
                .collect();
            (entry["interface"].as_str().unwrap_or("?").to_string(), ips)
        })
        .collect()
}

/// The files under `dir` (recursively); none if it is missing.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path.display().to_string());
            }
        }
    }
    found
}
