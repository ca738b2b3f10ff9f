//! TLS for HTTP proxies: the local CA ([`LocalCa`]), the server side that terminates TLS on
//! a proxy's listener (between the TCP-toxic layer and hyper), and the client side that
//! reaches `https://` upstreams, verifying them against the system's roots plus any extra
//! CA files.

mod ca;
pub(crate) mod hello;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use downtime_model::tls_options::TlsOptions;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

pub(crate) use ca::Broken;
pub use ca::LocalCa;

/// Where the CA lives unless told otherwise: `$DOWNTIME_CA_DIR`, else the user's data
/// directory (`$XDG_DATA_HOME/downtime/ca`, or `~/.local/share/downtime/ca`).
pub fn default_ca_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DOWNTIME_CA_DIR") {
        return PathBuf::from(dir);
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    data.join("downtime").join("ca")
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server side of a TLS proxy: a leaf from the CA for its names, or the supplied
/// certificate and key; ALPN offers h2 and http/1.1; TLS 1.3 tickets for resumption.
pub(crate) fn server_config(
    options: &TlsOptions,
    ca: Option<&LocalCa>,
) -> Result<Arc<ServerConfig>, String> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_no_client_auth();
    let mut config = match (&options.cert, &options.key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| format!("tls.cert {cert}: {e}"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("tls.cert {cert}: {e}"))?;
            if chain.is_empty() {
                return Err(format!("tls.cert {cert}: no certificate in the file"));
            }
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| format!("tls.key {key}: {e}"))?;
            builder
                .with_single_cert(chain, key)
                .map_err(|e| format!("tls.cert {cert} and tls.key do not go together: {e}"))?
        }
        _ => {
            let ca =
                ca.ok_or("tls: no certificate authority to issue a leaf (see `downtime ca`)")?;
            let leaf = ca.leaf(&options.names)?;
            builder.with_cert_resolver(Arc::new(Fixed(leaf)))
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ticketer =
        rustls::crypto::ring::Ticketer::new().map_err(|e| format!("tls tickets: {e}"))?;
    Ok(Arc::new(config))
}

/// A server configuration that presents `key` (ALPN h2 and http/1.1).
pub(crate) fn config_with(
    key: Arc<rustls::sign::CertifiedKey>,
) -> Result<Arc<ServerConfig>, String> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Fixed(key)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Always the same certificate, whatever the client's SNI.
#[derive(Debug)]
struct Fixed(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for Fixed {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The roots a TLS client of downtime trusts: the system's (one rustls cannot parse is
/// skipped, as browsers do) plus every certificate of the `extra` PEM files, each read now
/// (errors name the file).
pub fn root_store(extra: &[PathBuf]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    for path in extra {
        add_ca_file(&mut roots, path)?;
    }
    Ok(roots)
}

/// Reads every certificate of a PEM file into `roots`.
fn add_ca_file(roots: &mut RootCertStore, path: &Path) -> Result<(), String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("extra CA {}: {e}", path.display()))?;
    let mut added = 0;
    for cert in certs {
        let cert = cert.map_err(|e| format!("extra CA {}: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("extra CA {}: {e}", path.display()))?;
        added += 1;
    }
    if added == 0 {
        return Err(format!(
            "extra CA {}: no certificate in the file",
            path.display()
        ));
    }
    Ok(())
}

/// The client side for `https://` upstreams: the system's roots plus `extra` CA files (the
/// HTTPS connector sets ALPN itself: h2 and http/1.1).
pub(crate) fn client_config(extra: &[PathBuf]) -> Result<ClientConfig, String> {
    client_config_with(extra, false)
}

/// As [`client_config`]; `insecure` accepts any certificate (a proxy's explicit
/// `http.upstream_insecure`).
pub(crate) fn client_config_with(
    extra: &[PathBuf],
    insecure: bool,
) -> Result<ClientConfig, String> {
    if insecure {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnything(provider())))
            .with_no_client_auth();
        return Ok(config);
    }
    let roots = root_store(extra)?;
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// A verifier that accepts every certificate but still checks the handshake signatures
/// (so the session is encrypted to whoever answered, just not authenticated).
#[derive(Debug)]
struct AcceptAnything(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
