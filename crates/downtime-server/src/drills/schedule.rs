//! Scheduled drills: `[[schedule]]` tables of the serve config, run by the server itself.
//!
//! Each schedule names a drill file, a cron expression (five fields, or six with seconds),
//! an optional IANA time zone and optional allowed windows (weekdays and a local time
//! range). When the cron fires inside a window, the server runs the drill in-process with
//! the ordinary runner against its own API, quietly. The runner's `drill-lock` keeps two
//! drills off the same proxy: a run refused for that reason is kept as `skipped`.
//!
//! The evaluation ([`Schedule::next_after`], [`Schedule::allowed_at`], [`Window::contains`])
//! is pure, so it is tested with fixed times. Runs are kept in memory ([`Runs`], the latest
//! [`MAX_RUNS`]) and listed at `GET /drills/runs` and `GET /drills/runs/{id}`; the runner
//! also reports every run to the history store (`/history/drills`).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use chrono::{
    DateTime, Datelike, Duration as ChronoDuration, NaiveDateTime, NaiveTime, Utc, Weekday,
};
use chrono_tz::Tz;
use croner::Cron;
use downtime_model::drill::DrillPlan;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::report::Outcome;
use super::runner::{self, RunOptions};
use crate::config::ConfigError;

/// How many runs are kept for `GET /drills/runs`.
pub const MAX_RUNS: usize = 500;

/// A time range on some weekdays, in the schedule's time zone. `from` is inclusive, `to`
/// exclusive; when `to` is before `from` the window runs over midnight into the next day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Days the window starts on.
    pub days: Vec<Weekday>,
    /// Local start time.
    pub from: NaiveTime,
    /// Local end time.
    pub to: NaiveTime,
}

impl Window {
    /// Whether the local wall-clock time `local` is inside the window.
    pub fn contains(&self, local: NaiveDateTime) -> bool {
        let time = local.time();
        let day = local.weekday();
        if self.from < self.to {
            self.days.contains(&day) && self.from <= time && time < self.to
        } else {
            (self.days.contains(&day) && time >= self.from)
                || (self.days.contains(&day.pred()) && time < self.to)
        }
    }
}

/// One validated `[[schedule]]`.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Name (the `name` key, else the drill file's stem).
    pub name: String,
    /// The drill file, resolved against the config file's directory.
    pub drill: PathBuf,
    /// The drill, parsed and validated at load time.
    pub plan: DrillPlan,
    /// The cron expression as written.
    pub cron_text: String,
    cron: Cron,
    /// Time zone of the cron expression and the windows (UTC by default).
    pub time_zone: Tz,
    /// Allowed windows; none means any time.
    pub windows: Vec<Window>,
}

impl Schedule {
    /// The first firing strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.time_zone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// Whether a run may start at `at`: inside one of the windows (or no windows given).
    pub fn allowed_at(&self, at: DateTime<Utc>) -> bool {
        if self.windows.is_empty() {
            return true;
        }
        let local = at.with_timezone(&self.time_zone).naive_local();
        self.windows.iter().any(|w| w.contains(local))
    }

    /// The next firing after `after` that falls inside a window, looking at most `limit`
    /// firings ahead.
    pub fn next_allowed_after(&self, after: DateTime<Utc>, limit: usize) -> Option<DateTime<Utc>> {
        let mut t = after;
        for _ in 0..limit {
            t = self.next_after(t)?;
            if self.allowed_at(t) {
                return Some(t);
            }
        }
        None
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    #[serde(default)]
    name: Option<String>,
    drill: String,
    cron: String,
    #[serde(default)]
    time_zone: Option<String>,
    #[serde(default)]
    windows: Vec<RawWindow>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    #[serde(default)]
    days: Option<Vec<String>>,
    from: String,
    to: String,
}

/// Reads the `[[schedule]]` tables of a serve config file (TOML); a JSON file has none.
pub fn load(path: &Path) -> Result<Vec<Schedule>, ConfigError> {
    let fail = |detail: String| ConfigError {
        path: path.display().to_string(),
        detail,
    };
    if path.extension().and_then(|e| e.to_str()) == Some("json") {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    parse(&text, dir).map_err(fail)
}

/// Parses the `[[schedule]]` tables of config text; drill paths are relative to `dir`.
/// Errors name the schedule (number and name) and the field.
pub fn parse(text: &str, dir: &Path) -> Result<Vec<Schedule>, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let Some(entries) = table.get("schedule") else {
        return Ok(Vec::new());
    };
    let entries = entries
        .as_array()
        .ok_or("schedule: expected [[schedule]] tables")?;
    let mut names = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let n = i + 1;
        let label = entry
            .get("name")
            .and_then(toml::Value::as_str)
            .or_else(|| entry.get("drill").and_then(toml::Value::as_str))
            .unwrap_or_default()
            .to_owned();
        let at =
            |field: &str, detail: String| format!("schedule {n} ({label:?}): {field}: {detail}");
        let raw = RawSchedule::deserialize(entry.clone())
            .map_err(|e| format!("schedule {n} ({label:?}): {}", e.message()))?;
        let schedule = validate(raw, dir, &at)?;
        if !names.insert(schedule.name.clone()) {
            return Err(at("name", format!("{:?} is used twice", schedule.name)));
        }
        out.push(schedule);
    }
    Ok(out)
}

fn validate(
    raw: RawSchedule,
    dir: &Path,
    at: &dyn Fn(&str, String) -> String,
) -> Result<Schedule, String> {
    let cron = Cron::from_str(raw.cron.trim()).map_err(|e| {
        at(
            "cron",
            format!("{:?} is not a cron expression: {e}", raw.cron),
        )
    })?;
    let time_zone = match &raw.time_zone {
        None => Tz::UTC,
        Some(name) => Tz::from_str(name).map_err(|_| {
            at(
                "time_zone",
                format!("{name:?} is not an IANA time zone (e.g. \"Europe/Paris\")"),
            )
        })?,
    };
    let mut windows = Vec::with_capacity(raw.windows.len());
    for (w, window) in raw.windows.iter().enumerate() {
        let time = |field: &str, text: &str| {
            NaiveTime::parse_from_str(text, "%H:%M").map_err(|_| {
                at(
                    &format!("windows[{w}].{field}"),
                    format!("{text:?} is not a time of day HH:MM"),
                )
            })
        };
        let from = time("from", &window.from)?;
        let to = time("to", &window.to)?;
        if from == to {
            return Err(at(
                &format!("windows[{w}].to"),
                "must differ from `from`".to_owned(),
            ));
        }
        let days = match &window.days {
            None => vec![
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri,
                Weekday::Sat,
                Weekday::Sun,
            ],
            Some(days) => {
                if days.is_empty() {
                    return Err(at(&format!("windows[{w}].days"), "is empty".to_owned()));
                }
                days.iter()
                    .map(|d| {
                        Weekday::from_str(d).map_err(|_| {
                            at(
                                &format!("windows[{w}].days"),
                                format!("{d:?} is not a weekday (mon, tue, ... sun)"),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }
        };
        windows.push(Window { days, from, to });
    }
    let drill = dir.join(&raw.drill);
    let text = std::fs::read_to_string(&drill)
        .map_err(|e| at("drill", format!("cannot read {}: {e}", drill.display())))?;
    // `${VAR}` / `${VAR:-default}`, as in the config file and `drill run`.
    let text = downtime_model::substitute::substitute_env(&text)
        .map_err(|e| at("drill", format!("{}: {e}", drill.display())))?;
    let plan = DrillPlan::parse(&text).map_err(|problems| {
        let list: Vec<String> = problems
            .iter()
            .map(|p| format!("{}:{}: {}: {}", drill.display(), p.line, p.key, p.message))
            .collect();
        at("drill", format!("invalid drill file: {}", list.join("; ")))
    })?;
    let name = raw.name.unwrap_or_else(|| {
        drill
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("drill")
            .to_owned()
    });
    Ok(Schedule {
        name,
        drill,
        plan,
        cron_text: raw.cron,
        cron,
        time_zone,
        windows,
    })
}

/// What became of one firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// The drill is running.
    Running,
    /// Every phase met its thresholds.
    Pass,
    /// A threshold was missed.
    Fail,
    /// Halted, or cancelled by the server stopping.
    Aborted,
    /// Not started: a proxy was in use by another drill.
    Skipped,
    /// Not started for another reason (the setup failed).
    Error,
}

/// One firing of a schedule, with the drill's report once it ended.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduledRun {
    /// Id, increasing from 1.
    pub id: u64,
    /// Schedule name.
    pub schedule: String,
    /// Drill name.
    pub drill: String,
    /// When the cron fired (RFC 3339, UTC).
    pub due_at: String,
    /// When the run ended, if it did.
    pub ended_at: Option<String>,
    /// Current state or outcome.
    pub status: RunStatus,
    /// Why it failed, aborted or was skipped.
    pub reason: Option<String>,
    /// The runner's full report (JSON), once ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<Value>,
}

/// The kept runs, newest last; cheap to clone.
#[derive(Clone, Default)]
pub struct Runs {
    inner: Arc<Mutex<RunsInner>>,
}

#[derive(Default)]
struct RunsInner {
    next: u64,
    runs: VecDeque<ScheduledRun>,
}

impl Runs {
    fn lock(&self) -> std::sync::MutexGuard<'_, RunsInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn begin(&self, schedule: &Schedule, due: DateTime<Utc>) -> u64 {
        let mut inner = self.lock();
        inner.next += 1;
        let id = inner.next;
        if inner.runs.len() >= MAX_RUNS {
            inner.runs.pop_front();
        }
        inner.runs.push_back(ScheduledRun {
            id,
            schedule: schedule.name.clone(),
            drill: schedule.plan.name.clone(),
            due_at: due.to_rfc3339(),
            ended_at: None,
            status: RunStatus::Running,
            reason: None,
            report: None,
        });
        id
    }

    fn end(&self, id: u64, status: RunStatus, reason: Option<String>, report: Option<Value>) {
        let mut inner = self.lock();
        if let Some(run) = inner.runs.iter_mut().find(|r| r.id == id) {
            run.status = status;
            run.reason = reason;
            run.report = report;
            run.ended_at = Some(Utc::now().to_rfc3339());
        }
    }

    /// Every kept run, newest first, without reports.
    pub fn list(&self) -> Vec<ScheduledRun> {
        self.lock()
            .runs
            .iter()
            .rev()
            .map(|r| ScheduledRun {
                report: None,
                ..r.clone()
            })
            .collect()
    }

    /// One run with its report.
    pub fn get(&self, id: u64) -> Option<ScheduledRun> {
        self.lock().runs.iter().find(|r| r.id == id).cloned()
    }
}

/// `GET /drills/runs` and `GET /drills/runs/{id}`.
pub fn router(runs: Runs) -> axum::Router {
    axum::Router::new()
        .route("/drills/runs", get(list_runs))
        .route("/drills/runs/{id}", get(show_run))
        .with_state(runs)
}

async fn list_runs(State(runs): State<Runs>) -> Response {
    crate::api::json(StatusCode::OK, &runs.list())
}

async fn show_run(State(runs): State<Runs>, UrlPath(id): UrlPath<String>) -> Response {
    match id.parse::<u64>().ok().and_then(|id| runs.get(id)) {
        Some(run) => crate::api::json(StatusCode::OK, &run),
        None => crate::api::json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({ "error": "scheduled run not found", "status": 404 }),
        ),
    }
}

/// The running schedules; [`Scheduler::stop`] cancels running drills and waits for their
/// cleanup.
pub struct Scheduler {
    stop: CancellationToken,
    tracker: TaskTracker,
}

/// Starts one task per schedule, running drills against the API at `base` (with the API
/// token, if any); their probes trust `extra_ca` besides the system's roots.
pub fn start(
    schedules: Vec<Schedule>,
    base: String,
    runs: Runs,
    (extra_ca, api_token): (Vec<std::path::PathBuf>, Option<String>),
) -> Scheduler {
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    for schedule in schedules {
        tracker.spawn(schedule_loop(
            schedule,
            (base.clone(), extra_ca.clone(), api_token.clone()),
            runs.clone(),
            stop.clone(),
        ));
    }
    tracker.close();
    Scheduler { stop, tracker }
}

impl Scheduler {
    /// Cancels every schedule; running drills abort and clean up (bounded by `wait`).
    pub async fn stop(self, wait: std::time::Duration) {
        self.stop.cancel();
        if tokio::time::timeout(wait, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("scheduled drills still cleaning up after {wait:?}");
        }
    }
}

async fn schedule_loop(
    schedule: Schedule,
    (base, extra_ca, api_token): (String, Vec<std::path::PathBuf>, Option<String>),
    runs: Runs,
    stop: CancellationToken,
) {
    tracing::info!(
        schedule = %schedule.name,
        cron = %schedule.cron_text,
        time_zone = %schedule.time_zone,
        "drill schedule active"
    );
    let mut after = Utc::now();
    loop {
        // The next firing inside a window; an every-second cron far from its window waits for
        // the last firing looked at and goes on from there, instead of spinning.
        let mut due = None;
        let mut t = after;
        for _ in 0..10_000 {
            match schedule.next_after(t) {
                Some(next) => {
                    t = next;
                    due = Some(next);
                    if schedule.allowed_at(next) {
                        break;
                    }
                }
                None => break,
            }
        }
        let Some(due) = due else {
            tracing::warn!(schedule = %schedule.name, "cron never fires again");
            return;
        };
        let wait = (due - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        after = due;
        if !schedule.allowed_at(due) {
            continue;
        }
        let id = runs.begin(&schedule, due);
        tracing::info!(schedule = %schedule.name, run = id, "scheduled drill starting");
        let result = runner::run(
            &schedule.plan,
            &base,
            stop.child_token(),
            RunOptions {
                quiet: true,
                scheduled: true,
                extra_ca: extra_ca.clone(),
                api_token: api_token.clone(),
            },
        )
        .await;
        match result {
            Ok(report) => {
                let status = match report.outcome {
                    Outcome::Pass => RunStatus::Pass,
                    Outcome::Fail => RunStatus::Fail,
                    Outcome::Aborted => RunStatus::Aborted,
                };
                tracing::info!(schedule = %schedule.name, run = id, ?status, "scheduled drill ended");
                let json = serde_json::to_value(&report).ok();
                runs.end(id, status, report.reason.clone(), json);
            }
            Err(e) => {
                let status = if e.0.contains("in use by another drill") {
                    RunStatus::Skipped
                } else {
                    RunStatus::Error
                };
                tracing::warn!(schedule = %schedule.name, run = id, ?status, reason = %e, "scheduled drill not started");
                runs.end(id, status, Some(e.0), None);
            }
        }
        if stop.is_cancelled() {
            return;
        }
        // Firings missed while the drill ran are dropped: go on from now.
        after = after.max(Utc::now() - ChronoDuration::milliseconds(1));
    }
}
