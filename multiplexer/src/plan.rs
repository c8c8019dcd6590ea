//! Interface names: the primary gets the runtime's `CNI_IFNAME`, every other attachment the
//! name it asks for or `net<position>`, and no name may be used twice.

use plexus_cni::env::validate_ifname;
use plexus_cni::{CniError, ErrorCode};

use crate::cache::CachedAttachment;
use crate::delegate::Delegate;

/// A delegate with the interface name it will get.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    /// The network.
    pub delegate: Delegate,
    /// Its interface name in the pod.
    pub ifname: String,
}

impl Attachment {
    /// The cache record of this attachment, before it has a result.
    pub fn to_cached(&self) -> CachedAttachment {
        CachedAttachment {
            network: self.delegate.network.name.clone(),
            ifname: self.ifname.clone(),
            primary: self.delegate.primary,
            config: String::from_utf8_lossy(&self.delegate.network.to_bytes()).into_owned(),
            capability_args: self.delegate.capability_args.clone(),
            result: None,
        }
    }
}

/// Gives each delegate its interface name, as Multus does: the primary gets `primary_ifname`;
/// another delegate gets its requested name, or `net<i>` where `i` is its position in the list
/// (positions are counted for requested names too). A repeated or invalid name is refused
/// before anything runs.
pub fn assign_ifnames(
    delegates: Vec<Delegate>,
    primary_ifname: &str,
) -> Result<Vec<Attachment>, CniError> {
    let mut planned: Vec<Attachment> = Vec::with_capacity(delegates.len());
    for (position, delegate) in delegates.into_iter().enumerate() {
        let ifname = if delegate.primary {
            primary_ifname.to_string()
        } else if let Some(requested) = &delegate.ifname_request {
            validate_ifname(requested).map_err(|e| {
                CniError::new(
                    ErrorCode::InvalidNetworkConfig,
                    format!("network {:?}: {e}", delegate.network.name),
                )
            })?;
            requested.clone()
        } else {
            format!("net{position}")
        };
        if let Some(other) = planned.iter().find(|a| a.ifname == ifname) {
            return Err(CniError::new(
                ErrorCode::InterfaceNameConflict,
                format!(
                    "interface name {ifname:?} is asked for by both network {:?} and network {:?}",
                    other.delegate.network.name, delegate.network.name
                ),
            ));
        }
        planned.push(Attachment { delegate, ifname });
    }
    Ok(planned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(name: &str, primary: bool, request: Option<&str>) -> Delegate {
        let mut d = Delegate::from_value(
            json!({"cniVersion": "1.0.0", "name": name, "type": "x"}),
            "",
            primary,
        )
        .unwrap();
        d.ifname_request = request.map(String::from);
        d
    }

    fn names(plan: &[Attachment]) -> Vec<&str> {
        plan.iter().map(|a| a.ifname.as_str()).collect()
    }

    #[test]
    fn numbers_by_position() {
        let plan = assign_ifnames(
            vec![
                d("a", true, None),
                d("b", false, Some("foo")),
                d("c", false, None),
            ],
            "eth0",
        )
        .unwrap();
        assert_eq!(names(&plan), ["eth0", "foo", "net2"]);
    }

    #[test]
    fn refuses_duplicates_and_bad_names() {
        let e = assign_ifnames(
            vec![
                d("a", true, None),
                d("b", false, Some("net2")),
                d("c", false, None),
            ],
            "eth0",
        )
        .unwrap_err();
        assert_eq!(e.code, 103);
        let e = assign_ifnames(
            vec![d("a", true, None), d("b", false, Some("eth0"))],
            "eth0",
        )
        .unwrap_err();
        assert_eq!(e.code, 103);
        let e = assign_ifnames(
            vec![d("a", true, None), d("b", false, Some("way-too-long-name"))],
            "eth0",
        )
        .unwrap_err();
        assert_eq!(e.code, 7);
    }
}
