//! Component states derived from live faults and probe results: pure functions, so the
//! sampler, the status page and the tests agree on what "partial outage" means.

use downtime_model::http_fault::HttpAction;
use downtime_model::{ProxyView, Toxic, ToxicKind};
use serde::{Deserialize, Serialize};

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

/// The state a proxy's live faults put its dependency in:
/// - any active `maintenance` fault: under maintenance;
/// - a disabled proxy: major outage;
/// - otherwise the worst of its faults (see [`fault_state`]); none: operational.
pub fn component_state(view: &ProxyView) -> ComponentState {
    let states = view.toxics.iter().map(fault_state);
    if states
        .clone()
        .any(|s| s == ComponentState::UnderMaintenance)
    {
        return ComponentState::UnderMaintenance;
    }
    if !view.config.enabled {
        return ComponentState::MajorOutage;
    }
    states.max().unwrap_or(ComponentState::Operational)
}

/// The state one fault causes on its own:
/// - toxicity ≤ 0 or `noop` (the drill lock): operational;
/// - `maintenance`: under maintenance;
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
    let full = toxic.toxicity >= 1.0
        && toxic.bounds.matcher.is_none()
        && toxic.bounds.first_n.is_none()
        && toxic.bounds.every_nth.is_none();
    let failing = if full {
        ComponentState::MajorOutage
    } else {
        ComponentState::PartialOutage
    };
    match &toxic.kind {
        ToxicKind::Noop => ComponentState::Operational,
        ToxicKind::Http(HttpAction::Maintenance(_)) => ComponentState::UnderMaintenance,
        ToxicKind::Http(HttpAction::Status(reply)) if reply.status < 400 => {
            ComponentState::DegradedPerformance
        }
        ToxicKind::Timeout { .. }
        | ToxicKind::ResetPeer { .. }
        | ToxicKind::LimitData { .. }
        | ToxicKind::Bandwidth { rate: 0 }
        | ToxicKind::Http(
            HttpAction::Status(_) | HttpAction::Abort(_) | HttpAction::RouterTimeout(_),
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

/// Uptime in percent over `minutes` sampled minutes of which `major` were in major outage and
/// `partial` in partial outage; degraded performance and maintenance count as up. `None`
/// when nothing was sampled.
pub fn uptime_pct(minutes: u64, partial: u64, major: u64) -> Option<f64> {
    if minutes == 0 {
        return None;
    }
    let down_tenths = major
        .saturating_mul(10)
        .saturating_add(partial.saturating_mul(PARTIAL_DOWN_TENTHS));
    let total_tenths = minutes.saturating_mul(10);
    let up_tenths = total_tenths.saturating_sub(down_tenths);
    #[allow(clippy::cast_precision_loss)]
    Some(up_tenths as f64 * 100.0 / total_tenths as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use downtime_model::{Protocol, ProxyConfig, ToxicRequest};
    use serde_json::json;

    fn toxic(body: serde_json::Value) -> Toxic {
        let request: ToxicRequest = serde_json::from_value(body).unwrap();
        request.into_toxic(|_| false).unwrap()
    }

    fn view(enabled: bool, toxics: Vec<Toxic>) -> ProxyView {
        ProxyView {
            config: ProxyConfig {
                name: "api".into(),
                listen: "127.0.0.1:0".into(),
                upstream: "127.0.0.1:1".into(),
                enabled,
                protocol: Protocol::Http,
                http: Some(Default::default()),
                max_connections: None,
                tls: None,
                mode: None,
                intercept: None,
            },
            toxics,
        }
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
    fn uptime_weights() {
        assert_eq!(uptime_pct(0, 0, 0), None);
        assert_eq!(uptime_pct(1440, 0, 0), Some(100.0));
        assert_eq!(uptime_pct(100, 0, 100), Some(0.0));
        assert_eq!(uptime_pct(100, 10, 0), Some(97.0));
        assert_eq!(uptime_pct(10, 0, 1), Some(90.0));
        assert_eq!(uptime_pct(u64::MAX, u64::MAX, u64::MAX), Some(0.0));
    }
}
