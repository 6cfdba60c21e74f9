//! Showing a running workflow: a live tree on a terminal, one line per change otherwise, and
//! the final summary.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::Instant;

use engine::{Node, NodeType, Phase, Workflow};

fn icon(p: Phase) -> &'static str {
    match p {
        Phase::Pending => "◷",
        Phase::Running => "●",
        Phase::Succeeded => "✔",
        Phase::Failed => "✖",
        Phase::Error => "⚠",
        Phase::Skipped | Phase::Omitted => "○",
    }
}

fn duration(n: &Node, now: i64) -> String {
    let end = n.finished_at.unwrap_or(now);
    format_duration(end - n.started_at)
}

pub fn format_duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    if s >= 3600 {
        format!("{}h{}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{}.{}s", s, (ms.max(0) % 1000) / 100)
    }
}

/// The children to show under a node: step groups are flattened, a DAG shows its tasks.
fn display_children<'a>(
    wf: &'a Workflow,
    n: &'a Node,
    by_boundary: &HashMap<&str, Vec<&'a Node>>,
) -> Vec<&'a Node> {
    let nodes = wf.nodes();
    let get = |id: &String| nodes.get(id);
    match n.node_type {
        NodeType::Steps => {
            // Step groups hang off the previous group's steps; list them by index instead.
            let mut groups: Vec<&Node> = by_boundary
                .get(n.id.as_str())
                .into_iter()
                .flatten()
                .filter(|c| c.node_type == NodeType::StepGroup)
                .copied()
                .collect();
            let index = |g: &Node| {
                g.display_name
                    .trim_matches(['[', ']'])
                    .parse::<usize>()
                    .unwrap_or(0)
            };
            groups.sort_by_key(|g| index(g));
            groups
                .into_iter()
                .flat_map(|sg| {
                    sg.children
                        .iter()
                        .filter_map(get)
                        .filter(|c| c.node_type != NodeType::StepGroup)
                })
                .collect()
        }
        NodeType::DAG => {
            let grouped: HashSet<&str> = by_boundary
                .get(n.id.as_str())
                .into_iter()
                .flatten()
                .filter(|c| matches!(c.node_type, NodeType::TaskGroup | NodeType::Retry))
                .flat_map(|g| g.children.iter().map(String::as_str))
                .collect();
            by_boundary
                .get(n.id.as_str())
                .into_iter()
                .flatten()
                .filter(|c| !grouped.contains(c.id.as_str()) && !c.name.ends_with(".onExit"))
                .copied()
                .collect()
        }
        NodeType::Retry | NodeType::TaskGroup => n.children.iter().filter_map(get).collect(),
        _ => n
            .children
            .iter()
            .filter_map(get)
            .filter(|c| c.name.ends_with(".onExit"))
            .collect(),
    }
}

/// The tree as lines: `icon name  template  duration  message`.
pub fn tree_lines(wf: &Workflow, now: i64) -> Vec<String> {
    let mut by_boundary: HashMap<&str, Vec<&Node>> = HashMap::new();
    for n in wf.nodes().iter() {
        if let Some(b) = &n.boundary_id {
            by_boundary.entry(b.as_str()).or_default().push(n);
        }
    }
    for v in by_boundary.values_mut() {
        v.sort_by(|a, b| (a.started_at, &a.name).cmp(&(b.started_at, &b.name)));
    }
    let name = &wf.identity().name;
    let mut roots: Vec<&Node> = wf.nodes().get(name).into_iter().collect();
    roots.extend(
        wf.nodes()
            .iter()
            .filter(|n| n.boundary_id.is_none() && n.id != *name),
    );
    let mut lines = Vec::new();
    let mut seen = HashSet::new();
    let mut stack: Vec<(&Node, usize)> = roots.into_iter().rev().map(|n| (n, 0)).collect();
    while let Some((n, depth)) = stack.pop() {
        if !seen.insert(n.id.as_str()) {
            continue;
        }
        let template = n.template_name.as_deref().unwrap_or("");
        let mut line = format!("{}{} {}", "  ".repeat(depth), icon(n.phase), n.display_name);
        let pad = 48usize.saturating_sub(line.chars().count());
        line.push_str(&" ".repeat(pad));
        line.push_str(&format!(" {template:<20} {:>7}", duration(n, now)));
        if !n.message.is_empty() {
            line.push_str("  ");
            line.push_str(&n.message);
        }
        lines.push(line);
        for c in display_children(wf, n, &by_boundary).into_iter().rev() {
            stack.push((c, depth + 1));
        }
    }
    lines
}

/// Progress display on stderr.
pub struct Progress {
    silent: bool,
    tty: bool,
    drawn: usize,
    last_draw: Option<Instant>,
    phases: HashMap<String, Phase>,
}

impl Progress {
    pub fn new(tty: bool) -> Progress {
        Progress {
            silent: false,
            tty,
            drawn: 0,
            last_draw: None,
            phases: HashMap::new(),
        }
    }

    /// Shows nothing (benchmarks).
    pub fn silent() -> Progress {
        Progress {
            silent: true,
            ..Progress::new(false)
        }
    }

    pub fn update(&mut self, wf: &Workflow, now: i64, force: bool) {
        if self.silent {
            return;
        }
        if self.tty {
            let due = self
                .last_draw
                .is_none_or(|t| t.elapsed().as_millis() >= 100);
            if !(due || force) {
                return;
            }
            self.last_draw = Some(Instant::now());
            let mut err = std::io::stderr().lock();
            let mut out = String::new();
            if self.drawn > 0 {
                out.push_str(&format!("\x1b[{}A", self.drawn));
            }
            let height = terminal_height().saturating_sub(2).max(5);
            let mut lines = tree_lines(wf, now);
            let total = lines.len();
            if total > height {
                lines.truncate(height - 1);
                lines.push(format!("… {} more nodes", total - (height - 1)));
            }
            for l in &lines {
                out.push_str("\x1b[2K");
                out.push_str(l);
                out.push('\n');
            }
            for _ in lines.len()..self.drawn {
                out.push_str("\x1b[2K\n");
            }
            let drawn = lines.len().max(self.drawn);
            // A failed write to the terminal only loses the progress display.
            let _ = err.write_all(out.as_bytes());
            self.drawn = drawn;
        } else {
            let start = wf.started_at().unwrap_or(now);
            let mut changed: Vec<&Node> = wf
                .nodes()
                .iter()
                .filter(|n| !matches!(n.node_type, NodeType::StepGroup | NodeType::TaskGroup))
                .filter(|n| self.phases.get(&n.id) != Some(&n.phase))
                .collect();
            // In time order; at the same instant, ends before starts (a step ends, then the
            // next one starts), a parent's end after its children's and its start before
            // theirs.
            let key = |n: &Node| {
                let depth = n.name.matches(['.', '[']).count() as i64;
                let order = if n.phase.fulfilled() {
                    (0, -depth)
                } else {
                    (1, depth)
                };
                (n.finished_at.unwrap_or(n.started_at), order)
            };
            changed.sort_by(|a, b| (key(a), &a.name).cmp(&(key(b), &b.name)));
            let mut err = std::io::stderr().lock();
            for n in changed {
                self.phases.insert(n.id.clone(), n.phase);
                let msg = if n.message.is_empty() {
                    String::new()
                } else {
                    format!(": {}", n.message)
                };
                let _ = writeln!(
                    err,
                    "{:>8} {:<9} {}{}",
                    format_duration(now - start),
                    n.phase.as_str(),
                    n.name,
                    msg
                );
            }
        }
    }
}

fn terminal_height() -> usize {
    // SAFETY: TIOCGWINSZ writes a winsize struct we own.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(2, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_row > 0 {
            return ws.ws_row as usize;
        }
    }
    40
}

/// The final summary, like `argo get`.
pub fn summary(wf: &Workflow, now: i64) -> String {
    let id = wf.identity();
    let mut s = String::new();
    s.push_str(&format!("Name:        {}\n", id.name));
    s.push_str(&format!("Namespace:   {}\n", id.namespace));
    s.push_str(&format!("Status:      {}\n", wf.phase().as_str()));
    if !wf.message().is_empty() {
        s.push_str(&format!("Message:     {}\n", wf.message()));
    }
    if let Some(start) = wf.started_at() {
        s.push_str(&format!("Started:     {}\n", expr::time::rfc3339(start)));
        s.push_str(&format!(
            "Duration:    {}\n",
            format_duration(wf.finished_at().unwrap_or(now) - start)
        ));
    }
    s.push_str(&format!("Progress:    {}\n", wf.progress_string()));
    let outputs = wf.global_outputs();
    if !outputs.is_empty() {
        s.push_str("Outputs:\n");
        for (k, v) in outputs {
            s.push_str(&format!("  {k}: {v}\n"));
        }
    }
    s
}
