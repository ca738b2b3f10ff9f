//! Background work of the history store: the sampler (component states per minute), the
//! pruner (rollups and retention), the fault-expiry listener and the watch for abandoned
//! drills (`drills::watch_abandoned`).

use std::time::Duration;

use downtime_proxy::Registry;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::state::{Facts, Observed, decide};
use super::types::{Actor, ComponentMinute, Event, EventKind, Timestamp, proxy_component};
use super::{History, Notice};

/// The running background tasks; [`HistoryTasks::stop`] ends them.
pub struct HistoryTasks {
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl HistoryTasks {
    /// Stops every task and waits for them (each finishes its current write first).
    pub async fn stop(self) {
        self.cancel.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await;
    }
}

/// Starts the sampler, the pruner and the expiry listener for `registry`.
pub fn spawn_tasks(history: &History, registry: &Registry) -> HistoryTasks {
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    tracker.spawn(sampler(history.clone(), registry.clone(), cancel.clone()));
    tracker.spawn(pruner(history.clone(), cancel.clone()));
    tracker.spawn(expiry(history.clone(), registry.clone(), cancel.clone()));
    tracker.spawn(super::drills::watch_abandoned(
        history.clone(),
        cancel.clone(),
    ));
    tracker.spawn(super::drills::watch_abandoned(
        history.clone(),
        cancel.clone(),
    ));
    HistoryTasks { cancel, tracker }
}

/// Samples every proxy's state (and the maintenance windows) once per interval.
async fn sampler(history: History, registry: Registry, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(
        history
            .settings()
            .sample_every
            .max(Duration::from_millis(10)),
    );
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        sample_once(&history, &registry).await;
    }
}

/// One sampling pass: moves maintenance windows along, then writes a minute per proxy.
pub async fn sample_once(history: &History, registry: &Registry) {
    let now = Timestamp::now();
    match history.advance_maintenances(now).await {
        Ok(changed) => {
            for incident in changed {
                tracing::info!(
                    incident = incident.id,
                    status = incident.status.as_str(),
                    "maintenance moved on"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "history: cannot advance maintenances"),
    }
    let maintenance = history
        .maintenance_components(now)
        .await
        .unwrap_or_default();
    let impacts = history.incident_impacts().await.unwrap_or_default();
    let minute = now.minute();
    // The same decision as the page's, so the bars and the live state agree.
    let minutes: Vec<ComponentMinute> = registry
        .list()
        .await
        .iter()
        .filter_map(|view| {
            let component = proxy_component(&view.config.name);
            let verdict = decide(&Facts {
                observed: Observed::Proxy(view),
                maintenance_window: maintenance.contains(&component),
                incident: impacts.get(&component).copied(),
                now,
            });
            Some(ComponentMinute {
                component,
                minute,
                state: verdict.state?,
            })
        })
        .collect();
    if minutes.is_empty() {
        history.notify(Notice::Sampled);
    } else {
        history.record_minutes(minutes);
    }
}

/// Rolls up and prunes at start and then every `prune_every`.
async fn pruner(history: History, cancel: CancellationToken) {
    let mut tick =
        tokio::time::interval(history.settings().prune_every.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        match history.prune(Timestamp::now()).await {
            Ok(stats) => tracing::debug!(?stats, "history pruned"),
            Err(e) => tracing::warn!(error = %e, "history: pruning failed"),
        }
    }
}

/// Records every toxic the registry expires (actor `ttl`).
async fn expiry(history: History, registry: Registry, cancel: CancellationToken) {
    let mut rx = registry.subscribe_expired();
    loop {
        let next = tokio::select! {
            () = cancel.cancelled() => return,
            next = rx.recv() => next,
        };
        match next {
            Ok(expired) => history.record(
                Event::fault_gone(
                    EventKind::FaultExpired,
                    Actor::Ttl,
                    &expired.proxy,
                    &expired.toxic.name,
                )
                .with_detail(serde_json::to_value(&expired.toxic).unwrap_or_default()),
            ),
            Err(RecvError::Lagged(n)) => history.count_dropped(n),
            Err(RecvError::Closed) => return,
        }
    }
}
