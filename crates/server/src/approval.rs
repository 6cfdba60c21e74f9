//! Signed approval links: a URL a notification carries so that a person can decide a
//! suspended step (approve, deny, pick a value) without a Riposte token: the link is the
//! authority, for one workflow (by uid, so a resubmitted workflow of the same name is not
//! covered), one node, fixed output parameters and a deadline.
//!
//! A link is `<external URL>/api/v1/riposte/approvals/<token>`, where the token is
//! `base64url(grant JSON) "." base64url(HMAC-SHA256(key, that first part))`. Opening it
//! (GET) shows what it decides and a button; only the POST of that button decides. Chat
//! unfurlers and mail scanners fetch links, so acting on GET would let them approve.
//! A decided node is no longer suspended, so a link works once; the decision is audited with
//! the link's label and recipient as the actor.
//!
//! Pure: signing and checking take the key and the time as inputs.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// What a link decides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub namespace: String,
    pub workflow: String,
    pub uid: String,
    /// The suspended node: display name, name or id, as `resume`/`set` take it.
    pub node: String,
    /// The node's output parameters the decision sets (`decision=terminate`).
    pub parameters: BTreeMap<String, String>,
    /// What the button says ("terminate", "keep isolated").
    pub label: String,
    /// Whom the link was sent to (a channel, an address), recorded as the approver.
    #[serde(default)]
    pub to: String,
    /// Valid until (milliseconds since the epoch).
    pub expires_ms: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LinkError {
    #[error("this is not an approval link (the token is malformed)")]
    Malformed,
    #[error(
        "this approval link's signature does not match (altered, or signed by another installation)"
    )]
    BadSignature,
    #[error("this approval link expired")]
    Expired,
}

/// Signs and checks links with one key; replicas given the same key accept each other's.
#[derive(Clone)]
pub struct LinkSigner {
    key: Vec<u8>,
    /// The server's URL as people reach it (`https://riposte.example.com`).
    pub external_url: String,
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LinkSigner({})", self.external_url)
    }
}

/// What separates this key's use from the callback tokens derived from the same secret.
const KEY_PURPOSE: &[u8] = b"riposte approval links v1";

impl LinkSigner {
    /// A signer whose key is derived from `secret` (the installation's shared callback
    /// secret), so it differs from every other use of that secret.
    pub fn new(secret: &[u8], external_url: &str) -> LinkSigner {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable_key());
        mac.update(KEY_PURPOSE);
        LinkSigner {
            key: mac.finalize().into_bytes().to_vec(),
            external_url: external_url.trim_end_matches('/').to_string(),
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable_key())
    }

    /// The token of `grant`.
    pub fn sign(&self, grant: &Grant) -> String {
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(grant).unwrap_or_default());
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{body}.{sig}")
    }

    /// The link people open.
    pub fn url(&self, grant: &Grant) -> String {
        format!(
            "{}/api/v1/riposte/approvals/{}",
            self.external_url,
            self.sign(grant)
        )
    }

    /// The grant of a genuine, unexpired token.
    pub fn verify(&self, token: &str, now_ms: i64) -> Result<Grant, LinkError> {
        let (body, sig) = token.split_once('.').ok_or(LinkError::Malformed)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| LinkError::Malformed)?;
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        // Constant-time comparison (hmac's verify).
        mac.verify_slice(&sig)
            .map_err(|_| LinkError::BadSignature)?;
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| LinkError::Malformed)?;
        let grant: Grant = serde_json::from_slice(&json).map_err(|_| LinkError::Malformed)?;
        if now_ms >= grant.expires_ms {
            return Err(LinkError::Expired);
        }
        Ok(grant)
    }
}

/// HMAC-SHA256 takes a key of any length, so this is never reached.
fn unreachable_key() -> ! {
    unreachable!("HMAC accepts keys of any length")
}

/// Text safe inside HTML (element content and quoted attributes).
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Grant {
        Grant {
            namespace: "prod-payments".into(),
            workflow: "runtime-alert-x7k2p".into(),
            uid: "3f0c".into(),
            node: "approve".into(),
            parameters: [("decision".to_string(), "terminate".to_string())].into(),
            label: "terminate".into(),
            to: "#secops".into(),
            expires_ms: 2_000,
        }
    }

    #[test]
    fn a_signed_link_verifies_until_it_expires() {
        let s = LinkSigner::new(b"0123456789abcdef", "https://riposte.example.com/");
        let token = s.sign(&grant());
        assert_eq!(s.verify(&token, 1_999), Ok(grant()));
        assert_eq!(s.verify(&token, 2_000), Err(LinkError::Expired));
        assert!(
            s.url(&grant())
                .starts_with("https://riposte.example.com/api/v1/riposte/approvals/")
        );
        // URL-safe: nothing to escape in a path segment.
        assert!(
            token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        );
    }

    #[test]
    fn altered_or_foreign_links_are_refused() {
        let s = LinkSigner::new(b"0123456789abcdef", "https://r");
        let token = s.sign(&grant());
        let mut other = grant();
        other.parameters.insert("decision".into(), "keep".into());
        let forged_body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&other).unwrap());
        let sig = token.split_once('.').unwrap().1;
        assert_eq!(
            s.verify(&format!("{forged_body}.{sig}"), 0),
            Err(LinkError::BadSignature)
        );
        let foreign = LinkSigner::new(b"another installation", "https://r");
        assert_eq!(foreign.verify(&token, 0), Err(LinkError::BadSignature));
        for bad in ["", "abc", "abc.", ".abc", "a.b.c", "!!.!!"] {
            assert!(s.verify(bad, 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn any_altered_signature_character_is_refused() {
        // Every character of the signature but the last carries six signature bits only, so
        // altering it is a bad signature; the last also carries padding bits, so altering it
        // may instead make the token non-canonical (malformed). Either way it decides nothing.
        let s = LinkSigner::new(b"0123456789abcdef", "https://r");
        let mut malformed_at_the_end = 0;
        for expires_ms in 0..256 {
            let token = s.sign(&Grant {
                expires_ms,
                ..grant()
            });
            let sig_at = token.rfind('.').unwrap() + 1;
            for i in sig_at..token.len() {
                let c = token.as_bytes()[i];
                let mut forged = token.clone();
                forged.replace_range(i..i + 1, if c == b'A' { "B" } else { "A" });
                let got = s.verify(&forged, 0);
                if i + 1 < token.len() {
                    assert_eq!(got, Err(LinkError::BadSignature), "{forged}");
                } else {
                    assert!(
                        matches!(got, Err(LinkError::BadSignature | LinkError::Malformed)),
                        "{forged}: {got:?}"
                    );
                    malformed_at_the_end += usize::from(got == Err(LinkError::Malformed));
                }
            }
        }
        // About one token in sixteen ends in `A`; its forgery `B` sets a padding bit. (The
        // server test once forged the last character and was refused 400 instead of 403.)
        assert!(
            (4..=40).contains(&malformed_at_the_end),
            "{malformed_at_the_end} of 256"
        );
    }

    #[test]
    fn the_link_key_is_not_the_callback_secret() {
        // A callback token (HMAC(secret, uid/node)) must never double as a link signature.
        let s = LinkSigner::new(b"0123456789abcdef", "https://r");
        assert_ne!(s.key, b"0123456789abcdef".to_vec());
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            html_escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }
}
