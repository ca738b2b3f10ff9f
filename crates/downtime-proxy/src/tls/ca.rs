//! downtime's local certificate authority: one CA key and certificate kept in a directory,
//! and leaf certificates issued from it on demand for the names a proxy answers to, cached
//! so a name costs one issuance per process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

/// File names inside the CA directory.
const CERT_FILE: &str = "downtime-ca.pem";
const KEY_FILE: &str = "downtime-ca-key.pem";
/// How long leaves are valid: short, since they are issued again at every start.
const LEAF_DAYS: i64 = 30;
/// How long the CA is valid.
const CA_DAYS: i64 = 3650;
/// Distinct name sets cached; past it the cache starts over (forward mode meets many hosts).
const MAX_CACHED_LEAVES: usize = 10_000;

/// How a [`LocalCa::broken_leaf`] fails verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Broken {
    /// Its validity ended yesterday.
    Expired,
    /// It names another host.
    WrongHost,
    /// Self-signed: no client trusts it.
    Untrusted,
}

/// The local CA and its cache of leaves.
pub struct LocalCa {
    dir: PathBuf,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    leaves: Mutex<HashMap<Vec<String>, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "downtime local CA");
    dn.push(DnType::OrganizationName, "downtime");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn days_from_now(days: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() + time::Duration::days(days)
}

/// Writes `text` to `path` readable by its owner only.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

impl LocalCa {
    /// Opens the CA in `dir`, creating the directory, key and certificate the first time.
    /// Errors name the directory or file and the reason.
    pub fn open(dir: &Path) -> Result<Self, String> {
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        let (cert_pem, key) = if cert_path.exists() || key_path.exists() {
            let read = |p: &Path| {
                std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
            };
            let cert_pem = read(&cert_path)?;
            let key = KeyPair::from_pem(&read(&key_path)?)
                .map_err(|e| format!("{} is not a private key: {e}", key_path.display()))?;
            (cert_pem, key)
        } else {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create the CA directory {}: {e}", dir.display()))?;
            let key = KeyPair::generate().map_err(|e| format!("cannot make a CA key: {e}"))?;
            let mut params = ca_params();
            params.not_before = days_from_now(-1);
            params.not_after = days_from_now(CA_DAYS);
            let cert = params
                .self_signed(&key)
                .map_err(|e| format!("cannot make the CA certificate: {e}"))?;
            write_private(&key_path, &key.serialize_pem())
                .map_err(|e| format!("cannot write {}: {e}", key_path.display()))?;
            std::fs::write(&cert_path, cert.pem())
                .map_err(|e| format!("cannot write {}: {e}", cert_path.display()))?;
            (cert.pem(), key)
        };
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| format!("{} is not a PEM certificate: {e}", cert_path.display()))?;
        Ok(LocalCa {
            dir: dir.to_owned(),
            cert_pem,
            cert_der,
            // Same name and key as the stored certificate: leaves chain to it.
            issuer: Issuer::new(ca_params(), key),
            leaves: Mutex::default(),
        })
    }

    /// The CA certificate's file, the one clients are told to trust.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(CERT_FILE)
    }

    /// The CA certificate in PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A leaf valid for `names` (DNS names or IP addresses), with the CA in its chain.
    pub fn leaf(&self, names: &[String]) -> Result<Arc<CertifiedKey>, String> {
        let mut key_names = names.to_vec();
        key_names.sort();
        let mut cache = self
            .leaves
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(found) = cache.get(&key_names) {
            return Ok(found.clone());
        }
        let issued = Arc::new(self.issue(names)?);
        if cache.len() >= MAX_CACHED_LEAVES {
            cache.clear();
        }
        cache.insert(key_names, issued.clone());
        Ok(issued)
    }

    /// A certificate made to fail verification the way `broken` says, for TLS faults:
    /// expired (valid until yesterday), for another name, or self-signed (untrusted).
    pub(crate) fn broken_leaf(
        &self,
        names: &[String],
        broken: Broken,
    ) -> Result<Arc<CertifiedKey>, String> {
        let names = match broken {
            Broken::WrongHost => vec!["wrong-host.downtime.invalid".to_owned()],
            _ => names.to_vec(),
        };
        let mut params = CertificateParams::new(names.clone())
            .map_err(|e| format!("cannot issue a certificate for {names:?}: {e}"))?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        if broken == Broken::Expired {
            params.not_before = days_from_now(-LEAF_DAYS);
            params.not_after = days_from_now(-1);
        } else {
            params.not_before = days_from_now(-1);
            params.not_after = days_from_now(LEAF_DAYS);
        }
        let key = KeyPair::generate().map_err(|e| format!("cannot make a leaf key: {e}"))?;
        let (chain, cert) = if broken == Broken::Untrusted {
            let cert = params
                .self_signed(&key)
                .map_err(|e| format!("cannot self-sign: {e}"))?;
            (vec![cert.der().clone()], cert)
        } else {
            params.use_authority_key_identifier_extension = true;
            let cert = params
                .signed_by(&key, &self.issuer)
                .map_err(|e| format!("cannot sign: {e}"))?;
            (vec![cert.der().clone(), self.cert_der.clone()], cert)
        };
        let _ = cert;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing = rustls::crypto::ring::sign::any_supported_type(&der)
            .map_err(|e| format!("unusable leaf key: {e}"))?;
        Ok(Arc::new(CertifiedKey::new(chain, signing)))
    }

    fn issue(&self, names: &[String]) -> Result<CertifiedKey, String> {
        let mut params = CertificateParams::new(names.to_vec())
            .map_err(|e| format!("cannot issue a certificate for {names:?}: {e}"))?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().map_or("downtime", String::as_str),
        );
        params.distinguished_name = dn;
        params.not_before = days_from_now(-1);
        params.not_after = days_from_now(LEAF_DAYS);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(|e| format!("cannot make a leaf key: {e}"))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| format!("cannot sign a certificate for {names:?}: {e}"))?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing = rustls::crypto::ring::sign::any_supported_type(&der)
            .map_err(|e| format!("unusable leaf key: {e}"))?;
        Ok(CertifiedKey::new(
            vec![cert.der().clone(), self.cert_der.clone()],
            signing,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_created_once_and_leaves_are_cached() {
        let dir = std::env::temp_dir().join(format!("downtime-ca-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ca = LocalCa::open(&dir).unwrap();
        let pem = ca.cert_pem().to_owned();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.join(KEY_FILE)).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let again = LocalCa::open(&dir).unwrap();
        assert_eq!(again.cert_pem(), pem, "opened, not made again");
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let a = again.leaf(&names).unwrap();
        let b = again.leaf(&names).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.cert.len(), 2, "leaf and CA");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
