//! The body type every response carries, and bounded buffering for plugins.

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty, Full, combinators::UnsyncBoxBody};

/// Errors a body stream can produce.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streaming body: a proxied upstream stream or bytes a plugin produced.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Any body whose errors convert, boxed.
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// Why a body could not be buffered.
#[derive(Debug)]
pub enum CollectError {
    /// Longer than the limit.
    TooLarge,
    /// The stream failed (client or upstream went away).
    Stream(BoxError),
}

/// Reads a whole body, refusing more than `limit` bytes; trailers are dropped.
pub async fn collect(body: Body, limit: usize) -> Result<Bytes, CollectError> {
    collect_with_trailers(body, limit)
        .await
        .map(|(data, _)| data)
}

/// Reads a whole body, refusing more than `limit` bytes, and the trailers that followed it.
pub async fn collect_with_trailers(
    mut body: Body,
    limit: usize,
) -> Result<(Bytes, Option<http::HeaderMap>), CollectError> {
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    let mut trailers: Option<http::HeaderMap> = None;
    while let Some(frame) = body.frame().await {
        let data = match frame.map_err(CollectError::Stream)?.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers.get_or_insert_with(http::HeaderMap::new).extend(t);
                }
                continue;
            }
        };
        let so_far = first.as_ref().map_or(0, Bytes::len) + rest.len();
        if so_far + data.len() > limit {
            return Err(CollectError::TooLarge);
        }
        // The common single-chunk body is handed on without a copy.
        match first.take() {
            None if rest.is_empty() => first = Some(data),
            None => rest.extend_from_slice(&data),
            Some(f) => {
                rest.extend_from_slice(&f);
                rest.extend_from_slice(&data);
            }
        }
    }
    Ok((first.unwrap_or_else(|| rest.freeze()), trailers))
}

/// What went wrong with a client's request body, recorded where the body is read, so the client
/// is told the cause (413, 408) whatever failure it caused further on (an upstream exchange cut
/// short, a plugin call never made).
#[derive(Debug, Default)]
pub struct BodyFault(std::sync::atomic::AtomicU8);

/// The kinds of [`BodyFault`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFaultKind {
    /// More bytes than the limit.
    TooLarge,
    /// The client stopped sending for longer than the timeout.
    Timeout,
}

impl BodyFault {
    /// Records `kind` (the first fault recorded stays).
    pub fn set(&self, kind: BodyFaultKind) {
        let code = match kind {
            BodyFaultKind::TooLarge => 1,
            BodyFaultKind::Timeout => 2,
        };
        let _ = self.0.compare_exchange(
            0,
            code,
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// The fault recorded, if any.
    pub fn get(&self) -> Option<BodyFaultKind> {
        match self.0.load(std::sync::atomic::Ordering::Relaxed) {
            1 => Some(BodyFaultKind::TooLarge),
            2 => Some(BodyFaultKind::Timeout),
            _ => None,
        }
    }
}

/// The error a [`CappedBody`] yields once it passes its limit.
#[derive(Debug)]
pub struct BodyLimitExceeded(pub u64);

impl std::fmt::Display for BodyLimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "request body larger than {} bytes", self.0)
    }
}

impl std::error::Error for BodyLimitExceeded {}

/// A body that fails once more than `limit` bytes went through, and records that in `fault`.
/// Used on every incoming request so the cap also holds while streaming to an upstream.
pub struct CappedBody {
    inner: Body,
    remaining: u64,
    limit: u64,
    fault: std::sync::Arc<BodyFault>,
}

impl std::fmt::Debug for CappedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CappedBody")
            .field("remaining", &self.remaining)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl CappedBody {
    /// Wraps `inner`.
    pub fn new(inner: Body, limit: u64, fault: std::sync::Arc<BodyFault>) -> Self {
        Self {
            inner,
            remaining: limit,
            limit,
            fault,
        }
    }
}

impl http_body::Body for CappedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > self.remaining {
                        self.fault.set(BodyFaultKind::TooLarge);
                        return Poll::Ready(Some(Err(Box::new(BodyLimitExceeded(self.limit)))));
                    }
                    self.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The error an [`IdleTimeoutBody`] yields when its source goes quiet.
#[derive(Debug)]
pub struct BodyIdleTimeout(pub std::time::Duration);

impl std::fmt::Display for BodyIdleTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no body data for {:?}", self.0)
    }
}

impl std::error::Error for BodyIdleTimeout {}

/// A body that fails when no frame arrives for `timeout`: a stalled upstream, or a client that
/// stopped sending its request body (then the fault is recorded for the 408).
pub struct IdleTimeoutBody {
    inner: Body,
    timeout: std::time::Duration,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    fault: Option<std::sync::Arc<BodyFault>>,
    /// The clock starts at the first read, not when the body is created: a request body may
    /// wait for filters or a connection before anyone reads it.
    polled: bool,
}

impl IdleTimeoutBody {
    /// Wraps `inner`.
    pub fn new(inner: Body, timeout: std::time::Duration) -> Self {
        Self {
            inner,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            fault: None,
            polled: false,
        }
    }

    /// Records a timeout in `fault` as well as failing the stream.
    pub fn recording(mut self, fault: std::sync::Arc<BodyFault>) -> Self {
        self.fault = Some(fault);
        self
    }
}

impl std::fmt::Debug for IdleTimeoutBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleTimeoutBody")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl http_body::Body for IdleTimeoutBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        use std::future::Future;
        use std::task::Poll;
        let this = &mut *self;
        if !this.polled {
            this.polled = true;
            let deadline = tokio::time::Instant::now() + this.timeout;
            this.sleep.as_mut().reset(deadline);
        }
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let deadline = tokio::time::Instant::now() + this.timeout;
                this.sleep.as_mut().reset(deadline);
                Poll::Ready(frame)
            }
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    if let Some(fault) = &this.fault {
                        fault.set(BodyFaultKind::Timeout);
                    }
                    Poll::Ready(Some(Err(Box::new(BodyIdleTimeout(this.timeout)))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
