//! Drill files: declarative outage scenarios, parsed and checked before anything runs.
//!
//! A drill file is TOML. Parsing keeps every value's position so that *every* problem
//! (unknown key, wrong type, negative duration, overlapping steps on one fault, bad fault
//! attributes) is reported at once with its line and key, and nothing is injected unless
//! the whole file is valid. The reference is `docs/drills.md`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::{ProxyConfig, ProxyRequest, Toxic, ToxicKind, ToxicRequest};

/// Where the drill's faults are injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerTarget {
    /// A downtime (or Toxiproxy) API at this base URL.
    Url(String),
    /// A server started inside the `drill run` process.
    Embedded,
}

/// A validated drill.
#[derive(Debug, Clone)]
pub struct DrillPlan {
    /// Human name.
    pub name: String,
    /// The API to drive.
    pub server: ServerTarget,
    /// Seed for every random choice the drill makes (fault seeds derive from it).
    pub seed: u64,
    /// Observation before any fault; the steady-state check runs over it.
    pub baseline: Duration,
    /// Observation after the last fault is removed.
    pub recovery: Duration,
    /// Proxies created for the drill and deleted after it.
    pub proxies: Vec<(ProxyConfig, Vec<Toxic>)>,
    /// Requests that tell whether the app under test is healthy.
    pub probes: Vec<Probe>,
    /// Fault steps on the timeline (offsets from the end of the baseline).
    pub steps: Vec<Step>,
    /// Availability required during the baseline before anything is injected.
    pub steady_state: Option<f64>,
    /// Pass/fail thresholds per phase.
    pub verdict: Verdict,
    /// Abort early when availability collapses.
    pub stop: Option<StopCondition>,
}

/// An HTTP probe of the app under test.
#[derive(Debug, Clone)]
pub struct Probe {
    /// Name shown in reports.
    pub name: String,
    /// Request method.
    pub method: String,
    /// Full URL.
    pub url: String,
    /// Request headers.
    pub headers: BTreeMap<String, String>,
    /// Request body.
    pub body: Option<String>,
    /// Time between two requests.
    pub interval: Duration,
    /// Per-request timeout; a hang counts as a failure after it.
    pub timeout: Duration,
    /// What a successful answer looks like.
    pub expect: Expect,
}

/// Conditions on a probe's answer; all must hold.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// Accepted statuses as inclusive ranges (default 200..=299).
    pub status: Vec<(u16, u16)>,
    /// Substring the body must contain.
    pub body_contains: Option<String>,
    /// JSON pointer → expected value.
    pub json: BTreeMap<String, Value>,
    /// Latency budget.
    pub latency: Option<Duration>,
}

/// A fault window on the timeline.
#[derive(Debug, Clone)]
pub struct Step {
    /// Name (unique), used in reports and verdict overrides.
    pub name: String,
    /// Offset from the end of the baseline.
    pub at: Duration,
    /// How long the faults stay.
    pub duration: Duration,
    /// Faults applied together at `at` and removed together after `duration`.
    pub faults: Vec<FaultSpec>,
    /// Optional probability ramp of every fault of the step.
    pub ramp: Option<Ramp>,
}

/// One fault of a step.
#[derive(Debug, Clone)]
pub struct FaultSpec {
    /// Proxy to inject into.
    pub proxy: String,
    /// The toxic or HTTP fault, as the API's create body.
    pub request: ToxicRequest,
}

/// Steps a fault's probability from `from` to `to` in `steps` equal steps over the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ramp {
    /// First probability.
    pub from: f32,
    /// Last probability.
    pub to: f32,
    /// Number of levels (≥ 2).
    pub steps: u32,
}

impl Ramp {
    /// The probability of level `i` (0-based) and the offset at which it starts.
    pub fn level(&self, i: u32, window: Duration) -> (f32, Duration) {
        let n = self.steps.max(2);
        let fraction = i.min(n - 1) as f32 / (n - 1) as f32;
        let p = self.from + (self.to - self.from) * fraction;
        let offset = window.checked_mul(i.min(n - 1)).unwrap_or(Duration::MAX) / n;
        (p, offset)
    }
}

/// Thresholds of one phase; absent ones are not checked.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Thresholds {
    /// Minimum availability in percent.
    pub availability: Option<f64>,
    /// Maximum 95th-percentile latency.
    pub p95: Option<Duration>,
    /// Maximum 99th-percentile latency.
    pub p99: Option<Duration>,
}

/// Thresholds for the baseline, every fault step (with overrides), and the recovery.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    /// Before any fault.
    pub baseline: Thresholds,
    /// During each step unless overridden.
    pub faults: Thresholds,
    /// Per step name.
    pub steps: BTreeMap<String, Thresholds>,
    /// After the faults are removed.
    pub recovery: Thresholds,
}

/// Abort when availability over the last `window` falls below `availability_below` percent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StopCondition {
    /// Sliding window.
    pub window: Duration,
    /// Threshold in percent.
    pub availability_below: f64,
}

/// A problem in a drill file: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line.
    pub line: usize,
    /// Dotted key path, e.g. `step[1].fault[0].type`.
    pub key: String,
    /// What is wrong, naming the bad value.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.key, self.message)
    }
}

/// The largest values a drill file accepts (documented in `docs/drills.md`).
///
/// Every duration of a drill becomes a deadline (`start + baseline + step.at + ...`) and every
/// count a loop or an allocation, so each is bounded here, at `drill check`, and the runner's
/// arithmetic on a valid plan cannot overflow: the whole planned length is at most
/// `MAX_PHASE × 4` (baseline, step start, step duration, recovery), about four days.
pub mod limits {
    use std::time::Duration;

    /// `baseline`, `recovery`, a step's `at` and `duration`, `stop.window`: 24 h.
    pub const MAX_PHASE: Duration = Duration::from_secs(86_400);
    /// A probe's `interval`, `timeout` and `expect.latency`, `verdict` `p95`/`p99`: 1 h.
    pub const MAX_PROBE: Duration = Duration::from_secs(3_600);
    /// Number of `[[probe]]` tables.
    pub const MAX_PROBES: usize = 100;
    /// Number of `[[step]]` tables.
    pub const MAX_STEPS: usize = 1_000;
    /// Number of `[[step.fault]]` tables in one step.
    pub const MAX_FAULTS_PER_STEP: usize = 100;
    /// A fault's `first_n` and `every_nth`.
    pub const MAX_COUNT: u64 = 1_000_000_000_000;
}

/// `d` as text for messages: `24h`, `1h`, `90s`, `250ms`.
fn show(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(3_600_000) && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Parses a duration such as `250ms`, `2s`, `1.5s`, `3m` or `1h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.starts_with('-') {
        return Err(format!("duration must not be negative, got {text:?}"));
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("expected a duration like 500ms, 2s or 1m, got {text:?}"))?;
    let scale = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {text:?} (use ms, s, m or h)"
            ));
        }
    };
    let secs = value * scale;
    if !secs.is_finite() || !(0.0..=31_536_000.0 * 10.0).contains(&secs) {
        return Err(format!("duration {text:?} is out of range (0 to 10 years)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

struct Walker<'t> {
    text: &'t str,
    problems: Vec<Problem>,
}

type Table<'i> = DeTable<'i>;
type Val<'i> = Spanned<DeValue<'i>>;

impl<'t> Walker<'t> {
    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn problem(&mut self, offset: usize, key: impl Into<String>, message: impl Into<String>) {
        let line = self.line(offset);
        self.problems.push(Problem {
            line,
            key: key.into(),
            message: message.into(),
        });
    }

    /// Reports keys of `table` that are not in `allowed`.
    fn known_keys(&mut self, table: &Table<'_>, path: &str, allowed: &[&str]) {
        for (k, _) in table.iter() {
            if !allowed.contains(&k.get_ref().as_ref()) {
                let key = join(path, k.get_ref());
                self.problem(
                    k.span().start,
                    key,
                    format!("unknown key (expected one of: {})", allowed.join(", ")),
                );
            }
        }
    }

    fn str(&mut self, table: &Table<'_>, path: &str, key: &str) -> Option<String> {
        let v = get(table, key)?;
        match v.get_ref().as_str() {
            Some(s) => Some(s.to_owned()),
            None => {
                let t = v.get_ref().type_str();
                self.problem(
                    v.span().start,
                    join(path, key),
                    format!("expected a string, got {t}"),
                );
                None
            }
        }
    }

    /// A duration of at most `max`; a bare integer is seconds.
    fn duration(
        &mut self,
        table: &Table<'_>,
        path: &str,
        key: &str,
        max: Duration,
    ) -> Option<Duration> {
        let v = get(table, key)?;
        let parsed = match v.get_ref() {
            DeValue::String(s) => parse_duration(s).and_then(|d| {
                if d <= max {
                    Ok(d)
                } else {
                    Err(format!("must be at most {}, got {s:?}", show(max)))
                }
            }),
            DeValue::Integer(i) => {
                let text = i.as_str().replace('_', "");
                match text.parse::<i64>() {
                    Ok(n) if n < 0 => Err(format!("duration must not be negative, got {text}")),
                    Ok(n) if n.unsigned_abs() <= max.as_secs() => {
                        Ok(Duration::from_secs(n.unsigned_abs()))
                    }
                    _ => Err(format!(
                        "must be at most {} ({} seconds), got {text}",
                        show(max),
                        max.as_secs()
                    )),
                }
            }
            other => Err(format!(
                "expected a duration like \"500ms\", got {}",
                other.type_str()
            )),
        };
        match parsed {
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(v.span().start, join(path, key), e);
                None
            }
        }
    }

    fn number(&mut self, table: &Table<'_>, path: &str, key: &str) -> Option<f64> {
        let v = get(table, key)?;
        let n = match v.get_ref() {
            DeValue::Integer(i) => i.as_str().replace('_', "").parse::<f64>().ok(),
            DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().ok(),
            _ => None,
        };
        if n.is_none() {
            let t = v.get_ref().type_str();
            self.problem(
                v.span().start,
                join(path, key),
                format!("expected a number, got {t}"),
            );
        }
        n
    }

    fn percent(&mut self, table: &Table<'_>, path: &str, key: &str) -> Option<f64> {
        let n = self.number(table, path, key)?;
        if !(0.0..=100.0).contains(&n) {
            let at = get(table, key).map_or(0, |v| v.span().start);
            self.problem(
                at,
                join(path, key),
                format!("must be a percentage within 0..100, got {n}"),
            );
            return None;
        }
        Some(n)
    }

    fn integer(&mut self, table: &Table<'_>, path: &str, key: &str) -> Option<u64> {
        let v = get(table, key)?;
        let parsed = match v.get_ref() {
            DeValue::Integer(i) => i.as_str().replace('_', "").parse::<u64>().map_err(|_| {
                format!(
                    "must be a whole number from 0 to {}, got {}",
                    u64::MAX,
                    i.as_str()
                )
            }),
            other => Err(format!("expected an integer, got {}", other.type_str())),
        };
        match parsed {
            Ok(n) => Some(n),
            Err(e) => {
                self.problem(v.span().start, join(path, key), e);
                None
            }
        }
    }

    /// An integer of at most [`limits::MAX_COUNT`].
    fn count(&mut self, table: &Table<'_>, path: &str, key: &str) -> Option<u64> {
        let n = self.integer(table, path, key)?;
        if n > limits::MAX_COUNT {
            let at = get(table, key).map_or(0, |v| v.span().start);
            self.problem(
                at,
                join(path, key),
                format!("must be at most {}, got {n}", limits::MAX_COUNT),
            );
            return None;
        }
        Some(n)
    }

    /// Reports more than `max` tables of an array.
    fn at_most(&mut self, items: usize, max: usize, at: usize, key: String, what: &str) {
        if items > max {
            self.problem(at, key, format!("at most {max} {what}, got {items}"));
        }
    }

    fn table<'a, 'i>(
        &mut self,
        table: &'a Table<'i>,
        path: &str,
        key: &str,
    ) -> Option<&'a Table<'i>> {
        let v = get(table, key)?;
        match v.get_ref().as_table() {
            Some(t) => Some(t),
            None => {
                let t = v.get_ref().type_str();
                self.problem(
                    v.span().start,
                    join(path, key),
                    format!("expected a table, got {t}"),
                );
                None
            }
        }
    }

    fn tables<'a, 'i>(
        &mut self,
        table: &'a Table<'i>,
        path: &str,
        key: &str,
    ) -> Vec<(usize, &'a Table<'i>)> {
        let Some(v) = get(table, key) else {
            return Vec::new();
        };
        let Some(items) = v.get_ref().as_array() else {
            let t = v.get_ref().type_str();
            self.problem(
                v.span().start,
                join(path, key),
                format!("expected an array of tables ([[{key}]]), got {t}"),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item.get_ref().as_table() {
                Some(t) => out.push((item.span().start, t)),
                None => {
                    let t = item.get_ref().type_str();
                    self.problem(
                        item.span().start,
                        format!("{}[{i}]", join(path, key)),
                        format!("expected a table, got {t}"),
                    );
                }
            }
        }
        out
    }

    fn string_map(&mut self, table: &Table<'_>, path: &str, key: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Some(t) = self.table(table, path, key) {
            let p = join(path, key);
            for (k, v) in t.iter() {
                match v.get_ref().as_str() {
                    Some(s) => {
                        out.insert(k.get_ref().to_string(), s.to_owned());
                    }
                    None => {
                        let ty = v.get_ref().type_str();
                        self.problem(
                            v.span().start,
                            join(&p, k.get_ref()),
                            format!("expected a string, got {ty}"),
                        );
                    }
                }
            }
        }
        out
    }
}

fn get<'a, 'i>(table: &'a Table<'i>, key: &str) -> Option<&'a Val<'i>> {
    table
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .map(|(_, v)| v)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// TOML value → JSON value (for fault attributes and match tables).
fn to_json(v: &DeValue<'_>) -> Value {
    match v {
        DeValue::String(s) => Value::String(s.to_string()),
        DeValue::Integer(i) => i
            .as_str()
            .replace('_', "")
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or(Value::Null),
        DeValue::Float(f) => f
            .as_str()
            .replace('_', "")
            .parse::<f64>()
            .ok()
            .and_then(|x| serde_json::Number::from_f64(x).map(Value::Number))
            .unwrap_or(Value::Null),
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(d) => Value::String(d.to_string()),
        DeValue::Array(items) => Value::Array(items.iter().map(|i| to_json(i.get_ref())).collect()),
        DeValue::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| (k.get_ref().to_string(), to_json(v.get_ref())))
                .collect(),
        ),
    }
}

fn thresholds(w: &mut Walker<'_>, table: &Table<'_>, path: &str) -> Thresholds {
    w.known_keys(table, path, &["availability", "p95", "p99"]);
    Thresholds {
        availability: w.percent(table, path, "availability"),
        p95: w.duration(table, path, "p95", limits::MAX_PROBE),
        p99: w.duration(table, path, "p99", limits::MAX_PROBE),
    }
}

fn status_ranges(w: &mut Walker<'_>, table: &Table<'_>, path: &str) -> Vec<(u16, u16)> {
    let Some(v) = get(table, "status") else {
        return vec![(200, 299)];
    };
    let key = join(path, "status");
    let items: Vec<&Val<'_>> = match v.get_ref() {
        DeValue::Array(a) => a.iter().collect(),
        _ => vec![v],
    };
    let mut out = Vec::new();
    for item in items {
        let parsed = match item.get_ref() {
            DeValue::Integer(i) => i.as_str().parse::<u16>().ok().map(|s| (s, s)),
            DeValue::String(s) => {
                let s = s.trim();
                match s.split_once("..").or_else(|| s.split_once('-')) {
                    Some((a, b)) => match (
                        a.trim().parse::<u16>(),
                        b.trim().trim_start_matches('=').parse::<u16>(),
                    ) {
                        (Ok(a), Ok(b)) if a <= b => Some((a, b)),
                        _ => None,
                    },
                    None => s.parse::<u16>().ok().map(|x| (x, x)),
                }
            }
            _ => None,
        };
        match parsed {
            Some((a, b)) if (100..=599).contains(&a) && (100..=599).contains(&b) => {
                out.push((a, b))
            }
            _ => w.problem(
                item.span().start,
                key.clone(),
                format!(
                    "expected a status (100..599) or range like \"200-299\", got {}",
                    to_json(item.get_ref())
                ),
            ),
        }
    }
    out
}

fn probe(w: &mut Walker<'_>, table: &Table<'_>, path: &str, at: usize) -> Option<Probe> {
    w.known_keys(
        table,
        path,
        &[
            "name", "method", "url", "headers", "body", "interval", "timeout", "expect",
        ],
    );
    let name = w.str(table, path, "name");
    let url = w.str(table, path, "url");
    if url.is_none() && get(table, "url").is_none() {
        w.problem(at, join(path, "url"), "missing (every probe needs a url)");
    }
    if let Some(u) = &url
        && !(u.starts_with("http://") || u.starts_with("https://"))
    {
        let off = get(table, "url").map_or(at, |v| v.span().start);
        w.problem(
            off,
            join(path, "url"),
            format!("expected an http:// or https:// URL, got {u:?}"),
        );
    }
    let method = w
        .str(table, path, "method")
        .unwrap_or_else(|| "GET".to_owned());
    let headers = w.string_map(table, path, "headers");
    let body = w.str(table, path, "body");
    let interval = w
        .duration(table, path, "interval", limits::MAX_PROBE)
        .unwrap_or(Duration::from_millis(500));
    if interval.is_zero() {
        let off = get(table, "interval").map_or(at, |v| v.span().start);
        w.problem(off, join(path, "interval"), "must be greater than 0");
    }
    let timeout = w
        .duration(table, path, "timeout", limits::MAX_PROBE)
        .unwrap_or(Duration::from_secs(2));
    let mut expect = Expect {
        status: vec![(200, 299)],
        ..Expect::default()
    };
    if let Some(e) = w.table(table, path, "expect") {
        let p = join(path, "expect");
        w.known_keys(e, &p, &["status", "body_contains", "json", "latency"]);
        expect.status = status_ranges(w, e, &p);
        expect.body_contains = w.str(e, &p, "body_contains");
        expect.latency = w.duration(e, &p, "latency", limits::MAX_PROBE);
        if let Some(j) = w.table(e, &p, "json") {
            for (k, v) in j.iter() {
                let pointer = k.get_ref().to_string();
                if !(pointer.is_empty() || pointer.starts_with('/')) {
                    w.problem(
                        k.span().start,
                        join(&join(&p, "json"), &pointer),
                        "a JSON pointer starts with /",
                    );
                }
                expect.json.insert(pointer, to_json(v.get_ref()));
            }
        }
    }
    Some(Probe {
        name: name.unwrap_or_else(|| url.clone().unwrap_or_default()),
        method,
        url: url?,
        headers,
        body,
        interval,
        timeout,
        expect,
    })
}

fn fault(w: &mut Walker<'_>, table: &Table<'_>, path: &str, at: usize) -> Option<FaultSpec> {
    w.known_keys(
        table,
        path,
        &[
            "proxy",
            "type",
            "name",
            "stream",
            "toxicity",
            "attributes",
            "match",
            "first_n",
            "every_nth",
        ],
    );
    let proxy = w.str(table, path, "proxy");
    if get(table, "proxy").is_none() {
        w.problem(
            at,
            join(path, "proxy"),
            "missing (which proxy to inject into)",
        );
    }
    let kind = w.str(table, path, "type");
    match &kind {
        None if get(table, "type").is_none() => w.problem(at, join(path, "type"), "missing"),
        Some(t) if !ToxicKind::is_known_type(t) => {
            let off = get(table, "type").map_or(at, |v| v.span().start);
            w.problem(off, join(path, "type"), format!("unknown fault type {t:?}"));
        }
        _ => {}
    }
    let toxicity = w.number(table, path, "toxicity");
    if let Some(t) = toxicity
        && !(0.0..=1.0).contains(&t)
    {
        let off = get(table, "toxicity").map_or(at, |v| v.span().start);
        w.problem(
            off,
            join(path, "toxicity"),
            format!("must be a probability within 0..1, got {t}"),
        );
    }
    let request = ToxicRequest {
        name: w.str(table, path, "name"),
        kind: kind.clone(),
        stream: w.str(table, path, "stream"),
        toxicity: toxicity.map(|t| t as f32),
        attributes: get(table, "attributes").map(|v| to_json(v.get_ref())),
        matcher: None,
        first_n: w.count(table, path, "first_n"),
        every_nth: w.count(table, path, "every_nth"),
        ttl: None,
    };
    let mut request = request;
    if let Some(m) = get(table, "match") {
        match serde_json::from_value(to_json(m.get_ref())) {
            Ok(parsed) => request.matcher = Some(parsed),
            Err(e) => w.problem(m.span().start, join(path, "match"), e.to_string()),
        }
    }
    let known_type = kind.as_deref().is_some_and(ToxicKind::is_known_type);
    if known_type {
        // Let the model check attributes and bounds exactly as the API will.
        if let Err(e) = request.clone().into_toxic(|_| false) {
            let off = get(table, "attributes").map_or(at, |v| v.span().start);
            w.problem(off, path.to_owned(), e.to_string());
        }
    }
    Some(FaultSpec {
        proxy: proxy?,
        request,
    })
}

impl DrillPlan {
    /// Parses and checks a drill file; on failure returns every problem found.
    pub fn parse(text: &str) -> Result<Self, Vec<Problem>> {
        let mut w = Walker {
            text,
            problems: Vec::new(),
        };
        let doc = match DeTable::parse(text) {
            Ok(doc) => doc,
            Err(e) => {
                let line = e.span().map_or(1, |s| w.line(s.start));
                return Err(vec![Problem {
                    line,
                    key: "(syntax)".to_owned(),
                    message: e.message().to_owned(),
                }]);
            }
        };
        let root = doc.get_ref();
        w.known_keys(
            root,
            "",
            &[
                "name",
                "server",
                "seed",
                "baseline",
                "recovery",
                "proxy",
                "probe",
                "step",
                "steady_state",
                "verdict",
                "stop",
            ],
        );
        let name = w
            .str(root, "", "name")
            .unwrap_or_else(|| "drill".to_owned());
        let server = match w.str(root, "", "server").as_deref() {
            None | Some("embedded") => ServerTarget::Embedded,
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                ServerTarget::Url(url.trim_end_matches('/').to_owned())
            }
            Some(other) => {
                let off = get(root, "server").map_or(0, |v| v.span().start);
                w.problem(
                    off,
                    "server",
                    format!("expected \"embedded\" or an http:// URL, got {other:?}"),
                );
                ServerTarget::Embedded
            }
        };
        let seed = w.integer(root, "", "seed").unwrap_or(1);
        let baseline = w
            .duration(root, "", "baseline", limits::MAX_PHASE)
            .unwrap_or(Duration::from_secs(5));
        let recovery = w
            .duration(root, "", "recovery", limits::MAX_PHASE)
            .unwrap_or(Duration::from_secs(5));

        let mut proxies = Vec::new();
        for (i, (at, t)) in w.tables(root, "", "proxy").into_iter().enumerate() {
            let path = format!("proxy[{i}]");
            w.known_keys(
                t,
                &path,
                &[
                    "name", "listen", "upstream", "enabled", "protocol", "toxics",
                ],
            );
            let json = to_json(&DeValue::Table(t.clone()));
            match serde_json::from_value::<ProxyRequest>(json) {
                Ok(req) => match req.validate(Some(i + 1)) {
                    Ok(p) => proxies.push(p),
                    Err(e) => w.problem(at, path, e.to_string()),
                },
                Err(e) => w.problem(at, path, e.to_string()),
            }
        }

        let mut probes = Vec::new();
        let probe_tables = w.tables(root, "", "probe");
        let first = probe_tables.first().map_or(0, |(at, _)| *at);
        w.at_most(
            probe_tables.len(),
            limits::MAX_PROBES,
            first,
            "probe".to_owned(),
            "probes per drill file",
        );
        for (i, (at, t)) in probe_tables.into_iter().enumerate() {
            if let Some(p) = probe(&mut w, t, &format!("probe[{i}]"), at) {
                probes.push(p);
            }
        }
        if probes.is_empty() && w.problems.is_empty() {
            w.problem(
                0,
                "probe",
                "a drill needs at least one [[probe]] of the app under test",
            );
        }

        let mut steps: Vec<Step> = Vec::new();
        let mut step_lines = Vec::new();
        let step_tables = w.tables(root, "", "step");
        let first = step_tables.first().map_or(0, |(at, _)| *at);
        w.at_most(
            step_tables.len(),
            limits::MAX_STEPS,
            first,
            "step".to_owned(),
            "steps per drill file",
        );
        for (i, (at, t)) in step_tables.into_iter().enumerate() {
            let path = format!("step[{i}]");
            w.known_keys(t, &path, &["name", "at", "duration", "fault", "ramp"]);
            let name = w
                .str(t, &path, "name")
                .unwrap_or_else(|| format!("step-{}", i + 1));
            if steps.iter().any(|s| s.name == name) {
                w.problem(
                    at,
                    join(&path, "name"),
                    format!("step name {name:?} is used twice"),
                );
            }
            let start = w
                .duration(t, &path, "at", limits::MAX_PHASE)
                .unwrap_or(Duration::ZERO);
            let duration = w.duration(t, &path, "duration", limits::MAX_PHASE);
            if get(t, "duration").is_none() {
                w.problem(
                    at,
                    join(&path, "duration"),
                    "missing (how long the faults stay)",
                );
            }
            let mut faults = Vec::new();
            let fault_tables = w.tables(t, &path, "fault");
            w.at_most(
                fault_tables.len(),
                limits::MAX_FAULTS_PER_STEP,
                at,
                join(&path, "fault"),
                "faults in one step",
            );
            for (j, (fat, ft)) in fault_tables.into_iter().enumerate() {
                if let Some(f) = fault(&mut w, ft, &format!("{path}.fault[{j}]"), fat) {
                    faults.push(f);
                }
            }
            if faults.is_empty() && get(t, "fault").is_none() {
                w.problem(
                    at,
                    join(&path, "fault"),
                    "a step needs at least one [[step.fault]]",
                );
            }
            let ramp = w.table(t, &path, "ramp").and_then(|r| {
                let p = join(&path, "ramp");
                w.known_keys(r, &p, &["from", "to", "steps"]);
                let from = w.number(r, &p, "from");
                let to = w.number(r, &p, "to");
                let n = w.integer(r, &p, "steps");
                for (key, v) in [("from", from), ("to", to)] {
                    if let Some(v) = v.filter(|v| !(0.0..=1.0).contains(v)) {
                        let off = get(r, key).map_or(at, |x| x.span().start);
                        w.problem(
                            off,
                            join(&p, key),
                            format!("must be a probability within 0..1, got {v}"),
                        );
                    }
                }
                if let Some(n) = n.filter(|n| *n < 2 || *n > 10_000) {
                    let off = get(r, "steps").map_or(at, |x| x.span().start);
                    w.problem(
                        off,
                        join(&p, "steps"),
                        format!("must be within 2..10000, got {n}"),
                    );
                }
                for (key, missing) in [
                    ("from", from.is_none()),
                    ("to", to.is_none()),
                    ("steps", n.is_none()),
                ] {
                    if missing && get(r, key).is_none() {
                        w.problem(
                            at,
                            join(&p, key),
                            "missing (a ramp needs from, to and steps)",
                        );
                    }
                }
                Some(Ramp {
                    from: from? as f32,
                    to: to? as f32,
                    steps: u32::try_from(n?).ok()?,
                })
            });
            if let Some(duration) = duration {
                step_lines.push(at);
                steps.push(Step {
                    name,
                    at: start,
                    duration,
                    faults,
                    ramp,
                });
            }
        }
        // Two steps may not hold the same fault (proxy + name) at the same time.
        for (a, sa) in steps.iter().enumerate() {
            for sb in steps.iter().skip(a + 1) {
                let overlap = sa.at < sb.at.saturating_add(sb.duration)
                    && sb.at < sa.at.saturating_add(sa.duration);
                if !overlap {
                    continue;
                }
                for fa in &sa.faults {
                    for fb in &sb.faults {
                        if fa.proxy == fb.proxy && fault_name(sa, fa) == fault_name(sb, fb) {
                            let line = step_lines.get(a + 1).copied().unwrap_or(0);
                            w.problem(
                                line,
                                format!("step {:?}", sb.name),
                                format!(
                                    "overlaps step {:?} on the same fault {:?} of proxy {:?}",
                                    sa.name,
                                    fault_name(sa, fa),
                                    fa.proxy
                                ),
                            );
                        }
                    }
                }
            }
        }

        // A fault on a proxy the file declares must suit its protocol: the drill creates
        // that proxy, so an HTTP fault on a TCP one would only fail mid-drill.
        for (i, step) in steps.iter().enumerate() {
            for f in &step.faults {
                let kind = f.request.kind.as_deref().unwrap_or_default();
                let declared = proxies.iter().find(|(c, _)| c.name == f.proxy);
                if let Some((config, _)) = declared
                    && config.protocol == crate::proxy::Protocol::Tcp
                    && crate::http_fault::HTTP_FAULT_TYPES.contains(&kind)
                {
                    let line = step_lines.get(i).copied().unwrap_or(0);
                    w.problem(
                        line,
                        format!("step {:?}", step.name),
                        format!(
                            "{kind:?} is an HTTP fault but proxy {:?} of this file is a TCP proxy (set protocol = \"http\" on it)",
                            f.proxy
                        ),
                    );
                }
            }
        }

        let steady_state = w.table(root, "", "steady_state").and_then(|t| {
            w.known_keys(t, "steady_state", &["availability"]);
            w.percent(t, "steady_state", "availability")
        });
        let mut verdict = Verdict::default();
        if let Some(v) = w.table(root, "", "verdict") {
            w.known_keys(v, "verdict", &["baseline", "faults", "recovery", "step"]);
            if let Some(t) = w.table(v, "verdict", "baseline") {
                verdict.baseline = thresholds(&mut w, t, "verdict.baseline");
            }
            if let Some(t) = w.table(v, "verdict", "faults") {
                verdict.faults = thresholds(&mut w, t, "verdict.faults");
            }
            if let Some(t) = w.table(v, "verdict", "recovery") {
                verdict.recovery = thresholds(&mut w, t, "verdict.recovery");
            }
            if let Some(per) = w.table(v, "verdict", "step") {
                for (k, val) in per.iter() {
                    let name = k.get_ref().to_string();
                    let path = format!("verdict.step.{name}");
                    if !steps.iter().any(|s| s.name == name) {
                        w.problem(k.span().start, path.clone(), "no step has this name");
                    }
                    match val.get_ref().as_table() {
                        Some(t) => {
                            let th = thresholds(&mut w, t, &path);
                            verdict.steps.insert(name, th);
                        }
                        None => w.problem(val.span().start, path, "expected a table"),
                    }
                }
            }
        }
        let stop = w.table(root, "", "stop").and_then(|t| {
            w.known_keys(t, "stop", &["window", "availability_below"]);
            Some(StopCondition {
                window: w
                    .duration(t, "stop", "window", limits::MAX_PHASE)
                    .unwrap_or(Duration::from_secs(10)),
                availability_below: w.percent(t, "stop", "availability_below")?,
            })
        });
        if w.problems.is_empty() {
            Ok(DrillPlan {
                name,
                server,
                seed,
                baseline,
                recovery,
                proxies,
                probes,
                steps,
                steady_state,
                verdict,
                stop,
            })
        } else {
            w.problems.sort_by_key(|p| p.line);
            Err(w.problems)
        }
    }

    /// Length of the fault phase: from the end of the baseline to the end of the last step.
    pub fn fault_window(&self) -> Duration {
        self.steps
            .iter()
            .map(|s| s.at.saturating_add(s.duration))
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// Whole planned length: baseline, faults, recovery.
    pub fn total(&self) -> Duration {
        self.baseline
            .saturating_add(self.fault_window())
            .saturating_add(self.recovery)
    }

    /// Thresholds that apply to a step.
    pub fn step_thresholds(&self, step: &str) -> Thresholds {
        self.verdict
            .steps
            .get(step)
            .copied()
            .unwrap_or(self.verdict.faults)
    }
}

/// The name a step's fault gets on the server: its own, or `drill-<step>-<type>`.
pub fn fault_name(step: &Step, fault: &FaultSpec) -> String {
    fault.request.name.clone().unwrap_or_else(|| {
        format!(
            "drill-{}-{}",
            step.name,
            fault.request.kind.as_deref().unwrap_or("fault")
        )
    })
}

#[cfg(test)]
#[path = "drill_tests.rs"]
mod tests;
