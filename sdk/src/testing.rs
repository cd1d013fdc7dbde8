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
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use crate::host::bindings::tessera::gateway::types as wit;
use crate::host::{HttpError as WitHttpError, Level, OutgoingRequest as WitOutgoing};
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
    canned: HashMap<(String, String), Result<Response, HttpError>>,
    delays: HashMap<(String, String), Duration>,
    /// Virtual time: calls overlap like on the gateway, so concurrency shows in `elapsed`.
    now: Duration,
    next_pending: u64,
    pending: HashMap<u64, (Duration, Result<wit::Response, WitHttpError>)>,
    calls: Vec<OutgoingRequest>,
    logs: Vec<LogLine>,
}

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

    pub(crate) fn start(&self, request: &WitOutgoing) -> MockPending {
        let call = OutgoingRequest::from_wit(request);
        let key = (call.method().to_owned(), call.url().to_owned());
        let mut state = self.state.borrow_mut();
        state.calls.push(call);
        let result = match state.canned.get(&key) {
            Some(Ok(response)) => Ok(response.clone().into_wit()),
            Some(Err(e)) => Err(to_wit_error(e)),
            None => Err(WitHttpError::ConnectionFailed(format!(
                "MockHost has no answer for {} {}",
                key.0, key.1
            ))),
        };
        let finish = state.now + state.delays.get(&key).copied().unwrap_or_default();
        let id = state.next_pending;
        state.next_pending += 1;
        state.pending.insert(id, (finish, result));
        MockPending(id)
    }

    pub(crate) fn wait(&self, pending: MockPending) -> Result<wit::Response, WitHttpError> {
        let mut state = self.state.borrow_mut();
        match state.pending.remove(&pending.0) {
            Some((finish, result)) => {
                state.now = state.now.max(finish);
                result
            }
            None => Err(WitHttpError::InvalidRequest(
                "this call was already waited for".into(),
            )),
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
