//! `retryStrategy`: a Retry node whose children are the attempts (Argo's `processNodeRetries`).

use std::sync::Arc;

use expr::{Scope, Unresolved};
use spec::{RetryStrategy, Template};

use super::walk::*;
use crate::Workflow;
use crate::node::{NodeType, Phase, TemplateScope, node_id};
use crate::scope::{ScopeView, Siblings};

impl Workflow {
    pub(crate) fn execute_with_retries(
        &mut self,
        inv: Invocation,
        tmpl: Arc<Template>,
        tscope: TemplateScope,
        inputs: Vec<(String, String)>,
        rs: RetryStrategy,
    ) -> Outcome {
        let retry_id = node_id(&self.id.name, &inv.node_name);
        if self.nodes.get(&retry_id).is_none() {
            self.create_node(
                &inv.node_name,
                &inv.display_name,
                NodeType::Retry,
                Some(&tmpl),
                &tscope,
                &inv.boundary,
                Phase::Running,
                "",
            );
            if let Some(n) = self.nodes.get_mut(&retry_id) {
                n.inputs = inputs.clone();
            }
        }
        for _ in 0..2 {
            match self.process_retries(&retry_id, &rs, &inputs) {
                RetryDecision::Done | RetryDecision::Wait => return Outcome::Node(retry_id),
                RetryDecision::Continue => {}
            }
            let children = self
                .nodes
                .get(&retry_id)
                .map(|n| n.children.clone())
                .unwrap_or_default();
            let last = children
                .last()
                .and_then(|c| self.nodes.get(c))
                .map(|n| (n.name.clone(), n.phase));
            let (attempt_name, attempt) = match last {
                Some((name, phase)) if !phase.fulfilled() => (name, children.len() - 1),
                _ => (
                    format!("{}({})", inv.node_name, children.len()),
                    children.len(),
                ),
            };
            let display = format!("{}({attempt})", inv.display_name);
            let out = self.execute_body(
                &attempt_name,
                &display,
                &tmpl,
                &tscope,
                inputs.clone(),
                &inv.boundary,
                Some(attempt),
            );
            let Outcome::Node(child) = out else {
                return Outcome::Node(retry_id);
            };
            if attempt == children.len() {
                self.add_child(&retry_id, &child);
            }
            if !self.nodes.get(&child).is_some_and(|n| n.phase.fulfilled()) {
                return Outcome::Node(retry_id);
            }
            // The attempt ended at once: decide about the retry node in this walk too.
        }
        Outcome::Node(retry_id)
    }

    /// Argo's `processNodeRetries`.
    pub(crate) fn process_retries(
        &mut self,
        retry_id: &str,
        rs: &RetryStrategy,
        inputs: &[(String, String)],
    ) -> RetryDecision {
        let Some(node) = self.nodes.get(retry_id) else {
            return RetryDecision::Done;
        };
        if node.phase.fulfilled() {
            return RetryDecision::Done;
        }
        let Some(last_id) = node.children.last().cloned() else {
            return RetryDecision::Continue;
        };
        let n_children = node.children.len();
        let first_started = node
            .children
            .first()
            .and_then(|c| self.nodes.get(c))
            .map(|n| n.started_at)
            .unwrap_or(self.now);
        let Some(last) = self.nodes.get(&last_id).cloned() else {
            return RetryDecision::Continue;
        };
        if !last.phase.fulfilled() {
            return RetryDecision::Continue;
        }
        if !last.phase.failed_or_error() {
            if let Some(n) = self.nodes.get_mut(retry_id) {
                n.outputs = last.outputs.clone();
            }
            self.set_phase(retry_id, Phase::Succeeded, Some(String::new()));
            return RetryDecision::Done;
        }
        if let Some(s) = &self.shutdown
            && !self.in_exit_handler
        {
            let msg = s.message();
            self.set_phase(retry_id, last.phase, Some(msg));
            return RetryDecision::Done;
        }
        let siblings = Siblings::None;
        let render = |wf: &Workflow, s: &str| -> String {
            let view = ScopeView {
                wf,
                siblings: &siblings,
                inputs,
                item: None,
                extra: Vec::new(),
            };
            expr::render(s, &view, Unresolved::Keep).unwrap_or_else(|_| s.to_string())
        };
        if let Some(b) = &rs.backoff {
            let mut max_deadline = None;
            if let Some(md) = &b.max_duration {
                let md = expr::time::parse_duration_millis(&render(self, &md.0)).unwrap_or(0);
                let deadline = first_started.saturating_add(md);
                if self.now >= deadline {
                    self.set_phase(
                        retry_id,
                        last.phase,
                        Some("Max duration limit exceeded".into()),
                    );
                    return RetryDecision::Done;
                }
                max_deadline = Some(deadline);
            }
            let base = b
                .duration
                .as_ref()
                .and_then(|d| expr::time::parse_duration_millis(&render(self, &d.0)))
                .unwrap_or(0);
            let factor = b
                .factor
                .as_ref()
                .and_then(|f| render(self, &f.0).parse::<f64>().ok())
                .unwrap_or(0.0);
            let mut wait = if factor > 0.0 {
                // `as` saturates; the cap below and MAX_DURATION_MS keep it meaningful.
                (base as f64 * factor.powi(i32::try_from(n_children).unwrap_or(i32::MAX) - 1))
                    .min(expr::time::MAX_DURATION_MS as f64) as i64
            } else {
                base
            };
            if let Some(cap) = b
                .cap
                .as_ref()
                .and_then(|c| expr::time::parse_duration_millis(&c.0))
            {
                wait = wait.min(cap);
            }
            let wait_until = last.finished_at.unwrap_or(self.now).saturating_add(wait);
            if let Some(md) = max_deadline
                && wait_until > md
            {
                self.set_phase(
                    retry_id,
                    last.phase,
                    Some("Backoff would exceed max duration limit".into()),
                );
                return RetryDecision::Done;
            }
            let limit = rs
                .limit
                .as_ref()
                .and_then(|l| render(self, &l.0).parse::<i64>().ok());
            if self.now < wait_until && limit.is_none_or(|l| n_children as i64 <= l) {
                if let Some(n) = self.nodes.get_mut(retry_id) {
                    n.message = format!("Backoff for {}", humanize_millis(wait));
                    self.dirty.insert(retry_id.to_string());
                    n.wake_at = Some(wait_until);
                }
                self.wake(wait_until);
                return RetryDecision::Wait;
            }
            if let Some(n) = self.nodes.get_mut(retry_id) {
                n.message.clear();
                n.wake_at = None;
            }
        }
        // Lint refuses unknown policies; Argo's default stands in for one that slipped by.
        let (on_failed, on_error) = rs
            .retry_policy
            .as_deref()
            .and_then(spec::RetryPolicy::parse)
            .unwrap_or(spec::RetryPolicy::OnFailure)
            .retries();
        if (last.phase == Phase::Failed && !on_failed) || (last.phase == Phase::Error && !on_error)
        {
            self.set_phase(retry_id, last.phase, Some(last.message.clone()));
            return RetryDecision::Done;
        }
        if let Some(src) = &rs.expression {
            let duration = (last.finished_at.unwrap_or(self.now) - last.started_at) / 1000;
            let extra = vec![
                (
                    "lastRetry.exitCode".to_string(),
                    last.outputs
                        .as_ref()
                        .and_then(|o| o.exit_code.clone())
                        .unwrap_or_else(|| "-1".into()),
                ),
                (
                    "lastRetry.status".to_string(),
                    last.phase.as_str().to_string(),
                ),
                ("lastRetry.duration".to_string(), duration.to_string()),
                ("lastRetry.message".to_string(), last.message.clone()),
            ];
            let view = ScopeView {
                wf: self,
                siblings: &siblings,
                inputs,
                item: None,
                extra,
            };
            let rendered =
                expr::render(src, &view, Unresolved::Keep).unwrap_or_else(|_| src.clone());
            let env = view.env();
            match expr::eval_bool(&rendered, &env) {
                Ok(true) => {}
                Ok(false) => {
                    self.set_phase(
                        retry_id,
                        last.phase,
                        Some("retryStrategy.expression evaluated to false".into()),
                    );
                    return RetryDecision::Done;
                }
                Err(e) => {
                    self.set_phase(
                        retry_id,
                        Phase::Error,
                        Some(format!("retryStrategy.expression: {e}")),
                    );
                    return RetryDecision::Done;
                }
            }
        }
        let limit = match &rs.limit {
            None => None,
            Some(l) => match render(self, &l.0).parse::<i64>() {
                Ok(l) => Some(l),
                Err(_) => {
                    self.set_phase(
                        retry_id,
                        Phase::Error,
                        Some(format!("retryStrategy.limit {:?} is not an integer", l.0)),
                    );
                    return RetryDecision::Done;
                }
            },
        };
        if let Some(l) = limit
            && l < n_children as i64
        {
            self.set_phase(retry_id, last.phase, Some("No more retries left".into()));
            return RetryDecision::Done;
        }
        RetryDecision::Continue
    }
}

#[derive(Debug)]
pub(crate) enum RetryDecision {
    Done,
    Wait,
    Continue,
}

pub(crate) fn humanize_millis(ms: i64) -> String {
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{}ms", ms)
    }
}
