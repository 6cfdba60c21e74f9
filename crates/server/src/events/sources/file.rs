//! File entries: a directory polled (no inotify dependency; a second is fine for the files
//! this watches). What changed between two listings is pure ([`FileChanges`]); a change is
//! an event keyed by path, size and modification time, so a restart's first listing (which
//! reports nothing) and a re-read after a crash are not second events.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::json;
use spec::event_source::{FileOp, FileWatch};

use super::{SourceCtx, SourceError};

/// What identifies a file's version: its size and modification time (ns).
type Stamp = (u64, i64);

/// The files seen in the last listing, and what a new listing changed.
#[derive(Default)]
struct FileChanges {
    seen: HashMap<String, Stamp>,
    listed: bool,
}

impl FileChanges {
    /// The files `listing` reports for `op` (name, stamp), compared with the last listing.
    /// The first listing is the baseline: nothing in it is an event.
    fn observe(&mut self, listing: BTreeMap<String, Stamp>, op: FileOp) -> Vec<(String, Stamp)> {
        let first = !self.listed;
        self.listed = true;
        let mut out = Vec::new();
        if !first {
            match op {
                FileOp::Create => {
                    for (name, stamp) in &listing {
                        if !self.seen.contains_key(name) {
                            out.push((name.clone(), *stamp));
                        }
                    }
                }
                FileOp::Write => {
                    for (name, stamp) in &listing {
                        if self.seen.get(name) != Some(stamp) {
                            out.push((name.clone(), *stamp));
                        }
                    }
                }
                FileOp::Remove => {
                    let mut gone: Vec<_> = self
                        .seen
                        .iter()
                        .filter(|(name, _)| !listing.contains_key(*name))
                        .map(|(n, s)| (n.clone(), *s))
                        .collect();
                    gone.sort();
                    out = gone;
                }
            }
        }
        self.seen = listing.into_iter().collect();
        out
    }
}

pub(super) async fn run(ctx: &SourceCtx, w: &FileWatch) -> Result<(), SourceError> {
    let dir = w.directory.trim_end_matches('/').to_string();
    let mut changes = FileChanges::default();
    loop {
        let listing = list(&dir, w).await?;
        let batch: Vec<_> = changes
            .observe(listing, w.event_type)
            .into_iter()
            .map(|(name, stamp)| {
                let full = format!("{dir}/{name}");
                let op = w.event_type.name();
                ctx.event(
                    "file",
                    format!("{full}@{op}:{}:{}", stamp.0, stamp.1),
                    json!({"name": full, "op": op}),
                )
            })
            .collect();
        if !batch.is_empty() {
            ctx.ingest(batch).await?;
        }
        let wait = tokio::time::sleep(Duration::from_millis(w.poll_interval_ms));
        if ctx.until_stopped(wait).await.is_none() {
            return Ok(());
        }
    }
}

/// The watched regular files of `dir` and their stamps.
async fn list(dir: &str, w: &FileWatch) -> Result<BTreeMap<String, Stamp>, SourceError> {
    let mut entries = tokio::fs::read_dir(dir)
        .await
        .map_err(super::connection(format!("reading directory {dir}")))?;
    let mut out = BTreeMap::new();
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !w.watches(&name) {
            continue;
        }
        let Ok(meta) = entry.metadata().await else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        out.insert(name, (meta.len(), mtime));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(files: &[(&str, Stamp)]) -> BTreeMap<String, Stamp> {
        files.iter().map(|(n, s)| (n.to_string(), *s)).collect()
    }

    #[test]
    fn changes_between_listings_are_reported_per_operation() {
        let a1 = ("a.json", (10, 1));
        let a2 = ("a.json", (12, 2));
        let b = ("b.json", (5, 1));
        // Each row: listings in order, then what the last one reports.
        type Row<'a> = (FileOp, Vec<Vec<(&'a str, Stamp)>>, Vec<&'a str>);
        let table: Vec<Row> = vec![
            (FileOp::Create, vec![vec![a1]], vec![]),
            (FileOp::Create, vec![vec![a1], vec![a1, b]], vec!["b.json"]),
            (FileOp::Create, vec![vec![a1], vec![a2]], vec![]),
            (FileOp::Write, vec![vec![a1], vec![a2]], vec!["a.json"]),
            (FileOp::Write, vec![vec![a1], vec![a1, b]], vec!["b.json"]),
            (FileOp::Write, vec![vec![a1], vec![a1]], vec![]),
            (FileOp::Remove, vec![vec![a1, b], vec![b]], vec!["a.json"]),
            (FileOp::Remove, vec![vec![a1], vec![a1, b]], vec![]),
            (
                FileOp::Create,
                vec![vec![], vec![a1], vec![], vec![a1]],
                vec!["a.json"],
            ),
        ];
        for (op, listings, want) in table {
            let mut changes = FileChanges::default();
            let mut got = Vec::new();
            for l in &listings {
                got = changes.observe(listing(l), op);
            }
            let got: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(got, want, "{op:?} {listings:?}");
        }
    }
}
