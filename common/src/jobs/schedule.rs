//! Report schedules: a tenant's standing order for a report at the times
//! a cron expression names, each covering the time since the one before.
//!
//! The expression has the five fields of crontab (minute, hour, day of the
//! month, month, day of the week), in UTC, or a nickname such as
//! `@monthly`: `0 0 1 * *` is the 1st of every month at 00:00 UTC, and its
//! report on 1 December covers November. Every occurrence is one job whose
//! id is made from the schedule's name and the occurrence's time, so that
//! however many query API instances see it due, it is queued once.

use chrono::{DateTime, TimeZone, Utc};
use croner::parser::{CronParser, Seconds};
use croner::Cron;
use serde::{Deserialize, Serialize};

/// A schedule as stored: one row per change, the newest standing; a
/// deleted schedule is a row with `deleted` = 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct Schedule {
    pub tenant_id: String,
    pub name: String,
    pub kind: String,
    pub cron: String,
    /// The kind's parameters, less the range each occurrence sets (JSON).
    pub params: String,
    pub created_ms: i64,
    /// Occurrences from this time on are the schedule's: one changed
    /// leaves the occurrences before it alone.
    pub updated_ms: i64,
    pub deleted: u8,
    pub version: u64,
}

/// When a schedule's occurrences fall.
#[derive(Debug, Clone)]
pub struct Cadence(Cron);

/// One occurrence: the job is queued at `to_ms` and covers `[from_ms, to_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occurrence {
    pub from_ms: i64,
    pub to_ms: i64,
}

/// How many occurrences ahead `Cadence::parse` checks the spacing of.
const SPACING_CHECKED: usize = 400;

impl Cadence {
    /// `expr` if it is a five-field expression (or a nickname) whose
    /// occurrences are never closer than `min_interval_ms` (0: not checked,
    /// for expressions checked when they were stored).
    pub fn parse(expr: &str, min_interval_ms: i64) -> Result<Self, String> {
        if expr.len() > 100 || expr.contains('\0') {
            return Err("must be a crontab expression of at most 100 characters".into());
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| format!("not a five-field crontab expression in UTC: {e}"))?;
        let cadence = Cadence(cron);
        let mut previous = cadence
            .next_after(crate::clock::now_ms())
            .ok_or("never occurs")?;
        let checked = if min_interval_ms > 0 {
            SPACING_CHECKED
        } else {
            0
        };
        for _ in 0..checked {
            let Some(next) = cadence.next_after(previous) else {
                break;
            };
            if next - previous < min_interval_ms {
                return Err(format!(
                    "occurs every {} s at times; schedules may occur at most every {} s",
                    (next - previous) / 1000,
                    min_interval_ms / 1000
                ));
            }
            previous = next;
        }
        Ok(cadence)
    }

    /// The first occurrence after `ms`.
    pub fn next_after(&self, ms: i64) -> Option<i64> {
        let at = utc(ms)?;
        let next = self.0.find_next_occurrence(&at, false).ok()?;
        Some(next.timestamp_millis())
    }

    /// The last occurrence before `ms`, or at it if `inclusive`.
    fn previous(&self, ms: i64, inclusive: bool) -> Option<i64> {
        let at = utc(ms)?;
        let previous = self.0.find_previous_occurrence(&at, inclusive).ok()?;
        Some(previous.timestamp_millis())
    }

    /// The occurrences after `since_ms` up to `now_ms`, the latest `max`
    /// of them, oldest first: those a scheduler that was down has missed.
    pub fn due(&self, since_ms: i64, now_ms: i64, max: usize) -> Vec<Occurrence> {
        let mut due = Vec::new();
        let mut to = self.previous(now_ms, true);
        while let Some(to_ms) = to.filter(|t| *t > since_ms && due.len() < max) {
            let from = self.previous(to_ms, false);
            let Some(from_ms) = from else {
                break;
            };
            due.push(Occurrence { from_ms, to_ms });
            to = from;
        }
        due.reverse();
        due
    }
}

fn utc(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s)
            .expect("a time")
            .timestamp_millis()
    }

    const HOUR_MS: i64 = 3_600_000;

    #[test]
    fn a_monthly_report_covers_the_month_before() {
        let monthly = Cadence::parse("0 0 1 * *", HOUR_MS).expect("monthly");
        let created = ms("2026-10-15T08:00:00Z");
        // On 3 December: November's is due; October's began before the
        // schedule existed and is not.
        let due = monthly.due(created, ms("2026-12-03T10:00:00Z"), 3);
        assert_eq!(
            due,
            [
                Occurrence {
                    from_ms: ms("2026-10-01T00:00:00Z"),
                    to_ms: ms("2026-11-01T00:00:00Z"),
                },
                Occurrence {
                    from_ms: ms("2026-11-01T00:00:00Z"),
                    to_ms: ms("2026-12-01T00:00:00Z"),
                },
            ]
        );
        assert_eq!(
            monthly.next_after(ms("2026-12-03T10:00:00Z")),
            Some(ms("2027-01-01T00:00:00Z"))
        );
        // At the very millisecond of an occurrence, it is due.
        let at = ms("2027-01-01T00:00:00Z");
        assert_eq!(monthly.due(at - 1, at, 3).last().map(|o| o.to_ms), Some(at));
        assert!(monthly.due(at, at, 3).is_empty());
        // Nicknames mean the same.
        let nick = Cadence::parse("@monthly", HOUR_MS).expect("nickname");
        assert_eq!(nick.due(created, ms("2026-12-03T10:00:00Z"), 3), due);
    }

    #[test]
    fn a_scheduler_down_for_long_catches_up_with_the_latest_only() {
        let hourly = Cadence::parse("0 * * * *", HOUR_MS).expect("hourly");
        let due = hourly.due(0, ms("2026-12-03T10:30:00Z"), 3);
        let ends: Vec<i64> = due.iter().map(|o| o.to_ms).collect();
        assert_eq!(
            ends,
            [
                ms("2026-12-03T08:00:00Z"),
                ms("2026-12-03T09:00:00Z"),
                ms("2026-12-03T10:00:00Z")
            ]
        );
        assert!(due.iter().all(|o| o.to_ms - o.from_ms == HOUR_MS));
    }

    #[test]
    fn bad_expressions_are_refused_with_a_reason() {
        for (expr, why) in [
            ("", "crontab"),
            ("0 0 1 * * *", "crontab"),
            ("61 * * * *", "crontab"),
            ("0 0 31 2 *", "never"),
            ("* * * * *", "at most every 3600 s"),
            ("0,30 * * * *", "at most every 3600 s"),
            ("0 0 1 * *\0", "crontab"),
        ] {
            let refused = Cadence::parse(expr, HOUR_MS).expect_err(expr);
            assert!(refused.contains(why), "{expr:?}: {refused}");
        }
        assert!(Cadence::parse("* * * * *", 60_000).is_ok());
    }
}
