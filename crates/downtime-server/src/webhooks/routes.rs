//! The control API's webhook routes: the axum handlers, the router, and the validation of
//! `POST /webhooks` bodies.
//!
//! Handlers only read the running hooks or hand the work to [`Webhooks`]; creations and
//! deletions run in a task of their own (see `store.rs`), so that a client hanging up
//! cannot stop them half-way.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRef, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use downtime_model::Error;
use serde_json::{Value, json};

use super::store::HookError;
use super::{Delivery, EventKind, Webhooks, lock};
use crate::api::ApiError;

/// The webhook routes, for any router state holding a [`Webhooks`].
pub fn routes<S>() -> Router<S>
where
    Webhooks: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/webhooks", get(list).post(create))
        .route("/webhooks/{id}", get(show).delete(delete))
        .route("/webhooks/{id}/deliveries", get(deliveries))
        .route("/webhooks/{id}/ping", post(ping))
}

/// A validated `POST /webhooks` body.
pub(super) struct NewHook {
    pub(super) url: String,
    pub(super) secret: String,
    pub(super) events: Vec<String>,
}

/// Validates a `POST /webhooks` body, naming the field at fault.
pub(super) fn parse_new(body: &[u8]) -> Result<NewHook, Error> {
    let value: serde_json::Map<String, Value> = crate::api::error::decode_object(body)?;
    for key in value.keys() {
        if !matches!(key.as_str(), "url" | "secret" | "events") {
            return Err(Error::invalid(
                key.clone(),
                "unknown field; expected url, secret or events",
            ));
        }
    }
    let url = match value.get("url") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        None | Some(Value::Null) => return Err(Error::MissingField("url")),
        Some(Value::String(_)) => return Err(Error::MissingField("url")),
        Some(other) => {
            return Err(Error::invalid(
                "url",
                format!("expected a string, got {other}"),
            ));
        }
    };
    let parsed = reqwest::Url::parse(&url)
        .map_err(|e| Error::invalid("url", format!("{e}, got {url:?}")))?;
    match parsed.scheme() {
        "http" | "https" => {}
        other => {
            return Err(Error::invalid(
                "url",
                format!("scheme must be http or https, got {other:?}"),
            ));
        }
    }
    if parsed.host_str().is_none_or(str::is_empty) || url.len() > 2048 {
        return Err(Error::invalid(
            "url",
            format!("expected http(s)://host[:port]/path, got {url:?}"),
        ));
    }
    let secret = match value.get("secret") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        None | Some(Value::Null) | Some(Value::String(_)) => {
            return Err(Error::MissingField("secret"));
        }
        Some(other) => {
            return Err(Error::invalid(
                "secret",
                format!("expected a string, got {other}"),
            ));
        }
    };
    if secret.len() > 1024 {
        return Err(Error::invalid("secret", "longer than 1024 bytes"));
    }
    let events = match value.get("events") {
        None | Some(Value::Null) => vec!["*".to_owned()],
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err(Error::invalid(
                    "events",
                    "must name at least one event or \"*\"",
                ));
            }
            let mut events = Vec::new();
            for (n, item) in items.iter().enumerate() {
                let field = format!("events[{n}]");
                let Value::String(name) = item else {
                    return Err(Error::invalid(
                        field,
                        format!("expected a string, got {item}"),
                    ));
                };
                if name != "*" && EventKind::parse(name).is_none() {
                    let known: Vec<&str> = EventKind::ALL.iter().map(|e| e.as_str()).collect();
                    return Err(Error::invalid(
                        field,
                        format!("unknown event {name:?}; known: *, {}", known.join(", ")),
                    ));
                }
                if !events.contains(name) {
                    events.push(name.clone());
                }
            }
            events
        }
        Some(other) => {
            return Err(Error::invalid(
                "events",
                format!("expected an array of event names, got {other}"),
            ));
        }
    };
    Ok(NewHook {
        url,
        secret,
        events,
    })
}

fn not_found() -> Response {
    crate::api::error_answer(StatusCode::NOT_FOUND, "webhook not found")
}

async fn create(State(hooks): State<Webhooks>, body: Bytes) -> Response {
    let new = match parse_new(&body) {
        Ok(new) => new,
        Err(e) => return ApiError::from(e).into_response(),
    };
    if let Err(e) = hooks.inner.policy.check_url(&new.url).await {
        return ApiError::from(e).into_response();
    }
    // In a task of its own: a client hanging up must not stop it between the store write
    // and starting the hook.
    let runtime = hooks.inner.clone();
    let task = runtime.spawn(async move { hooks.create(new).await });
    match task.await {
        Ok(Ok(info)) => crate::api::json(StatusCode::CREATED, &info),
        Ok(Err(e)) => e.into_response(),
        Err(_) => HookError::Interrupted("webhook creation was interrupted").into_response(),
    }
}

async fn list(State(hooks): State<Webhooks>) -> Response {
    crate::api::json(StatusCode::OK, &hooks.info())
}

async fn show(State(hooks): State<Webhooks>, Path(id): Path<String>) -> Response {
    match lock(&hooks.inner.hooks).get(&id) {
        Some(h) => crate::api::json(StatusCode::OK, &h.info),
        None => not_found(),
    }
}

async fn delete(State(hooks): State<Webhooks>, Path(id): Path<String>) -> Response {
    // In a task of its own, like `create`.
    let runtime = hooks.inner.clone();
    let task = runtime.spawn(async move { hooks.remove(&id).await });
    match task.await {
        Ok(Ok(true)) => StatusCode::NO_CONTENT.into_response(),
        Ok(Ok(false)) => not_found(),
        Ok(Err(e)) => e.into_response(),
        Err(_) => HookError::Interrupted("webhook deletion was interrupted").into_response(),
    }
}

async fn deliveries(State(hooks): State<Webhooks>, Path(id): Path<String>) -> Response {
    let log = match lock(&hooks.inner.hooks).get(&id) {
        Some(h) => h.log.clone(),
        None => return not_found(),
    };
    let newest_first: Vec<Delivery> = lock(&log).iter().rev().cloned().collect();
    crate::api::json(StatusCode::OK, &newest_first)
}

async fn ping(State(hooks): State<Webhooks>, Path(id): Path<String>) -> Response {
    let guard = lock(&hooks.inner.hooks);
    let Some(hook) = guard.get(&id) else {
        return not_found();
    };
    let data = json!({ "ping": { "webhook_id": id, "url": hook.info.url } });
    hooks.enqueue(hook, EventKind::Ping, &data);
    StatusCode::ACCEPTED.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio_util::sync::CancellationToken;

    use crate::webhooks::WebhookOptions;
    use crate::webhooks::tests::{memory_store, new_hook};

    async fn body_of(response: Response) -> Value {
        let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn a_store_failure_answers_500_and_changes_nothing() {
        let store = memory_store().await;
        let stop = CancellationToken::new();
        let hooks = Webhooks::open(WebhookOptions::default(), stop.clone(), Some(store.clone()))
            .await
            .unwrap();
        let kept = hooks.create(new_hook(r#"["ping"]"#)).await.unwrap();
        store.shutdown().await;

        let body = Bytes::from_static(br#"{"url":"http://127.0.0.1:9/h","secret":"k"}"#);
        let response = create(State(hooks.clone()), body).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            body_of(response).await,
            json!({
                "error": "cannot save webhook to the history store; it was not created",
                "status": 500,
            })
        );
        assert_eq!(hooks.info().len(), 1, "no half-created hook");

        let response = delete(State(hooks.clone()), Path(kept.id.clone())).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let error = body_of(response).await;
        assert_eq!(
            error["error"],
            format!(
                "cannot delete webhook {} from the history store; it was kept",
                kept.id
            )
        );
        assert_eq!(hooks.info()[0].id, kept.id, "kept, as reported");
        let response = delete(State(hooks.clone()), Path("wh_nope".to_owned())).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        stop.cancel();
    }

    #[tokio::test]
    async fn without_a_store_hooks_live_in_memory() {
        let stop = CancellationToken::new();
        let hooks = Webhooks::open(WebhookOptions::default(), stop.clone(), None)
            .await
            .unwrap();
        let info = hooks.create(new_hook(r#"["ping"]"#)).await.unwrap();
        assert_eq!(hooks.len(), 1);
        let response = delete(State(hooks.clone()), Path(info.id)).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert!(hooks.is_empty());
        stop.cancel();
    }

    #[test]
    fn bad_definitions_name_the_field() {
        let cases: [(&str, &str); 10] = [
            (r#"{"secret":"s"}"#, "missing required field: url"),
            (
                r#"{"url":"http://x/","secret":""}"#,
                "missing required field: secret",
            ),
            (
                r#"{"url":"ftp://x/","secret":"s"}"#,
                "invalid value for url: scheme must be http",
            ),
            (
                r#"{"url":"not a url","secret":"s"}"#,
                "invalid value for url:",
            ),
            (
                r#"{"url":7,"secret":"s"}"#,
                "invalid value for url: expected a string",
            ),
            (
                r#"{"url":"http://x/","secret":"s","events":[]}"#,
                "invalid value for events:",
            ),
            (
                r#"{"url":"http://x/","secret":"s","events":["nope"]}"#,
                "invalid value for events[0]: unknown event",
            ),
            (
                r#"{"url":"http://x/","secret":"s","events":"ping"}"#,
                "invalid value for events: expected an array",
            ),
            (
                r#"{"url":"http://x/","secret":"s","colour":1}"#,
                "invalid value for colour: unknown field",
            ),
            (r#"[1]"#, "bad request body"),
        ];
        for (body, want) in cases {
            let err = parse_new(body.as_bytes())
                .err()
                .unwrap_or_else(|| panic!("{body} accepted"));
            assert!(err.to_string().starts_with(want), "{body}: {err}");
            assert_eq!(err.status(), 400, "{body}");
        }
        let ok = parse_new(
            br#"{"url":"http://127.0.0.1:9/h","secret":"s","events":["ping","ping","*"]}"#,
        )
        .unwrap();
        assert_eq!(ok.events, ["ping", "*"]);
    }
}
