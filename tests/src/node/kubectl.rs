//! Driving the node as a user does: `kubectl` (Debian's, with the admin kubeconfig, inside the
//! node), the example files, the pods and their sandboxes.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{
    examples_dir, poll_until, Install, KubeNode, Result, NAMESPACE, NODE_NAME, POLL, READY_TIMEOUT,
};
use crate::cluster;

/// A `kubectl` call that takes longer is reported.
const SLOW_KUBECTL: Duration = Duration::from_secs(5);

impl KubeNode {
    /// The objects of an example file of [`examples_dir`]; with [`Install::Direct`] (no
    /// scheduler) every pod is bound to the node ([`bind_to_node`]).
    pub fn example_objects(&self, file: &str) -> Result<Vec<Value>> {
        let path = examples_dir().join(file);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut objects = Vec::new();
        for object in cluster::yaml_objects(&text)? {
            let mut value = serde_json::to_value(object)?;
            if self.install == Install::Direct {
                bind_to_node(&mut value);
            }
            objects.push(value);
        }
        Ok(objects)
    }

    /// A copy of the example pod asking for both example networks in the short form
    /// (`plexus-demo-short` of `pods/example-pod.yaml`), named `name`.
    pub fn short_form_pod(&self, name: &str) -> Result<Value> {
        let mut pod = self
            .example_objects("pods/example-pod.yaml")?
            .into_iter()
            .find(|o| o["metadata"]["name"] == "plexus-demo-short")
            .ok_or("pods/example-pod.yaml has no plexus-demo-short")?;
        pod["metadata"]["name"] = serde_json::json!(name);
        Ok(pod)
    }

    /// `kubectl apply` of the objects of an example file ([`example_objects`](Self::example_objects)).
    pub fn apply_file(&self, file: &str) -> Result<String> {
        self.apply(&self.example_objects(file)?)
    }

    /// `kubectl apply -f -` of `objects` (as a `List`).
    pub fn apply(&self, objects: &[Value]) -> Result<String> {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
        self.kubectl_with_input(&["apply", "-f", "-"], &list.to_string())
    }

    /// Runs Debian's `kubectl` with the admin kubeconfig, inside the node; its stdout, or an
    /// error with its stderr.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.run_kubectl(args, None)
    }

    /// [`kubectl`](Self::kubectl) with `input` on its stdin.
    pub fn kubectl_with_input(&self, args: &[&str], input: &str) -> Result<String> {
        self.run_kubectl(args, Some(input))
    }

    fn run_kubectl(&self, args: &[&str], input: Option<&str>) -> Result<String> {
        let mut cmd = Command::new(&self.binaries.kubectl);
        cmd.env("KUBECONFIG", &self.cluster().kubeconfig)
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let input = input.map(str::to_string);
        let line = format!("kubectl {}", args.join(" "));
        self.thread.run(move || -> Result<String> {
            let started = Instant::now();
            let mut child = cmd
                .spawn()
                .map_err(|e| format!("cannot run kubectl: {e}"))?;
            if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
                stdin.write_all(input.as_bytes())?;
            }
            let out = child.wait_with_output()?;
            if started.elapsed() > SLOW_KUBECTL {
                eprintln!(
                    "kubelet node: {line} took {:.1}s",
                    started.elapsed().as_secs_f64()
                );
            }
            if out.status.success() {
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            } else {
                Err(format!(
                    "{line} failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )
                .into())
            }
        })
    }

    /// A pod as JSON (`kubectl get pod -o json`).
    pub fn pod(&self, name: &str) -> Result<Value> {
        let text = self.kubectl(&["get", "pod", name, "-n", NAMESPACE, "-o", "json"])?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Waits until every pod of `names` is Running; how long it took. Fails early, with the
    /// pods' events, if one of them failed or the time is up.
    pub fn wait_running(&self, names: &[String], timeout: Duration) -> Result<Duration> {
        let started = Instant::now();
        loop {
            let text = self.kubectl(&["get", "pods", "-n", NAMESPACE, "-o", "json"])?;
            let list: Value = serde_json::from_str(&text)?;
            let phases: BTreeMap<&str, &str> = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    Some((
                        p["metadata"]["name"].as_str()?,
                        p["status"]["phase"].as_str().unwrap_or("?"),
                    ))
                })
                .collect();
            let waiting: Vec<&String> = names
                .iter()
                .filter(|n| phases.get(n.as_str()) != Some(&"Running"))
                .collect();
            if waiting.is_empty() {
                return Ok(started.elapsed());
            }
            let failed: Vec<&&String> = waiting
                .iter()
                .filter(|n| matches!(phases.get(n.as_str()), Some(&"Failed")))
                .collect();
            if !failed.is_empty() || started.elapsed() > timeout {
                let first = waiting[0];
                return Err(format!(
                    "pods not Running after {:.1}s: {waiting:?}; events of {first}: {}",
                    started.elapsed().as_secs_f64(),
                    self.events(first).unwrap_or_default().join(" | ")
                )
                .into());
            }
            std::thread::sleep(POLL);
        }
    }

    /// The events of pod `name`, as `reason: message`, oldest first.
    pub fn events(&self, name: &str) -> Result<Vec<String>> {
        let selector = format!("involvedObject.name={name}");
        let text = self.kubectl(&[
            "get",
            "events",
            "-n",
            NAMESPACE,
            "--field-selector",
            &selector,
            "-o",
            "json",
        ])?;
        let list: Value = serde_json::from_str(&text)?;
        Ok(list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                format!(
                    "{}: {}",
                    e["reason"].as_str().unwrap_or("?"),
                    e["message"].as_str().unwrap_or("")
                )
            })
            .collect())
    }

    /// Deletes every pod of [`NAMESPACE`] (a grace period of 1 s) and waits until they are
    /// gone: the kubelet has stopped their sandboxes, so their networks are detached.
    pub fn delete_all_pods(&self) -> Result {
        self.kubectl(&[
            "delete",
            "pods",
            "--all",
            "-n",
            NAMESPACE,
            "--grace-period=1",
            "--wait=true",
            "--timeout=120s",
        ])
        .map(drop)
    }

    /// Deletes every pod of [`NAMESPACE`] at once (`--force --grace-period=0`: the API objects
    /// go first) and waits until the kubelet has stopped every pod sandbox, so that their
    /// networks are detached; the kubelet removes the stopped sandboxes later. Much faster than
    /// [`delete_all_pods`](Self::delete_all_pods), whose wait is paced by the kubelet's status
    /// sync (every 10 s): for clearing the node between tests.
    pub fn force_delete_all_pods(&self) -> Result {
        self.kubectl(&[
            "delete",
            "pods",
            "--all",
            "-n",
            NAMESPACE,
            "--force",
            "--grace-period=0",
            "--wait=false",
        ])?;
        let containerd = self.containerd.as_ref().expect("containerd runs");
        poll_until(
            READY_TIMEOUT,
            || {
                let ready: Vec<String> = self
                    .sandboxes()?
                    .into_iter()
                    .filter(|id| containerd.pod_sandbox_status(id).is_ok_and(|s| s.ready))
                    .collect();
                Ok(if ready.is_empty() { Ok(()) } else { Err(ready) })
            },
            |ready| format!("sandboxes still ready after {READY_TIMEOUT:?}: {ready:?}"),
        )
    }

    /// The ids of the pod sandboxes containerd still knows (ready or not), sorted.
    pub fn sandboxes(&self) -> Result<Vec<String>> {
        let mut ids = self
            .containerd
            .as_ref()
            .expect("containerd runs")
            .list_pod_sandboxes()
            .map_err(|e| format!("ListPodSandbox: {}", e.message()))?;
        ids.sort();
        Ok(ids)
    }

    /// Waits until containerd knows no pod sandbox any more (the kubelet removes a stopped
    /// sandbox of a deleted pod within a few seconds).
    pub fn wait_no_sandboxes(&self, timeout: Duration) -> Result {
        poll_until(
            timeout,
            || {
                let left = self.sandboxes()?;
                Ok(if left.is_empty() { Ok(()) } else { Err(left) })
            },
            |left| format!("sandboxes still there after {timeout:?}: {left:?}"),
        )
    }
}

/// Binds a pod to the node (`nodeName`, as a scheduler would) and keeps the kubelet from
/// pulling its images (`imagePullPolicy: Never`: they are imported). Other objects are left as
/// they are.
pub fn bind_to_node(object: &mut Value) {
    if object["kind"] != "Pod" {
        return;
    }
    object["spec"]["nodeName"] = json!(NODE_NAME);
    for list in ["containers", "initContainers"] {
        if let Some(containers) = object["spec"][list].as_array_mut() {
            for container in containers {
                container["imagePullPolicy"] = json!("Never");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_are_bound_and_never_pull() {
        let mut pod = json!({"kind": "Pod", "spec": {"containers": [{"name": "a", "image": "busybox:1.36"}]}});
        bind_to_node(&mut pod);
        assert_eq!(pod["spec"]["nodeName"], NODE_NAME);
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Never");
        let mut nad = json!({"kind": "NetworkAttachmentDefinition", "spec": {}});
        bind_to_node(&mut nad);
        assert_eq!(nad["spec"], json!({}));
    }
}
