//! The history store end to end, on a real SQLite file in a temporary directory: events
//! recorded through the real API with their actors, expiry, the write queue under overflow,
//! component sampling, rollups and retention over generated history, incidents and drill
//! reports through the API, and refused input.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{LONG, Server, echo_upstream, eventually};
use downtime_server::ServeOptions;
use downtime_server::history::{
    Actor, ComponentMinute, ComponentState, Day, Event, EventKind, EventQuery, History,
    HistorySettings, Timestamp,
};
use reqwest::Method;
use serde_json::{Value, json};

const CLI: &str = "downtime-cli/0.1.0";
const DRILL: &str = "downtime-drill/0.1.0";

/// Fast sampling so tests see component minutes within a fraction of a second.
fn fast() -> HistorySettings {
    HistorySettings {
        sample_every: Duration::from_millis(100),
        ..HistorySettings::default()
    }
}

fn server_on(db: &Path) -> Server {
    Server::start_with(ServeOptions {
        grace: Duration::from_secs(2),
        history: Some(db.to_owned()),
        history_settings: fast(),
        ..ServeOptions::default()
    })
}

async fn events_of(server: &Server, query: &str) -> Vec<Value> {
    let resp = server.get(&format!("/history/events?{query}")).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    resp.json().as_array().cloned().unwrap_or_default()
}

/// Waits until the events matching `query` number at least `n`; returns them oldest first.
async fn wait_events(server: &Server, query: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + LONG;
    loop {
        let mut events = events_of(server, query).await;
        if events.len() >= n {
            events.reverse();
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "expected {n} events for {query}, got {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn kinds_and_actors(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or_default().to_owned(),
                e["actor"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn api_changes_are_recorded_with_their_actor_in_a_wal_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    let server = server_on(&db);
    let upstream = echo_upstream().await;
    server.proxy("db", upstream.addr).await;
    let toxic = json!({"name": "slow", "type": "latency", "attributes": {"latency": 50}});
    let resp = server
        .request_with(
            Method::POST,
            "/proxies/db/toxics",
            Some(&toxic.to_string()),
            Some(CLI),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let resp = server
        .request_with(
            Method::POST,
            "/proxies/db/toxics/slow",
            Some(r#"{"toxicity": 0.5}"#),
            Some(DRILL),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(server.delete("/proxies/db/toxics/slow").await.status, 204);
    let resp = server
        .request_with(
            Method::POST,
            "/proxies/db",
            Some(r#"{"enabled": false}"#),
            Some(CLI),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(server.delete("/proxies/db").await.status, 204);

    let events = wait_events(&server, "proxy=db", 6).await;
    assert_eq!(
        kinds_and_actors(&events),
        [
            ("proxy_created", "api"),
            ("fault_created", "cli"),
            ("fault_changed", "drill"),
            ("fault_removed", "api"),
            ("proxy_changed", "cli"),
            ("proxy_removed", "api"),
        ]
        .map(|(k, a)| (k.to_owned(), a.to_owned()))
    );
    assert_eq!(events[1]["fault"], "slow");
    assert_eq!(events[1]["detail"]["attributes"]["latency"], 50);
    assert_eq!(events[2]["detail"]["toxicity"], 0.5);
    assert_eq!(events[4]["detail"]["enabled"], false);
    // Filters.
    let created = events_of(&server, "proxy=db&kind=fault_created").await;
    assert_eq!(created.len(), 1);
    assert_eq!(events_of(&server, "proxy=db&limit=2").await.len(), 2);

    // A real file, in WAL mode (the -wal file exists while the server runs).
    assert!(db.exists());
    assert!(dir.path().join("history.db-wal").exists());

    // The proxy was disabled for a moment: its minute keeps the worst state, a major outage.
    let resp = server
        .get("/history/uptime?component=proxy:db&days=1")
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let today = &resp.json()["days"][0];
    assert_eq!(today["worst_state"], "major_outage", "{today}");

    let stats = server.get("/history/stats").await.json();
    assert_eq!(stats["dropped"], 0);
    assert_eq!(stats["failed"], 0);
}

#[tokio::test]
async fn reset_halt_and_populate_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_on(&dir.path().join("h.db"));
    let upstream = echo_upstream().await;
    let body =
        json!([{"name": "a", "listen": "127.0.0.1:0", "upstream": upstream.addr.to_string()}]);
    let resp = server
        .request_with(
            Method::POST,
            "/populate",
            Some(&body.to_string()),
            Some(CLI),
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    assert_eq!(server.post("/reset", "").await.status, 204);
    assert_eq!(server.post("/halt", "").await.status, 200);
    let all = wait_events(&server, "", 3).await;
    assert_eq!(
        kinds_and_actors(&all),
        [
            ("proxy_populated", "cli"),
            ("reset", "api"),
            ("halt", "api")
        ]
        .map(|(k, a)| (k.to_owned(), a.to_owned()))
    );
    assert_eq!(all[2]["detail"]["removed"], 0);
}

#[tokio::test]
async fn expiry_is_recorded_with_the_ttl_actor() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_on(&dir.path().join("h.db"));
    let upstream = echo_upstream().await;
    server.proxy("cache", upstream.addr).await;
    server
        .toxic(
            "cache",
            json!({"name": "brief", "type": "timeout", "ttl": 150}),
        )
        .await;
    let events = wait_events(&server, "proxy=cache&kind=fault_expired", 1).await;
    assert_eq!(events[0]["actor"], "ttl");
    assert_eq!(events[0]["fault"], "brief");
    assert_eq!(events[0]["detail"]["type"], "timeout");
    // The proxy no longer has it.
    let proxy = server.get("/proxies/cache").await.json();
    assert_eq!(proxy["toxics"], json!([]));
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let settings = HistorySettings {
        queue: 8,
        batch: 4,
        ..HistorySettings::default()
    };
    let history = History::open(&dir.path().join("q.db"), settings)
        .await
        .unwrap();
    let total = 20_000u64;
    let started = Instant::now();
    for i in 0..total {
        let event = Event::new(EventKind::FaultCreated, Actor::Api).with_detail(json!({ "i": i }));
        history.record(event);
    }
    let spent = started.elapsed();
    // 20,000 try_sends: far below a millisecond each, whatever the disk does.
    assert!(spent < Duration::from_secs(2), "recording took {spent:?}");
    history.flush().await.unwrap();
    let dropped = history.dropped();
    assert!(
        dropped > 0,
        "a queue of 8 cannot take 20,000 events at once"
    );
    let stored = history
        .events(&EventQuery {
            limit: Some(1000),
            ..EventQuery::default()
        })
        .await
        .unwrap()
        .len() as u64;
    // Everything not dropped was written (up to the read limit).
    assert_eq!(stored, (total - dropped).min(1000));
    assert_eq!(history.failed(), 0);
    history.shutdown().await;
    // After shutdown, records are dropped and counted too.
    history.record(Event::new(EventKind::Reset, Actor::Api));
    assert_eq!(history.dropped(), dropped + 1);
}

#[tokio::test]
async fn the_sampler_records_component_minutes_and_maintenance_windows() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_on(&dir.path().join("h.db"));
    let upstream = echo_upstream().await;
    server.proxy("payments", upstream.addr).await;
    server.proxy("search", upstream.addr).await;
    server
        .toxic("payments", json!({"type": "reset_peer", "toxicity": 0.5}))
        .await;
    let ok = eventually(LONG, || async {
        let components = server.get("/history/components").await.json();
        let state = |id: &str| {
            components
                .as_array()
                .and_then(|a| a.iter().find(|c| c["id"] == id))
                .map(|c| c["last_state"].clone())
        };
        state("proxy:payments") == Some(json!("partial_outage"))
            && state("proxy:search") == Some(json!("operational"))
    })
    .await;
    assert!(ok, "{}", server.get("/history/components").await.body);

    // A maintenance window running now puts its components under maintenance.
    let now = Timestamp::now().millis();
    let body = json!({
        "title": "search index rebuild",
        "components": ["search"],
        "scheduled": {"start": now - 1000, "end": now + 600_000},
    });
    let resp = server.post("/incidents", &body.to_string()).await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    let id = resp.json()["id"].as_i64().unwrap();
    let ok = eventually(LONG, || async {
        let incident = server.get(&format!("/incidents/{id}")).await.json();
        let components = server.get("/history/components").await.json();
        let search = components
            .as_array()
            .and_then(|a| a.iter().find(|c| c["id"] == "proxy:search").cloned())
            .unwrap_or_default();
        incident["status"] == "in_progress" && search["last_state"] == "under_maintenance"
    })
    .await;
    assert!(ok, "{}", server.get(&format!("/incidents/{id}")).await.body);
    let incident = server.get(&format!("/incidents/{id}")).await.json();
    assert_eq!(incident["updates"][0]["status"], "in_progress");
    assert_eq!(incident["updates"][1]["status"], "scheduled");
}

/// One generated day: `minutes` sampled minutes of which the first `bad` are in `state`.
fn day_minutes(
    component: &str,
    day: Day,
    minutes: i64,
    bad: i64,
    state: ComponentState,
) -> Vec<ComponentMinute> {
    (0..minutes)
        .map(|i| ComponentMinute {
            component: component.to_owned(),
            minute: day.first_minute() + i * 10,
            state: if i < bad {
                state
            } else {
                ComponentState::Operational
            },
        })
        .collect()
}

#[tokio::test]
async fn rollups_and_retention_over_generated_history() {
    let dir = tempfile::tempdir().unwrap();
    let settings = HistorySettings {
        raw_days: 30,
        daily_days: 365,
        ..HistorySettings::default()
    };
    let history = History::open(&dir.path().join("r.db"), settings)
        .await
        .unwrap();
    let today = Day::today();
    let c = "proxy:db";
    // 400 days of 100 sampled minutes each (every 10 minutes), with a gap 60 days ago.
    let mut minutes = Vec::new();
    for back in 0..400 {
        let day = today.minus(back);
        match back {
            60 => {}
            10 => minutes.extend(day_minutes(c, day, 100, 10, ComponentState::MajorOutage)),
            50 => minutes.extend(day_minutes(c, day, 100, 10, ComponentState::PartialOutage)),
            80 => minutes.extend(day_minutes(
                c,
                day,
                100,
                100,
                ComponentState::DegradedPerformance,
            )),
            _ => minutes.extend(day_minutes(c, day, 100, 0, ComponentState::Operational)),
        }
    }
    // A second component, only recent, to see that rows do not mix.
    minutes.extend(day_minutes(
        "endpoint:home",
        today,
        10,
        10,
        ComponentState::MajorOutage,
    ));
    history.insert_minutes(&minutes).await.unwrap();
    // Old and new raw events.
    let mut old = Event::new(EventKind::FaultCreated, Actor::Api);
    old.at = today.minus(45).start();
    history.record(old);
    history.record(Event::new(EventKind::FaultRemoved, Actor::Api));
    history.flush().await.unwrap();

    let check = |stats: &[downtime_server::history::DayStat]| {
        assert_eq!(stats.len(), 90);
        assert_eq!(stats[89].day, today);
        assert_eq!(stats[0].day, today.minus(89));
        let at = |back: usize| &stats[89 - back];
        // Uptime is over the day's full length: 100 sampled minutes of 1,440 are 6.94 %
        // up, the rest no data (issue 14: not 100 % over the observed minutes).
        let pct = |x: f64| Some(x * 100.0 / 1440.0);
        assert_eq!(at(0).worst_state, Some(ComponentState::Operational));
        assert_eq!(at(0).minutes, 100);
        assert_eq!(at(10).uptime_pct, pct(90.0));
        assert_eq!(at(10).length_minutes, 1440);
        assert_eq!(at(10).no_data_minutes, 1340);
        assert_eq!(at(10).major_minutes, 10);
        assert_eq!(at(10).worst_state, Some(ComponentState::MajorOutage));
        assert_eq!(at(50).uptime_pct, pct(97.0));
        assert_eq!(at(50).worst_state, Some(ComponentState::PartialOutage));
        assert_eq!(at(60).uptime_pct, None);
        assert_eq!(at(60).worst_state, None);
        assert_eq!(at(60).minutes, 0);
        assert_eq!(at(80).uptime_pct, pct(100.0));
        assert_eq!(at(60).no_data_minutes, 1440);
        assert_eq!(at(80).degraded_minutes, 100);
        assert_eq!(
            at(80).worst_state,
            Some(ComponentState::DegradedPerformance)
        );
    };
    check(&history.daily_uptime(c, 90).await.unwrap());
    // All components at once (one query for a page of many components).
    let all = history.daily_uptime_all(90).await.unwrap();
    assert_eq!(all.len(), 2);
    check(&all[c]);
    assert_eq!(all["endpoint:home"][89].uptime_pct, Some(0.0));

    let stats = history.prune(Timestamp::now()).await.unwrap();
    // Raw minutes older than 30 days went (days 31..=399 back, less the gap), after their
    // days were rolled up; daily rows older than 365 days went (days 366..=399 back).
    assert_eq!(stats.component_minutes, 368 * 100);
    assert_eq!(stats.days, 34);
    assert_eq!(stats.events, 1);
    // The same answer from the daily rollups alone.
    check(&history.daily_uptime(c, 90).await.unwrap());
    let year = history.daily_uptime(c, 400).await.unwrap();
    assert_eq!(year.len(), 400);
    assert!(year[..34].iter().all(|d| d.uptime_pct.is_none()));
    assert!(year[34..].iter().filter(|d| d.uptime_pct.is_some()).count() == 365);
    let home = history.daily_uptime("endpoint:home", 1).await.unwrap();
    assert_eq!(home[0].uptime_pct, Some(0.0));
    // Events: only the recent one is left.
    let events = history.events(&EventQuery::default()).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::FaultRemoved);
    // Pruning again deletes nothing more.
    let again = history.prune(Timestamp::now()).await.unwrap();
    assert_eq!(again.component_minutes, 0);
    assert_eq!(again.days, 0);
    history.shutdown().await;

    // The file reopens with its history (migrations already applied).
    let reopened = History::open(&dir.path().join("r.db"), HistorySettings::default())
        .await
        .unwrap();
    check(&reopened.daily_uptime(c, 90).await.unwrap());
    reopened.shutdown().await;
}

#[tokio::test]
async fn incident_lifecycle_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_on(&dir.path().join("h.db"));
    let body = json!({
        "title": "<b>Checkout</b> errors & \"timeouts\"",
        "impact": "major",
        "components": ["payments", "endpoint:checkout"],
        "body": "We are looking into <script>alert(1)</script>.",
    });
    let resp = server.post("/incidents", &body.to_string()).await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    let created = resp.json();
    let id = created["id"].as_i64().unwrap();
    assert_eq!(created["kind"], "incident");
    assert_eq!(created["status"], "investigating");
    assert_eq!(created["impact"], "major");
    assert_eq!(created["source"], "manual");
    // Stored exactly as given: the page escapes it.
    assert_eq!(created["title"], "<b>Checkout</b> errors & \"timeouts\"");
    assert_eq!(
        created["components"],
        json!(["proxy:payments", "endpoint:checkout"])
    );
    assert_eq!(created["updates"].as_array().unwrap().len(), 1);
    assert_eq!(
        created["updates"][0]["body"],
        "We are looking into <script>alert(1)</script>."
    );
    assert!(created["resolved_at"].is_null());

    let resp = server
        .post(
            &format!("/incidents/{id}/updates"),
            r#"{"status": "identified", "body": "The payment provider is down."}"#,
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    assert_eq!(resp.json()["status"], "identified");

    let resp = server
        .post(
            &format!("/incidents/{id}/updates"),
            r#"{"body": "Still on it."}"#,
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    assert_eq!(resp.json()["status"], "identified");

    let open = server.get("/incidents?status=open").await.json();
    assert!(open.as_array().unwrap().iter().any(|i| i["id"] == id));

    let resp = server
        .patch(
            &format!("/incidents/{id}"),
            r#"{"status": "resolved", "body": "Recovered.", "impact": "minor"}"#,
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let resolved = resp.json();
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["impact"], "minor");
    assert!(resolved["resolved_at"].is_string());
    let timeline: Vec<&str> = resolved["updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        timeline,
        ["resolved", "identified", "identified", "investigating"]
    );

    let open = server.get("/incidents?status=open").await.json();
    assert!(!open.as_array().unwrap().iter().any(|i| i["id"] == id));
    let closed = server.get("/incidents?status=closed").await.json();
    assert!(closed.as_array().unwrap().iter().any(|i| i["id"] == id));

    // A rename without a status change adds no update.
    let resp = server
        .patch(
            &format!("/incidents/{id}"),
            r#"{"title": "Checkout errors"}"#,
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.json()["updates"].as_array().unwrap().len(), 4);

    // Reopening clears resolved_at.
    let resp = server
        .patch(&format!("/incidents/{id}"), r#"{"status": "monitoring"}"#)
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert!(resp.json()["resolved_at"].is_null());

    // Scheduled maintenance in the future stays scheduled.
    let body = json!({
        "title": "database upgrade",
        "components": ["db"],
        "scheduled": {"start": "2099-01-01T00:00:00Z", "end": "2099-01-01T02:00:00+00:00"},
    });
    let resp = server.post("/incidents", &body.to_string()).await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    let m = resp.json();
    assert_eq!(m["kind"], "maintenance");
    assert_eq!(m["status"], "scheduled");
    assert_eq!(m["impact"], "maintenance");
    assert_eq!(m["scheduled_start"], "2099-01-01T00:00:00.000Z");
    assert_eq!(m["scheduled_end"], "2099-01-01T02:00:00.000Z");
    let list = server.get("/incidents?kind=maintenance").await.json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let all = server.get("/incidents").await.json();
    assert_eq!(all.as_array().unwrap().len(), 2);
    // Newest first.
    assert_eq!(all[0]["id"], m["id"]);
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_on(&dir.path().join("h.db"));
    let cases: [(&str, &str, &str); 14] = [
        ("/incidents", r#"{}"#, "title"),
        ("/incidents", r#"{"title": ""}"#, "title"),
        (
            "/incidents",
            r#"{"title": "t", "status": "exploded"}"#,
            "status",
        ),
        (
            "/incidents",
            r#"{"title": "t", "status": "in_progress"}"#,
            "status",
        ),
        ("/incidents", r#"{"title": "t", "impact": "meh"}"#, "impact"),
        (
            "/incidents",
            r#"{"title": "t", "components": ["ok", " "]}"#,
            "components[1]",
        ),
        ("/incidents", r#"{"title": "t", "colour": "red"}"#, "colour"),
        ("/incidents", r#"{"title": 5}"#, "title"),
        ("/incidents", r#"[1]"#, "object"),
        (
            "/incidents",
            r#"{"title": "t", "scheduled": {"start": "2030-01-02T00:00:00Z", "end": "2030-01-01T00:00:00Z"}}"#,
            "scheduled.end",
        ),
        (
            "/incidents",
            r#"{"title": "t", "scheduled": {"start": "soon", "end": 1}}"#,
            "scheduled.start",
        ),
        ("/history/drills", r#"{"name": ""}"#, "name"),
        (
            "/history/probes",
            r#"{"samples": [{"endpoint": "", "at": 0, "ok": true}]}"#,
            "samples[0].endpoint",
        ),
        (
            "/history/probes",
            r#"{"samples": [{"endpoint": "x", "at": "yesterday", "ok": true}]}"#,
            "samples[0].at",
        ),
    ];
    for (path, body, field) in cases {
        let resp = server.post(path, body).await;
        assert_eq!(resp.status, 400, "{path} {body}: {}", resp.body);
        let error = resp.json();
        assert_eq!(error["status"], 400);
        let text = error["error"].as_str().unwrap();
        assert!(text.contains(field), "{body}: {text:?} should name {field}");
        assert!(text.starts_with(|c: char| c.is_lowercase()), "{text:?}");
    }
    // Values are named too.
    let resp = server
        .post("/incidents", r#"{"title": "t", "impact": "meh"}"#)
        .await;
    assert!(resp.json()["error"].as_str().unwrap().contains("\"meh\""));

    // Unknown incidents and drills: 404 in the API's error shape.
    let resp = server.get("/incidents/999").await;
    assert_eq!(resp.status, 404);
    assert_eq!(
        resp.json(),
        json!({"error": "incident 999 not found", "status": 404})
    );
    assert_eq!(server.get("/incidents/abc").await.status, 404);
    assert_eq!(
        server
            .post("/incidents/999/updates", r#"{"body": "x"}"#)
            .await
            .status,
        404
    );
    assert_eq!(
        server
            .patch("/incidents/7", r#"{"title": "x"}"#)
            .await
            .status,
        404
    );
    assert_eq!(server.get("/history/drills/5").await.status, 404);

    // Status of the wrong kind on an existing incident; an update without text.
    let id = server.post("/incidents", r#"{"title": "t"}"#).await.json()["id"]
        .as_i64()
        .unwrap();
    let resp = server
        .patch(&format!("/incidents/{id}"), r#"{"status": "completed"}"#)
        .await;
    assert_eq!(resp.status, 400);
    assert!(resp.body.contains("status"), "{}", resp.body);
    let resp = server
        .patch(
            &format!("/incidents/{id}"),
            r#"{"scheduled": {"start": 1, "end": 2}}"#,
        )
        .await;
    assert_eq!(resp.status, 400);
    assert!(resp.body.contains("scheduled"), "{}", resp.body);
    let resp = server
        .post(&format!("/incidents/{id}/updates"), r#"{}"#)
        .await;
    assert_eq!(resp.status, 400);
    assert!(resp.body.contains("body"), "{}", resp.body);

    // Query parameters.
    let resp = server.get("/history/uptime").await;
    assert_eq!(resp.status, 400);
    assert!(resp.body.contains("component"), "{}", resp.body);
    let resp = server.get("/history/uptime?component=proxy:x&days=0").await;
    assert_eq!(resp.status, 400);
    assert!(resp.body.contains("days"), "{}", resp.body);
    let resp = server.get("/history/events?since=later").await;
    assert_eq!(resp.status, 400);
    assert!(resp.body.contains("since"), "{}", resp.body);
    let resp = server.get("/incidents?status=maybe").await;
    assert_eq!(resp.status, 400);
    assert!(resp.body.contains("status"), "{}", resp.body);
}

/// Issue 14: a drill's incident said "minor" while the page showed its stand-in as a major
/// outage: the impact now follows the proxies' live state, as the page does.
#[tokio::test]
async fn a_drill_incident_on_a_stand_in_is_major_like_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_on(&dir.path().join("h.db"));
    let resp = server
        .post(
            "/proxies",
            r#"{"name": "standin", "protocol": "http", "listen": "127.0.0.1:0"}"#,
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    let slow = json!({"name": "slow", "type": "http_latency", "attributes": {"latency": 300}});
    let resp = server
        .post("/proxies/standin/toxics", &slow.to_string())
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let resp = server
        .request_with(
            Method::POST,
            "/history/drills",
            Some(r#"{"name": "slow stand-in"}"#),
            Some(DRILL),
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    let id = resp.json()["id"].as_i64().unwrap();
    let phase = json!({"phase": "slow", "text": "latency on the stand-in",
                       "faults": [{"proxy": "standin", "toxic": slow}]});
    let resp = server
        .request_with(
            Method::POST,
            &format!("/history/drills/{id}/phases"),
            Some(&phase.to_string()),
            Some(DRILL),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.json()["incident"]["impact"], "major", "{}", resp.body);
}

#[tokio::test]
async fn drill_reports_open_update_and_resolve_an_incident() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_on(&dir.path().join("h.db"));
    let post = |path: String, body: Value| {
        let server = &server;
        async move {
            server
                .request_with(Method::POST, &path, Some(&body.to_string()), Some(DRILL))
                .await
        }
    };
    let resp = post(
        "/history/drills".into(),
        json!({"name": "db outage", "seed": u64::MAX}),
    )
    .await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    let drill = resp.json();
    let id = drill["id"].as_i64().unwrap();
    assert_eq!(drill["seed"], u64::MAX.to_string());
    assert!(drill["incident"].is_null());

    // A phase with nothing faulted (the lock is a no-op) opens no incident.
    let lock =
        json!({"proxy": "db", "toxic": {"name": "drill-lock", "type": "noop", "toxicity": 0}});
    let resp = post(
        format!("/history/drills/{id}/phases"),
        json!({"phase": "baseline", "text": "steady state met", "faults": [lock]}),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert!(resp.json()["incident"].is_null());

    let fault = json!({"proxy": "db", "toxic": {"name": "slow", "type": "latency", "attributes": {"latency": 300}}});
    let resp = post(
        format!("/history/drills/{id}/phases"),
        json!({"phase": "slow-db", "text": "latency 300ms on db", "faults": [fault]}),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let incident = resp.json()["incident"].clone();
    let incident_id = incident["id"].as_i64().unwrap();
    assert_eq!(incident["source"], "drill");
    assert_eq!(incident["drill"], id);
    assert_eq!(incident["status"], "identified");
    assert_eq!(incident["impact"], "minor");
    assert_eq!(incident["components"], json!(["proxy:db"]));
    assert!(
        incident["title"].as_str().unwrap().contains("db outage"),
        "{incident}"
    );

    // Worse faults on another proxy: more components, higher impact.
    let down = json!({"proxy": "cache", "toxic": {"name": "down", "type": "timeout"}});
    let resp = post(
        format!("/history/drills/{id}/phases"),
        json!({"phase": "cache-down", "text": "timeout on cache", "faults": [fault, down]}),
    )
    .await;
    let incident = resp.json()["incident"].clone();
    assert_eq!(incident["impact"], "major");
    assert_eq!(incident["components"], json!(["proxy:db", "proxy:cache"]));

    // Probe samples, rolled up per minute into an endpoint component.
    let now = Timestamp::now().millis();
    let samples: Vec<Value> = (0..10)
        .map(|i| {
            json!({"endpoint": "checkout", "url": "http://127.0.0.1:1/checkout",
                   "at": now + i, "ok": i % 3 != 0, "latency_ms": 10 * i})
        })
        .collect();
    let resp = post("/history/probes".into(), json!({ "samples": samples })).await;
    assert_eq!(resp.status, 202, "{}", resp.body);
    assert_eq!(resp.json()["accepted"], 10);

    let resp = post(
        format!("/history/drills/{id}/phases"),
        json!({"phase": "recovery", "text": "faults removed", "faults": []}),
    )
    .await;
    assert_eq!(resp.json()["incident"]["status"], "monitoring");

    let report = json!({"drill": "db outage", "outcome": "fail", "phases": []});
    let resp = post(
        format!("/history/drills/{id}/end"),
        json!({"outcome": "fail", "reason": "phase \"cache-down\": availability 40% < 99%", "report": report}),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let ended = resp.json();
    assert_eq!(ended["outcome"], "fail");
    assert_eq!(ended["report"], report);
    assert_eq!(ended["incident"], incident_id);

    let incident = server
        .get(&format!("/incidents/{incident_id}"))
        .await
        .json();
    assert_eq!(incident["status"], "resolved");
    let first = &incident["updates"][0];
    assert!(
        first["body"].as_str().unwrap().contains("fail"),
        "{incident}"
    );
    assert_eq!(incident["updates"].as_array().unwrap().len(), 4);

    // Ending twice is a conflict; the list and the record show the run.
    let resp = post(
        format!("/history/drills/{id}/end"),
        json!({"outcome": "pass"}),
    )
    .await;
    assert_eq!(resp.status, 409, "{}", resp.body);
    let drills = server.get("/history/drills").await.json();
    assert_eq!(drills[0]["id"], id);
    assert_eq!(drills[0]["outcome"], "fail");
    assert!(drills[0].get("report").is_none());

    let events = wait_events(&server, &format!("drill={id}"), 6).await;
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "drill_started",
            "drill_phase",
            "drill_phase",
            "drill_phase",
            "drill_phase",
            "drill_ended"
        ]
    );
    assert!(events.iter().all(|e| e["actor"] == "drill"));

    let ok = eventually(LONG, || async {
        let components = server.get("/history/components").await.json();
        components.as_array().is_some_and(|a| {
            a.iter().any(|c| {
                c["id"] == "endpoint:checkout"
                    && c["description"] == "http://127.0.0.1:1/checkout"
                    && c["last_state"] == "partial_outage"
            })
        })
    })
    .await;
    assert!(ok, "{}", server.get("/history/components").await.body);
    // 6 of 10 passed: partial outage for this minute.
    let uptime = server
        .get("/history/uptime?component=endpoint:checkout&days=2")
        .await
        .json();
    assert_eq!(uptime["days"].as_array().unwrap().len(), 2);
    assert_eq!(uptime["days"][1]["worst_state"], "partial_outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_drill_run_is_recorded_with_its_incident() {
    use downtime_model::drill::DrillPlan;
    use downtime_server::drills::runner::{self, RunOptions};
    use tokio_util::sync::CancellationToken;

    let dir = tempfile::tempdir().unwrap();
    let server = server_on(&dir.path().join("h.db"));
    // The probe hits the API's own /version: always up, no extra target needed.
    let text = format!(
        r#"
name = "dependency outage"
baseline = "600ms"
recovery = "600ms"
[[proxy]]
name = "dep"
listen = "127.0.0.1:0"
upstream = "127.0.0.1:9"
[[probe]]
name = "version"
url = "{base}/version"
interval = "100ms"
timeout = "1s"
[[step]]
name = "outage"
duration = "1s"
[[step.fault]]
proxy = "dep"
type = "timeout"
"#,
        base = server.base
    );
    let plan = DrillPlan::parse(&text).unwrap();
    let report = tokio::time::timeout(
        Duration::from_secs(30),
        runner::run(
            &plan,
            &server.base,
            CancellationToken::new(),
            RunOptions {
                quiet: true,
                ..RunOptions::default()
            },
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(report.cleanup.restored, "{:?}", report.cleanup);

    // The runner waited for its reports: the drill is there, ended, with its report.
    let drills = server.get("/history/drills").await.json();
    assert_eq!(drills.as_array().unwrap().len(), 1, "{drills}");
    let drill = &drills[0];
    assert_eq!(drill["name"], "dependency outage");
    assert_eq!(drill["outcome"], "pass");
    let id = drill["id"].as_i64().unwrap();
    let record = server.get(&format!("/history/drills/{id}")).await.json();
    assert_eq!(record["report"]["drill"], "dependency outage");
    assert_eq!(record["report"]["outcome"], "pass");

    let incident_id = drill["incident"].as_i64().unwrap();
    let incident = server
        .get(&format!("/incidents/{incident_id}"))
        .await
        .json();
    assert_eq!(incident["source"], "drill");
    assert_eq!(incident["components"], json!(["proxy:dep"]));
    assert_eq!(incident["impact"], "major");
    assert_eq!(incident["status"], "resolved");
    let timeline: Vec<&str> = incident["updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["status"].as_str().unwrap())
        .collect();
    assert_eq!(timeline, ["resolved", "monitoring", "identified"]);

    // Probe results became an endpoint component.
    let components = server.get("/history/components").await.json();
    let endpoint = components
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "endpoint:version")
        .cloned()
        .unwrap_or_else(|| panic!("no endpoint component in {components}"));
    assert_eq!(endpoint["kind"], "endpoint");
    assert_eq!(endpoint["last_state"], "operational");
    assert_eq!(endpoint["description"], format!("{}/version", server.base));

    // Every change the drill made is recorded, by the drill.
    let events = wait_events(&server, "proxy=dep", 6).await;
    let seen: Vec<(String, String)> = kinds_and_actors(&events);
    let drill = "drill".to_owned();
    assert_eq!(seen[0], ("proxy_created".to_owned(), drill.clone()));
    assert!(seen.contains(&("fault_created".to_owned(), drill.clone())));
    assert!(seen.contains(&("fault_removed".to_owned(), drill.clone())));
    assert_eq!(
        seen.last().unwrap(),
        &("proxy_removed".to_owned(), drill.clone())
    );
    let phases = wait_events(&server, &format!("drill={id}"), 4).await;
    let kinds: Vec<&str> = phases.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["drill_started", "drill_phase", "drill_phase", "drill_ended"]
    );
}

#[tokio::test]
async fn random_minutes_roll_up_to_the_counts_computed_directly() {
    use downtime_server::history::uptime_pct;
    use rand::rngs::SmallRng;
    use rand::{RngExt, SeedableRng};
    use std::collections::BTreeMap;

    let dir = tempfile::tempdir().unwrap();
    let history = History::open(&dir.path().join("p.db"), HistorySettings::default())
        .await
        .unwrap();
    for seed in 0..4u64 {
        let mut rng = SmallRng::seed_from_u64(seed);
        let component = format!("proxy:random-{seed}");
        let first = Day(20_000);
        let days = 5i64;
        // Each minute may be written several times; the stored minute keeps its worst state.
        let mut expected: BTreeMap<i64, ComponentState> = BTreeMap::new();
        let mut writes = Vec::new();
        for day in 0..days {
            let share = rng.random_range(0..=100u32);
            for m in 0..1440 {
                if rng.random_range(0..100u32) >= share {
                    continue;
                }
                let minute = Day(first.0 + day).first_minute() + m;
                for _ in 0..rng.random_range(1..=2u32) {
                    let state = ComponentState::ALL[rng.random_range(0..5usize)];
                    writes.push(ComponentMinute {
                        component: component.clone(),
                        minute,
                        state,
                    });
                    let worst = expected.entry(minute).or_insert(state);
                    *worst = (*worst).max(state);
                }
            }
        }
        // In two halves, so days are rolled up again as minutes arrive.
        let half = writes.len() / 2;
        history.insert_minutes(&writes[..half]).await.unwrap();
        history.insert_minutes(&writes[half..]).await.unwrap();
        let last = Day(first.0 + days - 1);
        let stats = history
            .daily_uptime_until(&component, 5, last)
            .await
            .unwrap();
        assert_eq!(stats.len(), 5);
        for (i, stat) in stats.iter().enumerate() {
            let day = Day(first.0 + i as i64);
            assert_eq!(stat.day, day);
            let range = day.first_minute()..day.first_minute() + 1440;
            let states: Vec<ComponentState> = expected.range(range).map(|(_, s)| *s).collect();
            let count = |s: ComponentState| states.iter().filter(|x| **x == s).count() as u32;
            assert_eq!(stat.minutes, states.len() as u32, "seed {seed} day {i}");
            assert_eq!(stat.length_minutes, 1440);
            assert_eq!(stat.no_data_minutes, 1440 - stat.minutes);
            assert_eq!(stat.major_minutes, count(ComponentState::MajorOutage));
            assert_eq!(stat.partial_minutes, count(ComponentState::PartialOutage));
            assert_eq!(
                stat.degraded_minutes,
                count(ComponentState::DegradedPerformance)
            );
            assert_eq!(
                stat.maintenance_minutes,
                count(ComponentState::UnderMaintenance)
            );
            assert_eq!(stat.worst_state, states.iter().copied().max());
            assert_eq!(
                stat.uptime_pct,
                uptime_pct(
                    1440,
                    u64::from(stat.minutes),
                    u64::from(stat.partial_minutes),
                    u64::from(stat.major_minutes)
                )
            );
        }
    }
    history.shutdown().await;
}

/// Issue 14: a day with one observed minute is not "50.00 %" or "100 %": the minute is
/// 1/1,440 of the day, the rest is no data.
#[tokio::test]
async fn uptime_counts_the_whole_day_and_unobserved_time_as_no_data() {
    let history = History::memory(HistorySettings::default()).await.unwrap();
    let yesterday = Day::today().minus(1);
    let c = "proxy:once";
    let one = vec![ComponentMinute {
        component: c.to_owned(),
        minute: yesterday.first_minute() + 600,
        state: ComponentState::Operational,
    }];
    history.insert_minutes(&one).await.unwrap();
    let days = history.daily_uptime(c, 2).await.unwrap();
    let day = &days[0];
    assert_eq!(day.day, yesterday);
    assert_eq!(
        (day.minutes, day.length_minutes, day.no_data_minutes),
        (1, 1440, 1439)
    );
    let pct = day.uptime_pct.unwrap();
    assert!((pct - 100.0 / 1440.0).abs() < 1e-9, "{pct}");
    assert_eq!(downtime_server::history::format_percent(pct), "0.07 %");
    history.shutdown().await;
}
