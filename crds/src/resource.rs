//! What every hand-written resource type here shares: its struct, a constructor,
//! `kube::Resource`, and the shape of its CustomResourceDefinition.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{json, Value};

/// Defines the `KIND` and `PLURAL` constants and the namespaced resource struct `$kind` with
/// `api_version`, `kind`, `metadata` and `spec` fields (and any further `field: Type = initial
/// value` given, such as an empty status), with `new(name, spec)` and `kube::Resource`, from
/// those and the `GROUP` and `VERSION` constants of the module it is used in. The caller writes
/// the docs of the struct, of `metadata` and of `spec` and of each further field.
macro_rules! namespaced_resource {
    (
        kind: $kind_name:literal, plural: $plural:literal;
        $(#[$doc:meta])*
        pub struct $kind:ident {
            $(#[$metadata_doc:meta])*
            metadata,
            $(#[$spec_attr:meta])*
            spec: $spec:ty,
            $( $(#[$field_attr:meta])* $field:ident: $field_ty:ty = $value:expr, )*
        }
    ) => {
        /// The kind.
        pub const KIND: &str = $kind_name;
        /// The plural, as it appears in URLs and RBAC rules.
        pub const PLURAL: &str = $plural;

        $(#[$doc])*
        #[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
        pub struct $kind {
            /// `GROUP/VERSION` of this module.
            #[serde(rename = "apiVersion", default)]
            pub api_version: String,
            /// `KIND` of this module.
            #[serde(default)]
            pub kind: String,
            $(#[$metadata_doc])*
            #[serde(default)]
            pub metadata: ObjectMeta,
            $(#[$spec_attr])*
            pub spec: $spec,
            $( $(#[$field_attr])* pub $field: $field_ty, )*
        }

        impl $kind {
            /// An object named `name` with this spec.
            pub fn new(name: &str, spec: $spec) -> Self {
                $kind {
                    api_version: format!("{GROUP}/{VERSION}"),
                    kind: KIND.into(),
                    metadata: ObjectMeta {
                        name: Some(name.into()),
                        ..ObjectMeta::default()
                    },
                    spec,
                    $($field: $value,)*
                }
            }
        }

        impl kube::Resource for $kind {
            type DynamicType = ();
            type Scope = k8s_openapi::NamespaceResourceScope;

            fn kind(_: &()) -> std::borrow::Cow<'_, str> {
                KIND.into()
            }
            fn group(_: &()) -> std::borrow::Cow<'_, str> {
                GROUP.into()
            }
            fn version(_: &()) -> std::borrow::Cow<'_, str> {
                VERSION.into()
            }
            fn plural(_: &()) -> std::borrow::Cow<'_, str> {
                PLURAL.into()
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// The CustomResourceDefinition of the resource `K`: namespaced, with one version that is
/// served and stored, group, version, kind and plural those of `K`'s `kube::Resource`.
///
/// * `names`: `spec.names` besides `plural` and `kind` (`singular`, `shortNames`, `listKind`);
/// * `version_extras`: entries of the version besides its name, `served`, `storage` and
///   `schema` (`additionalPrinterColumns`, `subresources`);
/// * `schema`: the object's `openAPIV3Schema`; `type: object` and the `apiVersion`, `kind` and
///   `metadata` properties are added.
pub(crate) fn definition<K: kube::Resource<DynamicType = ()>>(
    names: Value,
    version_extras: Value,
    schema: Value,
) -> CustomResourceDefinition {
    let (group, version, kind, plural) =
        (K::group(&()), K::version(&()), K::kind(&()), K::plural(&()));
    let mut all_names = json!({"plural": plural, "kind": kind});
    merge(&mut all_names, names);
    let mut full_schema = json!({
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"}
        }
    });
    merge(&mut full_schema, schema);
    let mut served = json!({
        "name": version,
        "served": true,
        "storage": true,
        "schema": {"openAPIV3Schema": full_schema}
    });
    merge(&mut served, version_extras);
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": all_names,
            "versions": [served]
        }
    }))
    .unwrap_or_else(|e| panic!("the {kind} CRD is well-formed: {e}"))
}

/// Adds the keys of the object `extra` to the object `into`, merging objects found under the
/// same key in both (so `properties` gain entries rather than being replaced).
fn merge(into: &mut Value, extra: Value) {
    let (Value::Object(into), Value::Object(extra)) = (into, extra) else {
        return;
    };
    for (key, value) in extra {
        match into.get_mut(&key) {
            Some(existing @ Value::Object(_)) if value.is_object() => merge(existing, value),
            _ => {
                into.insert(key, value);
            }
        }
    }
}

/// A string property with its description.
pub(crate) fn string(description: &str) -> Value {
    json!({"type": "string", "description": description})
}
