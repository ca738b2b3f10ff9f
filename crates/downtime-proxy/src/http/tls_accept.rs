//! A TLS handshake on one of downtime's TLS listeners, under the proxy's TLS faults: the
//! client's hello is read first (bounded by the head timeout), its server name matched
//! against the faults, and then the handshake is stalled, refused with an alert, served a
//! broken certificate, or completed normally. A faulted handshake is journaled.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use downtime_model::ToxicKind;
use downtime_model::http_fault::HttpAction;
use downtime_model::tls_fault::{TlsFaultKind, alert_code};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::server::TlsStream;

use super::HttpShared;
use super::faults;
use super::journal::JournalEntry;
use crate::tls::hello::{self, Prefixed};
use crate::tls::{Broken, config_with};

/// How long a stalled handshake is held before the connection is dropped anyway.
const HOLD: Duration = Duration::from_secs(600);

/// Completes (or breaks, under a TLS fault) the handshake of `io`; `config` serves a
/// normal handshake and `names` are the names a broken certificate is made for.
pub(crate) async fn accept<IO>(
    mut io: IO,
    shared: &HttpShared,
    config: Arc<rustls::ServerConfig>,
    names: &[String],
) -> Option<TlsStream<Prefixed<IO>>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let limit = Duration::from_millis(shared.options.header_timeout_ms);
    let record = match tokio::time::timeout(limit, hello::read_record(&mut io)).await {
        Ok(Ok(record)) => record,
        Ok(Err(e)) => {
            tracing::debug!(proxy = %shared.name, error = %e, "no TLS hello");
            return None;
        }
        Err(_) => return None,
    };
    let server_name = hello::server_name(&record);
    let chain = shared.faults.borrow().clone();
    let fault = faults::select_tls(&chain, server_name.as_deref(), &shared.rng).and_then(|e| {
        match &e.toxic.kind {
            ToxicKind::Http(HttpAction::Tls(t)) => Some((t.clone(), e.toxic.name.clone())),
            _ => None,
        }
    });
    let config = match &fault {
        None => config,
        Some((tls, name)) => {
            journal(shared, server_name.as_deref(), name);
            let broken = match tls.kind {
                TlsFaultKind::HandshakeTimeout => {
                    hold(&mut io, shared).await;
                    return None;
                }
                TlsFaultKind::Alert => {
                    let code = tls.alert.as_deref().and_then(alert_code).unwrap_or(40);
                    let _ = io.write_all(&hello::alert(code)).await;
                    let _ = io.shutdown().await;
                    return None;
                }
                TlsFaultKind::Expired => Broken::Expired,
                TlsFaultKind::WrongHost => Broken::WrongHost,
                TlsFaultKind::Untrusted => Broken::Untrusted,
            };
            let names = match &server_name {
                Some(n) => vec![n.clone()],
                None => names.to_vec(),
            };
            let leaf = shared.ca.as_ref()?.broken_leaf(&names, broken).ok()?;
            config_with(leaf).ok()?
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    match tokio::time::timeout(limit, acceptor.accept(Prefixed::new(record, io))).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            // A client refusing a broken certificate ends here, as it should.
            tracing::debug!(proxy = %shared.name, error = %e, "tls handshake failed");
            None
        }
        Err(_) => None,
    }
}

/// Reads and drops what the client sends until it gives up, the proxy stops, or [`HOLD`].
async fn hold<IO: AsyncRead + Unpin>(io: &mut IO, shared: &HttpShared) {
    let drain = async {
        let mut sink = [0u8; 1024];
        while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {}
    };
    tokio::select! {
        () = shared.cancel.cancelled() => {}
        () = drain => {}
        () = tokio::time::sleep(HOLD) => {}
    }
}

/// A journal entry for a handshake a TLS fault broke: method `TLS`, the server name.
fn journal(shared: &HttpShared, server_name: Option<&str>, fault: &str) {
    shared.counters.record(0, Some(fault));
    shared.journal.push(JournalEntry {
        seq: 0,
        at_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        method: "TLS".to_owned(),
        path: String::new(),
        host: server_name.map(str::to_owned),
        headers: Default::default(),
        status: 0,
        fault: Some(fault.to_owned()),
        duration_ms: 0,
        headers_ms: 0,
        bytes_in: 0,
        bytes_out: 0,
        cut: Some("tls"),
    });
}
