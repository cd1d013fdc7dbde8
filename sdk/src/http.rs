//! Outgoing HTTP calls through the gateway.
//!
//! Name an upstream from the gateway config as the URL's host: `http://users/users/42` goes to
//! the upstream `users`, with its load balancing, pooled connections and timeouts. A route must
//! grant the plugin each upstream it calls (`upstreams = ["users"]`); others are denied.
//!
//! ```no_run
//! # fn demo() -> Result<(), tessera_sdk::Error> {
//! let user: serde_json::Value = tessera_sdk::http::get("http://users/users/42").send()?.json_body()?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::host::{self, bindings::tessera::gateway::types as wit};
use crate::{Error, Headers, Response};

/// Why a call produced no response. Any status, 4xx and 5xx included, is a response, not this.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpError {
    /// The route does not grant this upstream or host.
    Denied(String),
    /// No response within the call's timeout.
    Timeout,
    /// The upstream could not be reached or broke the connection.
    ConnectionFailed(String),
    /// Too many calls for this request.
    LimitExceeded(String),
    /// The request is malformed.
    InvalidRequest(String),
    /// The response body was larger than the plugin may receive.
    BodyTooLarge,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Denied(m) => write!(f, "call denied: {m}"),
            Self::Timeout => write!(f, "call timed out"),
            Self::ConnectionFailed(m) => write!(f, "connection failed: {m}"),
            Self::LimitExceeded(m) => write!(f, "call limit exceeded: {m}"),
            Self::InvalidRequest(m) => write!(f, "invalid request: {m}"),
            Self::BodyTooLarge => write!(f, "response body too large"),
        }
    }
}

impl std::error::Error for HttpError {}

impl From<wit::HttpError> for HttpError {
    fn from(e: wit::HttpError) -> Self {
        match e {
            wit::HttpError::Denied(m) => Self::Denied(m),
            wit::HttpError::Timeout => Self::Timeout,
            wit::HttpError::ConnectionFailed(m) => Self::ConnectionFailed(m),
            wit::HttpError::LimitExceeded(m) => Self::LimitExceeded(m),
            wit::HttpError::InvalidRequest(m) => Self::InvalidRequest(m),
            wit::HttpError::BodyTooLarge => Self::BodyTooLarge,
        }
    }
}

/// An outgoing request, built then sent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a request does nothing until it is sent"]
pub struct OutgoingRequest {
    method: String,
    url: String,
    headers: Headers,
    body: Option<Vec<u8>>,
    timeout: Option<Duration>,
}

/// A `GET` request.
pub fn get(url: impl Into<String>) -> OutgoingRequest {
    OutgoingRequest::new("GET", url)
}

/// A `POST` request.
pub fn post(url: impl Into<String>) -> OutgoingRequest {
    OutgoingRequest::new("POST", url)
}

/// A `PUT` request.
pub fn put(url: impl Into<String>) -> OutgoingRequest {
    OutgoingRequest::new("PUT", url)
}

/// A `DELETE` request.
pub fn delete(url: impl Into<String>) -> OutgoingRequest {
    OutgoingRequest::new("DELETE", url)
}

/// Sends all requests concurrently; the results come back in the same order. The time taken is
/// about that of the slowest call.
pub fn send_all(
    requests: impl IntoIterator<Item = OutgoingRequest>,
) -> Vec<Result<Response, HttpError>> {
    let requests: Vec<wit::OutgoingRequest> = requests
        .into_iter()
        .map(OutgoingRequest::into_wit)
        .collect();
    host::send_all(&requests)
        .into_iter()
        .map(|r| r.map(Response::from_wit).map_err(HttpError::from))
        .collect()
}

/// Waits for every pending call, in order.
pub fn join_all(pending: impl IntoIterator<Item = Pending>) -> Vec<Result<Response, HttpError>> {
    pending.into_iter().map(Pending::wait).collect()
}

/// A call already running on the gateway; [`Pending::wait`] takes its result. Dropping it
/// cancels the call.
#[must_use = "a pending call is cancelled when dropped; wait for it"]
pub struct Pending {
    inner: host::Pending,
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending").finish_non_exhaustive()
    }
}

impl Pending {
    /// Waits for the response, with its trailers ([`Response::trailers`]).
    pub fn wait(self) -> Result<Response, HttpError> {
        let (result, trailers) = host::wait_with_trailers(self.inner);
        let mut response = result.map(Response::from_wit).map_err(HttpError::from)?;
        response.set_trailers(Headers::from_wit(trailers));
        Ok(response)
    }
}

impl OutgoingRequest {
    /// A request with any method.
    pub fn new(method: &str, url: impl Into<String>) -> Self {
        Self {
            method: method.to_ascii_uppercase(),
            url: url.into(),
            headers: Headers::new(),
            body: None,
            timeout: None,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Sets a JSON body and its content type.
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Result<Self, Error> {
        let body = serde_json::to_vec(value)
            .map_err(|e| Error::internal(format!("cannot encode JSON: {e}")))?;
        self.headers.set("content-type", "application/json");
        self.body = Some(body);
        Ok(self)
    }

    /// Lowers the upstream's timeout for this call (it cannot be raised).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The method.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The body, if set.
    pub fn body_bytes(&self) -> Option<&[u8]> {
        self.body.as_deref()
    }

    /// Starts the request and returns at once; other work (and other calls) can go on while it
    /// runs. Errors (denied, invalid, over a limit) come from [`Pending::wait`].
    pub fn start(self) -> Pending {
        let request = self.into_wit();
        Pending {
            inner: host::start(&request),
        }
    }

    /// Sends the request and waits for the response.
    pub fn send(self) -> Result<Response, HttpError> {
        let request = self.into_wit();
        host::send(&request)
            .map(Response::from_wit)
            .map_err(HttpError::from)
    }

    pub(crate) fn into_wit(self) -> wit::OutgoingRequest {
        wit::OutgoingRequest {
            method: self.method,
            url: self.url,
            headers: self.headers.into_wit(),
            body: self.body,
            timeout_ms: self
                .timeout
                .map(|t| u32::try_from(t.as_millis()).unwrap_or(u32::MAX)),
        }
    }

    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(crate) fn from_wit(r: &wit::OutgoingRequest) -> Self {
        Self {
            method: r.method.clone(),
            url: r.url.clone(),
            headers: Headers::from_wit(r.headers.clone()),
            body: r.body.clone(),
            timeout: r.timeout_ms.map(|ms| Duration::from_millis(u64::from(ms))),
        }
    }
}
