//! `DrillPlan::parse`: a drill file's sections ([[probe]], [[step]] and their faults,
//! thresholds, the stop condition) read through the [`Walker`], then checked as a whole
//! (overlapping steps, faults that suit their proxy's protocol).

use std::time::Duration;

use toml::de::{DeTable, DeValue};

use super::walker::{Table, Val, Walker, get, join, to_json};
use super::*;

fn thresholds(w: &mut Walker<'_>, table: &Table<'_>, path: &str) -> Thresholds {
    w.known_keys(table, path, &["availability", "p95", "p99"]);
    Thresholds {
        availability: w.percent(table, path, "availability"),
        p95: w.duration(table, path, "p95", limits::MAX_PROBE),
        p99: w.duration(table, path, "p99", limits::MAX_PROBE),
    }
}

fn status_ranges(w: &mut Walker<'_>, table: &Table<'_>, path: &str) -> Vec<(u16, u16)> {
    let Some(v) = get(table, "status") else {
        return vec![(200, 299)];
    };
    let key = join(path, "status");
    let items: Vec<&Val<'_>> = match v.get_ref() {
        DeValue::Array(a) => a.iter().collect(),
        _ => vec![v],
    };
    let mut out = Vec::new();
    for item in items {
        let parsed = match item.get_ref() {
            DeValue::Integer(i) => i.as_str().parse::<u16>().ok().map(|s| (s, s)),
            DeValue::String(s) => {
                let s = s.trim();
                match s.split_once("..").or_else(|| s.split_once('-')) {
                    Some((a, b)) => match (
                        a.trim().parse::<u16>(),
                        b.trim().trim_start_matches('=').parse::<u16>(),
                    ) {
                        (Ok(a), Ok(b)) if a <= b => Some((a, b)),
                        _ => None,
                    },
                    None => s.parse::<u16>().ok().map(|x| (x, x)),
                }
            }
            _ => None,
        };
        match parsed {
            Some((a, b)) if (100..=599).contains(&a) && (100..=599).contains(&b) => {
                out.push((a, b))
            }
            _ => w.problem(
                item.span().start,
                key.clone(),
                format!(
                    "expected a status (100..599) or range like \"200-299\", got {}",
                    to_json(item.get_ref())
                ),
            ),
        }
    }
    out
}

fn probe(w: &mut Walker<'_>, table: &Table<'_>, path: &str, at: usize) -> Option<Probe> {
    w.known_keys(
        table,
        path,
        &[
            "name", "method", "url", "headers", "body", "interval", "timeout", "expect",
        ],
    );
    let name = w.str(table, path, "name");
    let url = w.str(table, path, "url");
    if url.is_none() && get(table, "url").is_none() {
        w.problem(at, join(path, "url"), "missing (every probe needs a url)");
    }
    if let Some(u) = &url
        && !(u.starts_with("http://") || u.starts_with("https://"))
    {
        let off = get(table, "url").map_or(at, |v| v.span().start);
        w.problem(
            off,
            join(path, "url"),
            format!("expected an http:// or https:// URL, got {u:?}"),
        );
    }
    let method = w
        .str(table, path, "method")
        .unwrap_or_else(|| "GET".to_owned());
    let headers = w.string_map(table, path, "headers");
    let body = w.str(table, path, "body");
    let interval = w
        .duration(table, path, "interval", limits::MAX_PROBE)
        .unwrap_or(Duration::from_millis(500));
    if interval.is_zero() {
        let off = get(table, "interval").map_or(at, |v| v.span().start);
        w.problem(off, join(path, "interval"), "must be greater than 0");
    }
    let timeout = w
        .duration(table, path, "timeout", limits::MAX_PROBE)
        .unwrap_or(Duration::from_secs(2));
    let mut expect = Expect {
        status: vec![(200, 299)],
        ..Expect::default()
    };
    if let Some(e) = w.table(table, path, "expect") {
        let p = join(path, "expect");
        w.known_keys(e, &p, &["status", "body_contains", "json", "latency"]);
        expect.status = status_ranges(w, e, &p);
        expect.body_contains = w.str(e, &p, "body_contains");
        expect.latency = w.duration(e, &p, "latency", limits::MAX_PROBE);
        if let Some(j) = w.table(e, &p, "json") {
            for (k, v) in j.iter() {
                let pointer = k.get_ref().to_string();
                if !(pointer.is_empty() || pointer.starts_with('/')) {
                    w.problem(
                        k.span().start,
                        join(&join(&p, "json"), &pointer),
                        "a JSON pointer starts with /",
                    );
                }
                expect.json.insert(pointer, to_json(v.get_ref()));
            }
        }
    }
    Some(Probe {
        name: name.unwrap_or_else(|| url.clone().unwrap_or_default()),
        method,
        url: url?,
        headers,
        body,
        interval,
        timeout,
        expect,
    })
}

fn fault(w: &mut Walker<'_>, table: &Table<'_>, path: &str, at: usize) -> Option<FaultSpec> {
    w.known_keys(
        table,
        path,
        &[
            "proxy",
            "type",
            "name",
            "stream",
            "toxicity",
            "attributes",
            "match",
            "first_n",
            "every_nth",
        ],
    );
    let proxy = w.str(table, path, "proxy");
    if get(table, "proxy").is_none() {
        w.problem(
            at,
            join(path, "proxy"),
            "missing (which proxy to inject into)",
        );
    }
    let kind = w.str(table, path, "type");
    match &kind {
        None if get(table, "type").is_none() => w.problem(at, join(path, "type"), "missing"),
        Some(t) if !ToxicKind::is_known_type(t) => {
            let off = get(table, "type").map_or(at, |v| v.span().start);
            w.problem(off, join(path, "type"), format!("unknown fault type {t:?}"));
        }
        _ => {}
    }
    let toxicity = w.number(table, path, "toxicity");
    if let Some(t) = toxicity
        && !(0.0..=1.0).contains(&t)
    {
        let off = get(table, "toxicity").map_or(at, |v| v.span().start);
        w.problem(
            off,
            join(path, "toxicity"),
            format!("must be a probability within 0..1, got {t}"),
        );
    }
    let request = ToxicRequest {
        name: w.str(table, path, "name"),
        kind: kind.clone(),
        stream: w.str(table, path, "stream"),
        toxicity: toxicity.map(|t| t as f32),
        attributes: get(table, "attributes").map(|v| to_json(v.get_ref())),
        matcher: None,
        first_n: w.count(table, path, "first_n"),
        every_nth: w.count(table, path, "every_nth"),
        ttl: None,
    };
    let mut request = request;
    if let Some(m) = get(table, "match") {
        match serde_json::from_value(to_json(m.get_ref())) {
            Ok(parsed) => request.matcher = Some(parsed),
            Err(e) => w.problem(m.span().start, join(path, "match"), e.to_string()),
        }
    }
    let known_type = kind.as_deref().is_some_and(ToxicKind::is_known_type);
    if known_type {
        // Let the model check attributes and bounds exactly as the API will.
        if let Err(e) = request.clone().into_toxic(|_| false) {
            let off = get(table, "attributes").map_or(at, |v| v.span().start);
            w.problem(off, path.to_owned(), e.to_string());
        }
    }
    Some(FaultSpec {
        proxy: proxy?,
        request,
    })
}

impl DrillPlan {
    /// Parses and checks a drill file; on failure returns every problem found.
    pub fn parse(text: &str) -> Result<Self, Vec<Problem>> {
        let mut w = Walker {
            text,
            problems: Vec::new(),
        };
        let doc = match DeTable::parse(text) {
            Ok(doc) => doc,
            Err(e) => {
                let line = e.span().map_or(1, |s| w.line(s.start));
                return Err(vec![Problem {
                    line,
                    key: "(syntax)".to_owned(),
                    message: e.message().to_owned(),
                }]);
            }
        };
        let root = doc.get_ref();
        w.known_keys(
            root,
            "",
            &[
                "name",
                "server",
                "seed",
                "baseline",
                "recovery",
                "proxy",
                "probe",
                "step",
                "steady_state",
                "verdict",
                "stop",
            ],
        );
        let name = w
            .str(root, "", "name")
            .unwrap_or_else(|| "drill".to_owned());
        let server = match w.str(root, "", "server").as_deref() {
            None | Some("embedded") => ServerTarget::Embedded,
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                ServerTarget::Url(url.trim_end_matches('/').to_owned())
            }
            Some(other) => {
                let off = get(root, "server").map_or(0, |v| v.span().start);
                w.problem(
                    off,
                    "server",
                    format!("expected \"embedded\" or an http:// URL, got {other:?}"),
                );
                ServerTarget::Embedded
            }
        };
        let seed = w.integer(root, "", "seed").unwrap_or(1);
        let baseline = w
            .duration(root, "", "baseline", limits::MAX_PHASE)
            .unwrap_or(Duration::from_secs(5));
        let recovery = w
            .duration(root, "", "recovery", limits::MAX_PHASE)
            .unwrap_or(Duration::from_secs(5));

        let mut proxies = Vec::new();
        for (i, (at, t)) in w.tables(root, "", "proxy").into_iter().enumerate() {
            let path = format!("proxy[{i}]");
            w.known_keys(
                t,
                &path,
                &[
                    "name", "listen", "upstream", "enabled", "protocol", "toxics",
                ],
            );
            let json = to_json(&DeValue::Table(t.clone()));
            match serde_json::from_value::<ProxyRequest>(json) {
                Ok(req) => match req.validate(Some(i + 1)) {
                    Ok(p) => proxies.push(p),
                    Err(e) => w.problem(at, path, e.to_string()),
                },
                Err(e) => w.problem(at, path, e.to_string()),
            }
        }

        let mut probes = Vec::new();
        let probe_tables = w.tables(root, "", "probe");
        let first = probe_tables.first().map_or(0, |(at, _)| *at);
        w.at_most(
            probe_tables.len(),
            limits::MAX_PROBES,
            first,
            "probe".to_owned(),
            "probes per drill file",
        );
        for (i, (at, t)) in probe_tables.into_iter().enumerate() {
            if let Some(p) = probe(&mut w, t, &format!("probe[{i}]"), at) {
                probes.push(p);
            }
        }
        if probes.is_empty() && w.problems.is_empty() {
            w.problem(
                0,
                "probe",
                "a drill needs at least one [[probe]] of the app under test",
            );
        }

        let mut steps: Vec<Step> = Vec::new();
        let mut step_lines = Vec::new();
        let step_tables = w.tables(root, "", "step");
        let first = step_tables.first().map_or(0, |(at, _)| *at);
        w.at_most(
            step_tables.len(),
            limits::MAX_STEPS,
            first,
            "step".to_owned(),
            "steps per drill file",
        );
        for (i, (at, t)) in step_tables.into_iter().enumerate() {
            let path = format!("step[{i}]");
            w.known_keys(t, &path, &["name", "at", "duration", "fault", "ramp"]);
            let name = w
                .str(t, &path, "name")
                .unwrap_or_else(|| format!("step-{}", i + 1));
            if steps.iter().any(|s| s.name == name) {
                w.problem(
                    at,
                    join(&path, "name"),
                    format!("step name {name:?} is used twice"),
                );
            }
            let start = w
                .duration(t, &path, "at", limits::MAX_PHASE)
                .unwrap_or(Duration::ZERO);
            let duration = w.duration(t, &path, "duration", limits::MAX_PHASE);
            if get(t, "duration").is_none() {
                w.problem(
                    at,
                    join(&path, "duration"),
                    "missing (how long the faults stay)",
                );
            }
            let mut faults = Vec::new();
            let fault_tables = w.tables(t, &path, "fault");
            w.at_most(
                fault_tables.len(),
                limits::MAX_FAULTS_PER_STEP,
                at,
                join(&path, "fault"),
                "faults in one step",
            );
            for (j, (fat, ft)) in fault_tables.into_iter().enumerate() {
                if let Some(f) = fault(&mut w, ft, &format!("{path}.fault[{j}]"), fat) {
                    faults.push(f);
                }
            }
            if faults.is_empty() && get(t, "fault").is_none() {
                w.problem(
                    at,
                    join(&path, "fault"),
                    "a step needs at least one [[step.fault]]",
                );
            }
            let ramp = w.table(t, &path, "ramp").and_then(|r| {
                let p = join(&path, "ramp");
                w.known_keys(r, &p, &["from", "to", "steps"]);
                let from = w.number(r, &p, "from");
                let to = w.number(r, &p, "to");
                let n = w.integer(r, &p, "steps");
                for (key, v) in [("from", from), ("to", to)] {
                    if let Some(v) = v.filter(|v| !(0.0..=1.0).contains(v)) {
                        let off = get(r, key).map_or(at, |x| x.span().start);
                        w.problem(
                            off,
                            join(&p, key),
                            format!("must be a probability within 0..1, got {v}"),
                        );
                    }
                }
                if let Some(n) = n.filter(|n| *n < 2 || *n > 10_000) {
                    let off = get(r, "steps").map_or(at, |x| x.span().start);
                    w.problem(
                        off,
                        join(&p, "steps"),
                        format!("must be within 2..10000, got {n}"),
                    );
                }
                for (key, missing) in [
                    ("from", from.is_none()),
                    ("to", to.is_none()),
                    ("steps", n.is_none()),
                ] {
                    if missing && get(r, key).is_none() {
                        w.problem(
                            at,
                            join(&p, key),
                            "missing (a ramp needs from, to and steps)",
                        );
                    }
                }
                Some(Ramp {
                    from: from? as f32,
                    to: to? as f32,
                    steps: u32::try_from(n?).ok()?,
                })
            });
            if let Some(duration) = duration {
                step_lines.push(at);
                steps.push(Step {
                    name,
                    at: start,
                    duration,
                    faults,
                    ramp,
                });
            }
        }
        // Two steps may not hold the same fault (proxy + name) at the same time.
        for (a, sa) in steps.iter().enumerate() {
            for sb in steps.iter().skip(a + 1) {
                let overlap = sa.at < sb.at.saturating_add(sb.duration)
                    && sb.at < sa.at.saturating_add(sa.duration);
                if !overlap {
                    continue;
                }
                for fa in &sa.faults {
                    for fb in &sb.faults {
                        if fa.proxy == fb.proxy && fault_name(sa, fa) == fault_name(sb, fb) {
                            let line = step_lines.get(a + 1).copied().unwrap_or(0);
                            w.problem(
                                line,
                                format!("step {:?}", sb.name),
                                format!(
                                    "overlaps step {:?} on the same fault {:?} of proxy {:?}",
                                    sa.name,
                                    fault_name(sa, fa),
                                    fa.proxy
                                ),
                            );
                        }
                    }
                }
            }
        }

        // A fault on a proxy the file declares must suit its protocol: the drill creates
        // that proxy, so an HTTP fault on a TCP one would only fail mid-drill.
        for (i, step) in steps.iter().enumerate() {
            for f in &step.faults {
                let kind = f.request.kind.as_deref().unwrap_or_default();
                let declared = proxies.iter().find(|(c, _)| c.name == f.proxy);
                if let Some((config, _)) = declared
                    && config.protocol == crate::proxy::Protocol::Tcp
                    && crate::http_fault::HTTP_FAULT_TYPES.contains(&kind)
                {
                    let line = step_lines.get(i).copied().unwrap_or(0);
                    w.problem(
                        line,
                        format!("step {:?}", step.name),
                        format!(
                            "{kind:?} is an HTTP fault but proxy {:?} of this file is a TCP proxy (set protocol = \"http\" on it)",
                            f.proxy
                        ),
                    );
                }
            }
        }

        let steady_state = w.table(root, "", "steady_state").and_then(|t| {
            w.known_keys(t, "steady_state", &["availability"]);
            w.percent(t, "steady_state", "availability")
        });
        let mut verdict = Verdict::default();
        if let Some(v) = w.table(root, "", "verdict") {
            w.known_keys(v, "verdict", &["baseline", "faults", "recovery", "step"]);
            if let Some(t) = w.table(v, "verdict", "baseline") {
                verdict.baseline = thresholds(&mut w, t, "verdict.baseline");
            }
            if let Some(t) = w.table(v, "verdict", "faults") {
                verdict.faults = thresholds(&mut w, t, "verdict.faults");
            }
            if let Some(t) = w.table(v, "verdict", "recovery") {
                verdict.recovery = thresholds(&mut w, t, "verdict.recovery");
            }
            if let Some(per) = w.table(v, "verdict", "step") {
                for (k, val) in per.iter() {
                    let name = k.get_ref().to_string();
                    let path = format!("verdict.step.{name}");
                    if !steps.iter().any(|s| s.name == name) {
                        w.problem(k.span().start, path.clone(), "no step has this name");
                    }
                    match val.get_ref().as_table() {
                        Some(t) => {
                            let th = thresholds(&mut w, t, &path);
                            verdict.steps.insert(name, th);
                        }
                        None => w.problem(val.span().start, path, "expected a table"),
                    }
                }
            }
        }
        let stop = w.table(root, "", "stop").and_then(|t| {
            w.known_keys(t, "stop", &["window", "availability_below"]);
            Some(StopCondition {
                window: w
                    .duration(t, "stop", "window", limits::MAX_PHASE)
                    .unwrap_or(Duration::from_secs(10)),
                availability_below: w.percent(t, "stop", "availability_below")?,
            })
        });
        if w.problems.is_empty() {
            Ok(DrillPlan {
                name,
                server,
                seed,
                baseline,
                recovery,
                proxies,
                probes,
                steps,
                steady_state,
                verdict,
                stop,
            })
        } else {
            w.problems.sort_by_key(|p| p.line);
            Err(w.problems)
        }
    }

    /// Length of the fault phase: from the end of the baseline to the end of the last step.
    pub fn fault_window(&self) -> Duration {
        self.steps
            .iter()
            .map(|s| s.at.saturating_add(s.duration))
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// Whole planned length: baseline, faults, recovery.
    pub fn total(&self) -> Duration {
        self.baseline
            .saturating_add(self.fault_window())
            .saturating_add(self.recovery)
    }

    /// Thresholds that apply to a step.
    pub fn step_thresholds(&self, step: &str) -> Thresholds {
        self.verdict
            .steps
            .get(step)
            .copied()
            .unwrap_or(self.verdict.faults)
    }
}
