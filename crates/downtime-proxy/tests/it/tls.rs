//! TLS on both sides with real clients (curl, Python `requests`) and a real HTTPS upstream
//! whose certificate comes from a CA of its own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use downtime_model::{ProxyRequest, ToxicRequest};
use downtime_proxy::Registry;
use downtime_proxy::tls::LocalCa;
use http_body_util::Full;
use hyper::Response;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("downtime-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

async fn http_proxy(registry: &Registry, body: Value) -> SocketAddr {
    let request: ProxyRequest = serde_json::from_value(body).unwrap();
    let (config, toxics) = request.validate(None).unwrap();
    let view = registry.create(config, toxics).await.unwrap();
    view.config.listen.parse().unwrap()
}

/// curl against `url` trusting `ca`: (exit code, status line and body, stderr).
fn curl(ca: &Path, url: &str, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(extra)
        .arg(url)
        .output()
        .expect("curl is installed");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An HTTPS upstream: its leaf comes from its own CA (in `dir`); it answers the protocol
/// the client used and the request's path.
async fn https_upstream(dir: &Path) -> (SocketAddr, PathBuf) {
    let ca = LocalCa::open(dir).unwrap();
    let leaf = ca
        .leaf(&["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_cert_resolver(Arc::new(Always(leaf)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(|req: hyper::Request<_>| async move {
                    let text = format!(
                        "secure upstream: {} {:?} proto={}",
                        req.uri().path(),
                        req.version(),
                        req.headers()
                            .get("x-forwarded-proto")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                    );
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(text))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, ca.cert_path())
}

#[derive(Debug)]
struct Always(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for Always {
    fn resolve(
        &self,
        _: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_stand_in_answers_curl_and_requests_over_http1_and_h2() {
    let registry = Registry::new(Some(3));
    let ca = registry.set_ca_dir(&temp_dir("standin")).unwrap();
    let addr = http_proxy(
        &registry,
        json!({"name": "payments", "listen": "127.0.0.1:0", "protocol": "http", "tls": {}}),
    )
    .await;
    let url = format!("https://127.0.0.1:{}/v1/charges", addr.port());
    let ca_file = ca.cert_path();
    let (code, out, err) = tokio::task::spawn_blocking({
        let (ca_file, url) = (ca_file.clone(), url.clone());
        move || curl(&ca_file, &url, &["--http1.1"])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    assert!(out.contains("\"id\": \"maintenance\""), "{out}");
    let (code, out, err) = tokio::task::spawn_blocking({
        let (ca_file, url) = (
            ca_file.clone(),
            format!("https://localhost:{}/", addr.port()),
        );
        move || curl(&ca_file, &url, &["--http2"])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("HTTP/2 503"), "ALPN picks h2: {out}");

    // Python requests, trusting the CA through REQUESTS_CA_BUNDLE as the docs say.
    let python =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/compat/python/.venv/bin/python");
    if python.exists() {
        let out = Command::new(&python)
            .args(["-c", "import requests,sys; r = requests.get(sys.argv[1], timeout=10); print(r.status_code, r.json()['id'])", &url])
            .env("REQUESTS_CA_BUNDLE", &ca_file)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "503 maintenance",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Without trusting the CA, curl refuses: the certificate is really checked.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", &url])
        .env("CURL_CA_BUNDLE", "/nonexistent")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_proxy_reaches_an_https_upstream_with_faults_on_real_answers() {
    let (up, up_ca) = https_upstream(&temp_dir("upstream")).await;
    let registry = Registry::new(Some(3));
    registry.set_extra_ca(vec![up_ca]).unwrap();
    let addr = http_proxy(
        &registry,
        json!({"name": "api", "listen": "127.0.0.1:0", "protocol": "http", "upstream": format!("https://127.0.0.1:{}", up.port())}),
    )
    .await;
    let client = reqwest::Client::new();
    let text = client
        .get(format!("http://{addr}/v1/balance"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.starts_with("secure upstream: /v1/balance"), "{text}");
    assert!(text.ends_with("proto=http"), "{text}");
    // ALPN chose HTTP/2 to the upstream.
    assert!(text.contains("HTTP/2.0"), "{text}");
    let request: ToxicRequest = serde_json::from_value(json!({"name": "every-other", "type": "status", "attributes": {"status": 502}, "every_nth": 2})).unwrap();
    registry.add_toxic("api", request).await.unwrap();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            client
                .get(format!("http://{addr}/v1/balance"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 502).count(),
        2,
        "{statuses:?}"
    );

    // An upstream whose certificate is not trusted: a 502 that says why.
    let strict = Registry::new(Some(3));
    let addr = http_proxy(
        &strict,
        json!({"name": "api", "listen": "127.0.0.1:0", "protocol": "http", "upstream": format!("https://127.0.0.1:{}", up.port())}),
    )
    .await;
    let r = client.get(format!("http://{addr}/")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let body: Value = r.json().await.unwrap();
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("certificate"), "{message}");
}

fn python() -> Option<PathBuf> {
    let venv =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/compat/python/.venv/bin/python");
    if venv.exists() {
        return Some(venv);
    }
    assert!(
        std::env::var_os("DOWNTIME_REQUIRE_COMPAT").is_none(),
        "Python requests is required (tests/compat/install.sh)"
    );
    None
}

/// `requests.get(url)` through `proxy` trusting `bundle`: "STATUS BODY" or the error.
fn requests_via(python: &Path, proxy: SocketAddr, bundle: &Path, url: &str) -> String {
    let out = Command::new(python)
        .args([
            "-c",
            "import requests,sys\ntry:\n r = requests.get(sys.argv[1], timeout=10)\n print(r.status_code, r.text)\nexcept Exception as e:\n print('error', type(e).__name__, e)",
            url,
        ])
        .env("HTTPS_PROXY", format!("http://{proxy}"))
        .env("HTTP_PROXY", format!("http://{proxy}"))
        .env("NO_PROXY", "")
        .env("REQUESTS_CA_BUNDLE", bundle)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_proxy_mode_puts_an_sdks_calls_under_faults_matched_by_host() {
    let Some(python) = python() else { return };
    let (up, up_ca) = https_upstream(&temp_dir("fwd-upstream")).await;
    let registry = Registry::new(Some(3));
    let ca = registry.set_ca_dir(&temp_dir("fwd-ca")).unwrap();
    registry.set_extra_ca(vec![up_ca.clone()]).unwrap();
    let proxy = http_proxy(
        &registry,
        json!({"name": "egress", "listen": "127.0.0.1:0", "mode": "forward"}),
    )
    .await;
    let url = format!("https://localhost:{}/v1/charges", up.port());
    let run = |bundle: PathBuf| {
        let (python, url) = (python.clone(), url.clone());
        tokio::task::spawn_blocking(move || requests_via(&python, proxy, &bundle, &url))
    };
    // Intercepted: the app trusts downtime's CA, downtime verifies the real host.
    let answer = run(ca.cert_path()).await.unwrap();
    assert!(
        answer.starts_with("200 secure upstream: /v1/charges"),
        "{answer}"
    );
    let request: ToxicRequest = serde_json::from_value(json!({
        "name": "payments-down", "type": "status", "attributes": {"status": 503},
        "match": {"host": "localhost"}
    }))
    .unwrap();
    registry.add_toxic("egress", request).await.unwrap();
    let answer = run(ca.cert_path()).await.unwrap();
    assert!(answer.starts_with("503"), "{answer}");
    let journal = registry.journal("egress", 10).await.unwrap();
    let last = journal.last().unwrap();
    assert_eq!(last.host.as_deref(), Some("localhost"));
    assert_eq!(last.path, "/v1/charges");
    assert_eq!(last.fault.as_deref(), Some("payments-down"));
    assert!(journal.iter().any(|e| e.method == "CONNECT"), "{journal:?}");

    // Plain HTTP in absolute form goes through too (curl -x).
    let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_addr = plain.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = plain.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                        "plain upstream",
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), service)
                    .await;
            });
        }
    });
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "-x",
                &format!("http://{proxy}"),
                &format!("http://{plain_addr}/x"),
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "plain upstream");

    // A proxy that intercepts other hosts only tunnels this one untouched: the app sees the
    // real certificate (it must trust the upstream's CA) and the fault does not apply.
    let narrow = http_proxy(
        &registry,
        json!({"name": "egress-narrow", "listen": "127.0.0.1:0", "mode": "forward", "intercept": ["*.example.com"]}),
    )
    .await;
    let request: ToxicRequest = serde_json::from_value(json!({
        "name": "down", "type": "status", "attributes": {"status": 503}, "match": {"host": "localhost"}
    }))
    .unwrap();
    registry.add_toxic("egress-narrow", request).await.unwrap();
    let (python2, url2) = (python.clone(), url.clone());
    let answer = tokio::task::spawn_blocking(move || requests_via(&python2, narrow, &up_ca, &url2))
        .await
        .unwrap();
    assert!(answer.starts_with("200 secure upstream"), "{answer}");
}

/// What `node`'s https module says for `url` (with NODE_EXTRA_CA_CERTS): its error code, or
/// the status.
fn node_https(ca: &Path, url: &str) -> Option<String> {
    let script = "const https=require('https');const r=https.get(process.argv[1],{timeout:2000},res=>{console.log('status '+res.statusCode);process.exit(0)});r.on('timeout',()=>{console.log('timeout');process.exit(0)});r.on('error',e=>{console.log((e.code||'')+' '+e.message);process.exit(0)});";
    let out = Command::new("node")
        .args(["-e", script, url])
        .env("NODE_EXTRA_CA_CERTS", ca)
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn requests_direct(python: &Path, ca: &Path, url: &str) -> String {
    let out = Command::new(python)
        .args([
            "-c",
            "import requests,sys\ntry:\n r = requests.get(sys.argv[1], timeout=2)\n print(r.status_code)\nexcept Exception as e:\n print(type(e).__name__, e)",
            url,
        ])
        .env("REQUESTS_CA_BUNDLE", ca)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A TLS fault and what clients must say: (type, attributes, curl's exit code, what curl,
/// requests and node say, any of the alternatives).
type Case = (
    &'static str,
    Value,
    i32,
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tls_fault_gives_curl_requests_and_node_the_error_a_broken_endpoint_gives() {
    let registry = Registry::new(Some(3));
    let ca = registry.set_ca_dir(&temp_dir("faults")).unwrap();
    let addr = http_proxy(
        &registry,
        json!({"name": "auth", "listen": "127.0.0.1:0", "protocol": "http", "tls": {}}),
    )
    .await;
    let url = format!("https://localhost:{}/", addr.port());
    let python = python();
    // (fault, curl exit code, what curl, requests and node say; any of the alternatives)
    let cases: [Case; 5] = [
        (
            "tls_expired",
            json!({}),
            60,
            &["expired"],
            &["expired"],
            &["CERT_HAS_EXPIRED"],
        ),
        (
            "tls_wrong_host",
            json!({}),
            60,
            &["subject name", "does not match"],
            &["match", "Hostname mismatch"],
            &["ERR_TLS_CERT_ALTNAME_INVALID"],
        ),
        (
            "tls_untrusted",
            json!({}),
            60,
            &["self-signed", "self signed"],
            &["self-signed", "self signed"],
            &["DEPTH_ZERO_SELF_SIGNED_CERT"],
        ),
        (
            "tls_handshake_timeout",
            json!({}),
            28,
            &["timed out", "Timeout"],
            &["timed out", "Timeout"],
            &["timeout"],
        ),
        (
            "tls_alert",
            json!({"alert": "handshake_failure"}),
            35,
            &["handshake failure"],
            &["HANDSHAKE_FAILURE"],
            &["handshake failure"],
        ),
    ];
    for (kind, attributes, curl_code, curl_says, requests_says, node_says) in cases {
        let request: ToxicRequest =
            serde_json::from_value(json!({"name": kind, "type": kind, "attributes": attributes}))
                .unwrap();
        registry.add_toxic("auth", request).await.unwrap();
        let (ca_file, u) = (ca.cert_path(), url.clone());
        let (code, _, err) =
            tokio::task::spawn_blocking(move || curl(&ca_file, &u, &["--max-time", "2"]))
                .await
                .unwrap();
        eprintln!("{kind}: curl exit {code}: {}", err.trim());
        assert_eq!(code, curl_code, "{kind}: {err}");
        assert!(curl_says.iter().any(|s| err.contains(s)), "{kind}: {err}");
        if let Some(python) = &python {
            let (python, ca_file, u) = (python.clone(), ca.cert_path(), url.clone());
            let said = tokio::task::spawn_blocking(move || requests_direct(&python, &ca_file, &u))
                .await
                .unwrap();
            eprintln!("{kind}: requests: {said}");
            assert!(
                requests_says.iter().any(|s| said.contains(s)),
                "{kind}: {said}"
            );
        }
        let (ca_file, u) = (ca.cert_path(), url.clone());
        if let Some(said) = tokio::task::spawn_blocking(move || node_https(&ca_file, &u))
            .await
            .unwrap()
        {
            eprintln!("{kind}: node: {said}");
            assert!(node_says.iter().any(|s| said.contains(s)), "{kind}: {said}");
        }
        registry.remove_toxic("auth", kind).await.unwrap();
    }
    // Without a fault the endpoint answers, and the journal names each broken handshake.
    let (ca_file, u) = (ca.cert_path(), url.clone());
    let (code, out, err) = tokio::task::spawn_blocking(move || curl(&ca_file, &u, &[]))
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("HTTP/2 503") || out.starts_with("HTTP/1.1 503"),
        "{out}"
    );
    let journal = registry.journal("auth", 100).await.unwrap();
    let faulted: Vec<&str> = journal
        .iter()
        .filter(|e| e.method == "TLS")
        .filter_map(|e| e.fault.as_deref())
        .collect();
    assert!(
        faulted.contains(&"tls_expired") && faulted.contains(&"tls_alert"),
        "{faulted:?}"
    );
    assert!(
        journal
            .iter()
            .filter(|e| e.method == "TLS")
            .all(|e| e.host.as_deref() == Some("localhost"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_may_trust_its_own_upstream_ca_or_be_told_not_to_verify() {
    let (up, up_ca) = https_upstream(&temp_dir("own-ca")).await;
    let registry = Registry::new(Some(3));
    let client = reqwest::Client::new();
    let get = |addr: SocketAddr| {
        let client = client.clone();
        async move {
            let r = client.get(format!("http://{addr}/x")).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    // Its own CA file, for a bare host:port with upstream_tls.
    let own = http_proxy(
        &registry,
        json!({"name": "own", "listen": "127.0.0.1:0", "protocol": "http",
               "upstream": format!("127.0.0.1:{}", up.port()),
               "http": {"upstream_tls": true, "upstream_ca": up_ca.to_string_lossy()}}),
    )
    .await;
    let (status, text) = get(own).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.starts_with("secure upstream: /x"), "{text}");
    // Not verified, when asked; the view says so.
    let insecure = http_proxy(
        &registry,
        json!({"name": "insecure", "listen": "127.0.0.1:0", "protocol": "http",
               "upstream": format!("https://127.0.0.1:{}", up.port()),
               "http": {"upstream_insecure": true}}),
    )
    .await;
    let (status, _) = get(insecure).await;
    assert_eq!(status, 200);
    let view = registry.get("insecure").await.unwrap();
    let shown = serde_json::to_value(&view).unwrap();
    assert_eq!(shown["http"]["upstream_insecure"], true, "{shown}");
    // A CA file that does not exist stops the proxy's creation, naming it.
    let request: ProxyRequest = serde_json::from_value(json!({
        "name": "bad", "listen": "127.0.0.1:0", "protocol": "http",
        "upstream": format!("https://127.0.0.1:{}", up.port()),
        "http": {"upstream_ca": "/nonexistent/ca.pem"}
    }))
    .unwrap();
    let (config, toxics) = request.validate(None).unwrap();
    let err = registry.create(config, toxics).await.unwrap_err();
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
}
