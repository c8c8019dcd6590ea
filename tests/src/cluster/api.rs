//! Requests to the API server as admin: plain GETs, and objects from YAML.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};

use super::Result;

/// `GET path`; the body of a 2xx answer.
pub(super) async fn get_text(client: &kube::Client, path: &str) -> kube::Result<String> {
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(kube::Error::HttpError)?;
    client.request_text(request).await
}

/// Creates every object of the multi-document `yaml` (ServiceAccounts, ClusterRoles, CRDs, ...);
/// objects that exist already are left as they are.
pub async fn apply_yaml(client: &kube::Client, yaml: &str) -> Result {
    for object in yaml_objects(yaml)? {
        let types = object
            .types
            .clone()
            .ok_or("a YAML document without apiVersion/kind")?;
        let (group, version) = match types.api_version.split_once('/') {
            Some((group, version)) => (group, version),
            None => ("", types.api_version.as_str()),
        };
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &types.kind));
        let api: Api<DynamicObject> = match object.metadata.namespace.as_deref() {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_already_exists() => {}
            Err(e) => {
                let name = object.metadata.name.as_deref().unwrap_or("?");
                return Err(format!("create {} {name}: {e}", types.kind).into());
            }
        }
    }
    Ok(())
}

/// The objects of a multi-document YAML stream (empty documents skipped).
pub fn yaml_objects(yaml: &str) -> Result<Vec<DynamicObject>> {
    use serde::Deserialize;
    let mut objects = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = serde_json::Value::deserialize(doc)?;
        if !value.is_null() {
            objects.push(serde_json::from_value(value)?);
        }
    }
    Ok(objects)
}

/// Whether every Plexus CRD is Established and its API answers a list.
pub(super) async fn crds_served(client: &kube::Client) -> bool {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in plexus_crds::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let Ok(current) = api.get(&name).await else {
            return false;
        };
        let established = current
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        let Some(version) = crd.spec.versions.first() else {
            return false;
        };
        let list = format!(
            "/apis/{}/{}/{}",
            crd.spec.group, version.name, crd.spec.names.plural
        );
        if !established || get_text(client, &list).await.is_err() {
            return false;
        }
    }
    true
}
