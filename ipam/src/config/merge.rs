//! Where the `ipam` keys come from: the plugin's configuration (or a list's first plugin),
//! merged with Whereabouts's flat file as Whereabouts's `mergo.Merge` does.

use std::path::{Path, PathBuf};

use plexus_cni::CniError;
use serde_json::{Map, Value};

use super::invalid;

/// Merges the first flat file found into `ipam` (`configuration_path` first, a file or a
/// directory holding `whereabouts.conf`, then `flat_files`); the file merged, if any.
pub fn flat_file(
    ipam: &mut Map<String, Value>,
    flat_files: &[PathBuf],
) -> Result<Option<PathBuf>, CniError> {
    let configuration_path = match ipam.get("configuration_path") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(PathBuf::from(s)),
        Some(_) => return Err(invalid("ipam.configuration_path must be a string")),
    };
    let mut search: Vec<PathBuf> = Vec::new();
    if let Some(p) = &configuration_path {
        if p.is_dir() {
            search.push(p.join("whereabouts.conf"));
        } else {
            search.push(p.clone());
        }
    }
    search.extend(flat_files.iter().cloned());
    let Some(path) = search.iter().find(|p| p.exists()) else {
        return Ok(None);
    };
    let flat = read_flat_file(path)?;
    merge(ipam, &flat, true);
    Ok(Some(path.clone()))
}

/// The `ipam` object of a plugin configuration, or of the first plugin of a list.
pub fn ipam_object(config: &Map<String, Value>) -> Result<Map<String, Value>, CniError> {
    let plugin = match (config.get("ipam"), config.get("plugins")) {
        (Some(_), _) | (None, None) => config,
        (None, Some(Value::Array(plugins))) => match plugins.first() {
            Some(Value::Object(p)) => p,
            _ => {
                return Err(invalid(
                    "the configuration list has no plugin with an ipam object",
                ))
            }
        },
        (None, Some(_)) => return Err(invalid("\"plugins\" must be a list")),
    };
    match plugin.get("ipam") {
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(_) => Err(invalid("\"ipam\" must be an object")),
        None => Err(invalid("IPAM config missing 'ipam' key")),
    }
}

fn read_flat_file(path: &Path) -> Result<Map<String, Value>, CniError> {
    let bytes = std::fs::read(path).map_err(|e| {
        invalid(format!(
            "cannot read the flat configuration file {}: {e}",
            path.display()
        ))
    })?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(invalid(format!(
            "the flat configuration file {} must hold a JSON object",
            path.display()
        ))),
        Err(e) => Err(invalid(format!(
            "the flat configuration file {} is not valid JSON: {e}",
            path.display()
        ))),
    }
}

/// True for what `mergo` counts as empty.
pub fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Object(_) => false,
    }
}

/// Fills the keys of `dst` that are absent or empty from `src`; objects merge key by key.
fn merge(dst: &mut Map<String, Value>, src: &Map<String, Value>, top: bool) {
    for (key, value) in src {
        // `type` was checked already; `enable_overlapping_ranges` is Whereabouts's exception:
        // the CNI configuration's value (true when absent) always wins.
        if top && (key == "type" || key == "enable_overlapping_ranges") {
            continue;
        }
        match dst.get_mut(key) {
            Some(Value::Object(d)) => {
                if let Value::Object(s) = value {
                    merge(d, s, false);
                }
            }
            Some(d) if is_zero(d) => *d = value.clone(),
            Some(_) => {}
            None => {
                dst.insert(key.clone(), value.clone());
            }
        }
    }
}
