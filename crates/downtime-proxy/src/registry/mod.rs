//! The registry of proxies: the one handle through which the control plane changes the data
//! plane.
//!
//! Control operations are serialised by an async mutex that only control operations take;
//! connection tasks never touch it. A toxic change is a snapshot swap on a `watch` channel
//! per direction, which links pick up at their next chunk boundary, so adding or removing a
//! toxic costs the same with zero or ten thousand live connections and never waits for one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use downtime_model::proxy::check_upstream_for;
use downtime_model::{
    Error, Protocol, ProxyConfig, ProxyPatch, ProxyView, Toxic, ToxicPatch, ToxicRequest,
};
use rand::RngExt;
use tokio::sync::{Mutex, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::http::HttpCounters;
use crate::http::journal::JournalEntry;
use crate::listener;
use crate::tcp::ProxyStats;
use crate::tls::LocalCa;
use crate::toxics::ChainEntry;

mod populate;
mod proxy;
use proxy::{Proxy, Stopping};

/// Cheap-to-clone handle on every proxy of the process.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

/// TLS material shared by every proxy.
#[derive(Default)]
pub(crate) struct TlsSettings {
    /// The local CA, opened on first need (or by [`Registry::set_ca_dir`]).
    pub(crate) ca: Option<Arc<LocalCa>>,
    /// Extra CA files trusted for upstreams.
    pub(crate) extra_ca: Vec<std::path::PathBuf>,
    /// The client configuration for `https://` upstreams, built once.
    pub(crate) client: Option<Arc<rustls::ClientConfig>>,
}

impl TlsSettings {
    /// The CA, opening the default one the first time it is needed.
    pub(crate) fn ca(&mut self) -> Result<Arc<LocalCa>, String> {
        if let Some(ca) = &self.ca {
            return Ok(ca.clone());
        }
        let ca = Arc::new(LocalCa::open(&crate::tls::default_ca_dir())?);
        self.ca = Some(ca.clone());
        Ok(ca)
    }

    /// The upstream client configuration, built from the system roots the first time.
    pub(crate) fn client(&mut self) -> Result<Arc<rustls::ClientConfig>, String> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let c = Arc::new(crate::tls::client_config(&self.extra_ca)?);
        self.client = Some(c.clone());
        Ok(c)
    }
}

struct Inner {
    seed: u64,
    /// The runtime connections run on; the API may run on another one, so nothing the
    /// data plane does can delay an API answer.
    data_plane: tokio::runtime::Handle,
    status_page: std::sync::RwLock<Arc<str>>,
    /// Where certificates come from and what upstreams are verified against.
    tls: std::sync::RwLock<TlsSettings>,
    proxies: Mutex<BTreeMap<String, Proxy>>,
    /// Held by every change that stops or starts listeners (create, update, delete,
    /// populate, reset), for the whole change: they wait for a stopped accept loop with
    /// `proxies` released, so reads and toxic changes never wait on the data plane, and
    /// this keeps two such changes from interleaving in that gap.
    listeners: Mutex<()>,
    generation: AtomicU64,
    halts: AtomicU64,
    /// Told of every toxic removed by its time to live (the history store subscribes).
    expired: broadcast::Sender<ToxicExpired>,
    root: CancellationToken,
    tracker: TaskTracker,
}

/// A failed populate: the error, and the proxies it had kept untouched before failing
/// (everything it created or replaced was rolled back).
#[derive(Debug)]
pub struct PopulateError {
    /// What failed.
    pub error: Error,
    /// Proxies kept untouched before the failure; nothing else changed.
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
                tls: std::sync::RwLock::new(TlsSettings::default()),
                proxies: Mutex::new(BTreeMap::new()),
                listeners: Mutex::new(()),
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

    /// Uses the CA in `dir` for proxies with TLS and no certificate of their own (opened,
    /// or created, now: errors name the directory or file).
    pub fn set_ca_dir(&self, dir: &std::path::Path) -> Result<Arc<LocalCa>, String> {
        let ca = Arc::new(LocalCa::open(dir)?);
        self.tls_settings().ca = Some(ca.clone());
        Ok(ca)
    }

    /// Trusts these CA files, besides the system's roots, for `https://` upstreams (each
    /// is read now: errors name the file).
    pub fn set_extra_ca(&self, files: Vec<std::path::PathBuf>) -> Result<(), String> {
        let client = crate::tls::client_config(&files)?;
        let mut settings = self.tls_settings();
        settings.extra_ca = files;
        settings.client = Some(Arc::new(client));
        Ok(())
    }

    fn tls_settings(&self) -> std::sync::RwLockWriteGuard<'_, TlsSettings> {
        self.inner
            .tls
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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

    /// Arms the expiry of a toxic with a time to live, replacing its previous timer. The
    /// timer runs on the data-plane runtime, never on the API's.
    /// Also records in the entry when it expires, for listings.
    fn schedule_expiry(&self, proxy: &mut Proxy, entry: &mut ChainEntry) {
        proxy.cancel_timer(&entry.toxic.name);
        let Some(ttl) = entry.toxic.bounds.ttl else {
            entry.toxic.bounds.expires = None;
            return;
        };
        entry.toxic.bounds.expires = Instant::now().checked_add(Duration::from_millis(ttl));
        let registry = self.clone();
        let (name, toxic, generation) = (
            proxy.config.name.clone(),
            entry.toxic.name.clone(),
            entry.generation,
        );
        let token = self.inner.root.clone();
        let timer = self.inner.data_plane.spawn(async move {
            tokio::select! {
                () = token.cancelled() => {}
                () = tokio::time::sleep(Duration::from_millis(ttl)) => {
                    registry.expire(&name, &toxic, generation).await;
                }
            }
        });
        proxy
            .ttl_timers
            .insert(entry.toxic.name.clone(), timer.abort_handle());
    }

    /// Removes `toxic` of `proxy` if it is still the version whose time ran out.
    async fn expire(&self, proxy: &str, toxic: &str, generation: u64) {
        let mut proxies = self.inner.proxies.lock().await;
        let Some(p) = proxies.get_mut(proxy) else {
            return;
        };
        let Some(i) = p
            .toxics
            .iter()
            .position(|e| e.toxic.name == toxic && e.generation == generation)
        else {
            return;
        };
        // This task is the timer: forget it without aborting ourselves.
        p.ttl_timers.remove(toxic);
        let removed = p.toxics.remove(i);
        p.publish(removed.toxic.stream);
        tracing::info!(proxy = %proxy, toxic = %toxic, "toxic expired");
        // Nobody listening is fine; a slow listener sees `Lagged`.
        let _ = self.inner.expired.send(ToxicExpired {
            proxy: proxy.to_owned(),
            toxic: removed.toxic,
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
        mut config: ProxyConfig,
        toxics: Vec<Toxic>,
    ) -> Result<ProxyView, Error> {
        // Host names resolve before the lock is taken: a slow DNS answer holds up no one.
        let resolved = pre_resolve(&config).await;
        let _listeners = self.inner.listeners.lock().await;
        let mut proxies = self.inner.proxies.lock().await;
        if proxies.contains_key(&config.name) {
            return Err(Error::ProxyExists);
        }
        if let Some(address) = resolved {
            config.listen = address?;
        }
        let mut proxy = self.build(config, toxics).await?;
        self.arm_all(&mut proxy);
        let view = proxy.view();
        proxies.insert(view.config.name.clone(), proxy);
        Ok(view)
    }

    fn arm_all(&self, proxy: &mut Proxy) {
        let mut entries = std::mem::take(&mut proxy.toxics);
        for e in &mut entries {
            self.schedule_expiry(proxy, e);
        }
        proxy.toxics = entries;
    }

    async fn build(&self, config: ProxyConfig, toxics: Vec<Toxic>) -> Result<Proxy, Error> {
        let enabled = config.enabled;
        let mut proxy = Proxy::new(config, self.entries(toxics));
        if enabled {
            proxy.start(&self.inner).await?;
        }
        Ok(proxy)
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
    /// Runs detached from the caller: a client that hangs up mid-update cannot leave the
    /// proxy stopped while its view says enabled.
    pub async fn update(&self, name: &str, patch: ProxyPatch) -> Result<ProxyView, Error> {
        let registry = self.clone();
        let name = name.to_owned();
        detached(async move { registry.update_now(&name, patch).await }).await
    }

    async fn update_now(&self, name: &str, patch: ProxyPatch) -> Result<ProxyView, Error> {
        let _listeners = self.inner.listeners.lock().await;
        // Host names resolve before the lock is taken: a slow DNS answer holds up no one.
        let resolved = match &patch.listen {
            Some(listen) => Some(listener::resolve_listen(listen).await?),
            None => None,
        };
        let current = self.get(name).await?.config.listen;
        let current = listener::resolve_listen(&current).await;
        let new_addr = match (resolved, &current) {
            (Some(addr), _) => addr,
            (None, Ok(addr)) => *addr,
            (None, Err(e)) => return Err(e.clone()),
        };
        let listen_changed = match current {
            Ok(current) => current != new_addr || new_addr.port() == 0,
            Err(_) => true,
        };
        // First the checks and, if the address or upstream changes, the stop.
        let (restart, stopping, enabled) = {
            let mut proxies = self.inner.proxies.lock().await;
            let proxy = proxies.get_mut(name).ok_or(Error::ProxyNotFound)?;
            let listen = patch.listen.unwrap_or_else(|| proxy.config.listen.clone());
            let upstream = patch
                .upstream
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| proxy.config.upstream.clone());
            check_upstream_for(proxy.config.protocol, &upstream)?;
            let enabled = patch.enabled.unwrap_or(proxy.config.enabled);
            if listen_changed || upstream != proxy.config.upstream {
                let previous = proxy.config.clone();
                let was_running = proxy.running.is_some();
                let stopping = proxy.stop_now();
                proxy.config.listen = listen;
                proxy.config.upstream = upstream;
                (Some((previous, was_running)), stopping, enabled)
            } else {
                (None, proxy.stop_now_if(!enabled), enabled)
            }
        };
        stopping.wait().await;
        // Then the start, on a free port.
        let mut proxies = self.inner.proxies.lock().await;
        let proxy = proxies.get_mut(name).ok_or(Error::ProxyNotFound)?;
        if let Some((previous, was_running)) = restart
            && enabled
            && let Err(e) = proxy.start(&self.inner).await
        {
            proxy.config = previous;
            if was_running {
                let _ = proxy.start(&self.inner).await;
            }
            return Err(e);
        }
        if enabled {
            proxy.start(&self.inner).await?;
        }
        proxy.config.enabled = enabled;
        Ok(proxy.view())
    }

    /// Stops a proxy, closes its connections and forgets it (detached from the caller).
    pub async fn delete(&self, name: &str) -> Result<(), Error> {
        let registry = self.clone();
        let name = name.to_owned();
        detached(async move {
            let _listeners = registry.inner.listeners.lock().await;
            let stopping = {
                let mut proxies = registry.inner.proxies.lock().await;
                let mut proxy = proxies.remove(&name).ok_or(Error::ProxyNotFound)?;
                proxy.stop_now()
            };
            // Off the lock; the answer still waits, so the port is free once it comes.
            stopping.wait().await;
            Ok(())
        })
        .await
    }

    /// Re-enables every proxy and removes every toxic.
    pub async fn reset(&self) -> Result<(), Error> {
        let _listeners = self.inner.listeners.lock().await;
        let mut proxies = self.inner.proxies.lock().await;
        for proxy in proxies.values_mut() {
            proxy.start(&self.inner).await?;
            proxy.config.enabled = true;
            proxy.clear_toxics();
        }
        Ok(())
    }

    /// Removes every toxic and HTTP fault of every proxy at once (proxies stay as they are)
    /// and counts the halt, so running drills see it and stop. Returns the number removed.
    pub async fn halt(&self) -> usize {
        let mut proxies = self.inner.proxies.lock().await;
        let mut removed = 0;
        for proxy in proxies.values_mut() {
            removed += proxy.clear_toxics();
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
        let mut entry = self.entry(toxic);
        self.schedule_expiry(proxy, &mut entry);
        let toxic = entry.toxic.clone();
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
        let mut entry = self.entry(next);
        if !entry.toxic.kind.is_http() || entry.toxic.kind == proxy.toxics[i].toxic.kind {
            // Keep first_n counters and rate-limit buckets across a change of bounds only.
            entry.state = proxy.toxics[i].state.clone();
        }
        // The time to live counts from this update; the old timer is aborted.
        self.schedule_expiry(proxy, &mut entry);
        let next = entry.toxic.clone();
        proxy.toxics[i] = entry;
        proxy.publish(next.stream);
        Ok(next)
    }

    /// Removes a toxic; held-back data is flushed, never lost.
    pub async fn remove_toxic(&self, proxy: &str, toxic: &str) -> Result<(), Error> {
        let mut proxies = self.inner.proxies.lock().await;
        let proxy = proxies.get_mut(proxy).ok_or(Error::ProxyNotFound)?;
        let i = proxy.find(toxic)?;
        proxy.cancel_timer(toxic);
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
        let stopping: Vec<Stopping> = {
            let mut proxies = self.inner.proxies.lock().await;
            proxies.values_mut().map(Proxy::stop_now).collect()
        };
        Stopping::wait_all(stopping).await;
        self.inner.root.cancel();
        self.inner.tracker.close();
        let _ = tokio::time::timeout(grace, self.inner.tracker.wait()).await;
    }
}

/// The listen address of an enabled proxy as a literal socket address, resolved now (off
/// the registry lock); `None` for a disabled proxy, which keeps its text until it starts.
async fn pre_resolve(config: &ProxyConfig) -> Option<Result<String, Error>> {
    if !config.enabled {
        return None;
    }
    Some(
        listener::resolve_listen(&config.listen)
            .await
            .map(|a| a.to_string()),
    )
}

/// Runs a control operation as its own task and waits for it, so that the caller going
/// away (an API client hanging up) cannot stop it half-way.
async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, Error>> + Send + 'static,
) -> Result<T, Error> {
    tokio::spawn(work)
        .await
        .unwrap_or_else(|e| Err(Error::Listen(format!("control operation failed: {e}"))))
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
