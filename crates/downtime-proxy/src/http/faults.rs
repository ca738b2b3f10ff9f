//! Choosing which HTTP faults act on a request, and the per-fault state they keep: how many
//! matching requests arrived (first_n, every_nth) and the rate limiter's token buckets.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use downtime_model::http_fault::{Distribution, HttpMatch, RateLimit, RequestLatency, glob_match};
use http::request::Parts;
use rand::RngExt;
use rand::rngs::SmallRng;
use tokio::time::Instant;

use crate::toxics::{Chain, ChainEntry};

/// State shared by every connection for one version of one fault.
#[derive(Debug, Default)]
pub struct FaultState {
    matched: AtomicU64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Most client keys a rate limiter tracks; past it, full buckets are forgotten.
const MAX_KEYS: usize = 10_000;

/// The outcome of taking a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    /// Whether the request may pass.
    pub allowed: bool,
    /// Bucket size (`RateLimit-Limit`).
    pub limit: u64,
    /// Whole tokens left (`RateLimit-Remaining`).
    pub remaining: u64,
    /// Seconds until a token is available (`Retry-After`, `RateLimit-Reset`), at least 1.
    pub reset_secs: u64,
}

impl FaultState {
    /// Takes a token for `key` from a token bucket holding `burst` (default `limit`) tokens
    /// and refilled at `limit` per `period_ms`.
    pub fn take_token(&self, cfg: &RateLimit, key: &str, now: Instant) -> RateDecision {
        let capacity = cfg.burst.unwrap_or(cfg.limit).max(1) as f64;
        let per_ms = cfg.limit.max(1) as f64 / cfg.period_ms.max(1) as f64;
        let mut buckets = match self.buckets.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
            buckets.retain(|_, b| {
                let elapsed = now.saturating_duration_since(b.updated).as_secs_f64() * 1000.0;
                b.tokens + elapsed * per_ms < capacity
            });
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        let elapsed_ms = now.saturating_duration_since(bucket.updated).as_secs_f64() * 1000.0;
        bucket.tokens = (bucket.tokens + elapsed_ms * per_ms).min(capacity);
        bucket.updated = now;
        let allowed = bucket.tokens >= 1.0;
        if allowed {
            bucket.tokens -= 1.0;
        }
        let missing = (1.0 - bucket.tokens).max(0.0);
        // `as` from f64 saturates, so huge or infinite waits cannot overflow.
        let reset_secs = ((missing / per_ms) / 1000.0).ceil().max(1.0) as u64;
        RateDecision {
            allowed,
            limit: capacity as u64,
            remaining: bucket.tokens.max(0.0).floor() as u64,
            reset_secs,
        }
    }
}

/// Whether a request matches every condition of `m`.
pub fn matches(m: &HttpMatch, parts: &Parts) -> bool {
    if !m.method.is_empty()
        && !m
            .method
            .iter()
            .any(|x| x.eq_ignore_ascii_case(parts.method.as_str()))
    {
        return false;
    }
    if let Some(pattern) = &m.path
        && !glob_match(pattern, parts.uri.path())
    {
        return false;
    }
    for (name, pattern) in &m.headers {
        let ok = parts
            .headers
            .get_all(name.as_str())
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| glob_match(pattern, v)));
        if !ok {
            return false;
        }
    }
    if !m.query.is_empty() {
        // Names and values are compared decoded (`%20` and `+` are spaces).
        let pairs: Vec<(String, String)> =
            form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        for (name, pattern) in &m.query {
            let ok = pairs
                .iter()
                .any(|(k, v)| k == name && glob_match(pattern, v));
            if !ok {
                return false;
            }
        }
    }
    true
}

/// The faults that act on this request, in chain order: each must match, be within its
/// first_n / every_nth bounds (counted over matching requests), and win its toxicity roll.
pub fn select<'a>(chain: &'a Chain, parts: &Parts, rng: &Mutex<SmallRng>) -> Vec<&'a ChainEntry> {
    let mut chosen = Vec::new();
    for entry in &chain.entries {
        let bounds = &entry.toxic.bounds;
        if let Some(m) = &bounds.matcher
            && !matches(m, parts)
        {
            continue;
        }
        let n = entry
            .state
            .matched
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if bounds.first_n.is_some_and(|first| n > first) {
            continue;
        }
        if bounds.every_nth.is_some_and(|k| n % k.max(1) != 0) {
            continue;
        }
        let toxicity = entry.toxic.toxicity;
        let active = if toxicity >= 1.0 {
            true
        } else if toxicity <= 0.0 {
            false
        } else {
            let mut rng = match rng.lock() {
                Ok(r) => r,
                Err(poisoned) => poisoned.into_inner(),
            };
            rng.random::<f32>() < toxicity
        };
        if active {
            chosen.push(entry);
        }
    }
    chosen
}

/// Draws a per-request delay; never negative, never overflowing.
pub fn draw_latency(cfg: &RequestLatency, rng: &Mutex<SmallRng>) -> Duration {
    let base = cfg.latency as f64;
    let spread = cfg.jitter as f64;
    let ms = match cfg.distribution {
        Distribution::Fixed => base,
        _ if cfg.jitter == 0 => base,
        Distribution::Uniform => {
            let mut rng = match rng.lock() {
                Ok(r) => r,
                Err(poisoned) => poisoned.into_inner(),
            };
            base + (rng.random::<f64>() * 2.0 - 1.0) * spread
        }
        Distribution::Normal => {
            let mut rng = match rng.lock() {
                Ok(r) => r,
                Err(poisoned) => poisoned.into_inner(),
            };
            // Box–Muller transform of two uniform draws.
            let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
            let u2: f64 = rng.random();
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            base + z * spread
        }
    };
    // Saturating float-to-int conversion; at most ~100 years.
    let ms = ms.clamp(0.0, 3.15e12) as u64;
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn matching() {
        let m: HttpMatch = serde_json::from_value(serde_json::json!({
            "method": "get", "path": "/apps/*", "headers": {"x-team": "a*"}, "query": {"page": "2"}
        }))
        .unwrap();
        assert!(matches(
            &m,
            &parts("GET", "/apps/1?page=2", &[("x-team", "alpha")])
        ));
        assert!(!matches(
            &m,
            &parts("POST", "/apps/1?page=2", &[("x-team", "alpha")])
        ));
        assert!(!matches(
            &m,
            &parts("GET", "/account?page=2", &[("x-team", "alpha")])
        ));
        assert!(!matches(
            &m,
            &parts("GET", "/apps/1?page=3", &[("x-team", "alpha")])
        ));
        assert!(!matches(&m, &parts("GET", "/apps/1?page=2", &[])));
        let q: HttpMatch =
            serde_json::from_value(serde_json::json!({"query": {"q": "a b"}})).unwrap();
        assert!(matches(&q, &parts("GET", "/?q=a%20b", &[])));
        assert!(matches(&q, &parts("GET", "/?q=a+b", &[])));
        assert!(!matches(&q, &parts("GET", "/?q=ab", &[])));
    }

    #[tokio::test(start_paused = true)]
    async fn token_bucket_refills_at_the_rate() {
        let state = FaultState::default();
        let cfg = RateLimit {
            limit: 10,
            period_ms: 1000,
            burst: None,
            key_header: None,
        };
        let t0 = Instant::now();
        let allowed = (0..15)
            .filter(|_| state.take_token(&cfg, "a", t0).allowed)
            .count();
        assert_eq!(allowed, 10);
        let d = state.take_token(&cfg, "a", t0);
        assert!(!d.allowed);
        assert_eq!(d.reset_secs, 1);
        // 10 per second: after 500 ms, 5 more.
        let later = t0 + Duration::from_millis(500);
        let allowed = (0..15)
            .filter(|_| state.take_token(&cfg, "a", later).allowed)
            .count();
        assert_eq!(allowed, 5);
        // Another key has its own bucket.
        assert!(state.take_token(&cfg, "b", later).allowed);
    }

    proptest! {
        #[test]
        fn rate_limit_any_numbers(limit in 1u64.., period in 1u64.., burst in proptest::option::of(1u64..), gap in 0u64..1_000_000_000) {
            let state = FaultState::default();
            let cfg = RateLimit { limit, period_ms: period, burst, key_header: None };
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
            rt.block_on(async {
                let t0 = Instant::now();
                state.take_token(&cfg, "k", t0);
                let d = state.take_token(&cfg, "k", t0 + Duration::from_millis(gap));
                assert!(d.reset_secs >= 1);
            });
        }

        #[test]
        fn latency_any_numbers(latency in any::<u64>(), jitter in any::<u64>(), which in 0u8..3, seed in any::<u64>()) {
            let distribution = [Distribution::Fixed, Distribution::Uniform, Distribution::Normal][which as usize];
            let rng = Mutex::new(SmallRng::seed_from_u64(seed));
            let _ = draw_latency(&RequestLatency { latency, jitter, distribution }, &rng);
        }
    }
}
