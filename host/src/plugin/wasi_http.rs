//! Standard `wasi:http/proxy` components (0.2.x) as route handlers, with streaming bodies.
//!
//! The request is handed to the guest's `wasi:http/incoming-handler.handle` with its body still
//! streaming from the client (under `server.max_request_body_bytes` and the body read timeout);
//! the response goes to the client as soon as the guest sets it, and its body streams out as the
//! guest writes it. The guest call runs as a task that owns the instance, so the store lives until
//! `handle` returns, whatever the client does; the task is aborted (and the store dropped) when
//! the client goes away.
//!
//! The plugin's deadline covers the whole call, both bodies included; a trap, timeout or memory
//! cap before the response head is the usual error answer (500, 504), and after it cuts the
//! response short (the client sees an incomplete body, never a clean end), logged with the
//! plugin. The response head passes the boundary's header rule ([`crate::headers::from_plugin`]:
//! no framing or hop-by-hop fields, the host frames) and the entry's header caps; the status must
//! be final (200..=599). The guest's outgoing calls go through [`crate::outbound`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::engine::CallLimits;
use super::instance::{PluginInstance, arm_deadline, failure};
use crate::body::{Body, BoxError};
use crate::error::{GatewayError, PluginFailure};
use crate::headers::{self, Framing};
use crate::metrics::Phase;
use crate::telemetry::TraceSpan;

/// What the guest's `handle` call ended with.
type Outcome = Result<(), GatewayError>;

impl PluginInstance {
    /// Serves `request` with the component's `wasi:http/incoming-handler`, consuming the
    /// instance: it lives in a task until the guest's call returns. `span` is the call's span,
    /// ended when the call ends; `limits` are the entry's (its header caps apply to the head).
    pub async fn serve_wasi_http(
        mut self,
        request: Request<Body>,
        limits: &CallLimits,
        span: Option<TraceSpan>,
    ) -> Result<Response<Body>, GatewayError> {
        let indices = match &self.plugin.wasi_http {
            Some(indices) => indices,
            None => return Err(self.not_a("wasi:http handler")),
        };
        let guest = indices
            .load(&mut self.store, &self.instance)
            .map_err(|e| failure(&self.plugin, PluginFailure::Instantiate, e.into()))?;
        let (scheme, request) = incoming(request);
        let (head_tx, head_rx) = oneshot::channel();
        let responded = Arc::new(AtomicBool::new(false));
        let mut http = self.store.data_mut().http();
        let incoming = http
            .new_incoming_request(scheme, request)
            .map_err(|e| GatewayError::BadRequest(format!("cannot hand the request over: {e}")))?;
        let answered = Arc::clone(&responded);
        let outparam = http
            .new_response_outparam_from_callback(move |head| {
                answered.store(head.is_ok(), Ordering::Release);
                let _ = head_tx.send(head);
            })
            .map_err(|e| GatewayError::Internal(anyhow::Error::from(e)))?;

        let plugin = Arc::clone(&self.plugin);
        let request_id = Arc::clone(&self.store.data().call.request_id);
        let (done_tx, done_rx) = oneshot::channel::<Outcome>();
        let task = tokio::spawn(async move {
            arm_deadline(&mut self.store, self.timeout);
            let started = Instant::now();
            let call = guest.call_handle(&mut self.store, incoming, outparam);
            let result = tokio::time::timeout(self.timeout, call).await;
            let outcome = self.finish(result, Phase::Handle, started);
            super::end_span(span, outcome.as_ref().err());
            if let Err(e) = &outcome
                && responded.load(Ordering::Acquire)
            {
                tracing::warn!(
                    plugin = %self.plugin.label(),
                    request_id = %self.store.data().call.request_id,
                    error = crate::error::chain(e),
                    "plugin failed after its response began; the response was cut short"
                );
            }
            let _ = done_tx.send(outcome);
            // The instance (store, pool slot) goes here, after the outcome is known.
        });
        let task = AbortOnDrop(task);

        let head = match head_rx.await {
            Ok(Ok(head)) => head,
            Ok(Err(code)) => {
                plugin.count_error();
                return Err(GatewayError::Plugin {
                    plugin: plugin.label().to_string(),
                    kind: PluginFailure::InvalidOutput,
                    source: anyhow::anyhow!("answered with the wasi:http error {code:?}"),
                });
            }
            // The outparam was dropped unset: the call is over; its outcome says why.
            Err(_) => {
                return Err(match done_rx.await {
                    Ok(Err(e)) => e,
                    _ => {
                        plugin.count_error();
                        GatewayError::Plugin {
                            plugin: plugin.label().to_string(),
                            kind: PluginFailure::InvalidOutput,
                            source: anyhow::anyhow!("handle returned without setting a response"),
                        }
                    }
                });
            }
        };
        let (parts, guest_body) = head.into_parts();
        let checked = crate::records::status_from_plugin(parts.status.as_u16()).and_then(|s| {
            let list = crate::records::headers_to_plugin(&parts.headers);
            check_head(limits, &list)?;
            Ok((s, headers::from_plugin(&list, Framing::NewBody, None)?))
        });
        let (status, headers) = checked.map_err(|message| {
            plugin.count_error();
            tracing::debug!(plugin = %plugin.label(), %request_id, "wasi:http response head refused");
            GatewayError::Plugin {
                plugin: plugin.label().to_string(),
                kind: PluginFailure::InvalidOutput,
                source: anyhow::anyhow!(message),
            }
        })?;
        let body = StreamedBody {
            inner: guest_body,
            outcome: Some(done_rx),
            _task: task,
        };
        let mut response = Response::new(body.boxed_unsync());
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

/// The request as `wasi:http` takes it: its scheme, an authority (from the URI or `host`; a
/// request with neither gets `localhost`), and body errors in `wasi:http`'s terms.
fn incoming(
    request: Request<Body>,
) -> (
    Scheme,
    Request<http_body_util::combinators::UnsyncBoxBody<Bytes, wasmtime_wasi_http::Error>>,
) {
    let scheme = match request.uri().scheme_str() {
        Some("https") => Scheme::Https,
        _ => Scheme::Http,
    };
    let (mut parts, body) = request.into_parts();
    let has_host = parts
        .headers
        .get(http::header::HOST)
        .is_some_and(|h| h.to_str().is_ok());
    if parts.uri.authority().is_none() && !has_host {
        parts.headers.insert(
            http::header::HOST,
            http::HeaderValue::from_static("localhost"),
        );
    }
    let body = body
        .map_err(crate::outbound::body_error_to_wasi)
        .boxed_unsync();
    (scheme, Request::from_parts(parts, body))
}

/// The entry's caps on the response head: header count and bytes (the body streams, so it is
/// bounded by the deadline, not buffered).
fn check_head(limits: &CallLimits, list: &[crate::bindings::Header]) -> Result<(), String> {
    if list.len() > limits.max_output_headers {
        return Err(format!(
            "returned {} headers; at most {} are allowed",
            list.len(),
            limits.max_output_headers
        ));
    }
    let bytes: usize = list.iter().map(|h| h.name.len() + h.value.len()).sum();
    if bytes > limits.max_output_bytes {
        return Err(format!(
            "returned {bytes} bytes of headers; at most {} are allowed",
            limits.max_output_bytes
        ));
    }
    Ok(())
}

/// Aborts the guest's task when the response is dropped unfinished (the client went away).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The guest's response body on its way to the client. It ends cleanly only when the guest's
/// call succeeded: a store dropped by a trap or timeout closes the guest's stream as if it were
/// done, so the end waits for the call's outcome and turns a failure into a stream error.
struct StreamedBody {
    inner: HyperOutgoingBody,
    outcome: Option<oneshot::Receiver<Outcome>>,
    _task: AbortOnDrop,
}

/// A guest failure while its response streamed.
#[derive(Debug, thiserror::Error)]
#[error("the plugin failed while its response streamed")]
struct CutShort;

impl http_body::Body for StreamedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.outcome.is_some() {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let frame = match frame.into_trailers() {
                        Ok(mut trailers) => {
                            headers::strip_trailer_framing(&mut trailers);
                            Frame::trailers(trailers)
                        }
                        Err(frame) => frame,
                    };
                    return Poll::Ready(Some(Ok(frame)));
                }
                Poll::Ready(Some(Err(e))) => {
                    this.outcome = None;
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
                Poll::Ready(None) => {}
                Poll::Pending => return Poll::Pending,
            }
        }
        let Some(outcome) = this.outcome.as_mut() else {
            return Poll::Ready(None);
        };
        let ended = match Pin::new(outcome).poll(cx) {
            Poll::Ready(ended) => ended,
            Poll::Pending => return Poll::Pending,
        };
        this.outcome = None;
        match ended {
            Ok(Ok(())) => Poll::Ready(None),
            _ => Poll::Ready(Some(Err(Box::new(CutShort)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.outcome.is_none()
    }
}

impl std::fmt::Debug for StreamedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamedBody").finish_non_exhaustive()
    }
}
