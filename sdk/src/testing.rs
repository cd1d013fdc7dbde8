//! A stand-in for the gateway, so plugins test natively with `cargo test`.
//!
//! ```
//! use tessera_sdk::testing::MockHost;
//! use tessera_sdk::{Error, Handler, Request, Response, context};
//!
//! struct Echo;
//! impl Handler for Echo {
//!     fn handle(_request: Request) -> Result<Response, Error> {
//!         Ok(Response::text(200, context::param("id").unwrap_or_default()))
//!     }
//! }
//!
//! let host = MockHost::new().param("id", "42");
//! let response = host.handle::<Echo>(Request::new("GET", "/items/42"));
//! assert_eq!(response.text_body(), "42");
//! ```

// On wasm32 the gateway is the host; the mock's host-call side is only reached natively.
#![cfg_attr(target_arch = "wasm32", allow(dead_code))]

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

use crate::host::bindings::tessera::gateway::types as wit;
use crate::host::{
    HttpError as WitHttpError, KvError as WitKvError, Level, OutgoingRequest as WitOutgoing,
};
use crate::http::{HttpError, OutgoingRequest};
use crate::{Action, Filter, Handler, Request, Response};

/// A log line a plugin wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// `debug`, `info`, `warn` or `error`.
    pub level: &'static str,
    /// The message.
    pub message: String,
}

#[derive(Debug, Default)]
struct State {
    config_json: String,
    params: Vec<(String, String)>,
    request_id: String,
    route: String,
    client_address: String,
    canned: HashMap<(String, String), Result<Response, HttpError>>,
    delays: HashMap<(String, String), Duration>,
    /// Virtual time: calls overlap like on the gateway, so concurrency shows in `elapsed`.
    now: Duration,
    next_pending: u64,
    pending: HashMap<u64, MockCall>,
    calls: Vec<OutgoingRequest>,
    logs: Vec<LogLine>,
    buckets: BTreeMap<String, MockBucketData>,
}

/// A started call: when it finishes (virtual time), its result, and its response's trailers.
type MockCall = (
    Duration,
    Result<wit::Response, WitHttpError>,
    Vec<wit::Header>,
);

/// A bucket declared on the mock.
#[derive(Debug, Default)]
struct MockBucketData {
    granted: bool,
    /// Every operation fails like a store that is down (`Other`) while this is set.
    down: bool,
    data: BTreeMap<String, Vec<u8>>,
    /// Written by "another writer" just before the next compare-and-swap of the key.
    races: HashMap<String, Vec<u8>>,
}

/// An open bucket on the [`MockHost`].
#[derive(Debug)]
pub struct MockBucket(String);

/// A compare-and-swap handle on the [`MockHost`].
#[derive(Debug)]
pub struct MockCas {
    bucket: String,
    key: String,
    pub(crate) read: Option<Vec<u8>>,
}

/// Longest key, as on the gateway.
const MOCK_MAX_KEY_BYTES: usize = 1024;

/// A call started on the [`MockHost`].
#[derive(Debug)]
pub struct MockPending(u64);

/// The gateway as a plugin sees it, with canned answers for outgoing calls.
#[derive(Debug, Clone)]
pub struct MockHost {
    state: Rc<RefCell<State>>,
}

impl Default for MockHost {
    fn default() -> Self {
        Self::new()
    }
}

thread_local! {
    static CURRENT: RefCell<Option<MockHost>> = const { RefCell::new(None) };
}

/// Runs `f` against the mock installed on this thread.
pub(crate) fn with_mock<R>(f: impl FnOnce(&MockHost) -> R) -> R {
    let host = CURRENT.with(|c| c.borrow().clone());
    match host {
        Some(h) => f(&h),
        None => panic!(
            "tessera-sdk: no MockHost installed; natively, call plugin code through MockHost::run/handle/on_request"
        ),
    }
}

impl MockHost {
    /// A host with config `{}`, no parameters, request id `test-request` and route `/`.
    pub fn new() -> Self {
        let state = State {
            config_json: "{}".to_owned(),
            request_id: "test-request".to_owned(),
            route: "/".to_owned(),
            client_address: "127.0.0.1".to_owned(),
            ..State::default()
        };
        Self {
            state: Rc::new(RefCell::new(state)),
        }
    }

    /// The plugin's route config.
    pub fn config(self, value: serde_json::Value) -> Self {
        self.state.borrow_mut().config_json = value.to_string();
        self
    }

    /// A path parameter.
    pub fn param(self, name: &str, value: &str) -> Self {
        self.state
            .borrow_mut()
            .params
            .push((name.to_owned(), value.to_owned()));
        self
    }

    /// The request id.
    pub fn request_id(self, id: &str) -> Self {
        self.state.borrow_mut().request_id = id.to_owned();
        self
    }

    /// The matched route pattern.
    pub fn route(self, pattern: &str) -> Self {
        self.state.borrow_mut().route = pattern.to_owned();
        self
    }

    /// The client's address (default `127.0.0.1`).
    pub fn client_address(self, address: std::net::IpAddr) -> Self {
        self.set_client_address(address);
        self
    }

    /// Changes the client's address for the requests that follow.
    pub fn set_client_address(&self, address: std::net::IpAddr) {
        self.state.borrow_mut().client_address = address.to_string();
    }

    /// Answers `method url` with `response`.
    pub fn respond(self, method: &str, url: &str, response: Response) -> Self {
        self.state
            .borrow_mut()
            .canned
            .insert((method.to_ascii_uppercase(), url.to_owned()), Ok(response));
        self
    }

    /// Fails `method url` with `error`.
    pub fn fail(self, method: &str, url: &str, error: HttpError) -> Self {
        self.state
            .borrow_mut()
            .canned
            .insert((method.to_ascii_uppercase(), url.to_owned()), Err(error));
        self
    }

    /// Makes `method url` take `delay` of virtual time (see [`MockHost::elapsed`]).
    pub fn delay(self, method: &str, url: &str, delay: Duration) -> Self {
        self.state
            .borrow_mut()
            .delays
            .insert((method.to_ascii_uppercase(), url.to_owned()), delay);
        self
    }

    /// Declares the key-value bucket `name` and grants it to the plugin, like `[buckets.<name>]`
    /// plus `buckets = ["name"]` on the route entry. Its contents outlive each `handle` call, as
    /// on the gateway.
    pub fn bucket(self, name: &str) -> Self {
        self.state
            .borrow_mut()
            .buckets
            .entry(name.to_owned())
            .or_default()
            .granted = true;
        self
    }

    /// Declares the bucket `name` without granting it: opening it is `AccessDenied`.
    pub fn ungranted_bucket(self, name: &str) -> Self {
        self.state
            .borrow_mut()
            .buckets
            .entry(name.to_owned())
            .or_default();
        self
    }

    /// Makes every operation on the declared bucket `bucket` fail (`true`) with
    /// `KvError::Other`, as a Redis bucket does while Redis is down or too slow, or work again
    /// (`false`). Opening it still succeeds, as on the gateway. Its data is kept.
    ///
    /// # Panics
    /// If the bucket was not declared.
    pub fn bucket_down(&self, bucket: &str, down: bool) {
        self.declared(bucket, |b| b.down = down);
    }

    /// Stores `value` under `key` in the declared bucket `bucket`.
    ///
    /// # Panics
    /// If the bucket was not declared (a mistake in the test).
    pub fn kv_insert(self, bucket: &str, key: &str, value: impl Into<Vec<u8>>) -> Self {
        self.declared(bucket, |b| b.data.insert(key.to_owned(), value.into()));
        self
    }

    /// Makes "another writer" store `value` under `key` just before the plugin's next
    /// compare-and-swap of that key, so the swap fails once and the plugin must retry.
    ///
    /// # Panics
    /// If the bucket was not declared.
    pub fn race_next_swap(self, bucket: &str, key: &str, value: impl Into<Vec<u8>>) -> Self {
        self.declared(bucket, |b| b.races.insert(key.to_owned(), value.into()));
        self
    }

    /// The value of `key` in `bucket`, as the plugin left it.
    pub fn kv_value(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let state = self.state.borrow();
        state.buckets.get(bucket)?.data.get(key).cloned()
    }

    fn declared<R>(&self, bucket: &str, f: impl FnOnce(&mut MockBucketData) -> R) -> R {
        let mut state = self.state.borrow_mut();
        match state.buckets.get_mut(bucket) {
            Some(b) => f(b),
            None => {
                panic!("MockHost: bucket `{bucket}` is not declared; add .bucket(\"{bucket}\")")
            }
        }
    }

    /// Virtual time spent waiting on calls so far. Calls started together overlap, as on the
    /// gateway: three 100 ms calls sent with `send_all` take 100 ms, sent one by one 300 ms.
    pub fn elapsed(&self) -> Duration {
        self.state.borrow().now
    }

    /// Outgoing calls the plugin made, in order.
    pub fn calls(&self) -> Vec<OutgoingRequest> {
        self.state.borrow().calls.clone()
    }

    /// What the plugin logged.
    pub fn logs(&self) -> Vec<LogLine> {
        self.state.borrow().logs.clone()
    }

    /// Runs `f` with this host installed for the current thread.
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Reset(Option<MockHost>);
        impl Drop for Reset {
            fn drop(&mut self) {
                let previous = self.0.take();
                CURRENT.with(|c| *c.borrow_mut() = previous);
            }
        }
        let previous = CURRENT.with(|c| c.borrow_mut().replace(self.clone()));
        let _reset = Reset(previous);
        f()
    }

    /// Calls a handler as the gateway would (errors become responses).
    pub fn handle<H: Handler>(&self, request: Request) -> Response {
        self.run(|| Response::from_wit(crate::__private::handle::<H>(request.into_wit())))
    }

    /// Calls a filter's `on_request` as the gateway would.
    pub fn on_request<F: Filter>(&self, request: Request) -> Action {
        self.run(
            || match crate::__private::on_request::<F>(request.into_wit()) {
                crate::__private::WitAction::Continue(r) => Action::Continue(Request::from_wit(r)),
                crate::__private::WitAction::Respond(r) => Action::Respond(Response::from_wit(r)),
            },
        )
    }

    /// Calls a filter's `on_response` as the gateway would.
    pub fn on_response<F: Filter>(&self, response: Response) -> Response {
        self.run(|| Response::from_wit(crate::__private::on_response::<F>(response.into_wit())))
    }

    pub(crate) fn record_log(&self, level: Level, message: &str) {
        let level = match level {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        self.state.borrow_mut().logs.push(LogLine {
            level,
            message: message.to_owned(),
        });
    }

    pub(crate) fn config_json(&self) -> String {
        self.state.borrow().config_json.clone()
    }

    pub(crate) fn param_value(&self, name: &str) -> Option<String> {
        let state = self.state.borrow();
        state
            .params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    pub(crate) fn params(&self) -> Vec<(String, String)> {
        self.state.borrow().params.clone()
    }

    pub(crate) fn current_request_id(&self) -> String {
        self.state.borrow().request_id.clone()
    }

    pub(crate) fn current_route(&self) -> String {
        self.state.borrow().route.clone()
    }

    pub(crate) fn current_client_address(&self) -> String {
        self.state.borrow().client_address.clone()
    }

    pub(crate) fn start(&self, request: &WitOutgoing) -> MockPending {
        let call = OutgoingRequest::from_wit(request);
        let key = (call.method().to_owned(), call.url().to_owned());
        let mut state = self.state.borrow_mut();
        state.calls.push(call);
        let (result, trailers) = match state.canned.get(&key) {
            Some(Ok(response)) => (
                Ok(response.clone().into_wit()),
                response.trailers().clone().into_wit(),
            ),
            Some(Err(e)) => (Err(to_wit_error(e)), Vec::new()),
            None => (
                Err(WitHttpError::ConnectionFailed(format!(
                    "MockHost has no answer for {} {}",
                    key.0, key.1
                ))),
                Vec::new(),
            ),
        };
        let finish = state.now + state.delays.get(&key).copied().unwrap_or_default();
        let id = state.next_pending;
        state.next_pending += 1;
        state.pending.insert(id, (finish, result, trailers));
        MockPending(id)
    }

    /// The call's result and, for a response, its trailers.
    pub(crate) fn wait(
        &self,
        pending: MockPending,
    ) -> (Result<wit::Response, WitHttpError>, Vec<wit::Header>) {
        let mut state = self.state.borrow_mut();
        match state.pending.remove(&pending.0) {
            Some((finish, result, trailers)) => {
                state.now = state.now.max(finish);
                (result, trailers)
            }
            None => (
                Err(WitHttpError::InvalidRequest(
                    "this call was already waited for".into(),
                )),
                Vec::new(),
            ),
        }
    }
}

impl MockHost {
    pub(crate) fn kv_open(&self, name: &str) -> Result<MockBucket, WitKvError> {
        // Unknown and ungranted look the same, as on the gateway.
        match self.state.borrow().buckets.get(name) {
            Some(b) if b.granted => Ok(MockBucket(name.to_owned())),
            _ => Err(WitKvError::AccessDenied),
        }
    }

    fn kv_data<R>(
        &self,
        bucket: &str,
        key: &str,
        f: impl FnOnce(&mut MockBucketData) -> Result<R, WitKvError>,
    ) -> Result<R, WitKvError> {
        if key.len() > MOCK_MAX_KEY_BYTES {
            return Err(WitKvError::Other(format!(
                "key of {} bytes is longer than {MOCK_MAX_KEY_BYTES}",
                key.len()
            )));
        }
        let mut state = self.state.borrow_mut();
        match state.buckets.get_mut(bucket) {
            Some(b) if b.granted && b.down => Err(WitKvError::Other(format!(
                "bucket `{bucket}` is unavailable"
            ))),
            Some(b) if b.granted => f(b),
            _ => Err(WitKvError::AccessDenied),
        }
    }

    pub(crate) fn kv_get(&self, b: &MockBucket, key: &str) -> Result<Option<Vec<u8>>, WitKvError> {
        self.kv_data(&b.0, key, |d| Ok(d.data.get(key).cloned()))
    }

    pub(crate) fn kv_set(&self, b: &MockBucket, key: &str, value: &[u8]) -> Result<(), WitKvError> {
        self.kv_data(&b.0, key, |d| {
            d.data.insert(key.to_owned(), value.to_vec());
            Ok(())
        })
    }

    pub(crate) fn kv_delete(&self, b: &MockBucket, key: &str) -> Result<(), WitKvError> {
        self.kv_data(&b.0, key, |d| {
            d.data.remove(key);
            Ok(())
        })
    }

    pub(crate) fn kv_list_keys(
        &self,
        b: &MockBucket,
        cursor: Option<&str>,
    ) -> Result<(Vec<String>, Option<String>), WitKvError> {
        self.kv_data(&b.0, "", |d| {
            let keys = d
                .data
                .keys()
                .filter(|k| cursor.is_none_or(|c| k.as_str() > c))
                .cloned()
                .collect();
            Ok((keys, None))
        })
    }

    pub(crate) fn kv_increment(
        &self,
        b: &MockBucket,
        key: &str,
        delta: i64,
    ) -> Result<i64, WitKvError> {
        self.kv_data(&b.0, key, |d| {
            let current = match d.data.get(key) {
                None => 0,
                Some(v) => std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .ok_or_else(|| {
                        WitKvError::Other("the value is not a decimal integer".into())
                    })?,
            };
            let next = current.checked_add(delta).ok_or_else(|| {
                WitKvError::Other("increment overflows a signed 64-bit number".into())
            })?;
            d.data.insert(key.to_owned(), next.to_string().into_bytes());
            Ok(next)
        })
    }

    pub(crate) fn kv_cas(&self, b: &MockBucket, key: &str) -> Result<MockCas, WitKvError> {
        self.kv_data(&b.0, key, |d| {
            Ok(MockCas {
                bucket: b.0.clone(),
                key: key.to_owned(),
                read: d.data.get(key).cloned(),
            })
        })
    }

    // Its error carries the host layer's `Cas`, which is the mock's only natively.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn kv_swap(
        &self,
        mut cas: MockCas,
        value: &[u8],
    ) -> Result<(), crate::host::SwapError> {
        use crate::host::SwapError;
        let key = cas.key.clone();
        let outcome = self.kv_data(&cas.bucket, &key, |d| {
            if let Some(raced) = d.races.remove(&key) {
                d.data.insert(key.clone(), raced);
            }
            let current = d.data.get(&key);
            if current != cas.read.as_ref() {
                return Ok(Some(current.cloned()));
            }
            d.data.insert(key.clone(), value.to_vec());
            Ok(None)
        });
        match outcome {
            Ok(None) => Ok(()),
            Ok(Some(now)) => {
                cas.read = now;
                Err(SwapError::Changed(cas))
            }
            Err(e) => Err(SwapError::Store(e)),
        }
    }
}

fn to_wit_error(e: &HttpError) -> WitHttpError {
    match e {
        HttpError::Denied(m) => WitHttpError::Denied(m.clone()),
        HttpError::Timeout => WitHttpError::Timeout,
        HttpError::ConnectionFailed(m) => WitHttpError::ConnectionFailed(m.clone()),
        HttpError::LimitExceeded(m) => WitHttpError::LimitExceeded(m.clone()),
        HttpError::InvalidRequest(m) => WitHttpError::InvalidRequest(m.clone()),
        HttpError::BodyTooLarge => WitHttpError::BodyTooLarge,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{self, KvError};

    #[test]
    fn counts_persist_across_requests_on_one_host() {
        let host = MockHost::new().bucket("counters");
        let count = || host.run(|| kv::open("counters")?.increment("hits", 1));
        assert_eq!(count(), Ok(1));
        assert_eq!(count(), Ok(2));
        assert_eq!(
            host.kv_value("counters", "hits").as_deref(),
            Some(&b"2"[..])
        );
    }

    #[test]
    fn grants_are_enforced_and_unknown_looks_like_ungranted() {
        let host = MockHost::new().ungranted_bucket("secret");
        host.run(|| {
            assert_eq!(kv::open("secret").err(), Some(KvError::AccessDenied));
            assert_eq!(kv::open("missing").err(), Some(KvError::AccessDenied));
        });
    }

    #[test]
    fn get_set_json_batch_and_list() {
        let host = MockHost::new().bucket("b").kv_insert("b", "seed", "x");
        host.run(|| {
            let b = kv::open("b").unwrap();
            assert_eq!(b.get("seed").unwrap().as_deref(), Some(&b"x"[..]));
            b.set_json("cfg", &serde_json::json!({"n": 1})).unwrap();
            let v: serde_json::Value = b.get_json("cfg").unwrap().unwrap();
            assert_eq!(v["n"], 1);
            assert!(matches!(b.get_json::<u32>("seed"), Err(KvError::Decode(_))));
            b.set_many(&[("a".into(), b"1".to_vec()), ("c".into(), b"3".to_vec())])
                .unwrap();
            let got = b.get_many(&["a".into(), "zz".into(), "c".into()]).unwrap();
            assert_eq!(got, vec![Some(b"1".to_vec()), None, Some(b"3".to_vec())]);
            b.delete_many(&["a".into()]).unwrap();
            assert!(!b.exists("a").unwrap());
            assert_eq!(b.list_keys(None).unwrap().keys, ["c", "cfg", "seed"]);
            assert!(matches!(b.get(&"k".repeat(2000)), Err(KvError::Other(_))));
        });
    }

    #[test]
    fn update_retries_when_another_writer_races() {
        let host = MockHost::new()
            .bucket("b")
            .kv_insert("b", "n", "1")
            .race_next_swap("b", "n", "10");
        let mut seen = Vec::new();
        let written = host.run(|| {
            kv::open("b").unwrap().update("n", |old| {
                let old = old.map(|o| String::from_utf8_lossy(o).into_owned());
                seen.push(old.clone());
                let n: i64 = old.as_deref().unwrap_or("0").parse().unwrap();
                (n + 1).to_string().into_bytes()
            })
        });
        assert_eq!(written.unwrap(), b"11");
        assert_eq!(seen, [Some("1".to_owned()), Some("10".to_owned())]);
        assert_eq!(host.kv_value("b", "n").as_deref(), Some(&b"11"[..]));
    }

    #[test]
    fn a_bucket_that_is_down_fails_every_operation_and_recovers() {
        let host = MockHost::new().bucket("b").kv_insert("b", "k", "v");
        host.bucket_down("b", true);
        host.run(|| {
            let b = kv::open("b").unwrap();
            assert!(matches!(b.get("k"), Err(KvError::Other(_))));
            assert!(matches!(b.increment("n", 1), Err(KvError::Other(_))));
        });
        host.bucket_down("b", false);
        let v = host.run(|| kv::open("b").unwrap().get("k"));
        assert_eq!(v.unwrap().as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn increment_refuses_text() {
        let host = MockHost::new().bucket("b").kv_insert("b", "t", "text");
        let r = host.run(|| kv::open("b").unwrap().increment("t", 1));
        assert!(matches!(r, Err(KvError::Other(_))));
    }
}
