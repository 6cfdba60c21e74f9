//! Every YAML file of Argo's own examples parses, and lint reports no errors on them.

use std::path::{Path, PathBuf};

use riposte_spec::{Library, Severity, lint, load};

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("conformance corpus is checked in") {
        let path = entry.expect("readable directory entry").path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

#[test]
fn argo_examples_lint_without_errors() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/conformance/argo-workflows/examples");
    let mut files = Vec::new();
    yaml_files(&root, &mut files);
    files.sort();
    assert!(
        files.len() > 150,
        "expected the whole corpus, found {} files",
        files.len()
    );
    let mut all = Vec::new();
    let mut errors = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("readable file");
        let (loaded, diags) = load(&f.display().to_string(), &text);
        errors.extend(diags.into_iter().filter(|d| d.severity == Severity::Error));
        all.extend(loaded);
    }
    let mut library = Library::default();
    all.iter().for_each(|l| library.add(l));
    errors.extend(
        lint(&all, &library)
            .into_iter()
            .filter(|d| d.severity == Severity::Error),
    );
    let shown: Vec<String> = errors.iter().map(|d| d.to_string()).collect();
    assert!(
        shown.is_empty(),
        "{} errors:\n{}",
        shown.len(),
        shown.join("\n")
    );
    assert!(all.len() > 150, "parsed only {} resources", all.len());
}
