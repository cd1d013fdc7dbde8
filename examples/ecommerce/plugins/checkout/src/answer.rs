//! What the client gets: the answer of a checkout (also what an idempotent retry replays), the
//! failure of a step, and the record of what was undone.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tessera_sdk::{Response, context, log};

/// A finished answer: status, JSON body and the `location` of a created order. This is what the
/// idempotency bucket stores and replays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The status.
    pub status: u16,
    /// The JSON body.
    pub body: Value,
    /// `location` of the created order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// `retry-after` seconds (never stored: only answers that are not stored carry it).
    #[serde(skip)]
    pub retry_after: Option<u32>,
}

impl Answer {
    /// The response; a replay says so in `idempotency-replayed: true`.
    pub fn into_response(self, replayed: bool) -> Response {
        let mut response = Response::json(self.status, &self.body);
        if let Some(location) = self.location {
            response.headers_mut().set("location", location);
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .set("retry-after", seconds.to_string());
        }
        if replayed {
            response.headers_mut().set("idempotency-replayed", "true");
        }
        response
    }

    /// Whether a retry with the same key should run the checkout again rather than replay this
    /// answer: a service failed or timed out, and what had been done was undone.
    pub fn is_transient(&self) -> bool {
        self.status >= 500
    }
}

/// How one compensating action went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UndoStatus {
    /// Undone.
    Done,
    /// The action failed: what it should have undone may still be in place.
    Failed(String),
    /// What the step did is unknown (it timed out), so there was nothing the plugin could undo.
    Unknown(String),
}

/// One compensating action, reported in the failure answer's `compensation` list.
#[derive(Debug, Clone, PartialEq)]
pub struct Undo {
    /// `cancel_order`, `void_payment`, `refund_payment` or `release_reservation`.
    pub action: &'static str,
    /// What it applied to, e.g. `("product_id", 100)`.
    pub target: Option<(&'static str, Value)>,
    /// How it went.
    pub status: UndoStatus,
}

impl Undo {
    fn to_json(&self) -> Value {
        let mut entry = Map::new();
        entry.insert("action".into(), json!(self.action));
        if let Some((name, value)) = &self.target {
            entry.insert((*name).into(), value.clone());
        }
        let (status, message) = match &self.status {
            UndoStatus::Done => ("done", None),
            UndoStatus::Failed(m) => ("failed", Some(m)),
            UndoStatus::Unknown(m) => ("unknown", Some(m)),
        };
        entry.insert("status".into(), json!(status));
        if let Some(message) = message {
            entry.insert("message".into(), json!(message));
        }
        Value::Object(entry)
    }
}

/// A checkout that could not go on: the status and code the client gets, the step that failed,
/// extra fields for the body, and detail for the log only.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The status.
    pub status: u16,
    /// The `error` code.
    pub code: &'static str,
    /// The `message`.
    pub message: String,
    /// The step that failed (`cart`, `price`, `reserve`, `authorize`, `create_order`,
    /// `capture`), for failures of the checkout itself.
    pub step: Option<&'static str>,
    /// More fields of the body (`items`, `reason`, `field`, ...).
    pub extra: Vec<(&'static str, Value)>,
    /// Logged, never sent (upstream detail).
    pub detail: Option<String>,
}

impl Failure {
    /// A failure with `status`, `code` and `message`.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            step: None,
            extra: Vec::new(),
            detail: None,
        }
    }

    /// 400 about one field of the request.
    pub fn field(field: &'static str, message: impl std::fmt::Display) -> Self {
        Self::new(400, "bad_request", format!("{field}: {message}")).with("field", json!(field))
    }

    /// The step that failed.
    pub fn at(mut self, step: &'static str) -> Self {
        self.step = Some(step);
        self
    }

    /// Adds a field to the body.
    pub fn with(mut self, name: &'static str, value: Value) -> Self {
        self.extra.push((name, value));
        self
    }

    /// Adds detail for the log.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// The answer for a failure before anything was attempted (no checkout id, nothing undone).
    pub fn into_answer(self) -> Answer {
        self.answer(None, None)
    }

    /// The answer for a failed checkout: its id and the compensation, which is logged too when
    /// anything in it did not succeed.
    pub fn into_checkout_answer(self, checkout_id: &str, undone: &[Undo]) -> Answer {
        for undo in undone {
            if undo.status != UndoStatus::Done {
                log::error(format!(
                    "checkout {checkout_id}: compensation {} {:?} did not complete: {:?}",
                    undo.action, undo.target, undo.status
                ));
            }
        }
        self.answer(Some(checkout_id), Some(undone))
    }

    fn answer(self, checkout_id: Option<&str>, undone: Option<&[Undo]>) -> Answer {
        if let Some(detail) = &self.detail {
            log::warn(format!(
                "answering {} {} ({}): {detail}",
                self.status, self.code, self.message
            ));
        }
        let mut body = Map::new();
        body.insert("error".into(), json!(self.code));
        body.insert("message".into(), json!(self.message));
        body.insert("request_id".into(), json!(context::request_id()));
        if let Some(id) = checkout_id {
            body.insert("checkout_id".into(), json!(id));
        }
        if let Some(step) = self.step {
            body.insert("step".into(), json!(step));
        }
        for (name, value) in self.extra {
            body.insert(name.into(), value);
        }
        if let Some(undone) = undone {
            body.insert(
                "compensation".into(),
                Value::Array(undone.iter().map(Undo::to_json).collect()),
            );
        }
        Answer {
            status: self.status,
            body: Value::Object(body),
            location: None,
            retry_after: None,
        }
    }
}
