//! Daily rollups, retention and the uptime query.
//!
//! Raw rows (events, component minutes, probe minutes) live `raw_days`; before they go,
//! their days are rolled up into `component_days` / `probe_days`, which live `daily_days`.
//! Days are also rolled up as their minutes are written, so the uptime query only ever
//! reads the small daily table: at most one row per component and day.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::{Row, SqliteConnection, SqlitePool};

use super::HistoryError;
use super::state::{ComponentState, uptime_pct};
use super::types::{DAY_MINUTES, Day, DayStat, Timestamp};

/// Recomputes one component's day from its minutes.
pub(super) async fn rollup_component_day(
    conn: &mut SqliteConnection,
    component: &str,
    day: i64,
) -> Result<(), sqlx::Error> {
    // Static text, no format!: sqlx takes constant SQL, and the statement is cached.
    sqlx::query(
        "INSERT INTO component_days \
           (component, day, minutes, operational, maintenance, degraded, partial, major, worst) \
         SELECT component, $2, COUNT(*), \
           SUM(CASE WHEN state = 0 THEN 1 ELSE 0 END), \
           SUM(CASE WHEN state = 1 THEN 1 ELSE 0 END), \
           SUM(CASE WHEN state = 2 THEN 1 ELSE 0 END), \
           SUM(CASE WHEN state = 3 THEN 1 ELSE 0 END), \
           SUM(CASE WHEN state = 4 THEN 1 ELSE 0 END), \
           MAX(state) \
         FROM component_minutes WHERE component = $1 AND minute >= $3 AND minute < $4 \
         GROUP BY component \
         ON CONFLICT (component, day) DO UPDATE SET \
           minutes = excluded.minutes, operational = excluded.operational, \
           maintenance = excluded.maintenance, degraded = excluded.degraded, \
           partial = excluded.partial, major = excluded.major, worst = excluded.worst",
    )
    .bind(component)
    .bind(day)
    .bind(day.saturating_mul(DAY_MINUTES))
    .bind(day.saturating_add(1).saturating_mul(DAY_MINUTES))
    .execute(conn)
    .await?;
    Ok(())
}

/// Recomputes one endpoint's probe day from its minutes.
pub(super) async fn rollup_probe_day(
    conn: &mut SqliteConnection,
    endpoint: &str,
    day: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO probe_days (endpoint, day, total, ok, latency_sum_ms, latency_max_ms) \
         SELECT endpoint, $2, SUM(total), SUM(ok), SUM(latency_sum_ms), MAX(latency_max_ms) \
         FROM probe_minutes WHERE endpoint = $1 AND minute >= $3 AND minute < $4 \
         GROUP BY endpoint \
         ON CONFLICT (endpoint, day) DO UPDATE SET total = excluded.total, ok = excluded.ok, \
           latency_sum_ms = excluded.latency_sum_ms, latency_max_ms = excluded.latency_max_ms",
    )
    .bind(endpoint)
    .bind(day)
    .bind(day.saturating_mul(DAY_MINUTES))
    .bind(day.saturating_add(1).saturating_mul(DAY_MINUTES))
    .execute(conn)
    .await?;
    Ok(())
}

/// Rolls up every day that has minutes before `minute` (all components at once).
pub(super) async fn rollup_before(pool: &SqlitePool, minute: i64) -> Result<(), HistoryError> {
    let mut tx = super::store::begin_write(pool).await?;
    sqlx::query(
        "INSERT INTO component_days \
           (component, day, minutes, operational, maintenance, degraded, partial, major, worst) \
         SELECT component, minute / 1440, COUNT(*), \
           SUM(CASE WHEN state = 0 THEN 1 ELSE 0 END), \
           SUM(CASE WHEN state = 1 THEN 1 ELSE 0 END), \
           SUM(CASE WHEN state = 2 THEN 1 ELSE 0 END), \
           SUM(CASE WHEN state = 3 THEN 1 ELSE 0 END), \
           SUM(CASE WHEN state = 4 THEN 1 ELSE 0 END), \
           MAX(state) \
         FROM component_minutes WHERE minute >= 0 AND minute < $1 \
         GROUP BY component, minute / 1440 \
         ON CONFLICT (component, day) DO UPDATE SET \
           minutes = excluded.minutes, operational = excluded.operational, \
           maintenance = excluded.maintenance, degraded = excluded.degraded, \
           partial = excluded.partial, major = excluded.major, worst = excluded.worst",
    )
    .bind(minute)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO probe_days (endpoint, day, total, ok, latency_sum_ms, latency_max_ms) \
         SELECT endpoint, minute / 1440, SUM(total), SUM(ok), SUM(latency_sum_ms), \
           MAX(latency_max_ms) \
         FROM probe_minutes WHERE minute >= 0 AND minute < $1 \
         GROUP BY endpoint, minute / 1440 \
         ON CONFLICT (endpoint, day) DO UPDATE SET total = excluded.total, ok = excluded.ok, \
           latency_sum_ms = excluded.latency_sum_ms, latency_max_ms = excluded.latency_max_ms",
    )
    .bind(minute)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Rows deleted by one pruning pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PruneStats {
    /// Raw events.
    pub events: u64,
    /// Component minutes.
    pub component_minutes: u64,
    /// Probe minutes.
    pub probe_minutes: u64,
    /// Daily component and probe rows.
    pub days: u64,
    /// Drills.
    pub drills: u64,
    /// Closed incidents (with their updates).
    pub incidents: u64,
}

/// Retention as of `now`: raw rows from before the start of the day `raw_days` ago are
/// rolled up then deleted; daily rows, drills and closed incidents from before `daily_days`.
pub(super) async fn prune(
    pool: &SqlitePool,
    now: Timestamp,
    raw_days: u32,
    daily_days: u32,
) -> Result<PruneStats, HistoryError> {
    let today = now.day();
    let raw_cut = today.minus(i64::from(raw_days));
    let daily_cut = today.minus(i64::from(daily_days));
    // Roll up whole days before deleting their minutes: cut at a day boundary.
    rollup_before(pool, raw_cut.first_minute()).await?;
    let mut tx = super::store::begin_write(pool).await?;
    let mut stats = PruneStats::default();
    let raw_ms = raw_cut.start().millis();
    let daily_ms = daily_cut.start().millis();
    stats.events = sqlx::query("DELETE FROM events WHERE at_ms < $1")
        .bind(raw_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    stats.component_minutes = sqlx::query("DELETE FROM component_minutes WHERE minute < $1")
        .bind(raw_cut.first_minute())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    stats.probe_minutes = sqlx::query("DELETE FROM probe_minutes WHERE minute < $1")
        .bind(raw_cut.first_minute())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let days = sqlx::query("DELETE FROM component_days WHERE day < $1")
        .bind(daily_cut.0)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let probe_days = sqlx::query("DELETE FROM probe_days WHERE day < $1")
        .bind(daily_cut.0)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    stats.days = days.saturating_add(probe_days);
    stats.drills = sqlx::query("DELETE FROM drills WHERE started_ms < $1 AND ended_ms IS NOT NULL")
        .bind(daily_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query(
        "DELETE FROM incident_updates WHERE incident_id IN \
         (SELECT id FROM incidents WHERE resolved_ms IS NOT NULL AND resolved_ms < $1)",
    )
    .bind(daily_ms)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "DELETE FROM incident_components WHERE incident_id IN \
         (SELECT id FROM incidents WHERE resolved_ms IS NOT NULL AND resolved_ms < $1)",
    )
    .bind(daily_ms)
    .execute(&mut *tx)
    .await?;
    stats.incidents =
        sqlx::query("DELETE FROM incidents WHERE resolved_ms IS NOT NULL AND resolved_ms < $1")
            .bind(daily_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    tx.commit().await?;
    Ok(stats)
}

/// One stored day of a component.
struct StoredDay {
    minutes: i64,
    maintenance: i64,
    degraded: i64,
    partial: i64,
    major: i64,
    worst: i64,
}

fn count(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

fn stored_day(row: &sqlx::sqlite::SqliteRow) -> Result<StoredDay, sqlx::Error> {
    Ok(StoredDay {
        minutes: row.try_get("minutes")?,
        maintenance: row.try_get("maintenance")?,
        degraded: row.try_get("degraded")?,
        partial: row.try_get("partial")?,
        major: row.try_get("major")?,
        worst: row.try_get("worst")?,
    })
}

/// The full length of `day` in minutes as of `now`: 1,440 for a past day, the minutes begun
/// so far for today, 0 for a day to come.
pub(super) fn day_length(day: Day, now: Timestamp) -> i64 {
    now.minute()
        .saturating_add(1)
        .saturating_sub(day.first_minute())
        .clamp(0, DAY_MINUTES)
}

/// One entry per day from `first` to `last`; days without a stored row have no uptime.
fn fill(first: Day, last: Day, stored: &BTreeMap<i64, StoredDay>) -> Vec<DayStat> {
    let now = Timestamp::now();
    let len = last.0.saturating_sub(first.0).saturating_add(1).max(0);
    let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    let mut day = first;
    while day <= last {
        let length = count(day_length(day, now));
        let stat = match stored.get(&day.0) {
            Some(d) if d.minutes > 0 => DayStat {
                day,
                uptime_pct: uptime_pct(
                    u64::from(length),
                    u64::from(count(d.minutes)),
                    u64::from(count(d.partial)),
                    u64::from(count(d.major)),
                ),
                length_minutes: length.max(count(d.minutes)),
                no_data_minutes: length.saturating_sub(count(d.minutes)),
                worst_state: Some(ComponentState::from_code(d.worst)),
                minutes: count(d.minutes),
                partial_minutes: count(d.partial),
                major_minutes: count(d.major),
                degraded_minutes: count(d.degraded),
                maintenance_minutes: count(d.maintenance),
            },
            _ => DayStat {
                day,
                uptime_pct: None,
                length_minutes: length,
                no_data_minutes: length,
                worst_state: None,
                minutes: 0,
                partial_minutes: 0,
                major_minutes: 0,
                degraded_minutes: 0,
                maintenance_minutes: 0,
            },
        };
        out.push(stat);
        if day.0 == i64::MAX {
            break;
        }
        day = Day(day.0.saturating_add(1));
    }
    out
}

/// The first day of a window of `days` days ending with `last`.
fn first_of(days: u32, last: Day) -> Day {
    last.minus(i64::from(days).saturating_sub(1))
}

/// `days` entries ending with `last`, oldest first; gaps have no uptime.
pub(super) async fn daily_uptime(
    pool: &SqlitePool,
    component: &str,
    days: u32,
    last: Day,
) -> Result<Vec<DayStat>, HistoryError> {
    let first = first_of(days, last);
    let rows = sqlx::query(
        "SELECT day, minutes, maintenance, degraded, partial, major, worst FROM component_days \
         WHERE component = $1 AND day >= $2 AND day <= $3 ORDER BY day",
    )
    .bind(component)
    .bind(first.0)
    .bind(last.0)
    .fetch_all(pool)
    .await?;
    let mut stored = BTreeMap::new();
    for row in &rows {
        stored.insert(row.try_get::<i64, _>("day")?, stored_day(row)?);
    }
    Ok(fill(first, last, &stored))
}

/// [`daily_uptime`] of every component with a day in the window, in one query.
///
/// The days come back as one text per component (`day minutes maintenance degraded partial
/// major worst` entries joined by commas): 50 rows instead of 50 × 90, which matters
/// because each row the driver hands over costs microseconds (a status page's store read
/// went from ~30 ms to a few). `group_concat` is SQLite's; PostgreSQL would say
/// `string_agg`.
pub(super) async fn daily_uptime_all(
    pool: &SqlitePool,
    days: u32,
    last: Day,
) -> Result<BTreeMap<String, Vec<DayStat>>, HistoryError> {
    let first = first_of(days, last);
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT component, group_concat(day || ' ' || minutes || ' ' || maintenance || ' ' || \
           degraded || ' ' || partial || ' ' || major || ' ' || worst, ',') \
         FROM component_days WHERE day >= $1 AND day <= $2 GROUP BY component",
    )
    .bind(first.0)
    .bind(last.0)
    .fetch_all(pool)
    .await?;
    let mut out = BTreeMap::new();
    for (component, text) in rows {
        let mut stored = BTreeMap::new();
        for entry in text.split(',') {
            let (day, stat) = packed_day(entry).ok_or_else(|| {
                sqlx::Error::Protocol(format!(
                    "component_days of {component:?}: cannot read {entry:?}"
                ))
            })?;
            stored.insert(day, stat);
        }
        out.insert(component, fill(first, last, &stored));
    }
    Ok(out)
}

/// One `day minutes maintenance degraded partial major worst` entry of [`daily_uptime_all`].
fn packed_day(entry: &str) -> Option<(i64, StoredDay)> {
    let mut fields = entry.split(' ').map(str::parse::<i64>);
    let mut next = || fields.next()?.ok();
    let day = next()?;
    let stat = StoredDay {
        minutes: next()?,
        maintenance: next()?,
        degraded: next()?,
        partial: next()?,
        major: next()?,
        worst: next()?,
    };
    Some((day, stat))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_days_are_read_whole_or_not_at_all() {
        let (day, stat) = packed_day("20400 1440 10 20 30 40 4").expect("a whole entry");
        assert_eq!(day, 20400);
        assert_eq!(
            (stat.minutes, stat.maintenance, stat.degraded),
            (1440, 10, 20)
        );
        assert_eq!((stat.partial, stat.major, stat.worst), (30, 40, 4));
        for bad in [
            "",
            "20400",
            "20400 1440 10 20 30 40",
            "a 1 2 3 4 5 6",
            "1 2 3 4 5 6 x",
        ] {
            assert!(packed_day(bad).is_none(), "{bad:?}");
        }
    }
}
