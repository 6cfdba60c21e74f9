//! What `riposte exec` reports about a finished step, and the token that authenticates it.

use hmac::{Hmac, Mac};

pub use executor::report::Report;

/// The bearer token a node's wrapper presents: HMAC-SHA256 over the workflow uid and node id.
/// It lets that one pod report that one node, and nothing else.
pub fn node_token(secret: &[u8], workflow_uid: &str, node_id: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match Hmac::<sha2::Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(workflow_uid.as_bytes());
    mac.update(b"/");
    mac.update(node_id.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ_per_node_and_per_secret() {
        let a = node_token(b"k1", "uid", "n1");
        assert_eq!(a.len(), 64);
        assert_ne!(a, node_token(b"k1", "uid", "n2"));
        assert_ne!(a, node_token(b"k2", "uid", "n1"));
        assert_eq!(a, node_token(b"k1", "uid", "n1"));
    }
}
