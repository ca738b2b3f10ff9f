//! Component states derived from live faults and probe results: pure functions, so the
//! sampler, the status page and the tests agree on what "partial outage" means.

use downtime_model::http_fault::HttpAction;
use downtime_model::{Protocol, ProxyView, Toxic, ToxicKind};
use serde::{Deserialize, Serialize};

use super::incidents::Impact;
use super::types::Timestamp;

/// The state of a component, with Statuspage's names so its clients and readers recognise
/// them. Ordered by severity (`Operational` least), which is how a minute or a day keeps
/// its worst state; maintenance ranks just above operational because it is planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentState {
    /// Working normally.
    Operational,
    /// Deliberately unavailable (a `maintenance` fault or a maintenance window).
    UnderMaintenance,
    /// Working, but slow (latency, bandwidth, rate limits).
    DegradedPerformance,
    /// Some requests fail (a fault with toxicity below 1 or targeting some requests).
    PartialOutage,
    /// Requests fail (a disabled proxy, a full-strength failing fault).
    MajorOutage,
}

impl ComponentState {
    /// Every state, least severe first.
    pub const ALL: [ComponentState; 5] = [
        ComponentState::Operational,
        ComponentState::UnderMaintenance,
        ComponentState::DegradedPerformance,
        ComponentState::PartialOutage,
        ComponentState::MajorOutage,
    ];

    /// Statuspage's name (`partial_outage`).
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentState::Operational => "operational",
            ComponentState::UnderMaintenance => "under_maintenance",
            ComponentState::DegradedPerformance => "degraded_performance",
            ComponentState::PartialOutage => "partial_outage",
            ComponentState::MajorOutage => "major_outage",
        }
    }

    /// Words for people (`partial outage`).
    pub fn label(self) -> &'static str {
        match self {
            ComponentState::Operational => "operational",
            ComponentState::UnderMaintenance => "under maintenance",
            ComponentState::DegradedPerformance => "degraded performance",
            ComponentState::PartialOutage => "partial outage",
            ComponentState::MajorOutage => "major outage",
        }
    }

    /// The stored severity code (0 to 4).
    pub fn code(self) -> i16 {
        match self {
            ComponentState::Operational => 0,
            ComponentState::UnderMaintenance => 1,
            ComponentState::DegradedPerformance => 2,
            ComponentState::PartialOutage => 3,
            ComponentState::MajorOutage => 4,
        }
    }

    /// The state of a stored code; unknown codes read as a major outage (never hide trouble).
    pub fn from_code(code: i64) -> Self {
        match code {
            0 => ComponentState::Operational,
            1 => ComponentState::UnderMaintenance,
            2 => ComponentState::DegradedPerformance,
            3 => ComponentState::PartialOutage,
            _ => ComponentState::MajorOutage,
        }
    }

    /// Parses Statuspage's name.
    pub fn parse(text: &str) -> Option<Self> {
        ComponentState::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// Whether a fault answers every request (full strength, no request targeting).
fn covers_everything(toxic: &Toxic) -> bool {
    toxic.toxicity >= 1.0
        && toxic.bounds.matcher.is_none()
        && toxic.bounds.first_n.is_none()
        && toxic.bounds.every_nth.is_none()
}

/// Whether a proxy is a stand-in: an HTTP proxy without upstream, answering every request
/// that no fault takes with the maintenance 503.
pub fn is_stand_in(view: &ProxyView) -> bool {
    view.config.protocol == Protocol::Http
        && view.config.upstream.trim().is_empty()
        // A forward proxy has no upstream either, and passes requests on: read the mode
        // through serde so this holds whether or not the config names it.
        && serde_json::to_value(&view.config)
            .ok()
            .and_then(|v| v.get("mode").and_then(|m| m.as_str()).map(str::to_owned))
            .is_none_or(|m| m != "forward")
}

/// The state a proxy's live faults put its dependency in:
/// - a `maintenance` fault answering every request: under maintenance;
/// - a disabled proxy: major outage;
/// - a stand-in (HTTP proxy without upstream): major outage, since what no fault answers
///   gets the 503; a fault answering every request decides instead;
/// - otherwise the worst of its faults (see [`fault_state`]); none: operational.
pub fn component_state(view: &ProxyView) -> ComponentState {
    let active: Vec<&Toxic> = view
        .toxics
        .iter()
        .filter(|t| fault_state(t) != ComponentState::Operational)
        .collect();
    if active
        .iter()
        .any(|t| fault_state(t) == ComponentState::UnderMaintenance && covers_everything(t))
    {
        return ComponentState::UnderMaintenance;
    }
    if !view.config.enabled {
        return ComponentState::MajorOutage;
    }
    let worst = active
        .iter()
        .map(|t| fault_state(t))
        .max()
        .unwrap_or(ComponentState::Operational);
    if is_stand_in(view) {
        let answered = active.iter().any(|t| {
            covers_everything(t) && matches!(t.kind, ToxicKind::Http(HttpAction::Status(_)))
        });
        if !answered {
            return ComponentState::MajorOutage;
        }
    }
    worst
}

/// The state one fault causes on its own:
/// - toxicity ≤ 0 or `noop` (the drill lock): operational;
/// - `maintenance`: under maintenance at full strength, partial outage otherwise;
/// - failing faults (`status` ≥ 400, `abort`, `timeout`, `reset_peer`, `limit_data`,
///   `router_timeout`, and `bandwidth` at rate 0, which stalls): major outage at full
///   strength (toxicity ≥ 1, no request targeting), partial outage otherwise;
/// - slowing faults (`latency`, `http_latency`, `bandwidth`, `slicer`, `slow_close`,
///   `slow_body`, `rate_limit`, a `status` below 400): degraded performance.
pub fn fault_state(toxic: &Toxic) -> ComponentState {
    // NaN toxicity compares false everywhere: treat it as inactive, as the data plane does.
    if toxic.toxicity.is_nan() || toxic.toxicity <= 0.0 {
        return ComponentState::Operational;
    }
    let full = covers_everything(toxic);
    let failing = if full {
        ComponentState::MajorOutage
    } else {
        ComponentState::PartialOutage
    };
    match &toxic.kind {
        ToxicKind::Noop => ComponentState::Operational,
        // A maintenance answer on some requests only: the others pass, as a partial outage.
        ToxicKind::Http(HttpAction::Maintenance(_)) if full => ComponentState::UnderMaintenance,
        ToxicKind::Http(HttpAction::Maintenance(_)) => ComponentState::PartialOutage,
        ToxicKind::Http(HttpAction::Status(reply)) if reply.status < 400 => {
            ComponentState::DegradedPerformance
        }
        ToxicKind::Timeout { .. }
        | ToxicKind::ResetPeer { .. }
        | ToxicKind::LimitData { .. }
        | ToxicKind::Bandwidth { rate: 0 }
        | ToxicKind::Http(
            HttpAction::Status(_)
            | HttpAction::Abort(_)
            | HttpAction::RouterTimeout(_)
            | HttpAction::Tls(_),
        ) => failing,
        ToxicKind::Latency { .. }
        | ToxicKind::Bandwidth { .. }
        | ToxicKind::SlowClose { .. }
        | ToxicKind::Slicer { .. }
        | ToxicKind::Http(
            HttpAction::Latency(_) | HttpAction::RateLimit(_) | HttpAction::SlowBody(_),
        ) => ComponentState::DegradedPerformance,
    }
}

/// The state of a probed endpoint over a minute: every probe passed: operational; at least
/// half passed: partial outage; fewer: major outage. `None` without samples.
pub fn endpoint_state(total: i64, ok: i64) -> Option<ComponentState> {
    if total <= 0 {
        return None;
    }
    let ok = ok.clamp(0, total);
    Some(if ok == total {
        ComponentState::Operational
    } else if ok.saturating_mul(2) >= total {
        ComponentState::PartialOutage
    } else {
        ComponentState::MajorOutage
    })
}

/// Share of a partial-outage minute counted as down, in tenths (Statuspage's convention:
/// a major outage minute counts fully, a partial outage minute 30 %).
pub const PARTIAL_DOWN_TENTHS: u64 = 3;

/// Uptime in percent of a day's full `length` (1,440 minutes, or the minutes elapsed so far
/// today) of which `observed` minutes were recorded, `partial` of them in partial outage and
/// `major` in major outage. Degraded performance and maintenance count as up; unobserved
/// minutes count as neither up nor down (see [`no_data_pct`]). `None` when nothing was
/// observed.
pub fn uptime_pct(length: u64, observed: u64, partial: u64, major: u64) -> Option<f64> {
    if observed == 0 {
        return None;
    }
    let length = length.max(observed);
    let down_tenths = major
        .saturating_mul(10)
        .saturating_add(partial.saturating_mul(PARTIAL_DOWN_TENTHS));
    let up_tenths = observed.saturating_mul(10).saturating_sub(down_tenths);
    #[allow(clippy::cast_precision_loss)]
    Some(up_tenths as f64 * 100.0 / length.saturating_mul(10) as f64)
}

/// Percent of a day's `length` with nothing recorded (the server was not running).
pub fn no_data_pct(length: u64, observed: u64) -> f64 {
    let length = length.max(observed);
    if length == 0 {
        return 100.0;
    }
    #[allow(clippy::cast_precision_loss)]
    let pct = length.saturating_sub(observed) as f64 * 100.0 / length as f64;
    pct
}

/// The one way a percentage is written for people, everywhere: two decimals, rounded
/// (`100.00 %`, `75.00 %`, `88.89 %`); out-of-range values are clamped to 0..=100 and NaN
/// reads `0.00 %`.
pub fn format_percent(pct: f64) -> String {
    let p = if pct.is_nan() {
        0.0
    } else {
        pct.clamp(0.0, 100.0)
    };
    format!("{p:.2} %")
}

/// The state an open incident's impact declares for its components (Statuspage's
/// reading): `minor` degraded performance, `major` partial outage, `critical` major outage,
/// `maintenance` under maintenance, `none` nothing.
pub fn impact_state(impact: Impact) -> ComponentState {
    match impact {
        Impact::None => ComponentState::Operational,
        Impact::Minor => ComponentState::DegradedPerformance,
        Impact::Major => ComponentState::PartialOutage,
        Impact::Critical => ComponentState::MajorOutage,
        Impact::Maintenance => ComponentState::UnderMaintenance,
    }
}

/// Probe results an endpoint's live state is judged on: its latest [`PROBE_WINDOW`].
pub const PROBE_WINDOW: usize = 5;
/// An endpoint whose latest probe result is older than this is not being probed: no data.
pub const PROBE_FRESH_MS: i64 = 3 * 60_000;

/// The latest probe results of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeWindow {
    /// Results in the window (at most [`PROBE_WINDOW`]).
    pub total: i64,
    /// Of which passed.
    pub ok: i64,
    /// When the latest one started.
    pub last_at: Timestamp,
}

/// What downtime knows about a component right now: the input of [`decide`].
#[derive(Debug, Clone, Copy)]
pub enum Observed<'a> {
    /// A proxy in the registry.
    Proxy(&'a ProxyView),
    /// A probed endpoint and its latest results.
    Probes(ProbeWindow),
    /// A probed endpoint known only from the store: the state of its latest minute.
    ProbedMinute {
        /// The state of the latest recorded minute.
        state: Option<ComponentState>,
        /// When results last arrived.
        last_seen: Timestamp,
    },
    /// A component the store has seen that no longer exists (a proxy deleted, e.g. by the
    /// drill that created it).
    Gone {
        /// When it was last seen.
        last_seen: Timestamp,
    },
}

/// Everything [`decide`] weighs for one component.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// What is observed of the component itself.
    pub observed: Observed<'a>,
    /// A scheduled maintenance window naming it is in progress.
    pub maintenance_window: bool,
    /// The worst impact of the open manual incidents naming it.
    pub incident: Option<Impact>,
    /// Now (for probe freshness).
    pub now: Timestamp,
}

/// A component's state and why, as every view shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The state; `None`: no data (removed, or not probed lately).
    pub state: Option<ComponentState>,
    /// Why, in a few words; empty when operational for no particular reason.
    pub reason: String,
}

/// Why a proxy is in its state, in a few words (empty when operational).
pub fn proxy_reason(view: &ProxyView) -> String {
    if !view.config.enabled {
        return "Proxy disabled: connections are refused".to_owned();
    }
    let mut reasons = Vec::new();
    for toxic in &view.toxics {
        if fault_state(toxic) == ComponentState::Operational {
            continue;
        }
        let mut reason = format!("{} ({})", toxic.kind.type_name(), toxic.name);
        if toxic.toxicity < 1.0 {
            reason.push_str(&format!(
                " on {:.0} % of {}",
                f64::from(toxic.toxicity) * 100.0,
                if toxic.kind.is_http() {
                    "requests"
                } else {
                    "connections"
                }
            ));
        }
        reasons.push(reason);
    }
    let faults = if reasons.is_empty() {
        String::new()
    } else {
        format!("Active faults: {}", reasons.join(", "))
    };
    if is_stand_in(view) && component_state(view) == ComponentState::MajorOutage {
        let standin = "Stand-in without upstream: requests get the maintenance 503";
        if faults.is_empty() {
            return standin.to_owned();
        }
        return format!("{standin}. {faults}");
    }
    faults
}

/// The one place a component's state is decided; the page, the JSON, the feed, webhooks,
/// `/metrics` and the sampler all ask it. See docs/status-page.md ("States") for the table.
///
/// 1. What is observed: a proxy's faults ([`component_state`]); an endpoint's latest
///    [`PROBE_WINDOW`] results ([`endpoint_state`]), no data once none arrived for
///    [`PROBE_FRESH_MS`]; a component that is gone: no data.
/// 2. A maintenance window in progress shows as under maintenance (it explains the faults).
/// 3. An open manual incident's impact ([`impact_state`]) applies until it is resolved; the
///    worse of it and the observed state wins.
pub fn decide(facts: &Facts<'_>) -> Verdict {
    let (mut state, mut reason) = match facts.observed {
        Observed::Proxy(view) => (Some(component_state(view)), proxy_reason(view)),
        Observed::Probes(w) if facts.now.millis() - w.last_at.millis() <= PROBE_FRESH_MS => {
            let state = endpoint_state(w.total, w.ok);
            let reason = match state {
                Some(ComponentState::Operational) | None => String::new(),
                Some(_) => format!(
                    "{} of the last {} probes failed",
                    w.total.saturating_sub(w.ok),
                    w.total
                ),
            };
            (state, reason)
        }
        Observed::ProbedMinute { state, last_seen }
            if facts.now.millis() - last_seen.millis() <= PROBE_FRESH_MS =>
        {
            (state, String::new())
        }
        Observed::Probes(ProbeWindow {
            last_at: last_seen, ..
        })
        | Observed::ProbedMinute { last_seen, .. } => (
            None,
            format!("No data: last probed {}", last_seen.rfc3339()),
        ),
        Observed::Gone { last_seen } => (
            None,
            format!("No data: removed, last seen {}", last_seen.rfc3339()),
        ),
    };
    if facts.maintenance_window && state != Some(ComponentState::UnderMaintenance) {
        state = Some(ComponentState::UnderMaintenance);
        reason = format!("Scheduled maintenance in progress. {reason}")
            .trim()
            .to_owned();
    }
    if let Some(impact) = facts.incident {
        let declared = impact_state(impact);
        if declared != ComponentState::Operational && state.is_none_or(|s| s < declared) {
            state = Some(declared);
            reason = format!("Open incident ({} impact). {reason}", impact.as_str())
                .trim()
                .to_owned();
        }
    }
    Verdict { state, reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use downtime_model::{ProxyRequest, ToxicRequest};
    use serde_json::json;

    fn toxic(body: serde_json::Value) -> Toxic {
        let request: ToxicRequest = serde_json::from_value(body).unwrap();
        request.into_toxic(|_| false).unwrap()
    }

    fn view(enabled: bool, toxics: Vec<Toxic>) -> ProxyView {
        proxy(enabled, "127.0.0.1:1", toxics)
    }

    fn proxy(enabled: bool, upstream: &str, toxics: Vec<Toxic>) -> ProxyView {
        // Through the API's request type, so fields added to the config later take their
        // defaults.
        let request: ProxyRequest = serde_json::from_value(json!({
            "name": "api", "listen": "127.0.0.1:0", "upstream": upstream,
            "enabled": enabled, "protocol": "http",
        }))
        .unwrap();
        let (config, _) = request.validate(None).unwrap();
        ProxyView { config, toxics }
    }

    #[test]
    fn no_fault_is_operational_and_disabled_is_major() {
        assert_eq!(
            component_state(&view(true, vec![])),
            ComponentState::Operational
        );
        assert_eq!(
            component_state(&view(false, vec![])),
            ComponentState::MajorOutage
        );
    }

    #[test]
    fn maintenance_wins_over_everything() {
        let m = toxic(json!({"type": "maintenance"}));
        let t = toxic(json!({"name": "t", "type": "timeout"}));
        assert_eq!(
            component_state(&view(true, vec![t.clone(), m.clone()])),
            ComponentState::UnderMaintenance
        );
        assert_eq!(
            component_state(&view(false, vec![m])),
            ComponentState::UnderMaintenance
        );
        assert_eq!(
            component_state(&view(true, vec![t])),
            ComponentState::MajorOutage
        );
    }

    #[test]
    fn failing_faults_are_major_at_full_strength_partial_otherwise() {
        for body in [
            json!({"type": "status", "attributes": {"status": 503}}),
            json!({"type": "abort"}),
            json!({"type": "timeout"}),
            json!({"type": "reset_peer"}),
            json!({"type": "limit_data", "attributes": {"bytes": 10}}),
            json!({"type": "router_timeout"}),
            json!({"type": "bandwidth", "attributes": {"rate": 0}}),
        ] {
            let full = toxic(body.clone());
            assert_eq!(fault_state(&full), ComponentState::MajorOutage, "{body}");
            let mut half = body.clone();
            half["toxicity"] = json!(0.5);
            assert_eq!(
                fault_state(&toxic(half)),
                ComponentState::PartialOutage,
                "{body}"
            );
        }
        let targeted = toxic(json!({"type": "abort", "match": {"path": "/x"}}));
        assert_eq!(fault_state(&targeted), ComponentState::PartialOutage);
        let first = toxic(json!({"type": "abort", "first_n": 3}));
        assert_eq!(fault_state(&first), ComponentState::PartialOutage);
    }

    #[test]
    fn slowing_faults_are_degraded() {
        for body in [
            json!({"type": "latency", "attributes": {"latency": 100}}),
            json!({"type": "latency", "toxicity": 0.3}),
            json!({"type": "bandwidth", "attributes": {"rate": 10}}),
            json!({"type": "slicer"}),
            json!({"type": "slow_close"}),
            json!({"type": "http_latency", "attributes": {"latency": 10}}),
            json!({"type": "slow_body", "attributes": {"rate": 1}}),
            json!({"type": "rate_limit", "attributes": {"limit": 1}}),
            json!({"type": "status", "attributes": {"status": 200}}),
        ] {
            assert_eq!(
                fault_state(&toxic(body.clone())),
                ComponentState::DegradedPerformance,
                "{body}"
            );
        }
    }

    #[test]
    fn inactive_faults_and_the_drill_lock_are_operational() {
        let lock = toxic(json!({"name": "drill-lock", "type": "noop", "toxicity": 0}));
        let zero = toxic(json!({"type": "timeout", "toxicity": 0}));
        assert_eq!(
            component_state(&view(true, vec![lock, zero])),
            ComponentState::Operational
        );
    }

    #[test]
    fn worst_fault_wins() {
        let slow = toxic(json!({"name": "a", "type": "latency"}));
        let some = toxic(json!({"name": "b", "type": "reset_peer", "toxicity": 0.1}));
        assert_eq!(
            component_state(&view(true, vec![slow, some])),
            ComponentState::PartialOutage
        );
    }

    #[test]
    fn states_serialize_with_statuspage_names_and_codes_round_trip() {
        for s in ComponentState::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), json!(s.as_str()));
            assert_eq!(ComponentState::from_code(i64::from(s.code())), s);
            assert_eq!(ComponentState::parse(s.as_str()), Some(s));
        }
        assert!(ComponentState::MajorOutage > ComponentState::PartialOutage);
        assert!(ComponentState::UnderMaintenance < ComponentState::DegradedPerformance);
    }

    #[test]
    fn endpoint_states() {
        assert_eq!(endpoint_state(0, 0), None);
        assert_eq!(endpoint_state(10, 10), Some(ComponentState::Operational));
        assert_eq!(endpoint_state(10, 5), Some(ComponentState::PartialOutage));
        assert_eq!(endpoint_state(10, 4), Some(ComponentState::MajorOutage));
        assert_eq!(endpoint_state(10, 99), Some(ComponentState::Operational));
        assert_eq!(
            endpoint_state(i64::MAX, i64::MAX - 1),
            Some(ComponentState::PartialOutage)
        );
    }

    #[test]
    fn uptime_is_over_the_whole_day() {
        assert_eq!(uptime_pct(1440, 0, 0, 0), None);
        assert_eq!(uptime_pct(1440, 1440, 0, 0), Some(100.0));
        assert_eq!(uptime_pct(100, 100, 0, 100), Some(0.0));
        assert_eq!(uptime_pct(100, 100, 10, 0), Some(97.0));
        assert_eq!(uptime_pct(10, 10, 0, 1), Some(90.0));
        // One observed minute of a whole day: 1 minute up, the rest is no data.
        let one = uptime_pct(1440, 1, 0, 0).unwrap();
        assert!((one - 100.0 / 1440.0).abs() < 1e-9, "{one}");
        assert!((no_data_pct(1440, 1) - 1439.0 * 100.0 / 1440.0).abs() < 1e-9);
        assert_eq!(no_data_pct(1440, 1440), 0.0);
        // More observed than the length (late samples of today): the observed count wins.
        assert_eq!(uptime_pct(10, 20, 0, 0), Some(100.0));
        assert_eq!(
            uptime_pct(u64::MAX, u64::MAX, u64::MAX, u64::MAX),
            Some(0.0)
        );
    }

    #[test]
    fn percents_have_two_decimals_and_round() {
        assert_eq!(format_percent(100.0), "100.00 %");
        assert_eq!(format_percent(75.0), "75.00 %");
        assert_eq!(format_percent(88.888), "88.89 %");
        assert_eq!(format_percent(0.0), "0.00 %");
        assert_eq!(format_percent(-3.0), "0.00 %");
        assert_eq!(format_percent(250.0), "100.00 %");
        assert_eq!(format_percent(f64::NAN), "0.00 %");
    }

    #[test]
    fn percents_parse_back_within_half_a_hundredth() {
        // A small deterministic generator (xorshift) over many values, with the edges.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut values = vec![0.0, 100.0, 0.005, 99.995, 99.999, 50.0, 33.333_333];
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            #[allow(clippy::cast_precision_loss)]
            values.push((x % 10_000_001) as f64 / 100_000.0);
        }
        for v in values {
            let text = format_percent(v);
            let number: f64 = text.strip_suffix(" %").unwrap().parse().unwrap();
            assert!((number - v).abs() <= 0.005 + 1e-9, "{v} -> {text}");
            let decimals = text.split(['.', ' ']).nth(1).unwrap();
            assert_eq!(decimals.len(), 2, "{text}");
        }
    }

    #[test]
    fn a_stand_in_is_a_major_outage_unless_a_fault_answers_everything() {
        let standin = proxy(true, "", vec![]);
        assert!(is_stand_in(&standin));
        assert_eq!(component_state(&standin), ComponentState::MajorOutage);
        assert!(proxy_reason(&standin).contains("Stand-in"));
        let partial = toxic(json!({"type": "latency", "attributes": {"latency": 5}}));
        assert_eq!(
            component_state(&proxy(true, "", vec![partial])),
            ComponentState::MajorOutage
        );
        let m = toxic(json!({"type": "maintenance"}));
        assert_eq!(
            component_state(&proxy(true, "", vec![m])),
            ComponentState::UnderMaintenance
        );
        let ok = toxic(json!({"type": "status", "attributes": {"status": 200}}));
        assert_eq!(
            component_state(&proxy(true, "", vec![ok])),
            ComponentState::DegradedPerformance
        );
    }

    #[test]
    fn partial_maintenance_is_a_partial_outage() {
        for body in [
            json!({"type": "maintenance", "toxicity": 0.5}),
            json!({"type": "maintenance", "match": {"path": "/x"}}),
        ] {
            assert_eq!(
                component_state(&view(true, vec![toxic(body.clone())])),
                ComponentState::PartialOutage,
                "{body}"
            );
        }
    }

    fn facts(observed: Observed<'_>, incident: Option<Impact>) -> Facts<'_> {
        Facts {
            observed,
            maintenance_window: false,
            incident,
            now: Timestamp(10_000_000),
        }
    }

    #[test]
    fn incidents_apply_and_the_worse_wins() {
        let healthy = view(true, vec![]);
        let v = decide(&facts(Observed::Proxy(&healthy), Some(Impact::Major)));
        assert_eq!(v.state, Some(ComponentState::PartialOutage));
        assert!(v.reason.contains("major impact"), "{}", v.reason);
        let v = decide(&facts(Observed::Proxy(&healthy), Some(Impact::Critical)));
        assert_eq!(v.state, Some(ComponentState::MajorOutage));
        let down = view(false, vec![]);
        let v = decide(&facts(Observed::Proxy(&down), Some(Impact::Minor)));
        assert_eq!(v.state, Some(ComponentState::MajorOutage));
        let v = decide(&facts(Observed::Proxy(&healthy), Some(Impact::None)));
        assert_eq!(v.state, Some(ComponentState::Operational));
    }

    #[test]
    fn endpoints_follow_their_latest_probes_and_go_stale() {
        let now = Timestamp(10_000_000);
        let window = |total, ok, ago| {
            Observed::Probes(ProbeWindow {
                total,
                ok,
                last_at: Timestamp(now.0 - ago),
            })
        };
        let v = decide(&facts(window(5, 5, 1_000), None));
        assert_eq!(v.state, Some(ComponentState::Operational));
        let v = decide(&facts(window(5, 1, 1_000), None));
        assert_eq!(v.state, Some(ComponentState::MajorOutage));
        assert_eq!(v.reason, "4 of the last 5 probes failed");
        let v = decide(&facts(window(5, 1, PROBE_FRESH_MS + 1), None));
        assert_eq!(v.state, None);
        assert!(v.reason.starts_with("No data: last probed"));
        let gone = decide(&facts(Observed::Gone { last_seen: now }, None));
        assert_eq!(gone.state, None);
        assert!(gone.reason.contains("removed"));
    }

    #[test]
    fn a_maintenance_window_explains_faults() {
        let t = view(true, vec![toxic(json!({"type": "timeout"}))]);
        let mut f = facts(Observed::Proxy(&t), None);
        f.maintenance_window = true;
        let v = decide(&f);
        assert_eq!(v.state, Some(ComponentState::UnderMaintenance));
        assert!(v.reason.starts_with("Scheduled maintenance"));
    }
}
