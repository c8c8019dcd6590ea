//! `cargo xtask demo`: Plexus's main job on one machine, with the real CNI plugins.
//!
//! Two "pods" (named network namespaces) are attached through `plexus` and
//! the demo shows their interfaces, pings from one pod to the other on every
//! network, detaches both pods and checks that nothing is left: no links, no
//! host-local leases, no plexus-ipam allocations, no Plexus cache entries.
//!
//! - [`standalone`] (`cargo xtask demo`): static delegates, a bridge network
//!   (`eth0`) and a macvlan network (`net1`).
//! - [`kube`] (`cargo xtask demo --kube`): a real node (API server, containerd, kubelet) with
//!   Plexus installed by `plexusctl install` in K3s's layout; the example NADs and pods applied
//!   with `kubectl`, as on a K3s node.
//!
//! Everything happens inside a throwaway "node" network namespace, entered by
//! a dedicated thread (plugin processes inherit its namespace), so the real
//! host's networking is never touched.
//! The namespaces and the state directory are removed at the end, also when a
//! step fails.

mod kube;
mod standalone;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use plexus::links::{self, AddressInfo, LinkInfo};
use plexus::netns;
use serde_json::Value;

use crate::cmd::{self, Result};
use crate::packages::ensure_debian_packages;

/// Debian packages the demo uses, each with a file that shows it is installed.
const DEMO_PACKAGES: &[(&str, &str)] = &[
    ("containernetworking-plugins", "/usr/lib/cni/bridge"),
    ("iputils-ping", "/usr/bin/ping"),
];

/// Where Debian installs the reference CNI plugins.
const CNI_BIN_DIR: &str = "/usr/lib/cni";
/// The bridge of the primary network (created by the bridge plugin in the node namespace).
const BRIDGE: &str = "plexdemo0";
/// The macvlan master: one end of a veth pair the demo creates in the node namespace.
const MASTER: &str = "plexdemo-m0";
/// The other end of the macvlan master's veth pair.
const MASTER_PEER: &str = "plexdemo-m1";

/// Runs `cargo xtask demo` (with `--kube`, the Kubernetes one).
pub fn run(args: &crate::DemoArgs) -> Result {
    if !cmd::is_root() {
        return Err(
            "cargo xtask demo needs root: it creates network namespaces and links \
                    (inside a throwaway namespace; the host's networking is not touched)"
                .into(),
        );
    }
    cmd::step("prerequisites");
    ensure_debian_packages(DEMO_PACKAGES)?;
    if args.kube {
        crate::apiserver::ensure()?;
    }
    let plexus = build_plexus()?;
    if args.kube {
        kube::run()
    } else {
        in_node(standalone::NAMES, plexus, standalone::run)
    }
}

/// The network namespaces of one demo: its node and its two pods.
struct Names {
    node: &'static str,
    pods: [&'static str; 2],
}

/// Creates the node namespace and a state directory, runs `demo` on a thread
/// inside the node, then deletes the namespaces and the directory whatever
/// happened.
fn in_node(
    names: Names,
    plexus: PathBuf,
    demo: impl FnOnce(&Node) -> Result + Send + 'static,
) -> Result {
    let stale = delete_namespaces(&names);
    if !stale.is_empty() {
        println!("deleted leftovers of an earlier run: {}", stale.join(", "));
    }
    let state = tempfile::Builder::new().prefix("plexus-demo-").tempdir()?;
    let node_path = netns::create_named(names.node)?;
    let node = Node {
        name: names.node,
        pods: names.pods,
        plexus,
        state: state.path().to_path_buf(),
    };
    // The whole demo runs on a thread that has entered the node namespace.
    let outcome = netns::run_in(&node_path, move || demo(&node).map_err(|e| e.to_string()));

    cmd::step("cleaning up");
    let deleted = delete_namespaces(&names);
    println!("deleted the network namespaces {}", list_or_none(&deleted));
    let state_path = state.path().display().to_string();
    match state.close() {
        Ok(()) => println!("deleted {state_path}"),
        Err(e) => eprintln!("warning: cannot delete {state_path}: {e}"),
    }
    outcome??;
    println!("\ndemo finished: the pods reached each other on every network, and nothing is left");
    Ok(())
}

/// Builds the `plexus` binary and returns its path (in `$CARGO_TARGET_DIR`
/// if set, else in the workspace's `target`).
fn build_plexus() -> Result<PathBuf> {
    cmd::step("building plexus");
    let root = cmd::workspace_root();
    cmd::run(cmd::cargo().current_dir(&root).args([
        "build",
        "-p",
        "plexus",
        "-p",
        "plexusctl",
        "-p",
        "plexus-ipam",
    ]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(cmd::profile_dir(&target, "debug").join("plexus"))
}

/// Deletes a demo's namespaces (best effort) and returns the names of those
/// that existed.
fn delete_namespaces(names: &Names) -> Vec<&'static str> {
    let mut deleted = Vec::new();
    for name in names.pods.into_iter().chain([names.node]) {
        let path = netns_path(name);
        if !path.exists() {
            continue;
        }
        match netns::delete(&path) {
            Ok(()) => deleted.push(name),
            Err(e) => eprintln!("warning: {e}"),
        }
    }
    deleted
}

/// The path of the named network namespace `name`.
fn netns_path(name: &str) -> PathBuf {
    Path::new(netns::NETNS_RUN_DIR).join(name)
}

/// The node a demo runs on: what its steps share. Its methods run inside the
/// node namespace.
struct Node {
    /// The node namespace's name.
    name: &'static str,
    /// The pods' namespace names.
    pods: [&'static str; 2],
    /// The `plexus` binary.
    plexus: PathBuf,
    /// The state directory: host-local leases in `ipam/`, plexus-ipam's local store in
    /// `plexus-ipam/`, Plexus's cache in `cache/`.
    state: PathBuf,
}

impl Node {
    /// Creates the macvlan master on the node and prints where things live.
    fn set_up(&self) -> Result {
        cmd::step(&format!(
            "a throwaway node: network namespace {}",
            self.name
        ));
        links::create_veth(None, MASTER, MASTER_PEER)?;
        links::set_up(None, MASTER)?;
        println!(
            "macvlan master: {MASTER}, a veth standing in for a second NIC (peer {MASTER_PEER})"
        );
        println!("state directory: {}", self.state.display());
        println!(
            "  host-local leases in ipam/, plexus-ipam's allocations in plexus-ipam/, \
             Plexus's attachment cache in cache/"
        );
        Ok(())
    }

    /// host-local's `ipam` object on `subnet`, with its leases in the state directory.
    fn ipam(&self, subnet: &str) -> Value {
        serde_json::json!({"type": "host-local", "subnet": subnet, "dataDir": self.state.join("ipam")})
    }

    /// plexus-ipam's `ipam` object on `range`, with its local store in the state directory.
    fn plexus_ipam(&self, range: &str) -> Value {
        serde_json::json!({"type": "plexus-ipam", "range": range, "backend": "local",
                           "local_path": self.state.join("plexus-ipam")})
    }

    /// The directory of the `plexus` binary, where `plexus-ipam` is built too.
    fn plexus_dir(&self) -> &Path {
        self.plexus.parent().unwrap_or(Path::new("."))
    }

    /// Writes `config` as `name` into the state directory, prints it under
    /// `title` and returns its path.
    fn write_config(&self, name: &str, config: &Value, title: &str) -> Result<PathBuf> {
        let path = self.state.join(name);
        let text = serde_json::to_string_pretty(config)?;
        std::fs::write(&path, &text)?;
        cmd::step(&format!("{title} ({})", path.display()));
        println!("{text}");
        Ok(path)
    }

    /// Runs `plexus` as a container runtime would, for `command` on `pod`
    /// with `CNI_ARGS` `cni_args`, and returns its CNI result (`null` when it
    /// prints nothing, as for DEL).
    fn plexus(&self, command: &str, pod: &str, config: &Path, cni_args: &str) -> Result<Value> {
        let env = [
            ("CNI_COMMAND", command.to_string()),
            ("CNI_CONTAINERID", pod.to_string()),
            ("CNI_NETNS", netns_path(pod).display().to_string()),
            ("CNI_IFNAME", "eth0".to_string()),
            // plexus-ipam is found next to plexus.
            (
                "CNI_PATH",
                format!("{CNI_BIN_DIR}:{}", self.plexus_dir().display()),
            ),
            ("CNI_ARGS", cni_args.to_string()),
        ];
        let shown: Vec<String> = env
            .iter()
            .map(|(key, value)| format!("{key}={}", shell_quote(value)))
            .collect();
        println!(
            "$ {} {} < {}",
            shown.join(" "),
            self.plexus.display(),
            config.display()
        );
        let started = Instant::now();
        let out = Command::new(&self.plexus)
            .envs(env)
            .stdin(std::fs::File::open(config)?)
            .stderr(Stdio::inherit())
            .output()?;
        let took = started.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let answer: Value = if stdout.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&stdout)
                .map_err(|e| format!("plexus printed something that is not JSON ({e}): {stdout}"))?
        };
        if !out.status.success() {
            let mut message = answer["msg"].as_str().unwrap_or(&stdout).to_string();
            if let Some(details) = answer["details"].as_str().filter(|d| !d.is_empty()) {
                message.push_str(&format!(" ({details})"));
            }
            return Err(format!("plexus {command} for {pod} failed: {message}").into());
        }
        println!("plexus {command} took {:.0} ms", took.as_secs_f64() * 1e3);
        Ok(answer)
    }

    /// Creates the pod's namespace and attaches it with `plexus` ADD.
    fn attach(&self, pod: &str, config: &Path, cni_args: &str) -> Result {
        cmd::step(&format!("attaching pod {pod} (plexus ADD)"));
        netns::create_named(pod)?;
        let result = self.plexus("ADD", pod, config, cni_args)?;
        println!(
            "plexus answered with the primary network's result: {}",
            summarize_result(&result)
        );
        Ok(())
    }

    /// Shows what is left after DEL; fails if anything of the pods is.
    fn check_nothing_left(&self) -> Result {
        cmd::step("what is left after DEL");
        let mut left = Vec::new();
        for pod in self.pods {
            let names = link_names(&links::links(Some(&netns_path(pod)))?);
            println!("links in pod {pod}: {}", names.join(", "));
            if names != ["lo"] {
                left.push(format!("links in {pod}: {}", names.join(", ")));
            }
        }
        left.extend(self.node_leftovers()?);
        let (leases, cache) = self.show_state()?;
        if !leases.is_empty() {
            left.push(format!("leases: {}", leases.join(", ")));
        }
        if !cache.is_empty() {
            left.push(format!("cache entries: {}", cache.join(", ")));
        }
        if left.is_empty() {
            println!("nothing of the pods is left");
            Ok(())
        } else {
            Err(format!("left after DEL: {}", left.join("; ")).into())
        }
    }

    /// Prints and returns the host-local leases (plexus-ipam's allocations among them) and
    /// Plexus's cache entries.
    fn show_state(&self) -> Result<(Vec<String>, Vec<String>)> {
        let mut leases = leases(&self.state.join("ipam"))?;
        println!("host-local leases: {}", list_or_none(&leases));
        let allocations = plexus_ipam_allocations(&self.state.join("plexus-ipam"))?;
        println!("plexus-ipam allocations: {}", list_or_none(&allocations));
        leases.extend(allocations.into_iter().map(|a| format!("plexus-ipam {a}")));
        let cache = files_under(&self.state.join("cache"))?;
        println!("Plexus cache entries: {}", list_or_none(&cache));
        Ok((leases, cache))
    }

    /// Prints the node's links and returns the pods' ones among them: any
    /// veth other than the macvlan master's pair, and any macvlan.
    fn node_leftovers(&self) -> Result<Vec<String>> {
        let node_links = links::links(None)?;
        let described: Vec<String> = node_links
            .iter()
            .map(|l| match l.kind.as_deref() {
                Some(kind) => format!("{} ({kind})", l.name),
                None => l.name.clone(),
            })
            .collect();
        println!("links on the node: {}", described.join(", "));
        println!(
            "  (the bridge {BRIDGE} and the macvlan master {MASTER} belong to the node and stay)"
        );
        Ok(node_links
            .iter()
            .filter(|l| match l.kind.as_deref() {
                Some("veth") => l.name != MASTER && l.name != MASTER_PEER,
                Some("macvlan") => true,
                _ => false,
            })
            .map(|l| format!("{} on the node", l.name))
            .collect())
    }
}

/// One line for a CNI result: each interface in the pod with its addresses.
fn summarize_result(result: &Value) -> String {
    let interfaces = result["interfaces"].as_array().cloned().unwrap_or_default();
    let ips = result["ips"].as_array().cloned().unwrap_or_default();
    let parts: Vec<String> = ips
        .iter()
        .map(|ip| {
            let name = ip["interface"]
                .as_u64()
                .and_then(|i| interfaces.get(i as usize))
                .and_then(|i| i["name"].as_str())
                .unwrap_or("?");
            let address = ip["address"].as_str().unwrap_or("?");
            match ip["gateway"].as_str() {
                Some(gateway) => format!("{name} {address} (gateway {gateway})"),
                None => format!("{name} {address}"),
            }
        })
        .collect();
    list_or_none(&parts)
}

/// Prints a pod's interfaces (kind, MAC, addresses) and routes.
fn show_pod(pod: &str) -> Result {
    cmd::step(&format!("pod {pod}"));
    let path = netns_path(pod);
    let addresses = links::addresses(Some(&path))?;
    println!("interfaces:");
    for link in links::links(Some(&path))? {
        println!(
            "  {:<7} {:<8} {:<17} {}",
            link.name,
            link_kind(&link),
            link.mac.as_deref().unwrap_or("-"),
            addresses_of(&addresses, &link.name).join(" ")
        );
    }
    println!("routes:");
    for route in links::routes(Some(&path))? {
        if is_link_local(route.destination.addr()) {
            continue;
        }
        let mut line = format!("  {}", route.destination);
        if let Some(gateway) = route.gateway {
            line.push_str(&format!(" via {gateway}"));
        }
        if let Some(ifname) = &route.ifname {
            line.push_str(&format!(" dev {ifname}"));
        }
        println!("{line}");
    }
    Ok(())
}

/// The link's kind for display: `loopback` for `lo`, `-` for other
/// devices without a kind.
fn link_kind(link: &LinkInfo) -> &str {
    match (link.kind.as_deref(), link.name.as_str()) {
        (Some(kind), _) => kind,
        (None, "lo") => "loopback",
        (None, _) => "-",
    }
}

/// The addresses of interface `ifname`, without IPv6 link-local ones.
fn addresses_of(addresses: &[AddressInfo], ifname: &str) -> Vec<String> {
    addresses
        .iter()
        .filter(|a| a.ifname == ifname && !is_link_local(a.address.addr()))
        .map(|a| a.address.to_string())
        .collect()
}

/// True for IPv6 link-local addresses (`fe80::/10`), left out to keep the output short.
fn is_link_local(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

/// Pings `target` from `pod` and prints the outcome, labelled `what`; fails
/// if the ping fails.
fn ping_from(pod: &str, target: IpAddr, what: &str) -> Result {
    let (ok, summary) = ping(pod, target)?;
    println!("{what}: ping {target}: {summary}");
    if ok {
        Ok(())
    } else {
        Err(format!("{pod} cannot ping {target} ({what})").into())
    }
}

/// Runs `ping -c 2 -W 2 <target>` inside `pod`; returns whether it succeeded
/// and its summary line.
fn ping(pod: &str, target: IpAddr) -> Result<(bool, String)> {
    let out = netns::run_in(&netns_path(pod), move || {
        Command::new("ping")
            .args(["-c", "2", "-W", "2"])
            .arg(target.to_string())
            .output()
    })??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_string());
    Ok((out.status.success(), summary))
}

/// The names of `links`.
fn link_names(links: &[LinkInfo]) -> Vec<String> {
    links.iter().map(|l| l.name.clone()).collect()
}

/// The host-local reservations under `ipam_dir`: files named as IP addresses,
/// as `<network>/<ip>`.
fn leases(ipam_dir: &Path) -> Result<Vec<String>> {
    Ok(files_under(ipam_dir)?
        .into_iter()
        .filter(|f| {
            Path::new(f)
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.parse::<IpAddr>().is_ok())
        })
        .collect())
}

/// The allocations in plexus-ipam's local store `dir` (its `n-<network>.json` state files), as
/// `<ip> (<container>/<ifname>)`; none if it is missing.
fn plexus_ipam_allocations(dir: &Path) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for file in files_under(dir)?
        .into_iter()
        .filter(|f| f.ends_with(".json"))
    {
        let state: Value = serde_json::from_slice(&std::fs::read(dir.join(&file))?)?;
        for (ip, entry) in state["allocations"].as_object().into_iter().flatten() {
            let owner = &entry["owner"];
            found.push(format!(
                "{ip} ({}/{})",
                owner["containerID"].as_str().unwrap_or("?"),
                owner["ifname"].as_str().unwrap_or("?")
            ));
        }
    }
    Ok(found)
}

/// The files under `dir` (recursively), relative to it; none if it is missing.
fn files_under(dir: &Path) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries = match std::fs::read_dir(&current) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            other => other?,
        };
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let relative = path.strip_prefix(dir).unwrap_or(&path);
                found.push(relative.display().to_string());
            }
        }
    }
    found.sort();
    Ok(found)
}

/// `value` single-quoted for a shell if it holds anything but plain characters.
fn shell_quote(value: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-=:,".contains(c);
    if value.chars().all(plain) {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', "'\\''"))
    }
}

/// `items` joined by commas, or "none".
fn list_or_none(items: &[impl AsRef<str>]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<_>>()
            .join(", ")
    }
}
