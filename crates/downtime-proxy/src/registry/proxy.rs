//! One proxy as the registry holds it: its configuration, toxics, the channels its links
//! watch, and the listener task while it runs.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use downtime_model::{Error, Protocol, ProxyConfig, ProxyView, Stream};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::sync::CancellationToken;

use super::Inner;
use crate::http::journal::Journal;
use crate::http::{HttpCounters, HttpShared, UpstreamClients};
use crate::listener::{self, AcceptContext};
use crate::tcp::ProxyStats;
use crate::toxics::{Chain, ChainEntry};

pub(super) struct Running {
    pub(super) cancel: CancellationToken,
    pub(super) accept: JoinHandle<()>,
}

/// A proxy and everything the registry keeps for it.
pub(super) struct Proxy {
    pub(super) config: ProxyConfig,
    pub(super) toxics: Vec<ChainEntry>,
    pub(super) up_tx: watch::Sender<Arc<Chain>>,
    pub(super) down_tx: watch::Sender<Arc<Chain>>,
    /// HTTP faults (HTTP proxies only).
    pub(super) http_tx: watch::Sender<Arc<Chain>>,
    pub(super) journal: Arc<Journal>,
    pub(super) running: Option<Running>,
    pub(super) stats: Arc<ProxyStats>,
    /// Requests by status and fault (HTTP proxies), kept across restarts like `stats`.
    pub(super) http_counters: Arc<HttpCounters>,
    pub(super) sequence: Arc<AtomicU64>,
    /// One expiry timer per toxic with a time to live, aborted when the toxic is updated
    /// or removed, so repeated updates never pile up timers.
    pub(super) ttl_timers: HashMap<String, AbortHandle>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cancel_timers();
    }
}

impl Proxy {
    pub(super) fn new(config: ProxyConfig, toxics: Vec<ChainEntry>) -> Self {
        let (up_tx, _) = watch::channel(Arc::new(Chain::default()));
        let (down_tx, _) = watch::channel(Arc::new(Chain::default()));
        let (http_tx, _) = watch::channel(Arc::new(Chain::default()));
        let proxy = Proxy {
            config,
            toxics,
            up_tx,
            down_tx,
            http_tx,
            journal: Arc::new(Journal::default()),
            running: None,
            stats: Arc::new(ProxyStats::default()),
            http_counters: Arc::default(),
            ttl_timers: Default::default(),
            sequence: Arc::new(AtomicU64::new(0)),
        };
        proxy.publish(Stream::Upstream);
        proxy.publish(Stream::Downstream);
        proxy
    }

    pub(super) fn view(&self) -> ProxyView {
        let of = |s: Stream| {
            self.toxics
                .iter()
                .filter(move |e| e.toxic.stream == s)
                .map(|e| e.toxic.clone())
        };
        ProxyView {
            config: self.config.clone(),
            toxics: of(Stream::Upstream).chain(of(Stream::Downstream)).collect(),
        }
    }

    /// Hands links of `stream` a new snapshot of the chain; returns without waiting for them.
    /// HTTP faults go to their own channel, read by HTTP connections per request.
    pub(super) fn publish(&self, stream: Stream) {
        let http = Chain {
            entries: self
                .toxics
                .iter()
                .filter(|e| e.toxic.kind.is_http())
                .cloned()
                .collect(),
        };
        self.http_tx.send_if_modified(|current| {
            let same = current.entries.len() == http.entries.len()
                && current
                    .entries
                    .iter()
                    .zip(&http.entries)
                    .all(|(a, b)| a.generation == b.generation);
            if !same {
                *current = Arc::new(http);
            }
            !same
        });
        let chain = Chain {
            entries: self
                .toxics
                .iter()
                .filter(|e| e.toxic.stream == stream && !e.toxic.kind.is_http())
                .cloned()
                .collect(),
        };
        let tx = match stream {
            Stream::Upstream => &self.up_tx,
            Stream::Downstream => &self.down_tx,
        };
        tx.send_replace(Arc::new(chain));
    }

    /// Aborts the expiry timer of `toxic`, if it has one.
    pub(super) fn cancel_timer(&mut self, toxic: &str) {
        if let Some(timer) = self.ttl_timers.remove(toxic) {
            timer.abort();
        }
    }

    /// Aborts every expiry timer (all toxics removed, or the proxy gone).
    pub(super) fn cancel_timers(&mut self) {
        for (_, timer) in self.ttl_timers.drain() {
            timer.abort();
        }
    }

    /// Removes every toxic and its timer, and tells the links.
    pub(super) fn clear_toxics(&mut self) -> usize {
        let removed = self.toxics.len();
        self.cancel_timers();
        self.toxics.clear();
        self.publish(Stream::Upstream);
        self.publish(Stream::Downstream);
        removed
    }

    pub(super) fn find(&self, toxic: &str) -> Result<usize, Error> {
        self.toxics
            .iter()
            .position(|e| e.toxic.name == toxic)
            .ok_or(Error::ToxicNotFound)
    }

    pub(super) async fn start(&mut self, inner: &Inner) -> Result<(), Error> {
        if self.running.is_some() {
            return Ok(());
        }
        let addr = listener::resolve_listen(&self.config.listen).await?;
        let bound = listener::bind(addr)?;
        let local = bound
            .local_addr()
            .map_err(|e| Error::Listen(format!("listen tcp {addr}: {e}")))?;
        self.config.listen = local.to_string();
        let cancel = inner.root.child_token();
        let mut hasher = std::hash::DefaultHasher::new();
        self.config.name.hash(&mut hasher);
        let name_hash = hasher.finish();
        let http = if self.config.protocol == Protocol::Http {
            let status_page = match inner.status_page.read() {
                Ok(p) => p.clone(),
                Err(poisoned) => poisoned.into_inner().clone(),
            };
            let forward_mode = self.config.mode == Some(downtime_model::proxy::ProxyMode::Forward);
            let mut options = self.config.http.clone().unwrap_or_default();
            if forward_mode {
                // Third-party APIs get the app's requests as the app sent them.
                options.forwarded = false;
                options.rewrite_location = false;
            }
            let (https_upstream, upstream) =
                downtime_model::proxy::split_scheme(&self.config.upstream);
            let upstream_tls = https_upstream || options.upstream_tls;
            let (acceptor, client_tls, forward, ca) = {
                let mut tls = inner
                    .tls
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let acceptor = match &self.config.tls {
                    Some(options) => {
                        let ca = match options.cert {
                            Some(_) => None,
                            None => Some(tls.ca().map_err(|e| Error::invalid("tls", e))?),
                        };
                        let config = crate::tls::server_config(options, ca.as_deref())
                            .map_err(|e| Error::invalid("tls", e))?;
                        Some(config)
                    }
                    None => None,
                };
                // TLS faults make broken certificates from the CA (when there is one).
                let ca = if acceptor.is_some() || forward_mode {
                    tls.ca().ok()
                } else {
                    None
                };
                let client = if options.upstream_ca.is_some() || options.upstream_insecure {
                    // This proxy's own trust: its CA file, or (asked for) none at all.
                    if options.upstream_insecure {
                        tracing::warn!(proxy = %self.config.name, "upstream certificates are NOT verified (http.upstream_insecure)");
                    }
                    let mut files = tls.extra_ca.clone();
                    files.extend(options.upstream_ca.iter().map(std::path::PathBuf::from));
                    let config = crate::tls::client_config_with(&files, options.upstream_insecure)
                        .map_err(|e| Error::invalid("http.upstream_ca", e))?;
                    Some(Arc::new(config))
                } else if upstream_tls || forward_mode {
                    Some(tls.client().map_err(|e| Error::invalid("upstream", e))?)
                } else {
                    None
                };
                let forward = match forward_mode {
                    true => Some(crate::http::Forwarding::new(
                        self.config.intercept.clone(),
                        tls.ca().map_err(|e| Error::invalid("mode", e))?,
                    )),
                    false => None,
                };
                (acceptor, client, forward, ca)
            };
            Some(Arc::new(HttpShared {
                server: crate::http::builder(&options),
                name: self.config.name.as_str().into(),
                upstream: (!upstream.is_empty()).then(|| upstream.into()),
                upstream_tls,
                tls: acceptor,
                tls_names: self
                    .config
                    .tls
                    .as_ref()
                    .map(|t| t.names.clone())
                    .unwrap_or_default(),
                ca,
                forward,
                options,
                faults: self.http_tx.subscribe(),
                clients: UpstreamClients::new(client_tls),
                journal: self.journal.clone(),
                rng: std::sync::Mutex::new(SmallRng::seed_from_u64(listener::mix(
                    inner.seed ^ name_hash,
                    u64::MAX,
                ))),
                status_page,
                counters: self.http_counters.clone(),
                cancel: cancel.clone(),
            }))
        } else {
            None
        };
        let ctx = AcceptContext {
            name_hash,
            http,
            upstream: self.config.upstream.as_str().into(),
            up_chain: self.up_tx.subscribe(),
            down_chain: self.down_tx.subscribe(),
            stats: self.stats.clone(),
            slots: Arc::new(tokio::sync::Semaphore::new(
                self.config.connection_cap() as usize
            )),
            refusals: Arc::new(tokio::sync::Semaphore::new(listener::MAX_REFUSALS)),
            sequence: self.sequence.clone(),
            seed: inner.seed,
        };
        let accept = inner.data_plane.spawn(listener::accept_loop(
            bound,
            ctx,
            cancel.clone(),
            inner.tracker.clone(),
        ));
        self.running = Some(Running { cancel, accept });
        Ok(())
    }

    /// Tells the listener and every connection to close, without waiting: the registry
    /// lock may be held here, and waiting for the data plane under it would make every
    /// control call wait too. Wait on the answer once the lock is released.
    pub(super) fn stop_now(&mut self) -> Stopping {
        Stopping(self.running.take().map(|running| {
            running.cancel.cancel();
            running.accept
        }))
    }
}

impl Proxy {
    /// [`Proxy::stop_now`] when `stop`, else nothing to wait for.
    pub(super) fn stop_now_if(&mut self, stop: bool) -> Stopping {
        if stop {
            self.stop_now()
        } else {
            Stopping::none()
        }
    }
}

/// A listener told to stop. [`Stopping::wait`] returns once its accept loop has ended, so
/// its port is free (the loop ends as soon as it sees the cancellation).
#[must_use = "wait for it (off the registry lock) before binding the port again"]
pub(super) struct Stopping(Option<JoinHandle<()>>);

impl Stopping {
    /// Nothing to wait for.
    pub(super) fn none() -> Stopping {
        Stopping(None)
    }

    /// Waits for the accept loop to end.
    pub(super) async fn wait(self) {
        if let Some(accept) = self.0 {
            let _ = accept.await;
        }
    }

    /// Waits for every one of `all`.
    pub(super) async fn wait_all(all: Vec<Stopping>) {
        for stopping in all {
            stopping.wait().await;
        }
    }
}
