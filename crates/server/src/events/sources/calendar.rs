//! Calendar entries: fire at each scheduled time (cron or interval) except on excluded days;
//! with `persistence.catchup`, the times missed while no replica ran fire after a restart.
//! Each firing's id is its time and entry, so two replicas (or a catch-up) fire it once.

use std::time::Duration;

use serde_json::json;
use spec::event_source::Calendar;

use super::{SourceCtx, SourceError};
use crate::driver::now_ms;

pub(super) async fn run(ctx: &SourceCtx, cal: &Calendar) -> Result<(), SourceError> {
    // Checked once: a schedule or timezone croner rejects cannot fire until it is changed.
    crate::cron::next_fire(&cal.schedule, cal.timezone.as_deref(), now_ms())
        .map_err(SourceError::Config)?;
    // Where to continue from: this entry's last stored firing (with catch-up), else now.
    let mut after = now_ms();
    if let Some(max_catch_up) = cal.catch_up_ms {
        let last = ctx
            .events
            .controller()
            .store()
            .last_event_id(&ctx.namespace, &ctx.event_source, &ctx.event_name)
            .await
            .map_err(|e| SourceError::Store(store::chain(&e)))?;
        after = catch_up_from(
            last.as_deref().and_then(calendar_firing),
            after,
            max_catch_up,
        );
    }
    loop {
        let next = next_firing(cal, after)?;
        let now = now_ms();
        if next > now {
            let wait = tokio::time::sleep(Duration::from_millis((next - now) as u64));
            if ctx.until_stopped(wait).await.is_none() {
                return Ok(());
            }
        }
        after = next;
        let data = json!({"eventTime": expr::time::rfc3339(next), "metadata": cal.metadata});
        let id = format!("{next}/{}", ctx.event_name);
        ctx.ingest(vec![ctx.event("calendar", id, data)]).await?;
    }
}

/// The first firing after `after` (ms) that is not on an excluded day.
fn next_firing(cal: &Calendar, mut after: i64) -> Result<i64, SourceError> {
    // A schedule firing only on excluded days would loop forever: ten years is the horizon.
    let horizon = after + 10 * 366 * 24 * 3600 * 1000;
    loop {
        let next = crate::cron::next_fire(&cal.schedule, cal.timezone.as_deref(), after)
            .map_err(SourceError::Config)?;
        if !cal.excludes(&expr::time::rfc3339(next)) {
            return Ok(next);
        }
        if next > horizon {
            return Err(SourceError::Config(format!(
                "schedule {:?} fires only on excluded dates",
                cal.schedule
            )));
        }
        after = next;
    }
}

/// The scheduled time (ms) a calendar event id names: `<ms>/<entry>`, or `<ms>` as stored
/// before entries were part of it.
fn calendar_firing(id: &str) -> Option<i64> {
    id.split('/').next()?.parse().ok()
}

/// Where a catch-up starts: after the last firing, but no earlier than `max_catch_up` ago
/// (Argo's `maxDuration`); from now when nothing fired before.
fn catch_up_from(last_firing: Option<i64>, now: i64, max_catch_up: i64) -> i64 {
    match last_firing {
        Some(last) => last.max(now - max_catch_up),
        None => now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_catch_up_starts_after_the_last_firing_within_max_duration() {
        let hour = 3_600_000;
        let now = 100 * hour;
        let table = [
            (None, now),
            (Some(now - hour), now - hour),
            (Some(now - 30 * hour), now - 24 * hour),
            (Some(now), now),
        ];
        for (last, want) in table {
            assert_eq!(catch_up_from(last, now, 24 * hour), want, "{last:?}");
        }
        assert_eq!(
            calendar_firing("1700000000000/nightly"),
            Some(1_700_000_000_000)
        );
        assert_eq!(calendar_firing("1700000000000"), Some(1_700_000_000_000));
        assert_eq!(calendar_firing("nightly"), None);
    }

    #[test]
    fn excluded_days_are_skipped_and_a_schedule_that_only_hits_them_is_a_config_error() {
        let day = 24 * 3_600_000;
        // 2026-12-23T00:00:00Z
        let start = 1_797_984_000_000;
        assert_eq!(expr::time::rfc3339(start), "2026-12-23T00:00:00Z");
        let cal = |schedule: &str, excluded: &[&str]| Calendar {
            schedule: schedule.into(),
            timezone: None,
            exclusion_dates: excluded.iter().map(|d| d.to_string()).collect(),
            catch_up_ms: None,
            metadata: None,
        };
        let nightly = cal("0 3 * * *", &["2026-12-24", "2026-12-25"]);
        let fired = next_firing(&nightly, start).expect("fires");
        assert_eq!(expr::time::rfc3339(fired), "2026-12-23T03:00:00Z");
        let fired = next_firing(&nightly, fired).expect("fires");
        assert_eq!(
            expr::time::rfc3339(fired),
            "2026-12-26T03:00:00Z",
            "24th and 25th are excluded"
        );
        let every = cal("@every 12h", &["2026-12-23"]);
        assert_eq!(next_firing(&every, start).expect("fires"), start + day);
        let christmas_only = cal("0 0 25 12 *", &["2026-12-25", "2027-12-25"]);
        let next = next_firing(&christmas_only, start).expect("2028");
        assert!(expr::time::rfc3339(next).starts_with("2028-12-25"));
        let bad = cal("61 * * * *", &[]);
        assert!(matches!(
            next_firing(&bad, start),
            Err(SourceError::Config(_))
        ));
    }
}
