//! Which attachments of a running pod its networks annotation still asks for, and which it
//! asks for anew.
//!
//! An attachment is identified by its interface name and its network (the status name,
//! `<namespace>/<nad>`), both in the cache entry. An element that names its interface matches the
//! attachment of that network on that interface; an element that does not matches the first
//! remaining attachment of its network, in the entry's order. So removing an element detaches
//! exactly its interface whether or not it was named, and the same network twice stays two
//! attachments. A new element that names no interface gets `net<position>` as ADD would give
//! it, or, when that name is still in use, the lowest free `net<n>`: a name in use is never
//! given to another attachment. A new element that asks for a name in use is refused.

use plexus_cni::env::validate_ifname;
use plexus_cni::{CniError, ErrorCode};

use crate::cache::CachedAttachment;
use crate::k8s::nad;
use crate::k8s::selection::NetworkSelection;

/// What to change so that the attachments are what the annotation asks for.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Changes {
    /// The interface names of the attachments to detach: those no element asks for any more,
    /// and those a hot-plug step left without a result (rolled back, then attached again).
    pub detach: Vec<String>,
    /// The elements to attach, each with the interface name it gets, in annotation order.
    pub attach: Vec<(NetworkSelection, String)>,
}

impl Changes {
    /// True when nothing changes.
    pub fn is_empty(&self) -> bool {
        self.detach.is_empty() && self.attach.is_empty()
    }
}

/// The changes from `attachments` (a cache entry's, its primary complete) to the annotation's
/// elements `wanted`. The annotation's first element is at interface position `first_position`
/// (1 plus the number of `defaultNetworks` attachments). Fails (code 103) when a new element
/// asks for an interface name in use, and (code 7) for an invalid name.
pub fn changes(
    attachments: &[CachedAttachment],
    wanted: &[NetworkSelection],
    first_position: usize,
) -> Result<Changes, CniError> {
    let mut detach: Vec<String> = attachments
        .iter()
        .filter(|a| !a.primary && a.result.is_none())
        .map(|a| a.ifname.clone())
        .collect();
    let candidates: Vec<&CachedAttachment> = attachments
        .iter()
        .filter(|a| a.selected && a.result.is_some())
        .collect();
    let mut matched = vec![false; candidates.len()];
    let mut unmatched_elements: Vec<usize> = Vec::new();
    // Named elements first, so that an unnamed one never takes a named one's attachment.
    let order = wanted
        .iter()
        .enumerate()
        .filter(|(_, s)| s.interface.is_some())
        .chain(
            wanted
                .iter()
                .enumerate()
                .filter(|(_, s)| s.interface.is_none()),
        );
    for (index, sel) in order {
        let network = nad::status_name(&sel.namespace, &sel.name);
        let found = candidates.iter().enumerate().position(|(i, a)| {
            !matched[i]
                && a.status_name() == network
                && sel.interface.as_ref().is_none_or(|name| *name == a.ifname)
        });
        match found {
            Some(i) => matched[i] = true,
            None => unmatched_elements.push(index),
        }
    }
    unmatched_elements.sort_unstable();
    detach.extend(
        candidates
            .iter()
            .zip(&matched)
            .filter(|(_, m)| !**m)
            .map(|(a, _)| a.ifname.clone()),
    );

    // The names still in use once the detached attachments are gone.
    let mut in_use: Vec<String> = attachments
        .iter()
        .map(|a| a.ifname.clone())
        .filter(|n| !detach.contains(n))
        .collect();
    let mut names: Vec<Option<String>> = vec![None; wanted.len()];
    for &index in &unmatched_elements {
        let Some(name) = &wanted[index].interface else {
            continue;
        };
        validate_ifname(name).map_err(|e| {
            CniError::new(
                ErrorCode::InvalidNetworkConfig,
                format!(
                    "network {}/{}: {e}",
                    wanted[index].namespace, wanted[index].name
                ),
            )
        })?;
        if in_use.contains(name) {
            let holder = attachments
                .iter()
                .find(|a| a.ifname == *name)
                .map(|a| format!("network {:?}", a.status_name()))
                .unwrap_or_else(|| "another element".into());
            return Err(CniError::new(
                ErrorCode::InterfaceNameConflict,
                format!(
                    "network {}/{} asks for interface {name:?}, which {holder} uses",
                    wanted[index].namespace, wanted[index].name
                ),
            ));
        }
        in_use.push(name.clone());
        names[index] = Some(name.clone());
    }
    for &index in &unmatched_elements {
        if names[index].is_some() {
            continue;
        }
        let preferred = format!("net{}", first_position + index);
        let name = if in_use.contains(&preferred) {
            (1..)
                .map(|n| format!("net{n}"))
                .find(|n| !in_use.contains(n))
                .unwrap_or(preferred)
        } else {
            preferred
        };
        in_use.push(name.clone());
        names[index] = Some(name);
    }
    let attach = unmatched_elements
        .into_iter()
        .filter_map(|i| Some((wanted[i].clone(), names[i].clone()?)))
        .collect();
    Ok(Changes { detach, attach })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map};

    fn attached(status: &str, ifname: &str, selected: bool) -> CachedAttachment {
        CachedAttachment {
            network: status.rsplit('/').next().unwrap().into(),
            ifname: ifname.into(),
            primary: ifname == "eth0",
            config: String::new(),
            capability_args: Map::new(),
            result: Some(json!({})),
            status_name: Some(status.into()),
            selected,
        }
    }

    fn sel(name: &str, interface: Option<&str>) -> NetworkSelection {
        NetworkSelection {
            interface: interface.map(String::from),
            ..NetworkSelection::new("ns", name)
        }
    }

    fn names(c: &Changes) -> Vec<(String, String)> {
        c.attach
            .iter()
            .map(|(s, n)| (s.name.clone(), n.clone()))
            .collect()
    }

    #[test]
    fn unchanged_annotation_changes_nothing() {
        let a = [
            attached("pods", "eth0", false),
            attached("ns/a", "net1", true),
            attached("ns/b", "foo", true),
        ];
        let c = changes(&a, &[sel("a", None), sel("b", Some("foo"))], 1).unwrap();
        assert!(c.is_empty(), "{c:?}");
    }

    #[test]
    fn a_removed_unnamed_element_detaches_exactly_its_interface() {
        let a = [
            attached("pods", "eth0", false),
            attached("ns/a", "net1", true),
            attached("ns/b", "net2", true),
        ];
        let c = changes(&a, &[sel("b", None)], 1).unwrap();
        assert_eq!(c.detach, ["net1"]);
        assert!(c.attach.is_empty());
    }

    #[test]
    fn the_same_network_twice_is_two_attachments() {
        let a = [
            attached("pods", "eth0", false),
            attached("ns/a", "net1", true),
        ];
        let c = changes(&a, &[sel("a", None), sel("a", None)], 1).unwrap();
        assert!(c.detach.is_empty());
        assert_eq!(names(&c), [("a".into(), "net2".into())]);
    }

    #[test]
    fn names_in_use_are_never_given_again() {
        // net2 stays while the first element goes: the new element at position 2 gets net1.
        let a = [
            attached("pods", "eth0", false),
            attached("ns/a", "net1", true),
            attached("ns/b", "net2", true),
        ];
        let c = changes(&a, &[sel("b", None), sel("c", None)], 1).unwrap();
        assert_eq!(c.detach, ["net1"]);
        assert_eq!(names(&c), [("c".into(), "net1".into())]);
        let c = changes(&a, &[sel("a", None), sel("b", None), sel("c", None)], 1).unwrap();
        assert_eq!(names(&c), [("c".into(), "net3".into())]);
    }

    #[test]
    fn a_requested_name_in_use_is_refused() {
        let a = [
            attached("pods", "eth0", false),
            attached("ns/a", "net1", true),
        ];
        let e = changes(&a, &[sel("a", None), sel("b", Some("net1"))], 1).unwrap_err();
        assert_eq!(e.code, 103);
        let e = changes(&a, &[sel("a", None), sel("b", Some("eth0"))], 1).unwrap_err();
        assert_eq!(e.code, 103);
        // Freed in the same edit: allowed.
        let c = changes(&a, &[sel("b", Some("net1"))], 1).unwrap();
        assert_eq!(c.detach, ["net1"]);
        assert_eq!(names(&c), [("b".into(), "net1".into())]);
    }

    #[test]
    fn unfinished_and_unselected_attachments() {
        let mut pending = attached("ns/a", "net2", true);
        pending.result = None;
        let a = [
            attached("pods", "eth0", false),
            attached("kube-system/dflt", "net1", false),
            pending,
        ];
        // The default network is never detached; the unfinished one is, and attached again.
        let c = changes(&a, &[sel("a", Some("net9"))], 2).unwrap();
        assert_eq!(c.detach, ["net2"]);
        assert_eq!(names(&c), [("a".into(), "net9".into())]);
        let a = [attached("pods", "eth0", false)];
        let c = changes(&a, &[sel("a", None)], 1).unwrap();
        assert_eq!(names(&c), [("a".into(), "net1".into())]);
    }
}
