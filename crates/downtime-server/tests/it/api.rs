//! The control API over real sockets, checked against the Toxiproxy 2.12 compat doc
//! (`shared/docs/toxiproxy-compat.md`): error catalogue (§2), objects (§3), endpoints and
//! status codes (§4), populate (§5), plus our extensions (toxics in create/populate bodies,
//! 400s for out-of-range attributes) and `/metrics` (§7).
//!
//! Bodies are compared byte for byte where clients compare them (error texts, field order,
//! `/version`).

use std::time::Duration;

use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

const SHORT: Duration = Duration::from_secs(5);

/// A port taken by a listener we hold, for bind failures.
async fn taken_port() -> (tokio::net::TcpListener, u16) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

fn in_use(port: u16) -> String {
    format!("listen tcp 127.0.0.1:{port}: bind: address already in use")
}

// --- §2 cross-cutting ----------------------------------------------------------------

#[tokio::test]
async fn version_body_content_type_and_request_id() {
    let s = Server::start();
    let r = s.get("/version").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "{\"version\": \"2.12.0\"}\n");
    assert_eq!(
        r.header("content-type"),
        Some("application/json;charset=utf-8")
    );
    let id = r
        .header("x-toxiproxy-request-id")
        .expect("request id")
        .to_owned();
    assert_eq!(id.len(), 20, "{id}");
    assert!(
        id.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'v').contains(&c)),
        "xid alphabet: {id}"
    );
    let again = s.get("/version").await;
    assert_ne!(again.header("x-toxiproxy-request-id"), Some(id.as_str()));
}

#[tokio::test]
async fn request_id_on_every_matched_route_including_errors() {
    let s = Server::start();
    for r in [
        s.get("/proxies").await,
        s.get("/proxies/nope").await,
        s.post("/proxies", "{").await,
        s.post("/reset", "").await,
        s.delete("/proxies/nope/toxics/x").await,
    ] {
        let id = r.header("x-toxiproxy-request-id");
        assert_eq!(id.map(str::len), Some(20), "{r:?}");
    }
}

#[tokio::test]
async fn unknown_paths_get_go_404_without_middleware() {
    let s = Server::start();
    for path in [
        "/",
        "/nope",
        "/proxies/",
        "/proxies/a/b",
        "/proxies/a/toxics/b/c",
        "/version/",
        "/metrics",
    ] {
        for ua in [None, Some("Mozilla/5.0 (X11; Linux x86_64)")] {
            let r = s.request_with(Method::GET, path, None, ua).await;
            assert_eq!(r.status, 404, "{path} {ua:?}");
            assert_eq!(r.body, "404 page not found\n", "{path}");
            assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
            assert_eq!(r.header("x-toxiproxy-request-id"), None, "{path}");
        }
    }
}

#[tokio::test]
async fn wrong_method_is_a_bare_405() {
    let s = Server::start();
    let cases = [
        (Method::DELETE, "/version"),
        (Method::POST, "/version"),
        (Method::PUT, "/proxies"),
        (Method::DELETE, "/proxies"),
        (Method::GET, "/populate"),
        (Method::GET, "/reset"),
        (Method::PUT, "/proxies/x"),
        (Method::DELETE, "/proxies/x/toxics"),
        (Method::PUT, "/proxies/x/toxics/y"),
    ];
    for (method, path) in cases {
        for ua in [None, Some("Mozilla/5.0")] {
            let r = s.request_with(method.clone(), path, None, ua).await;
            assert_eq!(
                (r.status, r.body.as_str()),
                (405, ""),
                "{method} {path} {ua:?}"
            );
            assert_eq!(
                r.header("x-toxiproxy-request-id"),
                None,
                "405 bypasses the middleware: {method} {path}"
            );
        }
    }
}

#[tokio::test]
async fn browsers_are_refused_on_matched_routes() {
    let s = Server::start();
    for (method, path) in [
        (Method::GET, "/version"),
        (Method::GET, "/proxies"),
        (Method::POST, "/reset"),
        (Method::GET, "/proxies/nope"),
    ] {
        let r = s
            .request_with(
                method.clone(),
                path,
                Some(""),
                Some("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0)"),
            )
            .await;
        assert_eq!(r.status, 403, "{method} {path}");
        assert_eq!(r.body.trim_end_matches('\n'), "User agent not allowed");
        assert!(
            r.header("content-type")
                .is_some_and(|c| c.starts_with("text/plain")),
            "{:?}",
            r.headers
        );
    }
    // Nothing was reset or created by the refused requests; other agents are fine.
    for ua in ["curl/8.5.0", "toxiproxy-cli/2.12.0 (linux/amd64)"] {
        let r = s
            .request_with(Method::GET, "/version", None, Some(ua))
            .await;
        assert_eq!(r.status, 200, "{ua}");
    }
    assert_eq!(s.get("/version").await.status, 200, "no User-Agent at all");
    // Unlike Toxiproxy, the check ignores case (the same exact answer).
    for ua in ["mozilla/5.0", "MOZILLA/5.0 (X11)"] {
        let r = s
            .request_with(Method::GET, "/version", None, Some(ua))
            .await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (403, "User agent not allowed\n"),
            "{ua}"
        );
    }
}

#[tokio::test]
async fn bodies_are_decoded_leniently() {
    let s = Server::start();
    let up = echo_upstream().await;
    // Unknown fields ignored; no Content-Type at all (reqwest sends none for a raw body).
    let r = s
        .post(
            "/proxies",
            &json!({"name": "a", "listen": "127.0.0.1:0", "upstream": up.addr.to_string(),
                    "colour": "blue", "Logger": {}})
            .to_string(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(
        !r.body.ends_with('\n'),
        "success bodies have no trailing newline"
    );
    // Reset ignores its body, whatever it is.
    for body in ["", "garbage", "{\"x\":1}"] {
        let r = s.post("/reset", body).await;
        assert_eq!((r.status, r.body.as_str()), (204, ""), "{body:?}");
    }
}

// --- §2 error catalogue ---------------------------------------------------------------

#[tokio::test]
async fn catalogue_bad_request_body() {
    let s = Server::start();
    let up = echo_upstream().await;
    s.proxy("p", up.addr).await;
    s.toxic("p", json!({"type": "latency", "name": "t"})).await;
    let cases: Vec<(Method, &str, &str, &[&str])> = vec![
        (Method::POST, "/proxies", "{", &[]),
        (
            Method::POST,
            "/proxies",
            r#"{"name": 5, "upstream": "a:1"}"#,
            &["name"],
        ),
        (
            Method::POST,
            "/proxies",
            r#"{"name": "x", "upstream": "a:1", "enabled": "yes"}"#,
            &["enabled"],
        ),
        (
            Method::POST,
            "/proxies",
            r#"{"name": "x", "upstream": ["a:1"]}"#,
            &["upstream"],
        ),
        (Method::POST, "/proxies/p", "{nope", &[]),
        (
            Method::PATCH,
            "/proxies/p",
            r#"{"enabled": 1}"#,
            &["enabled"],
        ),
        (
            Method::POST,
            "/proxies/p",
            r#"{"listen": false}"#,
            &["listen"],
        ),
        (Method::POST, "/proxies/p/toxics", "not json", &[]),
        (
            Method::POST,
            "/proxies/p/toxics",
            r#"{"type": "latency", "toxicity": "high"}"#,
            &["toxicity"],
        ),
        (
            Method::POST,
            "/proxies/p/toxics",
            r#"{"type": 7}"#,
            &["type"],
        ),
        (
            Method::POST,
            "/proxies/p/toxics",
            r#"{"type": "latency", "stream": 1}"#,
            &["stream"],
        ),
        (
            Method::POST,
            "/proxies/p/toxics",
            r#"{"type": "latency", "attributes": {"latency": "slow"}}"#,
            &["latency"],
        ),
        (
            Method::POST,
            "/proxies/p/toxics",
            r#"{"type": "latency", "attributes": [1]}"#,
            &["attributes"],
        ),
        (Method::PATCH, "/proxies/p/toxics/t", "{", &[]),
        (
            Method::POST,
            "/proxies/p/toxics/t",
            r#"{"toxicity": "x"}"#,
            &["toxicity"],
        ),
        (
            Method::PATCH,
            "/proxies/p/toxics/t",
            r#"{"attributes": {"jitter": true}}"#,
            &["jitter"],
        ),
        (Method::POST, "/populate", "{", &[]),
        (
            Method::POST,
            "/populate",
            r#"[{"name": "a", "upstream": 3}]"#,
            &["upstream"],
        ),
    ];
    for (method, path, body, fields) in cases {
        let r = s.request(method.clone(), path, Some(body)).await;
        let err = r.assert_error_like(400, "bad request body: ", fields);
        assert!(
            err.len() > "bad request body: ".len(),
            "{method} {path}: empty detail"
        );
    }
    // Nothing changed.
    let p = s.get("/proxies/p").await.json();
    assert_eq!(p["enabled"], true);
    assert_eq!(
        p["toxics"][0]["attributes"],
        json!({"latency": 0, "jitter": 0})
    );
    assert_eq!(p["toxics"].as_array().unwrap().len(), 1);
    assert_eq!(s.get("/proxies").await.json().as_object().unwrap().len(), 1);
}

/// Go's decoder refuses a JSON array (or string, number, boolean) where an object is
/// expected; serde would map an array onto the struct's fields by position.
#[tokio::test]
async fn non_object_bodies_are_bad_request_bodies() {
    let s = Server::start();
    let up = echo_upstream().await;
    s.proxy("p", up.addr).await;
    s.toxic("p", json!({"type": "latency", "name": "t"})).await;
    let before = s.get("/proxies").await.body;
    for body in ["[]", "[null, null, false]", "\"p\"", "5", "true"] {
        for (method, path) in [
            (Method::POST, "/proxies"),
            (Method::POST, "/proxies/p"),
            (Method::PATCH, "/proxies/p"),
            (Method::POST, "/proxies/p/toxics"),
            (Method::PATCH, "/proxies/p/toxics/t"),
            (Method::POST, "/proxies/p/toxics/t"),
        ] {
            let r = s.request(method.clone(), path, Some(body)).await;
            r.assert_error_like(400, "bad request body: ", &[]);
        }
    }
    s.patch("/proxies/p/toxics/t", r#"[{"latency": 5}]"#)
        .await
        .assert_error_like(400, "bad request body: ", &[]);
    assert_eq!(s.get("/proxies").await.body, before, "nothing changed");
}

#[tokio::test]
async fn catalogue_missing_fields() {
    let s = Server::start();
    for body in [
        r#"{"upstream": "127.0.0.1:1"}"#,
        r#"{"name": "", "upstream": "127.0.0.1:1"}"#,
        r#"{}"#,
        r#"{"name": null, "upstream": null}"#,
    ] {
        s.post("/proxies", body)
            .await
            .assert_error(400, "missing required field: name");
    }
    for body in [r#"{"name": "a"}"#, r#"{"name": "a", "upstream": ""}"#] {
        s.post("/proxies", body)
            .await
            .assert_error(400, "missing required field: upstream");
    }
    s.post(
        "/populate",
        r#"[{"name": "a", "upstream": "127.0.0.1:1"}, {"upstream": "127.0.0.1:1"}]"#,
    )
    .await
    .assert_error_like(400, "missing required field: name at proxy 2", &[]);
    let r = s
        .post(
            "/populate",
            r#"[{"name": "a", "upstream": "127.0.0.1:1"}, {"name": "b", "upstream": "127.0.0.1:1"}, {"name": "c"}]"#,
        )
        .await;
    r.assert_error_like(400, "missing required field: upstream at proxy 3", &[]);
    assert_eq!(
        r.json()["error"],
        "missing required field: upstream at proxy 3"
    );
    assert_eq!(s.get("/proxies").await.body, "{}", "nothing was created");
}

#[tokio::test]
async fn catalogue_not_found() {
    let s = Server::start();
    let up = echo_upstream().await;
    for (method, path) in [
        (Method::GET, "/proxies/nope"),
        (Method::POST, "/proxies/nope"),
        (Method::PATCH, "/proxies/nope"),
        (Method::DELETE, "/proxies/nope"),
        (Method::GET, "/proxies/nope/toxics"),
        (Method::POST, "/proxies/nope/toxics"),
        (Method::GET, "/proxies/nope/toxics/t"),
        (Method::POST, "/proxies/nope/toxics/t"),
        (Method::PATCH, "/proxies/nope/toxics/t"),
        (Method::DELETE, "/proxies/nope/toxics/t"),
    ] {
        // The proxy is looked up before the body is decoded: even a bad body gets 404.
        let r = s
            .request(method.clone(), path, Some(r#"{"type": "latency"}"#))
            .await;
        r.assert_error(404, "proxy not found");
        let r = s.request(method.clone(), path, Some("{")).await;
        r.assert_error(404, "proxy not found");
    }
    s.proxy("p", up.addr).await;
    for method in [Method::GET, Method::POST, Method::PATCH, Method::DELETE] {
        let r = s
            .request(method.clone(), "/proxies/p/toxics/nope", Some("{}"))
            .await;
        r.assert_error(404, "toxic not found");
    }
    s.request(Method::PATCH, "/proxies/p/toxics/nope", Some("{"))
        .await
        .assert_error(404, "toxic not found");
}

#[tokio::test]
async fn catalogue_conflicts() {
    let s = Server::start();
    let up = echo_upstream().await;
    let addr = s.proxy("p", up.addr).await;
    let r = s
        .post(
            "/proxies",
            &json!({"name": "p", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:9"}).to_string(),
        )
        .await;
    r.assert_error(409, "proxy already exists");
    let p = s.get("/proxies/p").await.json();
    assert_eq!(
        p["upstream"],
        up.addr.to_string(),
        "the existing proxy is untouched"
    );
    assert_eq!(listen_of(&p), addr);

    s.toxic(
        "p",
        json!({"type": "latency", "name": "same", "stream": "upstream"}),
    )
    .await;
    // Same name in the other direction, and with another type: still a conflict.
    for body in [
        json!({"type": "latency", "name": "same", "stream": "downstream"}),
        json!({"type": "bandwidth", "name": "same"}),
        json!({"type": "latency", "name": "same", "stream": "upstream"}),
    ] {
        s.post("/proxies/p/toxics", &body.to_string())
            .await
            .assert_error(409, "toxic already exists");
    }
    // The default name also conflicts.
    s.toxic("p", json!({"type": "noop"})).await;
    s.post("/proxies/p/toxics", r#"{"type": "noop"}"#)
        .await
        .assert_error(409, "toxic already exists");
    assert_eq!(
        s.get("/proxies/p/toxics")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn catalogue_stream_and_type() {
    let s = Server::start();
    let up = echo_upstream().await;
    s.proxy("p", up.addr).await;
    for body in [
        json!({"type": "latency", "stream": "sideways"}),
        json!({"type": "nope", "stream": "both"}),
        json!({"stream": "up"}),
    ] {
        s.post("/proxies/p/toxics", &body.to_string())
            .await
            .assert_error(
                400,
                "stream was invalid, can be either upstream or downstream",
            );
    }
    for body in [
        json!({}),
        json!({"type": ""}),
        json!({"type": "down"}),
        json!({"type": "Latency"}),
        json!({"type": "nope", "stream": "upstream"}),
    ] {
        s.post("/proxies/p/toxics", &body.to_string())
            .await
            .assert_error(400, "invalid toxic type");
    }
    assert_eq!(s.get("/proxies/p/toxics").await.body, "[]");
}

#[tokio::test]
async fn catalogue_listen_failures_are_500() {
    let s = Server::start();
    let up = echo_upstream().await;
    let (held, port) = taken_port().await;
    let body = json!({"name": "p", "listen": format!("127.0.0.1:{port}"),
                      "upstream": up.addr.to_string()})
    .to_string();
    s.post("/proxies", &body)
        .await
        .assert_error(500, &in_use(port));
    s.get("/proxies/p")
        .await
        .assert_error(404, "proxy not found");
    drop(held);
    // A retry after the port is freed succeeds and keeps the given port.
    let r = s.post("/proxies", &body).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(listen_of(&r.json()).port(), port);

    // Update to a taken port or an unresolvable one: 500, configuration unchanged.
    let (held2, port2) = taken_port().await;
    let r = s
        .post(
            "/proxies/p",
            &json!({"listen": format!("127.0.0.1:{port2}")}).to_string(),
        )
        .await;
    r.assert_error(500, &in_use(port2));
    drop(held2);
    s.patch("/proxies/p", r#"{"listen": ":bad"}"#)
        .await
        .assert_error(500, "address tcp/bad: unknown port");
    s.patch("/proxies/p", r#"{"listen": "127.0.0.1:notaport"}"#)
        .await
        .assert_error_like(500, "", &[]);
    let p = s.get("/proxies/p").await.json();
    assert_eq!(listen_of(&p).port(), port, "{p}");
    assert_eq!(p["enabled"], true);
    let mut c = connect(listen_of(&p)).await;
    let (back, _) = round_trip(&mut c, b"still here", SHORT).await;
    assert_eq!(back, b"still here");
}

// --- §3 objects and §4 status codes ---------------------------------------------------

#[tokio::test]
async fn proxy_json_field_order_and_listen_rewrite() {
    let s = Server::start();
    let up = echo_upstream().await;
    assert_eq!(s.get("/proxies").await.body, "{}");
    let r = s
        .post(
            "/proxies",
            &json!({"name": "redis", "listen": "127.0.0.1:0", "upstream": up.addr.to_string()})
                .to_string(),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let addr = listen_of(&r.json());
    assert_ne!(addr.port(), 0, "listen is rewritten to the bound port");
    let expected = format!(
        r#"{{"name":"redis","listen":"127.0.0.1:{}","upstream":"{}","enabled":true,"toxics":[]}}"#,
        addr.port(),
        up.addr
    );
    assert_eq!(r.body, expected);
    assert_eq!(s.get("/proxies/redis").await.body, expected);
    assert_eq!(
        s.get("/proxies").await.body,
        format!(r#"{{"redis":{expected}}}"#)
    );

    // localhost:0 resolves to 127.0.0.1 and a real port.
    let r = s
        .post(
            "/proxies",
            &json!({"name": "lh", "listen": "localhost:0", "upstream": "localhost:6379"})
                .to_string(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    assert_eq!(listen_of(&v).ip().to_string(), "127.0.0.1");
    assert_ne!(listen_of(&v).port(), 0);
    assert_eq!(
        v["upstream"], "localhost:6379",
        "upstream is stored verbatim"
    );

    // No listen at all: every interface, a random port (Go prints `[::]:PORT`).
    let r = s
        .post(
            "/proxies",
            &json!({"name": "any", "upstream": up.addr.to_string()}).to_string(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let any = listen_of(&r.json());
    assert!(any.ip().is_unspecified() && any.port() != 0, "{any}");
    assert_eq!(r.json()["listen"], format!("[::]:{}", any.port()));

    // A proxy created disabled keeps its listen string until it starts.
    let r = s
        .post(
            "/proxies",
            &json!({"name": "off", "listen": "127.0.0.1:0", "upstream": up.addr.to_string(),
                    "enabled": false})
            .to_string(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["listen"], "127.0.0.1:0");
    assert_eq!(r.json()["enabled"], false);
    let on = s.set_enabled("off", true).await;
    assert_ne!(listen_of(&on).port(), 0);
    assert_eq!(on["enabled"], true);
}

#[tokio::test]
async fn toxic_json_field_order_defaults_and_status_codes() {
    let s = Server::start();
    let up = echo_upstream().await;
    s.proxy("p", up.addr).await;
    let r = s
        .post(
            "/proxies/p/toxics",
            r#"{"type": "latency", "attributes": {"latency": 100}}"#,
        )
        .await;
    assert_eq!(r.status, 200, "create toxic is 200, not 201");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.body,
        r#"{"attributes":{"latency":100,"jitter":0},"name":"latency_downstream","type":"latency","stream":"downstream","toxicity":1}"#
    );
    let r = s.get("/proxies/p/toxics/latency_downstream").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        r#"{"attributes":{"latency":100,"jitter":0},"name":"latency_downstream","type":"latency","stream":"downstream","toxicity":1}"#
    );

    // Every type shows every attribute, defaults filled.
    let expected = [
        ("bandwidth", json!({"rate": 0})),
        ("slow_close", json!({"delay": 0})),
        ("timeout", json!({"timeout": 0})),
        ("reset_peer", json!({"timeout": 0})),
        (
            "slicer",
            json!({"average_size": 0, "size_variation": 0, "delay": 0}),
        ),
        ("limit_data", json!({"bytes": 0})),
        ("noop", json!({})),
    ];
    for (ty, attrs) in &expected {
        let v = s
            .toxic("p", json!({"type": ty, "stream": "upstream"}))
            .await;
        assert_eq!(v["attributes"], *attrs, "{ty}");
        assert_eq!(v["name"], format!("{ty}_upstream"));
    }
    let r = s
        .post("/proxies/p/toxics", r#"{"type": "slicer", "name": "s2"}"#)
        .await;
    assert!(
        r.body
            .starts_with(r#"{"attributes":{"average_size":0,"size_variation":0,"delay":0},"#),
        "{}",
        r.body
    );

    // Stream case is parsed leniently and echoed verbatim, also in the default name.
    let v = s
        .toxic("p", json!({"type": "latency", "stream": "UPSTREAM"}))
        .await;
    assert_eq!(
        (v["name"].as_str(), v["stream"].as_str()),
        (Some("latency_UPSTREAM"), Some("UPSTREAM"))
    );

    // Toxicity is not validated and is rendered like a Go float32.
    for (i, (tox, rendered)) in [
        (json!(0.5), "0.5"),
        (json!(0), "0"),
        (json!(1.5), "1.5"),
        (json!(-1), "-1"),
        (json!(0.25), "0.25"),
    ]
    .into_iter()
    .enumerate()
    {
        let r = s
            .post(
                "/proxies/p/toxics",
                &json!({"type": "noop", "name": format!("n{i}"), "toxicity": tox}).to_string(),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            r.body.ends_with(&format!(r#""toxicity":{rendered}}}"#)),
            "{}",
            r.body
        );
    }

    // Listing: upstream toxics first, then downstream, each in insertion order.
    let names: Vec<String> = s
        .get("/proxies/p/toxics")
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    let mut expected_names: Vec<String> = expected
        .iter()
        .map(|(ty, _)| format!("{ty}_upstream"))
        .collect();
    expected_names.push("latency_UPSTREAM".into());
    expected_names
        .extend(["latency_downstream", "s2", "n0", "n1", "n2", "n3", "n4"].map(String::from));
    assert_eq!(names, expected_names);
    assert_eq!(
        s.get("/proxies/p").await.json()["toxics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>(),
        expected_names
    );

    // Update (POST and PATCH) is 200, delete 204 with an empty body.
    let r = s
        .post(
            "/proxies/p/toxics/latency_downstream",
            r#"{"toxicity": 0.5}"#,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let r = s
        .patch("/proxies/p/toxics/latency_downstream", r#"{"toxicity": 1}"#)
        .await;
    assert_eq!(r.status, 200);
    let r = s.delete("/proxies/p/toxics/latency_downstream").await;
    assert_eq!((r.status, r.body.as_str()), (204, ""));
    s.get("/proxies/p/toxics/latency_downstream")
        .await
        .assert_error(404, "toxic not found");
}

#[tokio::test]
async fn proxy_status_codes_and_delete() {
    let s = Server::start();
    let up = echo_upstream().await;
    let addr = s.proxy("p", up.addr).await;
    let r = s.post("/proxies/p", "{}").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        listen_of(&r.json()),
        addr,
        "an empty update changes nothing"
    );
    let r = s.patch("/proxies/p", r#"{"name": "renamed"}"#).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["name"], "p", "name is immutable");
    s.get("/proxies/renamed")
        .await
        .assert_error(404, "proxy not found");

    let mut live = connect(addr).await;
    round_trip(&mut live, b"hi", SHORT).await;
    let r = s.delete("/proxies/p").await;
    assert_eq!((r.status, r.body.as_str()), (204, ""));
    assert_ne!(
        wait_closed(&mut live, SHORT).await,
        End::TimedOut,
        "delete closes clients"
    );
    s.get("/proxies/p")
        .await
        .assert_error(404, "proxy not found");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
    s.delete("/proxies/p")
        .await
        .assert_error(404, "proxy not found");
}

// --- partial updates -----------------------------------------------------------------

#[tokio::test]
async fn proxy_partial_updates() {
    let s = Server::start();
    let up = echo_upstream().await;
    let up2 = echo_upstream().await;
    let addr = s.proxy("p", up.addr).await;
    s.toxic(
        "p",
        json!({"type": "latency", "attributes": {"latency": 1}}),
    )
    .await;

    let v = s.set_enabled("p", false).await;
    assert_eq!(v["enabled"], false);
    assert_eq!(listen_of(&v), addr, "listen kept while disabled");
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert_eq!(
        refused.map(|_| ()).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionRefused)
    );
    // Disabling twice is fine.
    assert_eq!(s.set_enabled("p", false).await["enabled"], false);

    let v = s.set_enabled("p", true).await;
    assert_eq!(listen_of(&v), addr, "re-enabling binds the same port");
    assert_eq!(v["toxics"].as_array().unwrap().len(), 1, "toxics survive");
    let mut c = connect(addr).await;
    assert_eq!(round_trip(&mut c, b"abc", SHORT).await.0, b"abc");

    // Upstream only: listen and enabled keep their values, toxics survive.
    let v = s
        .patch(
            "/proxies/p",
            &json!({"upstream": up2.addr.to_string()}).to_string(),
        )
        .await
        .json();
    assert_eq!(v["upstream"], up2.addr.to_string());
    assert_eq!(listen_of(&v), addr);
    assert_eq!(v["enabled"], true);
    assert_eq!(v["toxics"][0]["name"], "latency_downstream");
    // The changed upstream restarted the proxy: the old connection is closed.
    assert_ne!(wait_closed(&mut c, SHORT).await, End::TimedOut);
    let before = up2.accepted.load(std::sync::atomic::Ordering::Relaxed);
    let mut c = connect(addr).await;
    assert_eq!(round_trip(&mut c, b"xyz", SHORT).await.0, b"xyz");
    assert_eq!(
        up2.accepted.load(std::sync::atomic::Ordering::Relaxed),
        before + 1
    );

    // A no-op update (same listen spelled as localhost) keeps live connections.
    let v = s
        .post(
            "/proxies/p",
            &json!({"listen": format!("localhost:{}", addr.port()), "enabled": true}).to_string(),
        )
        .await;
    assert_eq!(v.status, 200, "{}", v.body);
    assert_eq!(round_trip(&mut c, b"still", SHORT).await.0, b"still");

    // Disabling via update while changing nothing else closes the live connection.
    s.set_enabled("p", false).await;
    assert_ne!(wait_closed(&mut c, SHORT).await, End::TimedOut);
}

#[tokio::test]
async fn toxic_partial_updates_merge() {
    let s = Server::start();
    let up = echo_upstream().await;
    s.proxy("p", up.addr).await;
    s.toxic(
        "p",
        json!({"type": "latency", "name": "lat", "stream": "upstream", "toxicity": 0.5,
               "attributes": {"latency": 100, "jitter": 5}}),
    )
    .await;
    let v = s
        .update_toxic("p", "lat", json!({"attributes": {"latency": 200}}))
        .await;
    assert_eq!(
        v,
        json!({"attributes": {"latency": 200, "jitter": 5}, "name": "lat", "type": "latency",
               "stream": "upstream", "toxicity": 0.5})
    );
    let raw = s.get("/proxies/p/toxics/lat").await.body;
    assert_eq!(
        raw,
        r#"{"attributes":{"latency":200,"jitter":5},"name":"lat","type":"latency","stream":"upstream","toxicity":0.5}"#
    );
    // name/type/stream in the body are ignored; toxicity alone keeps the attributes.
    let r = s
        .post(
            "/proxies/p/toxics/lat",
            r#"{"name": "other", "type": "bandwidth", "stream": "downstream", "toxicity": 1}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body,
        r#"{"attributes":{"latency":200,"jitter":5},"name":"lat","type":"latency","stream":"upstream","toxicity":1}"#
    );
    // An empty body changes nothing.
    let r = s.patch("/proxies/p/toxics/lat", "{}").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, s.get("/proxies/p/toxics/lat").await.body);
    s.get("/proxies/p/toxics/other")
        .await
        .assert_error(404, "toxic not found");
}

// --- bad input: 400 naming the field, nothing changed ------------------------------------

#[tokio::test]
async fn out_of_range_attributes_are_refused_and_change_nothing() {
    let s = Server::start();
    let up = echo_upstream().await;
    s.proxy("p", up.addr).await;
    s.toxic("p", json!({"type": "latency", "name": "lat", "attributes": {"latency": 10, "jitter": 1}, "toxicity": 0.5}))
        .await;
    let before = s.get("/proxies/p").await.body;

    let bad_attrs = [
        (json!({"latency": -5}), "latency"),
        (json!({"jitter": -1}), "jitter"),
        (json!({"latency": 1.5}), "latency"),
        (json!({"latency": 1e30}), "latency"),
        (json!({"latency": u64::MAX}), "latency"),
        (json!({"latency": 9_223_372_036_854_775_808_u64}), "latency"),
        (json!({"latency": "10"}), "latency"),
        (json!({"latency": [10]}), "latency"),
        (json!({"latency": 20, "jitter": -1}), "jitter"),
    ];
    for (attrs, field) in &bad_attrs {
        // On create (a second toxic)...
        let r = s
            .post(
                "/proxies/p/toxics",
                &json!({"type": "latency", "name": "new", "attributes": attrs}).to_string(),
            )
            .await;
        let err = r.assert_error_like(400, "", &[field]);
        assert!(
            err.starts_with("bad request body: ") || err.starts_with("invalid value for "),
            "{err}"
        );
        // ...and on update of the existing one.
        let r = s
            .patch(
                "/proxies/p/toxics/lat",
                &json!({"attributes": attrs}).to_string(),
            )
            .await;
        r.assert_error_like(400, "", &[field]);
    }
    // Negative values say so, with the value.
    let r = s
        .patch(
            "/proxies/p/toxics/lat",
            r#"{"attributes": {"latency": -5}}"#,
        )
        .await;
    r.assert_error(
        400,
        "invalid value for attributes.latency: must not be negative, got -5",
    );
    for (ty, attr) in [
        ("bandwidth", "rate"),
        ("slow_close", "delay"),
        ("timeout", "timeout"),
        ("reset_peer", "timeout"),
        ("slicer", "average_size"),
        ("slicer", "size_variation"),
        ("slicer", "delay"),
        ("limit_data", "bytes"),
    ] {
        for bad in [json!(-1), json!(0.5), json!(1e300), json!("1")] {
            let r = s
                .post(
                    "/proxies/p/toxics",
                    &json!({"type": ty, "name": "x", "attributes": {attr: bad}}).to_string(),
                )
                .await;
            r.assert_error_like(400, "", &[attr]);
        }
    }
    // Bad toxicity types.
    for tox in [json!("high"), json!([1]), json!({})] {
        let r = s
            .patch(
                "/proxies/p/toxics/lat",
                &json!({"toxicity": tox}).to_string(),
            )
            .await;
        r.assert_error_like(400, "bad request body: ", &["toxicity"]);
    }
    assert_eq!(s.get("/proxies/p").await.body, before, "nothing changed");
}

#[tokio::test]
async fn bad_upstreams_are_refused_and_change_nothing() {
    let s = Server::start();
    let up = echo_upstream().await;
    let addr = s.proxy("p", up.addr).await;
    let before = s.get("/proxies/p").await.body;
    for bad in [
        "nonsense",
        "host:",
        ":80",
        "host:99999",
        "host:http",
        "127.0.0.1",
    ] {
        let r = s
            .post(
                "/proxies",
                &json!({"name": "q", "listen": "127.0.0.1:0", "upstream": bad}).to_string(),
            )
            .await;
        r.assert_error_like(400, "", &["upstream"]);
        let r = s
            .patch("/proxies/p", &json!({"upstream": bad}).to_string())
            .await;
        r.assert_error_like(400, "", &["upstream"]);
        let r = s
            .post(
                "/populate",
                &json!([{"name": "p", "listen": "127.0.0.1:0", "upstream": bad}]).to_string(),
            )
            .await;
        r.assert_error_like(400, "", &["upstream"]);
    }
    s.get("/proxies/q")
        .await
        .assert_error(404, "proxy not found");
    assert_eq!(s.get("/proxies/p").await.body, before);
    let mut c = connect(addr).await;
    assert_eq!(round_trip(&mut c, b"ok", SHORT).await.0, b"ok");
}

// --- create with toxics (our extension) --------------------------------------------------

#[tokio::test]
async fn create_with_toxics_is_atomic() {
    let s = Server::start();
    let up = echo_upstream().await;
    let r = s
        .post(
            "/proxies",
            &json!({"name": "p", "listen": "127.0.0.1:0", "upstream": up.addr.to_string(),
            "toxics": [
                {"type": "latency", "attributes": {"latency": 300}},
                {"type": "noop", "stream": "upstream", "name": "n"},
            ]})
            .to_string(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    let addr = listen_of(&v);
    assert_eq!(
        v["toxics"],
        json!([
            {"attributes": {}, "name": "n", "type": "noop", "stream": "upstream", "toxicity": 1},
            {"attributes": {"latency": 300, "jitter": 0}, "name": "latency_downstream",
             "type": "latency", "stream": "downstream", "toxicity": 1},
        ])
    );
    // The very first connection already has the latency.
    let mut c = connect(addr).await;
    let (back, took) = round_trip(&mut c, b"x", SHORT).await;
    assert_eq!(back, b"x");
    assert!(
        took >= Duration::from_millis(290),
        "first connection not delayed: {took:?}"
    );

    // Any bad toxic refuses the whole proxy.
    let base = json!({"name": "q", "listen": "127.0.0.1:0", "upstream": up.addr.to_string()});
    let cases = [
        (
            json!([{"type": "latency"}, {"type": "nope"}]),
            400,
            "invalid toxic type",
        ),
        (
            json!([{"type": "latency", "stream": "x"}]),
            400,
            "stream was invalid, can be either upstream or downstream",
        ),
        (
            json!([{"type": "noop"}, {"type": "noop"}]),
            409,
            "toxic already exists",
        ),
    ];
    for (toxics, status, text) in cases {
        let mut body = base.clone();
        body["toxics"] = toxics;
        s.post("/proxies", &body.to_string())
            .await
            .assert_error(status, text);
    }
    let mut body = base.clone();
    body["toxics"] = json!([{"type": "latency", "attributes": {"latency": -1}}]);
    s.post("/proxies", &body.to_string())
        .await
        .assert_error_like(400, "", &["latency"]);
    s.get("/proxies/q")
        .await
        .assert_error(404, "proxy not found");
}

// --- §5 populate -------------------------------------------------------------------

#[tokio::test]
async fn populate_creates_in_input_order() {
    let s = Server::start();
    let up = echo_upstream().await;
    let r = s
        .post(
            "/populate",
            &json!([
                {"name": "b", "listen": "127.0.0.1:0", "upstream": up.addr.to_string()},
                {"name": "a", "listen": "127.0.0.1:0", "upstream": up.addr.to_string(), "enabled": false},
                {"name": "c", "listen": "127.0.0.1:0", "upstream": up.addr.to_string(),
                 "toxics": [{"type": "latency", "attributes": {"latency": 5}}]},
            ])
            .to_string(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    let proxies = v["proxies"].as_array().expect("{\"proxies\": [...]}");
    let names: Vec<&str> = proxies
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b", "a", "c"]);
    assert!(
        r.body
            .starts_with(r#"{"proxies":[{"name":"b","listen":"127.0.0.1:"#),
        "{}",
        r.body
    );
    assert_eq!(proxies[1]["enabled"], false);
    assert_eq!(proxies[1]["listen"], "127.0.0.1:0");
    assert_eq!(proxies[0]["enabled"], true);
    assert_eq!(proxies[2]["toxics"][0]["attributes"]["latency"], 5);
    let mut c = connect(listen_of(&proxies[0])).await;
    assert_eq!(round_trip(&mut c, b"b", SHORT).await.0, b"b");
    // An empty array is fine.
    let r = s.post("/populate", "[]").await;
    assert_eq!((r.status, r.body.as_str()), (201, r#"{"proxies":[]}"#));
}

#[tokio::test]
async fn populate_body_must_be_an_array() {
    let s = Server::start();
    let r = s
        .post("/populate", r#"{"name": "a", "upstream": "127.0.0.1:1"}"#)
        .await;
    r.assert_error_like(400, "bad request body: ", &[]);
    assert_eq!(r.json()["proxies"], Value::Null);
    assert!(
        r.json().as_object().unwrap().contains_key("proxies"),
        "{}",
        r.body
    );
    assert_eq!(s.get("/proxies").await.body, "{}");
}

#[tokio::test]
async fn populate_validates_everything_first() {
    let s = Server::start();
    let up = echo_upstream().await;
    let addr = s.proxy("keep", up.addr).await;
    let before = s.get("/proxies").await.body;
    let r = s
        .post(
            "/populate",
            &json!([
                {"name": "new", "listen": "127.0.0.1:0", "upstream": up.addr.to_string()},
                {"name": "keep", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:9"},
                {"name": "broken", "listen": "127.0.0.1:0"},
            ])
            .to_string(),
        )
        .await;
    r.assert_error_like(400, "missing required field: upstream at proxy 3", &[]);
    assert_eq!(s.get("/proxies").await.body, before, "nothing changed");
    let mut c = connect(addr).await;
    assert_eq!(round_trip(&mut c, b"k", SHORT).await.0, b"k");
    // A bad toxic in a later entry also refuses the whole body.
    let r = s
        .post(
            "/populate",
            &json!([
                {"name": "new", "listen": "127.0.0.1:0", "upstream": up.addr.to_string()},
                {"name": "x", "listen": "127.0.0.1:0", "upstream": up.addr.to_string(),
                 "toxics": [{"type": "nope"}]},
            ])
            .to_string(),
        )
        .await;
    r.assert_error_like(400, "invalid toxic type", &[]);
    assert_eq!(s.get("/proxies").await.body, before);
}

#[tokio::test]
async fn populate_keeps_unchanged_proxies_and_replaces_changed_ones() {
    let s = Server::start();
    let up = echo_upstream().await;
    let up2 = echo_upstream().await;
    let keep = s.proxy("keep", up.addr).await;
    let change = s.proxy("change", up.addr).await;
    let off = s.proxy("off", up.addr).await;
    s.toxic(
        "keep",
        json!({"type": "latency", "name": "k", "attributes": {"latency": 1}}),
    )
    .await;
    s.toxic("change", json!({"type": "latency", "name": "c"}))
        .await;
    s.set_enabled("off", false).await;
    let mut kept_conn = connect(keep).await;
    round_trip(&mut kept_conn, b"1", SHORT).await;
    let mut changed_conn = connect(change).await;
    round_trip(&mut changed_conn, b"1", SHORT).await;

    let r = s
        .post(
            "/populate",
            &json!([
                // Same resolved listen (spelled differently) and upstream: untouched.
                {"name": "keep", "listen": format!("localhost:{}", keep.port()),
                 "upstream": up.addr.to_string()},
                // Same address, new upstream: replaced (toxics lost, connections dropped).
                {"name": "change", "listen": change.to_string(), "upstream": up2.addr.to_string()},
                // Unchanged and disabled: stays disabled even though enabled defaults to true.
                {"name": "off", "listen": off.to_string(), "upstream": up.addr.to_string()},
            ])
            .to_string(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    let ps = v["proxies"].as_array().unwrap();
    assert_eq!(
        ps[0]["toxics"][0]["name"], "k",
        "kept proxy shows its toxics"
    );
    assert_eq!(listen_of(&ps[0]), keep);
    assert_eq!(ps[1]["upstream"], up2.addr.to_string());
    assert_eq!(ps[1]["toxics"], json!([]));
    assert_eq!(listen_of(&ps[1]), change);
    assert_eq!(ps[2]["enabled"], false);

    assert_eq!(
        round_trip(&mut kept_conn, b"still", SHORT).await.0,
        b"still"
    );
    assert_ne!(wait_closed(&mut changed_conn, SHORT).await, End::TimedOut);
    let mut c = connect(change).await;
    assert_eq!(round_trip(&mut c, b"new", SHORT).await.0, b"new");
    assert_eq!(up2.accepted.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(s.get("/proxies/keep/toxics").await.json()[0]["name"], "k");
}

#[tokio::test]
async fn populate_failure_changes_nothing() {
    // Unlike Toxiproxy, which keeps the proxies processed before the failure (issue 10:
    // a failed request changes nothing); the error keeps Toxiproxy's shape.
    let s = Server::start();
    let up = echo_upstream().await;
    let (held, port) = taken_port().await;
    let r = s
        .post(
            "/populate",
            &json!([
                {"name": "first", "listen": "127.0.0.1:0", "upstream": up.addr.to_string()},
                {"name": "clash", "listen": format!("127.0.0.1:{port}"), "upstream": up.addr.to_string()},
                {"name": "never", "listen": "127.0.0.1:0", "upstream": up.addr.to_string()},
            ])
            .to_string(),
        )
        .await;
    assert_eq!(r.status, 500, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert!(r.body.ends_with("}\n"));
    let head = format!(
        r#"{{"error":"{}","status":500,"proxies":[]}}"#,
        in_use(port)
    );
    assert!(r.body.starts_with(&head), "field order: {}", r.body);
    // Nothing was created.
    s.get("/proxies/first")
        .await
        .assert_error(404, "proxy not found");
    s.get("/proxies/clash")
        .await
        .assert_error(404, "proxy not found");
    s.get("/proxies/never")
        .await
        .assert_error(404, "proxy not found");
    drop(held);
}

// --- reset ---------------------------------------------------------------------------

#[tokio::test]
async fn reset_enables_everything_and_removes_toxics() {
    let s = Server::start();
    let up = echo_upstream().await;
    let a = s.proxy("a", up.addr).await;
    s.proxy("b", up.addr).await;
    s.toxic(
        "a",
        json!({"type": "latency", "attributes": {"latency": 2000}}),
    )
    .await;
    s.toxic("b", json!({"type": "bandwidth", "stream": "upstream"}))
        .await;
    s.set_enabled("b", false).await;
    let r = s
        .post(
            "/proxies",
            &json!({"name": "c", "listen": "127.0.0.1:0", "upstream": up.addr.to_string(),
                    "enabled": false})
            .to_string(),
        )
        .await;
    assert_eq!(r.status, 201);

    let mut live = connect(a).await;
    let r = s.post("/reset", "").await;
    assert_eq!((r.status, r.body.as_str()), (204, ""));
    let all = s.get("/proxies").await.json();
    assert_eq!(all.as_object().unwrap().len(), 3, "proxies are not deleted");
    for (name, p) in all.as_object().unwrap() {
        assert_eq!(p["enabled"], true, "{name}");
        assert_eq!(p["toxics"], json!([]), "{name}");
        assert_ne!(listen_of(p).port(), 0, "{name}");
        let mut c = connect(listen_of(p)).await;
        assert_eq!(round_trip(&mut c, b"r", SHORT).await.0, b"r", "{name}");
    }
    // The live connection lost its 2 s latency at once.
    let (_, took) = round_trip(&mut live, b"fast", SHORT).await;
    assert!(
        took < Duration::from_millis(1500),
        "latency still applied: {took:?}"
    );
}

#[tokio::test]
async fn reset_fails_with_500_when_a_port_is_taken() {
    let s = Server::start();
    let up = echo_upstream().await;
    let addr = s.proxy("p", up.addr).await;
    s.set_enabled("p", false).await;
    let held = tokio::net::TcpListener::bind(addr).await.unwrap();
    s.post("/reset", "")
        .await
        .assert_error(500, &in_use(addr.port()));
    drop(held);
    assert_eq!(s.post("/reset", "").await.status, 204);
    assert_eq!(s.get("/proxies/p").await.json()["enabled"], true);
}

// --- §7 metrics ----------------------------------------------------------------------

/// The value of the sample of `metric` whose labels contain every `labels` pair.
fn sample(text: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{metric}{{")) || l.starts_with(&format!("{metric} ")))
        .find(|l| labels.iter().all(|p| l.contains(p)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_only_routed_with_a_flag() {
    let s = Server::start();
    let r = s.get("/metrics").await;
    assert_eq!((r.status, r.body.as_str()), (404, "404 page not found\n"));

    let s = Server::builder().metrics(false, true).start();
    let r = s.get("/metrics").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.body.contains("toxiproxy_proxy_"), "{}", r.body);
    assert!(r.body.contains("process_"), "{}", r.body);
    let r = s.post("/metrics", "").await;
    assert_eq!(r.status, 200, "any method");
}

#[tokio::test]
async fn proxy_metrics_count_bytes() {
    let s = Server::builder().metrics(true, false).start();
    let up = echo_upstream().await;
    let addr = s.proxy("m", up.addr).await;
    let mut c = connect(addr).await;
    let data = pattern(1000, 1);
    assert_eq!(round_trip(&mut c, &data, SHORT).await.0, data);
    c.shutdown().await.unwrap();
    drop(c);
    let deadline = std::time::Instant::now() + SHORT;
    let mut last;
    loop {
        let r = s.get("/metrics").await;
        assert_eq!(r.status, 200);
        last = r.body;
        let done = [
            (
                "toxiproxy_proxy_received_bytes_total",
                "direction=\"upstream\"",
            ),
            ("toxiproxy_proxy_sent_bytes_total", "direction=\"upstream\""),
            (
                "toxiproxy_proxy_received_bytes_total",
                "direction=\"downstream\"",
            ),
            (
                "toxiproxy_proxy_sent_bytes_total",
                "direction=\"downstream\"",
            ),
        ]
        .iter()
        .all(|(m, d)| sample(&last, m, &[d, "proxy=\"m\""]) == Some(1000.0));
        if done || std::time::Instant::now() > deadline {
            assert!(done, "byte counters did not reach 1000:\n{last}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(last.contains(&format!("listener=\"{addr}\"")), "{last}");
    assert!(
        last.contains(&format!("upstream=\"{}\"", up.addr)),
        "{last}"
    );
}

/// Issue 14: Toxiproxy's e2e script greps `/metrics` for its exact lines: Prometheus text
/// 0.0.4 (no `# EOF`, `# TYPE x_total counter`), labels sorted by name as client_golang
/// writes them. OpenMetrics only when the `Accept` header asks for it.
#[tokio::test]
async fn metrics_answer_prometheus_text_as_toxiproxy_unless_openmetrics_is_asked() {
    let s = Server::builder().metrics(true, false).start();
    let up = echo_upstream().await;
    let addr = s.proxy("e2e", up.addr).await;
    let mut c = connect(addr).await;
    let data = pattern(10, 3);
    assert_eq!(round_trip(&mut c, &data, SHORT).await.0, data);
    c.shutdown().await.unwrap();
    drop(c);
    let line = format!(
        "toxiproxy_proxy_received_bytes_total{{direction=\"upstream\",listener=\"{addr}\",proxy=\"e2e\",upstream=\"{}\"}} 10",
        up.addr
    );
    let deadline = std::time::Instant::now() + SHORT;
    let r = loop {
        let r = s.get("/metrics").await;
        if r.body.lines().any(|l| l == line) || std::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        r.body.lines().any(|l| l == line),
        "no {line:?} in\n{}",
        r.body
    );
    assert_eq!(
        r.headers.get("content-type").unwrap(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    for expected in [
        "# TYPE toxiproxy_proxy_received_bytes_total counter",
        "# TYPE toxiproxy_proxy_sent_bytes_total counter",
        "# TYPE downtime_proxy_active_connections gauge",
    ] {
        assert!(
            r.body.lines().any(|l| l == expected),
            "no {expected:?} in\n{}",
            r.body
        );
    }
    assert!(!r.body.contains("# EOF"), "{}", r.body);
    assert!(!r.body.contains("_created"), "{}", r.body);

    let open = raw_get(
        &s,
        "/metrics",
        &[
            &format!("Host: 127.0.0.1:{}", s.addr().port()),
            "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        ],
    )
    .await;
    assert!(
        open.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{open}"
    );
    assert!(
        open.contains("# TYPE toxiproxy_proxy_received_bytes counter"),
        "{open}"
    );
    assert!(open.contains("# EOF"), "{open}");
}

// --- issue 10: web pages cannot use the control API --------------------------------------

/// A raw `GET path` to the API with the given header lines.
async fn raw_get(s: &Server, path: &str, headers: &[&str]) -> String {
    raw_http(s.addr(), &raw_request("GET", path, headers)).await
}

#[tokio::test]
async fn hosts_other_than_loopback_or_allowed_names_are_refused() {
    let s = Server::start_with(downtime_server::ServeOptions {
        grace: Duration::from_secs(2),
        api_allow_hosts: vec!["Downtime.Internal".to_owned()],
        ..downtime_server::ServeOptions::default()
    });
    let port = s.addr().port();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        "127.0.0.1".to_owned(),
        format!("downtime.internal:{port}"),
        "DOWNTIME.INTERNAL".to_owned(),
    ] {
        let answer = raw_get(&s, "/version", &[&format!("Host: {host}")]).await;
        assert_eq!(raw_status(&answer), 200, "{host}: {answer}");
    }
    // A DNS-rebinding page sends its own name; a create through it changes nothing.
    for host in [
        format!("rebind.attacker.example:{port}"),
        format!("localhost.attacker.example:{port}"),
        format!("10.9.8.7:{port}"),
    ] {
        let create = format!(
            "POST /proxies HTTP/1.1\r\nHost: {host}\r\nContent-Length: 55\r\nConnection: close\r\n\r\n\
             {{\"name\":\"x\",\"listen\":\"127.0.0.1:0\",\"upstream\":\"a:1\"}}"
        );
        for answer in [
            raw_get(&s, "/version", &[&format!("Host: {host}")]).await,
            raw_http(s.addr(), &create).await,
            raw_get(&s, "/drills/runs", &[&format!("Host: {host}")]).await,
        ] {
            assert_eq!(raw_status(&answer), 403, "{host}: {answer}");
            let error: Value = serde_json::from_str(raw_body(&answer)).unwrap();
            assert_eq!(error["status"], 403);
            let text = error["error"].as_str().unwrap();
            assert!(
                text.contains(&format!("{host:?}")) && text.contains("--api-allow-host"),
                "{text}"
            );
        }
    }
    assert_eq!(s.get("/proxies").await.body, "{}", "nothing was created");
    // Unknown paths keep Go's plain 404 whatever the host.
    let answer = raw_get(&s, "/nope", &["Host: rebind.attacker.example"]).await;
    assert_eq!(raw_status(&answer), 404, "{answer}");
}

#[tokio::test]
async fn requests_from_web_pages_are_refused_on_every_control_route() {
    let s = Server::start();
    let host = format!("Host: 127.0.0.1:{}", s.addr().port());
    let page_headers = [
        "Origin: http://attacker.example",
        "Origin: null",
        "Sec-Fetch-Site: cross-site",
        "Sec-Fetch-Site: same-origin",
        "sec-fetch-dest: empty",
        "Sec-Fetch-User: ?1",
    ];
    for path in ["/version", "/proxies", "/drills/runs", "/webhooks", "/halt"] {
        for page in page_headers {
            // An agent a browser's fetch() could set, so only the page header gives it away.
            let answer = raw_get(&s, path, &[&host, page, "User-Agent: curl/8.5.0"]).await;
            assert_eq!(raw_status(&answer), 403, "{path} {page}: {answer}");
            let error: Value = serde_json::from_str(raw_body(&answer)).unwrap();
            let name = page.split(':').next().unwrap();
            assert!(
                error["error"]
                    .as_str()
                    .unwrap()
                    .to_ascii_lowercase()
                    .contains(&format!("the header {}", name.to_ascii_lowercase())),
                "{error}"
            );
        }
    }
    let answer = raw_http(
        s.addr(),
        &raw_request("POST", "/reset", &[&host, "Sec-Fetch-Site: same-origin"]),
    )
    .await;
    assert_eq!(raw_status(&answer), 403, "{answer}");
    // Node's built-in fetch sends `sec-fetch-mode: cors` and nothing else of the kind: an
    // API client, served (a browser's request always has Sec-Fetch-Site too).
    let node = [
        host.as_str(),
        "accept: */*",
        "accept-language: *",
        "sec-fetch-mode: cors",
        "user-agent: node",
    ];
    let answer = raw_get(&s, "/version", &node).await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    let answer = raw_http(s.addr(), &raw_request("POST", "/reset", &node)).await;
    assert_eq!(raw_status(&answer), 204, "{answer}");
    // Toxiproxy's own refusal keeps its exact answer, on /drills/runs too.
    let answer = raw_get(&s, "/drills/runs", &[&host, "User-Agent: Mozilla/5.0"]).await;
    assert_eq!(raw_status(&answer), 403, "{answer}");
    assert_eq!(raw_body(&answer), "User agent not allowed\n");
    // The status routes stay readable by browsers: agent, Origin, fetch metadata and all.
    for path in [
        "/status",
        "/status/assets/status.css",
        "/status/feed.atom",
        "/api/v2/summary.json",
    ] {
        let answer = raw_get(
            &s,
            path,
            &[
                "Host: status.example.com",
                "User-Agent: Mozilla/5.0 (X11; Linux x86_64)",
                "Origin: https://other.example",
                "Sec-Fetch-Site: cross-site",
                "Sec-Fetch-Mode: cors",
            ],
        )
        .await;
        assert_eq!(raw_status(&answer), 200, "{path}: {answer}");
    }
}

// --- issue 10: webhook targets ----------------------------------------------------------

#[tokio::test]
async fn webhooks_refuse_link_local_unspecified_and_own_api_targets() {
    let s = Server::start();
    let port = s.addr().port();
    let refused = [
        (
            "http://169.254.169.254/latest/meta-data".to_owned(),
            "link-local",
        ),
        ("http://[fe80::1]:8080/h".to_owned(), "link-local"),
        ("http://0.0.0.0:9/h".to_owned(), "unspecified"),
        ("http://[::]:9/h".to_owned(), "unspecified"),
        (format!("http://127.0.0.1:{port}/halt"), "own control API"),
        (format!("http://localhost:{port}/reset"), "own control API"),
    ];
    for (url, why) in &refused {
        let body = json!({"url": url, "secret": "k"}).to_string();
        let r = s.post("/webhooks", &body).await;
        r.assert_error_like(
            400,
            "invalid value for url: refused target",
            &[why, "--webhook-allow"],
        );
    }
    assert_eq!(s.get("/webhooks").await.json(), json!([]));
    // A receiver on loopback (another port) is fine.
    let ok = json!({"url": "http://127.0.0.1:9/h", "secret": "k"}).to_string();
    assert_eq!(s.post("/webhooks", &ok).await.status, 201);
}

#[tokio::test]
async fn webhook_allow_permits_refused_targets() {
    let s = Server::start_with(downtime_server::ServeOptions {
        grace: Duration::from_secs(2),
        webhook_allow: vec![
            "169.254.0.0/16".parse().unwrap(),
            "fe80::1".parse().unwrap(),
        ],
        ..downtime_server::ServeOptions::default()
    });
    for url in ["http://169.254.169.254/latest", "http://[fe80::1]:8080/h"] {
        let body = json!({"url": url, "secret": "k"}).to_string();
        let r = s.post("/webhooks", &body).await;
        assert_eq!(r.status, 201, "{url}: {}", r.body);
    }
    let body = json!({"url": "http://[fe80::2]/h", "secret": "k"}).to_string();
    assert_eq!(
        s.post("/webhooks", &body).await.status,
        400,
        "only what was allowed"
    );
}

// --- issue 10: files -------------------------------------------------------------------

#[cfg(unix)]
#[tokio::test]
async fn the_history_file_and_its_sidecars_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh.db");
    let old = dir.path().join("old.db");
    std::fs::write(&old, b"").unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
    for path in [fresh, old] {
        let s = Server::start_with(downtime_server::ServeOptions {
            grace: Duration::from_secs(2),
            history: Some(path.clone()),
            ..downtime_server::ServeOptions::default()
        });
        // A write, so that the WAL and its index exist.
        let hook = json!({"url": "http://127.0.0.1:9/h", "secret": "s3cret"}).to_string();
        assert_eq!(s.post("/webhooks", &hook).await.status, 201);
        let mut names = vec![path.clone()];
        for suffix in ["-wal", "-shm"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            names.push(name.into());
        }
        for file in &names {
            let mode = std::fs::metadata(file)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{}", file.display());
        }
        // The secret is never shown back.
        assert!(!s.get("/webhooks").await.body.contains("s3cret"));
        s.stop_and_wait().await;
    }
}

// --- the control API off loopback (issue 9 item 7) ----------------------------------

const TOKEN: &str = "t0ken-for-tests";

fn with_token(token: &str) -> downtime_server::ServeOptions {
    downtime_server::ServeOptions {
        grace: Duration::from_secs(2),
        api_token: Some(token.to_owned()),
        ..downtime_server::ServeOptions::default()
    }
}

/// GET `url` with an optional `Authorization` value: (status, headers, body).
async fn get_authorized(
    url: &str,
    auth: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut request = reqwest::Client::new().get(url).timeout(SHORT);
    if let Some(auth) = auth {
        request = request.header(reqwest::header::AUTHORIZATION, auth);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

#[tokio::test]
async fn a_token_is_required_as_bearer_or_basic_password() {
    let s = Server::start_with(with_token(TOKEN));
    let url = format!("{}/proxies", s.base);
    for (auth, why) in [
        (None, "requires a token"),
        (Some("Bearer wrong".to_owned()), "wrong"),
        (Some(format!("Bearer {TOKEN}x")), "wrong"),
        (Some("Basic Ondyb25n".to_owned()), "wrong"), // ":wrong"
        (Some(TOKEN.to_owned()), "requires a token"), // no scheme
    ] {
        let (status, headers, body) = get_authorized(&url, auth.as_deref()).await;
        assert_eq!(status, 401, "{auth:?}: {body}");
        let value: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["status"], 401);
        assert!(value["error"].as_str().unwrap().contains(why), "{body}");
        assert!(!body.contains(TOKEN), "{body}");
        let challenges: Vec<&str> = headers
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert!(
            challenges.iter().any(|c| c.starts_with("Bearer")),
            "{challenges:?}"
        );
        assert!(
            challenges.iter().any(|c| c.starts_with("Basic")),
            "{challenges:?}"
        );
    }
    let (status, _, body) = get_authorized(&url, Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!((status, body.as_str()), (200, "{}"));
    // Basic auth: the password is the token, the user name anything.
    for user in ["", "toxiproxy"] {
        let response = reqwest::Client::new()
            .get(&url)
            .basic_auth(user, Some(TOKEN))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "user {user:?}");
    }
    // Credentials in the URL, as `http://:TOKEN@host:port` (reqwest sends them as basic).
    let with_credentials = s.base.replace("http://", &format!("http://:{TOKEN}@"));
    let response = reqwest::get(format!("{with_credentials}/version"))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    // Writes need it too; the status routes stay public.
    let create = reqwest::Client::new()
        .post(&url)
        .body(r#"{"name":"p","listen":"127.0.0.1:0","upstream":"127.0.0.1:9"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(create.status().as_u16(), 401);
    for public in ["/status", "/api/v2/status.json", "/api/v2/summary.json"] {
        let (status, _, body) = get_authorized(&format!("{}{public}", s.base), None).await;
        assert_eq!(status, 200, "{public}: {body}");
    }
}

#[tokio::test]
async fn without_a_token_loopback_answers_as_toxiproxy() {
    let s = Server::start();
    let r = s.get("/proxies").await;
    assert_eq!((r.status, r.body.as_str()), (200, "{}"));
    assert!(r.header("www-authenticate").is_none());
}

#[tokio::test]
async fn stock_python_client_with_the_token_in_the_url() {
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/compat/python/.venv/bin/python");
    if !python.exists() {
        eprintln!(
            "skipped: no compat venv at {} (bash tests/compat/install.sh)",
            python.display()
        );
        return;
    }
    let s = Server::start_with(with_token(TOKEN));
    let port = s.base.rsplit(':').next().unwrap().to_owned();
    let script = format!(
        r#"
import requests
from toxiproxy import Toxiproxy
from toxiproxy.api import APIConsumer
t = Toxiproxy()
t.update_api_consumer(":{TOKEN}@127.0.0.1", {port})
t.create(name="py", listen="127.0.0.1:0", upstream="127.0.0.1:9")
print("proxies", sorted(t.proxies().keys()))
print("plain", requests.get("http://127.0.0.1:{port}/proxies").status_code)
print("url", requests.get("http://:{TOKEN}@127.0.0.1:{port}/proxies").status_code)
print("auth", requests.get("http://127.0.0.1:{port}/proxies", auth=("", "{TOKEN}")).status_code)
"#
    );
    let out = tokio::process::Command::new(&python)
        .arg("-c")
        .arg(script)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("proxies ['py']"), "{stdout}");
    assert!(stdout.contains("plain 401"), "{stdout}");
    assert!(stdout.contains("url 200"), "{stdout}");
    assert!(stdout.contains("auth 200"), "{stdout}");
}

/// This machine's first non-loopback IPv4 address, if it has one.
fn non_loopback_ip() -> Option<std::net::IpAddr> {
    // Connecting a UDP socket sends nothing; it only picks the outgoing address.
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test]
async fn an_off_loopback_api_without_a_token_refuses_to_start() {
    let Some(ip) = non_loopback_ip() else {
        // Only loopback here: the check itself is tested in lib.rs.
        let err = downtime_server::check_api_exposure("0.0.0.0:8474".parse().unwrap(), None);
        assert!(matches!(
            err,
            Err(downtime_server::ServeError::ApiWithoutToken(_))
        ));
        return;
    };
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let options = downtime_server::ServeOptions {
        grace: Duration::from_secs(2),
        ..downtime_server::ServeOptions::default()
    };
    let result = tokio::time::timeout(
        SHORT,
        downtime_server::run(listener, options, std::future::pending()),
    )
    .await
    .expect("run returned at once");
    let err = result.expect_err("started off loopback without a token");
    assert!(
        matches!(err, downtime_server::ServeError::ApiWithoutToken(_)),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains(&ip.to_string()), "{text}");
    assert!(
        text.contains("--api-token") && text.contains("DOWNTIME_API_TOKEN"),
        "{text}"
    );
    // With a token it serves there, and asks for it.
    let s = Server::start_at(&format!("{ip}:0"), "http", with_token(TOKEN));
    let (status, _, _) = get_authorized(&format!("{}/version", s.base), None).await;
    assert_eq!(status, 401);
    let (status, _, body) = get_authorized(
        &format!("{}/version", s.base),
        Some(&format!("Bearer {TOKEN}")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

async fn curl(args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_api_over_tls_answers_curl_with_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let s = Server::start_at(
        "127.0.0.1:0",
        "https",
        downtime_server::ServeOptions {
            grace: Duration::from_secs(2),
            ca_dir: Some(ca_dir.clone()),
            api_tls: Some(downtime_server::tls::ApiTls::LocalCa { names: Vec::new() }),
            api_token: Some(TOKEN.to_owned()),
            ..downtime_server::ServeOptions::default()
        },
    );
    let ca = ca_dir.join("downtime-ca.pem");
    let ca = ca.to_str().unwrap();
    let (ok, body, err) = curl(&["--cacert", ca, &format!("{}/version", s.base)]).await;
    assert!(ok, "{err}");
    assert!(body.contains("\"status\":401"), "{body}");
    let auth = format!("Authorization: Bearer {TOKEN}");
    let (ok, body, err) =
        curl(&["--cacert", ca, "-H", &auth, &format!("{}/version", s.base)]).await;
    assert!(ok, "{err}");
    assert!(body.contains("\"version\""), "{body}");
    // localhost is in the certificate too, and curl's -u sends basic auth.
    let localhost = s.base.replace("127.0.0.1", "localhost");
    let user = format!(":{TOKEN}");
    let (ok, body, err) =
        curl(&["--cacert", ca, "-u", &user, &format!("{localhost}/proxies")]).await;
    assert!(ok, "{err}");
    assert_eq!(body, "{}");
    // Without the CA, curl refuses the certificate; plain HTTP gets no answer.
    let (ok, _, err) = curl(&[&format!("{}/version", s.base)]).await;
    assert!(!ok && err.contains("certificate"), "{err}");
    let (ok, _, _) = curl(&[&s.base.replace("https://", "http://")]).await;
    assert!(!ok);
}

// --- TLS clients: drill probes (issue 9 item 6) --------------------------------------

fn probe_of(url: String) -> downtime_model::drill::Probe {
    downtime_model::drill::Probe {
        name: "secure".into(),
        method: "GET".into(),
        url,
        headers: Default::default(),
        body: None,
        interval: Duration::from_millis(100),
        timeout: SHORT,
        expect: downtime_model::drill::Expect {
            status: vec![(200, 299)],
            body_contains: Some("ok".into()),
            ..Default::default()
        },
    }
}

#[tokio::test]
async fn a_probe_of_an_https_endpoint_passes_with_its_ca_trusted() {
    use downtime_server::drills::probes;
    let dir = tempfile::tempdir().unwrap();
    let mut receiver = HttpsReceiver::start(dir.path()).await;
    let probe = probe_of(format!("https://127.0.0.1:{}/health", receiver.addr.port()));
    let trusted = probes::client(std::slice::from_ref(&receiver.ca_cert)).unwrap();
    let (_, outcome) = probes::probe_once(&trusted, &probe).await;
    assert_eq!(outcome, Ok(()));
    assert_eq!(receiver.requests.recv().await.unwrap().path, "/health");
    // Not trusted: the probe fails naming the certificate.
    let (_, outcome) = probes::probe_once(&probes::client(&[]).unwrap(), &probe).await;
    let why = outcome.unwrap_err();
    assert!(
        why.contains("certificate") || why.contains("connection"),
        "{why}"
    );
    // An unreadable CA file is named.
    let err = probes::client(&[dir.path().join("missing.pem")]).unwrap_err();
    assert!(err.contains("missing.pem"), "{err}");
}
