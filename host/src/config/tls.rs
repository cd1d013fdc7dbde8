//! `[server.tls]` and `[admin.tls]`: certificates a listener serves and how it negotiates.
//!
//! The files are read and checked when the gateway is built ([`crate::tls`]), not here: parsing
//! a config never touches the network or the certificate files.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// `[server.tls]` / `[admin.tls]`: the listener serves TLS with these certificates.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsConfig {
    /// Certificates, chosen by the client's SNI against each leaf's DNS names (`*.example.com`
    /// matches one label). The first is served when SNI is absent or matches none. At least one.
    pub certificates: Vec<CertificateConfig>,
    /// Lowest TLS version accepted: `"1.2"` or `"1.3"`. Default `"1.2"`.
    #[serde(default)]
    pub min_version: TlsVersion,
    /// Time a client has to complete the TLS handshake, in ms; past it the connection is
    /// closed. Default 10000.
    #[serde(default = "default_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    /// A cleartext listener served beside the TLS one (same routes, same limits; its
    /// connections count against the same `max_connections`). Only under `[server.tls]`.
    /// Default: none.
    #[serde(default)]
    pub plain_listen: Option<SocketAddr>,
}

fn default_handshake_timeout_ms() -> u64 {
    10_000
}

/// One `[[server.tls.certificates]]` entry: a PEM chain and its PEM private key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// PEM certificate chain, leaf first, relative to the config file's directory.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1; not encrypted) of the leaf, relative to the
    /// config file's directory.
    pub key_file: PathBuf,
}

/// `min_version`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    #[serde(rename = "1.2")]
    V1_2,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    V1_3,
}
