//! Shared state: key-value buckets that outlive the request (`wasi:keyvalue`).
//!
//! A plugin instance lives for one request, so a counter or a cached answer that must outlive
//! it goes into a bucket: one of the gateway config's `[buckets.<name>]`, granted to the route
//! entry by `buckets = ["name"]`.
//!
//! ```no_run
//! use tessera_sdk::{Error, Handler, Request, Response, kv};
//!
//! struct Hits;
//!
//! impl Handler for Hits {
//!     fn handle(_request: Request) -> Result<Response, Error> {
//!         let bucket = kv::open("counters")?;
//!         let hits = bucket.increment("hits", 1)?;
//!         Ok(Response::json(200, &serde_json::json!({ "hits": hits })))
//!     }
//! }
//! # fn main() {}
//! ```
//!
//! Consistency: `increment` and [`Bucket::update`] are atomic against every other request
//! using the bucket (on every gateway, for a Redis bucket); `get` then `set` is not. Batches
//! handle each key on its own. A bucket with a TTL forgets a value that long after it was last
//! written. A memory bucket may evict keys when full, so treat it as a cache, not a database.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::host::{self, SwapError};

/// How often [`Bucket::update`] retries when other writers keep changing the value.
pub const UPDATE_ATTEMPTS: usize = 16;

/// Why a key-value operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KvError {
    /// The bucket does not exist. (The gateway answers [`KvError::AccessDenied`] for unknown
    /// buckets too, so a plugin cannot probe which exist.)
    NoSuchStore,
    /// The route entry does not grant this bucket.
    AccessDenied,
    /// [`Bucket::update`] lost the race [`UPDATE_ATTEMPTS`] times.
    Conflict,
    /// A stored value is not the JSON a `get_json` asked for.
    Decode(String),
    /// Anything else: the backend failed or timed out, a size or call limit was hit.
    Other(String),
}

impl std::fmt::Display for KvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoSuchStore => f.write_str("no such bucket"),
            Self::AccessDenied => f.write_str("access to the bucket denied"),
            Self::Conflict => write!(
                f,
                "the value kept changing: gave up after {UPDATE_ATTEMPTS} attempts"
            ),
            Self::Decode(m) => write!(f, "stored value is not the expected JSON: {m}"),
            Self::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for KvError {}

impl From<host::KvError> for KvError {
    fn from(e: host::KvError) -> Self {
        match e {
            host::KvError::NoSuchStore => Self::NoSuchStore,
            host::KvError::AccessDenied => Self::AccessDenied,
            host::KvError::Other(m) => Self::Other(m),
        }
    }
}

/// A failed bucket operation answers 500; the detail goes to the log, not the client.
impl From<KvError> for crate::Error {
    fn from(e: KvError) -> Self {
        crate::Error::internal("shared state is unavailable").with_detail(e.to_string())
    }
}

/// Opens the bucket `name`.
pub fn open(name: &str) -> Result<Bucket, KvError> {
    Ok(Bucket {
        inner: host::kv_open(name)?,
    })
}

/// One page of [`Bucket::list_keys`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPage {
    /// Keys of this page.
    pub keys: Vec<String>,
    /// Pass to `list_keys` for the next page; `None` on the last.
    pub cursor: Option<String>,
}

/// An open bucket.
#[derive(Debug)]
pub struct Bucket {
    inner: host::Bucket,
}

impl Bucket {
    /// The value of `key`, `None` if absent.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(host::kv_get(&self.inner, key)?)
    }

    /// Writes `value` under `key`.
    pub fn set(&self, key: &str, value: impl AsRef<[u8]>) -> Result<(), KvError> {
        Ok(host::kv_set(&self.inner, key, value.as_ref())?)
    }

    /// Removes `key` (absent is fine).
    pub fn delete(&self, key: &str) -> Result<(), KvError> {
        Ok(host::kv_delete(&self.inner, key)?)
    }

    /// Whether `key` has a value.
    pub fn exists(&self, key: &str) -> Result<bool, KvError> {
        Ok(host::kv_exists(&self.inner, key)?)
    }

    /// A page of keys; start with `None` and pass each page's cursor back.
    pub fn list_keys(&self, cursor: Option<&str>) -> Result<KeyPage, KvError> {
        let (keys, cursor) = host::kv_list_keys(&self.inner, cursor)?;
        Ok(KeyPage { keys, cursor })
    }

    /// The value of `key` decoded from JSON.
    pub fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, KvError> {
        match self.get(key)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| KvError::Decode(e.to_string())),
        }
    }

    /// Writes `value` as JSON under `key`.
    pub fn set_json<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), KvError> {
        let bytes = serde_json::to_vec(value).map_err(|e| KvError::Other(e.to_string()))?;
        self.set(key, bytes)
    }

    /// Adds `delta` to the number under `key` (absent counts as 0) and returns the new number,
    /// atomically. The value is stored as decimal text (`get` returns e.g. `b"42"`).
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        Ok(host::kv_increment(&self.inner, key, delta)?)
    }

    /// Replaces the value of `key` with `f(old)` (old is `None` when absent) unless another
    /// writer changed it in between, in which case `f` runs again on the newer value, up to
    /// [`UPDATE_ATTEMPTS`] times. Returns the value written.
    pub fn update(
        &self,
        key: &str,
        mut f: impl FnMut(Option<&[u8]>) -> Vec<u8>,
    ) -> Result<Vec<u8>, KvError> {
        let mut cas = host::kv_cas(&self.inner, key)?;
        for _ in 0..UPDATE_ATTEMPTS {
            let old = host::kv_cas_current(&cas)?;
            let new = f(old.as_deref());
            match host::kv_swap(cas, &new) {
                Ok(()) => return Ok(new),
                Err(SwapError::Store(e)) => return Err(e.into()),
                Err(SwapError::Changed(fresh)) => cas = fresh,
            }
        }
        Err(KvError::Conflict)
    }

    /// The values of `keys`, in order.
    pub fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        Ok(host::kv_get_many(&self.inner, keys)?)
    }

    /// Writes every pair. Not a transaction: a failure may leave some written.
    pub fn set_many(&self, pairs: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        Ok(host::kv_set_many(&self.inner, pairs)?)
    }

    /// Removes every key.
    pub fn delete_many(&self, keys: &[String]) -> Result<(), KvError> {
        Ok(host::kv_delete_many(&self.inner, keys)?)
    }
}
