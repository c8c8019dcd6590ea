//! The server's request counters, read from its `/metrics`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;

use plexus_ipam::backends::kubernetes::client::KubeClient;

use serde_json::Value;

use super::{Error, TIMEOUT};

/// What the server counted so far.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counts {
    /// Requests (Kubernetes: on IPAMBlocks and Leases; etcd: Range and Txn).
    pub(crate) requests: f64,
    /// Of those, answered 409 Conflict (Kubernetes only).
    pub(crate) conflicts: f64,
}

/// Reads the server's request counters from its `/metrics`.
pub(crate) enum Meter {
    /// The API server, with an admin client.
    Kube(KubeClient),
    /// etcd's client port, `host:port` (plain HTTP).
    Etcd(String),
    /// Nothing to read.
    None,
}

impl Meter {
    pub(crate) async fn connect(spec: &Value) -> Result<Meter, Error> {
        Ok(
            match (
                spec["backend"].as_str(),
                spec["metrics_kubeconfig"].as_str(),
            ) {
                (Some("kubernetes"), Some(path)) => {
                    Meter::Kube(KubeClient::from_kubeconfig(&PathBuf::from(path), TIMEOUT).await?)
                }
                (Some("etcd"), _) => {
                    let endpoints: Vec<String> = serde_json::from_value(spec["endpoints"].clone())?;
                    let first = endpoints.first().ok_or("no etcd endpoint")?;
                    Meter::Etcd(first.trim_start_matches("http://").to_string())
                }
                _ => Meter::None,
            },
        )
    }

    pub(crate) async fn read(&self) -> Result<Counts, Error> {
        match self {
            Meter::Kube(client) => {
                let request = http::Request::get("/metrics").body(Vec::new())?;
                let text = client.client().request_text(request).await?;
                Ok(kube_counts(&text))
            }
            Meter::Etcd(address) => {
                let mut stream = TcpStream::connect(address)?;
                stream.set_read_timeout(Some(TIMEOUT))?;
                write!(stream, "GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n")?;
                let mut text = String::new();
                stream.read_to_string(&mut text)?;
                Ok(etcd_counts(&text))
            }
            Meter::None => Ok(Counts::default()),
        }
    }
}

/// The value of label `name` in a Prometheus sample line.
pub(crate) fn label<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!("{name}=\""))? + name.len() + 2;
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

/// The value of a Prometheus sample line.
pub(crate) fn sample(line: &str) -> f64 {
    line.rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// `apiserver_request_total` of IPAMBlocks and Leases: all, and those answered 409.
pub(crate) fn kube_counts(metrics: &str) -> Counts {
    let mut counts = Counts::default();
    for line in metrics.lines() {
        if !line.starts_with("apiserver_request_total{") {
            continue;
        }
        if !matches!(label(line, "resource"), Some("ipamblocks" | "leases")) {
            continue;
        }
        let value = sample(line);
        counts.requests += value;
        if label(line, "code") == Some("409") {
            counts.conflicts += value;
        }
    }
    counts
}

/// `grpc_server_handled_total` of `Range` and `Txn`.
pub(crate) fn etcd_counts(metrics: &str) -> Counts {
    let requests = metrics
        .lines()
        .filter(|l| l.starts_with("grpc_server_handled_total{"))
        .filter(|l| matches!(label(l, "grpc_method"), Some("Range" | "Txn")))
        .map(sample)
        .sum();
    Counts {
        requests,
        conflicts: 0.0,
    }
}
