//! TLS to upstreams (`tls = true`) and to the hosts plugins may call with `https://`.
//!
//! Trust: a configured PEM CA bundle, else the system's roots (read once per process with
//! `rustls-native-certs`), else, when the system has none (a minimal container), the Mozilla
//! roots compiled in (`webpki-roots`). The server name verified is the target's host unless an
//! upstream sets `server_name`. ALPN offers `http/1.1` only: upstream exchanges are HTTP/1.1.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use hyper_rustls::{
    DefaultServerNameResolver, FixedServerNameResolver, HttpsConnector, ResolveServerName,
};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::RootCertStore;
use rustls_pki_types::ServerName;

use super::certs::{certified_key, parse_chain, parse_key};
use super::{TlsFileError, provider, read};

/// What a TLS client trusts and presents.
#[derive(Debug, Clone, Default)]
pub struct ClientTls<'a> {
    /// PEM CA bundle; `None` for the system's roots.
    pub ca_file: Option<&'a Path>,
    /// Client certificate chain and key (mTLS).
    pub client_auth: Option<(&'a Path, &'a Path)>,
}

/// The roots of a CA bundle file.
pub fn roots_from_file(path: &Path) -> Result<RootCertStore, TlsFileError> {
    let pem = read(path)?;
    let mut roots = RootCertStore::empty();
    for cert in parse_chain(&pem, path)? {
        roots.add(cert).map_err(|e| {
            TlsFileError::invalid(
                path,
                format!("holds a certificate that is not a usable CA: {e}"),
            )
        })?;
    }
    Ok(roots)
}

/// The system's roots, or the compiled-in Mozilla roots when the system has none.
pub fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    Arc::clone(ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            tracing::info!(
                "no system CA certificates found; trusting the compiled-in Mozilla roots"
            );
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        Arc::new(roots)
    }))
}

/// A client config builder with the one provider and TLS 1.2 and 1.3.
pub fn builder() -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier> {
    rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .expect("the ring provider supports TLS 1.2 and 1.3")
}

/// A client config that trusts no server: for clients that never use `https`.
pub fn trusting_nothing() -> rustls::ClientConfig {
    builder()
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth()
}

/// A TLS client config: trust, optional client certificate, the one crypto provider.
pub fn client_config(tls: &ClientTls<'_>) -> anyhow::Result<rustls::ClientConfig> {
    let roots = match tls.ca_file {
        Some(path) => Arc::new(roots_from_file(path)?),
        None => system_roots(),
    };
    let builder = builder().with_root_certificates(roots);
    let Some((cert_path, key_path)) = tls.client_auth else {
        return Ok(builder.with_no_client_auth());
    };
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    // The same checks as a served certificate: PEM, validity, key matching the leaf.
    certified_key(&cert_pem, cert_path, &key_pem, key_path)?;
    let chain = parse_chain(&cert_pem, cert_path)?;
    let key = parse_key(&key_pem, key_path)?;
    Ok(builder
        .with_client_auth_cert(chain, key)
        .map_err(|e| TlsFileError::invalid(key_path, format!("unusable client key: {e}")))?)
}

/// A connector that speaks `http` plainly and `https` with `config`, offering ALPN
/// `http/1.1` (or only `h2` with `http2`), verifying `server_name` instead of the URI's host
/// when given.
pub fn connector(
    http: HttpConnector,
    mut config: rustls::ClientConfig,
    server_name: Option<ServerName<'static>>,
    http2: bool,
) -> HttpsConnector<HttpConnector> {
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    let resolver: Arc<dyn ResolveServerName + Send + Sync> = match server_name {
        Some(name) => Arc::new(FixedServerNameResolver::new(name)),
        None => Arc::new(DefaultServerNameResolver::default()),
    };
    HttpsConnector::new(http, config, false, resolver)
}

/// The TLS failure inside an error's source chain, if any. I/O errors are looked into as
/// well: they carry the TLS error as their payload, which `source()` skips.
pub fn find_tls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            && let Some(tls) = find_tls_error(inner)
        {
            return Some(tls);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_errors_are_found_through_io_errors() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::other(std::io::Error::new(std::io::ErrorKind::InvalidData, tls));
        let wrapped = anyhow::Error::new(io).context("target 127.0.0.1:1");
        let found = find_tls_error(wrapped.as_ref()).expect("found");
        assert!(matches!(
            found,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
        ));
        let plain = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(find_tls_error(&plain).is_none());
    }
}
