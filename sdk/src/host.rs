//! Calls into the gateway. On `wasm32` they go through the WIT imports; natively they go to the
//! [`MockHost`](crate::testing::MockHost) installed by the test, so plugins test with `cargo test`.

/// The SDK's one `generate!`: the host interfaces every plugin imports.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "tessera:gateway/imports",
        generate_all,
    });
}

pub(crate) use bindings::tessera::gateway::log::Level;
pub(crate) use bindings::tessera::gateway::types::{Header, HttpError, OutgoingRequest, Response};
pub(crate) use bindings::wasi::keyvalue::store::Error as KvError;

/// Why a compare-and-swap did not write.
pub(crate) enum SwapError {
    /// The store failed.
    Store(KvError),
    /// The value changed; the handle now holds the current value.
    Changed(Cas),
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::bindings::tessera::gateway::{config, context, http_client, log};
    use super::bindings::wasi::keyvalue::{atomics, batch, store};
    use super::{Header, HttpError, KvError, Level, OutgoingRequest, Response, SwapError};

    pub fn log(level: Level, message: &str) {
        log::log(level, message);
    }
    pub fn config() -> String {
        config::get()
    }
    pub fn route_param(name: &str) -> Option<String> {
        context::route_param(name)
    }
    pub fn route_params() -> Vec<(String, String)> {
        context::route_params()
    }
    pub fn request_id() -> String {
        context::request_id()
    }
    pub fn route() -> String {
        context::route()
    }
    pub fn client_address() -> String {
        context::client_address()
    }
    pub fn send(request: &OutgoingRequest) -> Result<Response, HttpError> {
        http_client::send(request)
    }
    pub type Pending = http_client::PendingResponse;
    pub fn start(request: &OutgoingRequest) -> Pending {
        http_client::start(request)
    }
    pub fn wait_with_trailers(pending: Pending) -> (Result<Response, HttpError>, Vec<Header>) {
        let result = pending.wait();
        let trailers = if result.is_ok() {
            pending.trailers()
        } else {
            Vec::new()
        };
        (result, trailers)
    }
    pub fn send_all(requests: &[OutgoingRequest]) -> Vec<Result<Response, HttpError>> {
        http_client::send_all(requests)
    }

    pub type Bucket = store::Bucket;
    pub type Cas = atomics::Cas;
    pub fn kv_open(name: &str) -> Result<Bucket, KvError> {
        store::open(name)
    }
    pub fn kv_get(b: &Bucket, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        b.get(key)
    }
    pub fn kv_set(b: &Bucket, key: &str, value: &[u8]) -> Result<(), KvError> {
        b.set(key, value)
    }
    pub fn kv_delete(b: &Bucket, key: &str) -> Result<(), KvError> {
        b.delete(key)
    }
    pub fn kv_exists(b: &Bucket, key: &str) -> Result<bool, KvError> {
        b.exists(key)
    }
    pub fn kv_list_keys(
        b: &Bucket,
        cursor: Option<&str>,
    ) -> Result<(Vec<String>, Option<String>), KvError> {
        b.list_keys(cursor).map(|r| (r.keys, r.cursor))
    }
    pub fn kv_increment(b: &Bucket, key: &str, delta: i64) -> Result<i64, KvError> {
        atomics::increment(b, key, delta)
    }
    pub fn kv_cas(b: &Bucket, key: &str) -> Result<Cas, KvError> {
        atomics::Cas::new(b, key)
    }
    pub fn kv_cas_current(c: &Cas) -> Result<Option<Vec<u8>>, KvError> {
        c.current()
    }
    pub fn kv_swap(c: Cas, value: &[u8]) -> Result<(), SwapError> {
        atomics::swap(c, value).map_err(|e| match e {
            atomics::CasError::StoreError(e) => SwapError::Store(e),
            atomics::CasError::CasFailed(c) => SwapError::Changed(c),
        })
    }
    pub fn kv_get_many(b: &Bucket, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        let found = batch::get_many(b, keys)?;
        Ok(found.into_iter().map(|e| e.map(|(_, v)| v)).collect())
    }
    pub fn kv_set_many(b: &Bucket, pairs: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        batch::set_many(b, pairs)
    }
    pub fn kv_delete_many(b: &Bucket, keys: &[String]) -> Result<(), KvError> {
        batch::delete_many(b, keys)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::{Header, HttpError, KvError, Level, OutgoingRequest, Response, SwapError};
    use crate::testing::with_mock;

    pub fn log(level: Level, message: &str) {
        with_mock(|m| m.record_log(level, message));
    }
    pub fn config() -> String {
        with_mock(|m| m.config_json())
    }
    pub fn route_param(name: &str) -> Option<String> {
        with_mock(|m| m.param_value(name))
    }
    pub fn route_params() -> Vec<(String, String)> {
        with_mock(|m| m.params())
    }
    pub fn request_id() -> String {
        with_mock(|m| m.current_request_id())
    }
    pub fn route() -> String {
        with_mock(|m| m.current_route())
    }
    pub fn client_address() -> String {
        with_mock(|m| m.current_client_address())
    }
    pub fn send(request: &OutgoingRequest) -> Result<Response, HttpError> {
        with_mock(|m| {
            let pending = m.start(request);
            m.wait(pending).0
        })
    }
    pub type Pending = crate::testing::MockPending;
    pub fn start(request: &OutgoingRequest) -> Pending {
        with_mock(|m| m.start(request))
    }
    pub fn wait_with_trailers(pending: Pending) -> (Result<Response, HttpError>, Vec<Header>) {
        with_mock(|m| m.wait(pending))
    }
    pub fn send_all(requests: &[OutgoingRequest]) -> Vec<Result<Response, HttpError>> {
        with_mock(|m| {
            let pending: Vec<Pending> = requests.iter().map(|r| m.start(r)).collect();
            pending.into_iter().map(|p| m.wait(p).0).collect()
        })
    }

    pub type Bucket = crate::testing::MockBucket;
    pub type Cas = crate::testing::MockCas;
    pub fn kv_open(name: &str) -> Result<Bucket, KvError> {
        with_mock(|m| m.kv_open(name))
    }
    pub fn kv_get(b: &Bucket, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        with_mock(|m| m.kv_get(b, key))
    }
    pub fn kv_set(b: &Bucket, key: &str, value: &[u8]) -> Result<(), KvError> {
        with_mock(|m| m.kv_set(b, key, value))
    }
    pub fn kv_delete(b: &Bucket, key: &str) -> Result<(), KvError> {
        with_mock(|m| m.kv_delete(b, key))
    }
    pub fn kv_exists(b: &Bucket, key: &str) -> Result<bool, KvError> {
        with_mock(|m| m.kv_get(b, key).map(|v| v.is_some()))
    }
    pub fn kv_list_keys(
        b: &Bucket,
        cursor: Option<&str>,
    ) -> Result<(Vec<String>, Option<String>), KvError> {
        with_mock(|m| m.kv_list_keys(b, cursor))
    }
    pub fn kv_increment(b: &Bucket, key: &str, delta: i64) -> Result<i64, KvError> {
        with_mock(|m| m.kv_increment(b, key, delta))
    }
    pub fn kv_cas(b: &Bucket, key: &str) -> Result<Cas, KvError> {
        with_mock(|m| m.kv_cas(b, key))
    }
    pub fn kv_cas_current(c: &Cas) -> Result<Option<Vec<u8>>, KvError> {
        Ok(c.read.clone())
    }
    pub fn kv_swap(c: Cas, value: &[u8]) -> Result<(), SwapError> {
        with_mock(|m| m.kv_swap(c, value))
    }
    pub fn kv_get_many(b: &Bucket, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        keys.iter().map(|k| kv_get(b, k)).collect()
    }
    pub fn kv_set_many(b: &Bucket, pairs: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        pairs.iter().try_for_each(|(k, v)| kv_set(b, k, v))
    }
    pub fn kv_delete_many(b: &Bucket, keys: &[String]) -> Result<(), KvError> {
        keys.iter().try_for_each(|k| kv_delete(b, k))
    }
}

pub(crate) use imp::*;
