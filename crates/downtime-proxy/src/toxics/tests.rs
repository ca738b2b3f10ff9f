//! Engine tests on tokio's paused clock: every figure is exact, no sleeping.

use std::time::Duration;

use bytes::Bytes;
use downtime_model::{Stream, Toxic, ToxicKind};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::time::Instant;

use super::*;

fn toxic(name: &str, kind: ToxicKind, toxicity: f32) -> Toxic {
    Toxic {
        name: name.to_owned(),
        kind,
        stream: Stream::Downstream,
        stream_text: "downstream".to_owned(),
        toxicity,
        bounds: Default::default(),
    }
}

fn chain(toxics: &[(Toxic, u64)]) -> Chain {
    Chain {
        entries: toxics
            .iter()
            .map(|(t, g)| ChainEntry {
                toxic: t.clone(),
                generation: *g,
                state: Default::default(),
            })
            .collect(),
    }
}

fn link(toxics: &[(Toxic, u64)], now: Instant) -> LinkToxics {
    LinkToxics::new(&chain(toxics), now, SmallRng::seed_from_u64(7))
}

/// Drains everything due up to `until`, with the instant each item fell due.
fn drain(l: &mut LinkToxics, until: Instant) -> Vec<(Instant, Item)> {
    let mut out = Vec::new();
    while let Some(at) = l.queue.front().map(|s| s.at) {
        if at > until {
            break;
        }
        let item = l.pop_due(at).unwrap();
        out.push((at, item));
    }
    out
}

fn data(n: usize) -> Bytes {
    Bytes::from(vec![7u8; n])
}

#[test]
fn latency_is_pipelined_not_serial() {
    let t0 = Instant::now();
    let mut l = link(
        &[(
            toxic(
                "l",
                ToxicKind::Latency {
                    latency: 100,
                    jitter: 0,
                },
                1.0,
            ),
            1,
        )],
        t0,
    );
    // 32 chunks of 32 KiB arriving 1 ms apart (a 1 MiB response).
    for i in 0..32u64 {
        l.on_chunk(data(32 * 1024), t0 + Duration::from_millis(i));
    }
    let out = drain(&mut l, t0 + Duration::from_secs(10));
    assert_eq!(out.len(), 32);
    let last = out.last().unwrap().0;
    assert_eq!(last - t0, Duration::from_millis(131));
}

#[test]
fn bandwidth_paces_at_the_rate() {
    let t0 = Instant::now();
    let mut l = link(
        &[(toxic("b", ToxicKind::Bandwidth { rate: 100 }, 1.0), 1)],
        t0,
    );
    l.on_chunk(data(50_000), t0);
    let out = drain(&mut l, t0 + Duration::from_secs(10));
    // 100 KB/s: 10 KB slices every 100 ms, 50 KB in 500 ms.
    assert_eq!(out.len(), 5);
    assert_eq!(out.last().unwrap().0 - t0, Duration::from_millis(500));
}

#[test]
fn bandwidth_zero_stalls_until_removed() {
    let t0 = Instant::now();
    let b = toxic("b", ToxicKind::Bandwidth { rate: 0 }, 1.0);
    let mut l = link(&[(b, 1)], t0);
    l.on_chunk(data(10), t0);
    assert!(drain(&mut l, t0 + Duration::from_secs(3600)).is_empty());
    let later = t0 + Duration::from_secs(5);
    assert_eq!(
        l.on_chain_change(&Chain::default(), later),
        ChangeOutcome::Continue
    );
    let out = drain(&mut l, later);
    assert_eq!(out.len(), 1, "removing the toxic flushes held data");
}

#[test]
fn adding_a_toxic_keeps_a_stall() {
    let t0 = Instant::now();
    let b = (toxic("b", ToxicKind::Bandwidth { rate: 0 }, 1.0), 1);
    let mut l = link(std::slice::from_ref(&b), t0);
    l.on_chunk(data(10), t0);
    let n = (toxic("n", ToxicKind::Noop, 1.0), 2);
    l.on_chain_change(&chain(&[b, n]), t0);
    assert!(drain(&mut l, t0 + Duration::from_secs(3600)).is_empty());
}

#[test]
fn limit_data_truncates_then_closes() {
    let t0 = Instant::now();
    let mut l = link(
        &[(toxic("x", ToxicKind::LimitData { bytes: 15 }, 1.0), 1)],
        t0,
    );
    l.on_chunk(data(10), t0);
    l.on_chunk(data(10), t0);
    let out = drain(&mut l, t0);
    let sizes: Vec<usize> = out
        .iter()
        .filter_map(|(_, i)| match i {
            Item::Data(b) => Some(b.len()),
            _ => None,
        })
        .collect();
    assert_eq!(sizes, vec![10, 5]);
    assert!(matches!(
        out.last().unwrap().1,
        Item::Close {
            kind: CloseKind::Close,
            ..
        }
    ));
}

#[test]
fn limit_data_counter_survives_an_update() {
    let t0 = Instant::now();
    let first = (toxic("x", ToxicKind::LimitData { bytes: 15 }, 1.0), 1);
    let mut l = link(&[first], t0);
    l.on_chunk(data(10), t0);
    drain(&mut l, t0);
    let updated = (toxic("x", ToxicKind::LimitData { bytes: 12 }, 1.0), 2);
    l.on_chain_change(&chain(&[updated]), t0);
    l.on_chunk(data(10), t0);
    let out = drain(&mut l, t0);
    assert_eq!(out[0].1, Item::Data(data(2)));
}

#[test]
fn timeout_closes_after_inactivity_and_on_removal() {
    let t0 = Instant::now();
    let t = (toxic("t", ToxicKind::Timeout { timeout: 100 }, 1.0), 1);
    let mut l = link(std::slice::from_ref(&t), t0);
    assert_eq!(l.next_deadline(), Some(t0 + Duration::from_millis(100)));
    l.on_chunk(data(5), t0 + Duration::from_millis(80));
    assert!(
        drain(&mut l, t0 + Duration::from_secs(1)).is_empty(),
        "data is swallowed"
    );
    assert!(!l.expired(t0 + Duration::from_millis(150)));
    assert!(l.expired(t0 + Duration::from_millis(180)));
    assert_eq!(
        l.on_chain_change(&Chain::default(), t0),
        ChangeOutcome::Close
    );
}

#[test]
fn timeout_zero_never_closes() {
    let t0 = Instant::now();
    let mut l = link(
        &[(toxic("t", ToxicKind::Timeout { timeout: 0 }, 1.0), 1)],
        t0,
    );
    l.on_chunk(data(5), t0);
    assert_eq!(l.next_deadline(), None);
    assert!(!l.expired(t0 + Duration::from_secs(3600)));
}

#[test]
fn reset_peer_resets_after_first_chunk_and_is_cancelled_by_removal() {
    let t0 = Instant::now();
    let r = (toxic("r", ToxicKind::ResetPeer { timeout: 50 }, 1.0), 1);
    let mut l = link(std::slice::from_ref(&r), t0);
    l.on_chunk(data(5), t0);
    let out = drain(&mut l, t0 + Duration::from_secs(1));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0 - t0, Duration::from_millis(50));
    assert!(matches!(
        out[0].1,
        Item::Close {
            kind: CloseKind::Reset,
            ..
        }
    ));

    let mut l = link(&[r], t0);
    l.on_chunk(data(5), t0);
    l.on_chain_change(&Chain::default(), t0);
    assert!(drain(&mut l, t0 + Duration::from_secs(1)).is_empty());
}

#[test]
fn slow_close_delays_only_the_end() {
    let t0 = Instant::now();
    let mut l = link(
        &[(toxic("s", ToxicKind::SlowClose { delay: 70 }, 1.0), 1)],
        t0,
    );
    l.on_chunk(data(5), t0);
    l.on_eof(t0);
    let out = drain(&mut l, t0 + Duration::from_secs(1));
    assert_eq!(out[0].0, t0);
    assert_eq!(out[1], (t0 + Duration::from_millis(70), Item::Eof));
}

#[test]
fn slicer_keeps_bytes_in_order() {
    let t0 = Instant::now();
    let kind = ToxicKind::Slicer {
        average_size: 10,
        size_variation: 4,
        delay: 1000,
    };
    let mut l = link(&[(toxic("s", kind, 1.0), 1)], t0);
    let payload: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    l.on_chunk(Bytes::from(payload.clone()), t0);
    let out = drain(&mut l, t0 + Duration::from_secs(10));
    let mut joined = Vec::new();
    for (_, item) in &out {
        if let Item::Data(b) = item {
            assert!((6..=14).contains(&b.len()) || joined.len() + b.len() == 1000);
            joined.extend_from_slice(b);
        }
    }
    assert_eq!(joined, payload);
    assert!(out.len() >= 1000 / 14);
}

#[test]
fn toxicity_zero_and_one() {
    let t0 = Instant::now();
    let never = (
        toxic(
            "a",
            ToxicKind::Latency {
                latency: 100,
                jitter: 0,
            },
            0.0,
        ),
        1,
    );
    assert!(link(&[never], t0).is_passthrough());
    let always = (
        toxic(
            "a",
            ToxicKind::Latency {
                latency: 100,
                jitter: 0,
            },
            1.0,
        ),
        1,
    );
    assert!(!link(&[always], t0).is_passthrough());
    let reset_zero = chain(&[(toxic("r", ToxicKind::ResetPeer { timeout: 0 }, 0.0), 1)]);
    assert!(
        !reset_zero.wants_reset_on_close(),
        "toxicity 0 has no effect at all (#603)"
    );
}

#[test]
fn seeded_rolls_replay() {
    let t0 = Instant::now();
    let half = (toxic("a", ToxicKind::Noop, 0.5), 1);
    let rolls = |seed: u64| -> Vec<bool> {
        (0..64)
            .map(|i| {
                let l = LinkToxics::new(
                    &chain(std::slice::from_ref(&half)),
                    t0,
                    SmallRng::seed_from_u64(seed + i),
                );
                l.stages[0].active
            })
            .collect()
    };
    assert_eq!(rolls(1), rolls(1));
    let active = rolls(1).iter().filter(|a| **a).count();
    assert!(
        (16..=48).contains(&active),
        "{active} of 64 active at toxicity 0.5"
    );
}

proptest! {
    /// Huge or zero attributes and chunks up to 1 MiB never panic, never lose or reorder bytes.
    #[test]
    fn any_numbers_any_chunk(
        latency in prop_oneof![Just(0u64), Just(1), any::<u64>()],
        jitter in prop_oneof![Just(0u64), Just(1), any::<u64>()],
        rate in prop_oneof![Just(1u64), Just(2), any::<u64>()],
        avg in prop_oneof![Just(0u64), Just(1), Just(u64::MAX), 0u64..100_000],
        var in prop_oneof![Just(0u64), Just(u64::MAX), 0u64..100_000],
        delay in prop_oneof![Just(0u64), any::<u64>()],
        limit in prop_oneof![Just(0u64), Just(u64::MAX), 0u64..2_000_000],
        len in prop_oneof![Just(1usize), Just(1 << 20), 1usize..70_000],
    ) {
        let t0 = Instant::now();
        let toxics = [
            (toxic("l", ToxicKind::Latency { latency, jitter }, 1.0), 1),
            (toxic("b", ToxicKind::Bandwidth { rate }, 1.0), 2),
            (toxic("s", ToxicKind::Slicer { average_size: avg.clamp(64, 1 << 20), size_variation: var, delay }, 1.0), 3),
            (toxic("c", ToxicKind::SlowClose { delay }, 1.0), 4),
            (toxic("d", ToxicKind::LimitData { bytes: limit }, 1.0), 5),
        ];
        let mut l = link(&toxics, t0);
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        l.on_chunk(Bytes::from(payload.clone()), t0);
        l.on_eof(t0);
        let mut joined = Vec::new();
        let mut last = t0;
        while let Some(s) = l.queue.pop_front() {
            prop_assert!(s.at >= last, "items due in order");
            last = s.at;
            if let Item::Data(b) = s.item { joined.extend_from_slice(&b); }
        }
        let expect = usize::try_from(limit).unwrap_or(usize::MAX).min(len);
        prop_assert!(joined[..] == payload[..expect], "bytes lost or reordered: got {} of {}", joined.len(), expect);
    }

    /// The latency delay is latency ± jitter, clamped at zero, for any inputs.
    #[test]
    fn latency_delay_bounds(latency in any::<u64>(), jitter in any::<u64>(), seed in any::<u64>()) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let d = stages::latency_delay(latency, jitter, &mut rng).as_millis();
        let lo = i128::from(latency) - i128::from(jitter);
        let hi = i128::from(latency) + i128::from(jitter);
        prop_assert!(d as i128 >= lo.max(0) && d as i128 <= hi);
    }
}
