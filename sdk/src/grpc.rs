//! Unary gRPC calls to upstreams declared `protocol = "grpc"`, with `prost` messages.
//!
//! ```no_run
//! # #[derive(Clone, PartialEq, prost::Message)] struct GetUser { #[prost(uint64, tag = "1")] id: u64 }
//! # #[derive(Clone, PartialEq, prost::Message)] struct User { #[prost(string, tag = "1")] name: String }
//! # fn demo() -> Result<(), tessera_sdk::Error> {
//! use std::time::Duration;
//! use tessera_sdk::grpc::{self, Code, GrpcError};
//!
//! let call = grpc::unary("http://users/demo.Users/GetUser", &GetUser { id: 7 })
//!     .timeout(Duration::from_millis(500));
//! match call.send::<User>() {
//!     Ok(user) => { /* ... */ }
//!     Err(e) if e.code() == Code::NotFound => { /* ... */ }
//!     Err(e) => return Err(e.into()), // 502, or 504 for a deadline
//! }
//! # Ok(()) }
//! ```
//!
//! The URL is `http://<upstream>/<package>.<Service>/<Method>`. A call is an HTTP/2 `POST` with
//! `content-type: application/grpc`, the message in one length-prefixed frame, and `grpc-timeout`
//! from [`Call::timeout`] (the gateway lowers it to the upstream's own timeout). The answer's
//! `grpc-status` and `grpc-message` come from its trailers, or from its headers when the server
//! answered with trailers only; a status other than `OK` is [`GrpcError::Status`]. A response
//! that is not gRPC (an HTTP error from a proxy, a wrong content type, a broken frame) is a
//! [`GrpcError`] too, never a panic.
//!
//! Calls run like [`http`](crate::http) calls: [`Call::start`] several, then wait for each, and
//! the latency is that of the slowest.

use std::fmt;
use std::time::Duration;

use prost::Message;

use crate::http::{self, HttpError, OutgoingRequest};
use crate::{Error, Headers, Response};

/// A gRPC status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// Not an error.
    Ok,
    /// The caller cancelled the call.
    Cancelled,
    /// An unknown error.
    Unknown,
    /// The request is invalid whatever the server's state.
    InvalidArgument,
    /// The deadline passed before the call finished.
    DeadlineExceeded,
    /// Something the request names does not exist.
    NotFound,
    /// What the request would create exists already.
    AlreadyExists,
    /// The caller may not do this.
    PermissionDenied,
    /// A quota or limit ran out.
    ResourceExhausted,
    /// The server's state does not allow this request.
    FailedPrecondition,
    /// The call was aborted, typically by a concurrency conflict.
    Aborted,
    /// Past a valid range.
    OutOfRange,
    /// The server does not implement the method.
    Unimplemented,
    /// An invariant broke in the server.
    Internal,
    /// The service is unavailable for now; retrying may help.
    Unavailable,
    /// Data was lost or corrupted.
    DataLoss,
    /// The caller has no valid credentials.
    Unauthenticated,
}

impl Code {
    const ALL: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// The code for a `grpc-status` number; numbers outside the table are `Unknown`.
    pub fn from_i32(n: i32) -> Code {
        usize::try_from(n)
            .ok()
            .and_then(|i| Code::ALL.get(i).copied())
            .unwrap_or(Code::Unknown)
    }

    /// The code's number, as sent in `grpc-status`.
    pub fn as_i32(self) -> i32 {
        Code::ALL.iter().position(|c| *c == self).unwrap_or(2) as i32
    }

    /// The code's name in upper snake case, e.g. `NOT_FOUND`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }

    /// The code gRPC gives an HTTP response that carries no `grpc-status`.
    fn from_http_status(status: u16) -> Code {
        match status {
            400 => Code::Internal,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            429 | 502..=504 => Code::Unavailable,
            _ => Code::Unknown,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a gRPC call produced no message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GrpcError {
    /// The server answered with a status other than `OK` (or an HTTP error without one, mapped
    /// to a code as gRPC specifies).
    Status {
        /// The status code.
        code: Code,
        /// `grpc-message`, percent-decoded; empty when absent.
        message: String,
    },
    /// The call produced no response: denied, timed out, connection failed, over a limit.
    Http(HttpError),
    /// The answer was not a valid gRPC response: wrong content type, no status, a broken or
    /// compressed frame, a message that does not decode.
    Protocol(String),
}

impl GrpcError {
    /// The gRPC code for this error: the server's, or the one matching a failed call
    /// (`DeadlineExceeded` for a timeout, `Unavailable` for a connection failure, ...).
    pub fn code(&self) -> Code {
        match self {
            GrpcError::Status { code, .. } => *code,
            GrpcError::Http(HttpError::Timeout) => Code::DeadlineExceeded,
            GrpcError::Http(HttpError::ConnectionFailed(_)) => Code::Unavailable,
            GrpcError::Http(HttpError::Denied(_)) => Code::PermissionDenied,
            GrpcError::Http(HttpError::LimitExceeded(_) | HttpError::BodyTooLarge) => {
                Code::ResourceExhausted
            }
            GrpcError::Http(_) | GrpcError::Protocol(_) => Code::Internal,
        }
    }

    /// The server's `grpc-message`, or a description of the failure.
    pub fn message(&self) -> String {
        match self {
            GrpcError::Status { message, .. } => message.clone(),
            GrpcError::Http(e) => e.to_string(),
            GrpcError::Protocol(m) => m.clone(),
        }
    }
}

impl fmt::Display for GrpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrpcError::Status { code, message } if message.is_empty() => {
                write!(f, "gRPC status {code}")
            }
            GrpcError::Status { code, message } => write!(f, "gRPC status {code}: {message}"),
            GrpcError::Http(e) => write!(f, "gRPC call failed: {e}"),
            GrpcError::Protocol(m) => write!(f, "invalid gRPC response: {m}"),
        }
    }
}

impl std::error::Error for GrpcError {}

impl From<HttpError> for GrpcError {
    fn from(e: HttpError) -> Self {
        GrpcError::Http(e)
    }
}

impl From<GrpcError> for Error {
    /// A failed gRPC call is a 502 for the client (504 when its deadline passed); the code and
    /// message go to the log only.
    fn from(e: GrpcError) -> Self {
        match e.code() {
            Code::DeadlineExceeded => {
                Error::gateway_timeout("an upstream call timed out").with_detail(e.to_string())
            }
            _ => Error::bad_gateway("an upstream call failed").with_detail(e.to_string()),
        }
    }
}

/// A unary call, built then sent.
#[derive(Debug, Clone)]
#[must_use = "a call does nothing until it is sent"]
pub struct Call {
    request: OutgoingRequest,
    refused: Option<String>,
}

/// A unary call of the method at `url` (`http://<upstream>/<package>.<Service>/<Method>`) with
/// `message`.
pub fn unary(url: impl Into<String>, message: &impl Message) -> Call {
    Call {
        request: http::post(url)
            .header("content-type", "application/grpc")
            .body(encode(message)),
        refused: None,
    }
}

impl Call {
    /// Adds a metadata entry (a request header). Names are lower-case; `grpc-*`, `content-type`
    /// and `te` are the protocol's own and are refused when the call is sent. Binary values go
    /// in names ending `-bin`, base64-encoded by the caller.
    pub fn metadata(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        let lower = name.to_ascii_lowercase();
        if lower.starts_with("grpc-") || lower == "content-type" || lower == "te" {
            self.refused
                .get_or_insert_with(|| format!("metadata `{name}` is reserved for gRPC itself"));
            return self;
        }
        self.request = self.request.header(&lower, value);
        self
    }

    /// The call's deadline: the host call times out after it and the server is told with
    /// `grpc-timeout`. The upstream's own timeout still applies when shorter.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        let ms = timeout.as_millis().clamp(1, 99_999_999);
        self.request = self
            .request
            .timeout(timeout)
            .header("grpc-timeout", format!("{ms}m"));
        self
    }

    /// Starts the call and returns at once; [`PendingCall::wait`] takes its result.
    pub fn start(self) -> PendingCall {
        match self.refused {
            Some(reason) => PendingCall {
                inner: Err(HttpError::InvalidRequest(reason)),
            },
            None => PendingCall {
                inner: Ok(self.request.start()),
            },
        }
    }

    /// Sends the call and waits for the answer.
    pub fn send<R: Message + Default>(self) -> Result<R, GrpcError> {
        self.start().wait()
    }
}

/// A call already running on the gateway. Dropping it cancels the call.
#[must_use = "a pending call is cancelled when dropped; wait for it"]
pub struct PendingCall {
    inner: Result<http::Pending, HttpError>,
}

impl fmt::Debug for PendingCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingCall").finish_non_exhaustive()
    }
}

impl PendingCall {
    /// Waits for the answer and decodes it as `R`.
    pub fn wait<R: Message + Default>(self) -> Result<R, GrpcError> {
        let response = self.inner?.wait()?;
        read_response(&response)
    }
}

/// Longest `grpc-message` kept, in bytes.
const MAX_STATUS_MESSAGE: usize = 4096;

/// The message in a unary gRPC response, or the error it carries.
pub fn read_response<R: Message + Default>(response: &Response) -> Result<R, GrpcError> {
    let status = response.status();
    let has_status = |h: &Headers| h.get_bytes("grpc-status").is_some();
    // A trailers-only answer puts the status in the headers.
    let fields = if has_status(response.trailers()) {
        response.trailers()
    } else {
        response.headers()
    };
    if status != 200 {
        if let Some(e) = status_error(fields)? {
            return Err(e);
        }
        return Err(GrpcError::Status {
            code: Code::from_http_status(status),
            message: format!("HTTP status {status} without a gRPC status"),
        });
    }
    let content_type = response.header("content-type").unwrap_or_default();
    let is_grpc = content_type == "application/grpc"
        || content_type.starts_with("application/grpc+")
        || content_type.starts_with("application/grpc;");
    if !is_grpc {
        return Err(GrpcError::Protocol(format!(
            "content type `{}` is not gRPC",
            truncate(content_type, 100)
        )));
    }
    if !has_status(fields) {
        return Err(GrpcError::Protocol(
            "the answer carries no grpc-status".into(),
        ));
    }
    if let Some(e) = status_error(fields)? {
        return Err(e);
    }
    decode(response.body().unwrap_or_default())
}

/// The error a `grpc-status` other than 0 stands for; `None` for `OK` or no status.
fn status_error(fields: &Headers) -> Result<Option<GrpcError>, GrpcError> {
    let Some(raw) = fields.get_bytes("grpc-status") else {
        return Ok(None);
    };
    let number = std::str::from_utf8(raw)
        .ok()
        .filter(|s| !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<i32>().ok())
        .ok_or_else(|| {
            GrpcError::Protocol(format!(
                "grpc-status `{}` is not a number",
                truncate(&String::from_utf8_lossy(raw), 20)
            ))
        })?;
    if number == 0 {
        return Ok(None);
    }
    let message = fields
        .get_bytes("grpc-message")
        .map(percent_decode)
        .unwrap_or_default();
    Ok(Some(GrpcError::Status {
        code: Code::from_i32(number),
        message,
    }))
}

/// `grpc-message` is percent-encoded UTF-8; anything else is kept as lossy text, cut to
/// [`MAX_STATUS_MESSAGE`] bytes.
fn percent_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() && out.len() < MAX_STATUS_MESSAGE {
        let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
        match raw[i] {
            b'%' if i + 2 < raw.len() => match (hex(raw[i + 1]), hex(raw[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `message` in one gRPC frame: a zero "compressed" flag, the length as 4 bytes big-endian,
/// then the encoded message.
pub fn encode(message: &impl Message) -> Vec<u8> {
    let len = message.encoded_len();
    let mut out = Vec::with_capacity(5 + len);
    out.push(0);
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    message
        .encode(&mut out)
        .expect("a Vec grows to hold any message");
    out
}

/// The one message in a unary gRPC body. Compressed frames are refused (the call never offers
/// an encoding), as are a missing, short, repeated or trailing frame.
pub fn decode<M: Message + Default>(body: &[u8]) -> Result<M, GrpcError> {
    let Some((header, rest)) = body.split_first_chunk::<5>() else {
        return Err(GrpcError::Protocol(if body.is_empty() {
            "the answer carries no message".into()
        } else {
            format!("a frame of {} bytes is shorter than its header", body.len())
        }));
    };
    match header[0] {
        0 => {}
        1 => return Err(GrpcError::Protocol("the message is compressed".into())),
        flag => {
            return Err(GrpcError::Protocol(format!(
                "frame flag {flag} is neither 0 nor 1"
            )));
        }
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if rest.len() != len {
        return Err(GrpcError::Protocol(format!(
            "the frame says {len} bytes but {} follow",
            rest.len()
        )));
    }
    M::decode(rest).map_err(|e| GrpcError::Protocol(format!("the message does not decode: {e}")))
}

/// Canned gRPC answers and request decoding for [`MockHost`](crate::testing::MockHost) tests.
pub mod testing {
    use super::{Code, GrpcError, Message, decode, encode};
    use crate::Response;
    use crate::http::OutgoingRequest;

    /// A successful unary answer carrying `message`, its status in the trailers.
    pub fn response(message: &impl Message) -> Response {
        Response::new(200)
            .with_header("content-type", "application/grpc")
            .with_body(encode(message))
            .with_trailer("grpc-status", "0")
    }

    /// A trailers-only error answer with `code` and `message` (percent-encoded as gRPC does).
    pub fn status(code: Code, message: &str) -> Response {
        let mut encoded = String::new();
        for b in message.bytes() {
            if (0x20..0x7f).contains(&b) && b != b'%' {
                encoded.push(b as char);
            } else {
                encoded.push_str(&format!("%{b:02X}"));
            }
        }
        Response::new(200)
            .with_header("content-type", "application/grpc")
            .with_header("grpc-status", code.as_i32().to_string())
            .with_header("grpc-message", encoded)
    }

    /// The message a plugin sent in `request` (as recorded by `MockHost::calls`).
    pub fn decode_request<M: Message + Default>(request: &OutgoingRequest) -> Result<M, GrpcError> {
        decode(request.body_bytes().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MockHost;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Ping {
        #[prost(string, tag = "1")]
        text: String,
        #[prost(int64, tag = "2")]
        n: i64,
    }

    const URL: &str = "http://svc/demo.Svc/Ping";

    fn ping() -> Ping {
        Ping {
            text: "hello".into(),
            n: 42,
        }
    }

    #[test]
    fn a_call_frames_the_message_and_reads_the_answer_from_the_trailers() {
        let host = MockHost::new().respond("POST", URL, testing::response(&ping()));
        let answer: Ping = host.run(|| {
            unary(URL, &Ping::default())
                .timeout(Duration::from_millis(1500))
                .metadata("X-Tenant", "t1")
                .send()
                .unwrap()
        });
        assert_eq!(answer, ping());
        let call = &host.calls()[0];
        assert_eq!(call.method(), "POST");
        assert_eq!(call.headers().get("content-type"), Some("application/grpc"));
        assert_eq!(call.headers().get("grpc-timeout"), Some("1500m"));
        assert_eq!(call.headers().get("x-tenant"), Some("t1"));
        let sent: Ping = testing::decode_request(call).unwrap();
        assert_eq!(sent, Ping::default());
        assert_eq!(call.body_bytes().unwrap()[..5], [0, 0, 0, 0, 0]);
    }

    #[test]
    fn statuses_map_to_typed_errors() {
        let host = MockHost::new().respond(
            "POST",
            URL,
            testing::status(Code::FailedPrecondition, "state is VOIDED; 100% sure"),
        );
        let err = host.run(|| unary(URL, &ping()).send::<Ping>().unwrap_err());
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert_eq!(err.message(), "state is VOIDED; 100% sure");
        assert_eq!(Error::from(err).status(), 502);

        let mut only = Response::new(200)
            .with_header("content-type", "application/grpc")
            .with_trailer("grpc-status", "5")
            .with_trailer("grpc-message", "no%20such%20thing");
        only.set_body(Vec::new());
        let host = MockHost::new().respond("POST", URL, only);
        let err = host.run(|| unary(URL, &ping()).send::<Ping>().unwrap_err());
        assert_eq!(
            err,
            GrpcError::Status {
                code: Code::NotFound,
                message: "no such thing".into()
            }
        );
    }

    #[test]
    fn failed_calls_map_to_codes_and_client_statuses() {
        let host = MockHost::new().fail("POST", URL, HttpError::Timeout);
        let err = host.run(|| unary(URL, &ping()).send::<Ping>().unwrap_err());
        assert_eq!(err.code(), Code::DeadlineExceeded);
        assert_eq!(Error::from(err).status(), 504);
        let host = MockHost::new().fail("POST", URL, HttpError::ConnectionFailed("refused".into()));
        let err = host.run(|| unary(URL, &ping()).send::<Ping>().unwrap_err());
        assert_eq!(err.code(), Code::Unavailable);
        assert_eq!(Error::from(err).status(), 502);
    }

    #[test]
    fn answers_that_are_not_grpc_are_errors_not_panics() {
        let cases: Vec<(Response, &str)> = vec![
            (
                Response::text(503, "busy"),
                "gRPC status UNAVAILABLE: HTTP status 503 without a gRPC status",
            ),
            (
                Response::text(404, "no"),
                "gRPC status UNIMPLEMENTED: HTTP status 404 without a gRPC status",
            ),
            (
                Response::json(200, &serde_json::json!({})),
                "invalid gRPC response: content type `application/json` is not gRPC",
            ),
            (
                Response::new(200)
                    .with_header("content-type", "application/grpc")
                    .with_body(encode(&ping())),
                "invalid gRPC response: the answer carries no grpc-status",
            ),
            (
                testing::response(&ping()).with_body(vec![0, 0, 0, 0, 9, 1]),
                "invalid gRPC response: the frame says 9 bytes but 1 follow",
            ),
            (
                testing::response(&ping()).with_body(vec![1, 0, 0, 0, 0]),
                "invalid gRPC response: the message is compressed",
            ),
            (
                testing::response(&ping()).with_body(vec![0, 0]),
                "invalid gRPC response: a frame of 2 bytes is shorter than its header",
            ),
            (
                testing::response(&ping()).with_body(Vec::new()),
                "invalid gRPC response: the answer carries no message",
            ),
            (
                testing::response(&ping()).with_body(vec![0, 0, 0, 0, 2, 0xff, 0xff]),
                "invalid gRPC response: the message does not decode",
            ),
        ];
        for (response, expected) in cases {
            let host = MockHost::new().respond("POST", URL, response);
            let got = host.run(|| unary(URL, &ping()).send::<Ping>());
            let e = got.unwrap_err();
            assert!(e.to_string().starts_with(expected), "{e} vs {expected}");
        }
        let bad_status = Response::new(200)
            .with_header("content-type", "application/grpc")
            .with_trailer("grpc-status", "abc");
        let host = MockHost::new().respond("POST", URL, bad_status);
        let err = host.run(|| unary(URL, &ping()).send::<Ping>().unwrap_err());
        assert_eq!(
            err.to_string(),
            "invalid gRPC response: grpc-status `abc` is not a number"
        );
    }

    #[test]
    fn reserved_metadata_is_refused_before_anything_is_sent() {
        let host = MockHost::new().respond("POST", URL, testing::response(&ping()));
        let err = host.run(|| {
            unary(URL, &ping())
                .metadata("grpc-status", "0")
                .send::<Ping>()
                .unwrap_err()
        });
        assert!(err.to_string().contains("reserved"), "{err}");
        assert!(host.calls().is_empty());
    }

    #[test]
    fn calls_started_together_overlap() {
        let host = MockHost::new()
            .respond("POST", URL, testing::response(&ping()))
            .delay("POST", URL, Duration::from_millis(100))
            .respond(
                "POST",
                "http://svc/demo.Svc/Other",
                testing::response(&ping()),
            )
            .delay(
                "POST",
                "http://svc/demo.Svc/Other",
                Duration::from_millis(100),
            );
        host.run(|| {
            let a = unary(URL, &ping()).start();
            let b = unary("http://svc/demo.Svc/Other", &ping()).start();
            a.wait::<Ping>().unwrap();
            b.wait::<Ping>().unwrap();
        });
        assert_eq!(host.elapsed(), Duration::from_millis(100));
    }

    #[test]
    fn codes_round_trip() {
        for n in 0..17 {
            assert_eq!(Code::from_i32(n).as_i32(), n);
        }
        assert_eq!(Code::from_i32(99), Code::Unknown);
        assert_eq!(Code::from_i32(-1), Code::Unknown);
        assert_eq!(Code::Unavailable.to_string(), "UNAVAILABLE");
        assert_eq!(percent_decode(b"a%2"), "a%2");
        assert_eq!(percent_decode(b"%E2%9C%93 ok"), "\u{2713} ok");
        assert_eq!(percent_decode(b"%zz"), "%zz");
    }
}
