//! Outgoing calls of standard `wasi:http` components: `wasi:http/outgoing-handler` ends in
//! [`WasiHttpHooks::send_request`], implemented here on [`Outbound`], so those calls pass the same
//! checks as `tessera:gateway/http-client` ([`Outbound::admit`]) and run on the same pooled
//! clients. The difference is that both bodies stream: the guest writes the request body while it
//! is sent, and reads the response body as it arrives.
//!
//! Timeouts: the destination's response timeout bounds the wait for the response head, and its
//! read timeout (for allowed hosts, the direct response timeout) bounds each pause in the body.
//! A guest's `request-options` can only lower them: `first-byte-timeout` the head,
//! `between-bytes-timeout` the pauses. `connect-timeout` is the pooled client's (connections are
//! shared across requests and may already be open), so a guest's value is not applied.
//!
//! A call holds one of the instance's `max_in_flight` slots from the moment it starts until its
//! response body is read to the end or dropped; a call past the cap waits for a slot. Its span
//! ends at the same moment. Refusals reach the guest as `wasi:http` error codes:
//! `HTTP-request-denied` (not granted), `connection-limit-reached` (`max_calls`),
//! `internal-error` with the reason (a URL, method or header the rule refuses),
//! `HTTP-response-timeout`, `connection-refused`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderName, Request};
use http_body::Frame;
use http_body_util::BodyExt;
use opentelemetry::KeyValue;
use tokio::sync::OwnedSemaphorePermit;
use wasmtime_wasi_http::{
    DEFAULT_FORBIDDEN_HEADERS, Error as WasiError, ForbiddenHeaderFilter, RequestOptions, WasiBody,
    WasiHttpHooks,
};

use super::{Destination, HttpError, Outbound, OutboundContext};
use crate::body::{self, BodyIdleTimeout, BodyLimitExceeded};
use crate::headers::HOP_BY_HOP;
use crate::telemetry::TraceSpan;
use crate::upstream;

/// What `send_request` hands back to wasmtime-wasi-http.
type SendResult = wasmtime_wasi_http::Result<(
    http::Response<WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

impl WasiHttpHooks for Outbound {
    /// A guest may not set hop-by-hop fields or `host` at all (the rule at the boundary would
    /// drop them anyway; refusing them tells the guest at the call site), nor what wasi:http
    /// forbids by default (`http2-settings`).
    fn forbidden_header_filter(&mut self) -> ForbiddenHeaderFilter {
        Arc::new(|name: &HeaderName| {
            HOP_BY_HOP.contains(name) || DEFAULT_FORBIDDEN_HEADERS.contains(name)
        })
    }

    /// The destination supplies `host`.
    fn set_host_header(&mut self) -> bool {
        false
    }

    fn send_request(
        &mut self,
        request: Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_done: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let (parts, guest_body) = request.into_parts();
        let url = parts.uri.to_string();
        let headers = crate::records::headers_to_plugin(&parts.headers);
        let options = options.unwrap_or_default();
        let admitted = self.admit(
            parts.method.as_str(),
            &url,
            &headers,
            options.first_byte_timeout,
        );
        let call = Arc::clone(&self.call);
        let in_flight = Arc::clone(&self.in_flight);
        Box::new(async move {
            let admitted = admitted.map_err(|e| {
                tracing::debug!(target: "tessera::plugin", plugin = %call.plugin, request_id = %call.request_id, error = ?e, "wasi:http call refused");
                to_wasi(e)
            })?;
            let permit = super::acquire(&in_flight).await.map_err(to_wasi)?;
            let pause = match &admitted.destination {
                Destination::Upstream(u) => u.read_timeout(),
                Destination::Direct(..) => upstream::DIRECT_RESPONSE_TIMEOUT,
            };
            let pause = options
                .between_bytes_timeout
                .map_or(pause, |asked| asked.min(pause));
            let request = Request::from_parts(admitted.head, body::boxed(guest_body));
            let label = admitted.destination.label().to_owned();
            let result = super::open(&call, &admitted.destination, request, admitted.timeout).await;
            let outcome = super::outcome(result.as_ref().map(|_| ()));
            call.metrics.outbound_call(&call.plugin, &label, outcome);
            let response = match result {
                Ok(r) => r,
                Err(e) => {
                    if let Some(span) = admitted.span {
                        span.fail(outcome);
                        span.end();
                    }
                    return Err(to_wasi(e));
                }
            };
            if let Some(span) = &admitted.span {
                span.set(KeyValue::new(
                    "http.response.status_code",
                    i64::from(response.status().as_u16()),
                ));
            }
            let response = response.map(|b| {
                ResponseBody {
                    inner: body::boxed(body::IdleTimeoutBody::new(b, pause)),
                    call,
                    permit: Some(permit),
                    span: admitted.span,
                }
                .boxed_unsync()
            });
            let done: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send> =
                Box::new(async { Ok(()) });
            Ok((response, done))
        })
    }
}

/// The error code a refused or failed call gives the guest.
fn to_wasi(e: HttpError) -> WasiError {
    match e {
        HttpError::Denied(_) => WasiError::HttpRequestDenied,
        HttpError::LimitExceeded(_) => WasiError::ConnectionLimitReached,
        HttpError::InvalidRequest(m) => WasiError::InternalError(Some(m)),
        HttpError::Timeout => WasiError::HttpResponseTimeout,
        HttpError::ConnectionFailed(_) => WasiError::ConnectionRefused,
        HttpError::BodyTooLarge => WasiError::HttpResponseBodySize(None),
    }
}

/// A body error as a `wasi:http` error: a client body over `server.max_request_body_bytes`, a
/// pause past a read timeout, or a broken stream.
pub(crate) fn body_error_to_wasi(e: body::BoxError) -> WasiError {
    if let Some(limit) = e.downcast_ref::<BodyLimitExceeded>() {
        WasiError::HttpRequestBodySize(Some(limit.0))
    } else if e.is::<BodyIdleTimeout>() {
        WasiError::ConnectionReadTimeout
    } else {
        match e.downcast::<WasiError>() {
            Ok(e) => *e,
            Err(e) => WasiError::InternalError(Some(e.to_string())),
        }
    }
}

/// A call's response body as the guest reads it: holds the call's in-flight slot and span until
/// it ends or is dropped, and keeps the trailers under the header rule.
struct ResponseBody {
    inner: body::Body,
    call: Arc<OutboundContext>,
    permit: Option<OwnedSemaphorePermit>,
    span: Option<TraceSpan>,
}

impl ResponseBody {
    /// The call is over: its slot is free for the next one and its span ends.
    fn done(&mut self) {
        self.permit = None;
        if let Some(span) = self.span.take() {
            span.end();
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.done();
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = WasiError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, WasiError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let frame = match frame.into_trailers() {
                    Ok(trailers) => match super::checked_trailers(&this.call, trailers) {
                        Ok(t) => Frame::trailers(t),
                        Err(_) => {
                            return Poll::Ready(Some(Err(
                                WasiError::HttpResponseTrailerSectionSize(None),
                            )));
                        }
                    },
                    Err(frame) => frame,
                };
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.done();
                Poll::Ready(Some(Err(body_error_to_wasi(e))))
            }
            Poll::Ready(None) => {
                this.done();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn outbound(allow: &[&str], max_calls: u32) -> Outbound {
        crate::outbound::tests::outbound_with(allow, max_calls, 1)
    }

    fn get(url: &str) -> Request<WasiBody> {
        let body = http_body_util::Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        Request::get(url).body(body).unwrap()
    }

    async fn send(o: &mut Outbound, url: &str) -> Result<u16, String> {
        let future = o.send_request(get(url), None, Box::new(async { Ok(()) }));
        match Pin::from(future).await {
            Ok((response, _)) => Ok(response.status().as_u16()),
            Err(e) => Err(format!("{e:?}")),
        }
    }

    #[tokio::test]
    async fn a_host_neither_granted_nor_allowed_is_denied_before_any_connection() {
        let mut o = outbound(&[], 8);
        assert_eq!(
            send(&mut o, "http://elsewhere.test/x").await,
            Err("HttpRequestDenied".into())
        );
        assert_eq!(
            send(&mut o, "http://user@elsewhere.test/x").await,
            Err("HttpRequestDenied".into())
        );
    }

    #[tokio::test]
    async fn the_call_cap_holds_for_wasi_http_calls_too() {
        let mut o = outbound(&[], 2);
        for _ in 0..2 {
            assert_eq!(
                send(&mut o, "http://denied.test/").await,
                Err("HttpRequestDenied".into())
            );
        }
        assert_eq!(
            send(&mut o, "http://denied.test/").await,
            Err("ConnectionLimitReached".into())
        );
    }

    #[test]
    fn guests_may_not_set_hop_by_hop_fields_or_host() {
        let mut o = outbound(&[], 1);
        let forbidden = o.forbidden_header_filter();
        for name in [
            "host",
            "connection",
            "transfer-encoding",
            "te",
            "upgrade",
            "http2-settings",
        ] {
            assert!(forbidden(&HeaderName::from_static(name)), "{name}");
        }
        assert!(!forbidden(&HeaderName::from_static("content-type")));
        assert!(!forbidden(&HeaderName::from_static("content-length")));
    }

    #[test]
    fn body_errors_keep_their_meaning_for_the_guest() {
        let too_large: body::BoxError = Box::new(BodyLimitExceeded(10));
        assert!(matches!(
            body_error_to_wasi(too_large),
            WasiError::HttpRequestBodySize(Some(10))
        ));
        let idle: body::BoxError = Box::new(BodyIdleTimeout(Duration::from_secs(1)));
        assert!(matches!(
            body_error_to_wasi(idle),
            WasiError::ConnectionReadTimeout
        ));
    }
}
