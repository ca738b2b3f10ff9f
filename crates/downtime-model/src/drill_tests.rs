use super::*;
use proptest::prelude::Strategy as _;

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

/// A drill with one probe and one step, and `extra` appended at the top level.
fn minimal(top: &str, step: &str, probe: &str) -> String {
    format!(
        r#"{top}
[[probe]]
url = "http://127.0.0.1:1/"
{probe}

[[step]]
{step}
[[step.fault]]
proxy = "p"
type = "latency"
"#
    )
}

/// Issue 10: `baseline = 9223372036854775807` used to parse, then the runner's
/// `start + baseline` panicked (a scheduled drill would have left its proxy locked).
#[test]
fn issue_10_a_huge_baseline_is_refused_naming_the_field_and_the_maximum() {
    let text = minimal("baseline = 9223372036854775807", "duration = \"1s\"", "");
    let problems = DrillPlan::parse(&text).unwrap_err();
    let all: Vec<String> = problems.iter().map(ToString::to_string).collect();
    let all = all.join("\n");
    assert!(
        all.contains("line 1: baseline: must be at most 24h (86400 seconds)"),
        "{all}"
    );
    assert_eq!(problems.len(), 1, "{all}");
    // At the maximum it is fine, and the plan's arithmetic holds.
    let ok = minimal("baseline = 86400", "duration = \"24h\"", "");
    let plan = DrillPlan::parse(&ok).unwrap();
    assert_eq!(plan.total(), Duration::from_secs(2 * 86_400 + 5));
}

#[test]
fn every_duration_and_count_has_a_maximum() {
    for (top, step, probe, field) in [
        ("recovery = \"25h\"", "duration = \"1s\"", "", "recovery"),
        ("", "duration = \"1s\"\nat = 86401", "", "step[0].at"),
        ("", "duration = \"1e9s\"", "", "step[0].duration"),
        (
            "",
            "duration = \"1s\"",
            "interval = \"2h\"",
            "probe[0].interval",
        ),
        (
            "",
            "duration = \"1s\"",
            "timeout = 99999999",
            "probe[0].timeout",
        ),
        (
            "",
            "duration = \"1s\"",
            "expect = { latency = \"61m\" }",
            "probe[0].expect.latency",
        ),
        (
            "[verdict]\nfaults = { p95 = \"2h\" }",
            "duration = \"1s\"",
            "",
            "verdict.faults.p95",
        ),
        (
            "[stop]\nwindow = \"8d\"\navailability_below = 1",
            "duration = \"1s\"",
            "",
            "stop.window",
        ),
    ] {
        // Top-level tables must come last in TOML: put them after the steps.
        let text = if top.starts_with('[') {
            format!("{}\n{top}\n", minimal("", step, probe))
        } else {
            minimal(top, step, probe)
        };
        let problems = DrillPlan::parse(&text).unwrap_err();
        let all: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(
            problems.iter().any(|p| p.key == field),
            "{field}: {}",
            all.join("\n")
        );
    }
    let text = minimal(
        "",
        "duration = \"1s\"\n[[step.fault]]\nproxy = \"p\"\ntype = \"status\"\nfirst_n = 1000000000001",
        "",
    );
    let problems = DrillPlan::parse(&text).unwrap_err();
    assert!(
        problems
            .iter()
            .any(|p| p.key == "step[0].fault[0].first_n" && p.message.contains("at most")),
        "{problems:?}"
    );
    let many: String = (0..=limits::MAX_PROBES)
        .map(|i| format!("[[probe]]\nurl = \"http://127.0.0.1:{}/\"\n", i + 1))
        .collect();
    let problems = DrillPlan::parse(&many).unwrap_err();
    assert!(
        problems
            .iter()
            .any(|p| p.key == "probe" && p.message.contains("at most 100")),
        "{problems:?}"
    );
}

proptest::proptest! {
    /// Any integer or string duration either is refused naming its field, or yields a plan
    /// whose deadlines (`start + baseline + fault window + recovery`, probe ticks) cannot
    /// overflow even a century into a clock.
    #[test]
    fn any_duration_validates_to_safe_deadlines_or_is_refused_by_name(
        value in proptest::prop_oneof![
            proptest::prelude::any::<i64>().prop_map(|n| n.to_string()),
            (0u64..200_000).prop_map(|n| n.to_string()),
            (0u64..200_000, 0usize..4).prop_map(|(n, u)| format!("\"{n}{}\"", ["ms", "s", "m", "h"][u])),
            proptest::prelude::any::<f64>().prop_map(|f| format!("\"{f}s\"")),
        ],
        which in 0usize..6,
    ) {
        let (top, step, probe, field) = match which {
            0 => (format!("baseline = {value}"), "duration = \"1s\"".to_owned(), String::new(), "baseline"),
            1 => (format!("recovery = {value}"), "duration = \"1s\"".to_owned(), String::new(), "recovery"),
            2 => (String::new(), format!("duration = \"1s\"\nat = {value}"), String::new(), "step[0].at"),
            3 => (String::new(), format!("duration = {value}"), String::new(), "step[0].duration"),
            4 => (String::new(), "duration = \"1s\"".to_owned(), format!("interval = {value}"), "probe[0].interval"),
            _ => (String::new(), "duration = \"1s\"".to_owned(), format!("timeout = {value}"), "probe[0].timeout"),
        };
        let text = minimal(&top, &step, &probe);
        match DrillPlan::parse(&text) {
            Err(problems) => {
                proptest::prop_assert!(
                    problems.iter().any(|p| p.key == field),
                    "{:?}", problems
                );
            }
            Ok(plan) => {
                let century = Duration::from_secs(100 * 365 * 86_400);
                let total = plan
                    .baseline
                    .checked_add(plan.fault_window())
                    .and_then(|d| d.checked_add(plan.recovery));
                proptest::prop_assert!(total.is_some());
                let total = total.unwrap();
                proptest::prop_assert!(total <= limits::MAX_PHASE * 4);
                proptest::prop_assert!(century.checked_add(total).is_some());
                for p in &plan.probes {
                    proptest::prop_assert!(p.interval <= limits::MAX_PROBE);
                    proptest::prop_assert!(p.timeout <= limits::MAX_PROBE);
                    proptest::prop_assert!(century.checked_add(total + p.timeout).is_some());
                }
            }
        }
    }
}

/// Issue 14: `drill check` passed an HTTP fault on a TCP proxy declared in the same file,
/// which then failed mid-drill.
#[test]
fn issue_14_an_http_fault_on_a_tcp_proxy_of_the_file_is_refused() {
    let text = r#"
[[proxy]]
name = "dep"
listen = "127.0.0.1:0"
upstream = "127.0.0.1:1"
[[probe]]
url = "http://127.0.0.1:1/"
[[step]]
name = "down"
duration = "1s"
[[step.fault]]
proxy = "dep"
type = "maintenance"
"#;
    let problems = DrillPlan::parse(text).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].key, "step \"down\"");
    assert!(
        problems[0].message.contains(
            "\"maintenance\" is an HTTP fault but proxy \"dep\" of this file is a TCP proxy"
        ),
        "{problems:?}"
    );
    assert!(
        DrillPlan::parse(
            &text.replace("name = \"dep\"\n", "name = \"dep\"\nprotocol = \"http\"\n")
        )
        .is_ok()
    );
}
