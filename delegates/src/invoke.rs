//! The runtime side of one plugin call: find the binary, run it with the CNI environment and its
//! stdin under a timeout, and read its result or its error.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::process::Command as Process;

use crate::env::Command;
use crate::error::{CniError, ErrorCode};

/// Why a plugin call failed.
#[derive(Debug, Error)]
pub enum InvokeError {
    /// The `type` names something other than a file in the plugin path.
    #[error("plugin type {0:?} is not a plain binary name (it must not contain '/' or '..')")]
    InvalidType(String),
    /// No plugin path directory holds the binary.
    #[error("failed to find plugin {plugin:?} in path {path:?}")]
    NotFound {
        /// The plugin type.
        plugin: String,
        /// The directories searched.
        path: Vec<PathBuf>,
    },
    /// The binary could not be started.
    #[error("failed to run plugin {plugin:?}: {source}")]
    Spawn {
        /// The plugin binary.
        plugin: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The plugin did not finish in time and was killed.
    #[error("plugin {plugin:?} did not answer within {timeout:?}")]
    Timeout {
        /// The plugin binary.
        plugin: PathBuf,
        /// The limit.
        timeout: Duration,
    },
    /// The plugin failed and said why.
    #[error("plugin {plugin:?} failed: {error}")]
    Plugin {
        /// The plugin binary.
        plugin: PathBuf,
        /// Its error object.
        error: CniError,
    },
}

impl InvokeError {
    /// The CNI error this failure is reported as.
    pub fn to_cni_error(&self) -> CniError {
        match self {
            InvokeError::InvalidType(_) => {
                CniError::new(ErrorCode::InvalidNetworkConfig, self.to_string())
            }
            InvokeError::NotFound { .. } => {
                CniError::new(ErrorCode::PluginNotFound, self.to_string())
            }
            InvokeError::Spawn { .. } => CniError::new(ErrorCode::IoFailure, self.to_string()),
            InvokeError::Timeout { .. } => {
                CniError::new(ErrorCode::DelegateTimeout, self.to_string())
            }
            InvokeError::Plugin { error, .. } => error.clone(),
        }
    }
}

/// Finds plugin `plugin_type` in the directories, in order. A type that contains `/` or `..`, or
/// is empty, is refused: it would let a configuration's author run any file on the node.
pub fn find_plugin(plugin_type: &str, dirs: &[PathBuf]) -> Result<PathBuf, InvokeError> {
    if plugin_type.is_empty()
        || plugin_type.contains('/')
        || plugin_type.contains("..")
        || plugin_type.contains('\0')
    {
        return Err(InvokeError::InvalidType(plugin_type.to_string()));
    }
    dirs.iter()
        .map(|d| d.join(plugin_type))
        .find(|p| is_executable_file(p))
        .ok_or_else(|| InvokeError::NotFound {
            plugin: plugin_type.to_string(),
            path: dirs.to_vec(),
        })
}

fn is_executable_file(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The CNI environment a runtime gives a plugin.
#[derive(Debug, Clone, Default)]
pub struct Invocation {
    /// `CNI_COMMAND`.
    pub command: Option<Command>,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS` (empty when none).
    pub netns: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS`, already joined.
    pub args: String,
    /// `CNI_PATH` directories.
    pub path: Vec<PathBuf>,
}

impl Invocation {
    fn env(&self) -> Vec<(&'static str, String)> {
        let path = self
            .path
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(":");
        vec![
            (
                "CNI_COMMAND",
                self.command.map(|c| c.as_str()).unwrap_or("").to_string(),
            ),
            ("CNI_CONTAINERID", self.container_id.clone()),
            ("CNI_NETNS", self.netns.clone()),
            ("CNI_IFNAME", self.ifname.clone()),
            ("CNI_ARGS", self.args.clone()),
            ("CNI_PATH", path),
        ]
    }
}

/// How many times a spawn that fails with "text file busy" is tried (a binary being replaced).
const TEXT_FILE_BUSY_TRIES: u32 = 5;

/// Runs the plugin binary with the invocation's environment (on top of this process's own, as
/// libcni does) and `stdin`, and returns its stdout. A non-zero exit is turned into the plugin's
/// error object (from stdout, or stderr's text when stdout holds none). The plugin is killed when
/// `timeout` passes. The plugin's stderr is passed on to this process's stderr.
pub async fn exec(
    plugin: &Path,
    inv: &Invocation,
    stdin: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, InvokeError> {
    let mut attempt = 0;
    let mut child = loop {
        let mut cmd = Process::new(plugin);
        cmd.envs(inv.env())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        match cmd.spawn() {
            Ok(c) => break c,
            Err(e) if e.raw_os_error() == Some(26) && attempt < TEXT_FILE_BUSY_TRIES => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(source) => {
                return Err(InvokeError::Spawn {
                    plugin: plugin.to_path_buf(),
                    source,
                })
            }
        }
    };
    let mut input = child.stdin.take();
    let data = stdin.to_vec();
    let run = async move {
        if let Some(mut pipe) = input.take() {
            // A plugin may exit without reading stdin; a broken pipe is not our failure.
            let _ = pipe.write_all(&data).await;
            drop(pipe);
        }
        child.wait_with_output().await
    };
    let output = match tokio::time::timeout(timeout, run).await {
        Err(_) => {
            return Err(InvokeError::Timeout {
                plugin: plugin.to_path_buf(),
                timeout,
            })
        }
        Ok(Err(source)) => {
            return Err(InvokeError::Spawn {
                plugin: plugin.to_path_buf(),
                source,
            })
        }
        Ok(Ok(o)) => o,
    };
    if !output.stderr.is_empty() {
        eprint!("{}", String::from_utf8_lossy(&output.stderr));
    }
    if output.status.success() {
        return Ok(output.stdout);
    }
    let error = plugin_error(&output.stdout, &output.stderr, output.status);
    Err(InvokeError::Plugin {
        plugin: plugin.to_path_buf(),
        error,
    })
}

/// libcni's `pluginErr`: the error object on stdout, else stderr's text as the message.
fn plugin_error(stdout: &[u8], stderr: &[u8], status: std::process::ExitStatus) -> CniError {
    if let Ok(e) = serde_json::from_slice::<CniError>(stdout) {
        if e.code != 0 || !e.msg.is_empty() {
            return e;
        }
    }
    let text = if stdout.iter().any(|b| !b.is_ascii_whitespace()) {
        String::from_utf8_lossy(stdout).trim().to_string()
    } else {
        String::from_utf8_lossy(stderr).trim().to_string()
    };
    let msg = if text.is_empty() {
        format!("plugin exited with {status} and printed nothing")
    } else {
        text
    };
    CniError::new(ErrorCode::Other(999), msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn refuses_path_traversal() {
        let dirs = vec![PathBuf::from("/usr/lib/cni")];
        for t in ["../bin/sh", "/bin/sh", "a/b", "..", "", "x..y"] {
            assert!(matches!(
                find_plugin(t, &dirs),
                Err(InvokeError::InvalidType(_))
            ));
        }
    }

    #[test]
    fn finds_in_order_and_reports_missing() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        script(b.path(), "p", "true");
        let dirs = vec![a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(find_plugin("p", &dirs).unwrap(), b.path().join("p"));
        let e = find_plugin("q", &dirs).unwrap_err();
        assert_eq!(e.to_cni_error().code, 101);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn runs_and_reads_errors() {
        let d = tempfile::tempdir().unwrap();
        let ok = script(d.path(), "ok", "cat; echo \" $CNI_COMMAND $CNI_IFNAME\"");
        let inv = Invocation {
            command: Some(Command::Add),
            ifname: "net1".into(),
            ..Default::default()
        };
        let out = exec(&ok, &inv, b"{}", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "{} ADD net1\n");

        let bad = script(
            d.path(),
            "bad",
            r#"echo '{"cniVersion":"1.0.0","code":7,"msg":"no"}'; exit 1"#,
        );
        let e = exec(&bad, &inv, b"{}", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(e.to_cni_error().code, 7);

        let stderr_only = script(d.path(), "se", "echo boom >&2; exit 3");
        let e = exec(&stderr_only, &inv, b"{}", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(e.to_cni_error().msg, "boom");

        let slow = script(d.path(), "slow", "sleep 30");
        let e = exec(&slow, &inv, b"{}", Duration::from_millis(200))
            .await
            .unwrap_err();
        assert_eq!(e.to_cni_error().code, 102);
    }
}
