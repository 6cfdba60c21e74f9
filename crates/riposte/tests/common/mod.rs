//! Helpers shared by the integration test files. (Each test binary uses some of them.)
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// Validates manifests against the official Kubernetes 1.31 schemas (strict: unknown fields
/// are errors) with `kubernetes-validate`. Without the tool the check is skipped with a
/// message, unless `RIPOSTE_REQUIRE_K8S_VALIDATE` is set (scripts/test sets it).
pub fn validate_kubernetes_manifests(manifests: &[PathBuf], what: &str) {
    let validator = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet", "-k", "1.31.0"])
        .args(manifests)
        .output();
    match validator {
        Ok(v) => assert!(
            v.status.success(),
            "kubernetes-validate rejected {what}:\n{}{}",
            String::from_utf8_lossy(&v.stdout),
            String::from_utf8_lossy(&v.stderr)
        ),
        Err(e) if std::env::var_os("RIPOSTE_REQUIRE_K8S_VALIDATE").is_some() => {
            panic!("kubernetes-validate is required (pip install kubernetes-validate): {e}")
        }
        Err(e) => eprintln!(
            "skipping schema validation of {} {what}: kubernetes-validate not found ({e}); scripts/test installs it",
            manifests.len()
        ),
    }
}

/// Runs one SQL statement with `psql` in `database` on the local PostgreSQL (scripts/test
/// starts it); any error fails the test with psql's message.
pub fn psql(database: &str, sql: &str) {
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", database])
        .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("psql is installed (scripts/test starts PostgreSQL)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
