//! TLS inside the control plane: the clients of drill probes and webhooks (rustls with the
//! ring provider, the system's roots plus extra CA files) and the control API's server side
//! (`--api-tls`: a leaf from the local CA, or a supplied certificate and key).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use downtime_proxy::tls::LocalCa;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, ServerConfig};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration trusting the system's roots plus every certificate of the
/// `extra_ca` PEM files (each read now: errors name the file).
pub fn client_config(extra_ca: &[PathBuf]) -> Result<ClientConfig, String> {
    let roots = downtime_proxy::tls::root_store(extra_ca)?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A reqwest builder whose `https://` connections verify against the system's roots plus
/// `extra_ca` (see [`client_config`]).
pub fn client_builder(extra_ca: &[PathBuf]) -> Result<reqwest::ClientBuilder, String> {
    let config = client_config(extra_ca)?;
    Ok(reqwest::Client::builder().tls_backend_preconfigured(config))
}

/// What was wrong with the peer's certificate, if `error` (or one of its sources) is a
/// certificate verification failure.
pub fn certificate_problem(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(rustls::Error::InvalidCertificate(why)) = e.downcast_ref::<rustls::Error>() {
            return Some(describe_certificate_error(why));
        }
        // `io::Error` skips the error it wraps in `source()` (TLS errors come as an
        // `io::Error` in another): step into it instead.
        current = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

fn describe_certificate_error(why: &rustls::CertificateError) -> String {
    match why {
        rustls::CertificateError::UnknownIssuer => {
            "issued by an unknown authority (not in the system roots nor the extra CA files)"
                .to_owned()
        }
        rustls::CertificateError::BadSignature => {
            "its signature does not verify against the trusted authority of that name (another \
             CA with the same name?)"
                .to_owned()
        }
        rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. } => {
            "expired".to_owned()
        }
        rustls::CertificateError::NotValidForName
        | rustls::CertificateError::NotValidForNameContext { .. } => {
            "not valid for the host name".to_owned()
        }
        other => format!("{other:?}"),
    }
}

/// How the control API serves TLS (`--api-tls`).
#[derive(Debug, Clone)]
pub enum ApiTls {
    /// A leaf issued by the local CA ([`crate::ServeOptions::ca_dir`]) for these names; an
    /// empty list means the bound IP (unless a wildcard), `localhost`, `127.0.0.1`, `::1`.
    LocalCa {
        /// DNS names or IP addresses the certificate is valid for.
        names: Vec<String>,
    },
    /// A certificate chain and its private key (PEM files).
    Files {
        /// The certificate chain, leaf first.
        cert: PathBuf,
        /// The private key of the leaf.
        key: PathBuf,
    },
}

/// The default names of a CA-issued API certificate for an API bound to `bound`.
pub fn default_api_names(bound: std::net::SocketAddr) -> Vec<String> {
    let mut names = Vec::new();
    if !bound.ip().is_unspecified() {
        names.push(bound.ip().to_string());
    }
    for name in ["localhost", "127.0.0.1", "::1"] {
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    names
}

/// The control API's server configuration (HTTP/1.1 only, as the API is served).
pub fn api_server_config(
    tls: &ApiTls,
    ca: impl FnOnce() -> Result<Arc<LocalCa>, String>,
    bound: std::net::SocketAddr,
) -> Result<Arc<ServerConfig>, String> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("api tls: {e}"))?
        .with_no_client_auth();
    let mut config = match tls {
        ApiTls::Files { cert, key } => {
            let chain = read_chain(cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("api tls key {}: {e}", key.display()))?;
            builder.with_single_cert(chain, key).map_err(|e| {
                format!(
                    "api tls certificate {} and its key do not go together: {e}",
                    cert.display()
                )
            })?
        }
        ApiTls::LocalCa { names } => {
            let names = if names.is_empty() {
                default_api_names(bound)
            } else {
                names.clone()
            };
            let leaf = ca()?.leaf(&names)?;
            builder.with_cert_resolver(Arc::new(Fixed(leaf)))
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("api tls certificate {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("api tls certificate {}: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "api tls certificate {}: no certificate in the file",
            path.display()
        ));
    }
    Ok(chain)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_errors_are_found_inside_nested_io_errors() {
        let rustls_error =
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let inner = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls_error);
        let outer = std::io::Error::other(inner);
        let why = certificate_problem(&outer).unwrap_or_default();
        assert!(why.contains("unknown authority"), "{why}");
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(certificate_problem(&refused), None);
    }

    #[test]
    fn default_api_names_cover_loopback_and_the_bound_ip() {
        let names = default_api_names("10.1.2.3:8474".parse().unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(names, ["10.1.2.3", "localhost", "127.0.0.1", "::1"]);
        let names = default_api_names("0.0.0.0:8474".parse().unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(names, ["localhost", "127.0.0.1", "::1"]);
    }
}
