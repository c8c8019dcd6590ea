//! Installing Plexus as users do: the example files applied with `kubectl apply`, the
//! DaemonSet's init container writing the conflist ([`Install::DaemonSet`](super::Install)).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{examples_dir, KubeNode, Result, POLL};

/// The example files that install Plexus, in the order `kubectl apply -f examples/k3s/` takes
/// them (name order): the namespace and identity, the token, the CRDs, the DaemonSet. The
/// example networks and pods are in `pods/`, one directory down, applied afterwards.
pub const INSTALL_FILES: &[&str] = &[
    "01-rbac.yaml",
    "02-plexus-token.yaml",
    "03-crds.yaml",
    "04-plexus-daemonset.yaml",
];

/// The namespace of the DaemonSet and its token.
pub const SYSTEM_NAMESPACE: &str = "plexus-system";

/// How long the DaemonSet gets to install Plexus.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(180);

impl KubeNode {
    /// `kubectl <verb> -f examples/k3s/<file> …` (a file, or a directory such as `""` for
    /// `examples/k3s/` itself and `pods/`); prints the command and its output.
    pub fn kubectl_files(&self, verb: &[&str], files: &[&str]) -> Result<String> {
        let paths: Vec<String> = files
            .iter()
            .map(|f| examples_dir().join(f).display().to_string())
            .collect();
        let mut args: Vec<&str> = verb.to_vec();
        for path in &paths {
            args.extend(["-f", path.as_str()]);
        }
        let out = self.kubectl(&args)?;
        print!("$ kubectl {}\n{out}", args.join(" "));
        Ok(out)
    }

    /// Plexus's conflist on the node, as the host sees it.
    pub fn conflist(&self) -> PathBuf {
        self.conf_dir().join("00-plexus.conflist")
    }

    /// `jsonpath` of the DaemonSet's pods, split at white space.
    fn daemonset_jsonpath(&self, path: &str) -> Result<Vec<String>> {
        Ok(self
            .kubectl(&[
                "get",
                "pods",
                "-n",
                SYSTEM_NAMESPACE,
                "-l",
                "app=plexus",
                "-o",
                &format!("jsonpath={path}"),
            ])?
            .split_whitespace()
            .map(str::to_string)
            .collect())
    }

    /// The phases of the DaemonSet's pods.
    pub fn daemonset_pods(&self) -> Result<Vec<String>> {
        self.daemonset_jsonpath("{.items[*].status.phase}")
    }

    /// How often the kubelet restarted `container` of each of the DaemonSet's pods.
    pub fn daemonset_restarts(&self, container: &str) -> Result<Vec<u32>> {
        let path = format!(
            "{{.items[*].status.containerStatuses[?(@.name==\"{container}\")].restartCount}}"
        );
        self.daemonset_jsonpath(&path)?
            .iter()
            .map(|n| Ok(n.parse()?))
            .collect()
    }

    /// `kubectl apply -f examples/k3s/` (that is [`INSTALL_FILES`]), as users install, and
    /// waits until the DaemonSet's init container has written the conflist and its pod runs;
    /// returns how long each took after `kubectl apply`.
    pub fn install_with_daemonset(&self) -> Result<(Duration, Duration)> {
        let started = Instant::now();
        self.kubectl_files(&["apply"], &[""])?;
        let mut written = None;
        loop {
            if written.is_none() && self.conflist().exists() {
                written = Some(started.elapsed());
            }
            if let Some(written) = written {
                if self.daemonset_pods()? == ["Running"] {
                    return Ok((written, started.elapsed()));
                }
            }
            if started.elapsed() > INSTALL_TIMEOUT {
                let pods = self.kubectl(&["get", "pods", "-n", SYSTEM_NAMESPACE, "-o", "wide"]);
                return Err(format!(
                    "the DaemonSet did not install Plexus within {INSTALL_TIMEOUT:?} \
                     (conflist written: {}); its pods: {pods:?}",
                    written.is_some()
                )
                .into());
            }
            std::thread::sleep(POLL);
        }
    }
}
