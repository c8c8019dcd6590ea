//! What every hand-written resource type here shares: a constructor and `kube::Resource`.

/// Implements `new(name, spec)` and a namespaced `kube::Resource` for `$kind`, a struct with
/// `api_version`, `kind`, `metadata` and `spec` fields (and any further `field: value` pairs
/// given, such as an empty status), from the `GROUP`, `VERSION`, `KIND` and `PLURAL` constants
/// of the module it is used in.
macro_rules! namespaced_resource {
    ($kind:ident, $spec:ty $(, $field:ident: $value:expr)*) => {
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
