//! Bearer-token authentication and per-namespace roles.
//!
//! Identities live in a file (YAML or JSON) that stores only SHA-256 hashes of tokens:
//!
//! ```yaml
//! identities:
//!   - name: alice
//!     tokenSha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//!     roles: {default: admin, shop: approver, "*": viewer}
//! ```
//!
//! Roles are ordered: `viewer` (read) < `submitter` (create, submit, lint) < `approver`
//! (resume, set: approvals) < `admin` (stop, terminate, delete, templates). `"*"` applies to
//! every namespace without its own entry. Tokens are compared as hashes in constant time.

use std::collections::BTreeMap;

use serde_json::Value;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Submitter,
    Approver,
    Admin,
}

impl Role {
    fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "viewer" => Role::Viewer,
            "submitter" => Role::Submitter,
            "approver" => Role::Approver,
            "admin" => Role::Admin,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Submitter => "submitter",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone)]
struct Identity {
    name: String,
    token_hash: [u8; 32],
    roles: BTreeMap<String, Role>,
}

/// The configured identities; `None` in [`crate::api`] means authentication is off.
#[derive(Debug, Clone)]
pub struct Auth {
    identities: Vec<Identity>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AuthFileError {
    #[error("{0}")]
    Parse(String),
    #[error("identities[{index}]: {message}")]
    Identity { index: usize, message: String },
}

/// Why a request is refused.
#[derive(Debug, PartialEq)]
pub enum Denied {
    /// No, or an unknown, bearer token (HTTP 401).
    Unauthenticated(String),
    /// Known, but the role is too low here (HTTP 403).
    Forbidden(String),
}

pub fn sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let hex = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(out)
}

/// Equal in time independent of where the inputs differ.
pub(crate) fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Auth {
    /// Parses an identities file (YAML or JSON).
    pub fn parse(text: &str) -> Result<Auth, AuthFileError> {
        let docs = spec::yaml::load_documents(text).map_err(|e| {
            AuthFileError::Parse(format!("line {}: {}", e.position.line, e.message))
        })?;
        let doc = docs.first().map(|d| d.value.clone()).unwrap_or(Value::Null);
        let list = doc["identities"].as_array().ok_or_else(|| {
            AuthFileError::Parse("expected a top-level `identities:` list".into())
        })?;
        let mut identities = Vec::new();
        for (index, v) in list.iter().enumerate() {
            let err = |message: String| AuthFileError::Identity { index, message };
            let name = v["name"]
                .as_str()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| err("`name` is required".into()))?;
            let hash = v["tokenSha256"].as_str().ok_or_else(|| {
                err("`tokenSha256` is required (riposte auth new-token prints one)".into())
            })?;
            let token_hash = parse_hex32(hash)
                .ok_or_else(|| err("`tokenSha256` must be 64 hex digits".into()))?;
            let mut roles = BTreeMap::new();
            for (ns, role) in v["roles"]
                .as_object()
                .ok_or_else(|| err("`roles` must map namespaces to roles".into()))?
            {
                let r = role.as_str().and_then(Role::parse).ok_or_else(|| {
                    err(format!(
                        "role {role} for {ns:?} is not viewer, submitter, approver or admin"
                    ))
                })?;
                roles.insert(ns.clone(), r);
            }
            identities.push(Identity {
                name: name.to_string(),
                token_hash,
                roles,
            });
        }
        Ok(Auth { identities })
    }

    /// The roles of the identity called `name`, by namespace.
    pub fn roles_of(&self, name: &str) -> BTreeMap<String, Role> {
        self.identities
            .iter()
            .find(|i| i.name == name)
            .map(|i| i.roles.clone())
            .unwrap_or_default()
    }

    /// The caller's name if the bearer token in `authorization` has at least `needed` in
    /// `namespace` (`None`: any namespace, e.g. `/api/v1/userinfo`).
    pub fn authorize(
        &self,
        authorization: Option<&str>,
        namespace: Option<&str>,
        needed: Role,
    ) -> Result<String, Denied> {
        let token = authorization
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Denied::Unauthenticated(
                    "missing bearer token: send `Authorization: Bearer <token>`".into(),
                )
            })?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Compare against every identity so timing does not reveal which one matched.
        let mut found: Option<&Identity> = None;
        for id in &self.identities {
            if constant_time_eq(&id.token_hash, &digest) && found.is_none() {
                found = Some(id);
            }
        }
        let id = found.ok_or_else(|| Denied::Unauthenticated("unknown token".into()))?;
        let role = match namespace {
            Some(ns) => id.roles.get(ns).or_else(|| id.roles.get("*")).copied(),
            None => id.roles.values().max().copied(),
        };
        match role {
            Some(r) if r >= needed => Ok(id.name.clone()),
            Some(r) => Err(Denied::Forbidden(format!(
                "{} is {} in namespace {}; this needs {}",
                id.name,
                r.as_str(),
                namespace.unwrap_or("*"),
                needed.as_str()
            ))),
            None => Err(Denied::Forbidden(format!(
                "{} has no role in namespace {}",
                id.name,
                namespace.unwrap_or("*")
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_per_namespace() {
        let file = format!(
            "identities:\n  - name: alice\n    tokenSha256: {}\n    roles: {{default: admin, \"*\": viewer}}\n  - name: bob\n    tokenSha256: {}\n    roles: {{shop: approver}}\n",
            sha256_hex("alice-token"),
            sha256_hex("bob-token")
        );
        let auth = Auth::parse(&file).expect("valid file");
        let a = |t: &str, ns: Option<&str>, r: Role| {
            auth.authorize(Some(&format!("Bearer {t}")), ns, r)
        };
        assert_eq!(
            a("alice-token", Some("default"), Role::Admin),
            Ok("alice".into())
        );
        assert_eq!(
            a("alice-token", Some("other"), Role::Viewer),
            Ok("alice".into())
        );
        assert!(matches!(
            a("alice-token", Some("other"), Role::Submitter),
            Err(Denied::Forbidden(_))
        ));
        assert_eq!(
            a("bob-token", Some("shop"), Role::Approver),
            Ok("bob".into())
        );
        assert!(
            matches!(a("bob-token", Some("shop"), Role::Admin), Err(Denied::Forbidden(m)) if m.contains("bob is approver in namespace shop; this needs admin"))
        );
        assert!(matches!(
            a("bob-token", Some("default"), Role::Viewer),
            Err(Denied::Forbidden(_))
        ));
        assert!(matches!(
            a("nope", Some("default"), Role::Viewer),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(matches!(
            auth.authorize(None, None, Role::Viewer),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(
            Auth::parse("identities:\n  - name: x\n    tokenSha256: abc\n    roles: {}\n")
                .unwrap_err()
                .to_string()
                .contains("64 hex digits")
        );
        let bad_role = format!(
            "identities:\n  - name: x\n    tokenSha256: {}\n    roles: {{a: boss}}\n",
            sha256_hex("t")
        );
        assert!(
            Auth::parse(&bad_role)
                .unwrap_err()
                .to_string()
                .contains("not viewer, submitter")
        );
    }
}
