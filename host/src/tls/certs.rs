//! The certificates a TLS listener serves.
//!
//! A [`CertStore`] holds the parsed set behind an `ArcSwap` and is the listener's
//! [`ResolvesServerCert`]: every handshake reads the set in force, so a swap takes effect on
//! the next handshake and never touches connections already established. The watcher
//! ([`CertStore::poll`], driven by [`crate::live`]) re-reads the files by content; a change is
//! applied once it has been the same for two polls, and a set that fails any check (PEM, key
//! matching the leaf, validity period) is refused with one log line while the previous set keeps
//! serving. The same checks refuse a config at start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;

use super::{TlsFileError, provider, read};
use crate::config::{Config, ListenerTlsConfig, TlsVersion};

/// A PEM certificate chain (leaf first) from a file.
pub fn parse_chain(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsFileError::invalid(path, format!("not a valid PEM file: {e}")))?;
    if chain.is_empty() {
        return Err(TlsFileError::invalid(
            path,
            "holds no PEM `CERTIFICATE` block",
        ));
    }
    Ok(chain)
}

/// A PEM private key from a file; encrypted keys are refused (nothing could unlock them).
pub fn parse_key(pem: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    // Both PKCS#8 `ENCRYPTED PRIVATE KEY` blocks and legacy `Proc-Type: 4,ENCRYPTED` headers.
    if pem.windows(9).any(|w| w == b"ENCRYPTED") {
        return Err(TlsFileError::invalid(
            path,
            "the private key is encrypted; give the gateway an unencrypted key",
        ));
    }
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsFileError::invalid(
            path,
            "holds no PEM private key (`PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`)",
        ),
        other => TlsFileError::invalid(path, format!("not a valid PEM key file: {other}")),
    })
}

/// Checks that the leaf certificate is within its validity period now and returns its DNS
/// names (lowercase), the names SNI is matched against.
pub fn check_leaf(leaf: &CertificateDer<'_>, path: &Path) -> Result<Vec<String>, TlsFileError> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| {
        TlsFileError::invalid(path, format!("the first certificate cannot be parsed: {e}"))
    })?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let validity = cert.validity();
    if validity.not_after.timestamp() < now {
        return Err(TlsFileError::invalid(
            path,
            format!("the certificate expired on {}", validity.not_after),
        ));
    }
    if validity.not_before.timestamp() > now {
        return Err(TlsFileError::invalid(
            path,
            format!(
                "the certificate is not valid before {}",
                validity.not_before
            ),
        ));
    }
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    Ok(names)
}

/// A chain and its key, checked: the key is usable and matches the leaf, and the leaf is
/// within its validity period. Returns the pair and the leaf's DNS names.
pub fn certified_key(
    cert_pem: &[u8],
    cert_path: &Path,
    key_pem: &[u8],
    key_path: &Path,
) -> Result<(CertifiedKey, Vec<String>), TlsFileError> {
    let chain = parse_chain(cert_pem, cert_path)?;
    let names = check_leaf(&chain[0], cert_path)?;
    let key = parse_key(key_pem, key_path)?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsFileError::invalid(key_path, format!("unusable private key: {e}")))?;
    let pair = CertifiedKey::new(chain, signing);
    match pair.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(TlsFileError::invalid(
                key_path,
                format!(
                    "the private key does not match the certificate in {}",
                    cert_path.display()
                ),
            ));
        }
        Err(e) => {
            return Err(TlsFileError::invalid(
                cert_path,
                format!("the certificate cannot be used: {e}"),
            ));
        }
    }
    Ok((pair, names))
}

/// The files of one certificate, resolved against the config's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The PEM chain.
    pub cert: PathBuf,
    /// The PEM key.
    pub key: PathBuf,
}

impl CertFiles {
    /// The files of every certificate of a listener's TLS section.
    pub fn of(tls: &ListenerTlsConfig, config: &Config) -> Vec<Self> {
        tls.certificates
            .iter()
            .map(|c| Self {
                cert: config.resolve(&c.cert_file),
                key: config.resolve(&c.key_file),
            })
            .collect()
    }
}

/// The contents of a listener's certificate files, read at one moment.
struct Snapshot {
    files: Vec<FileContents>,
}

/// One certificate's files and what reading each gave.
type FileContents = (
    CertFiles,
    Result<Vec<u8>, TlsFileError>,
    Result<Vec<u8>, TlsFileError>,
);

impl Snapshot {
    fn read(files: &[CertFiles]) -> Self {
        Self {
            files: files
                .iter()
                .map(|f| (f.clone(), read(&f.cert), read(&f.key)))
                .collect(),
        }
    }

    /// What the watcher compares: the contents (or the failure to read them).
    fn digest(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        for (_, cert, key) in &self.files {
            for part in [cert, key] {
                match part {
                    Ok(bytes) => {
                        hash.update([1]);
                        hash.update((bytes.len() as u64).to_le_bytes());
                        hash.update(bytes);
                    }
                    Err(_) => hash.update([0]),
                }
            }
        }
        hash.finalize().into()
    }

    fn parse(self) -> Result<CertSet, TlsFileError> {
        let mut entries = Vec::with_capacity(self.files.len());
        for (files, cert, key) in self.files {
            let (pair, names) = certified_key(&cert?, &files.cert, &key?, &files.key)?;
            entries.push(ServedCert {
                names,
                key: Arc::new(pair),
            });
        }
        Ok(CertSet { entries })
    }
}

/// Parsed certificates of one listener, in config order.
#[derive(Debug)]
pub struct CertSet {
    entries: Vec<ServedCert>,
}

#[derive(Debug)]
struct ServedCert {
    names: Vec<String>,
    key: Arc<CertifiedKey>,
}

impl CertSet {
    /// Reads and checks every certificate; the first failure names its file.
    pub fn load(files: &[CertFiles]) -> Result<Self, TlsFileError> {
        Snapshot::read(files).parse()
    }

    /// The certificate for an SNI name: an exact DNS name first, then a wildcard
    /// (`*.example.com` matches exactly one label before `example.com`), in config order;
    /// the first certificate when there is no name or nothing matches.
    pub fn select(&self, sni: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        let default = self.entries.first().map(|e| &e.key);
        let Some(sni) = sni else { return default };
        let sni = sni.trim_end_matches('.').to_ascii_lowercase();
        let exact = self.entries.iter().find(|e| e.names.contains(&sni));
        let wildcard = || {
            let (label, parent) = sni.split_once('.')?;
            if label.is_empty() {
                return None;
            }
            self.entries.iter().find(|e| {
                e.names
                    .iter()
                    .any(|n| n.strip_prefix("*.").is_some_and(|p| p == parent))
            })
        };
        exact.or_else(wildcard).map(|e| &e.key).or(default)
    }
}

/// One listener's certificates: the set in force, and the watcher's record of the files.
#[derive(Debug)]
pub struct CertStore {
    label: &'static str,
    current: ArcSwap<CertSet>,
    watch: Mutex<WatchState>,
    reloaded: AtomicU64,
    refused: AtomicU64,
}

#[derive(Debug)]
struct WatchState {
    files: Vec<CertFiles>,
    /// Digest of the contents last applied or refused.
    applied: [u8; 32],
    /// Digest seen at the previous poll, if it differed from `applied`.
    seen: Option<[u8; 32]>,
}

impl CertStore {
    /// Reads and checks a listener's certificates; `label` (`server.tls`, `admin.tls`) names
    /// the section in logs.
    pub fn load(label: &'static str, files: Vec<CertFiles>) -> Result<Self, TlsFileError> {
        let snapshot = Snapshot::read(&files);
        let applied = snapshot.digest();
        let set = snapshot.parse()?;
        Ok(Self {
            label,
            current: ArcSwap::from_pointee(set),
            watch: Mutex::new(WatchState {
                files,
                applied,
                seen: None,
            }),
            reloaded: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// File changes served since start (config reloads that named new files included).
    pub fn reloaded(&self) -> u64 {
        self.reloaded.load(Ordering::SeqCst)
    }

    /// File changes refused since start (the previous certificates kept serving).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    /// The files watched now.
    pub fn files(&self) -> Vec<CertFiles> {
        self.state().files.clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, WatchState> {
        self.watch.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serves `set`, read from `files` (a config reload that named other files).
    pub fn replace(&self, files: Vec<CertFiles>, set: CertSet) {
        let mut state = self.state();
        state.applied = Snapshot::read(&files).digest();
        state.files = files;
        state.seen = None;
        self.current.store(Arc::new(set));
        self.reloaded.fetch_add(1, Ordering::SeqCst);
        tracing::info!(
            section = self.label,
            "TLS certificates replaced by the config"
        );
    }

    /// Re-reads the files; a change that has stayed the same since the previous poll is
    /// checked and served, or refused with one log line (the set in force keeps serving).
    pub fn poll(&self) {
        let mut state = self.state();
        let snapshot = Snapshot::read(&state.files);
        let digest = snapshot.digest();
        if digest == state.applied {
            state.seen = None;
            return;
        }
        if state.seen != Some(digest) {
            state.seen = Some(digest);
            return;
        }
        state.applied = digest;
        state.seen = None;
        match snapshot.parse() {
            Ok(set) => {
                self.current.store(Arc::new(set));
                self.reloaded.fetch_add(1, Ordering::SeqCst);
                tracing::info!(section = self.label, "TLS certificates reloaded");
            }
            Err(e) => {
                self.refused.fetch_add(1, Ordering::SeqCst);
                tracing::warn!(section = self.label, error = %e, "TLS certificate change refused; the previous certificates keep serving");
            }
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load().select(hello.server_name()).cloned()
    }
}

/// A listener's TLS side: the handshake each accepted connection runs in its own task.
#[derive(Clone)]
pub struct TlsAcceptor {
    inner: tokio_rustls::TlsAcceptor,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl TlsAcceptor {
    /// TLS with `store`'s certificates, ALPN `h2` and `http/1.1`, and the section's minimum
    /// version and handshake timeout.
    pub fn new(store: Arc<CertStore>, tls: &ListenerTlsConfig) -> Result<Self, rustls::Error> {
        let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version {
            TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::V1_3 => &[&rustls::version::TLS13],
        };
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)?
            .with_no_client_auth()
            .with_cert_resolver(store);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            inner: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            handshake_timeout: Duration::from_millis(tls.handshake_timeout_ms),
        })
    }

    /// Runs the handshake within the timeout. Failures are the client's (wrong version, no
    /// common cipher, a scanner, a timeout) and are logged at debug only.
    pub async fn handshake(
        &self,
        stream: TcpStream,
        client: SocketAddr,
    ) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
        match tokio::time::timeout(self.handshake_timeout, self.inner.accept(stream)).await {
            Ok(Ok(tls)) => Some(tls),
            Ok(Err(e)) => {
                tracing::debug!(%client, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(%client, timeout = ?self.handshake_timeout, "TLS handshake timed out");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(names: &[&str]) -> ServedCert {
        // Selection only compares names: the "certificate" is the names, the key never signs.
        ServedCert {
            names: names.iter().map(|n| n.to_string()).collect(),
            key: Arc::new(CertifiedKey::new(
                vec![CertificateDer::from(names.join(",").into_bytes())],
                Arc::new(NoKey),
            )),
        }
    }

    #[derive(Debug)]
    struct NoKey;

    impl rustls::sign::SigningKey for NoKey {
        fn choose_scheme(
            &self,
            _offered: &[rustls::SignatureScheme],
        ) -> Option<Box<dyn rustls::sign::Signer>> {
            None
        }
        fn algorithm(&self) -> rustls::SignatureAlgorithm {
            rustls::SignatureAlgorithm::ECDSA
        }
    }

    fn chosen(set: &CertSet, sni: Option<&str>) -> String {
        let key = set.select(sni).expect("a certificate");
        String::from_utf8(key.cert[0].to_vec()).expect("utf-8")
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_the_first() {
        let set = CertSet {
            entries: vec![
                pair(&["default.test"]),
                pair(&["*.example.com"]),
                pair(&["api.example.com"]),
            ],
        };
        assert_eq!(chosen(&set, Some("api.example.com")), "api.example.com");
        assert_eq!(chosen(&set, Some("API.Example.com.")), "api.example.com");
        assert_eq!(chosen(&set, Some("www.example.com")), "*.example.com");
        // A wildcard covers one label only.
        assert_eq!(chosen(&set, Some("a.b.example.com")), "default.test");
        assert_eq!(chosen(&set, Some("example.com")), "default.test");
        assert_eq!(chosen(&set, Some("other.test")), "default.test");
        assert_eq!(chosen(&set, None), "default.test");
    }

    #[test]
    fn garbage_and_encrypted_keys_name_the_file() {
        let path = Path::new("/etc/tessera/site.pem");
        let err = parse_chain(b"not a certificate", path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/etc/tessera/site.pem"), "{err}");
        assert!(err.contains("no PEM"), "{err}");
        let encrypted =
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let err = parse_key(encrypted, path).unwrap_err().to_string();
        assert!(err.contains("encrypted"), "{err}");
    }
}
