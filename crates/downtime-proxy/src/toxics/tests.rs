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

/// When the front item falls due (`None` if nothing is ready: empty, or held).
fn front_due(l: &LinkToxics) -> Option<Instant> {
    match l.queue.front().map(|q| &q.entry) {
        Some(Entry::Ready(s)) => Some(s.at),
        _ => None,
    }
}

/// Drains everything due up to `until`, with the instant each item fell due (never earlier
/// than the item before it: that is when the link writes it).
fn drain(l: &mut LinkToxics, until: Instant) -> Vec<(Instant, Item)> {
    let mut out: Vec<(Instant, Item)> = Vec::new();
    while let Some(at) = front_due(l) {
        let at = out.last().map_or(at, |(last, _)| at.max(*last));
        if at > until {
            break;
        }
        let item = l.pop_due(at).unwrap();
        out.push((at, item));
    }
    out
}

/// The payload of the data items of `out`, joined.
fn joined(out: &[(Instant, Item)]) -> Vec<u8> {
    let mut all = Vec::new();
    for (_, item) in out {
        if let Item::Data(b) = item {
            all.extend_from_slice(b);
        }
    }
    all
}

/// The link's counters agree with its queue.
fn check_accounting(l: &LinkToxics) -> Result<(), String> {
    let payload: usize = l.queue.iter().map(Queued::payload).sum();
    let charged: usize = l.queue.iter().map(|q| q.charge).sum();
    let held: Vec<usize> = l
        .queue
        .iter()
        .filter_map(|q| match &q.entry {
            Entry::Waiting {
                held: true, data, ..
            } => Some(data.len()),
            _ => None,
        })
        .collect();
    let ok = payload == l.queued_bytes
        && charged == l.charged
        && l.queue.iter().all(|q| q.charge >= q.payload())
        && held.iter().sum::<usize>() == l.held_bytes
        && held.len() == l.held_items;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "payload {payload} vs {}, charged {charged} vs {}, held {held:?} vs {} in {}",
            l.queued_bytes, l.charged, l.held_bytes, l.held_items
        ))
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
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

fn slicer(average_size: u64, size_variation: u64, delay: u64) -> Toxic {
    toxic(
        "s",
        ToxicKind::Slicer {
            average_size,
            size_variation,
            delay,
        },
        1.0,
    )
}

#[test]
fn slicer_serializes_slices_across_chunks() {
    // 16 chunks of 32 KiB arriving together, 10,000-byte slices 20 ms apart: every slice
    // leaves 20 ms after the one before it, whichever chunk it belongs to (Toxiproxy sleeps
    // `delay` after each slice). Timing each chunk's slices from its own arrival sent the
    // first slices of every chunk at once.
    let t0 = Instant::now();
    let mut l = link(&[(slicer(10_000, 0, 20_000), 1)], t0);
    let payload = pattern(16 * 32 * 1024);
    for (i, chunk) in payload.chunks(32 * 1024).enumerate() {
        l.on_chunk(
            Bytes::copy_from_slice(chunk),
            t0 + Duration::from_micros(i as u64),
        );
    }
    let out = drain(&mut l, t0 + Duration::from_secs(10));
    assert_eq!(joined(&out), payload);
    // 3 full slices and one of 2,768 bytes per chunk.
    assert_eq!(out.len(), 64);
    for (i, (at, _)) in out.iter().enumerate() {
        assert_eq!(*at - t0, Duration::from_millis(20 * i as u64), "slice {i}");
    }
}

#[test]
fn slicer_waits_for_a_late_chunk_and_keeps_pace_after_it() {
    let t0 = Instant::now();
    let mut l = link(&[(slicer(10, 0, 1_000), 1)], t0);
    l.on_chunk(data(20), t0);
    let first = drain(&mut l, t0 + Duration::from_secs(1));
    assert_eq!(first.len(), 2);
    // A chunk arriving long after the last slice starts at its arrival, not in the past.
    let late = t0 + Duration::from_secs(5);
    l.on_chunk(data(30), late);
    let out = drain(&mut l, late + Duration::from_secs(1));
    let times: Vec<Duration> = out.iter().map(|(at, _)| *at - late).collect();
    assert_eq!(
        times,
        [0, 1, 2].map(Duration::from_millis).to_vec(),
        "{times:?}"
    );
}

#[test]
fn slicer_keeps_one_queue_entry_per_chunk() {
    // One-byte slices of a 32 KiB read used to be 32,768 queue entries of ~56 bytes each.
    let t0 = Instant::now();
    let mut l = link(&[(slicer(1, 0, 10), 1)], t0);
    l.on_chunk_in(data(32 * 1024), 32 * 1024, t0);
    assert!(l.queued_items() <= 2, "{} entries", l.queued_items());
    assert!(
        l.accounted_memory() <= 32 * 1024 + 2 * ENTRY_COST,
        "{} bytes accounted",
        l.accounted_memory()
    );
    assert_eq!(l.queued_bytes(), 32 * 1024);
    let out = drain(&mut l, t0 + Duration::from_secs(10));
    assert_eq!(out.len(), 32 * 1024);
    assert_eq!(l.queued_bytes(), 0);
    assert_eq!(l.accounted_memory(), 0);
}

#[test]
fn the_queue_bound_counts_buffers_and_entries() {
    // A latency toxic holds every chunk for a second; the link reads while `accepts_more`.
    // Small reads in big buffers are charged their buffer; tiny reads their entry.
    let t0 = Instant::now();
    let lat = toxic(
        "l",
        ToxicKind::Latency {
            latency: 1000,
            jitter: 0,
        },
        1.0,
    );
    let mut l = link(&[(lat.clone(), 1)], t0);
    let mut reads = 0usize;
    while l.accepts_more() {
        l.on_chunk_in(data(5_000), 32 * 1024, t0);
        reads += 1;
    }
    assert!(
        l.accounted_memory() <= MAX_LINK_MEMORY + 32 * 1024 + ENTRY_COST,
        "{} bytes accounted",
        l.accounted_memory()
    );
    assert!(
        reads * 32 * 1024 <= MAX_LINK_MEMORY + 32 * 1024,
        "{reads} reads"
    );
    assert_eq!(l.queued_bytes(), reads * 5_000);

    let mut l = link(&[(lat, 1)], t0);
    while l.accepts_more() {
        l.on_chunk(data(1), t0);
    }
    assert_eq!(l.queued_items(), MAX_LINK_ITEMS);
    assert!(l.accounted_memory() <= MAX_LINK_ITEMS * (ENTRY_COST + 1));
    // Everything drains, and the accounting returns to zero.
    let out = drain(&mut l, t0 + Duration::from_secs(2));
    assert_eq!(out.len(), MAX_LINK_ITEMS);
    assert_eq!((l.queued_items(), l.accounted_memory()), (0, 0));
}

#[test]
fn many_small_chunks_under_a_slicer_stay_under_the_bound() {
    let t0 = Instant::now();
    let mut l = link(&[(slicer(1, 0, 1_000), 1)], t0);
    let mut fed = 0;
    for i in 0..100_000u64 {
        if !l.accepts_more() {
            break;
        }
        l.on_chunk(data(100), t0 + Duration::from_micros(i));
        fed += 100;
    }
    assert!(l.queued_items() <= MAX_LINK_ITEMS, "{}", l.queued_items());
    assert!(
        l.accounted_memory() <= MAX_LINK_MEMORY,
        "{}",
        l.accounted_memory()
    );
    assert_eq!(l.queued_bytes(), fed);
}

fn timeout(ms: u64, toxicity: f32) -> Toxic {
    toxic("t", ToxicKind::Timeout { timeout: ms }, toxicity)
}

#[test]
fn a_timeout_that_becomes_inactive_releases_what_it_held_in_order() {
    let t0 = Instant::now();
    let mut l = link(&[(timeout(1_000, 1.0), 1)], t0);
    let payload = pattern(100_000);
    let (held, rest) = payload.split_at(60_000);
    for (i, chunk) in held.chunks(7_000).enumerate() {
        l.on_chunk(
            Bytes::copy_from_slice(chunk),
            t0 + Duration::from_millis(i as u64),
        );
    }
    assert!(
        drain(&mut l, t0 + Duration::from_millis(500)).is_empty(),
        "held while active"
    );
    // An update that keeps it active keeps holding; one that re-rolls it inactive releases.
    let t1 = t0 + Duration::from_millis(100);
    assert_eq!(
        l.on_chain_change(&chain(&[(timeout(2_000, 1.0), 2)]), t1),
        ChangeOutcome::Continue
    );
    assert!(drain(&mut l, t1 + Duration::from_millis(500)).is_empty());
    let t2 = t0 + Duration::from_millis(200);
    assert_eq!(
        l.on_chain_change(&chain(&[(timeout(2_000, 0.0), 3)]), t2),
        ChangeOutcome::Continue
    );
    l.on_chunk(Bytes::copy_from_slice(rest), t2);
    check_accounting(&l).unwrap();
    let out = drain(&mut l, t2);
    assert_eq!(joined(&out), payload, "released in order, no gap");
    check_accounting(&l).unwrap();
    assert!(!l.expired(t0 + Duration::from_secs(60)));
    assert!(l.is_passthrough());
}

#[test]
fn a_timeout_holds_tiny_reads_in_few_entries_and_closes_if_it_had_to_drop() {
    let t0 = Instant::now();
    let mut l = link(&[(timeout(0, 1.0), 1)], t0);
    for _ in 0..10_000 {
        l.on_chunk(data(1), t0);
    }
    assert!(l.queued_items() <= 3, "{} entries", l.queued_items());
    assert_eq!(l.queued_bytes(), 10_000);
    check_accounting(&l).unwrap();

    // Past its hold it drops bytes (and keeps reading, as Toxiproxy does), so becoming
    // inactive would leave a gap: the link is closed instead.
    let mut l = link(&[(timeout(0, 1.0), 1)], t0);
    for _ in 0..(MAX_HELD_BYTES / 30_000 + 2) {
        assert!(l.accepts_more());
        l.on_chunk(data(30_000), t0);
    }
    assert!(l.queued_bytes() <= MAX_HELD_BYTES);
    check_accounting(&l).unwrap();
    assert_eq!(
        l.on_chain_change(&chain(&[(timeout(0, 0.0), 2)]), t0),
        ChangeOutcome::Close
    );
}

#[test]
fn removing_a_slicer_passes_what_it_held_through_the_toxics_after_it() {
    let t0 = Instant::now();
    let s = (slicer(10, 0, 1_000_000), 1);
    let lat = (
        toxic(
            "l",
            ToxicKind::Latency {
                latency: 50,
                jitter: 0,
            },
            1.0,
        ),
        2,
    );
    let mut l = link(&[s, lat.clone()], t0);
    let payload = pattern(100);
    l.on_chunk(Bytes::from(payload.clone()), t0);
    let first = drain(&mut l, t0 + Duration::from_millis(60));
    assert_eq!(first.len(), 1);
    let t1 = t0 + Duration::from_millis(100);
    l.on_chain_change(&chain(&[lat]), t1);
    let mut out = first;
    out.extend(drain(&mut l, t1 + Duration::from_secs(1)));
    assert_eq!(joined(&out), payload);
    assert_eq!(
        out.last().unwrap().0,
        t1 + Duration::from_millis(50),
        "the latency after the slicer still applies"
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
        // Pop at each item's own instant, as the link does: nothing is due before it.
        while let Some(at) = front_due(&l) {
            let at = at.max(last);
            last = at;
            if let Some(Item::Data(b)) = l.pop_due(at) { joined.extend_from_slice(&b); }
            if l.queued_items() < 64 {
                prop_assert!(check_accounting(&l).is_ok(), "{:?}", check_accounting(&l));
            }
        }
        prop_assert!(l.queue.is_empty(), "nothing left behind");
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
