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

/// Reads a whole body, refusing more than `limit` bytes.
pub async fn collect(mut body: Body, limit: usize) -> Result<Bytes, CollectError> {
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(CollectError::Stream)?.into_data() else {
            continue; // trailers
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
    Ok(first.unwrap_or_else(|| rest.freeze()))
}
