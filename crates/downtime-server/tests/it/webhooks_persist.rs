//! Webhook subscriptions across restarts, end to end over loopback: a server with a real
//! SQLite history file keeps its hooks (same ids, same definitions) when it is stopped and
//! started again on the same file, delivers to them with a valid signature, and forgets a
//! deleted one for good. Without a history file hooks stay in memory, as before.
//!
//! Each server is stopped and *waited for* (its thread joined, within a bound) before the
//! next one opens the file, as a restarted process would be.

use crate::support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{LONG, eventually};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use downtime_server::ServeOptions;
use serde_json::{Value, json};

const SECRET: &str = "persisted-s3cret";

/// The shared test server with JSON helpers for this file; stopped and waited for.
struct Running {
    server: support::Server,
    client: reqwest::Client,
}

impl Running {
    /// Starts `downtime_server::run` on its own thread and runtime; `db` is the history
    /// file (`None`: history in memory, as `--db :memory:`).
    fn start(db: Option<&Path>) -> Running {
        let options = ServeOptions {
            grace: Duration::from_secs(2),
            history: db.map(Path::to_owned),
            ..ServeOptions::default()
        };
        Running {
            server: support::Server::start_with(options),
            client: reqwest::Client::builder().timeout(LONG).build().unwrap(),
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.server.base));
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text:?}"))
        };
        (status, value)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::DELETE, path, None).await
    }

    /// Creates a hook on `url` for every event; returns its definition as the API shows it.
    async fn hook(&self, url: &str) -> Value {
        let (status, hook) = self
            .post("/webhooks", json!({"url": url, "secret": SECRET}))
            .await;
        assert_eq!(status, 201, "{hook}");
        hook
    }

    async fn hooks(&self) -> Vec<Value> {
        let (status, list) = self.get("/webhooks").await;
        assert_eq!(status, 200, "{list}");
        list.as_array().unwrap().clone()
    }

    /// Stops the server and waits until its history file is closed.
    async fn stop(self) {
        self.server.stop_and_wait().await;
    }
}

/// What the receiver got: (event header, signature valid, body).
type Received = Arc<Mutex<Vec<(String, bool, Value)>>>;

/// A receiver on `127.0.0.1:0` that answers 204 and records each delivery, checking the
/// `X-Downtime-Signature` header against its own HMAC-SHA256 of the body keyed with
/// [`SECRET`]. It outlives the servers (it runs on the test's runtime).
async fn receiver() -> (String, Received) {
    let got: Received = Arc::default();
    let record = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let record = record.clone();
            async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                let valid = header("x-downtime-signature") == sign(SECRET.as_bytes(), &body);
                let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                record
                    .lock()
                    .unwrap()
                    .push((header("x-downtime-event"), valid, value));
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

/// `sha256=<hex>`, computed here rather than with the server's function.
fn sign(secret: &[u8], body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret).unwrap();
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Opens an incident through the API (which makes an `incident.created` delivery).
async fn open_incident(server: &Running, title: &str) -> i64 {
    let (status, incident) = server
        .post(
            "/incidents",
            json!({
                "title": title,
                "status": "investigating",
                "impact": "minor",
                "components": ["checkout"],
                "body": "Looking into it.",
            }),
        )
        .await;
    assert_eq!(status, 201, "{incident}");
    incident["id"].as_i64().unwrap()
}

#[tokio::test]
async fn hooks_survive_a_restart_until_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    let (url, got) = receiver().await;

    let first = Running::start(Some(&db));
    let created = first.hook(&url).await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(created.get("secret").is_none(), "the secret is never shown");
    first.stop().await;

    let second = Running::start(Some(&db));
    let hooks = second.hooks().await;
    assert_eq!(
        hooks,
        std::slice::from_ref(&created),
        "same id, url, events and creation time"
    );
    let (status, shown) = second.get(&format!("/webhooks/{id}")).await;
    assert_eq!((status, &shown), (200, &created));
    let (status, log) = second.get(&format!("/webhooks/{id}/deliveries")).await;
    assert_eq!((status, log), (200, json!([])), "the log starts empty");

    // A new hook next to the stored one gets an id of its own.
    let other = second.hook(&url).await;
    assert_ne!(other["id"], created["id"]);
    let other_id = other["id"].as_str().unwrap().to_owned();

    let incident = open_incident(&second, "checkout is slow").await;
    let delivered = eventually(LONG, || async {
        got.lock()
            .unwrap()
            .iter()
            .any(|(event, _, body)| event == "incident.created" && body["meta"]["webhook_id"] == id)
    })
    .await;
    assert!(delivered, "no incident.created delivery to the stored hook");
    let received = got.lock().unwrap().clone();
    for (event, valid, body) in received.iter().filter(|r| r.2["meta"]["webhook_id"] == id) {
        assert!(valid, "bad signature on {event}: {body}");
        assert_eq!(event, "incident.created", "{body}");
        assert_eq!(body["meta"]["event"], "incident.created");
        assert_eq!(
            body["incident"]["id"],
            incident.to_string(),
            "statuspage ids are strings"
        );
    }
    let log_has_delivered = eventually(LONG, || async {
        let (_, log) = second.get(&format!("/webhooks/{id}/deliveries")).await;
        log[0]["state"] == "delivered"
    })
    .await;
    assert!(
        log_has_delivered,
        "the stored hook's log shows the delivery"
    );

    let (status, _) = second.delete(&format!("/webhooks/{id}")).await;
    assert_eq!(status, 204);
    let (status, _) = second.get(&format!("/webhooks/{id}")).await;
    assert_eq!(status, 404);
    second.stop().await;

    let third = Running::start(Some(&db));
    let ids: Vec<Value> = third
        .hooks()
        .await
        .iter()
        .map(|h| h["id"].clone())
        .collect();
    assert_eq!(ids, [json!(other_id)], "the deleted hook stays deleted");
    let (status, _) = third.delete(&format!("/webhooks/{id}")).await;
    assert_eq!(status, 404);
    third.stop().await;
}

#[tokio::test]
async fn without_a_history_file_hooks_live_in_memory() {
    let (url, got) = receiver().await;
    let first = Running::start(None);
    let created = first.hook(&url).await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(first.hooks().await, [created]);
    let (status, _) = first.post(&format!("/webhooks/{id}/ping"), json!({})).await;
    assert_eq!(status, 202);
    let pinged = eventually(LONG, || async {
        got.lock()
            .unwrap()
            .iter()
            .any(|(event, valid, _)| event == "ping" && *valid)
    })
    .await;
    assert!(pinged, "a signed ping reaches the receiver");
    first.stop().await;

    let second = Running::start(None);
    assert!(second.hooks().await.is_empty(), "gone after a restart");
    let (status, _) = second.get(&format!("/webhooks/{id}")).await;
    assert_eq!(status, 404);
    second.stop().await;
}

// --- https receivers (issue 9 item 6) -----------------------------------------------

/// The hook's first delivery, once it is no longer pending.
async fn settled_delivery(running: &Running, id: &str) -> Value {
    let path = format!("/webhooks/{id}/deliveries");
    let settled = eventually(LONG, || async {
        let (_, body) = running.get(&path).await;
        body.as_array()
            .and_then(|d| d.first())
            .is_some_and(|d| d["state"] != "pending")
    })
    .await;
    let (_, log) = running.get(&path).await;
    assert!(settled, "{log}");
    log[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_receiver_gets_deliveries_when_its_ca_is_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let mut trusted = support::HttpsReceiver::start(&dir.path().join("trusted")).await;
    let untrusted = support::HttpsReceiver::start(&dir.path().join("untrusted")).await;
    let running = Running {
        server: support::Server::start_with(ServeOptions {
            grace: Duration::from_secs(2),
            extra_ca: vec![trusted.ca_cert.clone()],
            ..ServeOptions::default()
        }),
        client: reqwest::Client::builder().timeout(LONG).build().unwrap(),
    };
    let url = format!("https://127.0.0.1:{}/hook", trusted.addr.port());
    let hook = running.hook(&url).await;
    let id = hook["id"].as_str().unwrap();
    let (status, _) = running
        .post(&format!("/webhooks/{id}/ping"), json!({}))
        .await;
    assert!((200..300).contains(&status), "{status}");
    let got = tokio::time::timeout(LONG, trusted.requests.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.path, "/hook");
    let signature = got
        .headers
        .get("x-downtime-signature")
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(
        signature,
        downtime_server::webhooks::signature(SECRET.as_bytes(), &got.body)
    );
    let delivery = settled_delivery(&running, id).await;
    assert_eq!(delivery["state"], "delivered", "{delivery}");

    // A receiver whose CA is not trusted: the log says the certificate failed.
    let url = format!("https://127.0.0.1:{}/hook", untrusted.addr.port());
    let hook = running.hook(&url).await;
    let id = hook["id"].as_str().unwrap();
    running
        .post(&format!("/webhooks/{id}/ping"), json!({}))
        .await;
    let first_attempt = eventually(LONG, || {
        let path = format!("/webhooks/{id}/deliveries");
        let running = &running;
        async move {
            let (_, body) = running.get(&path).await;
            body[0]["attempts"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
        }
    })
    .await;
    assert!(first_attempt);
    let (_, log) = running.get(&format!("/webhooks/{id}/deliveries")).await;
    let error = log[0]["attempts"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.starts_with("the receiver's certificate could not be verified: "),
        "{log}"
    );
    // A closed port still reads as before.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let hook = running
        .hook(&format!("https://127.0.0.1:{port}/hook"))
        .await;
    let id = hook["id"].as_str().unwrap();
    running
        .post(&format!("/webhooks/{id}/ping"), json!({}))
        .await;
    let closed_logged = eventually(LONG, || {
        let path = format!("/webhooks/{id}/deliveries");
        let running = &running;
        async move {
            let (_, body) = running.get(&path).await;
            body[0]["attempts"][0]["error"] == downtime_server::webhooks::CONNECT_FAILED
        }
    })
    .await;
    assert!(closed_logged);
    running.server.stop_and_wait().await;
}
