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
//!
//! Layout:
//! - `mod.rs`: the clap definitions (subcommands, flags, value names), the id and limit
//!   parsers, and [`run`], which dispatches a subcommand to its function;
//! - `commands`: `list`, `show`, `open`, `update`, `resolve` and `edit`, each one request
//!   (two for `resolve`) with the body built from the flags;
//! - `maintenance`: scheduled maintenance, i.e. `schedule` and the window it takes
//!   (`--start`/`--end` times, parsed and checked);
//! - `view`: the server's answers as types, and the tables and timelines printed for them.

mod commands;
mod maintenance;
mod view;

use anyhow::Context as _;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Subcommand, ValueEnum};

use super::api::Api;
use super::{LocalOptions, Output, values};
use commands::{edit, list, open, resolve, show, update};
use maintenance::{check_window, parse_time, schedule};

/// Most incidents one `list` asks for (the server's own upper bound).
const MAX_LIST: u32 = 500;

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

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "a failed unwrap is a clear test failure"
)]
mod tests {
    use super::*;

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
}
