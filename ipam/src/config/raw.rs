//! The configuration's keys as serde reads them, before validation. Each value is read
//! leniently ([`Loose`]): a value of the wrong JSON type is kept as it was, so that validation
//! refuses it with a message that names the key.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::{invalid, merge::is_zero};
use plexus_cni::CniError;

/// A value of the expected JSON shape, or whatever else was given.
#[derive(Debug, Clone)]
pub enum Loose<T> {
    /// The value, of the expected shape.
    Valid(T),
    /// Anything else, kept for the error message.
    Other(Value),
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Loose<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Ok(loose(value, |_| true))
    }
}

/// `value` read as `T` when `shape` accepts it and it fits, else kept as it is.
fn loose<T: DeserializeOwned>(value: Value, shape: impl Fn(&Value) -> bool) -> Loose<T> {
    if !shape(&value) {
        return Loose::Other(value);
    }
    match serde_json::from_value(value.clone()) {
        Ok(t) => Loose::Valid(t),
        Err(_) => Loose::Other(value),
    }
}

/// A JSON object read as `T` (a struct of its own keys); anything else (a list too, which
/// serde would read into a struct field by field) kept as it is.
#[derive(Debug, Clone)]
pub struct Object<T>(pub Loose<T>);

impl<'de, T: DeserializeOwned> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Ok(Object(loose(value, Value::is_object)))
    }
}

/// A list of strings, or one comma-separated string (`etcd_endpoints`, `etcd_host`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// `"a,b"`.
    One(String),
    /// `["a", "b"]`.
    Many(Vec<String>),
}

/// A prefix length given as `"/26"`, `"26"` or `26`, before it is checked.
#[derive(Debug, Clone)]
pub enum PrefixText {
    /// `26` (any number).
    Number(serde_json::Number),
    /// `"/26"` or `"26"`.
    Text(String),
}

// By hand rather than `untagged`: serde_json's arbitrary-precision numbers do not survive
// an untagged enum's buffering.
impl<'de> Deserialize<'de> for PrefixText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) => Ok(PrefixText::Number(n)),
            Value::String(s) => Ok(PrefixText::Text(s)),
            _ => Err(serde::de::Error::custom("not a prefix length")),
        }
    }
}

/// A field: absent and `null` are `None`.
pub type Field<T> = Option<Loose<T>>;

/// The keys of the `ipam` object (merged with the flat file) that Plexus reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawIpam {
    /// `type`.
    #[serde(rename = "type")]
    pub ipam_type: Field<String>,
    /// `configuration_path`.
    pub configuration_path: Field<String>,
    /// `range`.
    pub range: Field<String>,
    /// `range_start`.
    pub range_start: Field<String>,
    /// `range_end`.
    pub range_end: Field<String>,
    /// `exclude`.
    pub exclude: Field<Vec<String>>,
    /// `ipRanges`.
    #[serde(rename = "ipRanges")]
    pub ip_ranges: Field<Vec<Object<RawRange>>>,
    /// `gateway`.
    pub gateway: Field<String>,
    /// `network_name`.
    pub network_name: Field<String>,
    /// `enable_overlapping_ranges`.
    pub enable_overlapping_ranges: Field<bool>,
    /// `routes`, checked as a CNI result's.
    pub routes: Option<Value>,
    /// `dns`, checked as a CNI result's.
    pub dns: Option<Value>,
    /// `addresses`.
    pub addresses: Field<Vec<Object<RawAddress>>>,
    /// `log_file`.
    pub log_file: Field<String>,
    /// `log_level`.
    pub log_level: Field<String>,
    /// `kubernetes`.
    pub kubernetes: Option<Object<RawKubernetes>>,
    /// `namespace` (Whereabouts's older place for it).
    pub namespace: Field<String>,
    /// `backend`.
    pub backend: Field<String>,
    /// `local_path`.
    pub local_path: Field<String>,
    /// `etcd_endpoints`.
    pub etcd_endpoints: Field<OneOrMany>,
    /// `etcd_host` (Whereabouts's).
    pub etcd_host: Field<OneOrMany>,
    /// `etcd_prefix`.
    pub etcd_prefix: Field<String>,
    /// `etcd_username`.
    pub etcd_username: Field<String>,
    /// `etcd_password`.
    pub etcd_password: Field<String>,
    /// `etcd_cert_file`.
    pub etcd_cert_file: Field<String>,
    /// `etcd_key_file`.
    pub etcd_key_file: Field<String>,
    /// `etcd_ca_cert_file`.
    pub etcd_ca_cert_file: Field<String>,
    /// `block_size_v4`.
    pub block_size_v4: Field<PrefixText>,
    /// `block_size_v6`.
    pub block_size_v6: Field<PrefixText>,
    /// `node_slice_size` (Whereabouts's fast IPAM).
    pub node_slice_size: Field<PrefixText>,
    /// `whereabouts_import_check`.
    pub whereabouts_import_check: Field<bool>,
    /// `agentSocket`.
    #[serde(rename = "agentSocket")]
    pub agent_socket: Field<String>,
    /// `agentConnectTimeoutMs`.
    #[serde(rename = "agentConnectTimeoutMs")]
    pub agent_connect_timeout_ms: Field<u64>,
}

/// One entry of `ipRanges`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawRange {
    /// `range`.
    pub range: Field<String>,
    /// `range_start`.
    pub range_start: Field<String>,
    /// `range_end`.
    pub range_end: Field<String>,
    /// `exclude`.
    pub exclude: Field<Vec<String>>,
}

/// One entry of `addresses`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawAddress {
    /// `address`.
    pub address: Field<String>,
    /// `gateway`.
    pub gateway: Field<String>,
}

/// The `kubernetes` object.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawKubernetes {
    /// `kubernetes.kubeconfig`.
    pub kubeconfig: Field<String>,
    /// `kubernetes.namespace`.
    pub namespace: Field<String>,
}

fn type_error(at: &str, what: &str) -> CniError {
    invalid(format!("{at} must be {what}"))
}

/// A string; absent, `null` and `""` are none.
pub fn text(field: &Field<String>, at: &str) -> Result<Option<String>, CniError> {
    match field {
        None => Ok(None),
        Some(Loose::Valid(s)) if s.is_empty() => Ok(None),
        Some(Loose::Valid(s)) => Ok(Some(s.clone())),
        Some(Loose::Other(Value::Null)) => Ok(None),
        Some(Loose::Other(_)) => Err(type_error(at, "a string")),
    }
}

/// A whole number of 0 or more.
pub fn count(field: &Field<u64>, at: &str) -> Result<Option<u64>, CniError> {
    match field {
        None | Some(Loose::Other(Value::Null)) => Ok(None),
        Some(Loose::Valid(n)) => Ok(Some(*n)),
        Some(Loose::Other(_)) => Err(type_error(at, "a whole number")),
    }
}

/// `true` or `false`.
pub fn flag(field: &Field<bool>, at: &str) -> Result<Option<bool>, CniError> {
    match field {
        None => Ok(None),
        Some(Loose::Valid(b)) => Ok(Some(*b)),
        Some(Loose::Other(_)) => Err(type_error(at, "true or false")),
    }
}

/// A list of strings; absent and `null` are empty.
pub fn strings(field: &Field<Vec<String>>, at: &str) -> Result<Vec<String>, CniError> {
    match field {
        None => Ok(Vec::new()),
        Some(Loose::Valid(items)) => Ok(items.clone()),
        Some(Loose::Other(_)) => Err(type_error(at, "a list of strings")),
    }
}

/// A list of strings, or one comma-separated string; each trimmed, empty ones dropped.
pub fn string_or_list(field: &Field<OneOrMany>, at: &str) -> Result<Vec<String>, CniError> {
    let items = match field {
        None => Vec::new(),
        Some(Loose::Valid(OneOrMany::One(s))) => s.split(',').map(str::to_string).collect(),
        Some(Loose::Valid(OneOrMany::Many(items))) => items.clone(),
        Some(Loose::Other(_)) => return Err(type_error(at, "a list of strings")),
    };
    Ok(items
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

/// A prefix length given as `"/26"`, `"26"` or `26`; absent, `null` and `""` are none.
pub fn prefix(field: &Field<PrefixText>, at: &str) -> Result<Option<u8>, CniError> {
    let bad = |v: &Value| {
        invalid(format!(
            "{at}: {v} is not a prefix length (\"/26\", \"26\" or 26)"
        ))
    };
    match field {
        None => Ok(None),
        Some(Loose::Valid(PrefixText::Text(s))) if s.is_empty() => Ok(None),
        Some(Loose::Valid(PrefixText::Text(s))) => s
            .trim()
            .trim_start_matches('/')
            .parse::<u8>()
            .map(Some)
            .map_err(|_| bad(&Value::from(s.as_str()))),
        Some(Loose::Valid(PrefixText::Number(n))) => n
            .as_u64()
            .and_then(|n| u8::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| bad(&Value::Number(n.clone()))),
        Some(Loose::Other(Value::Null)) => Ok(None),
        Some(Loose::Other(v)) => Err(bad(v)),
    }
}

/// Whether a field is given a value that is not empty (`mergo`'s zero values are not).
pub fn given<T: serde::Serialize>(field: &Field<T>) -> bool {
    match field {
        None => false,
        Some(Loose::Valid(t)) => serde_json::to_value(t).is_ok_and(|v| !is_zero(&v)),
        Some(Loose::Other(v)) => !is_zero(v),
    }
}
