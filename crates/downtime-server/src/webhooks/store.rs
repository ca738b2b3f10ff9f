//! Adding and removing hooks, and keeping their definitions in the history store.
//!
//! [`Webhooks::open`] loads the stored hooks and starts them; `create` and `remove` write
//! the store first and change the running hooks only once that succeeded, one at a time
//! under `Inner::writes` (see `# Persistence` in the [`webhooks`](super) module
//! documentation). The SQL itself lives in [`crate::history::webhooks`]; this file owns
//! the ordering that keeps memory and store in agreement.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use downtime_model::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::delivery::worker;
use super::routes::NewHook;
use super::{Hook, HookInfo, WebhookOptions, Webhooks, kinds_of, lock, random_id};
use crate::api::ApiError;
use crate::history::webhooks::StoredWebhook;
use crate::history::{History, HistoryError};
use crate::web::clock;

/// Why creating or deleting a hook failed.
#[derive(Debug)]
pub(super) enum HookError {
    /// Refused input or limit (400).
    Invalid(Error),
    /// The history store failed (500); `what` is the user-facing message, the source is
    /// logged.
    Store { what: String, source: HistoryError },
    /// The task doing the work ended without an answer (shutdown); 500.
    Interrupted(&'static str),
}

impl From<Error> for HookError {
    fn from(e: Error) -> Self {
        HookError::Invalid(e)
    }
}

impl IntoResponse for HookError {
    fn into_response(self) -> Response {
        let text = match self {
            HookError::Invalid(e) => return ApiError::from(e).into_response(),
            HookError::Store { what, source } => {
                tracing::error!(error = %source, "{what}");
                what
            }
            HookError::Interrupted(what) => {
                tracing::warn!("{what}");
                what.to_owned()
            }
        };
        crate::api::error_answer(StatusCode::INTERNAL_SERVER_ERROR, &text)
    }
}

impl Webhooks {
    /// Hooks kept in `store` so that they survive a restart: the stored ones start now,
    /// with their ids and creation times, and later creations and deletions are written
    /// there before they take effect. `None` is [`Webhooks::new`]. Fails when the stored
    /// hooks cannot be read, so that a server never starts silently without its hooks.
    pub async fn open(
        options: WebhookOptions,
        stop: CancellationToken,
        store: Option<History>,
    ) -> Result<Self, HistoryError> {
        let stored = match &store {
            Some(store) => store.webhooks().await?,
            None => Vec::new(),
        };
        let webhooks = Webhooks::build(options, stop, store);
        if !stored.is_empty() {
            let mut hooks = lock(&webhooks.inner.hooks);
            for hook in stored {
                let info = HookInfo {
                    id: hook.id,
                    url: hook.url,
                    events: hook.events,
                    created_at: clock::rfc3339(hook.created_ms),
                };
                webhooks.start(&mut hooks, info, hook.secret);
            }
            tracing::info!(
                webhooks = hooks.len(),
                "webhooks loaded from the history store"
            );
        }
        Ok(webhooks)
    }

    /// Adds a hook: checks the limit and picks a free id, stores it (when there is a
    /// store), and only then starts it. A store failure leaves nothing behind.
    pub(super) async fn create(&self, new: NewHook) -> Result<HookInfo, HookError> {
        let _writing = self.inner.writes.lock().await;
        let created_ms = clock::now_ms();
        let info = {
            let hooks = lock(&self.inner.hooks);
            if hooks.len() >= self.inner.options.max_hooks {
                return Err(Error::invalid(
                    "url",
                    format!("at most {} webhooks", self.inner.options.max_hooks),
                )
                .into());
            }
            // Stored hooks keep their ids, so a new one must avoid them (64 random bits
            // make a second draw all but impossible).
            let mut id = random_id("wh_");
            while hooks.contains_key(&id) {
                id = random_id("wh_");
            }
            HookInfo {
                id,
                url: new.url,
                events: new.events,
                created_at: clock::rfc3339(created_ms),
            }
        };
        if let Some(store) = &self.inner.store {
            let row = StoredWebhook {
                id: info.id.clone(),
                url: info.url.clone(),
                secret: new.secret.clone(),
                events: info.events.clone(),
                created_ms,
            };
            store
                .insert_webhook(&row)
                .await
                .map_err(|source| HookError::Store {
                    what: "cannot save webhook to the history store; it was not created".to_owned(),
                    source,
                })?;
        }
        let mut hooks = lock(&self.inner.hooks);
        self.start(&mut hooks, info.clone(), new.secret);
        Ok(info)
    }

    /// Removes a hook from the store (when there is one), then from memory, stopping its
    /// task. `false` when there is no such hook; a store failure keeps the hook as it was,
    /// so it cannot come back after a restart once it was reported deleted.
    pub(super) async fn remove(&self, id: &str) -> Result<bool, HookError> {
        let _writing = self.inner.writes.lock().await;
        if !lock(&self.inner.hooks).contains_key(id) {
            return Ok(false);
        }
        if let Some(store) = &self.inner.store {
            store
                .delete_webhook(id)
                .await
                .map_err(|source| HookError::Store {
                    what: format!("cannot delete webhook {id} from the history store; it was kept"),
                    source,
                })?;
        }
        if let Some(hook) = lock(&self.inner.hooks).remove(id) {
            hook.cancel.cancel();
        }
        Ok(true)
    }

    /// Starts a hook's delivery task and adds the hook to `hooks`.
    fn start(&self, hooks: &mut BTreeMap<String, Hook>, info: HookInfo, secret: String) {
        let events = kinds_of(&info.events);
        let (tx, rx) = mpsc::channel(self.inner.options.queue.max(1));
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let cancel = self.inner.stop.child_token();
        self.inner.spawn(worker(
            self.inner.clone(),
            info.url.clone(),
            secret.into_bytes(),
            rx,
            log.clone(),
            cancel.clone(),
        ));
        hooks.insert(
            info.id.clone(),
            Hook {
                info,
                events,
                tx,
                log,
                cancel,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::webhooks::EventKind;
    use crate::webhooks::tests::{memory_store, new_hook};

    #[tokio::test]
    async fn stored_hooks_come_back_with_their_ids_until_deleted() {
        let store = memory_store().await;
        let stop = CancellationToken::new();
        let open = || Webhooks::open(WebhookOptions::default(), stop.clone(), Some(store.clone()));
        let hooks = open().await.unwrap();
        let a = hooks.create(new_hook(r#"["ping"]"#)).await.unwrap();
        let b = hooks.create(new_hook(r#"["*"]"#)).await.unwrap();
        let rows = store.webhooks().await.unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r.secret == "k"), "stored as given");

        let again = open().await.unwrap();
        let infos = again.info();
        let key = |i: &HookInfo| {
            (
                i.id.clone(),
                i.url.clone(),
                i.events.clone(),
                i.created_at.clone(),
            )
        };
        let mut want = vec![key(&a), key(&b)];
        want.sort();
        assert_eq!(infos.iter().map(key).collect::<Vec<_>>(), want);
        {
            let loaded = lock(&again.inner.hooks);
            assert_eq!(loaded[&a.id].events, [EventKind::Ping]);
            assert_eq!(loaded[&b.id].events, EventKind::ALL);
        }

        assert!(again.remove(&a.id).await.unwrap());
        assert!(!again.remove(&a.id).await.unwrap(), "gone from memory");
        let rows = store.webhooks().await.unwrap();
        assert_eq!(
            rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            [b.id.as_str()]
        );
        assert_eq!(open().await.unwrap().len(), 1);
        stop.cancel();
        store.shutdown().await;
    }
}
