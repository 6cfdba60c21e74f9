//! Reading workflow files and directories from disk into `spec` resources.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use spec::{Diagnostic, Library, Loaded};

/// Every `.yaml`, `.yml` and `.json` file under `path` (or `path` itself), sorted.
pub fn yaml_files(path: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
        {
            let p = entry
                .with_context(|| format!("listing {}", dir.display()))?
                .path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
            {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Loads every resource from `paths` (files or directories).
pub fn load_all(paths: &[PathBuf]) -> Result<(Vec<Loaded>, Vec<Diagnostic>, usize)> {
    let mut loaded = Vec::new();
    let mut diags = Vec::new();
    let mut n_files = 0;
    for p in paths {
        for f in yaml_files(p)? {
            let text =
                std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
            let (l, d) = spec::load(&f.display().to_string(), &text);
            loaded.extend(l);
            diags.extend(d);
            n_files += 1;
        }
    }
    Ok((loaded, diags, n_files))
}

/// The Sensors and EventSources under `paths`, linted (Argo Events' kinds; `spec::load`
/// already reported YAML errors). Returns how many there are and the diagnostics.
pub fn lint_events_in(paths: &[PathBuf]) -> Result<(usize, Vec<Diagnostic>)> {
    let mut count = 0;
    let mut diags = Vec::new();
    for p in paths {
        for f in yaml_files(p)? {
            let text =
                std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
            let (l, _) = spec::load_events(&f.display().to_string(), &text);
            count += l.len();
            diags.extend(spec::lint_events(&l));
        }
    }
    Ok((count, diags))
}

/// A library of the WorkflowTemplates among `loaded`.
pub fn library_of(loaded: &[Loaded]) -> Library {
    let mut lib = Library::default();
    for l in loaded {
        lib.add(l);
    }
    lib
}

/// Lints `loaded` (spec rules and resource-template languages) against a library of its own
/// templates plus those under `template_paths`, appending to `diags`; returns the library
/// that `templateRef`s resolve against. `riposte lint` and `riposte run` share it.
pub fn lint_with_templates(
    loaded: &[Loaded],
    template_paths: &[PathBuf],
    diags: &mut Vec<Diagnostic>,
) -> Result<Library> {
    let (extra, extra_diags, _) = if template_paths.is_empty() {
        Default::default()
    } else {
        load_all(template_paths)?
    };
    diags.extend(extra_diags);
    let mut library = library_of(&extra);
    for l in loaded {
        library.add(l);
    }
    diags.extend(spec::lint(loaded, &library));
    diags.extend(executor::resource_lint::lint(loaded));
    Ok(library)
}
