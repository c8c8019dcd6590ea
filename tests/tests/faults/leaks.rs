//! The fault suite's one leak checker: everything an attachment can leave behind, listed
//! exactly, so that a case can assert that what is left is what it expects (usually nothing).
//!
//! It looks at the links of the lab's node namespace (against a snapshot taken before the case:
//! new veth and macvlan links, and anything enslaved to the lab's bridge), the links of each pod
//! namespace (only `lo` may be there), host-local's reservation files under the lab's data
//! directory, plexus-ipam's allocations (the local store's state files, the etcd keys of the
//! case's network), and the cache files in the lab's `cniDir`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use plexus::links;
use plexus_tests::TestPod;
use serde_json::Value;

use crate::common::Lab;

/// What a case may leak, watched from before the case.
pub struct Leaks<'a> {
    lab: &'a Lab,
    links_before: BTreeSet<String>,
    ipam_local: Option<PathBuf>,
    etcd: Option<(Vec<String>, String)>,
}

impl<'a> Leaks<'a> {
    /// Starts watching `lab`: a snapshot of its node namespace's links.
    pub fn watch(lab: &'a Lab) -> Leaks<'a> {
        Leaks {
            lab,
            links_before: node_links().into_iter().map(|l| l.name).collect(),
            ipam_local: None,
            etcd: None,
        }
    }

    /// Also watches plexus-ipam's local store in `dir`.
    pub fn with_local_ipam(mut self, dir: PathBuf) -> Self {
        self.ipam_local = Some(dir);
        self
    }

    /// Also watches plexus-ipam's etcd keys of `network` (default prefix) on `endpoints`.
    pub fn with_etcd(mut self, endpoints: Vec<String>, network: &str) -> Self {
        let prefix = plexus_ipam::backends::etcd::keys::network_key(
            plexus_ipam::backends::etcd::DEFAULT_PREFIX,
            network,
        );
        self.etcd = Some((endpoints, prefix));
        self
    }

    /// Everything left, one line per item: links in the node namespace and in `pods`, host-local
    /// reservations, plexus-ipam allocations and cache files. With `container` set, only what
    /// belongs to that container (its cache file, its reservations and allocations) and to
    /// `pods` is listed, and node links are not.
    pub fn left(&self, pods: &[&TestPod], container: Option<&str>) -> Vec<String> {
        let mut left = Vec::new();
        let bridge = node_links()
            .into_iter()
            .find(|l| l.name == self.lab.bridge)
            .map(|l| l.index);
        // Node links cannot be told apart by container: they are checked only in full.
        for l in node_links().into_iter().filter(|_| container.is_none()) {
            let own = [&self.lab.master, &self.lab.peer, &self.lab.bridge].contains(&&l.name);
            let enslaved = bridge.is_some() && l.master == bridge;
            let new = !self.links_before.contains(&l.name)
                && matches!(l.kind.as_deref(), Some("veth" | "macvlan"));
            // On the real host, other tests' links come and go: only the lab's own count.
            let mine = enslaved || (new && self.lab.host.is_some());
            if !own && mine {
                left.push(format!("node link {}", l.name));
            }
        }
        for pod in pods {
            if !plexus::netns::exists(&pod.path) {
                continue;
            }
            for l in pod.links().unwrap_or_default() {
                if l.name != "lo" {
                    left.push(format!("link {} in pod {}", l.name, pod.name));
                }
            }
        }
        // A container ID is a whole token of a file's content, a key or an owner record.
        let belongs = |text: &str| {
            container.is_none_or(|c| {
                text.split(|ch: char| !(ch.is_ascii_alphanumeric() || "_.-".contains(ch)))
                    .any(|token| token == c)
            })
        };
        for (file, content) in host_local_reservations(&self.lab.ipam_dir()) {
            if belongs(&content) {
                left.push(format!("host-local reservation {file}"));
            }
        }
        if let Some(dir) = &self.ipam_local {
            for (address, owner) in local_allocations(dir) {
                if belongs(&owner) {
                    left.push(format!("plexus-ipam allocation {address} of {owner}"));
                }
            }
        }
        if let Some((endpoints, prefix)) = &self.etcd {
            for (key, value) in etcd_keys(endpoints, prefix) {
                if belongs(&key) || belongs(&value) {
                    left.push(format!("etcd key {key}"));
                }
            }
        }
        for entry in self.lab.cache_entries() {
            if container.is_none_or(|c| entry == c) {
                left.push(format!("cache file {entry}"));
            }
        }
        left
    }

    /// Asserts that nothing at all is left.
    pub fn assert_nothing_left(&self, pods: &[&TestPod]) {
        let left = self.left(pods, None);
        assert!(left.is_empty(), "left behind: {left:#?}");
    }

    /// Asserts what a failed ADD may leave of `container`: nothing but, after a complete
    /// rollback, its cache entry with no attachments (so that the runtime's DEL has nothing to
    /// undo). Then runs `del` (the runtime's DEL) and asserts that nothing at all of it is left.
    pub fn assert_failed_add_left_nothing(
        &self,
        container: &str,
        pods: &[&TestPod],
        del: impl FnOnce(),
    ) {
        let cache = format!("cache file {container}");
        let left: Vec<String> = self
            .left(pods, Some(container))
            .into_iter()
            .filter(|l| *l != cache || self.has_attachments(container))
            .collect();
        assert!(
            left.is_empty(),
            "left behind by a failed ADD of {container}: {left:#?}"
        );
        del();
        self.assert_nothing_left_of(container, pods);
    }

    /// Whether `container`'s cache entry records any attachment.
    fn has_attachments(&self, container: &str) -> bool {
        let text = std::fs::read_to_string(self.lab.cache_dir().join(container)).unwrap();
        let entry: Value = serde_json::from_str(&text).unwrap();
        entry["attachments"]
            .as_array()
            .is_none_or(|a| !a.is_empty())
    }

    /// Asserts that nothing of `container` (and in `pods`) is left.
    pub fn assert_nothing_left_of(&self, container: &str, pods: &[&TestPod]) {
        let left = self.left(pods, Some(container));
        assert!(left.is_empty(), "left behind by {container}: {left:#?}");
    }
}

/// The links of the calling thread's namespace (the lab's node).
fn node_links() -> Vec<links::LinkInfo> {
    links::links(None).expect("list the node's links")
}

/// host-local's reservations under `dir`: (network/address, file content, which names the
/// container and interface).
pub fn host_local_reservations(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for network in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(network.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.parse::<std::net::IpAddr>().is_ok() {
                let content = std::fs::read_to_string(f.path()).unwrap_or_default();
                found.push((
                    format!("{}/{name}", network.file_name().to_string_lossy()),
                    content,
                ));
            }
        }
    }
    found
}

/// plexus-ipam's local store under `dir`: (address, owner as JSON) of every allocation of every
/// network's state file.
pub fn local_allocations(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for f in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = f.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("n-") && name.ends_with(".json")) {
            continue;
        }
        let text = std::fs::read_to_string(f.path()).unwrap_or_default();
        let state: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("plexus-ipam state {name} is not JSON ({e}): {text}"));
        if let Some(allocations) = state["allocations"].as_object() {
            for (address, record) in allocations {
                found.push((address.clone(), record["owner"].to_string()));
            }
        }
    }
    found
}

/// Every etcd key (and value, as text) under `prefix`.
pub fn etcd_keys(endpoints: &[String], prefix: &str) -> Vec<(String, String)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut client = etcd_client::Client::connect(endpoints, None)
            .await
            .expect("connect to etcd");
        let answer = client
            .get(
                format!("{prefix}/"),
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await
            .expect("list etcd keys");
        answer
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    String::from_utf8_lossy(kv.value()).into_owned(),
                )
            })
            .collect()
    })
}
