//! The values the history store records and answers with.
//!
//! Times are Unix milliseconds in UTC ([`Timestamp`]), days are UTC days since the epoch
//! ([`Day`]): integers, so the same columns work in SQLite and PostgreSQL and no time zone
//! ever leaks into a rollup.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use downtime_model::{ProxyView, Toxic};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::state::{ComponentState, component_state, fault_state};

/// Milliseconds in a minute, a day.
pub(crate) const MINUTE_MS: i64 = 60_000;
/// Minutes in a UTC day.
pub(crate) const DAY_MINUTES: i64 = 1_440;

/// A point in time: Unix milliseconds, UTC. Serialized as RFC 3339 (`2024-05-01T12:00:00.000Z`)
/// so API clients and the status page read it without knowing our storage; deserialized
/// from RFC 3339 or from a number of milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current wall-clock time (history is about the calendar, not tokio's clock).
    pub fn now() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Timestamp(ms)
    }

    /// Unix milliseconds.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// The minute this instant falls in (minutes since the epoch).
    pub fn minute(self) -> i64 {
        self.0.div_euclid(MINUTE_MS)
    }

    /// The UTC day this instant falls in.
    pub fn day(self) -> Day {
        Day(self.minute().div_euclid(DAY_MINUTES))
    }

    /// RFC 3339 with milliseconds and `Z`; out-of-range values print as the raw number.
    pub fn rfc3339(self) -> String {
        let nanos = i128::from(self.0).saturating_mul(1_000_000);
        let Ok(dt) = time::OffsetDateTime::from_unix_timestamp_nanos(nanos) else {
            return self.0.to_string();
        };
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            dt.year(),
            u8::from(dt.month()),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second(),
            dt.millisecond()
        )
    }

    /// Parses RFC 3339 (any offset) into UTC milliseconds.
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        let dt = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .ok()?;
        let ms = dt.unix_timestamp_nanos().div_euclid(1_000_000);
        i64::try_from(ms).ok().map(Timestamp)
    }

    /// Parses a JSON value given for `field`: an RFC 3339 string or whole milliseconds.
    pub fn from_json(field: &str, value: &Value) -> Result<Self, super::HistoryError> {
        let parsed = match value {
            Value::String(s) => Timestamp::parse_rfc3339(s),
            Value::Number(n) => n.as_i64().map(Timestamp),
            _ => None,
        };
        parsed.ok_or_else(|| {
            super::HistoryError::invalid(
                field,
                format!("expected an RFC 3339 time or Unix milliseconds, got {value}"),
            )
        })
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Timestamp::from_json("time", &value).map_err(|e| match e {
            super::HistoryError::Invalid { detail, .. } => serde::de::Error::custom(detail),
            other => serde::de::Error::custom(other),
        })
    }
}

/// A UTC calendar day, counted from 1970-01-01 (day 0). Serialized as `YYYY-MM-DD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(pub i64);

impl Day {
    /// Today in UTC.
    pub fn today() -> Self {
        Timestamp::now().day()
    }

    /// The first minute of this day.
    pub fn first_minute(self) -> i64 {
        self.0.saturating_mul(DAY_MINUTES)
    }

    /// The start of the day.
    pub fn start(self) -> Timestamp {
        Timestamp(self.first_minute().saturating_mul(MINUTE_MS))
    }

    /// `n` days earlier (saturating).
    pub fn minus(self, n: i64) -> Self {
        Day(self.0.saturating_sub(n))
    }

    /// `YYYY-MM-DD`.
    pub fn iso(self) -> String {
        let date = i32::try_from(self.0.saturating_add(UNIX_EPOCH_JULIAN_DAY))
            .ok()
            .and_then(|j| time::Date::from_julian_day(j).ok());
        match date {
            Some(d) => format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day()),
            None => self.0.to_string(),
        }
    }
}

/// Julian day number of 1970-01-01.
const UNIX_EPOCH_JULIAN_DAY: i64 = 2_440_588;

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.iso())
    }
}

impl Serialize for Day {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.iso())
    }
}

/// Who caused a change: the status page and the feed say "by the CLI", "by a drill".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    /// An API client that is neither our CLI nor a drill (a Toxiproxy client library, curl).
    Api,
    /// The `downtime` command line (`User-Agent: downtime-cli/...`).
    Cli,
    /// The drill runner (`User-Agent: downtime-drill/...`).
    Drill,
    /// A fault's time to live ran out.
    Ttl,
    /// A scheduled action (maintenance windows; `User-Agent: downtime-schedule/...`).
    Schedule,
    /// The server itself (startup configuration, shutdown).
    System,
}

impl Actor {
    /// Derives the actor from a request's `User-Agent`.
    pub fn from_user_agent(user_agent: Option<&str>) -> Self {
        match user_agent {
            Some(ua) if ua.starts_with("downtime-cli/") => Actor::Cli,
            Some(ua) if ua.starts_with("downtime-drill/") => Actor::Drill,
            Some(ua) if ua.starts_with("downtime-schedule/") => Actor::Schedule,
            _ => Actor::Api,
        }
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Actor::Api => "api",
            Actor::Cli => "cli",
            Actor::Drill => "drill",
            Actor::Ttl => "ttl",
            Actor::Schedule => "schedule",
            Actor::System => "system",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "api" => Actor::Api,
            "cli" => Actor::Cli,
            "drill" => Actor::Drill,
            "ttl" => Actor::Ttl,
            "schedule" => Actor::Schedule,
            "system" => Actor::System,
            _ => return None,
        })
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A proxy was created (`POST /proxies`).
    ProxyCreated,
    /// A proxy was created or kept by `POST /populate`.
    ProxyPopulated,
    /// A proxy's address or enabled flag changed.
    ProxyChanged,
    /// A proxy was deleted.
    ProxyRemoved,
    /// A fault (toxic or HTTP fault) was added.
    FaultCreated,
    /// A fault's attributes or toxicity changed.
    FaultChanged,
    /// A fault removed itself when its time to live ran out.
    FaultExpired,
    /// A fault was deleted.
    FaultRemoved,
    /// `POST /reset`: every proxy enabled, every fault removed.
    Reset,
    /// `POST /halt`: every fault removed, drills told to stop.
    Halt,
    /// A drill started.
    DrillStarted,
    /// A drill entered a phase (a step, recovery).
    DrillPhase,
    /// A drill ended with a verdict.
    DrillEnded,
}

impl EventKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ProxyCreated => "proxy_created",
            EventKind::ProxyPopulated => "proxy_populated",
            EventKind::ProxyChanged => "proxy_changed",
            EventKind::ProxyRemoved => "proxy_removed",
            EventKind::FaultCreated => "fault_created",
            EventKind::FaultChanged => "fault_changed",
            EventKind::FaultExpired => "fault_expired",
            EventKind::FaultRemoved => "fault_removed",
            EventKind::Reset => "reset",
            EventKind::Halt => "halt",
            EventKind::DrillStarted => "drill_started",
            EventKind::DrillPhase => "drill_phase",
            EventKind::DrillEnded => "drill_ended",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        ALL_KINDS.iter().copied().find(|k| k.as_str() == text)
    }
}

const ALL_KINDS: [EventKind; 13] = [
    EventKind::ProxyCreated,
    EventKind::ProxyPopulated,
    EventKind::ProxyChanged,
    EventKind::ProxyRemoved,
    EventKind::FaultCreated,
    EventKind::FaultChanged,
    EventKind::FaultExpired,
    EventKind::FaultRemoved,
    EventKind::Reset,
    EventKind::Halt,
    EventKind::DrillStarted,
    EventKind::DrillPhase,
    EventKind::DrillEnded,
];

/// One thing that happened, as recorded (and as read back, with its id).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Row id once stored (0 before).
    pub id: i64,
    /// When it happened.
    pub at: Timestamp,
    /// What happened.
    pub kind: EventKind,
    /// Who did it.
    pub actor: Actor,
    /// The proxy concerned, if any.
    pub proxy: Option<String>,
    /// The fault concerned, if any.
    pub fault: Option<String>,
    /// The drill concerned, if any.
    pub drill: Option<i64>,
    /// The object after the change (proxy or fault JSON) or other details.
    pub detail: Value,
    /// The state the change puts the proxy's component in at least for this minute, so a
    /// fault that lives less than a sampling interval still shows in the minute history.
    #[serde(skip)]
    pub state: Option<ComponentState>,
}

impl Event {
    /// An event happening now with no subject.
    pub fn new(kind: EventKind, actor: Actor) -> Self {
        Event {
            id: 0,
            at: Timestamp::now(),
            kind,
            actor,
            proxy: None,
            fault: None,
            drill: None,
            detail: Value::Null,
            state: None,
        }
    }

    /// A change to a proxy, with the proxy as it is now.
    pub fn proxy(kind: EventKind, actor: Actor, view: &ProxyView) -> Self {
        let mut event = Event::new(kind, actor);
        event.proxy = Some(view.config.name.clone());
        event.detail = serde_json::to_value(view).unwrap_or(Value::Null);
        if kind != EventKind::ProxyRemoved {
            event.state = Some(component_state(view));
        }
        event
    }

    /// A proxy removed (the view is gone).
    pub fn proxy_removed(actor: Actor, proxy: &str) -> Self {
        let mut event = Event::new(EventKind::ProxyRemoved, actor);
        event.proxy = Some(proxy.to_owned());
        event
    }

    /// A fault created or changed, with the fault as it is now.
    pub fn fault(kind: EventKind, actor: Actor, proxy: &str, toxic: &Toxic) -> Self {
        let mut event = Event::new(kind, actor);
        event.proxy = Some(proxy.to_owned());
        event.fault = Some(toxic.name.clone());
        event.detail = serde_json::to_value(toxic).unwrap_or(Value::Null);
        if matches!(kind, EventKind::FaultCreated | EventKind::FaultChanged) {
            event.state = Some(fault_state(toxic));
        }
        event
    }

    /// A fault that is gone (deleted or expired); `toxic` when known.
    pub fn fault_gone(kind: EventKind, actor: Actor, proxy: &str, fault: &str) -> Self {
        let mut event = Event::new(kind, actor);
        event.proxy = Some(proxy.to_owned());
        event.fault = Some(fault.to_owned());
        event
    }

    /// Sets the details.
    pub fn with_detail(mut self, detail: Value) -> Self {
        self.detail = detail;
        self
    }

    /// Sets the drill.
    pub fn with_drill(mut self, drill: i64) -> Self {
        self.drill = Some(drill);
        self
    }
}

/// Which events to read back.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Only events at or after this time.
    pub since: Option<Timestamp>,
    /// Only events before this time.
    pub until: Option<Timestamp>,
    /// Only events of this proxy.
    pub proxy: Option<String>,
    /// Only events of this kind.
    pub kind: Option<EventKind>,
    /// Only events of this drill.
    pub drill: Option<i64>,
    /// At most this many, newest first (default and maximum 1000).
    pub limit: Option<u32>,
}

/// What a status page shows a row for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentKind {
    /// A dependency behind a proxy (`proxy:<name>`).
    Proxy,
    /// An app endpoint probed by drills (`endpoint:<probe name>`).
    Endpoint,
}

impl ComponentKind {
    /// The id prefix and stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentKind::Proxy => "proxy",
            ComponentKind::Endpoint => "endpoint",
        }
    }
}

/// The component id of a proxy: `proxy:<name>`.
pub fn proxy_component(name: &str) -> String {
    format!("proxy:{name}")
}

/// The component id of a probed endpoint: `endpoint:<probe name>`.
pub fn endpoint_component(name: &str) -> String {
    format!("endpoint:{name}")
}

/// Splits a component id into its kind and name (`None` without a known prefix).
pub fn parse_component(id: &str) -> Option<(ComponentKind, &str)> {
    if let Some(name) = id.strip_prefix("proxy:") {
        Some((ComponentKind::Proxy, name))
    } else {
        id.strip_prefix("endpoint:")
            .map(|name| (ComponentKind::Endpoint, name))
    }
}

/// A component the store has seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Component {
    /// `proxy:<name>` or `endpoint:<probe name>`.
    pub id: String,
    /// Proxy or endpoint.
    pub kind: ComponentKind,
    /// Display name (proxy or probe name).
    pub name: String,
    /// For endpoints, the probed URL; empty otherwise.
    pub description: String,
    /// First sample.
    pub first_seen: Timestamp,
    /// Latest sample.
    pub last_seen: Timestamp,
    /// State in the latest sampled minute.
    pub last_state: Option<ComponentState>,
}

/// One minute of one component, as the sampler (or a generator of test history) writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentMinute {
    /// Component id.
    pub component: String,
    /// Minutes since the epoch.
    pub minute: i64,
    /// The worst state seen in that minute.
    pub state: ComponentState,
}

/// One probe request of a drill, for the per-minute rollup of its endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeSample {
    /// Probe name (the endpoint component is `endpoint:<name>`).
    pub endpoint: String,
    /// The probed URL, shown as the component's description.
    #[serde(default)]
    pub url: String,
    /// When the request started.
    pub at: Timestamp,
    /// Whether every expectation held.
    pub ok: bool,
    /// Time to the full answer, in ms.
    #[serde(default)]
    pub latency_ms: u64,
}

/// One minute of one endpoint's probes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeMinute {
    /// Probe name.
    pub endpoint: String,
    /// Start of the minute.
    pub at: Timestamp,
    /// Requests sent.
    pub total: i64,
    /// Requests that passed.
    pub ok: i64,
    /// Mean latency in ms.
    pub latency_avg_ms: i64,
    /// Slowest request in ms.
    pub latency_max_ms: i64,
}

/// Uptime of a component on one UTC day.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DayStat {
    /// The day.
    pub day: Day,
    /// Percentage of the day's full length counted as up (see [`super::uptime_pct`]):
    /// unobserved minutes are not up; `None` when nothing was sampled that day.
    pub uptime_pct: Option<f64>,
    /// The day's full length in minutes: 1,440, or the minutes begun so far today.
    pub length_minutes: u32,
    /// Minutes of that length with nothing recorded (shown as "no data").
    pub no_data_minutes: u32,
    /// The worst state of the day; `None` when nothing was sampled.
    pub worst_state: Option<ComponentState>,
    /// Sampled minutes.
    pub minutes: u32,
    /// Minutes in partial outage.
    pub partial_minutes: u32,
    /// Minutes in major outage.
    pub major_minutes: u32,
    /// Minutes with degraded performance.
    pub degraded_minutes: u32,
    /// Minutes under maintenance.
    pub maintenance_minutes: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_days() {
        let t = Timestamp(1_714_564_800_123); // 2024-05-01T12:00:00.123Z
        assert_eq!(t.rfc3339(), "2024-05-01T12:00:00.123Z");
        assert_eq!(t.day().iso(), "2024-05-01");
        assert_eq!(Day(0).iso(), "1970-01-01");
        assert_eq!(
            Timestamp::parse_rfc3339("2024-05-01T14:00:00.123+02:00"),
            Some(t)
        );
        assert_eq!(Timestamp(-1).day(), Day(-1));
        assert_eq!(Day(19_844).start().day(), Day(19_844));
    }

    #[test]
    fn actors_from_user_agents() {
        assert_eq!(
            Actor::from_user_agent(Some("downtime-cli/0.1.0")),
            Actor::Cli
        );
        assert_eq!(
            Actor::from_user_agent(Some("downtime-drill/0.1.0")),
            Actor::Drill
        );
        assert_eq!(
            Actor::from_user_agent(Some("downtime-schedule/0.1.0")),
            Actor::Schedule
        );
        assert_eq!(Actor::from_user_agent(Some("curl/8")), Actor::Api);
        assert_eq!(Actor::from_user_agent(None), Actor::Api);
        for kind in ALL_KINDS {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
    }
}
