//! Compatibility: the crates.io Toxiproxy client `toxiproxy_rust` 0.1.6 driving `downtime serve`.
//!
//! The client takes the API address in `Client::new(addr)`, so every test starts its own
//! server on a free 127.0.0.1 port (`Server`, stopped on drop: only the child we spawned).
//! The library is blocking (reqwest 0.11 blocking), so these tests use plain threads and
//! `std::net` sockets: no async runtime.
//!
//! Library surface exercised: `Client::{populate, reset, all, is_running, version,
//! find_proxy, find_and_reset_proxy}`, `Proxy::{disable, enable, delete, toxics,
//! with_latency, with_bandwidth, with_slow_close, with_timeout, with_slicer,
//! with_limit_data, with_down, apply, delete_all_toxics}`. The library has no calls for
//! `reset_peer`/`noop` toxics, toxic updates or single-proxy creation.
//!
//! Timing assertions are loose on purpose (a clear fraction of the configured delay as the
//! lower bound, seconds as the upper bound).

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::free_port;
use toxiproxy_rust::client::Client;
use toxiproxy_rust::proxy::{Proxy, ProxyPack};
use toxiproxy_rust::toxic::ToxicPack;

const LONG: Duration = Duration::from_secs(10);

use crate::support;

// --- the server under test ------------------------------------------------------

/// A `downtime serve` child process on a free port, killed (by its own pid) on drop.
struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Server {
    fn start() -> Server {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let log = std::env::temp_dir().join(format!(
            "downtime-rust-{}-{}.log",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        let mut command = Command::new(env!("CARGO_BIN_EXE_downtime"));
        command.stdin(Stdio::null());
        let (child, port) =
            support::spawn_serve(command, &[], &log).unwrap_or_else(|e| panic!("{e}"));
        Server { child, port, log }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn client(&self) -> Client {
        Client::new(self.addr().as_str())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Minimal HTTP/1.0 request over std; returns (status, body).
fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::new(ErrorKind::InvalidData, "no status line"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

// --- upstream servers -------------------------------------------------------------

/// A TCP server on 127.0.0.1:0 running `handle` per connection; stops on drop.
struct Upstream {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Upstream {
    fn start(handle: fn(TcpStream)) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        conn.set_nonblocking(false).unwrap();
                        conn.set_read_timeout(Some(LONG)).unwrap();
                        thread::spawn(move || handle(conn));
                    }
                    Err(_) => crate::support::pause(Duration::from_millis(10)),
                }
            }
        });
        Upstream { port, stop }
    }

    fn echo() -> Upstream {
        Upstream::start(|mut conn| {
            let mut buf = [0u8; 65536];
            loop {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if conn.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        })
    }

    fn greeter() -> Upstream {
        Upstream::start(|mut conn| {
            let _ = conn.write_all(GREETING);
            let _ = conn.shutdown(Shutdown::Both);
        })
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

const GREETING: &[u8] = b"hello from upstream\n";

// --- client-side socket helpers ------------------------------------------------------

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(LONG)).unwrap();
    s.set_write_timeout(Some(LONG)).unwrap();
    s
}

fn assert_refused(port: u16) {
    match TcpStream::connect(("127.0.0.1", port)) {
        Ok(_) => panic!("connection to {port} unexpectedly succeeded"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}"),
    }
}

fn read_exactly(s: &mut TcpStream, n: usize, timeout: Duration) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out after {got} of {n} bytes");
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf[got..]) {
            Ok(0) => panic!("closed after {got} of {n} bytes"),
            Ok(k) => got += k,
            Err(e) => panic!("read failed after {got} of {n} bytes: {e}"),
        }
    }
    buf
}

/// Echo round trip through a proxy; returns the elapsed time.
fn round_trip(s: &mut TcpStream, payload: &[u8]) -> Duration {
    let start = Instant::now();
    s.write_all(payload).unwrap();
    let got = read_exactly(s, payload.len(), LONG);
    assert_eq!(got, payload);
    start.elapsed()
}

fn round_trip_new(port: u16) -> Duration {
    round_trip(&mut connect(port), b"ping")
}

#[derive(Debug, PartialEq)]
enum End {
    Eof,
    Reset,
    Timeout,
}

/// Reads until the connection ends or `timeout` passes.
fn read_until_closed(s: &mut TcpStream, timeout: Duration) -> (Vec<u8>, End, Duration) {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut data = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (data, End::Timeout, start.elapsed());
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (data, End::Eof, start.elapsed()),
            Ok(n) => data.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (data, End::Timeout, start.elapsed());
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                return (data, End::Reset, start.elapsed());
            }
            Err(e) => panic!("unexpected read error: {e}"),
        }
    }
}

fn port_of(listen: &str) -> u16 {
    listen.rsplit(':').next().unwrap().parse().unwrap()
}

fn pack(name: &str, listen: &str, upstream: &str) -> ProxyPack {
    ProxyPack::new(name.into(), listen.into(), upstream.into())
}

/// Creates one proxy through `populate` (the library's only way to create proxies).
fn make_proxy(client: &Client, name: &str, upstream: &str) -> (Proxy, u16) {
    let mut proxies = client
        .populate(vec![pack(name, "127.0.0.1:0", upstream)])
        .unwrap();
    assert_eq!(proxies.len(), 1);
    let proxy = proxies.remove(0);
    let port = port_of(&proxy.proxy_pack.listen);
    (proxy, port)
}

fn toxic_map(proxy: &Proxy) -> HashMap<String, ToxicPack> {
    proxy
        .toxics()
        .unwrap()
        .into_iter()
        .map(|t| (t.name.clone(), t))
        .collect()
}

fn attrs(pairs: &[(&str, u32)]) -> HashMap<String, u32> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

// --- API --------------------------------------------------------------------------

#[test]
fn version_and_is_running() {
    let server = Server::start();
    let client = server.client();
    assert!(client.is_running());
    assert_eq!(client.version().unwrap(), "{\"version\": \"2.12.0\"}\n");
    assert!(!Client::new(format!("127.0.0.1:{}", free_port()).as_str()).is_running());
}

#[test]
fn populate_creates_proxies_with_bound_listen() {
    let server = Server::start();
    let client = server.client();
    let echo = Upstream::echo();
    let fixed = free_port();
    let proxies = client
        .populate(vec![
            pack("rs_pop_any", "127.0.0.1:0", &echo.addr()),
            pack("rs_pop_fixed", &format!("127.0.0.1:{fixed}"), &echo.addr()),
        ])
        .unwrap();
    let names: Vec<&str> = proxies.iter().map(|p| p.proxy_pack.name.as_str()).collect();
    assert_eq!(names, ["rs_pop_any", "rs_pop_fixed"], "input order");
    let any = &proxies[0].proxy_pack;
    assert!(any.listen.starts_with("127.0.0.1:"), "{}", any.listen);
    assert_ne!(
        port_of(&any.listen),
        0,
        "listen is rewritten to the bound port"
    );
    assert_eq!(any.upstream, echo.addr());
    assert!(any.enabled);
    assert!(any.toxics.is_empty());
    assert_eq!(proxies[1].proxy_pack.listen, format!("127.0.0.1:{fixed}"));
    assert!(round_trip_new(port_of(&any.listen)) < Duration::from_secs(5));
    assert!(round_trip_new(fixed) < Duration::from_secs(5));
}

#[test]
fn populate_is_idempotent_and_keeps_toxics() {
    let server = Server::start();
    let client = server.client();
    let echo = Upstream::echo();
    let port = free_port();
    let spec = || vec![pack("rs_idem", &format!("127.0.0.1:{port}"), &echo.addr())];
    let first = client.populate(spec()).unwrap();
    first[0].with_latency("downstream".into(), 1, 0, 1.0);
    let mut conn = connect(port);
    round_trip(&mut conn, b"a");
    let again = client.populate(spec()).unwrap();
    assert_eq!(again.len(), 1);
    let toxics: Vec<&str> = again[0]
        .proxy_pack
        .toxics
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(
        toxics,
        ["latency_downstream"],
        "unchanged proxy kept its toxics"
    );
    assert!(
        round_trip(&mut conn, b"b") < Duration::from_secs(5),
        "live connection survived"
    );
}

#[test]
fn populate_replaces_changed_proxy() {
    let server = Server::start();
    let client = server.client();
    let echo = Upstream::echo();
    let greeter = Upstream::greeter();
    let port = free_port();
    let first = client
        .populate(vec![pack(
            "rs_repl",
            &format!("127.0.0.1:{port}"),
            &echo.addr(),
        )])
        .unwrap();
    first[0].with_latency("downstream".into(), 1, 0, 1.0);
    let second = client
        .populate(vec![pack(
            "rs_repl",
            &format!("127.0.0.1:{port}"),
            &greeter.addr(),
        )])
        .unwrap();
    assert_eq!(second[0].proxy_pack.upstream, greeter.addr());
    assert!(
        second[0].proxy_pack.toxics.is_empty(),
        "replaced proxy starts without toxics"
    );
    let (data, end, _) = read_until_closed(&mut connect(port), Duration::from_secs(5));
    assert_eq!((data.as_slice(), end), (GREETING, End::Eof));
}

#[test]
fn populate_disabled_proxy_refuses_connections() {
    let server = Server::start();
    let client = server.client();
    let echo = Upstream::echo();
    let port = free_port();
    let mut p = pack("rs_pop_off", &format!("127.0.0.1:{port}"), &echo.addr());
    p.enabled = false;
    let proxies = client.populate(vec![p]).unwrap();
    assert!(!proxies[0].proxy_pack.enabled);
    assert_eq!(proxies[0].proxy_pack.listen, format!("127.0.0.1:{port}"));
    assert_refused(port);
    proxies[0].enable().unwrap();
    round_trip_new(port);
}

#[test]
fn populate_with_missing_upstream_fails_and_changes_nothing() {
    let server = Server::start();
    let client = server.client();
    let echo = Upstream::echo();
    let result = client.populate(vec![
        pack("rs_ok", "127.0.0.1:0", &echo.addr()),
        pack("rs_bad", "127.0.0.1:0", ""),
    ]);
    // The library deserializes the 400 body as {"proxies": ...} and fails.
    assert!(
        result.is_err(),
        "populate with an invalid entry must not succeed"
    );
    assert!(client.all().unwrap().is_empty());
    let (status, body) = http(
        server.port,
        "POST",
        "/populate",
        Some(r#"[{"name":"a","listen":"127.0.0.1:0"}]"#),
    )
    .unwrap();
    assert_eq!(status, 400);
    let body: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(body["error"], "missing required field: upstream at proxy 1");
}

#[test]
fn all_and_find_proxy() {
    let server = Server::start();
    let client = server.client();
    let echo = Upstream::echo();
    assert!(client.all().unwrap().is_empty());
    client
        .populate(vec![
            pack("rs_a", "127.0.0.1:0", &echo.addr()),
            pack("rs_b", "127.0.0.1:0", "127.0.0.1:1"),
        ])
        .unwrap();
    let all = client.all().unwrap();
    let mut names: Vec<&String> = all.keys().collect();
    names.sort();
    assert_eq!(names, ["rs_a", "rs_b"]);
    assert_eq!(all["rs_b"].proxy_pack.upstream, "127.0.0.1:1");
    let found = client.find_proxy("rs_a").unwrap();
    assert_eq!(found.proxy_pack.name, "rs_a");
    assert_eq!(found.proxy_pack.listen, all["rs_a"].proxy_pack.listen);
    assert!(found.proxy_pack.enabled);
    let missing = client.find_proxy("rs_missing");
    assert!(missing.is_err(), "unknown proxy must be an error");
    let (status, body) = http(server.port, "GET", "/proxies/rs_missing", None).unwrap();
    assert_eq!(status, 404);
    assert_eq!(body.trim(), r#"{"error":"proxy not found","status":404}"#);
}

#[test]
fn disable_enable_and_with_down() {
    let server = Server::start();
    let client = server.client();
    let echo = Upstream::echo();
    let (proxy, port) = make_proxy(&client, "rs_toggle", &echo.addr());
    proxy.disable().unwrap();
    assert!(!client.find_proxy("rs_toggle").unwrap().proxy_pack.enabled);
    assert_refused(port);
    proxy.enable().unwrap();
    let back = client.find_proxy("rs_toggle").unwrap();
    assert!(back.proxy_pack.enabled);
    assert_eq!(
        back.proxy_pack.listen, proxy.proxy_pack.listen,
        "re-binds the same address"
    );
    round_trip_new(port);

    let mut ran = false;
    proxy
        .with_down(|| {
            assert_refused(port);
            ran = true;
        })
        .unwrap();
    assert!(ran);
    assert!(client.find_proxy("rs_toggle").unwrap().proxy_pack.enabled);
    round_trip_new(port);
}

#[test]
fn disable_drops_open_connections() {
    let server = Server::start();
    let client = server.client();
    let echo = Upstream::echo();
    let (proxy, port) = make_proxy(&client, "rs_drop", &echo.addr());
    let mut conn = connect(port);
    round_trip(&mut conn, b"x");
    proxy.disable().unwrap();
    let (_, end, _) = read_until_closed(&mut conn, Duration::from_secs(5));
    assert!(matches!(end, End::Eof | End::Reset), "{end:?}");
}

#[test]
fn delete_proxy() {
    let server = Server::start();
    let client = server.client();
    let echo = Upstream::echo();
    let (proxy, port) = make_proxy(&client, "rs_del", &echo.addr());
    let mut conn = connect(port);
    round_trip(&mut conn, b"x");
    proxy.delete().unwrap();
    assert!(client.find_proxy("rs_del").is_err());
    assert!(client.all().unwrap().is_empty());
    assert_refused(port);
    let (_, end, _) = read_until_closed(&mut conn, Duration::from_secs(5));
    assert!(matches!(end, End::Eof | End::Reset), "{end:?}");
    let (status, _) = http(server.port, "DELETE", "/proxies/rs_del", None).unwrap();
    assert_eq!(status, 404);
}

/// (name, type, stream, toxicity, attributes) of a listed toxic.
type ToxicRow = (String, String, String, f32, HashMap<String, u32>);

#[test]
fn every_library_toxic_on_both_streams() {
    let server = Server::start();
    let client = server.client();
    let echo = Upstream::echo();
    for stream in ["upstream", "downstream"] {
        let name = format!("rs_tox_{stream}");
        let (proxy, _) = make_proxy(&client, &name, &echo.addr());
        proxy
            .with_latency(stream.into(), 100, 10, 1.0)
            .with_bandwidth(stream.into(), 1000, 0.5)
            .with_slow_close(stream.into(), 100, 1.0)
            .with_timeout(stream.into(), 100, 1.0)
            .with_slicer(stream.into(), 64, 8, 10, 1.0)
            .with_limit_data(stream.into(), 1000, 1.0);
        let toxics = proxy.toxics().unwrap();
        let got: Vec<ToxicRow> = toxics
            .into_iter()
            .map(|t| (t.name, t.r#type, t.stream, t.toxicity, t.attributes))
            .collect();
        let want = |ty: &str, tox: f32, a: &[(&str, u32)]| {
            (
                format!("{ty}_{stream}"),
                ty.to_string(),
                stream.to_string(),
                tox,
                attrs(a),
            )
        };
        assert_eq!(
            got,
            vec![
                want("latency", 1.0, &[("latency", 100), ("jitter", 10)]),
                want("bandwidth", 0.5, &[("rate", 1000)]),
                want("slow_close", 1.0, &[("delay", 100)]),
                want("timeout", 1.0, &[("timeout", 100)]),
                want(
                    "slicer",
                    1.0,
                    &[("average_size", 64), ("size_variation", 8), ("delay", 10)]
                ),
                want("limit_data", 1.0, &[("bytes", 1000)]),
            ],
            "toxics on {stream}, in insertion order"
        );
        // The same toxics are visible through find_proxy and all().
        assert_eq!(client.find_proxy(&name).unwrap().proxy_pack.toxics.len(), 6);
        assert_eq!(client.all().unwrap()[&name].proxy_pack.toxics.len(), 6);
    }
}

#[test]
fn toxics_listed_upstream_first() {
    let server = Server::start();
    let client = server.client();
    let echo = Upstream::echo();
    let (proxy, _) = make_proxy(&client, "rs_order", &echo.addr());
    proxy
        .with_latency("downstream".into(), 1, 0, 1.0)
        .with_bandwidth("upstream".into(), 100, 1.0)
        .with_slicer("downstream".into(), 10, 0, 0, 1.0)
        .with_timeout("upstream".into(), 0, 1.0);
    let names: Vec<String> = proxy
        .toxics()
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(
        names,
        [
            "bandwidth_upstream",
            "timeout_upstream",
            "latency_downstream",
            "slicer_downstream"
        ]
    );
}

#[test]
fn duplicate_toxic_is_rejected_by_the_server() {
    let server = Server::start();
    let client = server.client();
    let echo = Upstream::echo();
    let (proxy, _) = make_proxy(&client, "rs_dup", &echo.addr());
    // The library ignores the HTTP status of toxic creation; the server must refuse (409).
    proxy
        .with_latency("downstream".into(), 100, 0, 1.0)
        .with_latency("downstream".into(), 900, 0, 1.0);
    let toxics = toxic_map(&proxy);
    assert_eq!(toxics.len(), 1);
    assert_eq!(toxics["latency_downstream"].attributes["latency"], 100);
    let (status, body) = http(
        server.port,
        "POST",
        "/proxies/rs_dup/toxics",
        Some(r#"{"name":"latency_downstream","type":"latency","stream":"upstream"}"#),
    )
    .unwrap();
    assert_eq!(status, 409);
    assert_eq!(
        body.trim(),
        r#"{"error":"toxic already exists","status":409}"#
    );
}

#[test]
fn delete_all_toxics_and_apply() {
    let server = Server::start();
    let client = server.client();
    let echo = Upstream::echo();
    let (proxy, _) = make_proxy(&client, "rs_apply", &echo.addr());
    proxy
        .with_latency("downstream".into(), 1, 0, 1.0)
        .with_limit_data("upstream".into(), 10, 1.0);
    assert_eq!(proxy.toxics().unwrap().len(), 2);
    proxy.delete_all_toxics().unwrap();
    assert!(proxy.toxics().unwrap().is_empty());

    let seen = Mutex::new(0usize);
    proxy
        .with_slicer("downstream".into(), 2048, 128, 0, 0.8)
        .with_bandwidth("downstream".into(), 32, 0.5)
        .apply(|| {
            *seen.lock().unwrap() = client
                .find_proxy("rs_apply")
                .unwrap()
                .proxy_pack
                .toxics
                .len();
        })
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), 2, "toxics active inside apply");
    assert!(
        proxy.toxics().unwrap().is_empty(),
        "apply removes the toxics afterwards"
    );
}

#[test]
fn find_and_reset_proxy_clears_and_enables() {
    let server = Server::start();
    let client = server.client();
    let echo = Upstream::echo();
    let (proxy, port) = make_proxy(&client, "rs_far", &echo.addr());
    proxy
        .with_latency("downstream".into(), 2000, 0, 1.0)
        .with_timeout("upstream".into(), 10, 1.0);
    proxy.disable().unwrap();
    let fresh = client.find_and_reset_proxy("rs_far").unwrap();
    assert!(fresh.toxics().unwrap().is_empty());
    assert!(client.find_proxy("rs_far").unwrap().proxy_pack.enabled);
    assert!(round_trip_new(port) < Duration::from_millis(1500));
    assert!(client.find_and_reset_proxy("rs_nope").is_err());
}

#[test]
fn reset_reenables_and_removes_toxics() {
    let server = Server::start();
    let client = server.client();
    let echo = Upstream::echo();
    let (a, port_a) = make_proxy(&client, "rs_reset_a", &echo.addr());
    let (b, port_b) = make_proxy(&client, "rs_reset_b", &echo.addr());
    a.with_latency("downstream".into(), 2000, 0, 1.0);
    b.with_bandwidth("upstream".into(), 0, 1.0);
    b.disable().unwrap();
    client.reset().unwrap();
    for (name, port) in [("rs_reset_a", port_a), ("rs_reset_b", port_b)] {
        let p = client.find_proxy(name).unwrap();
        assert!(p.proxy_pack.enabled, "{name} re-enabled");
        assert!(p.proxy_pack.toxics.is_empty(), "{name} toxics removed");
        assert!(round_trip_new(port) < Duration::from_millis(1500));
    }
    assert_eq!(
        client.all().unwrap().len(),
        2,
        "reset does not delete proxies"
    );
}

// --- data path ----------------------------------------------------------------------

#[test]
fn passthrough_without_toxics() {
    let server = Server::start();
    let client = server.client();
    let echo = Upstream::echo();
    let (_, port) = make_proxy(&client, "rs_pass", &echo.addr());
    let payload: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    let mut conn = connect(port);
    let writer = {
        let mut w = conn.try_clone().unwrap();
        let payload = payload.clone();
        thread::spawn(move || w.write_all(&payload).unwrap())
    };
    let got = read_exactly(&mut conn, payload.len(), LONG);
    writer.join().unwrap();
    assert!(got == payload, "payload changed in transit");
}

#[test]
fn latency_delays_both_directions() {
    let server = Server::start();
    let client = server.client();
    let echo = Upstream::echo();
    let (proxy, port) = make_proxy(&client, "rs_lat", &echo.addr());
    assert!(round_trip_new(port) < Duration::from_millis(400));
    proxy.with_latency("downstream".into(), 600, 0, 1.0);
    let t = round_trip_new(port);
    assert!(
        t >= Duration::from_millis(500) && t < Duration::from_secs(5),
        "{t:?}"
    );
    proxy.delete_all_toxics().unwrap();
    proxy.with_latency("upstream".into(), 600, 0, 1.0);
    let t = round_trip_new(port);
    assert!(
        t >= Duration::from_millis(500) && t < Duration::from_secs(5),
        "{t:?}"
    );
    proxy.delete_all_toxics().unwrap();
    assert!(round_trip_new(port) < Duration::from_millis(400));
}

#[test]
fn latency_applies_to_open_connection() {
    let server = Server::start();
    let client = server.client();
    let echo = Upstream::echo();
    let (proxy, port) = make_proxy(&client, "rs_lat_live", &echo.addr());
    let mut conn = connect(port);
    assert!(round_trip(&mut conn, b"a") < Duration::from_millis(400));
    proxy.with_latency("downstream".into(), 600, 0, 1.0);
    let t = round_trip(&mut conn, b"b");
    assert!(
        t >= Duration::from_millis(500) && t < Duration::from_secs(5),
        "{t:?}"
    );
}

#[test]
fn toxicity_zero_never_applies() {
    let server = Server::start();
    let client = server.client();
    let echo = Upstream::echo();
    let (proxy, port) = make_proxy(&client, "rs_tox0", &echo.addr());
    proxy.with_latency("downstream".into(), 2000, 0, 0.0);
    for _ in 0..3 {
        assert!(round_trip_new(port) < Duration::from_secs(1));
    }
}

#[test]
fn bandwidth_limits_throughput() {
    let server = Server::start();
    let client = server.client();
    let echo = Upstream::echo();
    let (proxy, port) = make_proxy(&client, "rs_bw", &echo.addr());
    proxy.with_bandwidth("downstream".into(), 50, 1.0);
    let payload = vec![b'x'; 60_000];
    let mut conn = connect(port);
    let start = Instant::now();
    conn.write_all(&payload).unwrap();
    let got = read_exactly(&mut conn, payload.len(), Duration::from_secs(20));
    let t = start.elapsed();
    assert!(got == payload);
    assert!(
        t >= Duration::from_millis(700) && t < Duration::from_secs(15),
        "60 kB at 50 KB/s took {t:?}"
    );
}

#[test]
fn bandwidth_zero_stalls() {
    let server = Server::start();
    let client = server.client();
    let echo = Upstream::echo();
    let (proxy, port) = make_proxy(&client, "rs_bw0", &echo.addr());
    proxy.with_bandwidth("downstream".into(), 0, 1.0);
    let mut conn = connect(port);
    conn.write_all(b"ping").unwrap();
    let (data, end, _) = read_until_closed(&mut conn, Duration::from_millis(800));
    assert_eq!((data.len(), end), (0, End::Timeout));
    proxy.delete_all_toxics().unwrap();
    assert_eq!(read_exactly(&mut conn, 4, Duration::from_secs(5)), b"ping");
}

#[test]
fn slow_close_delays_the_close() {
    let server = Server::start();
    let client = server.client();
    let greeter = Upstream::greeter();
    let (proxy, port) = make_proxy(&client, "rs_sc", &greeter.addr());
    let (data, end, t) = read_until_closed(&mut connect(port), Duration::from_secs(5));
    assert_eq!((data.as_slice(), end), (GREETING, End::Eof));
    assert!(t < Duration::from_millis(500), "{t:?} without toxic");
    proxy.with_slow_close("downstream".into(), 800, 1.0);
    let mut conn = connect(port);
    let start = Instant::now();
    assert_eq!(
        read_exactly(&mut conn, GREETING.len(), Duration::from_secs(5)),
        GREETING
    );
    assert!(
        start.elapsed() < Duration::from_millis(600),
        "data is not delayed"
    );
    let (rest, end, _) = read_until_closed(&mut conn, Duration::from_secs(6));
    let t = start.elapsed();
    assert_eq!((rest.len(), end), (0, End::Eof));
    assert!(
        t >= Duration::from_millis(600) && t < Duration::from_secs(5),
        "closed after {t:?}"
    );
}

#[test]
fn timeout_swallows_data_then_closes() {
    let server = Server::start();
    let client = server.client();
    let echo = Upstream::echo();
    let (proxy, port) = make_proxy(&client, "rs_to", &echo.addr());
    proxy.with_timeout("downstream".into(), 400, 1.0);
    let mut conn = connect(port);
    let start = Instant::now();
    conn.write_all(b"ping").unwrap();
    let (data, end, _) = read_until_closed(&mut conn, Duration::from_secs(6));
    let t = start.elapsed();
    assert!(data.is_empty());
    assert!(matches!(end, End::Eof | End::Reset), "{end:?}");
    assert!(
        t >= Duration::from_millis(300) && t < Duration::from_secs(5),
        "closed after {t:?}"
    );
}

#[test]
fn timeout_zero_holds_until_removed() {
    let server = Server::start();
    let client = server.client();
    let echo = Upstream::echo();
    let (proxy, port) = make_proxy(&client, "rs_to0", &echo.addr());
    proxy.with_timeout("downstream".into(), 0, 1.0);
    let mut conn = connect(port);
    conn.write_all(b"ping").unwrap();
    let (data, end, _) = read_until_closed(&mut conn, Duration::from_millis(800));
    assert_eq!((data.len(), end), (0, End::Timeout));
    proxy.delete_all_toxics().unwrap();
    let (_, end, _) = read_until_closed(&mut conn, Duration::from_secs(5));
    assert!(
        matches!(end, End::Eof | End::Reset),
        "removing a timeout toxic closes: {end:?}"
    );
    assert!(round_trip_new(port) < Duration::from_secs(1));
}

#[test]
fn slicer_delivers_in_pieces() {
    let server = Server::start();
    let client = server.client();
    let echo = Upstream::echo();
    let (proxy, port) = make_proxy(&client, "rs_slice", &echo.addr());
    proxy.with_slicer("downstream".into(), 4, 0, 25_000, 1.0);
    let payload = b"0123456789abcdefghijklmnopqrstuvwxyzABCD";
    let mut conn = connect(port);
    let start = Instant::now();
    conn.write_all(payload).unwrap();
    let mut got = Vec::new();
    let mut reads = 0;
    let mut buf = [0u8; 4096];
    while got.len() < payload.len() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "slicer too slow: {} bytes",
            got.len()
        );
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "closed early");
        reads += 1;
        got.extend_from_slice(&buf[..n]);
    }
    let t = start.elapsed();
    assert_eq!(got, payload);
    assert!(reads > 1, "arrived in {reads} read(s)");
    assert!(
        t >= Duration::from_millis(150) && t < Duration::from_secs(8),
        "{t:?}"
    );
}

#[test]
fn limit_data_truncates_and_closes() {
    let server = Server::start();
    let client = server.client();
    let echo = Upstream::echo();
    let (proxy, port) = make_proxy(&client, "rs_limit", &echo.addr());
    proxy.with_limit_data("downstream".into(), 10, 1.0);
    let mut conn = connect(port);
    conn.write_all(b"abcdefghijklmnopqrstuvwxyz").unwrap();
    let (data, end, _) = read_until_closed(&mut conn, Duration::from_secs(5));
    assert_eq!(data, b"abcdefghij");
    assert!(matches!(end, End::Eof | End::Reset), "{end:?}");
}

#[test]
fn limit_data_upstream_closes_connection() {
    let server = Server::start();
    let client = server.client();
    let echo = Upstream::echo();
    let (proxy, port) = make_proxy(&client, "rs_limit_up", &echo.addr());
    proxy.with_limit_data("upstream".into(), 4, 1.0);
    let mut conn = connect(port);
    conn.write_all(b"abcdefghij").unwrap();
    let (data, end, _) = read_until_closed(&mut conn, Duration::from_secs(5));
    // At most the 4 bytes that reached the echo server come back.
    assert!(b"abcd".starts_with(&data), "{data:?}");
    assert!(matches!(end, End::Eof | End::Reset), "{end:?}");
}
