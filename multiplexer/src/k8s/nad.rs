//! The delegate configuration of a NetworkAttachmentDefinition (multi-net-spec 3.4).
//!
//! A NAD's `spec.config` is a CNI configuration or configuration list. When it is empty, the
//! configuration is looked up on disk by name, in `confDir`: `.conflist` files first, then
//! `.conf` and `.json` files, each group in file-name order (spec 3.4.1; Multus goes in plain
//! file-name order over all three). Unlike Multus, a file that cannot be read or parsed does not
//! stop the search (it cannot be known to be the one asked for); if nothing matches, the files
//! that were skipped are named in the error.

use std::path::{Path, PathBuf};

use plexus_cni::config::NetworkConfigList;
use plexus_cni::{CniError, ErrorCode};
use plexus_crds::NetworkAttachmentDefinition;
use serde_json::{Map, Value};
use thiserror::Error;

/// Why a NAD's configuration could not be produced.
#[derive(Debug, Error)]
pub enum NadError {
    /// `spec.config` (or the file found for it) is not a usable CNI configuration (code 7).
    #[error("NetworkAttachmentDefinition {nad}: invalid network configuration{}: {message}",
        .origin.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    Invalid {
        /// `namespace/name` of the NAD.
        nad: String,
        /// The file the configuration came from, when it came from disk.
        origin: Option<PathBuf>,
        /// What is wrong.
        message: String,
    },
    /// `confDir` could not be listed (code 5).
    #[error("NetworkAttachmentDefinition {nad} has no spec.config and confDir {dir:?} cannot be read: {source}")]
    Io {
        /// `namespace/name` of the NAD.
        nad: String,
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The NAD has no `spec.config` and no file in `confDir` has its name (code 7).
    #[error("NetworkAttachmentDefinition {nad} has no spec.config and no configuration named {name:?} was found in confDir {dir:?}{}",
        if .skipped.is_empty() { String::new() } else { format!(" (unreadable files skipped: {})", .skipped.join("; ")) })]
    NotFound {
        /// `namespace/name` of the NAD.
        nad: String,
        /// The name looked for.
        name: String,
        /// The directory searched.
        dir: PathBuf,
        /// Files that could not be read or parsed, with the reason.
        skipped: Vec<String>,
    },
}

impl From<NadError> for CniError {
    fn from(e: NadError) -> Self {
        let code = match &e {
            NadError::Io { .. } => ErrorCode::IoFailure,
            NadError::Invalid { .. } | NadError::NotFound { .. } => ErrorCode::InvalidNetworkConfig,
        };
        CniError::new(code, e.to_string())
    }
}

/// The name a NAD's attachment is known by in events, the network-status annotation and
/// device-info file names: `namespace/name`.
pub fn status_name(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The device-plugin resource a NAD's attachments use: its `k8s.v1.cni.cncf.io/resourceName`
/// annotation, when set and not blank.
pub fn resource_name(nad: &NetworkAttachmentDefinition) -> Option<String> {
    nad.metadata
        .annotations
        .as_ref()?
        .get(super::selection::RESOURCE_NAME_ANNOTATION)
        .map(|r| r.trim())
        .filter(|r| !r.is_empty())
        .map(str::to_string)
}

/// The delegate configuration of NAD `nad_namespace/nad_name`.
///
/// A non-blank `spec_config` must be a JSON object; a missing, `null` or empty `name` is set to
/// the NAD's name (spec 3.4.2; it is appended when missing), and every other key keeps its value
/// and place. A blank `spec_config` is looked up in `conf_dir` (see the module documentation):
/// a `.conflist` must have `plugins`, and a `.conf`/`.json` must have a `type` ("perhaps this
/// is a .conflist?"). Either way the result must be a configuration Plexus can run.
pub fn delegate_config(
    nad_namespace: &str,
    nad_name: &str,
    spec_config: &str,
    conf_dir: &Path,
) -> Result<Value, NadError> {
    let nad = status_name(nad_namespace, nad_name);
    let invalid = |origin: Option<&Path>, message: String| NadError::Invalid {
        nad: nad.clone(),
        origin: origin.map(Path::to_path_buf),
        message,
    };
    let (value, origin) = if spec_config.trim().is_empty() {
        let (value, path) = find_on_disk(&nad, nad_name, conf_dir)?;
        (value, Some(path))
    } else {
        let value: Value = serde_json::from_str(spec_config)
            .map_err(|e| invalid(None, format!("spec.config is not valid JSON: {e}")))?;
        let Value::Object(mut map) = value else {
            return Err(invalid(None, "spec.config must be a JSON object".into()));
        };
        match map.get("name") {
            None | Some(Value::Null) => {
                map.insert("name".into(), Value::String(nad_name.into()));
            }
            Some(Value::String(s)) if s.is_empty() => {
                map.insert("name".into(), Value::String(nad_name.into()));
            }
            Some(Value::String(_)) => {}
            Some(_) => return Err(invalid(None, "\"name\" must be a string".into())),
        }
        (Value::Object(map), None)
    };
    NetworkConfigList::from_value(value.clone())
        .map_err(|e| invalid(origin.as_deref(), e.to_string()))?;
    Ok(value)
}

/// Which group a file belongs to: 0 for `.conflist`, 1 for `.conf`/`.json`, `None` otherwise.
fn group(path: &Path) -> Option<u8> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("conflist") => Some(0),
        Some("conf" | "json") => Some(1),
        _ => None,
    }
}

fn find_on_disk(nad: &str, name: &str, dir: &Path) -> Result<(Value, PathBuf), NadError> {
    let entries = std::fs::read_dir(dir).map_err(|source| NadError::Io {
        nad: nad.to_string(),
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<(u8, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter_map(|p| group(&p).map(|g| (g, p)))
        .collect();
    files.sort();
    let mut skipped = Vec::new();
    for (group, path) in files {
        let value = match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|e| e.to_string()))
        {
            Ok(v) => v,
            Err(e) => {
                skipped.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        let Value::Object(map) = &value else {
            skipped.push(format!("{}: not a JSON object", path.display()));
            continue;
        };
        if map.get("name").and_then(Value::as_str) != Some(name) {
            continue;
        }
        let invalid = |message: &str| NadError::Invalid {
            nad: nad.to_string(),
            origin: Some(path.clone()),
            message: message.to_string(),
        };
        if group == 0 && !map.get("plugins").is_some_and(Value::is_array) {
            return Err(invalid("a .conflist must have a \"plugins\" list"));
        }
        if group == 1 && !has_type(map) {
            return Err(invalid("no \"type\"; perhaps this is a .conflist?"));
        }
        return Ok((value, path));
    }
    Err(NadError::NotFound {
        nad: nad.to_string(),
        name: name.to_string(),
        dir: dir.to_path_buf(),
        skipped,
    })
}

fn has_type(map: &Map<String, Value>) -> bool {
    map.get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write(dir: &Path, file: &str, content: &str) {
        std::fs::write(dir.join(file), content).unwrap();
    }

    #[test]
    fn spec_config_name_injection_keeps_order() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                r#"{"cniVersion":"1.0.0","type":"macvlan","master":"eth0","mtu":1500.0}"#,
                r#"{"cniVersion":"1.0.0","type":"macvlan","master":"eth0","mtu":1500.0,"name":"mv"}"#,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"","type":"macvlan"}"#,
                r#"{"cniVersion":"1.0.0","name":"mv","type":"macvlan"}"#,
            ),
            (
                r#"{"name":null,"cniVersion":"1.0.0","type":"macvlan"}"#,
                r#"{"name":"mv","cniVersion":"1.0.0","type":"macvlan"}"#,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"own-name","type":"macvlan"}"#,
                r#"{"cniVersion":"1.0.0","name":"own-name","type":"macvlan"}"#,
            ),
            (
                r#"{"cniVersion":"0.4.0","plugins":[{"type":"macvlan","capabilities":{"ips":true}},{"type":"tuning"}]}"#,
                r#"{"cniVersion":"0.4.0","plugins":[{"type":"macvlan","capabilities":{"ips":true}},{"type":"tuning"}],"name":"mv"}"#,
            ),
        ];
        for (input, want) in cases {
            let got = delegate_config("ns", "mv", input, dir.path()).unwrap();
            assert_eq!(got.to_string(), want);
        }
    }

    #[test]
    fn spec_config_refusals() {
        let dir = tempfile::tempdir().unwrap();
        for (input, want) in [
            ("{", "not valid JSON"),
            ("[]", "must be a JSON object"),
            (r#"{"name":1,"type":"x"}"#, "\"name\" must be a string"),
            (r#"{"cniVersion":"1.0.0"}"#, "type"),
            (r#"{"cniVersion":"1.0.0","plugins":[]}"#, "empty"),
            (r#"{"cniVersion":"9.9.9","type":"x"}"#, "version"),
        ] {
            let e = delegate_config("ns", "mv", input, dir.path()).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains("ns/mv") && msg.contains(want),
                "{input}: {msg}"
            );
            assert_eq!(CniError::from(e).code, 7);
        }
    }

    #[test]
    fn on_disk_lookup_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Same name everywhere: the .conflist wins although its file name sorts last.
        write(
            d,
            "00-a.conf",
            r#"{"cniVersion":"1.0.0","name":"net","type":"bridge"}"#,
        );
        write(
            d,
            "01-b.json",
            r#"{"cniVersion":"1.0.0","name":"net","type":"ptp"}"#,
        );
        write(
            d,
            "99-z.conflist",
            r#"{"cniVersion":"1.0.0","name":"net","plugins":[{"type":"macvlan"}]}"#,
        );
        write(
            d,
            "50-m.conflist",
            r#"{"cniVersion":"1.0.0","name":"other","plugins":[{"type":"ipvlan"}]}"#,
        );
        write(d, "10-broken.conflist", "{not json");
        write(d, "README", r#"{"name":"net","type":"nope"}"#);
        std::fs::create_dir(d.join("dir.conf")).unwrap();
        let got = delegate_config("ns", "net", "", d).unwrap();
        assert_eq!(got["plugins"][0]["type"], "macvlan");
        let got = delegate_config("ns", "other", "  \n", d).unwrap();
        assert_eq!(got["plugins"][0]["type"], "ipvlan");

        // Without the conflist, .conf and .json go in file-name order.
        std::fs::remove_file(d.join("99-z.conflist")).unwrap();
        assert_eq!(
            delegate_config("ns", "net", "", d).unwrap()["type"],
            "bridge"
        );
        std::fs::remove_file(d.join("00-a.conf")).unwrap();
        assert_eq!(delegate_config("ns", "net", "", d).unwrap()["type"], "ptp");
    }

    #[test]
    fn on_disk_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(
            d,
            "10-list.conf",
            r#"{"cniVersion":"1.0.0","name":"listy","plugins":[{"type":"bridge"}]}"#,
        );
        write(
            d,
            "20-single.conflist",
            r#"{"cniVersion":"1.0.0","name":"single","type":"bridge"}"#,
        );
        write(d, "30-bad.conf", "nope");
        let e = delegate_config("ns", "listy", "", d).unwrap_err();
        assert!(
            e.to_string().contains("perhaps this is a .conflist?"),
            "{e}"
        );
        assert!(e.to_string().contains("10-list.conf"), "{e}");
        assert_eq!(CniError::from(e).code, 7);
        let e = delegate_config("ns", "single", "", d).unwrap_err();
        assert!(e.to_string().contains("\"plugins\""), "{e}");

        let e = delegate_config("ns", "missing", "", d).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, NadError::NotFound { .. })
                && msg.contains("ns/missing")
                && msg.contains(&d.display().to_string())
                && msg.contains("30-bad.conf"),
            "{msg}"
        );
        assert_eq!(CniError::from(e).code, 7);

        let e = delegate_config("ns", "x", "", &d.join("absent")).unwrap_err();
        assert!(matches!(e, NadError::Io { .. }), "{e:?}");
        assert_eq!(CniError::from(e).code, 5);
    }

    #[test]
    fn resource_names() {
        let mut nad = NetworkAttachmentDefinition::default();
        assert_eq!(resource_name(&nad), None);
        let annotations = nad.metadata.annotations.get_or_insert_default();
        annotations.insert(
            "k8s.v1.cni.cncf.io/resourceName".into(),
            " intel.com/sriov_net ".into(),
        );
        assert_eq!(resource_name(&nad).as_deref(), Some("intel.com/sriov_net"));
        nad.metadata.annotations = Some(
            [(
                "k8s.v1.cni.cncf.io/resourceName".to_string(),
                " ".to_string(),
            )]
            .into(),
        );
        assert_eq!(resource_name(&nad), None);
    }

    #[test]
    fn status_names() {
        assert_eq!(
            status_name("default", "macvlan-conf"),
            "default/macvlan-conf"
        );
        assert_eq!(json!(status_name("a", "b")), json!("a/b"));
    }
}
