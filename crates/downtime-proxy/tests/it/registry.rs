//! The registry on real sockets: changes that fail change nothing, and timers stay bounded.

use std::net::SocketAddr;
use std::time::Duration;

use downtime_model::{ProxyConfig, ProxyRequest, Toxic, ToxicPatch, ToxicRequest};
use downtime_proxy::Registry;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn proxy(v: Value) -> (ProxyConfig, Vec<Toxic>) {
    serde_json::from_value::<ProxyRequest>(v)
        .unwrap()
        .validate(None)
        .unwrap()
}

async fn echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn echoes(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return false;
    };
    if s.write_all(b"ping").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 4];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf)).await,
        Ok(Ok(_))
    ) && &buf == b"ping"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_populate_puts_back_every_proxy_it_replaced_and_removes_what_it_created() {
    let registry = Registry::new(Some(1));
    let up = echo().await;
    let other = echo().await;
    let old = registry
        .create(
            proxy(json!({"name": "db", "listen": "127.0.0.1:0", "upstream": up.to_string()})).0,
            vec![],
        )
        .await
        .unwrap();
    let old_listen = old.config.listen.clone();
    assert!(echoes(&old_listen).await);
    // A port in use for the second item: the populate fails after replacing `db`.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    let items = vec![
        proxy(json!({"name": "db", "listen": "127.0.0.1:0", "upstream": other.to_string()})),
        proxy(json!({"name": "new", "listen": "127.0.0.1:0", "upstream": up.to_string()})),
        proxy(json!({"name": "cache", "listen": busy_addr, "upstream": up.to_string()})),
    ];
    let err = registry.populate(items).await.unwrap_err();
    assert!(
        err.error.to_string().contains("address already in use"),
        "{}",
        err.error
    );
    let names: Vec<String> = registry
        .list()
        .await
        .into_iter()
        .map(|p| p.config.name)
        .collect();
    assert_eq!(names, ["db"], "only the original proxy remains");
    let db = registry.get("db").await.unwrap();
    assert_eq!(db.config.upstream, up.to_string());
    assert_eq!(db.config.listen, old_listen);
    assert!(
        echoes(&old_listen).await,
        "the replaced proxy runs again on its port"
    );

    // A bad listen for the existing name, and a bad toxic, change nothing either.
    let items = vec![proxy(
        json!({"name": "db", "listen": "127.0.0.1:99999x", "upstream": up.to_string()}),
    )];
    assert!(registry.populate(items).await.is_err());
    assert_eq!(
        registry.get("db").await.unwrap().config.upstream,
        up.to_string()
    );
    assert!(echoes(&old_listen).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_updates_keep_one_timer_per_toxic_and_the_last_ttl_wins() {
    let registry = Registry::new(Some(1));
    let up = echo().await;
    registry
        .create(
            proxy(json!({"name": "t", "listen": "127.0.0.1:0", "upstream": up.to_string()})).0,
            vec![],
        )
        .await
        .unwrap();
    let request: ToxicRequest = serde_json::from_value(
        json!({"name": "slow", "type": "latency", "attributes": {"latency": 1}, "ttl": 60_000}),
    )
    .unwrap();
    registry.add_toxic("t", request).await.unwrap();
    let tasks_before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    for _ in 0..1000 {
        let patch: ToxicPatch = serde_json::from_value(json!({"ttl": 60_000})).unwrap();
        registry.update_toxic("t", "slow", patch).await.unwrap();
    }
    let tasks_after = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    // Aborted timers end at their next poll; allow a small margin for those in flight.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let settled = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    assert!(
        settled <= tasks_before + 2,
        "before {tasks_before}, right after {tasks_after}, settled {settled}"
    );
    // The last update's short ttl wins.
    let patch: ToxicPatch = serde_json::from_value(json!({"ttl": 200})).unwrap();
    registry.update_toxic("t", "slow", patch).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(registry.toxics("t").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_proxy_at_its_connection_cap_stops_accepting_until_one_closes() {
    let registry = Registry::new(Some(1));
    let up = echo().await;
    let view = registry
        .create(
            proxy(json!({"name": "cap", "listen": "127.0.0.1:0", "upstream": up.to_string(), "max_connections": 2})).0,
            vec![],
        )
        .await
        .unwrap();
    let addr = view.config.listen.clone();
    let mut first = TcpStream::connect(&addr).await.unwrap();
    let second = TcpStream::connect(&addr).await.unwrap();
    first.write_all(b"1").await.unwrap();
    let mut one = [0u8; 1];
    first.read_exact(&mut one).await.unwrap();
    // The third connects (the backlog takes it) but is not served while two are open.
    let mut third = TcpStream::connect(&addr).await.unwrap();
    third.write_all(b"3").await.unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(500), third.read_exact(&mut one)).await;
    assert!(waited.is_err(), "served past the cap");
    drop(second);
    tokio::time::timeout(Duration::from_secs(5), third.read_exact(&mut one))
        .await
        .expect("served once a connection closed")
        .unwrap();
    assert_eq!(&one, b"3");
}

/// The word at index `i` of the test stream: position-dependent, so a lost, repeated or
/// reordered byte breaks every word after it.
fn word(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) ^ i
}

fn pipes_open() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_string_lossy().starts_with("pipe:"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gibibyte_passes_intact_while_toxics_come_and_go_a_hundred_times() {
    const WORDS: u64 = (1 << 30) / 8;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = Vec::with_capacity(1 << 16);
        let mut i = 0u64;
        while i < WORDS {
            buf.clear();
            while buf.len() < (1 << 16) && i < WORDS {
                buf.extend_from_slice(&word(i).to_le_bytes());
                i += 1;
            }
            s.write_all(&buf).await.unwrap();
        }
    });
    let registry = Registry::new(Some(1));
    let view = registry
        .create(
            proxy(json!({"name": "bulk", "listen": "127.0.0.1:0", "upstream": up.to_string()})).0,
            vec![],
        )
        .await
        .unwrap();
    let pipes_before = pipes_open();
    let mut client = TcpStream::connect(&view.config.listen).await.unwrap();
    let toggler = {
        let registry = registry.clone();
        tokio::spawn(async move {
            let mut max_pipes = 0;
            for n in 0..100u32 {
                max_pipes = max_pipes.max(pipes_open());
                let toxic = match n % 3 {
                    0 => {
                        json!({"name": "t", "type": "latency", "stream": "downstream", "attributes": {"latency": 1}})
                    }
                    1 => {
                        json!({"name": "t", "type": "bandwidth", "stream": "downstream", "attributes": {"rate": 200_000}})
                    }
                    _ => {
                        json!({"name": "t", "type": "slicer", "stream": "downstream", "attributes": {"average_size": 4096, "delay": 10}})
                    }
                };
                let request: ToxicRequest = serde_json::from_value(toxic).unwrap();
                registry.add_toxic("bulk", request).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
                registry.remove_toxic("bulk", "t").await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            max_pipes
        })
    };
    let mut buf = vec![0u8; 1 << 16];
    let mut carry: Vec<u8> = Vec::new();
    let mut i = 0u64;
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), client.read(&mut buf))
            .await
            .expect("the stream stalled")
            .unwrap();
        if n == 0 {
            break;
        }
        carry.extend_from_slice(&buf[..n]);
        let whole = carry.len() / 8 * 8;
        for chunk in carry[..whole].chunks_exact(8) {
            let got = u64::from_le_bytes(chunk.try_into().unwrap());
            assert_eq!(got, word(i), "byte {} is wrong", i * 8);
            i += 1;
        }
        carry.drain(..whole);
    }
    assert_eq!(i, WORDS, "bytes lost");
    assert!(carry.is_empty());
    let max_pipes = toggler.await.unwrap();
    assert!(
        max_pipes >= pipes_before + 2,
        "the toxic-free stretches never used splice ({pipes_before} → {max_pipes} pipes)"
    );
}

/// Issue 10: deleting (or re-addressing) a proxy waited for its accept loop, on the data
/// plane, while holding the registry lock, so every control call waited on the data plane.
/// Here the data plane is a runtime of its own that is made to hang for 3 s: a delete waits
/// for it, a listing meanwhile answers at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_reads_do_not_wait_for_a_stuck_data_plane() {
    let data_plane = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let handle = data_plane.handle().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let driver = std::thread::spawn(move || {
        data_plane.block_on(async {
            let _ = stopped.await;
        });
    });
    let registry = {
        let _on_data_plane = handle.enter();
        Registry::new(Some(1))
    };
    let up = echo().await;
    let (config, toxics) =
        proxy(json!({"name": "p", "listen": "127.0.0.1:0", "upstream": up.to_string()}));
    registry.create(config, toxics).await.unwrap();

    const HANG: Duration = Duration::from_secs(3);
    #[allow(
        clippy::disallowed_methods,
        reason = "blocking the data plane's only thread is the point: a stuck data plane"
    )]
    handle.spawn(async { std::thread::sleep(HANG) });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let deleting = tokio::spawn({
        let registry = registry.clone();
        async move { registry.delete("p").await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let listed = registry.list().await;
    let listing_took = started.elapsed();
    assert!(
        listed.is_empty(),
        "the proxy is gone from the listing at once"
    );
    assert!(
        listing_took < HANG / 3,
        "a listing waited {listing_took:?} for the stuck data plane"
    );
    deleting.await.unwrap().unwrap();
    assert!(
        started.elapsed() >= HANG / 2,
        "the delete answers once the listener is closed"
    );
    let _ = stop.send(());
    driver.join().unwrap();
}

/// A ttl runs on tokio's clock: on a paused clock a minute-long ttl is checked in no time,
/// right before and right after it runs out, and an update restarts it.
#[tokio::test(start_paused = true)]
async fn a_ttl_expires_exactly_when_it_runs_out_and_an_update_restarts_it() {
    let registry = Registry::new(Some(1));
    let up = echo().await;
    let (config, toxics) =
        proxy(json!({"name": "t", "listen": "127.0.0.1:0", "upstream": up.to_string()}));
    registry.create(config, toxics).await.unwrap();
    let names = || async {
        let toxics = registry.toxics("t").await.unwrap();
        toxics.into_iter().map(|t| t.name).collect::<Vec<_>>()
    };
    let request: ToxicRequest = serde_json::from_value(
        json!({"name": "brief", "type": "latency", "attributes": {"latency": 1}, "ttl": 60_000}),
    )
    .unwrap();
    registry.add_toxic("t", request).await.unwrap();

    tokio::time::sleep(Duration::from_millis(59_990)).await;
    assert_eq!(names().await, ["brief"], "10 ms before its ttl");
    // 30 s from now instead of 10 ms: the update counts from itself.
    let patch: ToxicPatch = serde_json::from_value(json!({"ttl": 30_000})).unwrap();
    registry.update_toxic("t", "brief", patch).await.unwrap();
    tokio::time::sleep(Duration::from_millis(29_990)).await;
    assert_eq!(names().await, ["brief"], "10 ms before the updated ttl");
    tokio::time::sleep(Duration::from_millis(20)).await;
    // The expiry task runs on the same (paused) runtime: let it take the lock.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(
        names().await.is_empty(),
        "gone once the updated ttl ran out"
    );
}
