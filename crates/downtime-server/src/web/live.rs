//! Live updates: one monitor task per server watches for changes and publishes them to open
//! pages (server-sent events) and to webhooks.
//!
//! The registry has no change feed, so the monitor polls it (and the history) once per
//! `interval`: a poll clones a few small structs under the registry's control lock, which
//! connections never take, so it costs the data plane nothing. Only when something visible
//! changed does it render the fragments, once, and hand the same `Arc` to every open page.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Serialize;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::WebState;
use super::json;
use super::model::{ComponentState, StatusSnapshot};
use super::page::{self, BannerFragment, ComponentsFragment, IncidentsFragment};
use super::source::{Source, proxy_reason};
use crate::history::{History, Notice, component_state};
use crate::webhooks::{EventKind, Webhooks};
use askama::Template;

/// What an open page receives on each change (JSON in the SSE `data`).
#[derive(Debug, Serialize, Default)]
pub struct LiveUpdate {
    /// Change counter, 0 before the first poll.
    pub seq: u64,
    /// Snapshot time, unix ms: a page ignores updates older than itself.
    pub updated_ms: i64,
    /// Snapshot time, RFC 3339.
    pub updated_iso: String,
    /// Snapshot time for people.
    pub updated: String,
    /// Banner state slug.
    pub overall: &'static str,
    /// Banner text (for the document title).
    pub overall_label: &'static str,
    /// Banner HTML (escaped server-side).
    pub banner_html: String,
    /// Incident sections HTML (escaped server-side).
    pub incidents_html: String,
    /// Component ids joined by newlines; the page replaces its list when this differs.
    pub components_key: String,
    /// Component list HTML with uptime bars (escaped server-side).
    pub components_html: String,
    /// Component states, to patch the list in place (keeps keyboard focus).
    pub components: Vec<LiveComponent>,
}

/// One component's state in a [`LiveUpdate`].
#[derive(Debug, Serialize)]
pub struct LiveComponent {
    /// Id (matches `data-component-id`).
    pub id: String,
    /// State slug.
    pub state: &'static str,
    /// State words.
    pub label: &'static str,
    /// Why.
    pub reason: String,
}

/// The parts of a snapshot whose change is worth pushing.
#[derive(PartialEq, Default)]
struct Fingerprint {
    components: Vec<(String, Option<ComponentState>, String)>,
    incidents: Vec<(String, i64, String, usize)>,
    drills: Vec<(String, Option<String>, Option<i64>)>,
}

impl Fingerprint {
    fn of(s: &StatusSnapshot) -> Self {
        Fingerprint {
            components: s
                .components
                .iter()
                .map(|c| (c.id.clone(), c.state, c.reason.clone()))
                .collect(),
            incidents: s
                .incidents
                .iter()
                .map(|i| {
                    (
                        i.id.clone(),
                        i.updated_at,
                        i.status.clone(),
                        i.updates.len(),
                    )
                })
                .collect(),
            drills: s
                .drills
                .iter()
                .map(|d| (d.id.clone(), d.verdict.clone(), d.ended_at))
                .collect(),
        }
    }
}

/// Renders what open pages receive for a snapshot.
pub fn update(title: &str, seq: u64, snapshot: &StatusSnapshot) -> LiveUpdate {
    let view = page::view(title, snapshot);
    let render = |r: Result<String, askama::Error>| {
        r.unwrap_or_else(|e| {
            tracing::error!(error = %e, "could not render a status fragment");
            String::new()
        })
    };
    LiveUpdate {
        seq,
        updated_ms: snapshot.now,
        updated_iso: view.updated_iso.clone(),
        updated: view.updated.clone(),
        overall: view.overall_slug,
        overall_label: view.overall_label,
        banner_html: render(BannerFragment { page: &view }.render()),
        incidents_html: render(IncidentsFragment { page: &view }.render()),
        components_key: view.component_key.clone(),
        components_html: render(ComponentsFragment { page: &view }.render()),
        components: view
            .components
            .iter()
            .map(|c| LiveComponent {
                id: c.id.clone(),
                state: c.state_slug,
                label: c.state_label,
                reason: c.reason.clone(),
            })
            .collect(),
    }
}

/// The published update: the JSON text every page receives.
pub type Published = Arc<(u64, String)>;

/// Waits for the next change notice of the history store (never, without one); `None`
/// when notices were lost to lag.
async fn notice(rx: &mut Option<broadcast::Receiver<Notice>>) -> Option<Notice> {
    loop {
        match rx {
            Some(r) => match r.recv().await {
                Ok(n) => return Some(n),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "status monitor lagged behind history notices");
                    return None;
                }
                Err(broadcast::error::RecvError::Closed) => *rx = None,
            },
            None => std::future::pending::<()>().await,
        }
    }
}

/// Which webhook event a changed incident is: just resolved (or completed), just opened,
/// or anything else.
fn incident_event(i: &crate::history::Incident) -> EventKind {
    if i.resolved_at == Some(i.updated_at) {
        EventKind::IncidentResolved
    } else if i.updates.len() <= 1 && i.created_at == i.updated_at {
        EventKind::IncidentCreated
    } else {
        EventKind::IncidentUpdated
    }
}

/// What the live faults say, per proxy: compared every poll, without touching the store.
/// (Probe results and the clock reach the monitor as store notices: every sampled minute.)
fn live_print(proxies: &[downtime_model::ProxyView]) -> Vec<(String, ComponentState, String)> {
    proxies
        .iter()
        .map(|p| (p.config.name.clone(), component_state(p), proxy_reason(p)))
        .collect()
}

/// Starts the monitor; it stops when `stop` is cancelled.
///
/// Each `interval` it reads the registry (cheap: no store query); it builds a full snapshot
/// only when the live faults changed or the history store announced a change (an incident,
/// a drill, a sampled minute), at most every 100 ms.
pub fn spawn_monitor(
    source: Source,
    title: String,
    status_url: String,
    interval: Duration,
    webhooks: Option<Webhooks>,
    stop: CancellationToken,
) -> watch::Receiver<Published> {
    let (tx, rx) = watch::channel(Arc::new((0, String::new())));
    let mut notices = source.history().map(History::subscribe);
    tokio::spawn(async move {
        let mut last: Option<(Fingerprint, StatusSnapshot)> = None;
        let mut last_live = None;
        let mut seq = 0u64;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let first = tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => None,
                n = notice(&mut notices) => Some(n),
            };
            let noticed = first.is_some();
            if let Some(first) = first {
                // Coalesce a burst of notices into one snapshot; every incident change is
                // still its own webhook event, from the notice itself.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let mut batch: Vec<Notice> = first.into_iter().collect();
                if let Some(r) = notices.as_mut() {
                    loop {
                        match r.try_recv() {
                            Ok(n) => batch.push(n),
                            Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                            Err(_) => break,
                        }
                    }
                }
                if let Some(hooks) = &webhooks {
                    for n in &batch {
                        if let Notice::Incident(i) = n {
                            let context = match &last {
                                Some((_, s)) => s.clone(),
                                None => source.snapshot().await,
                            };
                            let view = super::source::incident(i);
                            hooks.publish(
                                incident_event(i),
                                json::incident_event(&context, &status_url, &view),
                            );
                        }
                    }
                }
            }
            let live = live_print(&source.registry().list().await);
            if !noticed && last_live.as_ref() == Some(&live) {
                continue;
            }
            last_live = Some(live);
            let snapshot = source.snapshot().await;
            let print = Fingerprint::of(&snapshot);
            if last.as_ref().is_some_and(|(p, _)| *p == print) {
                continue;
            }
            seq += 1;
            let text = serde_json::to_string(&update(&title, seq, &snapshot)).unwrap_or_default();
            tx.send_replace(Arc::new((seq, text)));
            if let (Some(hooks), Some((_, before))) = (&webhooks, &last) {
                notify(hooks, &status_url, before, &snapshot);
            }
            last = Some((print, snapshot));
        }
    });
    rx
}

/// Sends `component.updated` for every component whose state changed between two snapshots
/// (incident events come from the store's notices, one per change).
fn notify(hooks: &Webhooks, status_url: &str, before: &StatusSnapshot, after: &StatusSnapshot) {
    let old: HashMap<&str, Option<ComponentState>> = before
        .components
        .iter()
        .map(|c| (c.id.as_str(), c.state))
        .collect();
    for c in &after.components {
        let was = old.get(c.id.as_str()).copied().flatten();
        if old.get(c.id.as_str()).copied() != Some(c.state) {
            let payload = json::component_event(after, status_url, c, was);
            hooks.publish(EventKind::ComponentUpdated, payload);
        }
    }
}

/// `GET /status/events`: the current state at once, then every change, until shutdown.
pub async fn events(
    State(state): State<WebState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = state.live.clone();
    let stop = state.stop.clone();
    let stream =
        futures_util::stream::unfold((rx, stop, true), |(mut rx, stop, first)| async move {
            if !first {
                tokio::select! {
                    () = stop.cancelled() => return None,
                    changed = rx.changed() => changed.ok()?,
                }
            }
            let current = rx.borrow_and_update().clone();
            let event = if current.0 == 0 {
                // Nothing polled yet: tell the page it is connected.
                Event::default().event("hello").data("{}")
            } else {
                Event::default()
                    .event("status")
                    .id(current.0.to_string())
                    .data(current.1.as_str())
            };
            Some((Ok(event), (rx, stop, false)))
        });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
