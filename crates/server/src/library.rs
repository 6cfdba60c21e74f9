//! The response library shipped inside the binary: `workflows/library/` (one
//! ClusterWorkflowTemplate per response action) and `workflows/playbooks/` (Sensors,
//! EventSources and WorkflowTemplates wiring alerts to those actions). `riposte library
//! install` and `POST /api/v1/riposte/library/{namespace}` apply them from here, so what a
//! server installs is what it was built with.

/// One file of the library, as shipped.
pub struct LibraryFile {
    /// Its path under `workflows/`, e.g. `library/pod-isolate.yaml`.
    pub path: &'static str,
    pub text: &'static str,
}

macro_rules! shipped {
    ($($path:literal),* $(,)?) => {
        &[$(LibraryFile {
            path: $path,
            text: include_str!(concat!("../../../workflows/", $path)),
        }),*]
    };
}

/// Every library and playbook file (a test checks this list against the directories).
pub const FILES: &[LibraryFile] = shipped![
    "library/gitops-change.yaml",
    "library/namespace-default-deny.yaml",
    "library/node-cordon.yaml",
    "library/node-drain.yaml",
    "library/node-label.yaml",
    "library/node-taint.yaml",
    "library/notify.yaml",
    "library/pod-capture.yaml",
    "library/pod-command.yaml",
    "library/pod-checkpoint.yaml",
    "library/pod-evidence.yaml",
    "library/pod-isolate.yaml",
    "library/pod-label.yaml",
    "library/pod-terminate.yaml",
    "library/policyreport-result.yaml",
    "library/serviceaccount-rotate.yaml",
    "library/workload-sandbox.yaml",
    "library/workload-unsandbox.yaml",
    "playbooks/insecure-workload.yaml",
    "playbooks/k8s-audit.yaml",
    "playbooks/new-namespace.yaml",
    "playbooks/pod-exec.yaml",
    "playbooks/runtime-alert.yaml",
    "playbooks/serviceaccount-probe.yaml",
    "playbooks/vulnerable-workload.yaml",
];

/// Whether a shipped file is a playbook (installed only when asked for) or an action.
pub fn is_playbook(file: &LibraryFile) -> bool {
    file.path.starts_with("playbooks/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_under_library_and_playbooks_is_shipped() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workflows");
        let mut on_disk = Vec::new();
        for dir in ["library", "playbooks"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.ends_with(".yaml") {
                    on_disk.push(format!("{dir}/{name}"));
                }
            }
        }
        on_disk.sort();
        let mut shipped: Vec<String> = FILES.iter().map(|f| f.path.to_string()).collect();
        shipped.sort();
        assert_eq!(shipped, on_disk, "add new files to library::FILES");
    }

    #[test]
    fn every_shipped_document_parses_and_lints_without_errors() {
        for f in FILES {
            let docs = spec::yaml::load_documents(f.text)
                .unwrap_or_else(|e| panic!("{}: {}", f.path, e.message));
            assert!(!docs.is_empty(), "{} is empty", f.path);
        }
    }
}
