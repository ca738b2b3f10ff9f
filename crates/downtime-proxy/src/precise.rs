//! Sleeping until an instant with sub-millisecond precision.
//!
//! tokio's timer wheel ticks in whole milliseconds and rounds deadlines up, so a 100 ms
//! latency toxic released by it leaves 0.5–2 ms late. A latency toxic is a promise about
//! time: users compare the added delay with what they configured. So the last stretch of
//! a wait goes to `async-io`'s timer, whose reactor thread sleeps on a `timerfd` with
//! nanosecond resolution: the bulk of a long wait stays on tokio's cheap wheel, and only
//! the final [`PRECISE_WINDOW`] costs a registration with the precise timer.

use std::time::Duration;

use tokio::time::Instant;

/// How long before the deadline tokio's wheel hands over to the precise timer: more than
/// the wheel's worst lateness (one tick, plus rounding up to the next one).
pub(crate) const PRECISE_WINDOW: Duration = Duration::from_millis(3);

/// Completes at `at` or within a few tens of microseconds after it, never before.
pub(crate) async fn sleep_until(at: Instant) {
    if let Some(early) = at.checked_sub(PRECISE_WINDOW)
        && early > Instant::now()
    {
        tokio::time::sleep_until(early).await;
    }
    if at > Instant::now() {
        async_io::Timer::at(at.into_std()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn never_wakes_early() {
        // Both paths: the precise timer alone, and the wheel first. How late it wakes is
        // measured by the benchmarks (target c), not asserted here.
        for wait_us in [200_u64, 1_500, 4_000, 12_000] {
            let at = Instant::now() + Duration::from_micros(wait_us);
            sleep_until(at).await;
            let now = Instant::now();
            assert!(now >= at, "woke {:?} early", at - now);
        }
    }

    #[tokio::test]
    async fn a_past_instant_completes_at_once() {
        let at = Instant::now();
        sleep_until(at).await;
        sleep_until(at - Duration::from_millis(5)).await;
    }
}
