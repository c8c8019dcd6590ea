//! Shared pieces of the `plexus` integration tests: running the binary, a lab with a bridge
//! primary and macvlan secondaries, and checks that nothing is left behind.

#![allow(dead_code)]

pub mod kube;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use plexus::links;
use plexus_tests::{cni_plugin_dir, plexus_bin_dir, unique_name, TestHost, TestPod};
use serde_json::{json, Value};

/// What one `plexus` call printed and returned.
#[derive(Debug)]
pub struct Outcome {
    /// Exit code.
    pub code: i32,
    /// Stdout parsed as JSON (`Null` when empty).
    pub json: Value,
    /// Stdout as text.
    pub stdout: String,
}

impl Outcome {
    /// Asserts success and returns the printed JSON.
    pub fn ok(self) -> Value {
        assert_eq!(self.code, 0, "the plugin failed: {}", self.stdout);
        self.json
    }

    /// Asserts a failure with a CNI error object and returns its code.
    pub fn error_code(&self) -> u64 {
        assert_ne!(self.code, 0, "expected a failure, got {}", self.stdout);
        assert!(
            self.json["msg"].is_string(),
            "failure without a CNI error object: {:?}",
            self.stdout
        );
        self.json["code"].as_u64().expect("error code")
    }

    /// As [`Outcome::error_code`], for a plugin of Plexus's own: its error is never an internal
    /// one (999, what a caught panic becomes).
    pub fn own_error_code(&self) -> u64 {
        let code = self.error_code();
        assert_ne!(code, 999, "internal error: {}", self.stdout);
        code
    }
}

/// Runs the `plexus` binary with the CNI environment `env` and `stdin`.
pub fn run_plexus_raw(env: &[(&str, &str)], stdin: &[u8]) -> Outcome {
    run_plugin(&plexus_bin_dir().join("plexus"), env, stdin)
}

/// Runs a plugin binary with a clean environment (only `PATH`), the CNI environment `env` and
/// `stdin`, and reads what it printed. A plugin killed by a signal (a panic) fails the test.
pub fn run_plugin(binary: &Path, env: &[(&str, &str)], stdin: &[u8]) -> Outcome {
    let name = binary.display();
    let mut child = Command::new(binary)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("run {name}: {e}"));
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait for {name}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("stdout of {name} is not JSON ({e}): {stdout:?}"))
    };
    assert!(
        out.status.code().is_some(),
        "{name} was killed by a signal (a panic?)"
    );
    Outcome {
        code: out.status.code().unwrap_or(-1),
        json,
        stdout,
    }
}

/// Starts a plugin binary as [`run_plugin`] does (clean environment with only `PATH`, then
/// `env`; `stdin` written) without waiting for it, for tests that kill it mid-command. Its
/// stdout is discarded.
pub fn spawn_plugin(binary: &Path, env: &[(&str, &str)], stdin: &[u8]) -> std::process::Child {
    let mut child = Command::new(binary)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", binary.display()));
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child
}

/// Waits until `path` exists (a script plugin's pid file, say); fails with `what` after 20 s.
pub fn wait_for_file(path: &Path, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !path.exists() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Runs `plexus` for a command on a container.
pub fn run_plexus(command: &str, container: &str, netns: &str, config: &Value) -> Outcome {
    let path = cni_plugin_dir();
    run_plexus_raw(
        &[
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", container),
            ("CNI_NETNS", netns),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", path.to_str().unwrap()),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=test",
            ),
        ],
        config.to_string().as_bytes(),
    )
}

/// The delegates' version for a Plexus version: the reference plugins speak up to 1.0.0.
pub fn delegate_version(version: &str) -> &str {
    if version == "1.1.0" {
        "1.0.0"
    } else {
        version
    }
}

/// A node for one test: a veth pair whose one end is the macvlan master, a bridge name, a
/// state directory, and helpers to build configurations. Either a throwaway node namespace of
/// its own ([`Lab::new`]), or the real host with names of its own ([`Lab::on_host`], for tests
/// whose plugins must reach a local API server on the host's loopback).
pub struct Lab {
    pub dir: tempfile::TempDir,
    pub master: String,
    pub peer: String,
    pub bridge: String,
    pub host: Option<TestHost>,
}

impl Lab {
    /// Enters a new node namespace and creates the macvlan master there.
    pub fn new() -> Lab {
        let host = TestHost::enter();
        Lab::with_host(Some(host), "pxbr0".into())
    }

    /// Works in the host's own namespace, with a uniquely named bridge and macvlan master (both
    /// removed on drop). The bridge gets no address, so the host's routes do not change.
    pub fn on_host() -> Lab {
        Lab::with_host(None, unique_name("pxbr"))
    }

    fn with_host(host: Option<TestHost>, bridge: String) -> Lab {
        let master = unique_name("pxm");
        let peer = unique_name("pxp");
        links::create_veth(None, &master, &peer).expect("create the macvlan master");
        Lab {
            dir: tempfile::tempdir().expect("temp dir"),
            master,
            peer,
            bridge,
            host,
        }
    }

    /// host-local's data directory.
    pub fn ipam_dir(&self) -> PathBuf {
        self.dir.path().join("ipam")
    }

    /// Plexus's cache directory.
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// Writes the lab's bridge as a conflist named `pods` at `path` (a cluster network for
    /// `clusterNetwork`, as a runtime's primary network would be); returns `path`.
    pub fn write_bridge_conflist(&self, version: &str, path: PathBuf) -> PathBuf {
        let mut bridge = self.bridge(version);
        let plugin = bridge.as_object_mut().expect("a conf object");
        plugin.remove("cniVersion");
        plugin.remove("name");
        let pods = serde_json::json!({"cniVersion": version, "name": "pods", "plugins": [bridge]});
        std::fs::write(&path, serde_json::to_vec_pretty(&pods).unwrap()).unwrap();
        path
    }

    /// The bridge primary network.
    pub fn bridge(&self, version: &str) -> Value {
        let gateway = self.host.is_some();
        let routes = if gateway {
            json!([{"dst": "0.0.0.0/0"}])
        } else {
            json!([])
        };
        json!({
            "cniVersion": version, "name": "pods", "type": "bridge", "bridge": self.bridge,
            "isGateway": gateway,
            "ipam": {"type": "host-local", "subnet": "10.10.0.0/24", "routes": routes, "dataDir": self.ipam_dir()}
        })
    }

    /// A macvlan secondary network (as a one-plugin list) on subnet `10.<octet>.0.0/24`.
    pub fn macvlan(&self, version: &str, name: &str, octet: u8) -> Value {
        json!({
            "cniVersion": version, "name": name,
            "plugins": [{
                "type": "macvlan", "master": self.master, "mode": "bridge",
                "ipam": {"type": "host-local", "subnet": format!("10.{octet}.0.0/24"), "dataDir": self.ipam_dir()}
            }]
        })
    }

    /// A Plexus configuration with these delegates.
    pub fn plexus(&self, version: &str, delegates: Vec<Value>) -> Value {
        json!({
            "cniVersion": version, "name": "plexus", "type": "plexus",
            "cniDir": self.cache_dir(), "binDir": cni_plugin_dir(),
            "delegateTimeoutSeconds": 20,
            "delegates": delegates
        })
    }

    /// The usual three networks: bridge `eth0`, macvlan `net1` and `net2`.
    pub fn three_networks(&self, version: &str) -> Value {
        let dv = delegate_version(version);
        self.plexus(
            version,
            vec![
                self.bridge(dv),
                self.macvlan(dv, "storage", 20),
                self.macvlan(dv, "backup", 30),
            ],
        )
    }

    /// host-local reservations left (files named by an address).
    pub fn reservations(&self) -> Vec<String> {
        let mut found = Vec::new();
        let Ok(networks) = std::fs::read_dir(self.ipam_dir()) else {
            return found;
        };
        for network in networks.flatten() {
            for f in std::fs::read_dir(network.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = f.file_name().to_string_lossy().into_owned();
                if name.parse::<std::net::IpAddr>().is_ok() {
                    found.push(format!("{}/{name}", network.file_name().to_string_lossy()));
                }
            }
        }
        found
    }

    /// Plexus cache files left.
    pub fn cache_entries(&self) -> Vec<String> {
        std::fs::read_dir(self.cache_dir())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Asserts that nothing of `pod` is left: no interface but `lo` in it, no reservation and
    /// no cache entry.
    pub fn assert_clean(&self, pod: Option<&TestPod>) {
        if let Some(pod) = pod {
            let names: Vec<String> = pod.links().unwrap().into_iter().map(|l| l.name).collect();
            assert_eq!(names, ["lo"], "interfaces left in the pod");
        }
        assert!(
            self.reservations().is_empty(),
            "reservations left: {:?}",
            self.reservations()
        );
        assert!(
            self.cache_entries().is_empty(),
            "cache entries left: {:?}",
            self.cache_entries()
        );
        // A pod namespace that was deleted takes its veth pairs with it, but the kernel does
        // that in a deferred clean-up of the namespace: give it a few seconds.
        let node_links = || -> Vec<String> {
            links::links(None)
                .unwrap()
                .into_iter()
                .filter(|l| l.kind.as_deref() == Some("macvlan") || l.name.starts_with("veth"))
                .map(|l| l.name)
                .collect()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut left = node_links();
        while !left.is_empty() && pod.is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
            left = node_links();
        }
        assert!(left.is_empty(), "links left on the node: {left:?}");
    }
}

impl Drop for Lab {
    /// On the host, removes the macvlan master's veth pair and the bridge (which the bridge
    /// plugin created); a node namespace of its own takes them with it.
    fn drop(&mut self) {
        if self.host.is_none() {
            for link in [&self.master, &self.bridge] {
                if let Err(e) = links::delete_link(None, link) {
                    eprintln!("Lab: cannot delete {link}: {e}");
                }
            }
        }
    }
}

/// The path of a pod's namespace as a string.
pub fn ns(pod: &TestPod) -> &str {
    pod.path.to_str().unwrap()
}

/// The addresses of one interface in a pod.
pub fn addresses_of(pod: &TestPod, ifname: &str) -> Vec<ipnet::IpNet> {
    pod.addresses()
        .unwrap()
        .into_iter()
        .filter(|a| a.ifname == ifname && !matches!(a.address.addr(), std::net::IpAddr::V6(v6) if v6.segments()[0] == 0xfe80))
        .map(|a| a.address)
        .collect()
}

/// Writes an executable shell script `dir/name` (a stand-in delegate plugin) and returns its path.
pub fn script_plugin(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// True when the file exists.
pub fn exists(p: &Path) -> bool {
    p.exists()
}
