//! Builds a [`StatusSnapshot`] from what the server knows: the live faults of the registry,
//! and the recorded history (incidents, daily uptime, drills) when a history store is given.

use downtime_model::http_fault::HttpAction;
use downtime_model::{ProxyView, Toxic, ToxicKind};
use downtime_proxy::Registry;

use super::clock;
use super::model::{Component, ComponentKind, ComponentState, DAYS, Day, StatusSnapshot};

/// What a single live fault does to its component.
pub fn fault_state(toxic: &Toxic) -> ComponentState {
    use ComponentState::{Degraded, MajorOutage, Operational, PartialOutage, UnderMaintenance};
    if toxic.toxicity <= 0.0 {
        return Operational;
    }
    let full = match &toxic.kind {
        ToxicKind::Noop => Operational,
        ToxicKind::Latency { latency, jitter } => {
            if *latency == 0 && *jitter == 0 {
                Operational
            } else {
                Degraded
            }
        }
        ToxicKind::Bandwidth { rate: 0 } | ToxicKind::LimitData { bytes: 0 } => MajorOutage,
        ToxicKind::Bandwidth { .. } | ToxicKind::SlowClose { .. } | ToxicKind::Slicer { .. } => {
            Degraded
        }
        ToxicKind::Timeout { .. } | ToxicKind::ResetPeer { .. } => MajorOutage,
        ToxicKind::LimitData { .. } => PartialOutage,
        ToxicKind::Http(action) => match action {
            HttpAction::Maintenance(_) => UnderMaintenance,
            HttpAction::Status(s) if s.status >= 500 => MajorOutage,
            HttpAction::Status(s) if s.status >= 400 => PartialOutage,
            HttpAction::Status(_) => Degraded,
            HttpAction::Abort(_) => MajorOutage,
            HttpAction::RateLimit(_) => PartialOutage,
            HttpAction::Latency(l) if l.latency == 0 && l.jitter == 0 => Operational,
            HttpAction::Latency(_) | HttpAction::RouterTimeout(_) | HttpAction::SlowBody(_) => {
                Degraded
            }
        },
    };
    let b = &toxic.bounds;
    let partial =
        toxic.toxicity < 1.0 || b.matcher.is_some() || b.first_n.is_some() || b.every_nth.is_some();
    match full {
        MajorOutage | UnderMaintenance if partial => PartialOutage,
        other => other,
    }
}

/// A proxy's state from its live faults, and the reason in a few words.
pub fn proxy_state(view: &ProxyView) -> (ComponentState, String) {
    if !view.config.enabled {
        return (
            ComponentState::MajorOutage,
            "proxy disabled: connections are refused".to_owned(),
        );
    }
    let mut state = ComponentState::Operational;
    let mut reasons = Vec::new();
    for toxic in &view.toxics {
        let s = fault_state(toxic);
        if s == ComponentState::Operational {
            continue;
        }
        state = state.worst(s);
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
    let reason = if reasons.is_empty() {
        String::new()
    } else {
        format!("Active faults: {}", reasons.join(", "))
    };
    (state, reason)
}

/// Days of an uptime bar when nothing is recorded: empty, with today showing the live state.
fn live_days(today: i64, state: ComponentState) -> Vec<Day> {
    let first = today - (DAYS as i64 - 1);
    (first..=today)
        .map(|day| {
            let mut d = Day::empty(day);
            if day == today {
                d.live = Some(state);
            }
            d
        })
        .collect()
}

/// Components of the live registry (one per proxy), without recorded history.
pub fn live_components(proxies: &[ProxyView], now: i64) -> Vec<Component> {
    let today = clock::day_of(now);
    proxies
        .iter()
        .map(|p| {
            let (state, reason) = proxy_state(p);
            Component {
                id: p.config.name.clone(),
                name: p.config.name.clone(),
                kind: ComponentKind::Dependency,
                state,
                reason,
                days: live_days(today, state),
                created_at: now,
                updated_at: now,
            }
        })
        .collect()
}

/// Where snapshots come from.
#[derive(Clone)]
pub struct Source {
    registry: Registry,
}

impl Source {
    /// A source reading the live registry.
    pub fn new(registry: Registry) -> Self {
        Source { registry }
    }

    /// The full snapshot: components with their 90 days, incidents, drills.
    pub async fn snapshot(&self) -> StatusSnapshot {
        let now = clock::now_ms();
        let proxies = self.registry.list().await;
        StatusSnapshot {
            now,
            components: live_components(&proxies, now),
            incidents: Vec::new(),
            drills: Vec::new(),
        }
    }
}
