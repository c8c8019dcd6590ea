//! `plexusctl install` on a directory laid out like a K3s node: the binaries copied atomically
//! (also over a binary that is running), the kubeconfig and the generated `00-plexus.conflist`,
//! `--watch` refreshing the token and leaving everything in place on SIGTERM, and a pod set up
//! and torn down through the generated configuration with the installed `plexus`.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{addresses_of, ns, Lab, Outcome};
use plexus_tests::{cni_plugin_dir, plexus_bin_dir, root_or_skip, TestPod};
use serde_json::{json, Value};

/// K3s's CNI bin dir, relative to the node's root.
const BIN: &str = "var/lib/rancher/k3s/data/cni";
/// K3s's CNI conf dir, relative to the node's root.
const CONF: &str = "var/lib/rancher/k3s/agent/etc/cni/net.d";
/// The API server address given to the installer.
const SERVER: &str = "https://10.43.0.1:443";

/// A self-signed CA certificate (no key anywhere) standing in for the cluster's CA bundle.
const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBiDCCAS+gAwIBAgIUEDLseswZDbt8JyPDgdVxhd0sYIcwCgYIKoZIzj0EAwIw
GTEXMBUGA1UEAwwOcGxleHVzLXRlc3QtY2EwIBcNMjYxMTIzMTkxNjE5WhgPMjEy
NjEwMzAxOTE2MTlaMBkxFzAVBgNVBAMMDnBsZXh1cy10ZXN0LWNhMFkwEwYHKoZI
zj0CAQYIKoZIzj0DAQcDQgAEiWrYBVsJgq7He+d7JgG0hO9cxP2boViLQw03eohX
e5JBon3eA6s293NOhMfbHXUE4rDeyNKZXEnIeGEestuIN6NTMFEwHQYDVR0OBBYE
FIqEsd9gMPY/LIBbheyEVmIgwfHnMB8GA1UdIwQYMBaAFIqEsd9gMPY/LIBbheyE
VmIgwfHnMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDRwAwRAIgDdokGqqw
KwXxOsm8pT5z0YJxGHSE0PydFGnMg4BRIXQCICuGaPc8sZALTcv8QimGCkqVyyTA
YFXLnOqZ/ITa+0lp
-----END CERTIFICATE-----
";

/// A fake K3s node: its root directory and the installer pod's service account directory.
struct Node {
    root: tempfile::TempDir,
    sa: tempfile::TempDir,
}

impl Node {
    /// A K3s node (fixed bin dir) whose conf dir holds `flannel` as `10-flannel.conflist`.
    fn new(flannel: &Value) -> Node {
        let node = Node {
            root: tempfile::tempdir().unwrap(),
            sa: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(node.path(BIN)).unwrap();
        std::fs::create_dir_all(node.path(CONF)).unwrap();
        std::fs::write(
            node.path(CONF).join("10-flannel.conflist"),
            serde_json::to_vec_pretty(flannel).unwrap(),
        )
        .unwrap();
        node.set_token("token-1");
        std::fs::write(node.sa.path().join("ca.crt"), TEST_CA).unwrap();
        node
    }

    /// `relative` under the node's root.
    fn path(&self, relative: &str) -> PathBuf {
        self.root.path().join(relative.trim_start_matches('/'))
    }

    /// Replaces the service account token as the kubelet does (a new file renamed in place).
    fn set_token(&self, token: &str) {
        let tmp = self.sa.path().join("..token.tmp");
        std::fs::write(&tmp, token).unwrap();
        std::fs::rename(tmp, self.sa.path().join("token")).unwrap();
    }

    /// `plexusctl install` for this node, with `extra` arguments (and `--server` unless they
    /// say `--no-kubeconfig`).
    fn install_command(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new(plexusctl());
        cmd.arg("install")
            .arg("--root")
            .arg(self.root.path())
            .arg("--sa-dir")
            .arg(self.sa.path())
            .args(["--readiness-indicator-file", "/run/flannel/subnet.env"]);
        if !extra.contains(&"--no-kubeconfig") {
            cmd.args(["--server", SERVER]);
        }
        cmd.args(extra)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT");
        cmd
    }

    /// Runs `plexusctl install` to completion and asserts that it succeeded.
    fn install(&self, extra: &[&str]) -> String {
        let out = self.install_command(extra).output().expect("run plexusctl");
        assert_success(&out);
        String::from_utf8(out.stdout).unwrap()
    }

    /// The generated conflist.
    fn conflist(&self) -> Value {
        let text = std::fs::read(self.path(CONF).join("00-plexus.conflist")).unwrap();
        serde_json::from_slice(&text).unwrap()
    }
}

/// The `plexusctl` binary (crate `plexusctl`), built next to `plexus`.
fn plexusctl() -> PathBuf {
    let path = plexus_bin_dir().join("plexusctl");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build -p plexusctl` first",
        path.display()
    );
    path
}

fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "plexusctl install failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Flannel's stand-in: a bridge with host-local, followed by tuning, each declaring a
/// capability the way Flannel's portmap and bandwidth plugins do.
fn flannel_standin(mut bridge: Value) -> Value {
    bridge["capabilities"] = json!({"portMappings": true});
    let bridge = bridge.as_object_mut().unwrap();
    bridge.remove("cniVersion");
    bridge.remove("name");
    json!({
        "name": "cbr0",
        "cniVersion": "1.0.0",
        "plugins": [bridge, {"type": "tuning", "capabilities": {"mac": true, "bandwidth": false}}]
    })
}

/// A bridge configuration for the nodes that never run a pod.
fn some_bridge() -> Value {
    json!({"type": "bridge", "bridge": "cni0", "isGateway": true,
           "ipam": {"type": "host-local", "subnet": "10.42.0.0/24"}})
}

/// Waits up to 20 s for `check`.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn installs_binaries_kubeconfig_and_conflist_on_a_k3s_node() {
    let node = Node::new(&flannel_standin(some_bridge()));
    let stdout = node.install(&[]);
    println!("{stdout}");
    assert!(stdout.contains("node layout: K3s"), "{stdout}");

    // The binary, executable, identical to the build's.
    let installed = node.path(BIN).join("plexus");
    let source = plexus_bin_dir().join("plexus");
    assert_eq!(
        std::fs::metadata(&installed).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert!(std::fs::read(&installed).unwrap() == std::fs::read(&source).unwrap());
    assert_eq!(
        node.path(BIN).join("plexus-ipam").exists(),
        plexus_bin_dir().join("plexus-ipam").exists()
    );

    // The credentials and the kubeconfig naming them by their node paths.
    let plexus_d = node.path(CONF).join("plexus.d");
    assert_eq!(
        std::fs::read_to_string(plexus_d.join("token")).unwrap(),
        "token-1"
    );
    for (file, mode) in [("plexus.kubeconfig", 0o600), ("token", 0o600)] {
        let m = std::fs::metadata(plexus_d.join(file)).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, mode, "{file}");
    }
    let kubeconfig_path = plexus_d.join("plexus.kubeconfig");
    let kubeconfig = kube::config::Kubeconfig::read_from(&kubeconfig_path).unwrap();
    assert_eq!(kubeconfig.current_context.as_deref(), Some("plexus"));
    let cluster = kubeconfig.clusters[0].cluster.as_ref().unwrap();
    assert_eq!(cluster.server.as_deref(), Some(SERVER));
    let node_conf = format!("/{CONF}");
    assert_eq!(
        cluster.certificate_authority.as_deref(),
        Some(format!("{node_conf}/plexus.d/ca.crt").as_str())
    );
    let user = kubeconfig.auth_infos[0].auth_info.as_ref().unwrap();
    assert_eq!(
        user.token_file.as_deref(),
        Some(format!("{node_conf}/plexus.d/token").as_str())
    );
    assert!(
        user.token.is_none(),
        "the token is referenced, not embedded"
    );
    // Plexus's own client accepts it (with the node paths moved under the fake root).
    let text = std::fs::read_to_string(&kubeconfig_path).unwrap();
    let rooted = node.root.path().join("rooted.kubeconfig");
    std::fs::write(
        &rooted,
        text.replace(&node_conf, node.path(CONF).to_str().unwrap()),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let api = rt
        .block_on(plexus::k8s::client::KubeApi::from_kubeconfig(
            &rooted,
            Duration::from_secs(5),
        ))
        .expect("plexus reads the generated kubeconfig");
    assert_eq!(api.server(), SERVER);

    // The conflist: the node's paths, Flannel's version and capabilities.
    assert_eq!(
        node.conflist(),
        json!({
            "cniVersion": "1.0.0",
            "name": "plexus-cni-network",
            "plugins": [{
                "type": "plexus",
                "clusterNetwork": format!("{node_conf}/10-flannel.conflist"),
                "confDir": node_conf,
                "binDir": format!("/{BIN}"),
                "cniDir": "/var/lib/cni/plexus",
                "kubeconfig": format!("{node_conf}/plexus.d/plexus.kubeconfig"),
                "readinessindicatorfile": "/run/flannel/subnet.env",
                "agentSocket": "/run/plexus/plexusd.sock",
                "capabilities": {
                    "portMappings": true,
                    "mac": true,
                    "io.kubernetes.cri.pod-annotations": true
                }
            }]
        })
    );
    assert!(node.path("var/lib/cni/plexus").is_dir());

    // Again: nothing changes, nothing is rewritten.
    let conflist_path = node.path(CONF).join("00-plexus.conflist");
    let inode = std::fs::metadata(&conflist_path).unwrap().ino();
    let again = node.install(&[]);
    assert!(!again.contains("wrote"), "{again}");
    assert!(again.contains("already installed"), "{again}");
    assert_eq!(std::fs::metadata(&conflist_path).unwrap().ino(), inode);

    // No temporary file is left anywhere.
    for dir in [node.path(BIN), node.path(CONF), plexus_d] {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(!name.contains("plexus-tmp"), "left over: {name}");
        }
    }
}

#[test]
fn reinstalls_over_a_running_binary() {
    let node = Node::new(&flannel_standin(some_bridge()));
    node.install(&[]);
    // Stand in for a runtime executing plexus during an upgrade: /bin/sleep in its place.
    let installed = node.path(BIN).join("plexus");
    std::fs::copy("/bin/sleep", &installed).unwrap();
    let mut running = Command::new(&installed).arg("60").spawn().unwrap();
    // A plain copy over it fails, as `cp` did for Multus (#1221).
    let err = std::fs::OpenOptions::new()
        .write(true)
        .open(&installed)
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(nix::libc::ETXTBSY), "{err}");

    let stdout = node.install(&[]);
    running.kill().unwrap();
    running.wait().unwrap();
    assert!(
        stdout.contains(&format!("installed {}", installed.display())),
        "{stdout}"
    );
    assert!(
        std::fs::read(&installed).unwrap()
            == std::fs::read(plexus_bin_dir().join("plexus")).unwrap()
    );
}

/// Reads a child's stdout lines into a channel, echoing them.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("watch: {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line containing `needle`.
fn expect_line(lines: &mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(e) => panic!("no line with {needle:?}: {e}"),
        }
    }
}

#[test]
fn watch_refreshes_the_token_and_deletes_nothing_on_sigterm() {
    let node = Node::new(&flannel_standin(some_bridge()));
    let mut watcher = node
        .install_command(&["--watch", "--watch-interval", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut watcher);
    expect_line(&lines, "watching");

    // The kubelet rotates the token: the node's copy follows.
    let token = node.path(CONF).join("plexus.d/token");
    node.set_token("token-2");
    eventually("the token copy", || {
        std::fs::read_to_string(&token).is_ok_and(|t| t == "token-2")
    });
    expect_line(&lines, "wrote");
    // A binary that disappears (an older K3s's upgrade) is put back.
    let installed = node.path(BIN).join("plexus");
    std::fs::remove_file(&installed).unwrap();
    eventually("the binary to be reinstalled", || installed.is_file());

    // SIGTERM: it stops at once and leaves everything in place.
    let pid = nix::unistd::Pid::from_raw(watcher.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    expect_line(&lines, "stay in place");
    let status = watcher.wait().unwrap();
    assert!(status.success(), "{status}");
    for file in [
        format!("{CONF}/00-plexus.conflist"),
        format!("{CONF}/plexus.d/plexus.kubeconfig"),
        format!("{CONF}/plexus.d/token"),
        format!("{CONF}/plexus.d/ca.crt"),
        format!("{BIN}/plexus"),
    ] {
        assert!(node.path(&file).is_file(), "{file} was removed");
    }
    assert_eq!(node.conflist()["name"], "plexus-cni-network");
}

#[test]
fn waits_for_the_primary_and_fails_without_one() {
    let node = Node::new(&flannel_standin(some_bridge()));
    let flannel = node.path(CONF).join("10-flannel.conflist");
    let saved = std::fs::read(&flannel).unwrap();
    std::fs::remove_file(&flannel).unwrap();

    let out = node.install_command(&[]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no primary network configuration"),
        "{stderr}"
    );
    assert!(!node.path(CONF).join("00-plexus.conflist").exists());

    // The watching container waits too, but a SIGTERM ends the wait at once.
    let waiting = node
        .install_command(&["--watch", "--wait-for-primary", "120"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    let pid = nix::unistd::Pid::from_raw(waiting.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = waiting.wait_with_output().unwrap();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("stopped by a signal"), "{stderr}");

    // Flannel writes its file a little later.
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        std::fs::write(flannel, saved).unwrap();
    });
    node.install(&["--wait-for-primary", "20"]);
    writer.join().unwrap();
    assert_eq!(node.conflist()["plugins"][0]["type"], "plexus");
}

#[test]
fn older_k3s_gets_the_legacy_bin_dir() {
    let node = Node::new(&flannel_standin(some_bridge()));
    std::fs::remove_dir(node.path(BIN)).unwrap();
    let legacy = "var/lib/rancher/k3s/data/current/bin";
    std::fs::create_dir_all(node.path(legacy)).unwrap();
    let stdout = node.install(&["--no-kubeconfig"]);
    assert!(stdout.contains("before v1.28.15"), "{stdout}");
    assert!(node.path(legacy).join("plexus").is_file());
    let plugin = &node.conflist()["plugins"][0];
    assert_eq!(plugin["binDir"], format!("/{legacy}"));
    assert!(plugin.get("kubeconfig").is_none());
    assert!(!node.path(CONF).join("plexus.d").exists());
}

/// Runs a `plexus` binary as a runtime would.
fn run_cni(plexus: &Path, env: &[(&str, &str)], stdin: &Value) -> Outcome {
    use std::io::Write;
    let mut child = Command::new(plexus)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.to_string().as_bytes());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout).unwrap()
    };
    Outcome {
        code: out.status.code().unwrap_or(-1),
        json,
        stdout,
    }
}

#[test]
fn a_pod_is_set_up_and_torn_down_through_the_generated_config() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let pod = TestPod::new("pxpod");
    let node = Node::new(&flannel_standin(lab.bridge("1.0.0")));
    // K3s's bin dir holds the real plugins.
    for plugin in std::fs::read_dir(cni_plugin_dir()).unwrap().flatten() {
        std::os::unix::fs::symlink(plugin.path(), node.path(BIN).join(plugin.file_name())).unwrap();
    }
    node.install(&[]);

    // What the runtime sends: the plugin's configuration with the list's name and version.
    let conflist = node.conflist();
    let mut config = conflist["plugins"][0].clone();
    config["name"] = conflist["name"].clone();
    config["cniVersion"] = conflist["cniVersion"].clone();
    // No cluster here: Plexus runs the primary network alone.
    config.as_object_mut().unwrap().remove("kubeconfig");
    // The node's paths are under the fake root here.
    for key in [
        "clusterNetwork",
        "confDir",
        "binDir",
        "cniDir",
        "readinessindicatorfile",
        "agentSocket",
    ] {
        let node_path = config[key].as_str().unwrap().to_string();
        config[key] = json!(node.path(&node_path));
    }
    config["readinessTimeoutSeconds"] = json!(5);
    std::fs::create_dir_all(node.path("run/flannel")).unwrap();
    std::fs::write(
        node.path("run/flannel/subnet.env"),
        "FLANNEL_SUBNET=10.10.0.1/24\n",
    )
    .unwrap();

    let plexus = node.path(BIN).join("plexus");
    let bin_dir = node.path(BIN);
    let env = |command: &'static str| {
        vec![
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", "c-k3s-install"),
            ("CNI_NETNS", ns(&pod)),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", bin_dir.to_str().unwrap()),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=test",
            ),
        ]
    };
    let result = run_cni(&plexus, &env("ADD"), &config).ok();
    println!("ADD result: {result}");
    assert_eq!(result["cniVersion"], "1.0.0");
    let eth0 = addresses_of(&pod, "eth0");
    assert_eq!(eth0.len(), 1, "{eth0:?}");
    assert!(eth0[0].to_string().starts_with("10.10.0."), "{eth0:?}");
    let cache = node.path("var/lib/cni/plexus");
    assert!(cache.join("c-k3s-install").is_file());

    run_cni(&plexus, &env("DEL"), &config).ok();
    lab.assert_clean(Some(&pod));
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 0, "cache left");
}

/// `examples/k3s/<file>`.
fn example(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/k3s")
        .join(file)
}

/// The YAML documents of an example file.
fn documents<T: serde::de::DeserializeOwned>(file: &str) -> Vec<T> {
    let text = std::fs::read_to_string(example(file)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| T::deserialize(doc).unwrap_or_else(|e| panic!("{file}: {e}")))
        .collect()
}

#[test]
fn the_k3s_examples_are_current_and_valid() {
    // 03-crds.yaml is `plexusctl crds`.
    assert!(
        std::fs::read_to_string(example("03-crds.yaml")).unwrap() == plexus_crds::crd_yaml(),
        "examples/k3s/03-crds.yaml is stale: plexusctl crds > examples/k3s/03-crds.yaml"
    );

    // 00-plexus.conflist is what the installer writes for 10-flannel.conflist.
    let flannel: Value =
        serde_json::from_slice(&std::fs::read(example("10-flannel.conflist")).unwrap()).unwrap();
    let node = Node::new(&flannel);
    node.install(&["--log-file", "/var/log/plexus.log", "--log-level", "error"]);
    let shipped: Value =
        serde_json::from_slice(&std::fs::read(example("00-plexus.conflist")).unwrap()).unwrap();
    assert_eq!(node.conflist(), shipped, "examples/k3s/00-plexus.conflist");

    // The DaemonSet: the main container runs the init container's command plus --watch, both
    // with the K3s mounts, as the plexus service account of 01-rbac.yaml.
    let [ds]: [k8s_openapi::api::apps::v1::DaemonSet; 1] =
        documents("04-plexus-daemonset.yaml").try_into().unwrap();
    assert_eq!(
        ds.metadata.namespace.as_deref(),
        Some(plexus_tests::cluster::SA_NAMESPACE),
        "the DaemonSet runs in the service account's namespace (01-rbac.yaml)"
    );
    let spec = ds.spec.template.spec.unwrap();
    assert_eq!(
        spec.service_account_name.as_deref(),
        Some(plexus_tests::cluster::SA_NAME)
    );
    let init = &spec.init_containers.as_ref().unwrap()[0];
    let main = &spec.containers[0];
    let mut watching = init.command.clone().unwrap();
    assert_eq!(&watching[1..3], ["install", "--k3s"]);
    watching.push("--watch".into());
    assert_eq!(main.command.as_ref(), Some(&watching));
    for container in [init, main] {
        let mounts: Vec<&str> = container
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert_eq!(
            mounts,
            [
                format!("/{BIN}"),
                format!("/{CONF}"),
                "/var/lib/cni".into(),
                "/var/run/secrets/kubernetes.io/serviceaccount".into()
            ]
        );
    }
    // The node agent: its socket where the conflist's agentSocket names it, its node from the
    // downward API, the conf dir read-only (it never deletes or rewrites the configuration),
    // the IPAM's hints under /var/lib/cni, hot-plug with the conflist, a liveness Ping and a
    // memory limit.
    let agent = &spec.containers[1];
    assert_eq!(agent.name, "plexusd");
    let socket = shipped["plugins"][0]["agentSocket"].as_str().unwrap();
    assert_eq!(
        agent.command.as_ref().unwrap(),
        &[
            "/usr/local/bin/plexusd".to_string(),
            format!("--socket={socket}"),
            format!("--plexus-config=/{CONF}/00-plexus.conflist")
        ]
    );
    let env = &agent.env.as_ref().unwrap()[0];
    assert_eq!(env.name, "NODE_NAME");
    let field = env.value_from.as_ref().unwrap().field_ref.as_ref().unwrap();
    assert_eq!(field.field_path, "spec.nodeName");
    let mounts: Vec<(&str, bool)> = agent
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.mount_path.as_str(), m.read_only == Some(true)))
        .collect();
    assert_eq!(
        mounts,
        [
            ("/run/plexus", false),
            (format!("/{CONF}").as_str(), true),
            ("/var/lib/cni", false),
            // For hot-plug: the delegates, and the pods' network namespaces.
            (format!("/{BIN}").as_str(), true),
            ("/var/run/netns", false)
        ]
    );
    assert!(Path::new(socket).starts_with("/run/plexus"));
    let probe = agent
        .liveness_probe
        .as_ref()
        .unwrap()
        .exec
        .as_ref()
        .unwrap();
    assert_eq!(
        probe.command.as_ref().unwrap()[1..],
        ["--probe".to_string(), format!("--socket={socket}")]
    );
    let limits = agent.resources.as_ref().unwrap().limits.as_ref().unwrap();
    assert!(limits.contains_key("memory"));

    // The token is 02-plexus-token.yaml's Secret (it outlives the pod), not the pod's own.
    assert_eq!(spec.automount_service_account_token, Some(false));
    let token = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "token")
        .and_then(|v| v.secret.as_ref())
        .and_then(|s| s.secret_name.clone());
    let [secret]: [k8s_openapi::api::core::v1::Secret; 1] =
        documents("02-plexus-token.yaml").try_into().unwrap();
    assert_eq!(token, secret.metadata.name);
    assert_eq!(secret.metadata.namespace, ds.metadata.namespace);
    assert_eq!(
        secret.metadata.annotations.unwrap()["kubernetes.io/service-account.name"],
        plexus_tests::cluster::SA_NAME
    );

    // The NADs are configurations Plexus runs; the pods' annotations parse.
    let nads: Vec<plexus_crds::NetworkAttachmentDefinition> = documents("pods/example-nads.yaml");
    let names: Vec<String> = nads
        .iter()
        .map(|nad| {
            let name = nad.metadata.name.clone().unwrap();
            plexus::k8s::nad::delegate_config(
                "default",
                &name,
                &nad.spec.config,
                Path::new("/nonexistent"),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            name
        })
        .collect();
    assert_eq!(names, ["macvlan-conf", "bridge-conf"]);
    let pods: Vec<k8s_openapi::api::core::v1::Pod> = documents("pods/example-pod.yaml");
    assert_eq!(pods.len(), 2);
    // The short form takes the default names (net1, net2); the JSON form names one.
    let expected = [None, Some("bridge0".to_string())];
    for (pod, second) in pods.into_iter().zip(expected) {
        let annotations = pod.metadata.annotations.unwrap();
        let selections = plexus::k8s::selection::parse_networks(
            &annotations["k8s.v1.cni.cncf.io/networks"],
            "default",
        )
        .unwrap();
        let asked: Vec<(String, Option<String>)> = selections
            .into_iter()
            .map(|s| (s.name, s.interface))
            .collect();
        assert_eq!(
            asked,
            [
                ("macvlan-conf".into(), None),
                ("bridge-conf".into(), second)
            ]
        );
    }
}
