//! Bytes through real proxies on loopback, one toxic at a time, against §6 of the compat doc.
//!
//! Timing bounds are loose on purpose (a 2-core machine compiling other crates runs these):
//! lower bounds are the configured delay itself (timers never fire early), upper bounds are
//! seconds. Every read is bounded, so a hang fails instead of stalling.

use std::io::ErrorKind;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// The API answers a toxic change well within this, whatever the data plane does.
const API_BOUND: Duration = Duration::from_secs(1);

/// Tokio rounds timer ticks to whole milliseconds, so a timer may fire up to ~1 ms before
/// its deadline; lower bounds allow for that and nothing more.
const TIMER_SLACK: Duration = Duration::from_millis(5);

/// Asserts `took` lies in `[low - TIMER_SLACK, high]`.
#[track_caller]
fn within(what: &str, took: Duration, low: Duration, high: Duration) {
    assert!(
        took + TIMER_SLACK >= low && took <= high,
        "{what}: took {took:?}, expected between {low:?} and {high:?}"
    );
}

// --- latency -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_delays_each_direction_and_adds_up() {
    let s = Server::start();
    let up = echo_upstream().await;
    let addr = s.proxy("p", up.addr).await;
    let mut c = connect(addr).await;
    let (_, fast) = round_trip(&mut c, b"warm", LONG).await;
    assert!(fast < ms(250), "no toxic yet: {fast:?}");

    s.toxic(
        "p",
        json!({"type": "latency", "attributes": {"latency": 300}}),
    )
    .await;
    let (back, took) = round_trip(&mut c, b"ping", LONG).await;
    assert_eq!(back, b"ping");
    within(
        "downstream latency on a live connection",
        took,
        ms(300),
        ms(2300),
    );

    s.toxic(
        "p",
        json!({"type": "latency", "stream": "upstream", "attributes": {"latency": 200}}),
    )
    .await;
    let (_, took) = round_trip(&mut c, b"pong", LONG).await;
    within("both directions", took, ms(500), ms(2500));

    // A new connection gets both, and a second latency toxic in one direction adds up.
    s.toxic(
        "p",
        json!({"type": "latency", "name": "more", "attributes": {"latency": 200}}),
    )
    .await;
    let mut c2 = connect(addr).await;
    let (_, took) = round_trip(&mut c2, b"x", LONG).await;
    within("three latency toxics", took, ms(700), ms(2700));

    s.remove_toxic("p", "latency_downstream").await;
    s.remove_toxic("p", "latency_upstream").await;
    s.remove_toxic("p", "more").await;
    let (_, took) = round_trip(&mut c, b"again", LONG).await;
    assert!(took < ms(250), "toxics removed: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_on_a_large_response_is_paid_once() {
    let s = Server::start();
    let payload = pattern(1 << 20, 7);
    let up = sending_upstream(payload.clone()).await;
    let addr = s
        .proxy_with_toxics(
            "big",
            up.addr,
            json!([{"type": "latency", "attributes": {"latency": 300}}]),
        )
        .await;
    let started = Instant::now();
    let mut c = connect(addr).await;
    let (data, end) = read_to_end(&mut c, LONG).await;
    let took = started.elapsed();
    assert_eq!(end, End::Eof);
    assert!(
        data == payload,
        "1 MiB corrupted ({} bytes received)",
        data.len()
    );
    // Pipelined: ~300 ms in total, not 300 ms per 32 KiB chunk (that would be > 9 s).
    within("1 MiB through latency 300", took, ms(300), ms(900));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updating_or_removing_latency_releases_the_chunk_in_flight() {
    let s = Server::start();
    let up = echo_upstream().await;
    let addr = s.proxy("p", up.addr).await;
    let mut c = connect(addr).await;
    round_trip(&mut c, b"warm", LONG).await;
    s.toxic(
        "p",
        json!({"type": "latency", "name": "lat", "attributes": {"latency": 5000}}),
    )
    .await;
    let started = Instant::now();
    c.write_all(b"held").await.unwrap();
    tokio::time::sleep(ms(200)).await;
    let r = s
        .patch(
            "/proxies/p/toxics/lat",
            r#"{"attributes": {"latency": 10}}"#,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(read_n(&mut c, 4, LONG).await, b"held");
    within(
        "update interrupts the wait",
        started.elapsed(),
        ms(200),
        ms(2500),
    );

    s.update_toxic("p", "lat", json!({"attributes": {"latency": 5000}}))
        .await;
    let started = Instant::now();
    c.write_all(b"held2").await.unwrap();
    tokio::time::sleep(ms(200)).await;
    s.remove_toxic("p", "lat").await;
    assert_eq!(read_n(&mut c, 5, LONG).await, b"held2");
    within("removal flushes", started.elapsed(), ms(200), ms(2500));
}

// --- bandwidth -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bandwidth_paces_the_stream() {
    let s = Server::start();
    let payload = pattern(50_000, 3);
    let up = sending_upstream(payload.clone()).await;
    let addr = s
        .proxy_with_toxics(
            "bw",
            up.addr,
            json!([{"type": "bandwidth", "attributes": {"rate": 100}}]),
        )
        .await;
    let started = Instant::now();
    let mut c = connect(addr).await;
    let (data, end) = read_to_end(&mut c, LONG).await;
    let took = started.elapsed();
    assert_eq!(end, End::Eof);
    assert!(data == payload, "corrupted ({} bytes)", data.len());
    // 50 KB at 100 KB/s: 0.5 s.
    within("50 KB at 100 KB/s", took, ms(400), ms(1500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bandwidth_zero_stalls_until_removed() {
    let s = Server::start();
    let up = echo_upstream().await;
    let addr = s.proxy("p", up.addr).await;
    s.toxic("p", json!({"type": "bandwidth", "attributes": {"rate": 0}}))
        .await;
    let mut c = connect(addr).await;
    c.write_all(b"hello").await.unwrap();
    assert_silent(&mut c, ms(700)).await;
    c.write_all(b" world").await.unwrap();
    assert_silent(&mut c, ms(300)).await;
    let r = s.remove_toxic("p", "bandwidth_downstream").await;
    assert!(r.elapsed < API_BOUND, "removal took {:?}", r.elapsed);
    assert_eq!(read_n(&mut c, 11, LONG).await, b"hello world");
    let (_, took) = round_trip(&mut c, b"after", LONG).await;
    assert!(took < ms(500), "{took:?}");
}

// --- slow_close ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_close_delays_only_the_close() {
    let s = Server::start();
    let up = sending_upstream(b"bye".to_vec()).await;
    let addr = s
        .proxy_with_toxics(
            "sc",
            up.addr,
            json!([{"type": "slow_close", "attributes": {"delay": 600}}]),
        )
        .await;
    let started = Instant::now();
    let mut c = connect(addr).await;
    assert_eq!(read_n(&mut c, 3, LONG).await, b"bye");
    let data_at = started.elapsed();
    assert!(data_at < ms(450), "data itself is not delayed: {data_at:?}");
    assert_eq!(wait_closed(&mut c, LONG).await, End::Eof);
    within("slow close", started.elapsed(), ms(600), ms(3000));

    // Without the toxic the close is prompt.
    s.remove_toxic("sc", "slow_close_downstream").await;
    let started = Instant::now();
    let mut c = connect(addr).await;
    let (data, end) = read_to_end(&mut c, LONG).await;
    assert_eq!((data.as_slice(), end), (&b"bye"[..], End::Eof));
    assert!(started.elapsed() < ms(450), "{:?}", started.elapsed());
}

// --- timeout -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_closes_after_inactivity() {
    let s = Server::start();
    let up = echo_upstream().await;
    let addr = s
        .proxy_with_toxics(
            "t",
            up.addr,
            json!([{"type": "timeout", "attributes": {"timeout": 300}}]),
        )
        .await;
    let started = Instant::now();
    let mut c = connect(addr).await;
    let end = wait_closed(&mut c, LONG).await;
    assert_ne!(end, End::TimedOut, "connection never closed");
    within("idle timeout", started.elapsed(), ms(300), ms(3000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_timer_restarts_with_each_chunk() {
    let s = Server::start();
    let up = echo_upstream().await;
    let addr = s.proxy("t", up.addr).await;
    let mut c = connect(addr).await;
    round_trip(&mut c, b"warm", LONG).await;
    s.toxic(
        "t",
        json!({"type": "timeout", "attributes": {"timeout": 700}}),
    )
    .await;
    let started = Instant::now();
    // 1.4 s of traffic, a chunk every 150 ms: each echoed chunk (swallowed) restarts the timer.
    let mut last_send = Instant::now();
    while started.elapsed() < ms(1400) {
        c.write_all(b"tick").await.unwrap();
        last_send = Instant::now();
        let (data, end) = read_to_end(&mut c, ms(150)).await;
        assert_eq!(
            (data.len(), end),
            (0, End::TimedOut),
            "data is swallowed and the connection stays open while chunks arrive ({:?} in)",
            started.elapsed()
        );
    }
    let end = wait_closed(&mut c, LONG).await;
    assert_ne!(end, End::TimedOut);
    within(
        "close after the last chunk",
        last_send.elapsed(),
        ms(700),
        ms(3700),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_zero_swallows_forever_and_removal_closes() {
    let s = Server::start();
    let up = echo_upstream().await;
    let addr = s.proxy("t", up.addr).await;
    s.toxic(
        "t",
        json!({"type": "timeout", "attributes": {"timeout": 0}}),
    )
    .await;
    let mut c = connect(addr).await;
    c.write_all(b"into the void").await.unwrap();
    assert_silent(&mut c, ms(800)).await;
    c.write_all(b"more").await.unwrap();
    assert_silent(&mut c, ms(300)).await;
    let r = s.remove_toxic("t", "timeout_downstream").await;
    assert!(r.elapsed < API_BOUND, "removal took {:?}", r.elapsed);
    let (data, end) = read_to_end(&mut c, LONG).await;
    assert!(
        data.is_empty(),
        "swallowed data must not reappear: {data:?}"
    );
    assert_ne!(
        end,
        End::TimedOut,
        "removing a timeout toxic closes the connection"
    );
    // New connections are unaffected.
    let mut c = connect(addr).await;
    assert_eq!(round_trip(&mut c, b"fine", LONG).await.0, b"fine");
}

// --- reset_peer ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_peer_resets_after_the_first_chunk() {
    let s = Server::start();
    let up = echo_upstream().await;
    let addr = s
        .proxy_with_toxics(
            "r",
            up.addr,
            json!([{"type": "reset_peer", "stream": "upstream", "attributes": {"timeout": 300}}]),
        )
        .await;
    let mut c = connect(addr).await;
    // Nothing happens before the first chunk.
    assert_silent(&mut c, ms(500)).await;
    let started = Instant::now();
    c.write_all(b"x").await.unwrap();
    let (data, end) = read_to_end(&mut c, LONG).await;
    assert!(data.is_empty(), "the first chunk is dropped: {data:?}");
    assert_eq!(end, End::Error(ErrorKind::ConnectionReset));
    within("reset after timeout", started.elapsed(), ms(300), ms(3000));

    // timeout 0 on the downstream side: reset as soon as the echo comes back.
    s.toxic("r", json!({"type": "reset_peer", "name": "now"}))
        .await;
    s.remove_toxic("r", "reset_peer_upstream").await;
    let mut c = connect(addr).await;
    c.write_all(b"y").await.unwrap();
    let (data, end) = read_to_end(&mut c, LONG).await;
    assert!(data.is_empty(), "{data:?}");
    assert_eq!(end, End::Error(ErrorKind::ConnectionReset));
}

/// Waits until the proxy has dialled `n` upstream connections, then a little more so that
/// the connection task is past its set-up.
async fn wait_accepted(up: &Upstream, n: usize) {
    let ok = eventually(LONG, || async { up.accepted.load(Ordering::Relaxed) >= n }).await;
    assert!(
        ok,
        "upstream saw {} connections",
        up.accepted.load(Ordering::Relaxed)
    );
    tokio::time::sleep(ms(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_peer_present_at_connect_turns_every_close_into_a_reset() {
    let s = Server::start();
    let up = echo_upstream().await;
    let addr = s.proxy("r", up.addr).await;
    s.toxic(
        "r",
        json!({"type": "reset_peer", "stream": "upstream", "attributes": {"timeout": 60000}}),
    )
    .await;
    let mut c = connect(addr).await;
    wait_accepted(&up, 1).await;
    // Closed by disabling the proxy, not by the toxic (no chunk was sent): still a reset.
    s.set_enabled("r", false).await;
    assert_eq!(
        wait_closed(&mut c, LONG).await,
        End::Error(ErrorKind::ConnectionReset)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_peer_with_toxicity_zero_changes_nothing() {
    let s = Server::start();
    let up = echo_upstream().await;
    let addr = s.proxy("r", up.addr).await;
    s.toxic(
        "r",
        json!({"type": "reset_peer", "stream": "upstream", "toxicity": 0}),
    )
    .await;
    s.toxic(
        "r",
        json!({"type": "reset_peer", "name": "down", "toxicity": 0}),
    )
    .await;
    let mut c = connect(addr).await;
    for _ in 0..3 {
        assert_eq!(round_trip(&mut c, b"safe", LONG).await.0, b"safe");
    }
    // No SO_LINGER=0 either (Toxiproxy issue #603): a proxy-side close is a plain FIN.
    s.set_enabled("r", false).await;
    assert_eq!(wait_closed(&mut c, LONG).await, End::Eof);
}

/// Toxiproxy closes such a connection with a FIN (the linger is only set for connections
/// created while reset_peer exists); downtime resets it, a deliberate difference listed in
/// `docs/compatibility.md`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_peer_added_to_an_open_connection_resets_it() {
    let s = Server::start();
    let up = echo_upstream().await;
    let addr = s.proxy("r", up.addr).await;
    let mut c = connect(addr).await;
    round_trip(&mut c, b"open", LONG).await;
    s.toxic(
        "r",
        json!({"type": "reset_peer", "stream": "upstream", "attributes": {"timeout": 100}}),
    )
    .await;
    let started = Instant::now();
    c.write_all(b"x").await.unwrap();
    let (data, end) = read_to_end(&mut c, LONG).await;
    assert!(data.is_empty(), "{data:?}");
    assert_eq!(end, End::Error(ErrorKind::ConnectionReset));
    within("reset after timeout", started.elapsed(), ms(100), ms(2100));
}

// --- slicer, limit_data, noop ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slicer_keeps_data_intact() {
    let s = Server::start();
    let up = echo_upstream().await;
    let addr = s
        .proxy_with_toxics(
            "sl",
            up.addr,
            json!([{"type": "slicer",
                    "attributes": {"average_size": 10, "size_variation": 5, "delay": 100}}]),
        )
        .await;
    let data = pattern(20_000, 11);
    let mut c = connect(addr).await;
    c.write_all(&data).await.unwrap();
    let mut got = Vec::new();
    let mut reads = 0;
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + LONG;
    while got.len() < data.len() {
        let n = tokio::time::timeout_at(deadline, c.read(&mut buf))
            .await
            .expect("slicer output timed out")
            .unwrap();
        assert_ne!(n, 0, "closed after {} bytes", got.len());
        reads += 1;
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got == data, "sliced data corrupted");
    // 2000 slices 100 µs apart trickle in over ~200 ms: many reads, not one.
    assert!(reads >= 5, "data was not sliced ({reads} reads)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slicer_paces_a_continuous_stream() {
    // 500 KB at 10,000-byte slices every 20 ms: 50 slices, ~1 s. Each read chunk's slices
    // used to be timed from its own arrival, so the stream went out in ~60 ms.
    let s = Server::start();
    let payload = pattern(500_000, 31);
    let up = sending_upstream(payload.clone()).await;
    let addr = s
        .proxy_with_toxics(
            "paced",
            up.addr,
            json!([{"type": "slicer",
                    "attributes": {"average_size": 10_000, "size_variation": 0, "delay": 20_000}}]),
        )
        .await;
    let started = Instant::now();
    let mut c = connect(addr).await;
    let (data, end) = read_to_end(&mut c, Duration::from_secs(20)).await;
    let took = started.elapsed();
    assert_eq!(end, End::Eof, "after {} bytes", data.len());
    assert!(
        data == payload,
        "sliced stream corrupted ({} bytes)",
        data.len()
    );
    within("500 KB through the slicer", took, ms(800), ms(5000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_toxic_that_becomes_inactive_releases_the_bytes_it_held() {
    let s = Server::start();
    let up = echo_upstream().await;
    let addr = s.proxy("held", up.addr).await;
    let mut c = connect(addr).await;
    round_trip(&mut c, b"warm", LONG).await;
    s.toxic(
        "held",
        json!({"type": "timeout", "name": "t", "attributes": {"timeout": 0}}),
    )
    .await;
    // 300 KB echoed back into the timeout toxic, which holds it.
    let payload = pattern(300_000, 41);
    c.write_all(&payload).await.unwrap();
    assert_silent(&mut c, ms(400)).await;
    // An update whose re-roll makes it inactive gives every byte back, in order.
    s.update_toxic("held", "t", json!({"toxicity": 0})).await;
    let back = read_n(&mut c, payload.len(), LONG).await;
    assert!(back == payload, "held bytes lost or reordered");
    // And the connection goes on.
    assert_eq!(round_trip(&mut c, b"after", LONG).await.0, b"after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misspelt_attributes_and_missing_values_are_refused() {
    let s = Server::start();
    let up = echo_upstream().await;
    s.proxy("typo", up.addr).await;
    s.post(
        "/proxies/typo/toxics",
        r#"{"type": "latency", "attributes": {"latncy": 100}}"#,
    )
    .await
    .assert_error(
        400,
        "bad request body: attributes.latncy: unknown attribute \"latncy\"; valid attributes of latency: latency, jitter",
    );
    assert_eq!(s.get("/proxies/typo/toxics").await.body, "[]");
    // The stock clients' shapes still pass: every attribute, or none.
    s.toxic(
        "typo",
        json!({"type": "slicer", "name": "all", "attributes": {"average_size": 1, "size_variation": 0, "delay": 0}}),
    )
    .await;
    s.toxic(
        "typo",
        json!({"type": "noop", "name": "none", "attributes": {}}),
    )
    .await;
    let r = s
        .post(
            "/proxies/typo/toxics/all",
            r#"{"attributes": {"avg_size": 5}}"#,
        )
        .await;
    r.assert_error_like(
        400,
        "bad request body: attributes.avg_size",
        &["average_size"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_data_passes_exactly_n_bytes_then_closes() {
    let s = Server::start();
    let payload = pattern(1000, 5);
    let up = sending_upstream(payload.clone()).await;
    let addr = s
        .proxy_with_toxics(
            "lim",
            up.addr,
            json!([{"type": "limit_data", "attributes": {"bytes": 100}}]),
        )
        .await;
    let mut c = connect(addr).await;
    let (data, end) = read_to_end(&mut c, LONG).await;
    assert_eq!(data, payload[..100]);
    assert_eq!(end, End::Eof);

    // bytes 0 closes on the first chunk.
    s.update_toxic(
        "lim",
        "limit_data_downstream",
        json!({"attributes": {"bytes": 0}}),
    )
    .await;
    let mut c = connect(addr).await;
    let (data, end) = read_to_end(&mut c, LONG).await;
    assert_eq!((data.len(), end), (0, End::Eof));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_data_counts_across_chunks() {
    let s = Server::start();
    let up = echo_upstream().await;
    let addr = s
        .proxy_with_toxics(
            "lim",
            up.addr,
            json!([{"type": "limit_data", "attributes": {"bytes": 100}}]),
        )
        .await;
    let data = pattern(120, 9);
    let mut c = connect(addr).await;
    assert_eq!(round_trip(&mut c, &data[..60], LONG).await.0, data[..60]);
    c.write_all(&data[60..]).await.unwrap();
    let (rest, end) = read_to_end(&mut c, LONG).await;
    assert_eq!(rest, data[60..100], "only 40 more bytes");
    assert_ne!(end, End::TimedOut);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_data_upstream_reaches_the_server_exactly() {
    let s = Server::start();
    let (up, mut records) = recording_upstream(b"").await;
    let addr = s
        .proxy_with_toxics(
            "lim",
            up.addr,
            json!([{"type": "limit_data", "stream": "upstream", "attributes": {"bytes": 100}}]),
        )
        .await;
    let data = pattern(1000, 13);
    let mut c = connect(addr).await;
    c.write_all(&data).await.unwrap();
    let rec = tokio::time::timeout(LONG, records.recv())
        .await
        .expect("upstream connection never ended")
        .unwrap();
    assert_eq!(rec.bytes, data[..100]);
    assert_ne!(wait_closed(&mut c, LONG).await, End::TimedOut);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noop_passes_everything() {
    let s = Server::start();
    let up = echo_upstream().await;
    let addr = s
        .proxy_with_toxics(
            "n",
            up.addr,
            json!([{"type": "noop"}, {"type": "noop", "stream": "upstream"}]),
        )
        .await;
    let data = pattern(200_000, 17);
    let mut c = connect(addr).await;
    let (back, took) = round_trip(&mut c, &data, LONG).await;
    assert!(back == data, "noop corrupted data");
    assert!(took < ms(2000), "{took:?}");
}

// --- toxicity and direction ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toxicity_zero_never_applies_and_one_always_does() {
    let s = Server::start();
    let up = echo_upstream().await;
    let addr = s
        .proxy_with_toxics(
            "tox",
            up.addr,
            json!([{"type": "latency", "name": "lat", "toxicity": 0,
                    "attributes": {"latency": 400}}]),
        )
        .await;
    let mut live = connect(addr).await;
    for i in 0..3 {
        let mut c = connect(addr).await;
        let (_, took) = round_trip(&mut c, b"zero", LONG).await;
        assert!(
            took < ms(300),
            "toxicity 0 applied on connection {i}: {took:?}"
        );
    }
    let (_, took) = round_trip(&mut live, b"zero", LONG).await;
    assert!(took < ms(300), "{took:?}");

    // Raising toxicity re-rolls on live links and applies to new ones.
    s.update_toxic("tox", "lat", json!({"toxicity": 1})).await;
    let (_, took) = round_trip(&mut live, b"one", LONG).await;
    within("toxicity 1 on a live link", took, ms(400), ms(2400));
    for i in 0..3 {
        let mut c = connect(addr).await;
        let (_, took) = round_trip(&mut c, b"one", LONG).await;
        within(
            &format!("toxicity 1 on connection {i}"),
            took,
            ms(400),
            ms(2400),
        );
    }
    // Toxicity above 1 means always as well; negative means never.
    s.update_toxic("tox", "lat", json!({"toxicity": 1.5})).await;
    let mut c = connect(addr).await;
    let (_, took) = round_trip(&mut c, b"x", LONG).await;
    within("toxicity 1.5", took, ms(400), ms(2400));
    s.update_toxic("tox", "lat", json!({"toxicity": -1})).await;
    let mut c = connect(addr).await;
    let (_, took) = round_trip(&mut c, b"x", LONG).await;
    assert!(took < ms(300), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_and_downstream_toxics_act_on_their_own_direction() {
    let s = Server::start();
    let (up, mut records) = recording_upstream(b"hello").await;

    // Upstream latency: the greeting comes at once, the client's bytes reach the server late.
    let addr = s
        .proxy_with_toxics(
            "up",
            up.addr,
            json!([{"type": "latency", "stream": "upstream", "attributes": {"latency": 400}}]),
        )
        .await;
    let started = Instant::now();
    let mut c = connect(addr).await;
    assert_eq!(read_n(&mut c, 5, LONG).await, b"hello");
    assert!(
        started.elapsed() < ms(350),
        "greeting delayed: {:?}",
        started.elapsed()
    );
    let sent = Instant::now();
    c.write_all(b"ping").await.unwrap();
    tokio::time::sleep(ms(600)).await;
    drop(c);
    let rec = tokio::time::timeout(LONG, records.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.bytes, b"ping");
    let arrived = rec.first_byte.unwrap().duration_since(sent);
    within("upstream latency", arrived, ms(400), ms(2400));

    // Downstream latency: the client's bytes arrive at once, the greeting late.
    let addr = s
        .proxy_with_toxics(
            "down",
            up.addr,
            json!([{"type": "latency", "attributes": {"latency": 400}}]),
        )
        .await;
    let started = Instant::now();
    let mut c = connect(addr).await;
    let sent = Instant::now();
    c.write_all(b"ping").await.unwrap();
    assert_eq!(read_n(&mut c, 5, LONG).await, b"hello");
    within("downstream latency", started.elapsed(), ms(400), ms(2400));
    drop(c);
    let rec = tokio::time::timeout(LONG, records.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.bytes, b"ping");
    let arrived = rec.first_byte.unwrap().duration_since(sent);
    assert!(
        arrived < ms(350),
        "client bytes delayed by a downstream toxic: {arrived:?}"
    );
}

// --- live changes ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toggling_toxics_on_a_live_stream_loses_and_reorders_nothing() {
    let s = Server::start();
    let up = echo_upstream().await;
    let addr = s.proxy("live", up.addr).await;
    const TOTAL: usize = 4 << 20;
    let data = Arc::new(pattern(TOTAL, 23));
    let c = connect(addr).await;
    let (mut rd, mut wr) = c.into_split();
    let writing = Arc::new(AtomicBool::new(true));

    let writer = {
        let data = data.clone();
        let writing = writing.clone();
        tokio::spawn(async move {
            for piece in data.chunks(8 * 1024) {
                wr.write_all(piece).await.unwrap();
                tokio::time::sleep(ms(1)).await;
            }
            writing.store(false, Ordering::Relaxed);
            wr
        })
    };
    let reader = tokio::spawn(async move {
        let mut got = Vec::with_capacity(TOTAL);
        let mut buf = vec![0u8; 64 * 1024];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        while got.len() < TOTAL {
            match tokio::time::timeout_at(deadline, rd.read(&mut buf)).await {
                Err(_) => break,
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            }
        }
        got
    });

    let toxics = [
        json!({"type": "latency", "name": "lat", "attributes": {"latency": 20, "jitter": 15}}),
        json!({"type": "latency", "name": "lat_up", "stream": "upstream",
               "attributes": {"latency": 10, "jitter": 10}}),
        json!({"type": "slicer", "name": "sl",
               "attributes": {"average_size": 2000, "size_variation": 1000}}),
        json!({"type": "bandwidth", "name": "bw", "attributes": {"rate": 20000}}),
    ];
    let mut rounds = 0;
    let started = Instant::now();
    while writing.load(Ordering::Relaxed)
        && rounds < 200
        && started.elapsed() < Duration::from_secs(60)
    {
        let t = &toxics[rounds % toxics.len()];
        let name = t["name"].as_str().unwrap();
        s.toxic("live", t.clone()).await;
        tokio::time::sleep(ms(25)).await;
        if name.starts_with("lat") {
            s.update_toxic(
                "live",
                name,
                json!({"attributes": {"latency": 5 + rounds % 30}}),
            )
            .await;
            tokio::time::sleep(ms(15)).await;
        }
        s.remove_toxic("live", name).await;
        tokio::time::sleep(ms(10)).await;
        rounds += 1;
    }
    let wr = writer.await.unwrap();
    let got = reader.await.unwrap();
    drop(wr);
    assert!(
        rounds >= 4,
        "the stream ended before the toxics were toggled ({rounds} rounds)"
    );
    assert_eq!(
        got.len(),
        TOTAL,
        "bytes lost or stream cut after {rounds} toggles"
    );
    if let Some(i) = got.iter().zip(data.iter()).position(|(a, b)| a != b) {
        panic!("stream differs from byte {i} on, after {rounds} toggles");
    }
    assert_eq!(s.get("/proxies/live/toxics").await.body, "[]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_a_proxy_closes_live_connections_and_refuses_new_ones() {
    let s = Server::start();
    let up = echo_upstream().await;
    let addr = s.proxy("p", up.addr).await;
    let mut a = connect(addr).await;
    let mut b = connect(addr).await;
    round_trip(&mut a, b"a", LONG).await;
    round_trip(&mut b, b"b", LONG).await;
    s.set_enabled("p", false).await;
    assert_ne!(wait_closed(&mut a, LONG).await, End::TimedOut);
    assert_ne!(wait_closed(&mut b, LONG).await, End::TimedOut);
    let refused = TcpStream::connect(addr)
        .await
        .map(|_| ())
        .map_err(|e| e.kind());
    assert_eq!(refused, Err(ErrorKind::ConnectionRefused));
    s.set_enabled("p", true).await;
    let mut c = connect(addr).await;
    assert_eq!(round_trip(&mut c, b"back", LONG).await.0, b"back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_failure_closes_the_client() {
    let s = Server::start();
    let nowhere = closed_port().await;
    let addr = s.proxy("dead", nowhere).await;
    let mut c = connect(addr).await;
    let (data, end) = read_to_end(&mut c, LONG).await;
    assert!(data.is_empty());
    assert_ne!(
        end,
        End::TimedOut,
        "client left hanging after a failed dial"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_flushes_held_data_and_closes_timeout_connections() {
    let s = Server::start();
    let up = echo_upstream().await;
    let stalled = s
        .proxy_with_toxics("stalled", up.addr, json!([{"type": "bandwidth"}]))
        .await;
    let swallowed = s
        .proxy_with_toxics("swallowed", up.addr, json!([{"type": "timeout"}]))
        .await;
    let mut a = connect(stalled).await;
    let mut b = connect(swallowed).await;
    a.write_all(b"held").await.unwrap();
    b.write_all(b"gone").await.unwrap();
    assert_silent(&mut a, ms(400)).await;
    assert_silent(&mut b, ms(100)).await;
    let r = s.post("/reset", "").await;
    assert_eq!(r.status, 204);
    assert!(r.elapsed < API_BOUND, "reset took {:?}", r.elapsed);
    assert_eq!(read_n(&mut a, 4, LONG).await, b"held");
    let (data, end) = read_to_end(&mut b, LONG).await;
    assert!(data.is_empty());
    assert_ne!(end, End::TimedOut);
}

// --- seed ------------------------------------------------------------------------------

/// Which of `n` sequential connections got a toxicity-0.5 latency toxic, on a fresh server.
async fn active_pattern(seed: u64, n: usize) -> Vec<bool> {
    let s = Server::builder().seed(seed).start();
    let up = echo_upstream().await;
    let addr = s
        .proxy_with_toxics(
            "seeded",
            up.addr,
            json!([{"type": "latency", "toxicity": 0.5, "attributes": {"latency": 250}}]),
        )
        .await;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = connect(addr).await;
        let (_, took) = round_trip(&mut c, b"?", LONG).await;
        out.push(took >= ms(200));
        drop(c);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_seed_gives_the_same_toxics_to_the_same_connections() {
    const N: usize = 16;
    let first = active_pattern(42, N).await;
    let second = active_pattern(42, N).await;
    assert_eq!(first, second, "same seed, different toxicity rolls");
    let other = active_pattern(7, N).await;
    assert_ne!(first, other, "the seed does not drive the rolls");
    let active = first.iter().filter(|a| **a).count();
    assert!(
        (1..N).contains(&active),
        "toxicity 0.5 should hit some but not all of {N} connections: {first:?}"
    );
}
