//! The comma-separated form of a network selection annotation:
//! `[<namespace>/]<name>[@<ifname>]` items.

use super::syntax::{check_ifname, is_dns1123_label};
use super::{NetworkSelection, SelectionError};

/// Parses the items of `text`; empty items are skipped.
pub(super) fn parse(
    text: &str,
    default_namespace: &str,
    annotation: &'static str,
) -> Result<Vec<NetworkSelection>, SelectionError> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            parse_item(item, default_namespace).map_err(|message| SelectionError::Item {
                annotation,
                item: item.to_string(),
                message,
            })
        })
        .collect()
}

/// One `[<namespace>/]<name>[@<ifname>]` item, already trimmed and non-empty.
fn parse_item(item: &str, default_namespace: &str) -> Result<NetworkSelection, String> {
    let slashes: Vec<&str> = item.split('/').collect();
    let (namespace, rest) = match slashes.as_slice() {
        [rest] => ("", *rest),
        [namespace, rest] => (namespace.trim(), *rest),
        _ => return Err("more than one '/'".into()),
    };
    let ats: Vec<&str> = rest.split('@').collect();
    let (name, ifname) = match ats.as_slice() {
        [name] => (name.trim(), ""),
        [name, ifname] => (name.trim(), ifname.trim()),
        _ => return Err("more than one '@'".into()),
    };
    if name.is_empty() {
        return Err("the network name is empty".into());
    }
    if !is_dns1123_label(name) {
        return Err(format!(
            "network name {name:?} is not a DNS-1123 label (lower-case letters, digits and '-', \
             starting and ending with a letter or digit, at most 63 characters)"
        ));
    }
    if !namespace.is_empty() && !is_dns1123_label(namespace) {
        return Err(format!(
            "namespace {namespace:?} is not a DNS-1123 label (lower-case letters, digits and '-', \
             starting and ending with a letter or digit, at most 63 characters)"
        ));
    }
    if !ifname.is_empty() {
        check_ifname(ifname)?;
    }
    Ok(NetworkSelection {
        name: name.to_string(),
        namespace: if namespace.is_empty() {
            default_namespace
        } else {
            namespace
        }
        .to_string(),
        interface: (!ifname.is_empty()).then(|| ifname.to_string()),
        ..NetworkSelection::default()
    })
}
