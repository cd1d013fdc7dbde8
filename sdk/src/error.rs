//! The error a plugin returns: a status for the client and a message.

use std::fmt;

use crate::Response;

/// An error that becomes a JSON response (`{"error": message}`) with its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    status: u16,
    message: String,
}

impl Error {
    /// An error answered with `status`.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// A 500 error.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, message)
    }

    /// A 404 error.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, message)
    }

    /// A 400 error.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    /// The status the client gets.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The response the client gets.
    pub fn into_response(self) -> Response {
        let status = if (400..=599).contains(&self.status) {
            self.status
        } else {
            500
        };
        let body = serde_json::json!({ "error": self.message });
        Response::new(status)
            .with_header("content-type", "application/json")
            .with_body(body.to_string())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

impl std::error::Error for Error {}

impl From<crate::http::HttpError> for Error {
    /// An outgoing call that failed is a 502 (504 for a timeout) for the client.
    fn from(e: crate::http::HttpError) -> Self {
        let status = match e {
            crate::http::HttpError::Timeout => 504,
            _ => 502,
        };
        Self::new(status, e.to_string())
    }
}
