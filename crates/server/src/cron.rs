//! CronWorkflows: when schedules fire (pure), and the scheduler loop that submits them.
//!
//! Schedules are standard 5-field cron (`*/5 * * * *`, `MON-FRI`, `@hourly`) evaluated in the
//! CronWorkflow's `timezone` (UTC by default), plus robfig's `@every <duration>` which Argo
//! accepts. A firing is claimed in the database (compare-and-set of `last_scheduled_at`), so
//! with several replicas each scheduled time fires once. Missed times while no controller ran
//! fire once, not once per missed time. `concurrencyPolicy`: `Allow` (default) runs
//! alongside, `Forbid` skips while a previous run is unfinished, `Replace` terminates it.

use std::str::FromStr;

use chrono::{TimeZone, Utc};
use spec::CronWorkflow;

use crate::controller::{ControlError, Controller};
use crate::driver::now_ms;
use crate::submit::{Origin, SubmitOutcome, SubmitRequest};

/// The label Argo puts on workflows a CronWorkflow created.
pub const CRON_LABEL: &str = "workflows.argoproj.io/cron-workflow";

/// The first time strictly after `after_ms` that `schedule` fires, in unix ms.
pub fn next_fire(schedule: &str, timezone: Option<&str>, after_ms: i64) -> Result<i64, String> {
    let schedule = schedule.trim();
    if let Some(every) = schedule.strip_prefix("@every ") {
        let ms = expr::time::parse_duration_millis(every)
            .filter(|ms| *ms > 0)
            .ok_or_else(|| format!("@every {every:?} is not a duration like 30s or 1h"))?;
        return Ok(after_ms + ms);
    }
    if schedule.split_whitespace().count() != 5 && !schedule.starts_with('@') {
        return Err(format!(
            "schedule {schedule:?} must have 5 fields (minute hour day-of-month month day-of-week)"
        ));
    }
    let cron =
        croner::Cron::from_str(schedule).map_err(|e| format!("schedule {schedule:?}: {e}"))?;
    let tz: chrono_tz::Tz = match timezone.filter(|t| !t.is_empty()) {
        Some(t) => t
            .parse()
            .map_err(|_| format!("unknown timezone {t:?}; use an IANA name like Europe/Berlin"))?,
        None => chrono_tz::UTC,
    };
    let start = tz
        .timestamp_millis_opt(after_ms)
        .single()
        .ok_or("time out of range")?;
    let next = cron
        .find_next_occurrence(&start, false)
        .map_err(|e| format!("schedule {schedule:?}: {e}"))?;
    Ok(next.with_timezone(&Utc).timestamp_millis())
}

/// The schedules of a CronWorkflow (`schedule` and `schedules`).
pub fn schedules(c: &CronWorkflow) -> Vec<String> {
    let mut out: Vec<String> = c.spec.schedules.clone();
    if let Some(s) = &c.spec.schedule {
        out.insert(0, s.clone());
    }
    out
}

/// Checks every schedule of a CronWorkflow; the first error explains what is wrong.
pub fn validate(c: &CronWorkflow) -> Result<(), String> {
    let all = schedules(c);
    if all.is_empty() {
        return Err("spec.schedule (or spec.schedules) is required".into());
    }
    for s in &all {
        next_fire(s, c.spec.timezone.as_deref(), 0)?;
    }
    match spec::ConcurrencyPolicy::parse(c.spec.concurrency_policy.as_deref()) {
        Some(_) => Ok(()),
        None => Err(format!(
            "concurrencyPolicy {:?} is not Allow, Forbid or Replace",
            c.spec.concurrency_policy.as_deref().unwrap_or("")
        )),
    }
}

impl Controller {
    /// Fires every CronWorkflow that is due. Returns the workflows submitted.
    pub async fn run_due_crons(&self) -> Result<Vec<String>, ControlError> {
        let now = now_ms();
        let mut submitted = Vec::new();
        for rec in self.store().list_crons(None).await? {
            if rec.suspended {
                continue;
            }
            let Ok(cron) = serde_json::from_value::<CronWorkflow>(rec.body.clone()) else {
                continue;
            };
            let since = rec.last_scheduled_at.unwrap_or(rec.created_at);
            let due = schedules(&cron)
                .iter()
                .filter_map(|s| next_fire(s, cron.spec.timezone.as_deref(), since).ok())
                .filter(|t| *t <= now)
                .max();
            let Some(at) = due else { continue };
            let running = self
                .unfinished_with_label(&rec.namespace, CRON_LABEL, &rec.name)
                .await?;
            let policy = spec::ConcurrencyPolicy::parse(cron.spec.concurrency_policy.as_deref())
                .unwrap_or_default();
            match policy {
                spec::ConcurrencyPolicy::Forbid if !running.is_empty() => {
                    // Skipped, not postponed: mark the time as handled.
                    self.store()
                        .claim_cron_firing(&rec.namespace, &rec.name, at)
                        .await?;
                    continue;
                }
                spec::ConcurrencyPolicy::Replace => {
                    for name in running {
                        let stop = engine::Input::Stop {
                            now,
                            terminate: true,
                            message: Some(
                                "Stopped with strategy 'Terminate' (replaced by a newer cron run)"
                                    .into(),
                            ),
                        };
                        // It may have finished meanwhile; then there is nothing to replace.
                        let _ = self
                            .send(
                                &rec.namespace,
                                &name,
                                stop,
                                "system:cron",
                                "cron",
                                "workflow.terminate",
                            )
                            .await;
                    }
                }
                _ => {}
            }
            // The firing is claimed in the submit transaction: one workflow per scheduled
            // time across replicas and crashes.
            let req = SubmitRequest::new(
                &rec.namespace,
                Origin::Cron {
                    cron: Box::new(cron),
                    scheduled_at: Some(at),
                },
                "system:cron",
                "cron",
            );
            match self.submit(req).await {
                Ok(SubmitOutcome::Created { name, .. }) => submitted.push(name),
                Ok(_) => {}
                Err(e) => tracing::error!(
                    namespace = %rec.namespace, cron = %rec.name, error = %e,
                    "submitting a scheduled run failed"
                ),
            }
        }
        Ok(submitted)
    }

    /// Fires due CronWorkflows every second, forever.
    pub async fn cron_loop(self) {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            if let Err(e) = self.run_due_crons().await {
                tracing::warn!(error = %e, "cron scheduler");
            }
        }
    }

    async fn unfinished_with_label(
        &self,
        namespace: &str,
        key: &str,
        value: &str,
    ) -> Result<Vec<String>, ControlError> {
        let lq = store::ListQuery {
            namespace: Some(namespace.to_string()),
            labels: vec![(key.to_string(), value.to_string())],
            limit: 1000,
            ..Default::default()
        };
        Ok(self
            .store()
            .list_workflows_page(&lq)
            .await?
            .into_iter()
            .filter(|w| w.finished_at.is_none())
            .map(|w| w.name)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        expr::time::parse_rfc3339(s).expect("time") * 1000
    }

    #[test]
    fn schedules_table() {
        type Case<'a> = (&'a str, Option<&'a str>, &'a str, Result<&'a str, &'a str>);
        let cases: &[Case] = &[
            (
                "*/5 * * * *",
                None,
                "2026-11-28T14:41:22Z",
                Ok("2026-11-28T14:45:00Z"),
            ),
            (
                "0 9 * * MON-FRI",
                None,
                "2026-11-28T14:41:22Z",
                Ok("2026-11-30T09:00:00Z"),
            ),
            (
                "0 9 * * *",
                Some("Europe/Berlin"),
                "2026-11-28T14:41:22Z",
                Ok("2026-11-29T08:00:00Z"),
            ),
            (
                "@hourly",
                None,
                "2026-11-28T14:41:22Z",
                Ok("2026-11-28T15:00:00Z"),
            ),
            (
                "@every 90s",
                None,
                "2026-11-28T14:41:22Z",
                Ok("2026-11-28T14:42:52Z"),
            ),
            (
                "* * * *",
                None,
                "2026-11-28T14:41:22Z",
                Err("must have 5 fields"),
            ),
            (
                "0 9 * * *",
                Some("Mars/Olympus"),
                "2026-11-28T14:41:22Z",
                Err("unknown timezone"),
            ),
            (
                "@every soon",
                None,
                "2026-11-28T14:41:22Z",
                Err("not a duration"),
            ),
        ];
        for (schedule, tz, after, want) in cases {
            let got = next_fire(schedule, *tz, at(after)).map(expr::time::rfc3339);
            match want {
                Ok(w) => assert_eq!(got.as_deref(), Ok(*w), "{schedule}"),
                Err(m) => assert!(
                    got.as_ref().is_err_and(|e| e.contains(m)),
                    "{schedule}: {got:?}"
                ),
            }
        }
    }
}
