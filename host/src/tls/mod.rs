//! TLS both ways, with rustls and its `ring` provider (passed explicitly to every config, never
//! taken from a process-wide default).
//!
//! - [`certs`]: the certificates a listener serves: read and checked (PEM, key matches the leaf,
//!   leaf within its validity period), chosen by SNI, watched and swapped without a restart.
//! - [`client`]: TLS to upstreams and to hosts plugins may call: trust roots, server name,
//!   client certificates, and finding the TLS reason in a failed exchange.

pub mod certs;
pub mod client;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

pub use self::certs::{CertStore, TlsAcceptor};

/// The one crypto provider every TLS config is built with.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())))
}

/// A certificate, key or CA file that cannot be used; the message names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsFileError {
    /// The file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but holds nothing usable.
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl TlsFileError {
    fn invalid(path: &std::path::Path, reason: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Reads a certificate, key or CA file.
fn read(path: &std::path::Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|source| TlsFileError::Read {
        path: path.to_owned(),
        source,
    })
}
