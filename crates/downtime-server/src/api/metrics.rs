//! `/metrics` in the Prometheus/OpenMetrics text format.
//!
//! Byte counters keep Toxiproxy's names and labels so existing dashboards work; unlike
//! Toxiproxy they move while connections are open, not only when they close. The counters
//! live as atomics in the data plane; a scrape reads them into a fresh collector.

use std::borrow::Cow;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
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

fn labels(p: &ProxyCounters, direction: Option<&'static str>) -> Labels {
    let mut l: Labels = Vec::with_capacity(4);
    if let Some(d) = direction {
        l.push(("direction".into(), d.into()));
    }
    l.push(("proxy".into(), p.name.clone().into()));
    l.push(("listener".into(), p.listen.clone().into()));
    l.push(("upstream".into(), p.upstream.clone().into()));
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

pub(super) async fn render(State(state): State<AppState>) -> Response {
    let mut registry = Registry::default();
    if state.metrics.proxy {
        registry.register_collector(Box::new(ProxyCollector(state.registry.counters().await)));
    }
    if state.metrics.runtime {
        registry.register_collector(Box::new(ProcessCollector));
    }
    let mut body = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut body, &registry) {
        tracing::error!(error = %e, "could not encode metrics");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}
