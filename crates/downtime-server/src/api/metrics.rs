//! `/metrics` in Prometheus' text format 0.0.4 (as Toxiproxy's Go server answers), or in
//! OpenMetrics when the `Accept` header asks for `application/openmetrics-text`.
//!
//! Labels are written sorted by name, the order client_golang uses, so that lines such as
//! `toxiproxy_proxy_received_bytes_total{direction="upstream",listener="...",proxy="...",
//! upstream="..."}` are byte for byte those of Toxiproxy (its end-to-end script greps them).
//! prometheus-client encodes OpenMetrics only; [`to_prometheus_text`] turns that into 0.0.4.
//!
//! With proxy metrics, the status series come too: active faults per proxy and type,
//! component states, probes, drill runs, webhook deliveries and the history queue.
//!
//! Byte counters keep Toxiproxy's names and labels so existing dashboards work; unlike
//! Toxiproxy they move while connections are open, not only when they close. The counters
//! live as atomics in the data plane; a scrape reads them into a fresh collector.

use std::borrow::Cow;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use downtime_proxy::{DirectionStats, ProxyCounters};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;

use super::AppState;

#[derive(Debug)]
struct ProxyCollector(Vec<ProxyCounters>);

type Labels = Vec<(Cow<'static, str>, Cow<'static, str>)>;

/// A proxy's labels (and `direction` when given), sorted by name as client_golang sorts.
fn labels(p: &ProxyCounters, direction: Option<&'static str>) -> Labels {
    let mut l: Labels = Vec::with_capacity(5);
    if let Some(d) = direction {
        l.push(("direction".into(), d.into()));
    }
    l.push(("listener".into(), p.listen.clone().into()));
    l.push(("proxy".into(), p.name.clone().into()));
    l.push(("upstream".into(), p.upstream.clone().into()));
    l
}

/// `l` plus one label, kept sorted by name.
fn with(mut l: Labels, name: &'static str, value: String) -> Labels {
    l.push((name.into(), value.into()));
    l.sort_by(|a, b| a.0.cmp(&b.0));
    l
}

impl ProxyCollector {
    fn bytes(
        &self,
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        pick: fn(&DirectionStats) -> u64,
    ) -> std::fmt::Result {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for p in &self.0 {
            for (direction, stats) in [
                ("upstream", &p.stats.upstream),
                ("downstream", &p.stats.downstream),
            ] {
                let l = labels(p, Some(direction));
                ConstCounter::new(pick(stats)).encode(family.encode_family(&l)?)?;
            }
        }
        Ok(())
    }
}

impl Collector for ProxyCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        self.bytes(
            &mut encoder,
            "toxiproxy_proxy_received_bytes",
            "Bytes read from the source socket of each link.",
            |s| s.received.load(Ordering::Relaxed),
        )?;
        self.bytes(
            &mut encoder,
            "toxiproxy_proxy_sent_bytes",
            "Bytes written to the destination socket of each link.",
            |s| s.sent.load(Ordering::Relaxed),
        )?;
        let mut total = encoder.encode_descriptor(
            "downtime_proxy_connections",
            "Client connections accepted by each proxy.",
            None,
            MetricType::Counter,
        )?;
        for p in &self.0 {
            let v = p.stats.connections_total.load(Ordering::Relaxed);
            ConstCounter::new(v).encode(total.encode_family(&labels(p, None))?)?;
        }
        let mut active = encoder.encode_descriptor(
            "downtime_proxy_active_connections",
            "Connections of each proxy open right now.",
            None,
            MetricType::Gauge,
        )?;
        for p in &self.0 {
            let v = p.stats.connections_active.load(Ordering::Relaxed);
            let v = i64::try_from(v).unwrap_or(i64::MAX);
            ConstGauge::new(v).encode(active.encode_family(&labels(p, None))?)?;
        }
        self.http_requests(&mut encoder)
    }
}

impl ProxyCollector {
    /// Requests of HTTP proxies by status, and by the fault that answered or altered them.
    fn http_requests(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let mut by_status = encoder.encode_descriptor(
            "downtime_http_requests",
            "Requests answered by each HTTP proxy, by status (0: cut without an answer).",
            None,
            MetricType::Counter,
        )?;
        for p in &self.0 {
            let Some(http) = &p.http else { continue };
            for (status, n) in http.by_status() {
                let l = with(labels(p, None), "status", status.to_string());
                ConstCounter::new(n).encode(by_status.encode_family(&l)?)?;
            }
        }
        let mut by_fault = encoder.encode_descriptor(
            "downtime_http_faulted_requests",
            "Requests of each HTTP proxy answered or altered by a fault, by fault name.",
            None,
            MetricType::Counter,
        )?;
        for p in &self.0 {
            let Some(http) = &p.http else { continue };
            for (fault, n) in http.by_fault() {
                let l = with(labels(p, None), "fault", fault);
                ConstCounter::new(n).encode(by_fault.encode_family(&l)?)?;
            }
        }
        Ok(())
    }
}

/// Faults, component states, probes, drills, webhooks and the history queue, read once per
/// scrape (registry, store and counters) and encoded as constant metrics.
#[derive(Debug, Default)]
struct StatusCollector {
    /// (proxy, fault type, active faults of that type).
    faults: Vec<(String, &'static str, i64)>,
    /// (component id, severity code 0..4).
    states: Vec<(String, i64)>,
    /// (endpoint, requests passed, requests failed) in its latest recorded minute.
    probes: Vec<(String, i64, i64)>,
    /// (outcome or `running`, recorded runs).
    drills: Vec<(&'static str, i64)>,
    /// (result, deliveries) of webhooks since start.
    deliveries: Vec<(&'static str, u64)>,
    webhook_failed_attempts: u64,
    webhooks: i64,
    history_dropped: u64,
    history_failed: u64,
    history_queued: i64,
}

type Pairs = Vec<(Cow<'static, str>, Cow<'static, str>)>;

/// Labels from pairs, sorted by name.
fn pairs(items: &[(&'static str, &str)]) -> Pairs {
    let mut l: Pairs = items
        .iter()
        .map(|(k, v)| (Cow::Borrowed(*k), Cow::Owned((*v).to_owned())))
        .collect();
    l.sort_by(|a, b| a.0.cmp(&b.0));
    l
}

impl StatusCollector {
    async fn gather(state: &AppState) -> Self {
        use crate::history::{ComponentKind, Timestamp};
        let mut c = StatusCollector::default();
        let proxies = state.registry.list().await;
        for p in &proxies {
            let mut by_type: std::collections::BTreeMap<&'static str, i64> = Default::default();
            for t in p.toxics.iter().filter(|t| t.toxicity > 0.0) {
                *by_type.entry(t.kind.type_name()).or_default() += 1;
            }
            for (kind, n) in by_type {
                c.faults.push((p.config.name.clone(), kind, n));
            }
        }
        let h = &state.history;
        // The same decision as the status page's (components without data have no series).
        for (id, s) in crate::web::source::component_states(&state.registry, h).await {
            if let Some(s) = s {
                c.states.push((id, i64::from(s.code())));
            }
        }
        let now = Timestamp::now();
        if let Ok(known) = h.components().await {
            for e in known.iter().filter(|e| e.kind == ComponentKind::Endpoint) {
                let since = Timestamp(now.millis() - 120_000);
                if let Ok(minutes) = h.probe_minutes(&e.name, since).await
                    && let Some(m) = minutes.last()
                {
                    c.probes
                        .push((e.name.clone(), m.ok, m.total.saturating_sub(m.ok)));
                }
            }
        }
        if let Ok(drills) = h.drills(500).await {
            let mut by: std::collections::BTreeMap<&'static str, i64> = Default::default();
            for d in drills {
                *by.entry(d.outcome.map_or("running", |o| o.as_str()))
                    .or_default() += 1;
            }
            c.drills = by.into_iter().collect();
        }
        let w = state.webhooks.stats();
        c.deliveries = vec![
            ("delivered", w.delivered.load(Ordering::Relaxed)),
            ("failed", w.failed.load(Ordering::Relaxed)),
            ("dropped", w.dropped.load(Ordering::Relaxed)),
        ];
        c.webhook_failed_attempts = w.failed_attempts.load(Ordering::Relaxed);
        c.webhooks = i64::try_from(state.webhooks.len()).unwrap_or(i64::MAX);
        c.history_dropped = h.dropped();
        c.history_failed = h.failed();
        c.history_queued = i64::try_from(h.queued()).unwrap_or(i64::MAX);
        c
    }
}

impl Collector for StatusCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let mut f = encoder.encode_descriptor(
            "downtime_faults_active",
            "Faults (toxics with toxicity above 0) active right now, per proxy and type.",
            None,
            MetricType::Gauge,
        )?;
        for (proxy, kind, n) in &self.faults {
            ConstGauge::new(*n)
                .encode(f.encode_family(&pairs(&[("proxy", proxy), ("type", kind)]))?)?;
        }
        let mut f = encoder.encode_descriptor(
            "downtime_component_state",
            "State of each status page component: 0 operational, 1 under maintenance, \
             2 degraded performance, 3 partial outage, 4 major outage.",
            None,
            MetricType::Gauge,
        )?;
        for (component, code) in &self.states {
            ConstGauge::new(*code).encode(f.encode_family(&pairs(&[("component", component)]))?)?;
        }
        let mut f = encoder.encode_descriptor(
            "downtime_probe_requests_last_minute",
            "Probe requests of each endpoint in its latest recorded minute (last 2 minutes), \
             by result.",
            None,
            MetricType::Gauge,
        )?;
        for (endpoint, ok, failed) in &self.probes {
            for (result, n) in [("ok", ok), ("failed", failed)] {
                ConstGauge::new(*n).encode(
                    f.encode_family(&pairs(&[("endpoint", endpoint), ("result", result)]))?,
                )?;
            }
        }
        let mut f = encoder.encode_descriptor(
            "downtime_drill_runs",
            "Drill runs in the history store (at most the latest 500), by outcome; running \
             ones have outcome \"running\".",
            None,
            MetricType::Gauge,
        )?;
        for (outcome, n) in &self.drills {
            ConstGauge::new(*n).encode(f.encode_family(&pairs(&[("outcome", outcome)]))?)?;
        }
        let mut f = encoder.encode_descriptor(
            "downtime_webhook_deliveries",
            "Webhook deliveries since start, by result: delivered (2xx), failed (after the last \
             retry), dropped (queue full).",
            None,
            MetricType::Counter,
        )?;
        for (result, n) in &self.deliveries {
            ConstCounter::new(*n).encode(f.encode_family(&pairs(&[("result", result)]))?)?;
        }
        let f = encoder.encode_descriptor(
            "downtime_webhook_failed_attempts",
            "Webhook attempts that failed (error, timeout or non-2xx answer), retried or not.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.webhook_failed_attempts).encode(f)?;
        let f = encoder.encode_descriptor(
            "downtime_webhooks",
            "Webhook subscriptions.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.webhooks).encode(f)?;
        let f = encoder.encode_descriptor(
            "downtime_history_events_dropped",
            "History writes dropped because the queue was full (the data plane never waits).",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.history_dropped).encode(f)?;
        let f = encoder.encode_descriptor(
            "downtime_history_writes_failed",
            "History writes lost because their transaction failed.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.history_failed).encode(f)?;
        let f = encoder.encode_descriptor(
            "downtime_history_queue_length",
            "History writes waiting in the queue.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.history_queued).encode(f)?;
        Ok(())
    }
}

#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let Some(stat) = read_process_stat() else {
            return Ok(());
        };
        let cpu = encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time of this process.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(stat.cpu_seconds).encode(cpu)?;
        let rss = encoder.encode_descriptor(
            "process_resident_memory_bytes",
            "Resident memory of this process.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(stat.rss_bytes).encode(rss)?;
        if let Some(fds) = std::fs::read_dir("/proc/self/fd").ok().map(Iterator::count) {
            let open = encoder.encode_descriptor(
                "process_open_fds",
                "Open file descriptors of this process.",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(i64::try_from(fds).unwrap_or(i64::MAX)).encode(open)?;
        }
        Ok(())
    }
}

struct ProcessStat {
    cpu_seconds: f64,
    rss_bytes: i64,
}

/// CPU and RSS from `/proc/self/stat` (Linux); `None` elsewhere.
fn read_process_stat() -> Option<ProcessStat> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is parenthesised and may contain spaces.
    let rest = text.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let rss_pages: i64 = fields.get(21)?.parse().ok()?;
    // Linux reports clock ticks (USER_HZ, 100 on every mainstream kernel) and 4 KiB pages.
    Some(ProcessStat {
        cpu_seconds: (utime + stime) / 100.0,
        rss_bytes: rss_pages.saturating_mul(4096),
    })
}

/// Content type of Prometheus' text format, the default answer (as client_golang's).
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of OpenMetrics, answered when the client asks for it.
const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics: one of its media ranges is
/// `application/openmetrics-text` with a quality above 0.
fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        })
}

/// Turns prometheus-client's OpenMetrics text into Prometheus' text format 0.0.4, as
/// client_golang writes it: a counter family is named by its sample name (`x_total` in its
/// `# HELP` and `# TYPE` lines), `unknown` becomes `untyped`, and the `# UNIT`, `# EOF`
/// and counters' `_created` lines go (0.0.4 has none). Samples are left as they are: label
/// values are escaped the same way in both formats.
fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let suffix = if counters.contains(name) {
                "_total"
            } else {
                ""
            };
            out.push_str(&format!("# HELP {name}{suffix} {help}\n"));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            match kind {
                "counter" => out.push_str(&format!("# TYPE {name}_total counter\n")),
                "unknown" => out.push_str(&format!("# TYPE {name} untyped\n")),
                _ => out.push_str(&format!("# TYPE {name} {kind}\n")),
            }
            continue;
        }
        let sample_name = line.split(['{', ' ']).next().unwrap_or("");
        if sample_name
            .strip_suffix("_created")
            .is_some_and(|base| counters.contains(base))
        {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

pub(super) async fn render(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let mut registry = Registry::default();
    if state.metrics.proxy {
        registry.register_collector(Box::new(ProxyCollector(state.registry.counters().await)));
        registry.register_collector(Box::new(StatusCollector::gather(&state).await));
    }
    if state.metrics.runtime {
        registry.register_collector(Box::new(ProcessCollector));
    }
    let mut body = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut body, &registry) {
        tracing::error!(error = %e, "could not encode metrics");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let (body, content_type) = if wants_openmetrics(&headers) {
        (body, OPENMETRICS_TEXT)
    } else {
        (to_prometheus_text(&body), PROMETHEUS_TEXT)
    };
    let mut response = (StatusCode::OK, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_counters_become_prometheus_text() {
        let om = "# HELP toxiproxy_proxy_received_bytes Bytes read.\n\
                  # TYPE toxiproxy_proxy_received_bytes counter\n\
                  toxiproxy_proxy_received_bytes_total{direction=\"upstream\",proxy=\"a\"} 3\n\
                  toxiproxy_proxy_received_bytes_created 1.5\n\
                  # HELP q Queue.\n\
                  # TYPE q gauge\n\
                  # UNIT q bytes\n\
                  q 2\n\
                  # TYPE u unknown\n\
                  u 1\n\
                  # EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP toxiproxy_proxy_received_bytes_total Bytes read.\n\
             # TYPE toxiproxy_proxy_received_bytes_total counter\n\
             toxiproxy_proxy_received_bytes_total{direction=\"upstream\",proxy=\"a\"} 3\n\
             # HELP q Queue.\n\
             # TYPE q gauge\n\
             q 2\n\
             # TYPE u untyped\n\
             u 1\n"
        );
    }

    #[test]
    fn accept_header_picks_openmetrics_only_when_asked() {
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, HeaderValue::from_static(v));
            wants_openmetrics(&h)
        };
        assert!(!wants_openmetrics(&HeaderMap::new()));
        assert!(!with("*/*"));
        assert!(!with("text/plain;version=0.0.4"));
        assert!(with(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(!with("application/openmetrics-text;q=0, text/plain"));
    }
}
