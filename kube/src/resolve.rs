//! Resolving the API server's host name without the C library.
//!
//! Plexus's binaries link glibc statically, so that they run on any node. A static glibc still
//! answers `getaddrinfo` through NSS, loading the node's own `libnss_*.so` modules, which
//! belong to another glibc version and may fail or crash. hyper's default resolver calls
//! `getaddrinfo`, so [`connect`](crate::connect) uses [`PureResolver`] instead: `/etc/hosts`,
//! then DNS with the name servers of `/etc/resolv.conf`, both read by hickory-resolver in Rust.
//!
//! Only host names reach it: hyper connects to an IP address in the URL directly. TLS still
//! verifies the certificate against the URL's host name, as the URL itself is unchanged.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use hickory_resolver::config::ResolveHosts;
use hickory_resolver::TokioResolver;
use hyper_util::client::legacy::connect::dns::Name;

/// A resolver for hyper's `HttpConnector`: `/etc/hosts`, then DNS, in pure Rust. The system
/// configuration is read at the first lookup (most connections name an IP and need none).
#[derive(Clone, Default)]
pub struct PureResolver {
    resolver: Arc<OnceLock<Result<TokioResolver, String>>>,
}

impl PureResolver {
    /// The resolver built from `/etc/resolv.conf` and `/etc/hosts`, or why it cannot be built.
    fn resolver(&self) -> Result<TokioResolver, String> {
        self.resolver
            .get_or_init(|| {
                let mut builder = TokioResolver::builder_tokio()
                    .map_err(|e| format!("cannot read the resolver configuration: {e}"))?;
                builder.options_mut().use_hosts_file = ResolveHosts::Always;
                builder
                    .build()
                    .map_err(|e| format!("cannot set up the resolver: {e}"))
            })
            .clone()
    }
}

/// What a lookup returns: the addresses (port 0; the connector sets the URL's port).
pub type Addresses = std::vec::IntoIter<SocketAddr>;

impl tower::Service<Name> for PureResolver {
    type Response = Addresses;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Addresses>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let resolver = self.resolver();
        Box::pin(async move {
            let host = name.as_str();
            if let Ok(ip) = host.parse() {
                return Ok(vec![SocketAddr::new(ip, 0)].into_iter());
            }
            let resolver = resolver.map_err(io::Error::other)?;
            let found = resolver
                .lookup_ip(host)
                .await
                .map_err(|e| io::Error::other(format!("cannot resolve {host}: {e}")))?;
            let addresses: Vec<SocketAddr> =
                found.iter().map(|ip| SocketAddr::new(ip, 0)).collect();
            if addresses.is_empty() {
                return Err(io::Error::other(format!("{host} has no address")));
            }
            Ok(addresses.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;
    use tower::ServiceExt;

    async fn resolve(host: &str) -> io::Result<Vec<SocketAddr>> {
        let name = Name::from_str(host).expect("a valid name");
        Ok(PureResolver::default().oneshot(name).await?.collect())
    }

    #[tokio::test]
    async fn resolves_localhost_from_etc_hosts() {
        let found = resolve("localhost").await.expect("localhost resolves");
        assert!(found.iter().all(|a| a.ip().is_loopback()), "{found:?}");
        assert!(!found.is_empty());
    }

    #[tokio::test]
    async fn unknown_names_fail_with_the_name() {
        let error = resolve("no-such-host.invalid").await.unwrap_err();
        assert!(
            error.to_string().contains("no-such-host.invalid"),
            "{error}"
        );
    }
}
