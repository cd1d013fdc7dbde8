//! Plugins' outgoing HTTP calls: who may be called, how many calls, and running them.
//!
//! A call names an upstream (`http://users/...`) the route granted, or a host the route lists in
//! `allow_hosts` (matched exactly, `host` or `host:port`). For an upstream the scheme the plugin
//! writes (`http` or `https`) does not matter: the upstream's config decides the transport. For
//! an allowed host it does: `https://` is verified against `plugins.ca_file` (else the system's
//! roots), and a grant without a port means the scheme's default port (80 for `http`, 443 for
//! `https`), so `https://x` never matches a grant of `x:80`. Everything is checked before any
//! connection is made: the URL (no userinfo, http or https), the grant, the method and headers (under
//! the boundary's header rule, [`crate::headers`], and within `server.max_header_bytes`), and the
//! per-request caps on total calls and calls in flight. Responses are buffered for the plugin up to
//! `server.max_body_bytes`; redirects are returned, never followed.
//!
//! Calls started with `start` run as tokio tasks owned by the plugin's store: when the request
//! ends (answered, client gone, plugin trapped) the store is dropped and the tasks are aborted,
//! which drops their upstream connections. Their response trailers are kept for the plugin
//! (`pending-response.trailers`) after the header rule: no framing or hop-by-hop fields, within
//! `server.max_header_bytes`.
//!
//! A call to a `protocol = "grpc"` upstream carries a `grpc-timeout` no longer than the call's
//! own timeout, so the server gives up when the gateway does.
//!
//! Standard `wasi:http` components call out through `wasi:http/outgoing-handler`; their calls
//! pass the same checks ([`Outbound::admit`]) and run on the same clients, with both bodies
//! streaming (`wasi_http`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Uri};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::bindings::{self, HttpError, OutgoingRequest};
use crate::body;
use crate::config::UpstreamProtocol;
use crate::error::GatewayError;
use crate::headers::{self, Framing};
use crate::ids::{self, REQUEST_ID, TRACEPARENT};
use crate::metrics::Metrics;
use crate::telemetry::TraceSpan;
use crate::upstream::{self, Upstream, Upstreams};
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;

mod wasi_http;
pub(crate) use wasi_http::body_error_to_wasi;

/// Per-request caps on a plugin's calls.
#[derive(Debug, Clone, Copy)]
pub struct OutboundLimits {
    /// Calls a plugin instance may make in total.
    pub max_calls: u32,
    /// Calls running at once.
    pub max_in_flight: u32,
}

/// A `pending-response` resource: a call the host launched.
#[derive(Debug)]
pub enum PendingCall {
    /// Running as a task; aborted if dropped unfinished.
    Running(AbortOnDrop),
    /// Refused before it started.
    Failed(HttpError),
    /// Waited for; the response's trailers stay for the plugin to read.
    Answered(Vec<bindings::Header>),
    /// Waited for, with an error.
    Taken,
}

/// A response with the trailers that followed its body.
#[derive(Debug)]
pub struct Answer {
    /// Status, headers and body.
    pub response: bindings::Response,
    /// Trailer fields, after the header rule.
    pub trailers: Vec<bindings::Header>,
}

/// A task handle that aborts the task when dropped.
#[derive(Debug)]
pub struct AbortOnDrop(JoinHandle<Result<Answer, HttpError>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A checked call, ready to run.
struct Prepared {
    destination: Destination,
    request: Request<body::Body>,
    timeout: Duration,
    /// The call's `tessera.outbound` span, when traces are on.
    span: Option<TraceSpan>,
}

/// A call that passed every check ([`Outbound::admit`]): where it goes, the request head to send
/// (path and query only; the destination supplies the rest), and how long to wait for the answer.
pub(crate) struct Admitted {
    pub(crate) destination: Destination,
    pub(crate) head: http::request::Parts,
    /// The destination's response timeout, lowered by the plugin's.
    pub(crate) timeout: Duration,
    /// The call's `tessera.outbound` span, when traces are on.
    pub(crate) span: Option<TraceSpan>,
}

impl Admitted {
    fn with_body(self, body: body::Body) -> Prepared {
        Prepared {
            destination: self.destination,
            request: Request::from_parts(self.head, body),
            timeout: self.timeout,
            span: self.span,
        }
    }
}

/// Where an admitted call goes.
pub(crate) enum Destination {
    Upstream(Arc<Upstream>),
    Direct(http::uri::Scheme, http::uri::Authority),
}

impl Destination {
    /// The upstream's name, or the allowed host's authority (what metrics call it).
    pub(crate) fn label(&self) -> &str {
        match self {
            Destination::Upstream(u) => u.name(),
            Destination::Direct(_, a) => a.as_str(),
        }
    }
}

/// What one plugin instance's outbound calls may do on this request: its grants and caps, and
/// the ids every call carries.
#[derive(Debug, Clone)]
pub struct OutboundContext {
    /// The calling plugin's name (for metrics).
    pub plugin: Arc<str>,
    /// Where calls are counted.
    pub metrics: Arc<Metrics>,
    /// The request id, sent as `x-request-id`.
    pub request_id: Arc<str>,
    /// The request's W3C trace context; calls carry a child of it.
    pub traceparent: Arc<ids::TraceContext>,
    /// Upstreams this plugin may call on this route.
    pub granted: Arc<[String]>,
    /// Hosts (not upstreams) this plugin may call directly on this route.
    pub allow_hosts: Arc<[String]>,
    /// The gateway's upstreams.
    pub upstreams: Arc<Upstreams>,
    /// Caps on calls.
    pub limits: OutboundLimits,
    /// Largest response body a call may hand the plugin.
    pub max_body_bytes: usize,
    /// Largest header block a call may carry (`server.max_header_bytes`).
    pub max_header_bytes: usize,
}

/// One plugin instance's outbound state.
#[derive(Debug)]
pub struct Outbound {
    call: Arc<OutboundContext>,
    calls: u32,
    in_flight: Arc<Semaphore>,
    /// The span of the plugin call now running (traces on): calls made are its children.
    pub parent: Option<TraceSpan>,
}

impl Outbound {
    /// Fresh state for a plugin instance.
    pub fn new(call: Arc<OutboundContext>) -> Self {
        let permits = call.limits.max_in_flight.max(1) as usize;
        Self {
            call,
            calls: 0,
            in_flight: Arc::new(Semaphore::new(permits)),
            parent: None,
        }
    }

    /// Counts one host call that is not an HTTP call (a key-value operation) against
    /// `max_calls`; the message says which cap refused it.
    pub fn count_call(&mut self) -> Result<(), String> {
        if self.calls >= self.call.limits.max_calls {
            return Err(format!(
                "call limit: more than {} calls for one request",
                self.call.limits.max_calls
            ));
        }
        self.calls += 1;
        Ok(())
    }

    /// Sends one call and waits for it.
    pub async fn send(
        &mut self,
        request: OutgoingRequest,
    ) -> Result<bindings::Response, HttpError> {
        let prepared = self.prepare(request)?;
        let permit = acquire(&self.in_flight).await?;
        execute(&self.call, prepared, permit)
            .await
            .map(|a| a.response)
    }

    /// Launches one call as a task.
    pub fn start(&mut self, request: OutgoingRequest) -> PendingCall {
        let prepared = match self.prepare(request) {
            Ok(p) => p,
            Err(e) => return PendingCall::Failed(e),
        };
        let Ok(permit) = Arc::clone(&self.in_flight).try_acquire_owned() else {
            return PendingCall::Failed(HttpError::LimitExceeded(format!(
                "more than {} calls in flight",
                self.call.limits.max_in_flight
            )));
        };
        let call = Arc::clone(&self.call);
        PendingCall::Running(AbortOnDrop(tokio::spawn(async move {
            execute(&call, prepared, permit).await
        })))
    }

    /// Runs all calls concurrently (at most `max_in_flight` at a time); results keep the order.
    pub async fn send_all(
        &mut self,
        requests: Vec<OutgoingRequest>,
    ) -> Vec<Result<bindings::Response, HttpError>> {
        let prepared: Vec<Result<Prepared, HttpError>> =
            requests.into_iter().map(|r| self.prepare(r)).collect();
        let runs = prepared.into_iter().map(|p| {
            let call = Arc::clone(&self.call);
            let in_flight = Arc::clone(&self.in_flight);
            async move {
                let prepared = p?;
                let permit = acquire(&in_flight).await?;
                execute(&call, prepared, permit).await.map(|a| a.response)
            }
        });
        futures::future::join_all(runs).await
    }

    /// Checks a call made through `http-client` and attaches its (buffered) body.
    fn prepare(&mut self, request: OutgoingRequest) -> Result<Prepared, HttpError> {
        let asked = request
            .timeout_ms
            .map(|ms| Duration::from_millis(u64::from(ms)));
        let admitted = self.admit(&request.method, &request.url, &request.headers, asked)?;
        let body = request.body.map(Bytes::from).unwrap_or_default();
        Ok(admitted.with_body(body::full(body)))
    }

    /// The checks every outbound call passes, whichever interface the plugin used
    /// (`tessera:gateway/http-client` or `wasi:http/outgoing-handler`): the call cap, the URL
    /// rules and grants, the method, the header rule and size cap; then the ids every call
    /// carries (`x-request-id`, `traceparent`, and `grpc-timeout` for gRPC upstreams) and the
    /// call's span. `asked` is the plugin's own timeout, which can only lower the destination's.
    /// A refused call is counted with upstream `-`: what it asked for is the plugin's to choose,
    /// and must not become a label.
    pub(crate) fn admit(
        &mut self,
        method: &str,
        url: &str,
        headers: &[bindings::Header],
        asked: Option<Duration>,
    ) -> Result<Admitted, HttpError> {
        let admitted = self.check(method, url, headers, asked);
        if let Err(e) = &admitted {
            self.call
                .metrics
                .outbound_call(&self.call.plugin, "-", outcome(Err(e)));
        }
        admitted
    }

    fn check(
        &mut self,
        method: &str,
        url: &str,
        plugin_headers: &[bindings::Header],
        asked: Option<Duration>,
    ) -> Result<Admitted, HttpError> {
        if self.calls >= self.call.limits.max_calls {
            return Err(HttpError::LimitExceeded(format!(
                "more than {} calls for one request",
                self.call.limits.max_calls
            )));
        }
        self.calls += 1;
        let (destination, path_and_query, default_timeout) = self.destination(url)?;
        let timeout = asked.map_or(default_timeout, |a| a.min(default_timeout));
        let method = http::Method::from_bytes(method.as_bytes())
            .map_err(|_| HttpError::InvalidRequest(format!("`{method}` is not an HTTP method")))?;
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(path_and_query);
        let headers = builder
            .headers_mut()
            .ok_or_else(|| HttpError::InvalidRequest("malformed request".into()))?;
        // The body is the plugin's and the host frames it; `host` comes from the destination.
        *headers = headers::from_plugin(plugin_headers, Framing::NewBody, None)
            .map_err(HttpError::InvalidRequest)?;
        let size = headers::block_size(headers);
        if size > self.call.max_header_bytes {
            return Err(HttpError::InvalidRequest(format!(
                "the request's headers take {size} bytes; at most {} are allowed",
                self.call.max_header_bytes
            )));
        }
        if let Ok(v) = HeaderValue::from_str(&self.call.request_id) {
            headers.insert(REQUEST_ID, v);
        }
        if let Destination::Upstream(u) = &destination
            && u.protocol() == UpstreamProtocol::Grpc
        {
            let asked = headers.get(GRPC_TIMEOUT).and_then(parse_grpc_timeout);
            let deadline = asked.map_or(timeout, |a| a.min(timeout));
            headers.insert(GRPC_TIMEOUT, grpc_timeout_value(deadline));
        }
        let span = self.parent.as_ref().map(|parent| {
            let (address, port) = match &destination {
                Destination::Upstream(u) => (u.name().to_owned(), None),
                Destination::Direct(_, a) => (a.host().to_owned(), a.port_u16()),
            };
            let mut attributes = vec![
                KeyValue::new("http.request.method", crate::metrics::method_label(&method)),
                KeyValue::new("url.full", url.to_owned()),
                KeyValue::new("server.address", address),
            ];
            if let Some(port) = port {
                attributes.push(KeyValue::new("server.port", i64::from(port)));
            }
            parent.child("tessera.outbound", SpanKind::Client, attributes)
        });
        let traceparent = match &span {
            Some(span) => span.traceparent(),
            None => ids::child_traceparent(self.call.traceparent.traceparent()),
        };
        if let Ok(v) = HeaderValue::from_str(&traceparent) {
            headers.insert(TRACEPARENT, v);
        }
        let (head, ()) = builder
            .body(())
            .map_err(|e| HttpError::InvalidRequest(e.to_string()))?
            .into_parts();
        Ok(Admitted {
            destination,
            head,
            timeout,
            span,
        })
    }

    /// Resolves a URL to a granted upstream or an allowed host.
    fn destination(&self, url: &str) -> Result<(Destination, String, Duration), HttpError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| HttpError::InvalidRequest(format!("`{url}` is not a valid URL")))?;
        let default_port = match uri.scheme_str() {
            Some("http") => 80,
            Some("https") => 443,
            Some(other) => {
                return Err(HttpError::InvalidRequest(format!(
                    "`{url}`: scheme `{other}` is not supported; use http://<upstream>/<path>"
                )));
            }
            None => {
                return Err(HttpError::InvalidRequest(format!(
                    "`{url}` is not absolute; use http://<upstream>/<path>"
                )));
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| HttpError::InvalidRequest(format!("`{url}` has no host")))?;
        // `http://user@host` could make a reader believe the call goes to `user`; refuse it.
        if authority.as_str().contains('@') {
            return Err(HttpError::Denied(format!(
                "`{url}`: URLs with userinfo are not allowed"
            )));
        }
        let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let host = authority.host();
        if authority.port().is_none() && self.call.granted.iter().any(|g| g == host) {
            let upstream =
                self.call.upstreams.get(host).ok_or_else(|| {
                    HttpError::Denied(format!("upstream `{host}` does not exist"))
                })?;
            let timeout = upstream.response_timeout();
            return Ok((
                Destination::Upstream(Arc::clone(upstream)),
                path_and_query,
                timeout,
            ));
        }
        let wanted = authority.as_str().to_ascii_lowercase();
        let with_default_port = if authority.port().is_none() {
            format!("{wanted}:{default_port}")
        } else {
            wanted.clone()
        };
        // A grant without a port means the default port of the scheme the call uses.
        let at_default_port = authority.port_u16().unwrap_or(default_port) == default_port;
        let allowed = self.call.allow_hosts.iter().any(|a| {
            let a = a.to_ascii_lowercase();
            a == with_default_port || (at_default_port && a == host.to_ascii_lowercase())
        });
        if allowed {
            let target: http::uri::Authority = with_default_port
                .parse()
                .map_err(|_| HttpError::InvalidRequest(format!("`{url}` has an invalid host")))?;
            let scheme = uri.scheme().cloned().unwrap_or(http::uri::Scheme::HTTP);
            return Ok((
                Destination::Direct(scheme, target),
                path_and_query,
                upstream::DIRECT_RESPONSE_TIMEOUT,
            ));
        }
        Err(HttpError::Denied(format!(
            "`{}` is neither an upstream granted to this plugin on this route nor an allowed host",
            authority.as_str()
        )))
    }
}

pub(crate) async fn acquire(semaphore: &Arc<Semaphore>) -> Result<OwnedSemaphorePermit, HttpError> {
    Arc::clone(semaphore)
        .acquire_owned()
        .await
        .map_err(|_| HttpError::LimitExceeded("call slots closed".into()))
}

/// Runs a checked call and buffers its response for the plugin.
async fn execute(
    call: &OutboundContext,
    prepared: Prepared,
    _permit: OwnedSemaphorePermit,
) -> Result<Answer, HttpError> {
    let Prepared {
        destination,
        request,
        timeout,
        span,
    } = prepared;
    let result = exchange(call, &destination, request, timeout).await;
    let outcome = outcome(result.as_ref().map(|_| ()));
    call.metrics
        .outbound_call(&call.plugin, destination.label(), outcome);
    if let Some(span) = span {
        match &result {
            Ok(a) => span.set(KeyValue::new(
                "http.response.status_code",
                i64::from(a.response.status),
            )),
            Err(_) => span.fail(outcome),
        }
        span.end();
    }
    result
}

/// A call's result as a metrics label.
pub(crate) fn outcome(result: Result<(), &HttpError>) -> &'static str {
    match result {
        Ok(()) => "ok",
        Err(HttpError::Denied(_)) => "denied",
        Err(HttpError::Timeout) => "timeout",
        Err(HttpError::ConnectionFailed(_)) => "connection_failed",
        Err(HttpError::LimitExceeded(_)) => "limit_exceeded",
        Err(HttpError::InvalidRequest(_)) => "invalid_request",
        Err(HttpError::BodyTooLarge) => "body_too_large",
    }
}

/// Sends a checked call and reads its response within the call's timeout.
async fn exchange(
    call: &OutboundContext,
    destination: &Destination,
    request: Request<body::Body>,
    timeout: Duration,
) -> Result<Answer, HttpError> {
    let started = tokio::time::Instant::now();
    let response = open(call, destination, request, timeout).await?;
    let (parts, body) = response.into_parts();
    // The timeout covers the whole exchange, body included.
    let remaining = timeout.saturating_sub(started.elapsed());
    let collected = body::collect_with_trailers(body, call.max_body_bytes);
    let (body, trailers) = match tokio::time::timeout(remaining, collected).await {
        Err(_) => return Err(HttpError::Timeout),
        Ok(Err(body::CollectError::TooLarge)) => return Err(HttpError::BodyTooLarge),
        Ok(Err(body::CollectError::Stream(e))) => {
            return Err(HttpError::ConnectionFailed(e.to_string()));
        }
        Ok(Ok(collected)) => collected,
    };
    let trailers = match trailers {
        Some(t) => crate::records::headers_to_plugin(&checked_trailers(call, t)?),
        None => Vec::new(),
    };
    Ok(Answer {
        response: bindings::Response {
            status: parts.status.as_u16(),
            headers: crate::records::headers_to_plugin(&parts.headers),
            body: Some(body.to_vec()),
        },
        trailers,
    })
}

/// Sends an admitted call to its destination and waits for the response head within
/// `timeout`; the body streams. Hop-by-hop headers of the response are gone.
pub(crate) async fn open(
    call: &OutboundContext,
    destination: &Destination,
    request: Request<body::Body>,
    timeout: Duration,
) -> Result<http::Response<body::Body>, HttpError> {
    let sent = match destination {
        Destination::Upstream(u) => u.send(request, timeout).await,
        Destination::Direct(scheme, authority) => {
            upstream::send_to(
                call.upstreams.direct(),
                authority.as_str(),
                scheme.clone(),
                authority.clone(),
                request,
                timeout,
                false,
            )
            .await
        }
    };
    let mut response = match sent {
        Ok(r) => r,
        Err(GatewayError::UpstreamTimeout { .. }) => return Err(HttpError::Timeout),
        Err(e) => return Err(HttpError::ConnectionFailed(e.to_string())),
    };
    headers::strip_hop_by_hop(response.headers_mut());
    Ok(response)
}

/// A response's trailers under the header rule: no framing or hop-by-hop fields, within
/// `server.max_header_bytes`.
pub(crate) fn checked_trailers(
    call: &OutboundContext,
    mut trailers: http::HeaderMap,
) -> Result<http::HeaderMap, HttpError> {
    headers::strip_trailer_framing(&mut trailers);
    let size = headers::block_size(&trailers);
    if size > call.max_header_bytes {
        return Err(HttpError::ConnectionFailed(format!(
            "the response's trailers take {size} bytes; at most {} are allowed",
            call.max_header_bytes
        )));
    }
    Ok(trailers)
}

/// `grpc-timeout`.
const GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");

/// Reads a `grpc-timeout` value: up to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
fn parse_grpc_timeout(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A `grpc-timeout` value for `deadline`, in whole milliseconds (at least 1).
fn grpc_timeout_value(deadline: Duration) -> HeaderValue {
    let ms = deadline.as_millis().clamp(1, 99_999_999);
    HeaderValue::from_str(&format!("{ms}m")).unwrap_or(HeaderValue::from_static("1m"))
}

/// Waits for a pending call; its trailers stay in `pending` ([`trailers`]).
pub async fn wait(pending: &mut PendingCall) -> Result<bindings::Response, HttpError> {
    let result = match std::mem::replace(pending, PendingCall::Taken) {
        PendingCall::Running(mut task) => match (&mut task.0).await {
            Ok(result) => result,
            Err(e) => Err(HttpError::ConnectionFailed(format!(
                "call task failed: {e}"
            ))),
        },
        PendingCall::Failed(e) => Err(e),
        PendingCall::Answered(_) | PendingCall::Taken => Err(HttpError::InvalidRequest(
            "this call was already waited for".into(),
        )),
    };
    result.map(|answer| {
        *pending = PendingCall::Answered(answer.trailers);
        answer.response
    })
}

/// The trailers of a call whose response was waited for; empty otherwise.
pub fn trailers(pending: &PendingCall) -> Vec<bindings::Header> {
    match pending {
        PendingCall::Answered(trailers) => trailers.clone(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbound(allow: &[&str]) -> Outbound {
        outbound_with(allow, 8, 4)
    }

    /// Outbound state of a plugin granted no upstreams, allowed `allow`, with these caps.
    pub(super) fn outbound_with(allow: &[&str], max_calls: u32, max_in_flight: u32) -> Outbound {
        Outbound::new(Arc::new(OutboundContext {
            plugin: "test".into(),
            metrics: Default::default(),
            request_id: "rid-1".into(),
            traceparent: Default::default(),
            granted: Vec::new().into(),
            allow_hosts: allow.iter().map(|h| h.to_string()).collect(),
            upstreams: Arc::new(Upstreams::default()),
            limits: OutboundLimits {
                max_calls,
                max_in_flight,
            },
            max_body_bytes: 1024,
            max_header_bytes: 1024,
        }))
    }

    /// Where a URL goes (`scheme://authority`), or why not.
    fn target(o: &Outbound, url: &str) -> Result<String, String> {
        match o.destination(url) {
            Ok((Destination::Direct(scheme, authority), _, _)) => {
                Ok(format!("{scheme}://{authority}"))
            }
            Ok((Destination::Upstream(u), _, _)) => Ok(format!("upstream {}", u.name())),
            Err(e) => Err(format!("{e:?}")),
        }
    }

    #[test]
    fn grpc_timeouts_read_every_unit_and_refuse_the_rest() {
        let read = |s: &str| parse_grpc_timeout(&HeaderValue::from_str(s).unwrap());
        assert_eq!(read("2S"), Some(Duration::from_secs(2)));
        assert_eq!(read("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(read("3M"), Some(Duration::from_secs(180)));
        assert_eq!(read("250m"), Some(Duration::from_millis(250)));
        assert_eq!(read("7u"), Some(Duration::from_micros(7)));
        assert_eq!(read("9n"), Some(Duration::from_nanos(9)));
        for bad in ["", "m", "10", "123456789m", "-1m", "1.5S", "10x", "１m"] {
            assert_eq!(read(bad), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout_value(Duration::from_millis(1500)), "1500m");
        assert_eq!(grpc_timeout_value(Duration::ZERO), "1m");
        assert_eq!(
            grpc_timeout_value(Duration::from_secs(10_000_000)),
            "99999999m"
        );
    }

    #[test]
    fn a_grant_without_a_port_means_the_schemes_default_port() {
        let o = outbound(&["a.test", "b.test:80", "c.test:8443"]);
        assert_eq!(
            target(&o, "https://a.test/x").unwrap(),
            "https://a.test:443"
        );
        assert_eq!(
            target(&o, "https://a.test:443/x").unwrap(),
            "https://a.test:443"
        );
        assert_eq!(target(&o, "http://a.test/x").unwrap(), "http://a.test:80");
        assert!(target(&o, "https://a.test:80/x").is_err());
        assert!(target(&o, "http://a.test:443/x").is_err());
        // `b.test:80` is a grant of port 80: an https call (port 443) is not covered.
        assert!(target(&o, "https://b.test/x").is_err());
        assert_eq!(target(&o, "http://b.test/x").unwrap(), "http://b.test:80");
        assert_eq!(
            target(&o, "https://c.test:8443/x").unwrap(),
            "https://c.test:8443"
        );
        assert!(target(&o, "https://c.test/x").is_err());
        assert!(target(&o, "ftp://a.test/x").is_err());
    }
}
