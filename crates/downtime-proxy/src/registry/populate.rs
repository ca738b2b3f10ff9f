//! `POST /populate`: create or replace many proxies at once, all or nothing.

use downtime_model::{ProxyConfig, Toxic};

use super::proxy::{Proxy, Stopping};
use super::{Error, PopulateError, ProxyView, Registry, pre_resolve, same_address};

impl Registry {
    /// Creates or replaces proxies in order; an unchanged proxy is kept untouched. All or
    /// nothing: if one fails, the proxies created so far are removed and the ones replaced
    /// are put back as they were (restarted if they were running).
    pub async fn populate(
        &self,
        items: Vec<(ProxyConfig, Vec<Toxic>)>,
    ) -> Result<Vec<ProxyView>, PopulateError> {
        let registry = self.clone();
        // Detached, so a client that hangs up cannot leave the change half done.
        let task = tokio::spawn(async move { registry.populate_now(items).await });
        match task.await {
            Ok(result) => result,
            Err(e) => Err(PopulateError {
                error: Error::Listen(format!("populate did not finish: {e}")),
                proxies: Vec::new(),
            }),
        }
    }

    async fn populate_now(
        &self,
        mut items: Vec<(ProxyConfig, Vec<Toxic>)>,
    ) -> Result<Vec<ProxyView>, PopulateError> {
        // Resolved before the lock; an unresolvable listen fails in its turn below.
        for (config, _) in &mut items {
            if let Some(Ok(address)) = pre_resolve(config).await {
                config.listen = address;
            }
        }
        let _listeners = self.inner.listeners.lock().await;
        let mut done = Vec::with_capacity(items.len());
        let mut created: Vec<String> = Vec::new();
        let mut kept: Vec<ProxyView> = Vec::new();
        let mut replaced: Vec<(Proxy, bool)> = Vec::new();
        let mut failure = None;
        for (config, toxics) in items {
            // A proxy being replaced is stopped under the lock and waited for off it: the
            // new one may want its port.
            let stopping = {
                let mut proxies = self.inner.proxies.lock().await;
                match proxies.get_mut(&config.name) {
                    Some(existing)
                        if same_address(&existing.config.listen, &config.listen).await
                            && existing.config.upstream == config.upstream =>
                    {
                        done.push(existing.view());
                        kept.push(existing.view());
                        continue;
                    }
                    Some(existing) => {
                        let was_running = existing.running.is_some();
                        let stopping = existing.stop_now();
                        if let Some(old) = proxies.remove(&config.name)
                            && !created.contains(&config.name)
                        {
                            replaced.push((old, was_running));
                        }
                        stopping
                    }
                    None => Stopping::none(),
                }
            };
            stopping.wait().await;
            let mut proxies = self.inner.proxies.lock().await;
            match self.build(config, toxics).await {
                Ok(mut proxy) => {
                    self.arm_all(&mut proxy);
                    done.push(proxy.view());
                    if !created.contains(&proxy.config.name) {
                        created.push(proxy.config.name.clone());
                    }
                    proxies.insert(proxy.config.name.clone(), proxy);
                }
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        let Some(error) = failure else {
            return Ok(done);
        };
        let stopping: Vec<Stopping> = {
            let mut proxies = self.inner.proxies.lock().await;
            created
                .iter()
                .filter_map(|name| proxies.remove(name))
                .map(|mut proxy| proxy.stop_now())
                .collect()
        };
        Stopping::wait_all(stopping).await;
        let mut proxies = self.inner.proxies.lock().await;
        for (mut old, was_running) in replaced {
            if was_running && let Err(e) = old.start(&self.inner).await {
                tracing::error!(proxy = %old.config.name, error = %e, "could not restart a proxy after a failed populate");
            }
            proxies.insert(old.config.name.clone(), old);
        }
        Err(PopulateError {
            error,
            proxies: kept,
        })
    }
}
