//! `incident`: open, update, resolve and list the incidents and scheduled maintenances the
//! status page shows, through the server's `/incidents` endpoints.
//!
//! The vocabulary (statuses, impacts) is the server's, which is Statuspage's. Names are
//! checked here with clap value lists, so a typo is a usage error (exit 2) listing the
//! valid names before anything is sent; whether a status fits an incident or a maintenance
//! is left to the server, which knows the incident's kind. Times for maintenance windows
//! are RFC 3339, `now` or `+DURATION` counted from now, and are sent as Unix milliseconds.
//!
//! `--json` prints the server's answer verbatim: the incident (with its timeline) for
//! `open`, `schedule`, `show`, `edit` and `resolve`, the new update for `update`, the list
//! for `list`. Text is sent and shown exactly as typed: escaping is the page's job.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Subcommand, ValueEnum};
use downtime_server::history::Timestamp;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::api::Api;
use super::render::table;
use super::{LocalOptions, Output, values};

/// Most incidents one `list` asks for (the server's own upper bound).
const MAX_LIST: u32 = 500;

/// The text `resolve` posts when no `--message` is given, worded like the update the server
/// posts itself when a maintenance window ends.
const RESOLVED_TEXT: &str = "This incident has been resolved.";

/// The same for a maintenance, which is closed as `completed`.
const COMPLETED_TEXT: &str = "The scheduled maintenance has been completed.";

/// `incident` subcommands.
#[derive(Debug, Subcommand)]
pub enum IncidentCommand {
    /// List incidents and maintenances, newest first.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show one incident or maintenance with its timeline of updates.
    Show(IdArgs),
    /// Open an incident (shown on the status page at once); prints its id.
    Open(OpenArgs),
    /// Add an update to the timeline: a message, a new status, or both.
    Update(UpdateArgs),
    /// Close an incident (status resolved) or a maintenance (status completed).
    Resolve(ResolveArgs),
    /// Change the title, impact, components or window; the timeline is left alone.
    Edit(Box<EditArgs>),
    /// Schedule a maintenance window; components in it show "under maintenance" meanwhile.
    Schedule(ScheduleArgs),
}

/// How bad an incident is for users (the server's impact names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Impact {
    /// No visible effect.
    None,
    /// Some users notice.
    Minor,
    /// Many users are affected.
    Major,
    /// Everything is down.
    Critical,
    /// Planned work.
    Maintenance,
}

impl Impact {
    /// The API's name.
    fn as_str(self) -> &'static str {
        match self {
            Impact::None => "none",
            Impact::Minor => "minor",
            Impact::Major => "major",
            Impact::Critical => "critical",
            Impact::Maintenance => "maintenance",
        }
    }
}

/// Where an incident stands: the first four are for incidents, the last four for
/// maintenances; the server refuses a status of the other kind, naming the right ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Status {
    /// Looking into it.
    Investigating,
    /// The cause is known.
    Identified,
    /// A fix is in; watching.
    Monitoring,
    /// Over.
    Resolved,
    /// Maintenance not started yet.
    Scheduled,
    /// Maintenance under way.
    #[value(name = "in_progress", alias = "in-progress")]
    InProgress,
    /// Maintenance done, checking.
    Verifying,
    /// Maintenance over.
    Completed,
}

impl Status {
    /// The API's name.
    fn as_str(self) -> &'static str {
        match self {
            Status::Investigating => "investigating",
            Status::Identified => "identified",
            Status::Monitoring => "monitoring",
            Status::Resolved => "resolved",
            Status::Scheduled => "scheduled",
            Status::InProgress => "in_progress",
            Status::Verifying => "verifying",
            Status::Completed => "completed",
        }
    }
}

/// Which incidents `list` shows, by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Which {
    /// Not resolved or completed yet.
    Open,
    /// Resolved or completed.
    Closed,
    /// Both.
    All,
}

impl Which {
    /// The API's name.
    fn as_str(self) -> &'static str {
        match self {
            Which::Open => "open",
            Which::Closed => "closed",
            Which::All => "all",
        }
    }
}

/// Incident or maintenance, for `list --kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Unplanned incidents.
    Incident,
    /// Scheduled maintenances.
    Maintenance,
}

impl Kind {
    /// The API's name.
    fn as_str(self) -> &'static str {
        match self {
            Kind::Incident => "incident",
            Kind::Maintenance => "maintenance",
        }
    }
}

/// A time given on the command line: what was typed (for messages) and the instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeArg {
    /// As typed.
    raw: String,
    /// Unix milliseconds.
    ms: i64,
}

/// Arguments of `incident list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only open, only closed (resolved or completed), or all [default: all].
    #[arg(short = 's', long, value_name = "WHICH")]
    status: Option<Which>,
    /// Only incidents or only maintenances [default: both].
    #[arg(short = 'k', long, value_name = "KIND")]
    kind: Option<Kind>,
    /// At most this many, newest first, 1 to 500 [default: the server's, 50].
    #[arg(short = 'n', long, value_name = "N", value_parser = parse_limit)]
    limit: Option<u32>,
    #[command(flatten)]
    options: LocalOptions,
}

/// Arguments of the commands that only name an incident.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// Id of the incident or maintenance, as `incident list` shows it.
    #[arg(value_parser = parse_id)]
    id: i64,
    #[command(flatten)]
    options: LocalOptions,
}

/// Arguments of `incident open`.
#[derive(Debug, Args)]
pub struct OpenArgs {
    /// Title shown on the status page, e.g. "Payments API errors".
    #[arg(value_parser = values::parse_non_empty)]
    title: String,
    /// How bad it is for users [default: minor].
    #[arg(short = 'i', long, value_name = "IMPACT")]
    impact: Option<Impact>,
    /// Affected component, repeatable: a proxy name, `proxy:NAME` or `endpoint:PROBE`.
    #[arg(short = 'c', long = "component", value_name = "NAME", value_parser = values::parse_non_empty)]
    components: Vec<String>,
    /// Text of the first update, e.g. "We are looking into it."
    #[arg(short = 'm', long, value_name = "TEXT", value_parser = values::parse_non_empty)]
    message: Option<String>,
    /// Initial status [default: investigating].
    #[arg(short = 's', long, value_name = "STATUS", value_parser = incident_status_parser())]
    status: Option<Status>,
    #[command(flatten)]
    options: LocalOptions,
}

/// `open --status`: only the statuses of an incident (the maintenance ones belong to
/// `schedule`), so the list clap prints is the list that works.
fn incident_status_parser() -> impl TypedValueParser<Value = Status> {
    PossibleValuesParser::new(
        [
            Status::Investigating,
            Status::Identified,
            Status::Monitoring,
            Status::Resolved,
        ]
        .map(Status::as_str),
    )
    .try_map(|name| <Status as ValueEnum>::from_str(&name, false))
}

/// Arguments of `incident update`: a message, a status, or both (a status change alone
/// is a valid update; an update with neither says nothing).
#[derive(Debug, Args)]
#[group(id = "update", required = true, multiple = true, args = ["message", "status"])]
pub struct UpdateArgs {
    /// Id of the incident or maintenance.
    #[arg(value_parser = parse_id)]
    id: i64,
    /// Text of the update.
    #[arg(short = 'm', long, value_name = "TEXT", value_parser = values::parse_non_empty)]
    message: Option<String>,
    /// New status [default: unchanged].
    #[arg(short = 's', long, value_name = "STATUS")]
    status: Option<Status>,
    #[command(flatten)]
    options: LocalOptions,
}

/// Arguments of `incident resolve`.
#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// Id of the incident or maintenance.
    #[arg(value_parser = parse_id)]
    id: i64,
    /// Text of the closing update [default: "This incident has been resolved." or, for a
    /// maintenance, "The scheduled maintenance has been completed."].
    #[arg(short = 'm', long, value_name = "TEXT", value_parser = values::parse_non_empty)]
    message: Option<String>,
    #[command(flatten)]
    options: LocalOptions,
}

/// Arguments of `incident edit`: only what is given changes.
#[derive(Debug, Args)]
#[group(id = "changes", required = true, multiple = true,
        args = ["title", "impact", "components", "clear_components", "start"])]
pub struct EditArgs {
    /// Id of the incident or maintenance.
    #[arg(value_parser = parse_id)]
    id: i64,
    /// New title.
    #[arg(short = 't', long, value_name = "TITLE", value_parser = values::parse_non_empty)]
    title: Option<String>,
    /// New impact.
    #[arg(short = 'i', long, value_name = "IMPACT")]
    impact: Option<Impact>,
    /// Affected component, repeatable; the list given replaces the old one.
    #[arg(short = 'c', long = "component", value_name = "NAME",
          value_parser = values::parse_non_empty, conflicts_with = "clear_components")]
    components: Vec<String>,
    /// Remove every component from the incident.
    #[arg(long)]
    clear_components: bool,
    /// New window start of a maintenance (with --end): RFC 3339, `now` or e.g. +30m.
    #[arg(long, value_name = "TIME", value_parser = parse_time, requires = "end")]
    start: Option<TimeArg>,
    /// New window end of a maintenance (with --start): RFC 3339 or e.g. +2h from now.
    #[arg(long, value_name = "TIME", value_parser = parse_time, requires = "start")]
    end: Option<TimeArg>,
    #[command(flatten)]
    options: LocalOptions,
}

/// Arguments of `incident schedule`.
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// Title shown on the status page, e.g. "Database upgrade".
    #[arg(value_parser = values::parse_non_empty)]
    title: String,
    /// Window start: RFC 3339 (2030-01-01T09:00:00Z), `now`, or from now (+30m, +2h, +1d).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    start: TimeArg,
    /// Window end, after the start: RFC 3339 or from now (+2h, +1d).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    end: TimeArg,
    /// Component under maintenance, repeatable: a proxy name, `proxy:NAME` or
    /// `endpoint:PROBE`.
    #[arg(short = 'c', long = "component", value_name = "NAME", value_parser = values::parse_non_empty)]
    components: Vec<String>,
    /// Text of the first update, e.g. "We are upgrading the database."
    #[arg(short = 'm', long, value_name = "TEXT", value_parser = values::parse_non_empty)]
    message: Option<String>,
    /// Impact [default: maintenance].
    #[arg(short = 'i', long, value_name = "IMPACT")]
    impact: Option<Impact>,
    #[command(flatten)]
    options: LocalOptions,
}

impl IncidentCommand {
    /// The options given after the command.
    pub fn options(&self) -> &LocalOptions {
        match self {
            IncidentCommand::List(args) => &args.options,
            IncidentCommand::Show(args) => &args.options,
            IncidentCommand::Open(args) => &args.options,
            IncidentCommand::Update(args) => &args.options,
            IncidentCommand::Resolve(args) => &args.options,
            IncidentCommand::Edit(args) => &args.options,
            IncidentCommand::Schedule(args) => &args.options,
        }
    }

    /// Checks what clap cannot: a window must end after it starts. Caught here, the
    /// message names both flags as typed, and nothing is sent.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            IncidentCommand::Schedule(args) => check_window(&args.start, &args.end),
            IncidentCommand::Edit(args) => match (&args.start, &args.end) {
                (Some(start), Some(end)) => check_window(start, end),
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }
}

/// Refuses a window whose end is not after its start.
fn check_window(start: &TimeArg, end: &TimeArg) -> Result<(), String> {
    if end.ms > start.ms {
        return Ok(());
    }
    Err(format!(
        "invalid value '{}' for --end: must be after --start '{}' ({} is not after {})",
        end.raw,
        start.raw,
        time_text(end.ms, false),
        time_text(start.ms, false)
    ))
}

/// Runs one `incident` subcommand; errors say what failed, e.g. `show incident 7: HTTP 404:
/// incident 7 not found`.
pub async fn run(api: &Api, command: IncidentCommand) -> anyhow::Result<Output> {
    match command {
        IncidentCommand::List(args) => list(api, &args).await.context("list incidents"),
        IncidentCommand::Show(args) => show(api, args.id)
            .await
            .with_context(|| format!("show incident {}", args.id)),
        IncidentCommand::Open(args) => open(api, &args).await.context("open incident"),
        IncidentCommand::Update(args) => update(api, &args)
            .await
            .with_context(|| format!("update incident {}", args.id)),
        IncidentCommand::Resolve(args) => resolve(api, &args)
            .await
            .with_context(|| format!("resolve incident {}", args.id)),
        IncidentCommand::Edit(args) => edit(api, &args)
            .await
            .with_context(|| format!("edit incident {}", args.id)),
        IncidentCommand::Schedule(args) => {
            schedule(api, &args).await.context("schedule maintenance")
        }
    }
}

// --- the commands --------------------------------------------------------------------

/// `incident list`: `GET /incidents` with the filters given.
async fn list(api: &Api, args: &ListArgs) -> anyhow::Result<Output> {
    let mut query = Vec::new();
    if let Some(which) = args.status {
        query.push(("status", which.as_str().to_owned()));
    }
    if let Some(kind) = args.kind {
        query.push(("kind", kind.as_str().to_owned()));
    }
    if let Some(limit) = args.limit {
        query.push(("limit", limit.to_string()));
    }
    let answer = api.get_with_query(&["incidents"], &query).await?;
    let incidents: Vec<IncidentView> = answer.parse()?;
    Ok(Output::new(
        incident_table(&incidents, args.status, args.kind),
        &answer,
    ))
}

/// `incident show`: `GET /incidents/{id}`.
async fn show(api: &Api, id: i64) -> anyhow::Result<Output> {
    let answer = api
        .send(Method::GET, &["incidents", &id.to_string()], None)
        .await?;
    let incident: IncidentView = answer.parse()?;
    Ok(Output::new(incident_details(&incident), &answer))
}

/// The body of `POST /incidents` for `open`: only what was given, so the server's
/// defaults (investigating, minor) apply to the rest.
fn open_body(args: &OpenArgs) -> Value {
    let mut body = Map::new();
    body.insert("title".to_owned(), json!(args.title));
    put(&mut body, "status", args.status.map(|s| json!(s.as_str())));
    put(&mut body, "impact", args.impact.map(|i| json!(i.as_str())));
    if !args.components.is_empty() {
        body.insert("components".to_owned(), json!(args.components));
    }
    put(&mut body, "body", args.message.as_ref().map(|m| json!(m)));
    Value::Object(body)
}

/// `incident open`: `POST /incidents`.
async fn open(api: &Api, args: &OpenArgs) -> anyhow::Result<Output> {
    let answer = api
        .send(Method::POST, &["incidents"], Some(&open_body(args)))
        .await?;
    let incident: IncidentView = answer.parse()?;
    let human = format!(
        "Opened incident {}: {} ({}, impact {})\n",
        incident.id,
        printable(&incident.title),
        incident.status,
        incident.impact
    );
    Ok(Output::new(human, &answer))
}

/// The body of `POST /incidents` for `schedule`: the `scheduled` window makes it a
/// maintenance, with the server's maintenance defaults (scheduled, impact maintenance).
fn schedule_body(args: &ScheduleArgs) -> Value {
    let mut body = Map::new();
    body.insert("title".to_owned(), json!(args.title));
    body.insert(
        "scheduled".to_owned(),
        json!({"start": args.start.ms, "end": args.end.ms}),
    );
    put(&mut body, "impact", args.impact.map(|i| json!(i.as_str())));
    if !args.components.is_empty() {
        body.insert("components".to_owned(), json!(args.components));
    }
    put(&mut body, "body", args.message.as_ref().map(|m| json!(m)));
    Value::Object(body)
}

/// `incident schedule`: `POST /incidents` with a window.
async fn schedule(api: &Api, args: &ScheduleArgs) -> anyhow::Result<Output> {
    let answer = api
        .send(Method::POST, &["incidents"], Some(&schedule_body(args)))
        .await?;
    let incident: IncidentView = answer.parse()?;
    let human = format!(
        "Scheduled maintenance {}: {}, {}\n",
        incident.id,
        printable(&incident.title),
        window_text(&incident).unwrap_or_else(|| "no window".to_owned())
    );
    Ok(Output::new(human, &answer))
}

/// The body of `POST /incidents/{id}/updates`.
fn update_body(args: &UpdateArgs) -> Value {
    let mut body = Map::new();
    put(&mut body, "status", args.status.map(|s| json!(s.as_str())));
    put(&mut body, "body", args.message.as_ref().map(|m| json!(m)));
    Value::Object(body)
}

/// `incident update`: `POST /incidents/{id}/updates`.
async fn update(api: &Api, args: &UpdateArgs) -> anyhow::Result<Output> {
    let answer = api
        .send(
            Method::POST,
            &["incidents", &args.id.to_string(), "updates"],
            Some(&update_body(args)),
        )
        .await?;
    let posted: UpdateView = answer.parse()?;
    let human = format!(
        "Posted an update to incident {} (status {})\n",
        args.id, posted.status
    );
    Ok(Output::new(human, &answer))
}

/// `incident resolve`: reads the incident to learn its kind (incidents close as
/// `resolved`, maintenances as `completed`), then `PATCH`es the status with a closing
/// message. One already closed is left alone, so running it twice adds nothing.
async fn resolve(api: &Api, args: &ResolveArgs) -> anyhow::Result<Output> {
    let id = args.id.to_string();
    let current = api.send(Method::GET, &["incidents", &id], None).await?;
    let incident: IncidentView = current.parse()?;
    let noun = incident.noun();
    if incident.is_closed() {
        let since = incident
            .resolved_at
            .as_deref()
            .map(|at| format!(" since {}", time_of(at, false)))
            .unwrap_or_default();
        let human = format!(
            "{} {} is already {}{since}; nothing changed\n",
            capitalized(noun),
            args.id,
            incident.status
        );
        return Ok(Output::new(human, &current));
    }
    let (status, text) = if incident.kind == "maintenance" {
        (Status::Completed, COMPLETED_TEXT)
    } else {
        (Status::Resolved, RESOLVED_TEXT)
    };
    let body = json!({
        "status": status.as_str(),
        "body": args.message.as_deref().unwrap_or(text),
    });
    let answer = api
        .send(Method::PATCH, &["incidents", &id], Some(&body))
        .await?;
    let human = format!(
        "{} {} is now {}: {}\n",
        capitalized(noun),
        args.id,
        status.as_str(),
        printable(&incident.title)
    );
    Ok(Output::new(human, &answer))
}

/// The body of `PATCH /incidents/{id}` for `edit`: only the fields given, and no `body`,
/// so no update is added to the timeline.
fn edit_body(args: &EditArgs) -> Value {
    let mut body = Map::new();
    put(&mut body, "title", args.title.as_ref().map(|t| json!(t)));
    put(&mut body, "impact", args.impact.map(|i| json!(i.as_str())));
    if args.clear_components {
        body.insert("components".to_owned(), json!([]));
    } else if !args.components.is_empty() {
        body.insert("components".to_owned(), json!(args.components));
    }
    if let (Some(start), Some(end)) = (&args.start, &args.end) {
        body.insert(
            "scheduled".to_owned(),
            json!({"start": start.ms, "end": end.ms}),
        );
    }
    Value::Object(body)
}

/// `incident edit`: `PATCH /incidents/{id}`.
async fn edit(api: &Api, args: &EditArgs) -> anyhow::Result<Output> {
    let answer = api
        .send(
            Method::PATCH,
            &["incidents", &args.id.to_string()],
            Some(&edit_body(args)),
        )
        .await?;
    let incident: IncidentView = answer.parse()?;
    let components = if incident.components.is_empty() {
        "no components".to_owned()
    } else {
        printable(&incident.components.join(", "))
    };
    let mut human = format!(
        "Edited {} {}: {} (impact {}, {components}",
        incident.noun(),
        incident.id,
        printable(&incident.title),
        incident.impact
    );
    if let Some(window) = window_text(&incident) {
        let _ = write!(human, ", {window}");
    }
    human.push_str(")\n");
    Ok(Output::new(human, &answer))
}

/// Inserts `value` under `key` when present.
fn put(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        map.insert(key.to_owned(), value);
    }
}

// --- values --------------------------------------------------------------------------

/// An incident id: a whole number of at least 1, as the server numbers them.
fn parse_id(raw: &str) -> Result<i64, String> {
    match raw.trim().parse::<i64>() {
        Ok(id) if id >= 1 => Ok(id),
        _ => Err(
            "expected an incident id, a whole number of at least 1 (see `downtime incident list`)"
                .into(),
        ),
    }
}

/// `list --limit`: 1 to 500, the range the server accepts.
fn parse_limit(raw: &str) -> Result<u32, String> {
    match raw.trim().parse::<u32>() {
        Ok(n) if (1..=MAX_LIST).contains(&n) => Ok(n),
        _ => Err(format!("expected a whole number from 1 to {MAX_LIST}")),
    }
}

/// How times are written, for error messages.
const TIME_EXAMPLE: &str = "expected an RFC 3339 time such as 2030-01-01T09:00:00Z, `now`, \
                            or a time from now such as +30m, +2h or +1d";

/// `--start`/`--end`, relative to the current wall-clock time.
fn parse_time(raw: &str) -> Result<TimeArg, String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    parse_time_at(raw, now)
}

/// Parses `raw` as RFC 3339 (any offset), `now`, or `+N` with a unit `s`, `m`, `h` or `d`
/// counted from `now` (Unix milliseconds). Arithmetic is checked: a huge value is an error.
fn parse_time_at(raw: &str, now: i64) -> Result<TimeArg, String> {
    let text = raw.trim();
    let ms = if text.eq_ignore_ascii_case("now") {
        now
    } else if let Some(offset) = text.strip_prefix('+') {
        now.checked_add(offset_ms(offset)?)
            .ok_or_else(|| "the time is too far in the future".to_owned())?
    } else {
        Timestamp::parse_rfc3339(text)
            .map(Timestamp::millis)
            .ok_or_else(|| TIME_EXAMPLE.to_owned())?
    };
    Ok(TimeArg {
        raw: raw.to_owned(),
        ms,
    })
}

/// The `N<unit>` after `+`: whole seconds, minutes, hours or days, in milliseconds.
fn offset_ms(text: &str) -> Result<i64, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let factor: i64 = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(TIME_EXAMPLE.to_owned()),
    };
    if digits.is_empty() {
        return Err(TIME_EXAMPLE.to_owned());
    }
    digits
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| "the time is too far in the future".to_owned())
}

// --- what the server answers, and how it is shown ------------------------------------

/// An incident as the API returns it; lenient (defaults for missing fields) so an older or
/// newer server still lists.
#[derive(Debug, Clone, Deserialize)]
pub struct IncidentView {
    /// Id.
    #[serde(default)]
    pub id: i64,
    /// `incident` or `maintenance`.
    #[serde(default)]
    pub kind: String,
    /// Title as entered.
    #[serde(default)]
    pub title: String,
    /// Current status.
    #[serde(default)]
    pub status: String,
    /// Current impact.
    #[serde(default)]
    pub impact: String,
    /// `manual` or `drill`.
    #[serde(default)]
    pub source: String,
    /// The drill that opened it.
    #[serde(default)]
    pub drill: Option<i64>,
    /// Affected component ids.
    #[serde(default)]
    pub components: Vec<String>,
    /// Maintenance window start (RFC 3339).
    #[serde(default)]
    pub scheduled_start: Option<String>,
    /// Maintenance window end (RFC 3339).
    #[serde(default)]
    pub scheduled_end: Option<String>,
    /// Creation time (RFC 3339).
    #[serde(default)]
    pub created_at: String,
    /// Last change (RFC 3339).
    #[serde(default)]
    pub updated_at: String,
    /// When it was resolved or completed (RFC 3339).
    #[serde(default)]
    pub resolved_at: Option<String>,
    /// The timeline, in the server's order (newest first).
    #[serde(default)]
    pub updates: Vec<UpdateView>,
}

impl IncidentView {
    /// "incident" or "maintenance", for sentences.
    fn noun(&self) -> &'static str {
        if self.kind == "maintenance" {
            "maintenance"
        } else {
            "incident"
        }
    }

    /// Whether it is over: the server sets `resolved_at` when it is resolved or completed.
    fn is_closed(&self) -> bool {
        self.resolved_at.is_some() || matches!(self.status.as_str(), "resolved" | "completed")
    }
}

/// One entry of a timeline.
#[derive(Debug, Clone, Deserialize)]
pub struct UpdateView {
    /// Id (increasing).
    #[serde(default)]
    pub id: i64,
    /// When it was posted (RFC 3339).
    #[serde(default)]
    pub at: String,
    /// The status from this update on.
    #[serde(default)]
    pub status: String,
    /// Text as entered; empty when only the status changed.
    #[serde(default)]
    pub body: String,
}

/// `Major` from `major`, for the start of a sentence.
fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Text from the server with control characters (other than tabs) replaced, so a stored
/// title or update cannot move the cursor or recolour the terminal. Everything else,
/// HTML included, is shown exactly as stored.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect()
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM` (or with `:SS`) in UTC.
fn time_text(ms: i64, seconds: bool) -> String {
    let rfc = Timestamp(ms).rfc3339();
    let end = if seconds { 19 } else { 16 };
    match (rfc.get(..10), rfc.get(11..end)) {
        (Some(date), Some(clock)) if rfc.as_bytes().get(10) == Some(&b'T') => {
            format!("{date} {clock} UTC")
        }
        _ => rfc,
    }
}

/// An RFC 3339 time from the server, shown as [`time_text`] does; kept as given when it
/// does not parse.
fn time_of(rfc3339: &str, seconds: bool) -> String {
    match Timestamp::parse_rfc3339(rfc3339) {
        Some(at) => time_text(at.millis(), seconds),
        None => printable(rfc3339),
    }
}

/// The maintenance window as `START to END`, when there is one.
fn window_text(incident: &IncidentView) -> Option<String> {
    match (&incident.scheduled_start, &incident.scheduled_end) {
        (Some(start), Some(end)) => Some(format!(
            "{} to {}",
            time_of(start, false),
            time_of(end, false)
        )),
        _ => None,
    }
}

/// The `incident list` output: one row per incident, in the server's order (newest
/// first), or a hint when there is none.
pub fn incident_table(
    incidents: &[IncidentView],
    which: Option<Which>,
    kind: Option<Kind>,
) -> String {
    if incidents.is_empty() {
        let state = match which {
            Some(Which::Open) => "open ",
            Some(Which::Closed) => "closed ",
            Some(Which::All) | None => "",
        };
        let what = match kind {
            Some(Kind::Incident) => "incidents",
            Some(Kind::Maintenance) => "maintenances",
            None => "incidents or maintenances",
        };
        return format!(
            "no {state}{what}; open one with `downtime incident open TITLE` or \
             `downtime incident schedule TITLE --start TIME --end TIME`\n"
        );
    }
    let mut rows = vec![
        [
            "ID",
            "KIND",
            "STATUS",
            "IMPACT",
            "TITLE",
            "COMPONENTS",
            "CREATED (UTC)",
        ]
        .map(str::to_owned),
    ];
    rows.extend(incidents.iter().map(|incident| {
        [
            incident.id.to_string(),
            printable(&incident.kind),
            printable(&incident.status),
            printable(&incident.impact),
            printable(&incident.title),
            if incident.components.is_empty() {
                "-".to_owned()
            } else {
                printable(&incident.components.join(", "))
            },
            time_of(&incident.created_at, false)
                .trim_end_matches(" UTC")
                .to_owned(),
        ]
    }));
    table(&rows, "")
}

/// The `incident show` output: the fields, then the timeline oldest first, so the latest
/// update ends up right above the prompt.
pub fn incident_details(incident: &IncidentView) -> String {
    let components = if incident.components.is_empty() {
        "none".to_owned()
    } else {
        printable(&incident.components.join(", "))
    };
    let source = match (incident.source.as_str(), incident.drill) {
        ("drill", Some(drill)) => format!("drill {drill}"),
        (source, _) => printable(source),
    };
    let mut fields = vec![
        ["Id:".to_owned(), incident.id.to_string()],
        ["Title:".to_owned(), printable(&incident.title)],
        ["Kind:".to_owned(), printable(&incident.kind)],
        ["Status:".to_owned(), printable(&incident.status)],
        ["Impact:".to_owned(), printable(&incident.impact)],
        ["Components:".to_owned(), components],
    ];
    if let Some(window) = window_text(incident) {
        fields.push(["Window:".to_owned(), window]);
    }
    fields.push(["Source:".to_owned(), source]);
    fields.push(["Created:".to_owned(), time_of(&incident.created_at, true)]);
    fields.push(["Updated:".to_owned(), time_of(&incident.updated_at, true)]);
    if let Some(resolved) = &incident.resolved_at {
        let label = if incident.kind == "maintenance" {
            "Completed:"
        } else {
            "Resolved:"
        };
        fields.push([label.to_owned(), time_of(resolved, true)]);
    }
    let mut out = table(&fields, "");
    out.push('\n');
    if incident.updates.is_empty() {
        out.push_str("Timeline: no updates\n");
        return out;
    }
    out.push_str("Timeline (oldest first):\n");
    let mut updates: Vec<&UpdateView> = incident.updates.iter().collect();
    updates.sort_by_key(|u| {
        (
            Timestamp::parse_rfc3339(&u.at).map_or(i64::MIN, Timestamp::millis),
            u.id,
        )
    });
    for update in updates {
        let _ = writeln!(
            out,
            "  {}  {}",
            time_of(&update.at, true),
            printable(&update.status)
        );
        for line in update.body.lines() {
            let _ = writeln!(out, "    {}", printable(line));
        }
    }
    out
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a failed unwrap is a clear test failure"
)]
mod tests {
    use super::*;

    /// 2030-01-01T00:00:00Z.
    const T2030: i64 = 1_893_456_000_000;

    fn options() -> LocalOptions {
        LocalOptions {
            host: None,
            json: false,
        }
    }

    fn view(value: Value) -> IncidentView {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn names_are_the_servers() {
        use downtime_server::history as server;
        for impact in Impact::value_variants() {
            let name = impact.to_possible_value().unwrap();
            assert_eq!(name.get_name(), impact.as_str());
            assert!(
                server::Impact::parse(impact.as_str()).is_some(),
                "{impact:?}"
            );
        }
        for status in Status::value_variants() {
            let name = status.to_possible_value().unwrap();
            assert_eq!(name.get_name(), status.as_str());
            assert!(
                server::IncidentStatus::parse(status.as_str()).is_some(),
                "{status:?}"
            );
        }
        assert_eq!(
            server::IncidentKind::Maintenance.as_str(),
            Kind::Maintenance.as_str()
        );
        assert_eq!(
            server::IncidentKind::Incident.as_str(),
            Kind::Incident.as_str()
        );
    }

    #[test]
    fn times_are_rfc3339_now_or_from_now() {
        let now = T2030;
        assert_eq!(parse_time_at("now", now).unwrap().ms, now);
        assert_eq!(parse_time_at("+30m", now).unwrap().ms, now + 1_800_000);
        assert_eq!(parse_time_at("+2h", now).unwrap().ms, now + 7_200_000);
        assert_eq!(parse_time_at("+1d", now).unwrap().ms, now + 86_400_000);
        assert_eq!(parse_time_at("+45s", now).unwrap().ms, now + 45_000);
        assert_eq!(parse_time_at("+0m", now).unwrap().ms, now);
        assert_eq!(
            parse_time_at("2030-01-01T02:00:00+02:00", 0).unwrap().ms,
            T2030
        );
        let parsed = parse_time_at(" 2030-01-01T00:00:00Z ", 0).unwrap();
        assert_eq!(parsed.ms, T2030);
        assert_eq!(parsed.raw, " 2030-01-01T00:00:00Z ");
    }

    #[test]
    fn bad_times_say_what_is_expected() {
        for bad in [
            "",
            "tomorrow",
            "+",
            "+30",
            "+30x",
            "+-5m",
            "+1.5h",
            "-30m",
            "2030-01-01",
            "2030-13-01T00:00:00Z",
            "1893456000000",
        ] {
            let error = parse_time_at(bad, T2030).unwrap_err();
            assert_eq!(error, TIME_EXAMPLE, "{bad:?}");
        }
        for huge in ["+99999999999999999999d", "+9223372036854775807s"] {
            let error = parse_time_at(huge, T2030).unwrap_err();
            assert_eq!(error, "the time is too far in the future", "{huge:?}");
        }
        assert_eq!(
            parse_time_at("+100000d", i64::MAX - 1).unwrap_err(),
            "the time is too far in the future"
        );
    }

    #[test]
    fn ids_and_limits_are_checked() {
        assert_eq!(parse_id("7").unwrap(), 7);
        for bad in ["0", "-1", "abc", "", "1.5", "99999999999999999999"] {
            assert!(
                parse_id(bad)
                    .unwrap_err()
                    .starts_with("expected an incident id"),
                "{bad:?}"
            );
        }
        assert_eq!(parse_limit("500").unwrap(), 500);
        assert!(parse_limit("0").is_err());
        assert!(parse_limit("501").is_err());
    }

    #[test]
    fn window_must_end_after_it_starts() {
        let start = parse_time_at("+2h", T2030).unwrap();
        let end = parse_time_at("+1h", T2030).unwrap();
        let error = check_window(&start, &end).unwrap_err();
        assert_eq!(
            error,
            "invalid value '+1h' for --end: must be after --start '+2h' \
             (2030-01-01 01:00 UTC is not after 2030-01-01 02:00 UTC)"
        );
        assert!(check_window(&start, &start).is_err());
        assert!(check_window(&end, &start).is_ok());
    }

    #[test]
    fn bodies_carry_only_what_was_given() {
        let args = OpenArgs {
            title: "db <slow>".into(),
            impact: None,
            components: vec![],
            message: None,
            status: None,
            options: options(),
        };
        assert_eq!(open_body(&args), json!({"title": "db <slow>"}));
        let args = OpenArgs {
            title: "db".into(),
            impact: Some(Impact::Major),
            components: vec!["db".into(), "endpoint:home".into()],
            message: Some("looking".into()),
            status: Some(Status::Identified),
            options: options(),
        };
        assert_eq!(
            open_body(&args),
            json!({"title": "db", "impact": "major", "status": "identified",
                   "components": ["db", "endpoint:home"], "body": "looking"})
        );
        let args = UpdateArgs {
            id: 3,
            message: None,
            status: Some(Status::InProgress),
            options: options(),
        };
        assert_eq!(update_body(&args), json!({"status": "in_progress"}));
        let args = ScheduleArgs {
            title: "upgrade".into(),
            start: parse_time_at("now", T2030).unwrap(),
            end: parse_time_at("+1h", T2030).unwrap(),
            components: vec!["db".into()],
            message: None,
            impact: None,
            options: options(),
        };
        assert_eq!(
            schedule_body(&args),
            json!({"title": "upgrade", "components": ["db"],
                   "scheduled": {"start": T2030, "end": T2030 + 3_600_000}})
        );
    }

    #[test]
    fn edit_sends_no_body_so_the_timeline_is_untouched() {
        let mut args = EditArgs {
            id: 1,
            title: Some("new".into()),
            impact: None,
            components: vec![],
            clear_components: false,
            start: None,
            end: None,
            options: options(),
        };
        assert_eq!(edit_body(&args), json!({"title": "new"}));
        args.title = None;
        args.clear_components = true;
        assert_eq!(edit_body(&args), json!({"components": []}));
    }

    #[test]
    fn times_show_in_utc() {
        assert_eq!(time_text(T2030 + 61_000, false), "2030-01-01 00:01 UTC");
        assert_eq!(time_text(T2030 + 61_000, true), "2030-01-01 00:01:01 UTC");
        assert_eq!(
            time_of("2030-01-01T02:01:01+02:00", true),
            "2030-01-01 00:01:01 UTC"
        );
        assert_eq!(time_of("garbage", true), "garbage");
    }

    #[test]
    fn table_lists_newest_first_as_given() {
        let incidents = vec![
            view(
                json!({"id": 2, "kind": "maintenance", "title": "<b>upgrade</b>",
                "status": "scheduled", "impact": "maintenance", "components": ["proxy:db"],
                "created_at": "2030-01-01T00:05:00.000Z"}),
            ),
            view(json!({"id": 1, "kind": "incident", "title": "db slow",
                "status": "investigating", "impact": "minor", "components": [],
                "created_at": "2030-01-01T00:00:00.000Z"})),
        ];
        assert_eq!(
            incident_table(&incidents, None, None),
            "ID  KIND         STATUS         IMPACT       TITLE           COMPONENTS  CREATED (UTC)\n\
             2   maintenance  scheduled      maintenance  <b>upgrade</b>  proxy:db    2030-01-01 00:05\n\
             1   incident     investigating  minor        db slow         -           2030-01-01 00:00\n"
        );
        assert!(
            incident_table(&[], Some(Which::Open), Some(Kind::Maintenance))
                .starts_with("no open maintenances; ")
        );
        assert!(incident_table(&[], None, None).starts_with("no incidents or maintenances; "));
    }

    #[test]
    fn details_show_the_timeline_oldest_first() {
        let incident = view(json!({
            "id": 4, "kind": "incident", "title": "db slow", "status": "resolved",
            "impact": "major", "source": "drill", "drill": 9,
            "components": ["proxy:db", "endpoint:home"],
            "created_at": "2030-01-01T00:00:00.000Z", "updated_at": "2030-01-01T00:10:00.000Z",
            "resolved_at": "2030-01-01T00:10:00.000Z",
            "updates": [
                {"id": 3, "at": "2030-01-01T00:10:00.000Z", "status": "resolved", "body": "done"},
                {"id": 2, "at": "2030-01-01T00:05:00.000Z", "status": "identified",
                 "body": "disk\nfull\u{1b}[31m"},
                {"id": 1, "at": "2030-01-01T00:00:00.000Z", "status": "investigating", "body": ""}
            ]
        }));
        assert_eq!(
            incident_details(&incident),
            "Id:          4\n\
             Title:       db slow\n\
             Kind:        incident\n\
             Status:      resolved\n\
             Impact:      major\n\
             Components:  proxy:db, endpoint:home\n\
             Source:      drill 9\n\
             Created:     2030-01-01 00:00:00 UTC\n\
             Updated:     2030-01-01 00:10:00 UTC\n\
             Resolved:    2030-01-01 00:10:00 UTC\n\
             \n\
             Timeline (oldest first):\n\
             \x20 2030-01-01 00:00:00 UTC  investigating\n\
             \x20 2030-01-01 00:05:00 UTC  identified\n\
             \x20   disk\n\
             \x20   full\u{fffd}[31m\n\
             \x20 2030-01-01 00:10:00 UTC  resolved\n\
             \x20   done\n"
        );
    }

    #[test]
    fn maintenance_details_show_the_window() {
        let incident = view(json!({
            "id": 5, "kind": "maintenance", "title": "upgrade", "status": "scheduled",
            "impact": "maintenance", "source": "manual", "components": [],
            "scheduled_start": "2030-01-01T09:00:00.000Z",
            "scheduled_end": "2030-01-01T11:00:00.000Z",
            "created_at": "2030-01-01T00:00:00.000Z", "updated_at": "2030-01-01T00:00:00.000Z",
            "updates": []
        }));
        let text = incident_details(&incident);
        assert!(
            text.contains("Window:      2030-01-01 09:00 UTC to 2030-01-01 11:00 UTC\n"),
            "{text}"
        );
        assert!(text.contains("Components:  none\n"), "{text}");
        assert!(text.ends_with("Timeline: no updates\n"), "{text}");
    }
}
