//! Shared state for plugins: the `[buckets.<name>]` of the config, behind `wasi:keyvalue`.
//!
//! A plugin instance lives for one request, so anything that must outlive a request (a counter,
//! a cached answer) goes into a bucket. A bucket is held by a backend:
//! - `memory` ([`memory`]): in this gateway process, shared by all its requests and kept across
//!   config reloads that leave the bucket's settings unchanged; bounded by entries and bytes,
//!   evicting expired keys first and then the least recently written;
//! - `redis` ([`redis`]): in a Redis server, shared by every gateway pointing at it; every
//!   operation is bounded by `timeout_ms`, and a gateway starts and serves (with errors from the
//!   bucket) while the server is down, reconnecting on a later operation.
//!
//! Access: a plugin opens a bucket by name, and only the buckets its route entry lists in
//! `buckets` open. An unknown name and a name not granted get the same `access-denied`, so a
//! plugin cannot probe which buckets exist. Every operation counts against the entry's
//! `max_calls`, and keys, values and batches are capped ([`MAX_KEY_BYTES`], the bucket's
//! `max_value_bytes`, [`MAX_BATCH`]). The WIT imports themselves are in `host`.

mod host;
pub mod memory;
pub mod redis;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{BucketBackend, BucketConfig};

pub use host::{BucketHandle, CasHandle};

/// Longest key a plugin may use, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Most keys in one `get-many`, `set-many` or `delete-many`.
pub const MAX_BATCH: usize = 1000;
/// Most keys one `list-keys` page returns.
pub const LIST_PAGE: usize = 1000;

/// Why a bucket operation failed. It reaches the plugin as the WIT `error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KvError {
    /// The bucket is unknown or not granted to this route entry.
    #[error("access denied")]
    AccessDenied,
    /// The plugin asked for something a cap forbids (key or value size, batch size, calls).
    #[error("{0}")]
    Refused(String),
    /// The backend failed or did not answer in time; a retry may succeed.
    #[error("{0}")]
    Backend(String),
}

/// A value read for a compare-and-swap: `None` when the key was absent.
pub type Snapshot = Option<Vec<u8>>;

/// Where one bucket's data lives.
#[derive(Debug)]
pub enum Backend {
    /// In this process.
    Memory(memory::MemoryBucket),
    /// In a Redis server.
    Redis(Box<redis::RedisBucket>),
}

/// One configured bucket.
#[derive(Debug)]
pub struct Bucket {
    name: String,
    settings: BucketConfig,
    backend: Backend,
}

impl Bucket {
    fn new(name: &str, settings: &BucketConfig) -> Self {
        let backend = match settings.backend.get_ref() {
            BucketBackend::Memory => Backend::Memory(memory::MemoryBucket::new(settings)),
            BucketBackend::Redis => {
                Backend::Redis(Box::new(redis::RedisBucket::new(name, settings)))
            }
        };
        Self {
            name: name.to_owned(),
            settings: settings.clone(),
            backend,
        }
    }

    /// The bucket's name in the config.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks a key against [`MAX_KEY_BYTES`].
    pub fn check_key(key: &str) -> Result<(), KvError> {
        if key.len() > MAX_KEY_BYTES {
            return Err(KvError::Refused(format!(
                "key of {} bytes is longer than {MAX_KEY_BYTES}",
                key.len()
            )));
        }
        Ok(())
    }

    /// Checks a value against the bucket's `max_value_bytes`.
    pub fn check_value(&self, value: &[u8]) -> Result<(), KvError> {
        if value.len() > self.settings.max_value_bytes {
            return Err(KvError::Refused(format!(
                "value of {} bytes is larger than the bucket's max_value_bytes ({})",
                value.len(),
                self.settings.max_value_bytes
            )));
        }
        Ok(())
    }

    /// Checks a batch's size against [`MAX_BATCH`].
    pub fn check_batch(len: usize) -> Result<(), KvError> {
        if len > MAX_BATCH {
            return Err(KvError::Refused(format!(
                "batch of {len} keys is larger than {MAX_BATCH}"
            )));
        }
        Ok(())
    }

    /// The value of `key`.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Self::check_key(key)?;
        match &self.backend {
            Backend::Memory(m) => Ok(m.get(key)),
            Backend::Redis(r) => r.get(key).await,
        }
    }

    /// Writes `value` under `key`.
    pub async fn set(&self, key: &str, value: Vec<u8>) -> Result<(), KvError> {
        Self::check_key(key)?;
        self.check_value(&value)?;
        match &self.backend {
            Backend::Memory(m) => m.set(key, value),
            Backend::Redis(r) => r.set(key, value).await,
        }
    }

    /// Removes `key`.
    pub async fn delete(&self, key: &str) -> Result<(), KvError> {
        Self::check_key(key)?;
        match &self.backend {
            Backend::Memory(m) => {
                m.delete(key);
                Ok(())
            }
            Backend::Redis(r) => r.delete_many(&[key.to_owned()]).await,
        }
    }

    /// Whether `key` has a value.
    pub async fn exists(&self, key: &str) -> Result<bool, KvError> {
        Self::check_key(key)?;
        match &self.backend {
            Backend::Memory(m) => Ok(m.get(key).is_some()),
            Backend::Redis(r) => r.exists(key).await,
        }
    }

    /// One page of keys from `cursor` on, and the cursor of the next page.
    pub async fn list_keys(
        &self,
        cursor: Option<String>,
    ) -> Result<(Vec<String>, Option<String>), KvError> {
        match &self.backend {
            Backend::Memory(m) => Ok(m.list_keys(cursor.as_deref())),
            Backend::Redis(r) => r.list_keys(cursor.as_deref()).await,
        }
    }

    /// Adds `delta` to the decimal number under `key` (absent counts as 0).
    pub async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        Self::check_key(key)?;
        match &self.backend {
            Backend::Memory(m) => m.increment(key, delta),
            Backend::Redis(r) => r.increment(key, delta).await,
        }
    }

    /// Writes `value` if `key` still holds `expected`; `Ok(false)` when it does not.
    pub async fn swap(
        &self,
        key: &str,
        expected: &Snapshot,
        value: Vec<u8>,
    ) -> Result<bool, KvError> {
        Self::check_key(key)?;
        self.check_value(&value)?;
        match &self.backend {
            Backend::Memory(m) => m.swap(key, expected, value),
            Backend::Redis(r) => r.swap(key, expected, value).await,
        }
    }

    /// The values of `keys`, in order.
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        Self::check_batch(keys.len())?;
        for k in keys {
            Self::check_key(k)?;
        }
        match &self.backend {
            Backend::Memory(m) => Ok(keys.iter().map(|k| m.get(k)).collect()),
            Backend::Redis(r) => r.get_many(keys).await,
        }
    }

    /// Writes every pair.
    pub async fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> Result<(), KvError> {
        Self::check_batch(pairs.len())?;
        for (k, v) in &pairs {
            Self::check_key(k)?;
            self.check_value(v)?;
        }
        match &self.backend {
            Backend::Memory(m) => {
                for (k, v) in pairs {
                    m.set(&k, v)?;
                }
                Ok(())
            }
            Backend::Redis(r) => r.set_many(pairs).await,
        }
    }

    /// Removes every key.
    pub async fn delete_many(&self, keys: &[String]) -> Result<(), KvError> {
        Self::check_batch(keys.len())?;
        for k in keys {
            Self::check_key(k)?;
        }
        match &self.backend {
            Backend::Memory(m) => {
                for k in keys {
                    m.delete(k);
                }
                Ok(())
            }
            Backend::Redis(r) => r.delete_many(keys).await,
        }
    }
}

/// Every bucket of one config, by name.
#[derive(Debug, Default)]
pub struct Buckets {
    by_name: BTreeMap<String, Arc<Bucket>>,
}

impl Buckets {
    /// The buckets of `config`. A bucket of `previous` with the same name and settings is kept,
    /// data and connection included; any other is new and empty.
    pub fn build(config: &BTreeMap<String, BucketConfig>, previous: Option<&Buckets>) -> Self {
        let by_name = config
            .iter()
            .map(|(name, settings)| {
                let kept = previous
                    .and_then(|p| p.by_name.get(name))
                    .filter(|b| b.settings == *settings);
                let bucket = match kept {
                    Some(b) => Arc::clone(b),
                    None => Arc::new(Bucket::new(name, settings)),
                };
                (name.clone(), bucket)
            })
            .collect();
        Self { by_name }
    }

    /// The bucket `name`, if configured.
    pub fn get(&self, name: &str) -> Option<&Arc<Bucket>> {
        self.by_name.get(name)
    }
}

/// What one plugin instance may open: the gateway's buckets and its route entry's grant.
#[derive(Debug, Clone, Default)]
pub struct KvAccess {
    /// The gateway's buckets.
    pub buckets: Arc<Buckets>,
    /// Names the route entry grants (`buckets = [...]`).
    pub granted: Arc<[String]>,
}

impl KvAccess {
    /// Opens `name` if it exists and is granted; both failures look the same to the plugin.
    pub fn open(&self, name: &str) -> Result<Arc<Bucket>, KvError> {
        if !self.granted.iter().any(|g| g == name) {
            return Err(KvError::AccessDenied);
        }
        self.buckets.get(name).cloned().ok_or(KvError::AccessDenied)
    }

    /// Whether a handle to `bucket` is still usable under this grant (a reused instance may
    /// hold a handle from an earlier request, and the config may have changed since).
    pub fn allows(&self, bucket: &Bucket) -> bool {
        self.granted.contains(&bucket.name)
            && self
                .buckets
                .get(&bucket.name)
                .is_some_and(|b| std::ptr::eq(Arc::as_ptr(b), bucket))
    }
}
