//! Every failure on the request path, and the one function that turns it into a response.
//!
//! Clients get a short JSON body (`{"error": "...", "message": "...", "request_id": "..."}`);
//! the detail (upstream addresses, trap backtraces) goes to the log only.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};

use crate::body::{self, Body};

/// Who caused a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// The client sent something we will not serve.
    Client,
    /// A plugin trapped, timed out, hit a limit or returned something invalid.
    Plugin,
    /// An upstream was unreachable, slow or broke the connection.
    Upstream,
    /// The gateway itself.
    Internal,
}

/// How a plugin call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PluginFailure {
    /// The guest trapped: panic, unreachable, stack overflow, out of memory.
    Trap,
    /// The call ran past its deadline.
    Timeout,
    /// The instance pool is exhausted: too many plugin calls at once.
    Overloaded,
    /// The plugin returned something the gateway cannot send (bad status, header, size).
    InvalidOutput,
    /// The plugin could not be instantiated (e.g. its memory needs exceed the cap).
    Instantiate,
}

/// An error on the request path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// No route matches the path.
    #[error("no route for this path")]
    RouteNotFound,
    /// A route matches the path but not the method.
    #[error("method not allowed")]
    MethodNotAllowed {
        /// Methods the path does allow.
        allow: Vec<Method>,
    },
    /// The request body is larger than the gateway buffers.
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The request could not be read or is malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The client stopped sending its request body for too long.
    #[error("request body not received within {timeout:?}")]
    BodyTimeout {
        /// The timeout that ran out.
        timeout: Duration,
    },
    /// The request uses an HTTP feature the gateway does not implement (a transfer coding).
    #[error("not implemented: {0}")]
    NotImplemented(String),
    /// One connection or client holds as many plugin requests as it may.
    #[error("too many plugin requests from one {scope}")]
    TooManyRequests {
        /// `connection` or `client`.
        scope: &'static str,
    },
    /// The gateway is at its connection or request cap.
    #[error("gateway at capacity")]
    Overloaded,
    /// The upstream could not be reached or broke the exchange.
    #[error("upstream `{upstream}` failed")]
    UpstreamConnect {
        /// The upstream's name.
        upstream: String,
        /// What went wrong.
        #[source]
        source: anyhow::Error,
    },
    /// The upstream sent no response headers in time.
    #[error("upstream `{upstream}` did not answer within {timeout:?}")]
    UpstreamTimeout {
        /// The upstream's name.
        upstream: String,
        /// The timeout that ran out.
        timeout: Duration,
    },
    /// A plugin failed.
    #[error("plugin `{plugin}` failed ({kind:?})")]
    Plugin {
        /// Plugin name and version.
        plugin: String,
        /// How it failed.
        kind: PluginFailure,
        /// Detail for the log.
        #[source]
        source: anyhow::Error,
    },
    /// A bug or an unexpected condition in the gateway.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl GatewayError {
    /// Who caused it.
    pub fn source_kind(&self) -> ErrorSource {
        match self {
            Self::RouteNotFound
            | Self::MethodNotAllowed { .. }
            | Self::BodyTooLarge { .. }
            | Self::BadRequest(_)
            | Self::BodyTimeout { .. }
            | Self::NotImplemented(_)
            | Self::TooManyRequests { .. } => ErrorSource::Client,
            Self::Overloaded => ErrorSource::Internal,
            Self::UpstreamConnect { .. } | Self::UpstreamTimeout { .. } => ErrorSource::Upstream,
            Self::Plugin { .. } => ErrorSource::Plugin,
            Self::Internal(_) => ErrorSource::Internal,
        }
    }

    /// Whether sending the same request again could succeed without changing it.
    pub fn retry_safe(&self) -> bool {
        matches!(
            self,
            Self::UpstreamConnect { .. }
                | Self::Overloaded
                | Self::TooManyRequests { .. }
                | Self::Plugin {
                    kind: PluginFailure::Overloaded,
                    ..
                }
        )
    }

    /// Whether the client connection must close after this answer: the request was malformed,
    /// its framing was not understood or the rest of its body is unread, so the next bytes
    /// cannot be trusted to start a request.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            Self::BadRequest(_) | Self::BodyTimeout { .. } | Self::NotImplemented(_)
        )
    }

    /// The status and machine-readable code clients see.
    pub fn status(&self) -> (StatusCode, &'static str) {
        match self {
            Self::RouteNotFound => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::BodyTimeout { .. } => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            Self::NotImplemented(_) => (StatusCode::NOT_IMPLEMENTED, "not_implemented"),
            Self::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            Self::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Self::UpstreamConnect { .. } => (StatusCode::BAD_GATEWAY, "upstream_unavailable"),
            Self::UpstreamTimeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
            Self::Plugin { kind, .. } => match kind {
                PluginFailure::Timeout => (StatusCode::GATEWAY_TIMEOUT, "plugin_timeout"),
                PluginFailure::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "plugin_overloaded"),
                PluginFailure::Trap | PluginFailure::InvalidOutput | PluginFailure::Instantiate => {
                    (StatusCode::INTERNAL_SERVER_ERROR, "plugin_failed")
                }
            },
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// What the client may read: no addresses, no plugin internals.
    fn public_message(&self) -> String {
        match self {
            Self::RouteNotFound => "no route matches this path".into(),
            Self::MethodNotAllowed { .. } => "this path does not accept this method".into(),
            Self::BodyTooLarge { limit } => format!("request body larger than {limit} bytes"),
            Self::BadRequest(m) | Self::NotImplemented(m) => m.clone(),
            Self::BodyTimeout { timeout } => {
                format!("the request body did not arrive in time ({timeout:?})")
            }
            Self::TooManyRequests { scope } => {
                format!("too many plugin requests in progress from this {scope}; retry shortly")
            }
            Self::Overloaded => "the gateway is at capacity; retry shortly".into(),
            // Which upstream is configuration detail: it goes to the log.
            Self::UpstreamConnect { .. } => "the upstream is unavailable".into(),
            Self::UpstreamTimeout { .. } => "the upstream timed out".into(),
            Self::Plugin { kind, .. } => match kind {
                PluginFailure::Timeout => "a plugin ran out of time".into(),
                PluginFailure::Overloaded => {
                    "too many plugin calls in progress; retry later".into()
                }
                _ => "a plugin failed while serving this request".into(),
            },
            Self::Internal(_) => "internal error".into(),
        }
    }
}

/// Turns an error into the response the client gets, and logs what the client does not see.
pub fn into_response(err: &GatewayError, request_id: &str) -> Response<Body> {
    let (status, code) = err.status();
    match err.source_kind() {
        ErrorSource::Client => tracing::debug!(error = %err, request_id, "rejected request"),
        _ => tracing::warn!(error = chain(err), request_id, "request failed"),
    }
    let body = serde_json::json!({
        "error": code,
        "message": err.public_message(),
        "request_id": request_id,
    });
    let mut response = Response::new(body::full(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .extensions_mut()
        .insert(crate::access::ErrorCode(code));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(crate::ids::REQUEST_ID, v);
    }
    if err.retry_safe()
        && matches!(
            status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        )
    {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if err.closes_connection() {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let GatewayError::MethodNotAllowed { allow } = err {
        let list: Vec<&str> = allow.iter().map(Method::as_str).collect();
        if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
            headers.insert(header::ALLOW, v);
        }
    }
    response
}

/// An error with its whole source chain (`a: b: c`), for logs and operator-facing answers.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
