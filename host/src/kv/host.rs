//! The `wasi:keyvalue` imports (`store`, `atomics`, `batch`), implemented on [`PluginState`].
//!
//! Handles live in the store's resource table, which checks a handle's type and owner on every
//! use: a forged or dropped handle traps the plugin. A valid handle is also checked against the
//! current request's grant, since a reused instance may keep one from an earlier request.

use std::sync::Arc;

use wasmtime::component::Resource;

use super::{Bucket, KvError, Snapshot};
use crate::bindings::{atomics, batch, store};
use crate::plugin::PluginState;

/// A `bucket` resource: an open bucket.
#[derive(Debug)]
pub struct BucketHandle {
    bucket: Arc<Bucket>,
}

/// A `cas` resource: a key and the value read from it.
#[derive(Debug)]
pub struct CasHandle {
    bucket: Arc<Bucket>,
    key: String,
    read: Snapshot,
}

impl From<KvError> for store::Error {
    fn from(e: KvError) -> Self {
        match e {
            KvError::AccessDenied => Self::AccessDenied,
            other => Self::Other(other.to_string()),
        }
    }
}

type KvResult<T> = wasmtime::Result<Result<T, store::Error>>;

impl PluginState {
    /// Counts one operation against `max_calls`.
    fn kv_count(&mut self) -> Result<(), KvError> {
        self.outbound.count_call().map_err(KvError::Refused)
    }

    /// Counts the operation and resolves a handle the current grant still allows.
    fn kv_bucket(
        &mut self,
        handle: &Resource<BucketHandle>,
    ) -> wasmtime::Result<Result<Arc<Bucket>, KvError>> {
        let bucket = Arc::clone(&self.table.get(handle)?.bucket);
        if let Err(e) = self.kv_count() {
            return Ok(Err(e));
        }
        if !self.call.kv.allows(&bucket) {
            return Ok(Err(KvError::AccessDenied));
        }
        Ok(Ok(bucket))
    }
}

/// Unwraps the `Ok` of a [`PluginState::kv_bucket`]-style result or returns its error to the
/// guest.
macro_rules! granted {
    ($e:expr) => {
        match $e? {
            Ok(v) => v,
            Err(e) => return Ok(Err(e.into())),
        }
    };
}

impl store::Host for PluginState {
    async fn open(&mut self, identifier: String) -> KvResult<Resource<BucketHandle>> {
        if let Err(e) = self.kv_count() {
            return Ok(Err(e.into()));
        }
        match self.call.kv.open(&identifier) {
            Ok(bucket) => Ok(Ok(self.table.push(BucketHandle { bucket })?)),
            Err(e) => Ok(Err(e.into())),
        }
    }
}

impl store::HostBucket for PluginState {
    async fn get(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
    ) -> KvResult<Option<Vec<u8>>> {
        let b = granted!(self.kv_bucket(&bucket));
        Ok(b.get(&key).await.map_err(Into::into))
    }

    async fn set(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
        value: Vec<u8>,
    ) -> KvResult<()> {
        let b = granted!(self.kv_bucket(&bucket));
        Ok(b.set(&key, value).await.map_err(Into::into))
    }

    async fn delete(&mut self, bucket: Resource<BucketHandle>, key: String) -> KvResult<()> {
        let b = granted!(self.kv_bucket(&bucket));
        Ok(b.delete(&key).await.map_err(Into::into))
    }

    async fn exists(&mut self, bucket: Resource<BucketHandle>, key: String) -> KvResult<bool> {
        let b = granted!(self.kv_bucket(&bucket));
        Ok(b.exists(&key).await.map_err(Into::into))
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<BucketHandle>,
        cursor: Option<String>,
    ) -> KvResult<store::KeyResponse> {
        let b = granted!(self.kv_bucket(&bucket));
        Ok(b.list_keys(cursor)
            .await
            .map(|(keys, cursor)| store::KeyResponse { keys, cursor })
            .map_err(Into::into))
    }

    async fn drop(&mut self, bucket: Resource<BucketHandle>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for PluginState {
    async fn increment(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
        delta: i64,
    ) -> KvResult<i64> {
        let b = granted!(self.kv_bucket(&bucket));
        Ok(b.increment(&key, delta).await.map_err(Into::into))
    }

    async fn swap(
        &mut self,
        cas: Resource<CasHandle>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let handle = self.table.get(&cas)?;
        let (bucket, key, read) = (
            Arc::clone(&handle.bucket),
            handle.key.clone(),
            handle.read.clone(),
        );
        let checked = self.kv_count().and_then(|()| {
            if self.call.kv.allows(&bucket) {
                Ok(())
            } else {
                Err(KvError::AccessDenied)
            }
        });
        let outcome = match checked {
            Ok(()) => bucket.swap(&key, &read, value).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(true) => {
                self.table.delete(cas)?;
                Ok(Ok(()))
            }
            // The handle goes back holding what is there now, ready for another attempt.
            Ok(false) => match bucket.get(&key).await {
                Ok(now) => {
                    self.table.get_mut(&cas)?.read = now;
                    Ok(Err(atomics::CasError::CasFailed(cas)))
                }
                Err(e) => {
                    self.table.delete(cas)?;
                    Ok(Err(atomics::CasError::StoreError(e.into())))
                }
            },
            Err(e) => {
                self.table.delete(cas)?;
                Ok(Err(atomics::CasError::StoreError(e.into())))
            }
        }
    }
}

impl atomics::HostCas for PluginState {
    async fn new(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
    ) -> KvResult<Resource<CasHandle>> {
        let b = granted!(self.kv_bucket(&bucket));
        let read = match b.get(&key).await {
            Ok(v) => v,
            Err(e) => return Ok(Err(e.into())),
        };
        Ok(Ok(self.table.push(CasHandle {
            bucket: b,
            key,
            read,
        })?))
    }

    async fn current(&mut self, cas: Resource<CasHandle>) -> KvResult<Option<Vec<u8>>> {
        let read = self.table.get(&cas)?.read.clone();
        if let Err(e) = self.kv_count() {
            return Ok(Err(e.into()));
        }
        Ok(Ok(read))
    }

    async fn drop(&mut self, cas: Resource<CasHandle>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl batch::Host for PluginState {
    async fn get_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> KvResult<Vec<Option<(String, Vec<u8>)>>> {
        let b = granted!(self.kv_bucket(&bucket));
        Ok(b.get_many(&keys)
            .await
            .map(|values| {
                keys.into_iter()
                    .zip(values)
                    .map(|(k, v)| v.map(|v| (k, v)))
                    .collect()
            })
            .map_err(Into::into))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> KvResult<()> {
        let b = granted!(self.kv_bucket(&bucket));
        Ok(b.set_many(key_values).await.map_err(Into::into))
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> KvResult<()> {
        let b = granted!(self.kv_bucket(&bucket));
        Ok(b.delete_many(&keys).await.map_err(Into::into))
    }
}
