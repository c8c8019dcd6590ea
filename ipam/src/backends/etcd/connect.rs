//! The connection to etcd: connecting (credentials, TLS), the deadline of every request, and
//! the sorting of the client's errors into retryable and refused.

use std::future::Future;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions, KvClient, Txn, TxnResponse};

use super::{EtcdStore, DEFAULT_PREFIX, PAGE};
use crate::config::EtcdAuth;
use crate::error::{EtcdError, StoreError};

/// The largest answer accepted (a page of keys is about 1 MiB).
const MAX_MESSAGE: usize = 64 << 20;

impl EtcdStore {
    /// A store on the etcd cluster at `endpoints` (`http://host:port`, or `host:port`), with
    /// every key under `prefix` (empty: [`DEFAULT_PREFIX`]); each request gets `timeout`.
    pub async fn connect(
        endpoints: &[String],
        prefix: &str,
        timeout: Duration,
    ) -> Result<EtcdStore, StoreError> {
        EtcdStore::connect_with(endpoints, prefix, timeout, &EtcdAuth::default()).await
    }

    /// [`connect`](Self::connect) with Whereabouts's etcd credentials: a user name and
    /// password, and TLS files (a CA to trust, a client certificate and key); with TLS the
    /// endpoints are `https://host:port` (or `host:port`).
    pub async fn connect_with(
        endpoints: &[String],
        prefix: &str,
        timeout: Duration,
        auth: &EtcdAuth,
    ) -> Result<EtcdStore, StoreError> {
        if endpoints.is_empty() {
            return Err(EtcdError::NoEndpoints.into());
        }
        let names = endpoints.join(",");
        let mut options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout);
        if let Some(user) = &auth.username {
            options = options.with_user(user, auth.password.clone().unwrap_or_default());
        }
        if let Some(tls) = tls_options(auth)? {
            plexus_kube::install_crypto_provider();
            options = options.with_tls(tls);
        }
        let client =
            match tokio::time::timeout(timeout, Client::connect(endpoints, Some(options))).await {
                Err(_) => {
                    return Err(StoreError::Unavailable(format!(
                        "etcd at {names}: no connection within {timeout:?}"
                    )))
                }
                Ok(Err(e)) => return Err(classify(&names, "connect", e)),
                Ok(Ok(client)) => client,
            };
        let kv = client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let prefix = prefix.trim_end_matches('/');
        let prefix = match prefix {
            "" => DEFAULT_PREFIX.to_string(),
            p if p.starts_with('/') => p.to_string(),
            p => format!("/{p}"),
        };
        Ok(EtcdStore {
            kv: Box::new(kv),
            endpoints: names,
            prefix,
            timeout,
            page: PAGE,
        })
    }

    /// Whether etcd answers now (STATUS): one read of at most one key under the prefix.
    pub async fn status(&self) -> Result<(), StoreError> {
        let key = format!("{}/", self.prefix);
        let options = GetOptions::new()
            .with_prefix()
            .with_keys_only()
            .with_limit(1);
        self.call("a status read", |mut kv| async move {
            kv.get(key, Some(options)).await
        })
        .await
        .map(|_| ())
    }

    /// Runs one request under the deadline.
    pub(super) async fn call<T, F>(
        &self,
        what: &str,
        request: impl FnOnce(KvClient) -> F,
    ) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, etcd_client::Error>>,
    {
        match tokio::time::timeout(self.timeout, request((*self.kv).clone())).await {
            Err(_) => Err(StoreError::Unavailable(format!(
                "etcd at {}: no answer to {what} within {:?}",
                self.endpoints, self.timeout
            ))),
            Ok(Err(e)) => Err(classify(&self.endpoints, what, e)),
            Ok(Ok(answer)) => Ok(answer),
        }
    }

    /// Runs `txn`.
    pub(super) async fn txn(&self, what: &str, txn: Txn) -> Result<TxnResponse, StoreError> {
        self.call(what, |mut kv| async move { kv.txn(txn).await })
            .await
    }
}

/// The TLS settings of `auth`, if it names any TLS file.
fn tls_options(auth: &EtcdAuth) -> Result<Option<etcd_client::TlsOptions>, StoreError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| EtcdError::TlsFile {
            path: path.to_path_buf(),
            source: e,
        })
    };
    let mut tls = etcd_client::TlsOptions::new();
    let mut any = false;
    if let Some(ca) = &auth.ca_cert_file {
        tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
        any = true;
    }
    match (&auth.cert_file, &auth.key_file) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
            any = true;
        }
        (None, None) => {}
        _ => return Err(EtcdError::HalfIdentity.into()),
    }
    Ok(any.then_some(tls))
}

/// A client error as a store error: unreachable (retryable) or an answered error.
fn classify(endpoints: &str, what: &str, e: etcd_client::Error) -> StoreError {
    use etcd_client::Error as E;
    let unavailable = match &e {
        E::TransportError(_) | E::IoError(_) => true,
        // gRPC's CANCELLED (1), DEADLINE_EXCEEDED (4) and UNAVAILABLE (14), and UNKNOWN (2)
        // caused by the transport (a connection broken under a request).
        E::GRpcStatus(status) => match i32::from(status.code()) {
            1 | 4 | 14 => true,
            2 => std::error::Error::source(status).is_some(),
            _ => false,
        },
        _ => false,
    };
    if unavailable {
        StoreError::Unavailable(format!("etcd at {endpoints}: {what} failed: {e}"))
    } else {
        EtcdError::Refused {
            endpoints: endpoints.to_string(),
            what: what.to_string(),
            source: e,
        }
        .into()
    }
}
