//! The bodies of Plexus's fuzz targets, one function per target, each feeding arbitrary bytes
//! through the same parsers the plugins run on untrusted input.
//!
//! The targets in `fuzz_targets/` call these; the regression tests
//! (`tests/tests/fuzz_regressions.rs`) include this file and replay the seed corpora and every
//! saved crash input through the same functions. Nothing here touches the file system or the
//! network: paths handed to the parsers do not exist.

#![warn(missing_docs)]

use std::collections::BTreeSet;
use std::path::Path;

use plexus::cache::CacheEntry;
use plexus::config::PlexusConfig;
use plexus::k8s::{nad, selection};
use plexus_cni::config::NetworkConfigList;
use plexus_cni::env::{validate_container_id, validate_ifname, CniArgs, CniEnv, Command};
use plexus_cni::{CniResult, SpecVersion};
use plexus_ipam::config::IpamConfig;
use plexus_ipam::range::IpRange;
use serde_json::{Map, Value};

/// A directory that does not exist, for parsers that would otherwise look on disk.
const NO_DIR: &str = "/nonexistent/plexus-fuzz";

/// A fuzz target's body: takes any bytes, must not panic.
pub type Body = fn(&[u8]);

/// The fuzz targets, by name, with their bodies.
pub const TARGETS: [(&str, Body); 6] = [
    ("networks_annotation", networks_annotation),
    ("nad_config", nad_config),
    ("cni_stdin", cni_stdin),
    ("cni_env", cni_env),
    ("ipam_range", ipam_range),
    ("cache_file", cache_file),
];

/// The pod annotations `k8s.v1.cni.cncf.io/networks` and `v1.multus-cni.io/default-network`.
pub fn networks_annotation(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(selections) = selection::parse_networks(text, "default") {
        // Whatever is accepted serializes (it becomes runtimeConfig and network-status).
        for s in &selections {
            let _ = serde_json::to_value(s);
        }
    }
    let _ = selection::parse_default_network(text, "kube-system");
    let _ = selection::parse_hardware_addr(text);
    let _ = selection::is_dns1123_label(text);
    let _ = selection::is_dns1123_subdomain(text);
}

/// A NetworkAttachmentDefinition's `spec.config`, and a delegate configuration (list) as plexus
/// runs it: parsed, then each plugin's stdin built.
pub fn nad_config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = nad::delegate_config("default", "fuzz-net", text, Path::new(NO_DIR));
    }
    let Ok(list) = NetworkConfigList::from_bytes(data) else {
        return;
    };
    let mut capability_args = Map::new();
    capability_args.insert("portMappings".into(), Value::Array(Vec::new()));
    capability_args.insert("ips".into(), Value::Array(Vec::new()));
    let prev = serde_json::json!({"cniVersion": "1.0.0"});
    for i in 0..list.plugins.len() {
        let _ = list.plugin_request(i, &capability_args, Some(&prev));
    }
    // What plexus caches is the configuration as written: it must parse again.
    let again = NetworkConfigList::from_bytes(&list.to_bytes());
    assert!(again.is_ok(), "a parsed configuration does not parse again");
}

/// Plexus's own configuration from stdin, the plugin request checks, and delegate results of
/// every version with their conversions.
pub fn cni_stdin(data: &[u8]) {
    let env = CniEnv::from_lookup(|k| match k {
        "CNI_COMMAND" => Some("ADD".into()),
        "CNI_CONTAINERID" => Some("fuzz".into()),
        "CNI_NETNS" => Some(format!("{NO_DIR}/netns")),
        "CNI_IFNAME" => Some("eth0".into()),
        _ => None,
    })
    .expect("a valid environment");
    if let Ok(request) = plexus_cni::skel::parse_request(env, data.to_vec()) {
        if let Ok(config) = PlexusConfig::from_map(&request.config) {
            let _ = config.version();
            let _ = config.readiness_timeout();
            let _ = config.delegate_timeout();
            let _ = config.api_timeout();
            let _ = config.global_namespace_list();
            let _ = config.plugin_dirs(&[]);
        }
    }
    for fallback in SpecVersion::ALL {
        let Ok(result) = CniResult::parse(data, fallback) else {
            continue;
        };
        for version in SpecVersion::ALL {
            let value = result.to_value(version);
            let _ = CniResult::from_value(&value, version);
            let _ = result.to_json_bytes(version);
        }
        let _ = result.has_default_route();
    }
}

/// The CNI environment: input lines `KEY=VALUE` are the variables; the whole input is also
/// tried as `CNI_ARGS`, a container ID and an interface name.
pub fn cni_env(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let vars: Vec<(&str, &str)> = text
        .split('\n')
        .filter_map(|line| line.split_once('='))
        .collect();
    let lookup = |key: &str| {
        vars.iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string())
    };
    if let Ok(env) = CniEnv::from_lookup(lookup) {
        // What was accepted can be handed on to a delegate.
        let _ = env.args.to_env_string();
        // The commands that name a container get a valid ID (the cache file's name); the
        // others (VERSION, STATUS, GC) do not use it.
        if matches!(env.command, Command::Add | Command::Del | Command::Check) {
            assert!(validate_container_id(&env.container_id).is_ok());
            assert!(validate_ifname(&env.ifname).is_ok());
        }
    }
    if let Ok(args) = CniArgs::parse(text) {
        let again = CniArgs::parse(&args.to_env_string()).expect("written CNI_ARGS parse again");
        let _ = again.get("K8S_POD_NAME");
    }
    let _ = validate_container_id(text);
    let _ = validate_ifname(text);
}

/// plexus-ipam's configuration (`range`, `range_start`, `range_end`, `exclude`, `ipRanges`,
/// `gateway`, …) and the range arithmetic on what it accepts. Input that is not JSON is read as
/// lines: range, range_start, range_end, then exclusions.
pub fn ipam_range(data: &[u8]) {
    if let Ok(Value::Object(mut config)) = serde_json::from_slice::<Value>(data) {
        // The flat file would be read from disk.
        if let Some(Value::Object(ipam)) = config.get_mut("ipam") {
            ipam.shift_remove("configuration_path");
        }
        if let Ok(ipam) = IpamConfig::load_with(&config, &[], "fuzz-node") {
            for range in &ipam.ranges {
                exercise_range(range, data);
            }
            let _ = ipam.pools();
        }
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let range = lines.next().unwrap_or_default();
    let start = lines.next().filter(|s| !s.is_empty());
    let end = lines.next().filter(|s| !s.is_empty());
    let exclude: Vec<String> = lines.map(str::to_string).collect();
    let gateway = start.and_then(plexus_ipam::range::parse_ip_sloppy);
    if let Ok(range) = IpRange::parse(range, start, end, &exclude, gateway) {
        exercise_range(&range, data);
    }
}

/// Range arithmetic on a parsed range: counts, offsets and the lowest free address, with
/// offsets taken from the input as the set of allocations.
fn exercise_range(range: &IpRange, data: &[u8]) {
    let (first, last) = range.bounds();
    assert!(first <= last, "empty bounds {first}..{last}");
    let _ = range.usable_count();
    let _ = range.cidr();
    let _ = range.prefix_len();
    let _ = range.first_address();
    let _ = range.last_address();
    let _ = range.gateway();
    let taken: BTreeSet<u128> = data
        .chunks(2)
        .map(|c| {
            first.saturating_add(u128::from(c[0]) + (u128::from(*c.get(1).unwrap_or(&0)) << 8))
        })
        .collect();
    if let Some(free) = range.lowest_free(&taken, None) {
        assert!(
            range.is_usable_offset(free),
            "lowest_free gave an unusable offset"
        );
        assert!(!taken.contains(&free), "lowest_free gave a taken offset");
        let ip = range.address(free);
        assert_eq!(range.offset(ip), Some(free), "offset(address(o)) != o");
        assert!(range.is_usable(ip));
        let _ = range.address_net(free);
    }
    let mid = first + (last - first) / 2;
    let _ = range.lowest_free(&taken, Some((mid, last)));
    let _ = range.lowest_free(&taken, Some((last, first)));
    for offset in [0, first, last, last.saturating_add(1), u128::MAX] {
        let _ = range.is_usable_offset(offset);
    }
}

/// A cache file as DEL, CHECK and GC read it: the entry, then each attachment's configuration
/// and result.
pub fn cache_file(data: &[u8]) {
    let path = Path::new(NO_DIR).join("c1");
    let Ok(entry) = CacheEntry::from_bytes(&path, "c1", data) else {
        return;
    };
    let _ = CniArgs::parse(&entry.cni_args);
    let version = entry.cni_version.parse().unwrap_or(SpecVersion::V1_0_0);
    for attachment in &entry.attachments {
        let _ = validate_ifname(&attachment.ifname);
        if let Ok(list) = NetworkConfigList::from_bytes(attachment.config.as_bytes()) {
            for i in 0..list.plugins.len() {
                let _ = list.plugin_request(i, &attachment.capability_args, None);
            }
        }
        if let Some(result) = &attachment.result {
            if let Ok(r) = CniResult::from_value(result, version) {
                let _ = r.to_value(version);
            }
        }
    }
    let _ = serde_json::to_vec(&entry);
}
