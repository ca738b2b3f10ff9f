//! Builds a [`StatusSnapshot`] from what the server knows: the live faults of the registry
//! (states, through the history's pure [`component_state`]), and the recorded history:
//! probed endpoints, daily uptime, incidents with their timelines, drill runs.
//!
//! A snapshot reads the registry every time; the store's part (a handful of indexed
//! queries: incidents, drills, today's uptime of every component) is cached until the store
//! announces a change (see [`Source`]); the 89 past days of uptime are cached for the day
//! (see [`PastDays`]). A failing query is logged and shows as missing data, never as an error
//! page: the status page must stay up when the store is not.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;

use downtime_model::ProxyView;
use downtime_proxy::Registry;

use super::clock;
use super::model::{
    Component, ComponentKind, ComponentState, DAYS, Day, DrillRun, Impact, Incident, IncidentKind,
    IncidentUpdate, StatusSnapshot,
};
use crate::history::{
    self, ComponentKind as StoredKind, Facts, History, IncidentFilter, Notice, Observed, Timestamp,
    decide, proxy_component,
};

/// Closed incidents stay in "Recent incidents" this long.
pub const RECENT_DAYS: i64 = 14;
/// Drill runs shown.
pub const DRILLS_SHOWN: u32 = 20;

pub use crate::history::proxy_reason;

/// Days of an uptime bar with nothing recorded; today carries the live state.
fn empty_days(today: i64, state: Option<ComponentState>) -> Vec<Day> {
    let first = today - (DAYS as i64 - 1);
    (first..=today)
        .map(|day| {
            let mut d = Day::empty(day);
            if day == today {
                d.live = state;
            }
            d
        })
        .collect()
}

/// Components of the live registry alone (no history): one per proxy.
pub fn live_components(proxies: &[ProxyView], now: i64) -> Vec<Component> {
    let today = clock::day_of(now);
    proxies
        .iter()
        .map(|p| {
            let verdict = decide(&Facts {
                observed: Observed::Proxy(p),
                maintenance_window: false,
                incident: None,
                now: Timestamp(now),
            });
            let state = verdict.state;
            Component {
                id: proxy_component(&p.config.name),
                name: p.config.name.clone(),
                kind: ComponentKind::Dependency,
                state,
                reason: verdict.reason,
                days: empty_days(today, state),
                created_at: now,
                updated_at: now,
            }
        })
        .collect()
}

fn impact(i: history::Impact) -> Impact {
    match i {
        history::Impact::None => Impact::None,
        history::Impact::Minor => Impact::Minor,
        history::Impact::Major => Impact::Major,
        history::Impact::Critical => Impact::Critical,
        history::Impact::Maintenance => Impact::Maintenance,
    }
}

/// The page's view of a stored incident.
pub fn incident(i: &history::Incident) -> Incident {
    Incident {
        id: i.id.to_string(),
        kind: match i.kind {
            history::IncidentKind::Incident => IncidentKind::Incident,
            history::IncidentKind::Maintenance => IncidentKind::Maintenance,
        },
        title: i.title.clone(),
        status: i.status.as_str().to_owned(),
        impact: impact(i.impact),
        components: i.components.clone(),
        created_at: i.created_at.millis(),
        updated_at: i.updated_at.millis(),
        resolved_at: i.resolved_at.map(Timestamp::millis),
        scheduled_for: i.scheduled_start.map(Timestamp::millis),
        scheduled_until: i.scheduled_end.map(Timestamp::millis),
        updates: i
            .updates
            .iter()
            .map(|u| IncidentUpdate {
                id: u.id.to_string(),
                at: u.at.millis(),
                status: u.status.as_str().to_owned(),
                body: u.body.clone(),
            })
            .collect(),
    }
}

fn or_log<T: Default>(what: &str, r: Result<T, history::HistoryError>) -> T {
    r.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "status page: cannot read {what}");
        T::default()
    })
}

/// Titles of incidents that touched `component` on `day`.
fn incidents_on(incidents: &[Incident], component: &str, day: i64, now: i64) -> Vec<String> {
    incidents
        .iter()
        .filter(|i| i.components.iter().any(|c| c == component))
        .filter(|i| {
            let (from, to) = match (i.kind, i.scheduled_for) {
                (IncidentKind::Maintenance, Some(start)) => {
                    (start, i.resolved_at.or(i.scheduled_until).unwrap_or(now))
                }
                _ => (i.created_at, i.resolved_at.unwrap_or(now)),
            };
            clock::day_of(from) <= day && day <= clock::day_of(to)
        })
        .map(|i| i.title.clone())
        .collect()
}

/// What the store says, read with a few queries and reused until it changes.
struct Recorded {
    /// When it was read (unix ms).
    at: i64,
    /// Proxy names it was read for (a new proxy needs its days).
    proxies: Vec<String>,
    /// Components the store has seen.
    known: Vec<history::Component>,
    /// Components under a maintenance window in progress.
    maintenance: BTreeSet<String>,
    /// The worst impact of open manual incidents per component.
    impacts: HashMap<String, history::Impact>,
    /// Incidents of the last 90 days and every open one, newest first.
    incidents: Vec<Incident>,
    /// Recent drill runs.
    drills: Vec<DrillRun>,
    /// Recorded days per component id (no live overlay).
    days: HashMap<String, Vec<Day>>,
}

/// Recorded data is read again after this long even without a change notice (maintenance
/// windows and probe freshness move with the clock).
const RECORDED_TTL_MS: i64 = 30_000;

struct Cache {
    notices: Mutex<Option<broadcast::Receiver<Notice>>>,
    recorded: Mutex<Option<Arc<Recorded>>>,
    past: Mutex<Option<Arc<PastDays>>>,
}

/// The 89 days before today of every component: they only change when a day ends (or,
/// rarely, when a late sample is rolled into a past day), so they are read once a day and
/// every [`PAST_TTL_MS`], not after every change like today's row. This keeps the store
/// read after a change to a few milliseconds with 50 components and a year of history.
struct PastDays {
    /// Today when they were read (they end the day before).
    today: i64,
    /// When they were read (unix ms).
    at: i64,
    /// Stored days per component id; components without any are absent.
    stats: BTreeMap<String, Vec<history::DayStat>>,
}

/// Past days are read again after this long even on the same day (late samples, pruning).
const PAST_TTL_MS: i64 = 10 * 60_000;

/// The cached [`PastDays`], read again when the day changed or they are too old.
async fn past_days(history: &History, cache: &Cache, today: i64, now: i64) -> Arc<PastDays> {
    let cached = lock(&cache.past).clone();
    if let Some(past) = cached
        && past.today == today
        && now - past.at < PAST_TTL_MS
    {
        return past;
    }
    let stats = or_log(
        "uptime history",
        history
            .daily_uptime_all_until(DAYS as u32 - 1, history::Day(today - 1))
            .await,
    );
    let past = Arc::new(PastDays {
        today,
        at: now,
        stats,
    });
    *lock(&cache.past) = Some(past.clone());
    past
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where snapshots come from; cheap to clone.
///
/// Live faults are read on every snapshot. What comes from the store (days, incidents,
/// drills, endpoints) is cached and read again only when the store announced a change (any
/// history notice: an event, an incident, a drill, a sampled minute), when a proxy appeared,
/// at midnight UTC, or after 30 s. So a page view costs one registry read and the render.
#[derive(Clone)]
pub struct Source {
    registry: Registry,
    history: Option<History>,
    cache: Arc<Cache>,
}

impl Source {
    /// A source reading the live registry and, when given, the history store.
    pub fn new(registry: Registry, history: Option<History>) -> Self {
        let notices = history.as_ref().map(History::subscribe);
        Source {
            registry,
            history,
            cache: Arc::new(Cache {
                notices: Mutex::new(notices),
                recorded: Mutex::new(None),
                past: Mutex::new(None),
            }),
        }
    }

    /// The live registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The history store, if any.
    pub fn history(&self) -> Option<&History> {
        self.history.as_ref()
    }

    /// Forgets the cached store data as a change would, so the next snapshot reads the
    /// store (benchmarks); past days stay cached, as they do after a change.
    pub fn invalidate(&self) {
        *lock(&self.cache.recorded) = None;
    }

    /// Forgets every cached store read, past days included, as after a start (benchmarks).
    pub fn invalidate_all(&self) {
        *lock(&self.cache.recorded) = None;
        *lock(&self.cache.past) = None;
    }

    /// Whether the store announced a change since the last call (drains the notices).
    fn store_changed(&self) -> bool {
        let mut guard = lock(&self.cache.notices);
        let Some(rx) = guard.as_mut() else {
            return false;
        };
        let mut changed = false;
        loop {
            match rx.try_recv() {
                Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => changed = true,
                Err(broadcast::error::TryRecvError::Empty) => return changed,
                Err(broadcast::error::TryRecvError::Closed) => {
                    *guard = None;
                    return true;
                }
            }
        }
    }

    async fn recorded(&self, history: &History, proxies: &[String], now: i64) -> Arc<Recorded> {
        let changed = self.store_changed();
        let cached = lock(&self.cache.recorded).clone();
        if let Some(r) = cached
            && !changed
            && r.proxies == proxies
            && clock::day_of(r.at) == clock::day_of(now)
            && now - r.at < RECORDED_TTL_MS
        {
            return r;
        }
        let fresh = Arc::new(read_recorded(history, &self.cache, proxies, now).await);
        *lock(&self.cache.recorded) = Some(fresh.clone());
        fresh
    }

    /// The full snapshot: components with their 90 days, incidents, drills.
    pub async fn snapshot(&self) -> StatusSnapshot {
        let now = clock::now_ms();
        let proxies = self.registry.list().await;
        let Some(history) = &self.history else {
            return StatusSnapshot {
                now,
                components: live_components(&proxies, now),
                incidents: Vec::new(),
                drills: Vec::new(),
            };
        };
        let names: Vec<String> = proxies.iter().map(|p| p.config.name.clone()).collect();
        let recorded = self.recorded(history, &names, now).await;
        let today = clock::day_of(now);
        let days_of = |id: &str, state: Option<ComponentState>| {
            let mut days = recorded
                .days
                .get(id)
                .cloned()
                .unwrap_or_else(|| empty_days(today, state));
            if let Some(last) = days.last_mut()
                && last.day == today
            {
                last.live = state;
            }
            days
        };
        let decided = decide_all(
            history,
            &proxies,
            &recorded.known,
            &recorded.maintenance,
            &recorded.impacts,
            now,
        );
        let components = decided
            .into_iter()
            .map(|d| Component {
                created_at: d.stored.map_or(now, |c| c.first_seen.millis()),
                updated_at: d.stored.map_or(now, |c| c.last_seen.millis()),
                days: days_of(&d.id, d.verdict.state),
                id: d.id,
                name: d.name,
                kind: d.kind,
                state: d.verdict.state,
                reason: d.verdict.reason,
            })
            .collect();
        StatusSnapshot {
            now,
            components,
            incidents: recorded.incidents.clone(),
            drills: recorded.drills.clone(),
        }
    }
}

/// One component as [`decide`] judged it.
struct Decided<'a> {
    id: String,
    name: String,
    kind: ComponentKind,
    verdict: history::Verdict,
    stored: Option<&'a history::Component>,
}

/// Every component shown, in display order (live proxies, proxies that are gone, probed
/// endpoints), each judged by [`decide`] on what is known of it. Components seen in the
/// last [`DAYS`] days keep their row.
fn decide_all<'a>(
    history: &History,
    proxies: &[ProxyView],
    known: &'a [history::Component],
    maintenance: &BTreeSet<String>,
    impacts: &HashMap<String, history::Impact>,
    now: i64,
) -> Vec<Decided<'a>> {
    let stamp = Timestamp(now);
    let window = now - DAYS as i64 * clock::DAY_MS;
    let known_by_id: HashMap<&str, &history::Component> =
        known.iter().map(|c| (c.id.as_str(), c)).collect();
    let facts = |id: &str, observed| Facts {
        observed,
        maintenance_window: maintenance.contains(id),
        incident: impacts.get(id).copied(),
        now: stamp,
    };
    let mut out = Vec::new();
    for view in proxies {
        let id = proxy_component(&view.config.name);
        let verdict = decide(&facts(&id, Observed::Proxy(view)));
        out.push(Decided {
            stored: known_by_id.get(id.as_str()).copied(),
            id,
            name: view.config.name.clone(),
            kind: ComponentKind::Dependency,
            verdict,
        });
    }
    let live: BTreeSet<&str> = proxies.iter().map(|p| p.config.name.as_str()).collect();
    for c in known.iter().filter(|c| c.last_seen.millis() >= window) {
        let observed = match c.kind {
            StoredKind::Proxy if live.contains(c.name.as_str()) => continue,
            StoredKind::Proxy => Observed::Gone {
                last_seen: c.last_seen,
            },
            StoredKind::Endpoint => match history.probe_window(&c.name) {
                Some(w) => Observed::Probes(w),
                None => Observed::ProbedMinute {
                    state: c.last_state,
                    last_seen: c.last_seen,
                },
            },
        };
        let mut verdict = decide(&facts(&c.id, observed));
        if c.kind == StoredKind::Endpoint
            && verdict
                .state
                .is_some_and(|s| s != ComponentState::Operational)
            && verdict.reason.contains("probes failed")
        {
            verdict.reason = format!(
                "Probes of {} are failing: {}",
                c.description, verdict.reason
            );
        }
        out.push(Decided {
            id: c.id.clone(),
            name: c.name.clone(),
            kind: match c.kind {
                StoredKind::Proxy => ComponentKind::Dependency,
                StoredKind::Endpoint => ComponentKind::Endpoint,
            },
            verdict,
            stored: Some(c),
        });
    }
    // Dependencies first (live, then gone), endpoints last.
    out.sort_by_key(|d| d.kind == ComponentKind::Endpoint);
    out
}

/// Every component's current state, as the page shows it, without the days: for
/// `/metrics`. `None`: no data.
pub async fn component_states(
    registry: &Registry,
    history: &History,
) -> Vec<(String, Option<ComponentState>)> {
    let now = clock::now_ms();
    let proxies = registry.list().await;
    let (known, maintenance, impacts) = tokio::join!(
        history.components(),
        history.maintenance_components(Timestamp(now)),
        history.incident_impacts(),
    );
    let known = or_log("components", known);
    let maintenance = or_log("maintenance windows", maintenance);
    let impacts = or_log("open incidents", impacts);
    decide_all(history, &proxies, &known, &maintenance, &impacts, now)
        .into_iter()
        .map(|d| (d.id, d.verdict.state))
        .collect()
}

/// Reads what the store knows for the page: components, maintenance windows, incidents,
/// drills, and 90 days per proxy and recently probed endpoint.
async fn read_recorded(history: &History, cache: &Cache, proxies: &[String], now: i64) -> Recorded {
    let stamp = Timestamp(now);
    let window = Timestamp(now - DAYS as i64 * clock::DAY_MS);
    let open_filter = IncidentFilter {
        open: Some(true),
        limit: Some(100),
        ..IncidentFilter::default()
    };
    let recent_filter = IncidentFilter {
        since: Some(window),
        limit: Some(200),
        ..IncidentFilter::default()
    };
    let (known, maintenance, impacts, open, recent, drills) = tokio::join!(
        history.components(),
        history.maintenance_components(stamp),
        history.incident_impacts(),
        history.incidents(&open_filter),
        history.incidents(&recent_filter),
        history.drills(DRILLS_SHOWN),
    );
    let known = or_log("components", known);
    let maintenance: BTreeSet<String> = or_log("maintenance windows", maintenance);
    let impacts = or_log("open incidents", impacts);
    let mut incidents: Vec<Incident> = or_log("open incidents", open)
        .iter()
        .map(incident)
        .collect();
    for i in or_log("incidents", recent) {
        if !incidents.iter().any(|x| x.id == i.id.to_string()) {
            incidents.push(incident(&i));
        }
    }
    incidents.sort_by_key(|i| std::cmp::Reverse((i.created_at, i.id.parse::<i64>().ok())));

    let mut ids: Vec<String> = proxies.iter().map(|p| proxy_component(p)).collect();
    // Endpoints, and proxies that are gone: their rows stay with their history.
    ids.extend(
        known
            .iter()
            .filter(|c| c.last_seen.millis() >= window.millis())
            .filter(|c| c.kind == StoredKind::Endpoint || !proxies.contains(&c.name))
            .map(|c| c.id.clone()),
    );
    let today = clock::day_of(now);
    let past = past_days(history, cache, today, now).await;
    // Today changes with every sampled minute: read it, for every component in one query.
    let today_stats = or_log(
        "today's uptime",
        history.daily_uptime_all_until(1, history::Day(today)).await,
    );
    let first = today - (DAYS as i64 - 1);
    let mut days = HashMap::new();
    for id in ids {
        let mut row = empty_days(today, None);
        for d in &mut row {
            d.length_minutes = clock::day_length(d.day, now);
        }
        let stats = past.stats.get(&id).into_iter().flatten();
        for s in stats.chain(today_stats.get(&id).into_iter().flatten()) {
            let Some(slot) = usize::try_from(s.day.0 - first)
                .ok()
                .and_then(|i| row.get_mut(i))
            else {
                continue;
            };
            slot.uptime = s.uptime_pct.map(|p| p / 100.0);
            slot.observed_minutes = s.minutes.min(s.length_minutes);
            slot.length_minutes = s.length_minutes;
            slot.worst = s.worst_state.unwrap_or(ComponentState::Operational);
            slot.outage_minutes = s.partial_minutes.saturating_add(s.major_minutes);
            slot.degraded_minutes = s.degraded_minutes;
            slot.maintenance_minutes = s.maintenance_minutes;
        }
        for d in &mut row {
            d.incidents = incidents_on(&incidents, &id, d.day, now);
        }
        days.insert(id, row);
    }

    let drills = or_log("drills", drills)
        .into_iter()
        .map(|d| DrillRun {
            id: d.id.to_string(),
            name: d.name,
            started_at: d.started_at.millis(),
            ended_at: d.ended_at.map(Timestamp::millis),
            verdict: d.outcome.map(|o| o.as_str().to_owned()),
            report_url: d.ended_at.map(|_| format!("/status/drills/{}", d.id)),
        })
        .collect();
    Recorded {
        at: now,
        proxies: proxies.to_vec(),
        known,
        maintenance,
        impacts,
        incidents,
        drills,
        days,
    }
}
