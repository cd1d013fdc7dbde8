//! The error a plugin returns: a status, a message the client may read, and detail for the log.
//!
//! Clients get the gateway's one error shape, the same the host answers its own errors with:
//!
//! ```json
//! {"error": "not_found", "message": "order 4242 not found", "request_id": "4bf9…"}
//! ```
//!
//! `error` is a code named for the status (`bad_request`, `unauthorized`, `forbidden`,
//! `not_found`, `conflict`, `too_many_requests`, `internal`, `upstream_unavailable`,
//! `unavailable`, `upstream_timeout`, ...). Detail that must not reach clients (upstream names,
//! URLs, parse errors of the plugin's config) goes in [`Error::with_detail`]: it is logged with
//! the request id when the error is answered, never sent.

use std::fmt;

use crate::Response;

/// An error that becomes a JSON response with its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    status: u16,
    message: String,
    detail: Option<String>,
}

impl Error {
    /// An error answered with `status` (4xx or 5xx; anything else is answered as 500) and
    /// `message`, which the client reads.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            detail: None,
        }
    }

    /// A 400 error: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    /// A 401 error: the request lacks valid credentials.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, message)
    }

    /// A 403 error: the credentials do not allow this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, message)
    }

    /// A 404 error.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, message)
    }

    /// A 409 error: the request conflicts with the resource's state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, message)
    }

    /// A 429 error: the client sent too many requests.
    pub fn too_many_requests(message: impl Into<String>) -> Self {
        Self::new(429, message)
    }

    /// A 500 error.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, message)
    }

    /// A 502 error: an upstream failed or answered something unusable.
    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(502, message)
    }

    /// A 503 error: unavailable for now.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, message)
    }

    /// A 504 error: an upstream did not answer in time.
    pub fn gateway_timeout(message: impl Into<String>) -> Self {
        Self::new(504, message)
    }

    /// Adds detail for the log (never sent to the client).
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// The status the client gets.
    pub fn status(&self) -> u16 {
        if (400..=599).contains(&self.status) {
            self.status
        } else {
            500
        }
    }

    /// The message the client reads.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The detail that is logged, not sent.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// The machine-readable code for the status (the `error` field of the answer).
    pub fn code(&self) -> &'static str {
        match self.status() {
            400 => "bad_request",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            405 => "method_not_allowed",
            409 => "conflict",
            413 => "body_too_large",
            422 => "unprocessable",
            429 => "too_many_requests",
            500 => "internal",
            502 => "upstream_unavailable",
            503 => "unavailable",
            504 => "upstream_timeout",
            status if status < 500 => "client_error",
            _ => "server_error",
        }
    }

    /// The response the client gets; the detail, if any, is logged with the request id.
    pub fn into_response(self) -> Response {
        let request_id = crate::context::request_id();
        if let Some(detail) = &self.detail {
            crate::log::warn(format!(
                "answering {} ({}): {detail}",
                self.status(),
                self.message
            ));
        }
        let body = serde_json::json!({
            "error": self.code(),
            "message": self.message,
            "request_id": request_id,
        });
        Response::new(self.status())
            .with_header("content-type", "application/json")
            .with_body(body.to_string())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.status())?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl From<crate::http::HttpError> for Error {
    /// An outgoing call that failed is a 502 (504 for a timeout) for the client; which call and
    /// why (upstream names, URLs) goes to the log only.
    fn from(e: crate::http::HttpError) -> Self {
        match e {
            crate::http::HttpError::Timeout => {
                Self::gateway_timeout("an upstream call timed out").with_detail(e.to_string())
            }
            _ => Self::bad_gateway("an upstream call failed").with_detail(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MockHost;

    #[test]
    fn errors_answer_the_gateways_shape_and_keep_detail_in_the_log() {
        let host = MockHost::new().request_id("req-7");
        let response = host.run(|| {
            Error::from(crate::http::HttpError::ConnectionFailed(
                "http://users.internal:8080/v1 refused".into(),
            ))
            .into_response()
        });
        assert_eq!(response.status(), 502);
        let body: serde_json::Value = serde_json::from_slice(response.body().unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "error": "upstream_unavailable",
                "message": "an upstream call failed",
                "request_id": "req-7",
            })
        );
        assert!(!response.text_body().contains("users.internal"));
        assert!(
            host.logs()
                .iter()
                .any(|l| l.level == "warn" && l.message.contains("users.internal:8080")),
            "{:?}",
            host.logs()
        );
    }

    #[test]
    fn codes_follow_the_status() {
        assert_eq!(Error::unauthorized("x").code(), "unauthorized");
        assert_eq!(Error::forbidden("x").code(), "forbidden");
        assert_eq!(Error::conflict("x").code(), "conflict");
        assert_eq!(Error::too_many_requests("x").code(), "too_many_requests");
        assert_eq!(Error::unavailable("x").code(), "unavailable");
        assert_eq!(Error::gateway_timeout("x").code(), "upstream_timeout");
        assert_eq!(Error::new(418, "x").code(), "client_error");
        assert_eq!(Error::new(200, "x").status(), 500, "not an error status");
    }
}
