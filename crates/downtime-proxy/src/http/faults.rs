//! Choosing which HTTP faults act on a request, and the per-fault state they keep: how many
//! matching requests arrived (first_n, every_nth) and the rate limiter's token buckets.

use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use downtime_model::http_fault::{Distribution, HttpMatch, RateLimit, RequestLatency, glob_match};
use hashlink::LruCache;
use http::request::Parts;
use rand::RngExt;
use rand::rngs::SmallRng;
use tokio::time::Instant;

use crate::toxics::{Chain, ChainEntry};

/// Most client keys one `rate_limit` fault tracks (documented in `docs/compatibility.md`).
///
/// Past it the least recently used key is forgotten, in O(1): its next request starts from a
/// full bucket, which only ever makes the limit more lenient, and only for a key that sent
/// nothing while 100,000 other keys did. Each entry is a 64-bit hash of the key and a bucket
/// (under 100 bytes with the LRU links), so a fault holds at most ~10 MiB whatever the keys'
/// lengths or number: a flood of 1,000,000 distinct keys costs the same memory as 100,000.
pub const MAX_KEYS: usize = 100_000;

/// State shared by every connection for one version of one fault.
#[derive(Debug)]
pub struct FaultState {
    matched: AtomicU64,
    /// Token buckets by hashed client key, least recently used first.
    ///
    /// A std mutex: it is held for a hash lookup and a few float operations, never across
    /// an `.await`.
    buckets: Mutex<LruCache<u64, Bucket>>,
    /// Hashes client keys (random per fault, so colliding keys cannot be chosen).
    hasher: RandomState,
}

impl Default for FaultState {
    fn default() -> Self {
        FaultState {
            matched: AtomicU64::new(0),
            buckets: Mutex::new(LruCache::new(MAX_KEYS)),
            hasher: RandomState::new(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

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
    /// and refilled at `limit` per `period_ms`. O(1): one hash and one LRU lookup or insert
    /// (which forgets the least recently used key when [`MAX_KEYS`] are tracked).
    pub fn take_token(&self, cfg: &RateLimit, key: &str, now: Instant) -> RateDecision {
        let capacity = cfg.burst.unwrap_or(cfg.limit).max(1) as f64;
        let per_ms = cfg.limit.max(1) as f64 / cfg.period_ms.max(1) as f64;
        let hashed = self.hasher.hash_one(key);
        let mut buckets = match self.buckets.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        let decision = match buckets.get_mut(&hashed) {
            Some(bucket) => refill_and_take(bucket, capacity, per_ms, now),
            None => {
                let mut bucket = Bucket {
                    tokens: capacity,
                    updated: now,
                };
                let decision = refill_and_take(&mut bucket, capacity, per_ms, now);
                buckets.insert(hashed, bucket);
                decision
            }
        };
        drop(buckets);
        decision
    }

    /// How many client keys are tracked now (at most [`MAX_KEYS`]).
    pub fn tracked_keys(&self) -> usize {
        match self.buckets.lock() {
            Ok(b) => b.len(),
            Err(poisoned) => poisoned.into_inner().len(),
        }
    }
}

/// The token-bucket arithmetic: refill for the time since the last request (capped at the
/// bucket size), take a token if there is a whole one, and say when the next one comes.
fn refill_and_take(bucket: &mut Bucket, capacity: f64, per_ms: f64, now: Instant) -> RateDecision {
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

/// Whether a request matches every condition of `m`.
pub fn matches(m: &HttpMatch, parts: &Parts) -> bool {
    if let Some(pattern) = &m.host {
        let host = target_host(parts).unwrap_or_default();
        if !glob_match(&pattern.to_ascii_lowercase(), &host) {
            return false;
        }
    }
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

/// The host a request is for, lower case and without port: the URI's (absolute form, as a
/// forward proxy receives it), else the `Host` header.
pub fn target_host(parts: &Parts) -> Option<String> {
    let authority = match parts.uri.host() {
        Some(h) => h.to_owned(),
        None => {
            let host = parts.headers.get(http::header::HOST)?.to_str().ok()?;
            match host.rsplit_once(':') {
                Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h.to_owned(),
                _ => host.to_owned(),
            }
        }
    };
    Some(
        authority
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase(),
    )
}

/// The faults that act on this request, in chain order: each must match, be within its
/// first_n / every_nth bounds (counted over matching requests), and win its toxicity roll.
pub fn select<'a>(chain: &'a Chain, parts: &Parts, rng: &Mutex<SmallRng>) -> Vec<&'a ChainEntry> {
    select_by(chain, rng, |entry| {
        !is_tls(entry)
            && entry
                .toxic
                .bounds
                .matcher
                .as_ref()
                .is_none_or(|m| matches(m, parts))
    })
}

/// Whether a fault acts on TLS handshakes rather than on requests.
fn is_tls(entry: &ChainEntry) -> bool {
    matches!(
        entry.toxic.kind,
        downtime_model::ToxicKind::Http(downtime_model::http_fault::HttpAction::Tls(_))
    )
}

/// The TLS fault that acts on a handshake for `server_name` (SNI), if any: the first TLS
/// fault whose `match.host` (if set) matches it and that wins its bounds and roll.
pub fn select_tls<'a>(
    chain: &'a Chain,
    server_name: Option<&str>,
    rng: &Mutex<SmallRng>,
) -> Option<&'a ChainEntry> {
    select_by(chain, rng, |entry| {
        is_tls(entry)
            && entry.toxic.bounds.matcher.as_ref().is_none_or(|m| {
                m.host.as_ref().is_none_or(|p| {
                    glob_match(&p.to_ascii_lowercase(), server_name.unwrap_or_default())
                })
            })
    })
    .into_iter()
    .next()
}

/// The entries `wanted` picks that are within their first_n / every_nth bounds (counted
/// over the entries picked) and win their toxicity roll, in chain order.
fn select_by<'a>(
    chain: &'a Chain,
    rng: &Mutex<SmallRng>,
    wanted: impl Fn(&ChainEntry) -> bool,
) -> Vec<&'a ChainEntry> {
    let mut chosen = Vec::new();
    for entry in &chain.entries {
        if !wanted(entry) {
            continue;
        }
        let bounds = &entry.toxic.bounds;
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

    impl FaultState {
        /// Whether a token would be available for `key` at `at`, without touching the bucket.
        fn clone_bucket(&self, cfg: &RateLimit, key: &str, at: Instant) -> bool {
            let capacity = cfg.burst.unwrap_or(cfg.limit).max(1) as f64;
            let per_ms = cfg.limit.max(1) as f64 / cfg.period_ms.max(1) as f64;
            let hashed = self.hasher.hash_one(key);
            let mut buckets = self.buckets.lock().unwrap();
            let mut copy = *buckets.get_mut(&hashed).unwrap();
            refill_and_take(&mut copy, capacity, per_ms, at).allowed
        }
    }

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

    /// Issue 10: keys were never evicted and every new key scanned all of them. The map
    /// now stays at its cap however many distinct keys arrive, and the newest keys keep
    /// their buckets.
    #[tokio::test(start_paused = true)]
    async fn issue_10_rate_limit_keys_stay_bounded() {
        let state = FaultState::default();
        let cfg = RateLimit {
            limit: 1,
            period_ms: 60_000,
            burst: None,
            key_header: Some("x-key".into()),
        };
        let now = Instant::now();
        for i in 0..200_000u32 {
            assert!(state.take_token(&cfg, &format!("key-{i}"), now).allowed);
            assert!(state.tracked_keys() <= MAX_KEYS);
        }
        assert_eq!(state.tracked_keys(), MAX_KEYS);
        // A recent key still has its (empty) bucket: the limit holds for it.
        assert!(!state.take_token(&cfg, "key-199999", now).allowed);
        // The oldest keys were forgotten: they start again from a full bucket.
        assert!(state.take_token(&cfg, "key-0", now).allowed);
        // A key used again is recent again and survives further floods.
        for i in 200_000..(200_000 + MAX_KEYS as u32 - 1) {
            state.take_token(&cfg, &format!("key-{i}"), now);
        }
        assert!(!state.take_token(&cfg, "key-0", now).allowed);
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

        /// The refill arithmetic: from an emptied bucket, after `gap_ms` exactly
        /// min(burst, gap × limit / period) whole tokens are back (give or take one for float
        /// rounding at an exact boundary), never more than the burst, and waiting the
        /// announced `Retry-After` always gives a token.
        #[test]
        fn rate_limit_refill_arithmetic(
            limit in 1u64..=1000,
            period in 1u64..=downtime_model::http_fault::limits::MAX_DELAY_MS,
            burst in proptest::option::of(1u64..=1000),
            gap in 0u64..=3_600_000,
        ) {
            let state = FaultState::default();
            let cfg = RateLimit { limit, period_ms: period, burst, key_header: None };
            let capacity = burst.unwrap_or(limit);
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
            rt.block_on(async {
                let t0 = Instant::now();
                let mut first = 0;
                loop {
                    let d = state.take_token(&cfg, "k", t0);
                    prop_assert_eq!(d.limit, capacity);
                    if !d.allowed {
                        prop_assert!(d.reset_secs >= 1);
                        // Retry-After is a promise: a token is there after it.
                        let retry = t0 + Duration::from_secs(d.reset_secs);
                        prop_assert!(FaultState::clone_bucket(&state, &cfg, "k", retry));
                        break;
                    }
                    first += 1;
                    prop_assert!(first <= capacity);
                }
                prop_assert_eq!(first, capacity);
                let later = t0 + Duration::from_millis(gap);
                let expected = (u128::from(gap) * u128::from(limit) / u128::from(period))
                    .min(u128::from(capacity));
                let mut again: u128 = 0;
                while state.take_token(&cfg, "k", later).allowed {
                    again += 1;
                    prop_assert!(again <= u128::from(capacity));
                }
                prop_assert!(again == expected || again + 1 == expected, "{} vs {}", again, expected);
                Ok(())
            })?;
        }

        #[test]
        fn latency_any_numbers(latency in any::<u64>(), jitter in any::<u64>(), which in 0u8..3, seed in any::<u64>()) {
            let distribution = [Distribution::Fixed, Distribution::Uniform, Distribution::Normal][which as usize];
            let rng = Mutex::new(SmallRng::seed_from_u64(seed));
            let _ = draw_latency(&RequestLatency { latency, jitter, distribution }, &rng);
        }
    }
}
