//! Loads YAML (multi-document) into `serde_json::Value`s while remembering where every node
//! came from, so that lint and type errors can say `file:line:col`.
//!
//! Scalars resolve like `sigs.k8s.io/yaml` (which Kubernetes and Argo use): plain `true`/`false`
//! (and YAML 1.1 `yes`/`no`/`on`/`off`) are booleans, plain numbers are numbers, `null`/`~`/empty
//! are null, and anything quoted or in a block scalar is a string.

use std::collections::HashMap;

use granit_parser::{Event, Parser, ScalarStyle, Span};
use serde_json::{Map, Number, Value};

/// A 1-based line and column in a source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub struct Position {
    pub line: usize,
    pub col: usize,
}

/// One YAML document: its value and the position of every node, keyed by a JSON-path-like
/// string such as `spec.templates[2].dag.tasks[0].name`. The document root is keyed by `""`.
/// Paths are stored as 64-bit hashes: a 100,000-task DAG has ~700,000 positions.
#[derive(Debug, Clone, Default)]
pub struct Document {
    pub value: Value,
    positions: HashMap<u64, Position>,
    /// Legal but suspicious input, such as a duplicate key (the last one wins, as in Kubernetes).
    pub warnings: Vec<(Position, String)>,
}

impl Document {
    /// Position of the node at `path`, or of its nearest ancestor that has one.
    pub fn position(&self, path: &str) -> Position {
        let mut p = path;
        loop {
            if let Some(pos) = self.positions.get(&path_key(p)) {
                return *pos;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => {
                    return self
                        .positions
                        .get(&path_key(""))
                        .copied()
                        .unwrap_or_default();
                }
            }
        }
    }
}

/// A YAML syntax error with its position.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct YamlError {
    pub position: Position,
    pub message: String,
}

/// Parses every document of `text`. Null documents (e.g. a trailing `---`) are skipped.
pub fn load_documents(text: &str) -> Result<Vec<Document>, YamlError> {
    if text.len() > limits::MAX_BYTES {
        return Err(YamlError {
            position: Position { line: 1, col: 1 },
            message: format!(
                "the document has {} bytes; at most {} are read",
                text.len(),
                limits::MAX_BYTES
            ),
        });
    }
    let mut parser = Parser::new_from_str(text);
    let mut builder = Builder::default();
    while let Some(ev) = parser.next_event() {
        let (event, span) = ev.map_err(|e| YamlError {
            position: Position {
                line: e.marker().line(),
                col: e.marker().col() + 1,
            },
            message: without_position(&e.to_string()),
        })?;
        builder.push(event, span)?;
    }
    Ok(builder.documents)
}

/// The scanner appends ` at char N line L column C`; we report positions ourselves.
fn without_position(msg: &str) -> String {
    match msg.rfind(" at char ") {
        Some(i) if msg[i..].contains(" line ") => msg[..i].to_string(),
        _ => msg.to_string(),
    }
}

/// Limits that keep hostile input (nested aliases, "billion laughs"; deep nesting) from
/// exhausting memory or the stack. Real workflows are far below them.
pub mod limits {
    /// Nodes in one document, counting every expansion of an alias.
    pub const MAX_NODES: usize = 1_000_000;
    /// Nesting of sequences and mappings.
    pub const MAX_DEPTH: usize = 200;
    /// Bytes of YAML text.
    pub const MAX_BYTES: usize = 16 * 1024 * 1024;
}

enum Frame {
    Seq {
        path: String,
        items: Vec<Value>,
        anchor: usize,
        size: usize,
    },
    Map {
        path: String,
        map: Map<String, Value>,
        key: Option<String>,
        anchor: usize,
        merged: Vec<String>,
        size: usize,
    },
}

#[derive(Default)]
struct Builder {
    documents: Vec<Document>,
    stack: Vec<Frame>,
    positions: HashMap<u64, Position>,
    /// Anchored values with their node counts.
    anchors: HashMap<usize, (Value, usize)>,
    /// Nodes in the current document, alias expansions included.
    nodes: usize,
    root: Option<Value>,
    warnings: Vec<(Position, String)>,
    /// Where the event being handled starts (for warnings about it).
    last_pos: Position,
}

fn pos(span: &Span) -> Position {
    Position {
        line: span.start.line(),
        col: span.start.col() + 1,
    }
}

impl Builder {
    /// Path of the node about to be added to the innermost collection.
    fn child_path(&self) -> String {
        match self.stack.last() {
            None => String::new(),
            Some(Frame::Seq { path, items, .. }) => format!("{path}[{}]", items.len()),
            Some(Frame::Map {
                path, key: Some(k), ..
            }) => join_key(path, k),
            // A mapping key itself: positions are recorded when the key arrives.
            Some(Frame::Map {
                path, key: None, ..
            }) => path.clone(),
        }
    }

    fn push(&mut self, event: Event<'_>, span: Span) -> Result<(), YamlError> {
        self.last_pos = pos(&span);
        match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentStart(..) => {}
            Event::DocumentEnd => {
                let value = self.root.take().unwrap_or(Value::Null);
                let positions = std::mem::take(&mut self.positions);
                let warnings = std::mem::take(&mut self.warnings);
                self.anchors.clear();
                self.nodes = 0;
                if !value.is_null() {
                    self.documents.push(Document {
                        value,
                        positions,
                        warnings,
                    });
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let is_key = matches!(self.stack.last(), Some(Frame::Map { key: None, .. }));
                if is_key {
                    if let Some(Frame::Map { path, key, .. }) = self.stack.last_mut() {
                        let k = text.to_string();
                        self.positions
                            .insert(path_key(&join_key(path, &k)), pos(&span));
                        *key = Some(k);
                    }
                    return Ok(());
                }
                let tag_suffix = tag.as_ref().map(|t| t.suffix().to_string());
                let value = resolve_scalar(&text, style, tag_suffix.as_deref());
                if anchor != 0 {
                    self.anchors.insert(anchor, (value.clone(), 1));
                }
                let path = self.child_path();
                self.positions.insert(path_key(&path), pos(&span));
                self.add(value, 1, &span)?;
            }
            Event::Alias(id) => {
                let size = self
                    .anchors
                    .get(&id)
                    .map(|a| a.1)
                    .ok_or_else(|| YamlError {
                        position: pos(&span),
                        message: "alias refers to an unknown anchor".into(),
                    })?;
                // Checked before the copy is made: the copy is what would exhaust memory.
                self.count(size, &span)?;
                let value = self
                    .anchors
                    .get(&id)
                    .map(|a| a.0.clone())
                    .unwrap_or_default();
                if let Some(Frame::Map { key: None, .. }) = self.stack.last() {
                    return Err(YamlError {
                        position: pos(&span),
                        message: "aliases cannot be mapping keys here".into(),
                    });
                }
                let path = self.child_path();
                self.positions.insert(path_key(&path), pos(&span));
                self.add_counted(value, size);
            }
            Event::SequenceStart(_, anchor, _) => {
                let path = self.check_not_key(&span)?;
                self.enter(&span)?;
                self.positions.insert(path_key(&path), pos(&span));
                self.stack.push(Frame::Seq {
                    path,
                    items: Vec::new(),
                    anchor,
                    size: 1,
                });
            }
            Event::MappingStart(_, anchor, _) => {
                let path = self.check_not_key(&span)?;
                self.enter(&span)?;
                self.positions.insert(path_key(&path), pos(&span));
                self.stack.push(Frame::Map {
                    path,
                    map: Map::new(),
                    key: None,
                    anchor,
                    merged: Vec::new(),
                    size: 1,
                });
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq {
                    items,
                    anchor,
                    size,
                    ..
                }) = self.stack.pop()
                {
                    let value = Value::Array(items);
                    if anchor != 0 {
                        self.anchors.insert(anchor, (value.clone(), size));
                    }
                    self.add_counted(value, size);
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map {
                    map, anchor, size, ..
                }) = self.stack.pop()
                {
                    let value = Value::Object(map);
                    if anchor != 0 {
                        self.anchors.insert(anchor, (value.clone(), size));
                    }
                    self.add_counted(value, size);
                }
            }
            // Presentation metadata only.
            _ => {}
        }
        Ok(())
    }

    fn check_not_key(&self, span: &Span) -> Result<String, YamlError> {
        if let Some(Frame::Map { key: None, .. }) = self.stack.last() {
            return Err(YamlError {
                position: pos(span),
                message: "complex mapping keys are not supported; use a plain string key".into(),
            });
        }
        Ok(self.child_path())
    }

    /// Counts `size` more nodes against the document's budget.
    fn count(&mut self, size: usize, span: &Span) -> Result<(), YamlError> {
        self.nodes = self.nodes.saturating_add(size);
        if self.nodes > limits::MAX_NODES {
            return Err(YamlError {
                position: pos(span),
                message: format!(
                    "the document expands to more than {} nodes (aliases count once per use); nested aliases like this are how YAML bombs work, so it is refused",
                    limits::MAX_NODES
                ),
            });
        }
        Ok(())
    }

    /// A new sequence or mapping: one node, one level deeper.
    fn enter(&mut self, span: &Span) -> Result<(), YamlError> {
        if self.stack.len() >= limits::MAX_DEPTH {
            return Err(YamlError {
                position: pos(span),
                message: format!(
                    "sequences and mappings are nested more than {} deep",
                    limits::MAX_DEPTH
                ),
            });
        }
        self.count(1, span)
    }

    /// Adds a scalar (one node, counted here).
    fn add(&mut self, value: Value, size: usize, span: &Span) -> Result<(), YamlError> {
        self.count(size, span)?;
        self.add_counted(value, size);
        Ok(())
    }

    /// Adds a value whose nodes were counted already; its size goes to its parent's.
    fn add_counted(&mut self, value: Value, size: usize) {
        if let Some(Frame::Seq { size: s, .. } | Frame::Map { size: s, .. }) = self.stack.last_mut()
        {
            *s = s.saturating_add(size);
        }
        let span_pos = self.last_pos;
        let warnings = &mut self.warnings;
        match self.stack.last_mut() {
            None => self.root = Some(value),
            Some(Frame::Seq { items, .. }) => items.push(value),
            Some(Frame::Map {
                map, key, merged, ..
            }) => {
                let k = key.take().unwrap_or_default();
                if k == "<<" {
                    // Merge key: explicit keys win over merged ones.
                    let sources = match value {
                        Value::Array(a) => a,
                        other => vec![other],
                    };
                    for src in sources {
                        if let Value::Object(m) = src {
                            for (mk, mv) in m {
                                if !map.contains_key(&mk) {
                                    merged.push(mk.clone());
                                    map.insert(mk, mv);
                                }
                            }
                        }
                    }
                } else {
                    if map.contains_key(&k) && !merged.contains(&k) {
                        warnings.push((
                            span_pos,
                            format!("duplicate mapping key {k:?}: the last value wins"),
                        ));
                    }
                    map.insert(k, value);
                }
            }
        }
    }
}

/// FNV-1a 64 of a path: deterministic, and collisions only misplace a line number.
fn path_key(path: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn resolve_scalar(text: &str, style: ScalarStyle, tag: Option<&str>) -> Value {
    match tag {
        Some("str") => return Value::String(text.to_string()),
        Some("int") | Some("float") | Some("bool") | Some("null") => {}
        _ => {}
    }
    if style != ScalarStyle::Plain {
        return Value::String(text.to_string());
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "y" | "Y" => {
            // `y`/`Y` are YAML 1.1 booleans too, but go-yaml keeps them strings; so do we.
            if text.eq_ignore_ascii_case("y") {
                return Value::String(text.to_string());
            }
            return Value::Bool(true);
        }
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => {
            return Value::Bool(false);
        }
        _ => {}
    }
    if let Some(n) = parse_int(text) {
        return Value::Number(n.into());
    }
    if looks_like_float(text)
        && let Ok(f) = text.replace('_', "").parse::<f64>()
        && let Some(n) = Number::from_f64(f)
    {
        return Value::Number(n);
    }
    Value::String(text.to_string())
}

fn parse_int(text: &str) -> Option<i64> {
    let (neg, body) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if body.is_empty() {
        return None;
    }
    let v = if let Some(hex) = body.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()?
    } else if let Some(oct) = body.strip_prefix("0o") {
        i64::from_str_radix(oct, 8).ok()?
    } else if body.bytes().all(|b| b.is_ascii_digit()) {
        body.parse::<i64>().ok()?
    } else {
        return None;
    };
    Some(if neg { -v } else { v })
}

fn looks_like_float(text: &str) -> bool {
    let t = text.trim_start_matches(['-', '+']);
    !t.is_empty()
        && t.chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || c == '.')
        && t.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+' | '_'))
        && t.chars().any(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_and_positions() {
        let docs =
            load_documents("a: 1\nb:\n  - x\n  - 'y'\n  - yes\nc: 1.5\n---\n---\nd: ~\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(
            docs[0].value,
            json!({"a": 1, "b": ["x", "y", true], "c": 1.5})
        );
        assert_eq!(docs[0].position("b[1]"), Position { line: 4, col: 5 });
        assert_eq!(docs[0].position("b[7].foo"), Position { line: 3, col: 3 });
        assert_eq!(docs[0].position("c"), Position { line: 6, col: 4 });
        assert_eq!(docs[1].value, json!({"d": null}));
    }

    #[test]
    fn anchors_merge_and_errors() {
        let docs = load_documents("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n").unwrap();
        assert_eq!(docs[0].value["other"], json!({"x": 1, "y": 3}));
        let err = load_documents("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.position.line >= 1, "{err:?}");
        let docs = load_documents("a: 1\na: 2\n").unwrap();
        assert_eq!(docs[0].value["a"], json!(2));
        assert!(
            docs[0].warnings[0].1.contains("duplicate"),
            "{:?}",
            docs[0].warnings
        );
    }

    /// A 25-line "billion laughs": nine levels of nine aliases would expand to 10^9 nodes.
    #[test]
    fn alias_bombs_and_deep_nesting_are_refused_with_a_position() {
        let mut bomb = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..10 {
            let p = i - 1;
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let started = std::time::Instant::now();
        let err = load_documents(&bomb).expect_err("a YAML bomb");
        assert!(err.message.contains("YAML bomb"), "{err:?}");
        assert!(err.position.line > 1, "{err:?}");
        // Refused while small, not after building it (a generous bound for a debug build).
        assert!(started.elapsed() < std::time::Duration::from_secs(20));

        // The parser refuses past 256 levels itself; the builder's own limit is lower.
        for levels in [210, 300] {
            let deep = format!("{}x{}", "[".repeat(levels), "]".repeat(levels));
            let err = load_documents(&deep).expect_err("too deep");
            assert!(
                err.message.contains("nested more than") || err.message.contains("recursion limit"),
                "{err:?}"
            );
        }

        // Aliases used a reasonable number of times are fine.
        let ok = "base: &b {x: 1}\nl: [*b, *b, *b]\n";
        assert_eq!(load_documents(ok).expect("ok")[0].value["l"][2]["x"], 1);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// Any text: an answer (documents or an error with a position), never a panic.
        #[test]
        fn any_text_loads_or_fails_cleanly(text in "(?s).{0,300}") {
            let _ = load_documents(&text);
        }

        /// YAML-shaped text (indentation, anchors, aliases, flow collections).
        #[test]
        fn yaml_shaped_text_loads_or_fails_cleanly(
            lines in proptest::collection::vec(
                "( {0,6})(- |[a-z]{1,3}: |&[a-c] |\\*[a-c]|<<: |\\[|\\]|\\{|\\}|, |'|\"|[a-z0-9]{0,4}|#|---|: ){1,6}",
                0..30,
            )
        ) {
            let _ = load_documents(&lines.join("\n"));
        }
    }
}
