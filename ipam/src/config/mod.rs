//! The plugin's configuration: Whereabouts's keys, so that a user switches by changing
//! `"type"`, plus Plexus's backend choice. Everything is checked at load: an invalid value is a
//! CNI error 7 that names the key, never a failure at the first allocation.
//!
//! Where the keys come from:
//!
//! * the `ipam` object of the plugin's configuration (a delegating plugin such as macvlan passes
//!   its whole configuration; the IPAM keys are under `ipam`). A configuration list is accepted
//!   too: its first plugin's `ipam` is used, as Whereabouts's reconciler reads it;
//! * merged with Whereabouts's flat file: `configuration_path` (a file, or a directory holding
//!   `whereabouts.conf`), else the first of `/etc/kubernetes/cni/net.d/whereabouts.d/whereabouts.conf`,
//!   `/etc/cni/net.d/whereabouts.d/whereabouts.conf` and
//!   `/host/etc/cni/net.d/whereabouts.d/whereabouts.conf` that exists. Its top-level keys are
//!   IPAM keys. As with Whereabouts's `mergo.Merge`, a key of the CNI configuration wins unless
//!   it is absent, `null` or a zero value (`""`, `false`, `0`, `[]`); objects (`kubernetes`)
//!   are merged key by key; `enable_overlapping_ranges` comes from the CNI configuration only
//!   (Whereabouts sets its default, true, before the merge, so the flat file's never applies).
//!
//! The keys: `type` (`plexus-ipam` or `whereabouts`), `range` (CIDR or `start-end/prefix`),
//! `range_start`, `range_end`, `exclude` (CIDRs or bare addresses), `ipRanges` (a list of
//! `{range, range_start, range_end, exclude}`; a top-level `range` comes first), `gateway`
//! (never handed out; put on the result's addresses of its family), `network_name`,
//! `enable_overlapping_ranges` (default true), `routes`, `dns`, `addresses` (static
//! `{address, gateway}` entries appended to the result), `log_file`, `log_level`,
//! `kubernetes.kubeconfig`, `kubernetes.namespace` or `namespace` (default `kube-system`),
//! `configuration_path`, and Plexus's `backend` (`kubernetes`, `etcd` or `local`), `local_path`
//! (default `/var/lib/cni/plexus-ipam`), `etcd_endpoints` (a list, or a comma-separated string;
//! Whereabouts's `etcd_host` is read the same way), `etcd_prefix` (default `/plexus-ipam`) and
//! Whereabouts's `etcd_username`, `etcd_password`, `etcd_cert_file`, `etcd_key_file`,
//! `etcd_ca_cert_file`.
//!
//! Without `backend`: Kubernetes when a kubeconfig is set, else etcd when etcd endpoints are set
//! (an old Whereabouts etcd configuration keeps a cluster-wide store), else the local store.
//!
//! `agentSocket` (default `/run/plexus/plexusd.sock`) and `agentConnectTimeoutMs` (default 200):
//! where a Kubernetes ADD finds the node agent `plexusd`, and how long it waits for the socket
//! before doing the work itself ([`Agent`]).
//!
//! `whereabouts_import_check` (default true): the Kubernetes store's guard against a
//! forgotten import of Whereabouts's allocations.
//!
//! The Kubernetes store's block size: Plexus's `block_size_v4` and `block_size_v6` (`"/26"`,
//! `"26"` or `26`; defaults /26 and /122), and Whereabouts's fast-IPAM `node_slice_size`,
//! which becomes the block size of the ranges' family: a node allocates from blocks of that
//! size it holds, as a Whereabouts node allocates from its slice (see [`block_sizes`]).
//!
//! Accepted and ignored: Whereabouts's `leader_lease_duration`, `leader_renew_deadline`,
//! `leader_retry_period`, `sleep_for_race`, `datastore`, `reconciler_cron_expression`,
//! `kubernetes.k8s_api_root`, and any key it does not know. CNI_ARGS `IP=`/`GATEWAY=` are not
//! read.
//!
//! The node's name is `NODE_NAME`, else the host name.
//!
//! Reading is three steps: [`merge`] finds the `ipam` object and merges the flat file into
//! it, serde reads the keys ([`raw`]), and [`validate`] checks each value and builds the
//! [`IpamConfig`], with an error that names the key.

mod blocks;
mod merge;
mod raw;
mod validate;

use std::net::IpAddr;
use std::path::PathBuf;

use plexus_cni::result::{Dns, IpConfig, Route};
use plexus_cni::{CniError, ErrorCode, SpecVersion};
use serde_json::{Map, Value};

use crate::range::IpRange;
use crate::store::Pool;

pub use blocks::block_sizes;

/// The IPAM types this plugin answers to.
pub const IPAM_TYPES: [&str; 2] = ["plexus-ipam", "whereabouts"];

/// Where the local store lives by default.
pub const DEFAULT_LOCAL_PATH: &str = "/var/lib/cni/plexus-ipam";

/// The namespace of the Kubernetes objects by default.
pub const DEFAULT_NAMESPACE: &str = "kube-system";

/// The key prefix in etcd by default.
pub const DEFAULT_ETCD_PREFIX: &str = "/plexus-ipam";

/// Whereabouts's flat-file locations, searched in order after `configuration_path`.
pub const FLAT_FILE_PATHS: [&str; 3] = [
    "/etc/kubernetes/cni/net.d/whereabouts.d/whereabouts.conf",
    "/etc/cni/net.d/whereabouts.d/whereabouts.conf",
    "/host/etc/cni/net.d/whereabouts.d/whereabouts.conf",
];

/// The fewest addresses a block may hold (a /30, a /126).
pub const MIN_BLOCK_ADDRESSES: u32 = 4;
/// The most addresses a block may hold (a /20, a /116): one object holds every allocation of
/// its block, and the API server's objects are limited to about 1.5 MB.
pub const MAX_BLOCK_ADDRESSES: u32 = 4096;

/// Where allocations are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// Kubernetes objects, through the API server.
    Kubernetes {
        /// `kubernetes.kubeconfig`.
        kubeconfig: PathBuf,
        /// `kubernetes.namespace` or `namespace` (default `kube-system`).
        namespace: String,
    },
    /// An etcd cluster.
    Etcd {
        /// `etcd_endpoints` or `etcd_host`.
        endpoints: Vec<String>,
        /// `etcd_prefix` (default `/plexus-ipam`).
        prefix: String,
    },
    /// The embedded local store (a file under a lock on this node).
    Local {
        /// `local_path` (default `/var/lib/cni/plexus-ipam`).
        path: PathBuf,
    },
}

/// Whereabouts's etcd credentials and TLS files, for the etcd backend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdAuth {
    /// `etcd_username`.
    pub username: Option<String>,
    /// `etcd_password`.
    pub password: Option<String>,
    /// `etcd_cert_file`: the client certificate.
    pub cert_file: Option<PathBuf>,
    /// `etcd_key_file`: the client key.
    pub key_file: Option<PathBuf>,
    /// `etcd_ca_cert_file`: the CA to trust.
    pub ca_cert_file: Option<PathBuf>,
}

/// The checked configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct IpamConfig {
    /// The CNI network's `name`.
    pub name: String,
    /// The IPAM `type` as given (`plexus-ipam` or `whereabouts`).
    pub ipam_type: String,
    /// The ranges, one address from each: the top-level `range` first, then `ipRanges`.
    pub ranges: Vec<IpRange>,
    /// `gateway`.
    pub gateway: Option<IpAddr>,
    /// `network_name` (empty by default).
    pub network_name: String,
    /// `enable_overlapping_ranges` (default true).
    pub enable_overlapping_ranges: bool,
    /// `routes`, passed through to the result.
    pub routes: Vec<Route>,
    /// `dns`, passed through to the result.
    pub dns: Dns,
    /// `addresses`: static addresses appended to the result.
    pub addresses: Vec<IpConfig>,
    /// `log_file`.
    pub log_file: Option<PathBuf>,
    /// `log_level`.
    pub log_level: Option<String>,
    /// `kubernetes.kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// Where allocations are stored.
    pub backend: Backend,
    /// etcd credentials and TLS files.
    pub etcd_auth: EtcdAuth,
    /// The flat file merged in, if one was found.
    pub flat_file: Option<PathBuf>,
    /// This node's name: `NODE_NAME`, else the host name.
    pub node_name: String,
    /// The Kubernetes store's IPv4 block prefix length (`block_size_v4`, or
    /// `node_slice_size` for IPv4 ranges); `None`: the default.
    pub block_size_v4: Option<u8>,
    /// The Kubernetes store's IPv6 block prefix length (`block_size_v6`, or
    /// `node_slice_size` for IPv6 ranges); `None`: the default.
    pub block_size_v6: Option<u8>,
    /// `whereabouts_import_check` (default true): the Kubernetes store refuses to create the
    /// first block of a range while a Whereabouts `IPPool` holds unimported allocations in it.
    pub whereabouts_import_check: bool,
    /// Where the node agent listens and how long to wait for it (`agentSocket`,
    /// `agentConnectTimeoutMs`).
    pub agent: Agent,
    /// The `ipam` object as merged with the flat file (without `configuration_path`): what the
    /// node agent is sent, which it validates again.
    pub merged: Map<String, Value>,
}

/// The node agent `plexusd` as this configuration reaches it: a Kubernetes ADD asks it first
/// and does the work itself when the socket is missing, refuses, or does not answer within
/// `connect_timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// `agentSocket` (default [`DEFAULT_AGENT_SOCKET`]).
    pub socket: PathBuf,
    /// `agentConnectTimeoutMs` (default [`DEFAULT_AGENT_CONNECT_TIMEOUT_MS`]).
    pub connect_timeout: std::time::Duration,
}

/// The node agent's socket unless `agentSocket` says otherwise.
pub const DEFAULT_AGENT_SOCKET: &str = "/run/plexus/plexusd.sock";
/// How long to wait for the node agent's socket to connect, unless `agentConnectTimeoutMs`
/// says otherwise.
pub const DEFAULT_AGENT_CONNECT_TIMEOUT_MS: u64 = 200;

impl IpamConfig {
    /// Reads the configuration from the plugin's whole stdin configuration, merged with the
    /// first flat file found, with this node's name.
    pub fn load(stdin_config: &Map<String, Value>) -> Result<IpamConfig, CniError> {
        let candidates: Vec<PathBuf> = FLAT_FILE_PATHS.iter().map(PathBuf::from).collect();
        Self::load_with(stdin_config, &candidates, &node_name())
    }

    /// As [`IpamConfig::load`], with the flat-file locations (after `configuration_path`) and
    /// the node's name given.
    pub fn load_with(
        stdin_config: &Map<String, Value>,
        flat_files: &[PathBuf],
        node_name: &str,
    ) -> Result<IpamConfig, CniError> {
        let name = match stdin_config.get("name") {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        };
        let mut ipam = merge::ipam_object(stdin_config)?;
        let ipam_type = validate::ipam_type(&ipam)?;
        let flat_file = merge::flat_file(&mut ipam, flat_files)?;
        let mut merged = ipam.clone();
        merged.remove("configuration_path");
        let raw: raw::RawIpam = serde_json::from_value(Value::Object(ipam))
            .map_err(|e| invalid(format!("ipam: {e}")))?;
        validate::validate(
            &raw,
            validate::Given {
                name,
                ipam_type,
                flat_file,
                node_name: node_name.to_string(),
                merged,
            },
        )
    }

    /// The pools of this configuration, in the order of [`IpamConfig::ranges`].
    pub fn pools(&self) -> Vec<Pool> {
        self.ranges
            .iter()
            .map(|range| Pool {
                network: self.network_name.clone(),
                range: range.clone(),
                overlapping: self.enable_overlapping_ranges,
            })
            .collect()
    }

    /// Refuses a configuration that gives more than one address of a family at a version
    /// (0.1.0, 0.2.0) whose result can hold only one.
    pub fn check_version(&self, version: SpecVersion) -> Result<(), CniError> {
        if !version.is_legacy() {
            return Ok(());
        }
        let v4 = self.ranges.iter().filter(|r| r.is_ipv4()).count()
            + self
                .addresses
                .iter()
                .filter(|a| a.address.addr().is_ipv4())
                .count();
        let v6 = self.ranges.len() + self.addresses.len() - v4;
        if v4 > 1 || v6 > 1 {
            return Err(invalid(format!(
                "CNI version {} does not support more than 1 address per family",
                version.as_str()
            )));
        }
        Ok(())
    }
}

/// This node's name: `NODE_NAME`, else the host name.
pub fn node_name() -> String {
    if let Some(n) = std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()) {
        return n;
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(ErrorCode::InvalidNetworkConfig, msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn load(ipam: Value) -> Result<IpamConfig, CniError> {
        load_flat(ipam, &[])
    }

    fn load_flat(ipam: Value, flat: &[PathBuf]) -> Result<IpamConfig, CniError> {
        let conf = json!({"cniVersion": "1.0.0", "name": "net", "type": "macvlan", "ipam": ipam});
        IpamConfig::load_with(conf.as_object().unwrap(), flat, "node-a")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn minimal_configs() {
        for t in IPAM_TYPES {
            let c = load(json!({"type": t, "range": "10.0.0.0/24"})).unwrap();
            assert_eq!(c.ipam_type, t);
            assert_eq!(c.name, "net");
            assert_eq!(c.ranges.len(), 1);
            assert!(c.enable_overlapping_ranges);
            assert_eq!(c.network_name, "");
            assert_eq!(c.node_name, "node-a");
            assert_eq!(
                c.backend,
                Backend::Local {
                    path: PathBuf::from(DEFAULT_LOCAL_PATH)
                }
            );
            let pools = c.pools();
            assert_eq!(pools.len(), 1);
            assert!(pools[0].overlapping);
        }
    }

    #[test]
    fn every_whereabouts_key() {
        let c = load(json!({
            "type": "whereabouts",
            "range": "192.168.2.225/28",
            "range_start": "192.168.2.226",
            "range_end": "192.168.2.236",
            "exclude": ["192.168.2.229/30", "192.168.2.236"],
            "ipRanges": [
                {"range": "abcd::/64", "range_start": "abcd::10", "exclude": ["abcd::11"]},
                {"range": "10.9.0.5-10.9.0.9/24"}
            ],
            "gateway": "192.168.2.230",
            "network_name": "blue",
            "enable_overlapping_ranges": false,
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.8.0.0/16", "gw": "192.168.2.225"}],
            "dns": {"nameservers": ["10.0.0.53"], "search": ["svc"]},
            "addresses": [{"address": "10.7.0.5/24", "gateway": "10.7.0.1"}],
            "log_file": "/tmp/x.log",
            "log_level": "debug",
            "kubernetes": {"kubeconfig": "/etc/kc", "k8s_api_root": "ignored"},
            "leader_lease_duration": 1500,
            "leader_renew_deadline": 1000,
            "leader_retry_period": 500,
            "sleep_for_race": 1,
            "datastore": "kubernetes",
            "reconciler_cron_expression": "30 4 * * *",
            "something_new": {"x": 1}
        }))
        .unwrap();
        let cidrs: Vec<String> = c.ranges.iter().map(|r| r.cidr().to_string()).collect();
        assert_eq!(cidrs, ["192.168.2.224/28", "abcd::/64", "10.9.0.0/24"]);
        assert_eq!(c.ranges[0].first_address(), ip("192.168.2.226"));
        assert_eq!(c.ranges[0].last_address(), ip("192.168.2.236"));
        assert!(!c.ranges[0].is_usable(ip("192.168.2.230")));
        assert!(!c.ranges[0].is_usable(ip("192.168.2.236")));
        assert_eq!(c.ranges[1].first_address(), ip("abcd::10"));
        assert!(!c.ranges[1].is_usable(ip("abcd::11")));
        assert_eq!(c.ranges[2].first_address(), ip("10.9.0.5"));
        assert_eq!(c.ranges[2].last_address(), ip("10.9.0.9"));
        assert_eq!(c.gateway, Some(ip("192.168.2.230")));
        assert_eq!(c.network_name, "blue");
        assert!(!c.enable_overlapping_ranges);
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.routes[1].gw, Some(ip("192.168.2.225")));
        assert_eq!(c.dns.nameservers, ["10.0.0.53"]);
        assert_eq!(c.addresses[0].address.to_string(), "10.7.0.5/24");
        assert_eq!(c.log_file, Some(PathBuf::from("/tmp/x.log")));
        assert_eq!(c.log_level.as_deref(), Some("debug"));
        assert_eq!(c.kubeconfig, Some(PathBuf::from("/etc/kc")));
        assert_eq!(
            c.backend,
            Backend::Kubernetes {
                kubeconfig: "/etc/kc".into(),
                namespace: "kube-system".into()
            }
        );
    }

    #[test]
    fn block_sizes_and_node_slice_size() {
        let v4 = |extra: Value| {
            let mut v = json!({"type": "whereabouts", "range": "10.0.0.0/16"});
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            load(v)
        };
        let c = v4(json!({})).unwrap();
        assert_eq!((c.block_size_v4, c.block_size_v6), (None, None));
        let c = v4(json!({"block_size_v4": "/28", "block_size_v6": 120})).unwrap();
        assert_eq!((c.block_size_v4, c.block_size_v6), (Some(28), Some(120)));
        let c = v4(json!({"block_size_v4": "24"})).unwrap();
        assert_eq!(c.block_size_v4, Some(24));
        // node_slice_size becomes the block size of the ranges' family.
        let c = v4(json!({"node_slice_size": "/22"})).unwrap();
        assert_eq!((c.block_size_v4, c.block_size_v6), (Some(22), None));
        let c = v4(json!({"node_slice_size": "22", "block_size_v4": "/22"})).unwrap();
        assert_eq!(c.block_size_v4, Some(22));
        let c =
            load(json!({"type": "whereabouts", "range": "fd00::/64", "node_slice_size": "/120"}))
                .unwrap();
        assert_eq!((c.block_size_v4, c.block_size_v6), (None, Some(120)));
        // A block of a /28 range may be larger than the range (the range is one block).
        let c = load(json!({"type": "whereabouts", "range": "10.0.0.0/28", "block_size_v4": 24}))
            .unwrap();
        assert_eq!(c.block_size_v4, Some(24));
        for (extra, want) in [
            (json!({"block_size_v4": "/19"}), "ipam.block_size_v4: /19"),
            (json!({"block_size_v4": 31}), "ipam.block_size_v4: /31"),
            (json!({"block_size_v4": "/122"}), "IPv4 block size"),
            (json!({"block_size_v6": "/64"}), "ipam.block_size_v6: /64"),
            (json!({"block_size_v4": "big"}), "not a prefix length"),
            (json!({"block_size_v4": -1}), "not a prefix length"),
            (json!({"block_size_v4": [26]}), "not a prefix length"),
            (json!({"node_slice_size": "/8"}), "ipam.node_slice_size: /8"),
            (json!({"node_slice_size": "/x"}), "ipam.node_slice_size"),
            (
                json!({"node_slice_size": "/24", "block_size_v4": 26}),
                "disagrees with ipam.block_size_v4 /26",
            ),
            (
                json!({"node_slice_size": "/24", "ipRanges": [{"range": "fd00::/64"}]}),
                "both IPv4 and IPv6",
            ),
        ] {
            let err = v4(extra.clone()).unwrap_err();
            assert_eq!(err.code, 7, "{extra}");
            assert!(err.msg.contains(want), "{extra}: {}", err.msg);
        }
        let err =
            load(json!({"type": "whereabouts", "range": "10.0.0.0/26", "node_slice_size": "/24"}))
                .unwrap_err();
        assert!(
            err.msg.contains("larger than the range 10.0.0.0/26"),
            "{}",
            err.msg
        );
    }

    #[test]
    fn backend_choice() {
        let base = |extra: Value| {
            let mut v = json!({"type": "plexus-ipam", "range": "10.0.0.0/24"});
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            load(v)
        };
        assert_eq!(
            base(json!({"kubernetes": {"kubeconfig": "/k", "namespace": "plexus"}}))
                .unwrap()
                .backend,
            Backend::Kubernetes {
                kubeconfig: "/k".into(),
                namespace: "plexus".into()
            }
        );
        assert_eq!(
            base(json!({"kubernetes": {"kubeconfig": "/k"}, "namespace": "n2"}))
                .unwrap()
                .backend,
            Backend::Kubernetes {
                kubeconfig: "/k".into(),
                namespace: "n2".into()
            }
        );
        assert_eq!(
            base(
                json!({"kubernetes": {"kubeconfig": "/k"}, "backend": "local", "local_path": "/s"})
            )
            .unwrap()
            .backend,
            Backend::Local { path: "/s".into() }
        );
        assert_eq!(
            base(json!({"etcd_host": "etcd-a:2379, etcd-b:2379"}))
                .unwrap()
                .backend,
            Backend::Etcd {
                endpoints: vec!["etcd-a:2379".into(), "etcd-b:2379".into()],
                prefix: DEFAULT_ETCD_PREFIX.into()
            }
        );
        let c = base(
            json!({"backend": "etcd", "etcd_endpoints": ["http://e:2379"], "etcd_prefix": "/x",
                            "etcd_username": "u", "etcd_ca_cert_file": "/ca"}),
        )
        .unwrap();
        assert_eq!(
            c.backend,
            Backend::Etcd {
                endpoints: vec!["http://e:2379".into()],
                prefix: "/x".into()
            }
        );
        assert_eq!(c.etcd_auth.username.as_deref(), Some("u"));
        assert_eq!(c.etcd_auth.ca_cert_file, Some(PathBuf::from("/ca")));
        for (extra, key) in [
            (json!({"backend": "kubernetes"}), "kubeconfig"),
            (json!({"backend": "etcd"}), "etcd_endpoints"),
            (json!({"backend": "sqlite"}), "ipam.backend"),
            (json!({"backend": 1}), "ipam.backend"),
            (json!({"kubernetes": "x"}), "ipam.kubernetes"),
            (
                json!({"kubernetes": {"kubeconfig": 1}}),
                "ipam.kubernetes.kubeconfig",
            ),
            (json!({"etcd_endpoints": [1]}), "ipam.etcd_endpoints"),
            (json!({"local_path": false}), "ipam.local_path"),
        ] {
            let err = base(extra.clone()).unwrap_err();
            assert_eq!(err.code, 7, "{extra}");
            assert!(err.msg.contains(key), "{extra}: {}", err.msg);
        }
    }

    #[test]
    fn invalid_configs_name_the_key() {
        let cases: Vec<(Value, &str)> = vec![
            (
                json!({"type": "host-local", "range": "10.0.0.0/24"}),
                "ipam.type",
            ),
            (json!({"range": "10.0.0.0/24"}), "ipam.type"),
            (json!({"type": "whereabouts"}), "no range"),
            (json!({"type": "whereabouts", "range": 5}), "ipam.range"),
            (
                json!({"type": "whereabouts", "range": "10.0.0.0"}),
                "not a CIDR",
            ),
            (
                json!({"type": "whereabouts", "range": "10.0.0.0/32"}),
                "no usable addresses",
            ),
            (
                json!({"type": "whereabouts", "range": "10.0.0.0/24", "exclude": ["bogus"]}),
                "exclude",
            ),
            (
                json!({"type": "whereabouts", "range": "10.0.0.0/24", "exclude": "10.0.0.1"}),
                "ipam.exclude",
            ),
            (
                json!({"type": "whereabouts", "range": "10.0.0.0/24", "range_start": "x"}),
                "range_start",
            ),
            (
                json!({"type": "whereabouts", "range_start": "10.0.0.5", "ipRanges": [{"range": "10.0.0.0/24"}]}),
                "ipam.range_start",
            ),
            (
                json!({"type": "whereabouts", "ipRanges": {}}),
                "ipam.ipRanges",
            ),
            (
                json!({"type": "whereabouts", "ipRanges": [5]}),
                "ipam.ipRanges[0]",
            ),
            (
                json!({"type": "whereabouts", "ipRanges": [{"range_start": "10.0.0.1"}]}),
                "ipam.ipRanges[0].range",
            ),
            (
                json!({"type": "whereabouts", "ipRanges": [{"range": "10.0.0.0/24"}, {"range": "abcd::/64", "exclude": ["abcd::/999"]}]}),
                "ipam.ipRanges[1]",
            ),
            (
                json!({"type": "whereabouts", "range": "10.0.0.0/24", "gateway": "gw"}),
                "ipam.gateway",
            ),
            (
                json!({"type": "whereabouts", "range": "10.0.0.0/24", "enable_overlapping_ranges": "yes"}),
                "ipam.enable_overlapping_ranges",
            ),
            (
                json!({"type": "whereabouts", "range": "10.0.0.0/24", "network_name": 3}),
                "ipam.network_name",
            ),
            (
                json!({"type": "whereabouts", "range": "10.0.0.0/24", "routes": [{"dst": "x"}]}),
                "ipam.routes",
            ),
            (
                json!({"type": "whereabouts", "range": "10.0.0.0/24", "routes": {}}),
                "ipam.routes",
            ),
            (
                json!({"type": "whereabouts", "range": "10.0.0.0/24", "dns": {"nameservers": "1.1.1.1"}}),
                "ipam.dns",
            ),
            (
                json!({"type": "whereabouts", "range": "10.0.0.0/24", "dns": []}),
                "ipam.dns",
            ),
            (
                json!({"type": "whereabouts", "range": "10.0.0.0/24", "routes": "0.0.0.0/0"}),
                "ipam.routes",
            ),
            (
                json!({"type": "whereabouts", "range": "10.0.0.0/24", "addresses": [{"address": "10.0.0.5"}]}),
                "ipam.addresses[0].address",
            ),
            (
                json!({"type": "whereabouts", "range": "10.0.0.0/24", "log_level": ["debug"]}),
                "ipam.log_level",
            ),
            (
                json!({"type": "whereabouts", "range": "10.0.0.0/24", "configuration_path": 1}),
                "ipam.configuration_path",
            ),
        ];
        for (ipam, want) in cases {
            let err = load(ipam.clone()).unwrap_err();
            assert_eq!(err.code, 7, "{ipam}");
            assert!(err.msg.contains(want), "{ipam}: {}", err.msg);
        }
        // No ipam at all, or not an object.
        let conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "macvlan"});
        let err = IpamConfig::load_with(conf.as_object().unwrap(), &[], "n").unwrap_err();
        assert_eq!(err.code, 7);
        let conf = json!({"cniVersion": "1.0.0", "name": "n", "ipam": "whereabouts"});
        assert_eq!(
            IpamConfig::load_with(conf.as_object().unwrap(), &[], "n")
                .unwrap_err()
                .code,
            7
        );
    }

    #[test]
    fn configuration_list_uses_the_first_plugin() {
        let conf = json!({"cniVersion": "1.0.0", "name": "n", "plugins": [
            {"type": "macvlan", "ipam": {"type": "whereabouts", "range": "10.0.0.0/24"}},
            {"type": "tuning"}
        ]});
        let c = IpamConfig::load_with(conf.as_object().unwrap(), &[], "n").unwrap();
        assert_eq!(c.ranges[0].cidr().to_string(), "10.0.0.0/24");
    }

    #[test]
    fn flat_file_is_merged_and_the_cni_config_wins() {
        let dir = tempfile::tempdir().unwrap();
        let flat = dir.path().join("whereabouts.conf");
        std::fs::write(
            &flat,
            json!({"datastore": "kubernetes", "kubernetes": {"kubeconfig": "/flat/kc", "namespace": "flat-ns"},
                   "range": "10.99.0.0/16", "network_name": "flat", "enable_overlapping_ranges": false,
                   "log_level": "debug", "type": "ignored"})
            .to_string(),
        )
        .unwrap();
        // configuration_path as a file, and as a directory holding whereabouts.conf.
        for path in [flat.clone(), dir.path().to_path_buf()] {
            let c = load(
                json!({"type": "whereabouts", "range": "10.0.0.0/24", "network_name": "",
                                "kubernetes": {"namespace": "mine"},
                                "configuration_path": path}),
            )
            .unwrap();
            assert_eq!(c.flat_file.as_deref(), Some(flat.as_path()));
            assert_eq!(c.ranges[0].cidr().to_string(), "10.0.0.0/24");
            // "" is empty for mergo: the flat file's value is used.
            assert_eq!(c.network_name, "flat");
            assert!(c.enable_overlapping_ranges);
            assert_eq!(c.log_level.as_deref(), Some("debug"));
            assert_eq!(
                c.backend,
                Backend::Kubernetes {
                    kubeconfig: "/flat/kc".into(),
                    namespace: "mine".into()
                }
            );
        }
        // The flat file's enable_overlapping_ranges never applies: the default is true.
        let c = load_flat(json!({"type": "whereabouts"}), std::slice::from_ref(&flat)).unwrap();
        assert!(c.enable_overlapping_ranges);
        assert_eq!(c.ranges[0].cidr().to_string(), "10.99.0.0/16");
        // The first existing file wins; a missing configuration_path falls through.
        let c = load_flat(
            json!({"type": "whereabouts", "configuration_path": "/nonexistent/x.conf"}),
            &[PathBuf::from("/nonexistent/y.conf"), flat.clone()],
        )
        .unwrap();
        assert_eq!(c.flat_file.as_deref(), Some(flat.as_path()));
        // A broken flat file is a config error naming it.
        let bad = dir.path().join("bad.conf");
        std::fs::write(&bad, "{nope").unwrap();
        let err =
            load(json!({"type": "whereabouts", "range": "10.0.0.0/24", "configuration_path": bad}))
                .unwrap_err();
        assert_eq!(err.code, 7);
        assert!(err.msg.contains("bad.conf"), "{}", err.msg);
    }

    #[test]
    fn legacy_versions_take_one_address_per_family() {
        let dual = load(json!({"type": "whereabouts", "range": "10.0.0.0/24",
                               "ipRanges": [{"range": "abcd::/64"}]}))
        .unwrap();
        assert!(dual.check_version(SpecVersion::V0_2_0).is_ok());
        let two = load(json!({"type": "whereabouts", "range": "10.0.0.0/24",
                              "ipRanges": [{"range": "10.1.0.0/24"}]}))
        .unwrap();
        assert_eq!(two.check_version(SpecVersion::V0_2_0).unwrap_err().code, 7);
        assert!(two.check_version(SpecVersion::V0_3_1).is_ok());
    }
}
