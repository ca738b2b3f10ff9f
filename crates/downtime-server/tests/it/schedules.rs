//! Scheduled drills (issue 4, item 4): cron and window evaluation as pure functions at fixed
//! times (time zones included, no sleeping), config validation naming the schedule and field,
//! and an every-second schedule firing a short drill in-process, listed at `/drills/runs`.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc, Weekday};
use downtime_server::drills::schedule::{self, Schedule, Window};
use downtime_server::{ServeError, ServeOptions};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const DRILL: &str = r#"
name = "short"
baseline = "300ms"
recovery = "300ms"
[[probe]]
url = "http://127.0.0.1:9/"
interval = "100ms"
timeout = "300ms"
[[step]]
name = "slow"
duration = "300ms"
[[step.fault]]
proxy = "dep"
type = "latency"
attributes = { latency = 1 }
"#;

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

/// Writes `drill.toml` next to a config and parses the config's schedules.
fn schedules(config: &str, drill: &str) -> Result<Vec<Schedule>, String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("drills")).unwrap();
    std::fs::write(dir.path().join("drills/drill.toml"), drill).unwrap();
    schedule::parse(config, dir.path())
}

fn one(config: &str) -> Schedule {
    schedules(config, DRILL).unwrap().remove(0)
}

#[test]
fn weekday_cron_in_paris_follows_the_local_clock() {
    let s = one(r#"
[[schedule]]
name = "office"
drill = "drills/drill.toml"
cron = "0 10 * * mon-fri"
time_zone = "Europe/Paris"
windows = [{ days = ["mon", "tue", "wed", "thu", "fri"], from = "10:00", to = "16:00" }]
"#);
    assert_eq!(s.name, "office");
    assert_eq!(s.plan.name, "short");
    // Friday 2 January 2026, 09:30 in Paris (UTC+1): fires at 10:00 local, 09:00 UTC.
    assert_eq!(
        s.next_after(utc("2026-01-02T08:30:00Z")),
        Some(utc("2026-01-02T09:00:00Z"))
    );
    // After Friday's run, the next is Monday 5 January (the weekend is skipped).
    assert_eq!(
        s.next_after(utc("2026-01-02T09:00:00Z")),
        Some(utc("2026-01-05T09:00:00Z"))
    );
    // Summer time (UTC+2): Wednesday 1 July 2026 fires at 08:00 UTC.
    assert_eq!(
        s.next_after(utc("2026-07-01T00:00:00Z")),
        Some(utc("2026-07-01T08:00:00Z"))
    );
    // Windows are local: from inclusive, to exclusive, weekdays only.
    assert!(s.allowed_at(utc("2026-01-05T09:00:00Z"))); // Mon 10:00 Paris
    assert!(!s.allowed_at(utc("2026-01-05T08:59:59Z"))); // Mon 09:59
    assert!(s.allowed_at(utc("2026-01-05T14:59:59Z"))); // Mon 15:59
    assert!(!s.allowed_at(utc("2026-01-05T15:00:00Z"))); // Mon 16:00
    assert!(!s.allowed_at(utc("2026-01-03T12:00:00Z"))); // Saturday
    assert!(s.allowed_at(utc("2026-07-01T13:30:00Z"))); // Wed 15:30 CEST
    assert!(!s.allowed_at(utc("2026-07-01T14:30:00Z"))); // Wed 16:30 CEST
}

#[test]
fn every_second_cron_waits_for_its_window() {
    let s = one(r#"
[[schedule]]
drill = "drills/drill.toml"
cron = "* * * * * *"
time_zone = "America/New_York"
windows = [{ days = ["sat"], from = "09:00", to = "09:05" }]
"#);
    // Named after the drill file when `name` is missing.
    assert_eq!(s.name, "drill");
    assert_eq!(
        s.next_after(utc("2026-01-03T14:00:00Z")),
        Some(utc("2026-01-03T14:00:01Z"))
    );
    // Saturday 3 January 2026, 08:59:58 in New York (UTC-5): the first allowed firing is
    // 09:00:00 local.
    assert_eq!(
        s.next_allowed_after(utc("2026-01-03T13:59:58Z"), 100),
        Some(utc("2026-01-03T14:00:00Z"))
    );
    // Inside the window, the very next second.
    assert_eq!(
        s.next_allowed_after(utc("2026-01-03T14:02:00Z"), 100),
        Some(utc("2026-01-03T14:02:01Z"))
    );
    // Too far ahead to find within the limit.
    assert_eq!(s.next_allowed_after(utc("2026-01-03T15:00:00Z"), 100), None);
    // Without windows and time zone, any time is allowed, in UTC.
    let any = one("[[schedule]]\ndrill = \"drills/drill.toml\"\ncron = \"30 2 * * *\"\n");
    assert!(any.allowed_at(utc("2026-01-03T03:00:00Z")));
    assert_eq!(
        any.next_after(utc("2026-01-03T03:00:00Z")),
        Some(utc("2026-01-04T02:30:00Z"))
    );
}

#[test]
fn a_window_can_run_over_midnight() {
    let w = Window {
        days: vec![Weekday::Fri],
        from: chrono::NaiveTime::from_hms_opt(22, 0, 0).unwrap(),
        to: chrono::NaiveTime::from_hms_opt(2, 0, 0).unwrap(),
    };
    let at = |d: u32, h: u32| {
        NaiveDate::from_ymd_opt(2026, 1, d)
            .unwrap()
            .and_hms_opt(h, 30, 0)
            .unwrap()
    };
    assert!(w.contains(at(2, 23))); // Friday 23:30
    assert!(w.contains(at(3, 1))); // Saturday 01:30
    assert!(!w.contains(at(3, 2))); // Saturday 02:30
    assert!(!w.contains(at(3, 23))); // Saturday 23:30
    assert!(!w.contains(at(1, 23))); // Thursday 23:30
    assert!(!w.contains(at(2, 21))); // Friday 21:30
}

#[test]
fn bad_schedules_are_refused_naming_the_schedule_and_field() {
    let base = "[[schedule]]\nname = \"nightly\"\ndrill = \"drills/drill.toml\"\n";
    let cases = [
        ("cron = \"every day\"\n", "cron"),
        ("cron = \"61 * * * *\"\n", "cron"),
        (
            "cron = \"0 * * * *\"\ntime_zone = \"Mars/Olympus\"\n",
            "time_zone",
        ),
        (
            "cron = \"0 * * * *\"\nwindows = [{ days = [\"funday\"], from = \"10:00\", to = \"11:00\" }]\n",
            "windows[0].days",
        ),
        (
            "cron = \"0 * * * *\"\nwindows = [{ from = \"25:00\", to = \"11:00\" }]\n",
            "windows[0].from",
        ),
        (
            "cron = \"0 * * * *\"\nwindows = [{ from = \"10:00\", to = \"10:00\" }]\n",
            "windows[0].to",
        ),
        ("cron = \"0 * * * *\"\ncorn = 1\n", "corn"),
    ];
    for (rest, field) in cases {
        let err = schedules(&format!("{base}{rest}"), DRILL)
            .err()
            .unwrap_or_else(|| panic!("accepted: {rest}"));
        assert!(
            err.starts_with("schedule 1 (\"nightly\"): ") && err.contains(field),
            "{rest} -> {err}"
        );
    }
    // A missing drill file and an invalid drill are refused at load, naming `drill`.
    let err = schedules(
        "[[schedule]]\nname = \"x\"\ndrill = \"nope.toml\"\ncron = \"0 * * * *\"\n",
        DRILL,
    )
    .unwrap_err();
    assert!(
        err.contains("schedule 1 (\"x\"): drill: cannot read"),
        "{err}"
    );
    let err = schedules(
        "[[schedule]]\nname = \"x\"\ndrill = \"drills/drill.toml\"\ncron = \"0 * * * *\"\n",
        "name = \"bad\"\nbaseline = \"-1s\"\n",
    )
    .unwrap_err();
    assert!(
        err.contains("schedule 1 (\"x\"): drill: invalid drill file"),
        "{err}"
    );
    // A name used twice.
    let twice = "[[schedule]]\nname = \"a\"\ndrill = \"drills/drill.toml\"\ncron = \"0 * * * *\"\n";
    let err = schedules(&format!("{twice}{twice}"), DRILL).unwrap_err();
    assert!(err.starts_with("schedule 2 (\"a\"): name"), "{err}");
}

#[test]
fn the_serve_config_loads_proxies_and_schedules_from_one_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("drill.toml"), DRILL).unwrap();
    let path = dir.path().join("serve.toml");
    std::fs::write(
        &path,
        "[[proxy]]\nname = \"dep\"\nlisten = \"127.0.0.1:0\"\nupstream = \"127.0.0.1:9\"\n\n[[schedule]]\ndrill = \"drill.toml\"\ncron = \"*/5 * * * *\"\n",
    )
    .unwrap();
    assert_eq!(downtime_server::config::load(&path).unwrap().len(), 1);
    let loaded = schedule::load(&path).unwrap();
    assert_eq!(loaded[0].drill, dir.path().join("drill.toml"));
    std::fs::write(
        &path,
        "[[schedule]]\ndrill = \"drill.toml\"\ncron = \"* *\"\n",
    )
    .unwrap();
    let err = schedule::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("serve.toml") && err.contains("schedule 1") && err.contains("cron"),
        "{err}"
    );
}

// --- in-process ----------------------------------------------------------------------

/// An HTTP target answering `200 ok` to everything.
async fn healthy_target() -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n",
                    )
                    .await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (format!("http://{addr}/"), task)
}

struct Running {
    base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServeError>>,
}

async fn serve(dir: &Path, config: &str) -> Running {
    let path = dir.join("serve.toml");
    std::fs::write(&path, config).unwrap();
    let proxies = downtime_server::config::load(&path).unwrap();
    let schedules = schedule::load(&path).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = ServeOptions {
        proxies,
        schedules,
        grace: Duration::from_secs(2),
        ..ServeOptions::default()
    };
    let task = tokio::spawn(downtime_server::run(listener, options, async move {
        let _ = stopped.await;
    }));
    Running { base, stop, task }
}

async fn get(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

fn drill_text(name: &str, target: &str, step: &str) -> String {
    DRILL
        .replace("name = \"short\"", &format!("name = \"{name}\""))
        .replace("http://127.0.0.1:9/", target)
        .replace("duration = \"300ms\"", &format!("duration = \"{step}\""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_second_schedule_runs_its_drill_and_lists_the_run() {
    let (target, _target_task) = healthy_target().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.toml"), drill_text("a", &target, "300ms")).unwrap();
    std::fs::write(dir.path().join("b.toml"), drill_text("b", &target, "300ms")).unwrap();
    // Two every-second schedules on drills touching the same proxy: while one runs, the
    // other is refused by the drill lock and its firing is kept as skipped.
    let config = "[[proxy]]\nname = \"dep\"\nlisten = \"127.0.0.1:0\"\nupstream = \"127.0.0.1:9\"\n\n\
        [[schedule]]\nname = \"sa\"\ndrill = \"a.toml\"\ncron = \"* * * * * *\"\n\n\
        [[schedule]]\nname = \"sb\"\ndrill = \"b.toml\"\ncron = \"* * * * * *\"\n";
    let server = serve(dir.path(), config).await;

    let deadline = Instant::now() + Duration::from_secs(30);
    let runs = loop {
        let runs = get(&format!("{}/drills/runs", server.base)).await;
        let list = runs.as_array().unwrap().clone();
        let passed = list.iter().any(|r| r["status"] == "pass");
        let skipped = list.iter().any(|r| r["status"] == "skipped");
        if passed && skipped {
            break list;
        }
        assert!(
            Instant::now() < deadline,
            "no pass and skip in time: {runs}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let pass = runs.iter().find(|r| r["status"] == "pass").unwrap();
    assert!(
        pass["schedule"] == "sa" || pass["schedule"] == "sb",
        "{pass}"
    );
    assert!(pass.get("report").is_none(), "the list leaves reports out");
    let skip = runs.iter().find(|r| r["status"] == "skipped").unwrap();
    assert!(
        skip["reason"]
            .as_str()
            .unwrap()
            .contains("in use by another drill"),
        "{skip}"
    );
    let id = pass["id"].as_u64().unwrap();
    let shown = get(&format!("{}/drills/runs/{id}", server.base)).await;
    assert_eq!(shown["report"]["outcome"], "pass", "{shown}");
    let missing = reqwest::get(format!("{}/drills/runs/999999", server.base))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    // The runner also reported it to the history store.
    let history = get(&format!("{}/history/drills", server.base)).await;
    assert!(history.to_string().contains("\"a\"") || history.to_string().contains("\"b\""));
    // Its changes are recorded as made by the schedule, not by a person running a drill.
    let events = get(&format!("{}/history/events", server.base)).await;
    let actors: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["actor"].as_str())
        .collect();
    assert!(actors.contains(&"schedule"), "{events}");
    assert!(!actors.contains(&"drill"), "{events}");

    let _ = server.stop.send(());
    tokio::time::timeout(Duration::from_secs(20), server.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopping_the_server_cancels_a_running_scheduled_drill() {
    let (target, _target_task) = healthy_target().await;
    let dir = tempfile::tempdir().unwrap();
    // A drill that would fault the proxy for a minute.
    std::fs::write(
        dir.path().join("long.toml"),
        drill_text("long", &target, "60s"),
    )
    .unwrap();
    let config = "[[proxy]]\nname = \"dep\"\nlisten = \"127.0.0.1:0\"\nupstream = \"127.0.0.1:9\"\n\n\
        [[schedule]]\nname = \"long\"\ndrill = \"long.toml\"\ncron = \"* * * * * *\"\n";
    let server = serve(dir.path(), config).await;
    // Wait until the fault is live.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let toxics = get(&format!("{}/proxies/dep/toxics", server.base)).await;
        let names: Vec<&str> = toxics
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["name"].as_str())
            .collect();
        if names.iter().any(|n| *n != "drill-lock") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the scheduled drill never faulted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let runs = get(&format!("{}/drills/runs", server.base)).await;
    assert_eq!(runs[0]["status"], "running", "{runs}");
    let stopping = Instant::now();
    let _ = server.stop.send(());
    tokio::time::timeout(Duration::from_secs(20), server.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "the drill was not cancelled: {:?}",
        stopping.elapsed()
    );
}
