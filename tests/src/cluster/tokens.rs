//! The token of Plexus's service account: requested through the TokenRequest API, bound to a
//! Secret, and rotated.

use std::sync::PoisonError;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use kube::core::ObjectMeta;

use super::{get_text, LocalCluster, Result, SA_NAME, SA_NAMESPACE};
use crate::process::write_atomically;

impl LocalCluster {
    /// Replaces the service account's token: requests a new token (bound to a new Secret),
    /// swaps it into [`sa_token_file`](Self::sa_token_file) atomically as the kubelet does
    /// with projected tokens, deletes the old token's Secret, which invalidates the old token,
    /// and waits until the API server refuses the old token (it caches successful
    /// authentications for up to 10 s). Returns the old and the new token.
    pub fn rotate_sa_token(&self) -> Result<(String, String)> {
        self.block_on(async {
            let client = self.admin_client();
            let old = std::fs::read_to_string(&self.sa_token_file)?;
            let (generation, old_secret) = self
                .sa_token
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let new = self.new_sa_token(&client, generation + 1).await?;
            write_atomically(&self.sa_token_file, &new)?;
            let secrets: Api<Secret> = Api::namespaced(client.clone(), SA_NAMESPACE);
            secrets
                .delete(&old_secret, &DeleteParams::default())
                .await?;
            let deadline = Instant::now() + Duration::from_secs(30);
            while self.token_accepted(&old).await? {
                if Instant::now() > deadline {
                    return Err("the old service-account token is still accepted after 30 s".into());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok((old, new))
        })
    }

    /// Whether the API server accepts `token` (a GET of a pod that does not exist is 404 for
    /// an accepted token with `get pods`, 401 for a refused one).
    async fn token_accepted(&self, token: &str) -> Result<bool> {
        let client = kube::Client::try_from(self.config_with_token(token))?;
        match get_text(
            &client,
            "/api/v1/namespaces/default/pods/plexus-token-probe",
        )
        .await
        {
            Err(kube::Error::Api(status)) if status.code == 401 => Ok(false),
            Ok(_) | Err(kube::Error::Api(_)) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// A token of Plexus's service account from the TokenRequest API, bound to a new Secret
    /// `plexus-token-<generation>` so that deleting the Secret invalidates it.
    pub(super) async fn new_sa_token(
        &self,
        client: &kube::Client,
        generation: u32,
    ) -> Result<String> {
        let name = format!("{SA_NAME}-token-{generation}");
        let secrets: Api<Secret> = Api::namespaced(client.clone(), SA_NAMESPACE);
        let secret = secrets
            .create(
                &PostParams::default(),
                &Secret {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        ..ObjectMeta::default()
                    },
                    ..Secret::default()
                },
            )
            .await?;
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), SA_NAMESPACE);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Secret".into()),
                    name: Some(name.clone()),
                    uid: secret.metadata.uid.clone(),
                }),
                expiration_seconds: Some(3600),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let answer = accounts
            .create_token_request(SA_NAME, &PostParams::default(), &request)
            .await
            .map_err(|e| format!("TokenRequest for {SA_NAMESPACE}/{SA_NAME}: {e}"))?;
        let token = answer
            .status
            .and_then(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or("the TokenRequest answer holds no token")?;
        *self.sa_token.lock().unwrap_or_else(PoisonError::into_inner) = (generation, name);
        Ok(token)
    }
}
