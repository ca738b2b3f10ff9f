use super::*;

const GOOD: &str = r#"
name = "checkout survives payments maintenance"
server = "embedded"
seed = 7
baseline = "2s"
recovery = "3s"

[[proxy]]
name = "payments"
protocol = "http"
listen = "127.0.0.1:0"

[[probe]]
name = "account"
url = "http://127.0.0.1:8080/account"
interval = "100ms"
timeout = "500ms"
headers = { accept = "application/json" }
[probe.expect]
status = [200, "201-204"]
json = { "/ok" = true }
latency = "300ms"

[[step]]
name = "maintenance"
at = "0s"
duration = "4s"
[[step.fault]]
proxy = "payments"
type = "maintenance"

[[step]]
name = "errors"
at = "4s"
duration = "4s"
ramp = { from = 0.1, to = 1.0, steps = 4 }
[[step.fault]]
proxy = "payments"
type = "status"
attributes = { status = 500 }
match = { path = "/charges/*" }

[steady_state]
availability = 100

[verdict]
baseline = { availability = 99, p95 = "200ms" }
faults = { availability = 95 }
recovery = { availability = 99 }
[verdict.step.errors]
availability = 80

[stop]
window = "5s"
availability_below = 50
"#;

#[test]
fn a_complete_drill_parses() {
    let plan = DrillPlan::parse(GOOD).unwrap();
    assert_eq!(plan.seed, 7);
    assert_eq!(plan.server, ServerTarget::Embedded);
    assert_eq!(plan.probes[0].expect.status, vec![(200, 200), (201, 204)]);
    assert_eq!(plan.steps.len(), 2);
    assert_eq!(plan.fault_window(), Duration::from_secs(8));
    assert_eq!(plan.total(), Duration::from_secs(13));
    assert_eq!(plan.step_thresholds("errors").availability, Some(80.0));
    assert_eq!(plan.step_thresholds("maintenance").availability, Some(95.0));
    assert_eq!(
        fault_name(&plan.steps[0], &plan.steps[0].faults[0]),
        "drill-maintenance-maintenance"
    );
}

#[test]
fn every_problem_is_listed_with_line_and_key() {
    let bad = r#"
name = "x"
colour = "blue"
baseline = "-2s"

[[probe]]
url = "ftp://nope"
interval = 5.5

[[step]]
name = "a"
duration = "10s"
[[step.fault]]
proxy = "p"
type = "latency"
attributes = { latency = -3 }

[[step]]
name = "b"
at = "5s"
duration = "10s"
[[step.fault]]
proxy = "p"
type = "latency"
name = "drill-a-latency"

[verdict]
baseline = { availability = 120 }
"#;
    let problems = DrillPlan::parse(bad).unwrap_err();
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    let all = text.join("\n");
    assert!(all.contains("line 3: colour: unknown key"), "{all}");
    assert!(all.contains("line 4: baseline:"), "{all}");
    assert!(all.contains("line 7: probe[0].url:"), "{all}");
    assert!(all.contains("line 8: probe[0].interval:"), "{all}");
    assert!(all.contains("attributes.latency"), "{all}");
    assert!(all.contains("overlaps step \"a\""), "{all}");
    assert!(all.contains("verdict.baseline.availability"), "{all}");
    assert!(problems.len() >= 7, "{all}");
}

#[test]
fn syntax_errors_have_a_line() {
    let problems = DrillPlan::parse("name = \"x\"\n[[probe]\n").unwrap_err();
    assert_eq!(problems[0].line, 2, "{:?}", problems);
}

#[test]
fn durations() {
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
    assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
    assert!(parse_duration("-1s").is_err());
    assert!(parse_duration("1y").is_err());
    assert!(parse_duration("1e300s").is_err());
}

#[test]
fn ramp_levels() {
    let r = Ramp {
        from: 0.0,
        to: 1.0,
        steps: 5,
    };
    let w = Duration::from_secs(10);
    assert_eq!(r.level(0, w), (0.0, Duration::ZERO));
    assert_eq!(r.level(2, w), (0.5, Duration::from_secs(4)));
    assert_eq!(r.level(4, w), (1.0, Duration::from_secs(8)));
}

proptest::proptest! {
    #[test]
    fn parse_duration_never_panics(s in ".{0,20}") {
        let _ = parse_duration(&s);
    }

    #[test]
    fn ramp_never_panics(from in 0f32..=1.0, to in 0f32..=1.0, steps in 0u32.., i in 0u32.., secs in 0u64..u64::MAX) {
        let r = Ramp { from, to, steps };
        let (p, _) = r.level(i, Duration::from_secs(secs));
        proptest::prop_assert!((0.0..=1.0).contains(&p));
    }
}

#[test]
fn ramps_and_proxies_are_checked_too() {
    let bad = r#"
[[proxy]]
name = "p"
upstream = "127.0.0.1:1"
colour = "red"

[[probe]]
url = "http://127.0.0.1:1/"

[[step]]
duration = "1s"
ramp = { from = 0.1 }
[[step.fault]]
proxy = "p"
type = "nope"
"#;
    let problems = DrillPlan::parse(bad).unwrap_err();
    let all: Vec<String> = problems.iter().map(ToString::to_string).collect();
    let all = all.join("\n");
    assert!(all.contains("proxy[0].colour: unknown key"), "{all}");
    assert!(all.contains("ramp.to: missing"), "{all}");
    assert!(all.contains("ramp.steps: missing"), "{all}");
    assert!(all.contains("unknown fault type \"nope\""), "{all}");
    assert!(
        !all.contains("invalid toxic type"),
        "one problem per mistake: {all}"
    );
}
