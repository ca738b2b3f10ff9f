//! Status page render time with 50 components and a year of history (target: p99 < 20 ms).
//!
//! Run with `cargo bench -p downtime-server --bench status_page`. Before criterion's runs it
//! prints p50/p99/max over 500 sequential renders for two cases:
//! - `render`: the HTML of one snapshot (askama; 50 components x 90 bars, 30 incidents);
//! - `snapshot+render`: what `GET /status` does: read the registry (50 proxies, 10 of them
//!   faulted) and the SQLite history store (a year of daily rollups, 30 incidents, 20
//!   drills), then render; once with the store's part cached (as between two changes of the
//!   store), once reading the store's changing part every time (the first view after a
//!   change: today's uptime, incidents, drills) and once with nothing cached (the first view
//!   after a start, which also reads the 89 past days of every component).

#![allow(clippy::unwrap_used, missing_docs, reason = "a benchmark")]

use std::time::{Duration, Instant};

use criterion::Criterion;
use downtime_model::{Bounds, Protocol, ProxyConfig, Stream, Toxic, ToxicKind};
use downtime_proxy::Registry;
use downtime_server::history::{
    ComponentMinute, ComponentState, DrillEnd, DrillStart, History, HistorySettings,
    IncidentRequest, Timestamp, UpdateRequest, proxy_component,
};
use downtime_server::web::{Source, page};

const COMPONENTS: usize = 50;
const DAYS: i64 = 365;

fn latency(name: &str) -> Toxic {
    Toxic {
        name: name.to_owned(),
        kind: ToxicKind::Latency {
            latency: 500,
            jitter: 0,
        },
        stream: Stream::Downstream,
        stream_text: "downstream".to_owned(),
        toxicity: 1.0,
        bounds: Bounds::default(),
    }
}

/// 50 proxies (10 faulted) and a year of history in an in-memory store.
async fn setup() -> Source {
    let registry = Registry::new(Some(1));
    for n in 0..COMPONENTS {
        let config = ProxyConfig {
            name: format!("dependency-{n:02}"),
            listen: "127.0.0.1:0".to_owned(),
            upstream: "127.0.0.1:9".to_owned(),
            enabled: true,
            protocol: Protocol::Tcp,
            http: None,
            max_connections: None,
            tls: None,
            mode: None,
            intercept: None,
        };
        let toxics = if n % 5 == 0 {
            vec![latency("slow")]
        } else {
            vec![]
        };
        registry.create(config, toxics).await.unwrap();
    }
    let history = History::memory(HistorySettings::default()).await.unwrap();
    // Four sampled minutes a day (states vary by day) for a year: daily rollups for 365 days.
    let today = Timestamp::now().day().0;
    let mut minutes = Vec::new();
    for n in 0..COMPONENTS {
        let component = proxy_component(&format!("dependency-{n:02}"));
        for day in (today - DAYS + 1)..=today {
            for k in 0..4i64 {
                let state = match (day + n as i64 + k) % 23 {
                    0 => ComponentState::MajorOutage,
                    1 => ComponentState::PartialOutage,
                    2 | 3 => ComponentState::DegradedPerformance,
                    4 => ComponentState::UnderMaintenance,
                    _ => ComponentState::Operational,
                };
                minutes.push(ComponentMinute {
                    component: component.clone(),
                    minute: day * 1440 + k * 360,
                    state,
                });
            }
        }
    }
    history.insert_minutes(&minutes).await.unwrap();
    for n in 0..30 {
        let request = IncidentRequest {
            title: Some(format!(
                "Incident {n} on dependency-{:02} <b>",
                n % COMPONENTS
            )),
            status: Some("investigating".to_owned()),
            impact: Some("major".to_owned()),
            components: Some(vec![format!("dependency-{:02}", n % COMPONENTS)]),
            body: Some("We are looking into it.".to_owned()),
            ..IncidentRequest::default()
        };
        let incident = history
            .create_incident(request.into_new().unwrap())
            .await
            .unwrap();
        for status in ["identified", "monitoring", "resolved"] {
            let update = UpdateRequest {
                status: Some(status.to_owned()),
                body: Some(format!("Now {status}.")),
            };
            history
                .add_incident_update(incident.id, update.into_update().unwrap())
                .await
                .unwrap();
        }
    }
    for n in 0..20 {
        let start = DrillStart {
            name: format!("drill-{n}"),
            seed: Some(n),
        };
        let drill = history
            .drill_started(start, downtime_server::history::Actor::Drill)
            .await
            .unwrap();
        let end: DrillEnd = serde_json::from_value(serde_json::json!({
            "outcome": if n % 3 == 0 { "fail" } else { "pass" },
            "report": {"events": [], "probes": []},
        }))
        .unwrap();
        history
            .drill_ended(drill.id, end, downtime_server::history::Actor::Drill)
            .await
            .unwrap();
    }
    Source::new(registry, Some(history))
}

fn percentiles(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "{name}: n={} p50={:.2} ms p99={:.2} ms max={:.2} ms",
        samples.len(),
        at(0.50).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3,
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let source = rt.block_on(setup());
    let snapshot = rt.block_on(source.snapshot());
    let html = page::render("downtime", &snapshot).unwrap();
    assert_eq!(snapshot.components.len(), COMPONENTS);
    assert!(snapshot.components.iter().all(|c| c.days.len() == 90));
    println!(
        "page: {} components, {} incidents, {} drills, {} KiB of HTML",
        snapshot.components.len(),
        snapshot.incidents.len(),
        snapshot.drills.len(),
        html.len() / 1024
    );

    let mut render = Vec::new();
    let mut full = Vec::new();
    let mut cold = Vec::new();
    for _ in 0..500 {
        let t = Instant::now();
        std::hint::black_box(page::render("downtime", &snapshot).unwrap());
        render.push(t.elapsed());
        let t = Instant::now();
        let s = rt.block_on(source.snapshot());
        std::hint::black_box(page::render("downtime", &s).unwrap());
        full.push(t.elapsed());
    }
    for _ in 0..100 {
        source.invalidate();
        let t = Instant::now();
        let s = rt.block_on(source.snapshot());
        std::hint::black_box(page::render("downtime", &s).unwrap());
        cold.push(t.elapsed());
    }
    let mut start = Vec::new();
    for _ in 0..100 {
        source.invalidate_all();
        let t = Instant::now();
        let s = rt.block_on(source.snapshot());
        std::hint::black_box(page::render("downtime", &s).unwrap());
        start.push(t.elapsed());
    }
    percentiles("render", render);
    percentiles("snapshot+render (store cached, the usual case)", full);
    percentiles("snapshot+render (store read: after a change)", cold);
    percentiles(
        "snapshot+render (nothing cached: first view after start)",
        start,
    );

    let mut c = Criterion::default().configure_from_args();
    c.bench_function("status_page/render", |b| {
        b.iter(|| page::render("downtime", &snapshot).unwrap());
    });
    c.bench_function("status_page/snapshot+render", |b| {
        b.iter(|| {
            let s = rt.block_on(source.snapshot());
            page::render("downtime", &s).unwrap()
        });
    });
    c.final_summary();
}
