//! Helpers for turning kube's errors into messages.

use std::error::Error as StdError;

/// `e` and its causes, `: `-separated, each said once.
pub fn error_chain(e: &dyn StdError) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut cause = e.source();
    while let Some(err) = cause {
        let text = err.to_string();
        if !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
        cause = err.source();
    }
    parts.join(": ")
}

/// Whether a rustls error (certificate verification, handshake) is among `e`'s causes. Those are
/// configuration problems, not an unreachable server.
pub fn is_tls_error(e: &(dyn StdError + 'static)) -> bool {
    if e.is::<rustls::Error>() {
        return true;
    }
    // `io::Error::source` skips the error it wraps (and hyper-rustls wraps the rustls error in
    // two of them), so look inside.
    if let Some(inner) = e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        if is_tls_error(inner) {
            return true;
        }
    }
    e.source().is_some_and(is_tls_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_joined_once_each() {
        let inner = std::io::Error::other("connection refused");
        let outer = std::io::Error::other(inner);
        assert_eq!(error_chain(&outer), "connection refused");
        assert!(!is_tls_error(&outer));
        let tls = std::io::Error::other(rustls::Error::General("bad certificate".into()));
        assert!(is_tls_error(&tls));
    }
}
