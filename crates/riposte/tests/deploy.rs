//! `deploy/`: every manifest passes the official Kubernetes schemas, the kustomizations name
//! files that exist, and the server Deployment keeps its hardening.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod common;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("deploy dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("read manifest");
    spec::yaml::load_documents(&text)
        .unwrap_or_else(|e| panic!("{}: {}", path.display(), e.message))
        .into_iter()
        .map(|d| d.value)
        .collect()
}

#[test]
fn manifests_pass_the_official_schemas() {
    let manifests: Vec<PathBuf> = yaml_files(&deploy_dir())
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n != "kustomization.yaml"))
        // Kyverno's kinds are not in the Kubernetes schemas; checked below.
        .filter(|p| !p.starts_with(deploy_dir().join("kyverno")))
        .collect();
    assert!(manifests.len() >= 7, "{manifests:?}");
    common::validate_kubernetes_manifests(&manifests, "deploy/ manifests");
}

#[test]
fn kustomizations_name_existing_files() {
    for k in yaml_files(&deploy_dir())
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "kustomization.yaml"))
    {
        let doc = &documents(&k)[0];
        let base = k.parent().expect("parent");
        for r in doc["resources"].as_array().expect("resources") {
            let target = base.join(r.as_str().expect("resource path"));
            assert!(
                target.exists(),
                "{}: {} does not exist",
                k.display(),
                target.display()
            );
        }
    }
}

#[test]
fn server_deployment_is_hardened_and_probed() {
    let d = &documents(&deploy_dir().join("base/deployment.yaml"))[0];
    assert_eq!(d["spec"]["replicas"], 2);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert!(c["resources"]["limits"]["memory"].is_string());
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    // The server refuses non-loopback addresses without an auth file.
    let args: Vec<&str> = c["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        args.iter().any(|a| a.starts_with("--auth-file=")),
        "{args:?}"
    );
}

/// Both commands `deploy/README.md` gives render with a real kustomize (kubectl's, v5): the
/// overlay once failed with "cycle detected" because it included its own parent directory.
/// The rendered objects pass the official schemas too.
#[test]
fn both_kustomizations_render_with_kubectl() {
    let probe = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output();
    let Ok(probe) = probe else {
        assert!(
            std::env::var_os("RIPOSTE_REQUIRE_KUSTOMIZE").is_none(),
            "kubectl (with kustomize v5) is required"
        );
        eprintln!("skipping: kubectl not found");
        return;
    };
    let version = String::from_utf8_lossy(&probe.stdout).to_string();
    assert!(
        version.contains("Kustomize Version: v5"),
        "kubectl's kustomize must be v5 (Debian's kubernetes-client 1.20 is too old): {version}"
    );
    let out_dir = tempfile::tempdir().expect("tempdir");
    for (dir, kinds) in [("", 7), ("responder", 9)] {
        let out = std::process::Command::new("kubectl")
            .arg("kustomize")
            .arg(deploy_dir().join(dir))
            .output()
            .expect("kubectl kustomize");
        assert!(
            out.status.success(),
            "kubectl kustomize deploy/{dir}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let docs = spec::yaml::load_documents(&text).expect("rendered YAML");
        assert_eq!(docs.len(), kinds, "deploy/{dir}: {text}");
        for d in &docs {
            if d.value["kind"] != "Namespace"
                && !d.value["kind"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("Cluster")
            {
                assert_eq!(d.value["metadata"]["namespace"], "riposte", "{}", d.value);
            }
        }
        let file = out_dir.path().join(format!(
            "rendered-{}.yaml",
            if dir.is_empty() { "base" } else { dir }
        ));
        std::fs::write(&file, &text).expect("write rendered");
        common::validate_kubernetes_manifests(&[file], &format!("kubectl kustomize deploy/{dir}"));
    }
}

/// The image the Deployment runs and the one step pods get their wrapper from are this
/// build's version, never a moving tag that Kubernetes would pull for every step.
#[test]
fn images_are_pinned_to_this_version() {
    let want = format!("ghcr.io/riposte/riposte:v{}", env!("CARGO_PKG_VERSION"));
    let d = &documents(&deploy_dir().join("base/deployment.yaml"))[0];
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], want.as_str());
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    let cm = &documents(&deploy_dir().join("base/configmap.yaml"))[0];
    assert_eq!(cm["data"]["RIPOSTE_IMAGE"], want.as_str());
    // And the binary's own default agrees.
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_riposte"))
        .args(["run", "--help"])
        .output()
        .expect("riposte run --help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains(&want), "{help}");
}

/// The playbooks' deploy-time half: Kyverno ClusterPolicies, each rule with a match and
/// exactly one of validate, mutate or generate, as Kyverno requires.
#[test]
fn kyverno_policies_have_the_shape_kyverno_requires() {
    let files: Vec<PathBuf> = yaml_files(&deploy_dir().join("kyverno"))
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n != "kustomization.yaml"))
        .collect();
    assert_eq!(files.len(), 3, "{files:?}");
    for f in files {
        for doc in documents(&f) {
            assert_eq!(doc["apiVersion"], "kyverno.io/v1", "{}", f.display());
            assert_eq!(doc["kind"], "ClusterPolicy", "{}", f.display());
            let rules = doc["spec"]["rules"].as_array().expect("rules");
            assert!(!rules.is_empty(), "{}", f.display());
            for r in rules {
                assert!(
                    r["name"].is_string(),
                    "{}: a rule needs a name",
                    f.display()
                );
                assert!(
                    r["match"]["any"].is_array() || r["match"]["all"].is_array(),
                    "{}: rule {} needs match.any or match.all",
                    f.display(),
                    r["name"]
                );
                let kinds = ["validate", "mutate", "generate", "verifyImages"]
                    .iter()
                    .filter(|k| !r[**k].is_null())
                    .count();
                assert_eq!(
                    kinds,
                    1,
                    "{}: rule {} needs exactly one action",
                    f.display(),
                    r["name"]
                );
            }
        }
    }
}

/// The Kyverno policies validate against Kyverno's own ClusterPolicy schema (vendored in
/// tests/kyverno, generated from Kyverno 1.13's CRDs, strict about unknown fields), and a
/// policy with a misspelt field does not, so the check can fail. Needs python3 with
/// jsonschema and PyYAML (kubernetes-validate brings both; scripts/test installs it).
#[test]
fn kyverno_policies_validate_against_kyverno_schemas() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = root.join("tests/kyverno/validate.py");
    let run = |files: &[PathBuf]| {
        Command::new("python3")
            .arg(&script)
            .args(files)
            .output()
            .expect("python3 runs")
    };
    let probe = Command::new("python3")
        .args(["-c", "import jsonschema, yaml"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var_os("RIPOSTE_REQUIRE_K8S_VALIDATE").is_none(),
            "python3 with jsonschema and PyYAML is required (scripts/test installs them)"
        );
        eprintln!("skipping Kyverno schema validation: python3 jsonschema/PyYAML not found");
        return;
    }
    let policies: Vec<PathBuf> = yaml_files(&deploy_dir().join("kyverno"))
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n != "kustomization.yaml"))
        .collect();
    let out = run(&policies);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("3 ClusterPolicy document(s), 0 problem(s)"),
        "{text}"
    );

    let dir = tempfile::tempdir().expect("tmp");
    let bad = dir.path().join("typo.yaml");
    let original = std::fs::read_to_string(&policies[0]).expect("policy");
    std::fs::write(
        &bad,
        original.replacen("  rules:", "  rulez: []\n  rules:", 1),
    )
    .expect("write");
    let out = run(&[bad]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "a misspelt field passed: {text}");
    assert!(text.contains("'rulez' was unexpected"), "{text}");
}
