//! Architecture invariant: the engine (and the crates it builds on) do no IO. Their direct
//! dependencies are checked here so that a runtime, database, HTTP or Kubernetes crate cannot
//! slip in unnoticed.

const FORBIDDEN: &[&str] = &[
    "tokio",
    "sqlx",
    "kube",
    "axum",
    "hyper",
    "reqwest",
    "ureq",
    "async-nats",
    "libc",
    "rand",
];

fn dependencies(manifest: &str) -> Vec<String> {
    let mut deps = Vec::new();
    let mut in_deps = false;
    for line in manifest.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_deps = t == "[dependencies]";
            continue;
        }
        if in_deps && let Some((name, _)) = t.split_once(['=', '.']) {
            let name = name.trim();
            if !name.is_empty() && !name.starts_with('#') {
                deps.push(name.to_string());
            }
        }
    }
    deps
}

#[test]
fn engine_spec_and_expr_stay_pure() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for krate in ["engine", "spec", "expr"] {
        let manifest =
            std::fs::read_to_string(root.join(krate).join("Cargo.toml")).expect("manifest");
        let deps = dependencies(&manifest);
        assert!(!deps.is_empty(), "{krate}: no dependencies parsed");
        for d in &deps {
            assert!(
                !FORBIDDEN.contains(&d.as_str()),
                "{krate} must not depend on {d}"
            );
        }
    }
    let engine =
        dependencies(&std::fs::read_to_string(root.join("engine/Cargo.toml")).expect("manifest"));
    assert_eq!(
        engine,
        vec!["spec", "expr", "serde", "serde_json", "thiserror"]
    );
}
