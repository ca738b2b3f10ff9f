//! The registry of proxies: the one handle through which the control plane changes the data
//! plane.
//!
//! Control operations are serialised by an async mutex that only control operations take;
//! connection tasks never touch it. A toxic change is a snapshot swap on a `watch` channel
//! per direction, which links pick up at their next chunk boundary, so adding or removing a
//! toxic costs the same with zero or ten thousand live connections and never waits for one.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use downtime_model::proxy::check_upstream_for;
use downtime_model::{
    Error, Protocol, ProxyConfig, ProxyPatch, ProxyView, Stream, Toxic, ToxicPatch, ToxicRequest,
};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::{Mutex, broadcast, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::http::journal::{Journal, JournalEntry};
use crate::http::{HttpCounters, HttpShared, UpstreamClients};
use crate::listener::{self, AcceptContext};
use crate::tcp::ProxyStats;
use crate::toxics::{Chain, ChainEntry};

/// Cheap-to-clone handle on every proxy of the process.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    seed: u64,
    /// The runtime connections run on; the API may run on another one, so nothing the
    /// data plane does can delay an API answer.
    data_plane: tokio::runtime::Handle,
    status_page: std::sync::RwLock<Arc<str>>,
    proxies: Mutex<BTreeMap<String, Proxy>>,
    generation: AtomicU64,
    halts: AtomicU64,
    /// Told of every toxic removed by its time to live (the history store subscribes).
    expired: broadcast::Sender<ToxicExpired>,
    root: CancellationToken,
    tracker: TaskTracker,
}

struct Running {
    cancel: CancellationToken,
    accept: JoinHandle<()>,
}

struct Proxy {
    config: ProxyConfig,
    toxics: Vec<ChainEntry>,
    up_tx: watch::Sender<Arc<Chain>>,
    down_tx: watch::Sender<Arc<Chain>>,
    /// HTTP faults (HTTP proxies only).
    http_tx: watch::Sender<Arc<Chain>>,
    journal: Arc<Journal>,
    running: Option<Running>,
    stats: Arc<ProxyStats>,
    /// Requests by status and fault (HTTP proxies), kept across restarts like `stats`.
    http_counters: Arc<HttpCounters>,
    sequence: Arc<AtomicU64>,
}

/// A failed populate: the error and the proxies processed before it, which remain.
#[derive(Debug)]
pub struct PopulateError {
    /// What failed.
    pub error: Error,
    /// Proxies created or kept before the failure.
    pub proxies: Vec<ProxyView>,
}

/// A toxic removed because its time to live ran out.
#[derive(Debug, Clone)]
pub struct ToxicExpired {
    /// The proxy it was on.
    pub proxy: String,
    /// The toxic as it was.
    pub toxic: Toxic,
}

/// A proxy's identity and counters, for the metrics endpoint.
#[derive(Debug, Clone)]
pub struct ProxyCounters {
    /// Proxy name.
    pub name: String,
    /// Current listen address.
    pub listen: String,
    /// Upstream address.
    pub upstream: String,
    /// Live counters.
    pub stats: Arc<ProxyStats>,
    /// Requests by status and by fault, for HTTP proxies.
    pub http: Option<Arc<HttpCounters>>,
}

impl Proxy {
    fn new(config: ProxyConfig, toxics: Vec<ChainEntry>) -> Self {
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
            sequence: Arc::new(AtomicU64::new(0)),
        };
        proxy.publish(Stream::Upstream);
        proxy.publish(Stream::Downstream);
        proxy
    }

    fn view(&self) -> ProxyView {
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
    fn publish(&self, stream: Stream) {
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

    fn find(&self, toxic: &str) -> Result<usize, Error> {
        self.toxics
            .iter()
            .position(|e| e.toxic.name == toxic)
            .ok_or(Error::ToxicNotFound)
    }

    async fn start(&mut self, inner: &Inner) -> Result<(), Error> {
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
            Some(Arc::new(HttpShared {
                name: self.config.name.as_str().into(),
                upstream: (!self.config.upstream.is_empty())
                    .then(|| self.config.upstream.as_str().into()),
                options: self.config.http.unwrap_or_default(),
                faults: self.http_tx.subscribe(),
                clients: UpstreamClients::new(),
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

    /// Closes the listener and every connection. Waits only for the accept loop, which
    /// returns as soon as it sees the cancellation, so the port is free when this returns.
    async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.cancel.cancel();
            let _ = running.accept.await;
        }
    }
}

impl Registry {
    /// An empty registry; `seed` makes every random choice reproducible. Connections run on
    /// the runtime this is called from.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn new(seed: Option<u64>) -> Self {
        let seed = seed.unwrap_or_else(|| rand::rng().random());
        Registry {
            inner: Arc::new(Inner {
                seed,
                data_plane: tokio::runtime::Handle::current(),
                status_page: std::sync::RwLock::new(Arc::from("")),
                proxies: Mutex::new(BTreeMap::new()),
                generation: AtomicU64::new(1),
                halts: AtomicU64::new(0),
                expired: broadcast::channel(1024).0,
                root: CancellationToken::new(),
                tracker: TaskTracker::new(),
            }),
        }
    }

    /// Sets the link that maintenance answers point to (the status page), for proxies
    /// started from now on.
    pub fn set_status_page(&self, url: &str) {
        match self.inner.status_page.write() {
            Ok(mut p) => *p = Arc::from(url),
            Err(poisoned) => *poisoned.into_inner() = Arc::from(url),
        }
    }

    fn entry(&self, toxic: Toxic) -> ChainEntry {
        ChainEntry {
            toxic,
            generation: self.next_generation(),
            state: Default::default(),
        }
    }

    fn entries(&self, toxics: Vec<Toxic>) -> Vec<ChainEntry> {
        toxics.into_iter().map(|t| self.entry(t)).collect()
    }

    /// Removes a toxic when its time to live runs out, unless it was changed meanwhile.
    fn schedule_expiry(&self, proxy: &str, entry: &ChainEntry) {
        let Some(ttl) = entry.toxic.bounds.ttl else {
            return;
        };
        let registry = self.clone();
        let (proxy, name, generation) =
            (proxy.to_owned(), entry.toxic.name.clone(), entry.generation);
        let token = self.inner.root.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = token.cancelled() => {}
                () = tokio::time::sleep(Duration::from_millis(ttl)) => {
                    let mut proxies = registry.inner.proxies.lock().await;
                    if let Some(p) = proxies.get_mut(&proxy)
                        && let Some(i) = p.toxics.iter().position(|e| e.toxic.name == name && e.generation == generation) {
                            let removed = p.toxics.remove(i);
                            p.publish(removed.toxic.stream);
                            tracing::info!(proxy = %proxy, toxic = %name, "toxic expired");
                            // Nobody listening is fine; a slow listener sees `Lagged`.
                            let _ = registry.inner.expired.send(ToxicExpired {
                                proxy: proxy.clone(),
                                toxic: removed.toxic,
                            });
                        }
                }
            }
        });
    }

    /// Subscribes to toxics removed by their time to live (for the history store); never
    /// slows expiry down: a receiver that falls behind gets `Lagged` with the count lost.
    pub fn subscribe_expired(&self) -> broadcast::Receiver<ToxicExpired> {
        self.inner.expired.subscribe()
    }

    /// The last `limit` requests an HTTP proxy served, oldest first.
    pub async fn journal(&self, proxy: &str, limit: usize) -> Result<Vec<JournalEntry>, Error> {
        let proxies = self.inner.proxies.lock().await;
        let proxy = proxies.get(proxy).ok_or(Error::ProxyNotFound)?;
        Ok(proxy.journal.last(limit))
    }

    fn next_generation(&self) -> u64 {
        self.inner
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Creates a proxy with its toxics in one step: connections never see it without them.
    pub async fn create(
        &self,
        config: ProxyConfig,
        toxics: Vec<Toxic>,
    ) -> Result<ProxyView, Error> {
        let mut proxies = self.inner.proxies.lock().await;
        if proxies.contains_key(&config.name) {
            return Err(Error::ProxyExists);
        }
        let proxy = self.build(config, toxics).await?;
        for e in &proxy.toxics {
            self.schedule_expiry(&proxy.config.name, e);
        }
        let view = proxy.view();
        proxies.insert(view.config.name.clone(), proxy);
        Ok(view)
    }

    async fn build(&self, config: ProxyConfig, toxics: Vec<Toxic>) -> Result<Proxy, Error> {
        let enabled = config.enabled;
        let mut proxy = Proxy::new(config, self.entries(toxics));
        if enabled {
            proxy.start(&self.inner).await?;
        }
        Ok(proxy)
    }

    /// Creates or replaces proxies in order; an unchanged proxy is kept untouched.
    pub async fn populate(
        &self,
        items: Vec<(ProxyConfig, Vec<Toxic>)>,
    ) -> Result<Vec<ProxyView>, PopulateError> {
        let mut proxies = self.inner.proxies.lock().await;
        let mut done = Vec::with_capacity(items.len());
        for (config, toxics) in items {
            if let Some(existing) = proxies.get_mut(&config.name) {
                if same_address(&existing.config.listen, &config.listen).await
                    && existing.config.upstream == config.upstream
                {
                    done.push(existing.view());
                    continue;
                }
                existing.stop().await;
                proxies.remove(&config.name);
            }
            match self.build(config, toxics).await {
                Ok(proxy) => {
                    for e in &proxy.toxics {
                        self.schedule_expiry(&proxy.config.name, e);
                    }
                    done.push(proxy.view());
                    proxies.insert(proxy.config.name.clone(), proxy);
                }
                Err(error) => {
                    return Err(PopulateError {
                        error,
                        proxies: done,
                    });
                }
            }
        }
        Ok(done)
    }

    /// Every proxy with its toxics, sorted by name.
    pub async fn list(&self) -> Vec<ProxyView> {
        let proxies = self.inner.proxies.lock().await;
        proxies.values().map(Proxy::view).collect()
    }

    /// One proxy with its toxics.
    pub async fn get(&self, name: &str) -> Result<ProxyView, Error> {
        let proxies = self.inner.proxies.lock().await;
        proxies
            .get(name)
            .map(Proxy::view)
            .ok_or(Error::ProxyNotFound)
    }

    /// Applies a partial update. A changed address restarts the proxy (dropping its
    /// connections); if the new address cannot be bound, the old configuration is restored.
    pub async fn update(&self, name: &str, patch: ProxyPatch) -> Result<ProxyView, Error> {
        let mut proxies = self.inner.proxies.lock().await;
        let proxy = proxies.get_mut(name).ok_or(Error::ProxyNotFound)?;
        let listen = patch.listen.unwrap_or_else(|| proxy.config.listen.clone());
        let upstream = patch
            .upstream
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| proxy.config.upstream.clone());
        check_upstream_for(proxy.config.protocol, &upstream)?;
        let enabled = patch.enabled.unwrap_or(proxy.config.enabled);
        let new_addr = listener::resolve_listen(&listen).await?;
        let listen_changed = match listener::resolve_listen(&proxy.config.listen).await {
            Ok(current) => current != new_addr || new_addr.port() == 0,
            Err(_) => true,
        };
        if listen_changed || upstream != proxy.config.upstream {
            let previous = proxy.config.clone();
            let was_running = proxy.running.is_some();
            proxy.stop().await;
            proxy.config.listen = listen;
            proxy.config.upstream = upstream;
            if enabled && let Err(e) = proxy.start(&self.inner).await {
                proxy.config = previous;
                if was_running {
                    let _ = proxy.start(&self.inner).await;
                }
                return Err(e);
            }
        }
        if enabled {
            proxy.start(&self.inner).await?;
        } else {
            proxy.stop().await;
        }
        proxy.config.enabled = enabled;
        Ok(proxy.view())
    }

    /// Stops a proxy, closes its connections and forgets it.
    pub async fn delete(&self, name: &str) -> Result<(), Error> {
        let mut proxies = self.inner.proxies.lock().await;
        let mut proxy = proxies.remove(name).ok_or(Error::ProxyNotFound)?;
        proxy.stop().await;
        Ok(())
    }

    /// Re-enables every proxy and removes every toxic.
    pub async fn reset(&self) -> Result<(), Error> {
        let mut proxies = self.inner.proxies.lock().await;
        for proxy in proxies.values_mut() {
            proxy.start(&self.inner).await?;
            proxy.config.enabled = true;
            proxy.toxics.clear();
            proxy.publish(Stream::Upstream);
            proxy.publish(Stream::Downstream);
        }
        Ok(())
    }

    /// Removes every toxic and HTTP fault of every proxy at once (proxies stay as they are)
    /// and counts the halt, so running drills see it and stop. Returns the number removed.
    pub async fn halt(&self) -> usize {
        let mut proxies = self.inner.proxies.lock().await;
        let mut removed = 0;
        for proxy in proxies.values_mut() {
            removed += proxy.toxics.len();
            proxy.toxics.clear();
            proxy.publish(Stream::Upstream);
            proxy.publish(Stream::Downstream);
        }
        self.inner
            .halts
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        removed
    }

    /// How many halts happened since start; drill runners poll it.
    pub fn halts(&self) -> u64 {
        self.inner.halts.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The toxics of a proxy, upstream first.
    pub async fn toxics(&self, proxy: &str) -> Result<Vec<Toxic>, Error> {
        Ok(self.get(proxy).await?.toxics)
    }

    /// One toxic of a proxy.
    pub async fn toxic(&self, proxy: &str, toxic: &str) -> Result<Toxic, Error> {
        let proxies = self.inner.proxies.lock().await;
        let proxy = proxies.get(proxy).ok_or(Error::ProxyNotFound)?;
        let i = proxy.find(toxic)?;
        Ok(proxy.toxics[i].toxic.clone())
    }

    /// Validates and appends a toxic; live connections pick it up at once.
    pub async fn add_toxic(&self, proxy: &str, request: ToxicRequest) -> Result<Toxic, Error> {
        let mut proxies = self.inner.proxies.lock().await;
        let proxy = proxies.get_mut(proxy).ok_or(Error::ProxyNotFound)?;
        let toxic = request.into_toxic(|n| proxy.toxics.iter().any(|e| e.toxic.name == n))?;
        if toxic.kind.is_http() && proxy.config.protocol != Protocol::Http {
            return Err(Error::invalid(
                "type",
                format!(
                    "{} is an HTTP fault and proxy {} is a tcp proxy (create it with \"protocol\": \"http\")",
                    toxic.kind.type_name(),
                    proxy.config.name
                ),
            ));
        }
        let stream = toxic.stream;
        let entry = self.entry(toxic.clone());
        self.schedule_expiry(&proxy.config.name, &entry);
        proxy.toxics.push(entry);
        proxy.publish(stream);
        Ok(toxic)
    }

    /// Merges new attributes/toxicity into a toxic; nothing changes if they are invalid.
    pub async fn update_toxic(
        &self,
        proxy: &str,
        toxic: &str,
        patch: ToxicPatch,
    ) -> Result<Toxic, Error> {
        let mut proxies = self.inner.proxies.lock().await;
        let proxy = proxies.get_mut(proxy).ok_or(Error::ProxyNotFound)?;
        let i = proxy.find(toxic)?;
        let next = patch.apply(&proxy.toxics[i].toxic)?;
        let mut entry = self.entry(next.clone());
        if !next.kind.is_http() || next.kind == proxy.toxics[i].toxic.kind {
            // Keep first_n counters and rate-limit buckets across a change of bounds only.
            entry.state = proxy.toxics[i].state.clone();
        }
        // The time to live counts from this update; the old timer no longer matches.
        self.schedule_expiry(&proxy.config.name, &entry);
        proxy.toxics[i] = entry;
        proxy.publish(next.stream);
        Ok(next)
    }

    /// Removes a toxic; held-back data is flushed, never lost.
    pub async fn remove_toxic(&self, proxy: &str, toxic: &str) -> Result<(), Error> {
        let mut proxies = self.inner.proxies.lock().await;
        let proxy = proxies.get_mut(proxy).ok_or(Error::ProxyNotFound)?;
        let i = proxy.find(toxic)?;
        let removed = proxy.toxics.remove(i);
        proxy.publish(removed.toxic.stream);
        Ok(())
    }

    /// Counters of every proxy, for metrics.
    pub async fn counters(&self) -> Vec<ProxyCounters> {
        let proxies = self.inner.proxies.lock().await;
        proxies
            .values()
            .map(|p| ProxyCounters {
                name: p.config.name.clone(),
                listen: p.config.listen.clone(),
                upstream: p.config.upstream.clone(),
                stats: p.stats.clone(),
                http: (p.config.protocol == Protocol::Http).then(|| p.http_counters.clone()),
            })
            .collect()
    }

    /// Stops every proxy and waits up to `grace` for connections to finish closing.
    pub async fn shutdown(&self, grace: Duration) {
        {
            let mut proxies = self.inner.proxies.lock().await;
            for proxy in proxies.values_mut() {
                proxy.stop().await;
            }
        }
        self.inner.root.cancel();
        self.inner.tracker.close();
        let _ = tokio::time::timeout(grace, self.inner.tracker.wait()).await;
    }
}

/// Whether two listen strings name the same socket address (`localhost:80` = `127.0.0.1:80`).
async fn same_address(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (
        listener::resolve_listen(a).await,
        listener::resolve_listen(b).await,
    ) {
        (Ok(x), Ok(y)) => x == y && x.port() != 0,
        _ => false,
    }
}
