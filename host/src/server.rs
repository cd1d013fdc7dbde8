//! Accepting connections and serving requests: HTTP/1.1 and HTTP/2 cleartext, a connection cap,
//! request ids, the request span, graceful shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::HeaderValue;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::{Instrument, field};

use crate::body::{self, Body};
use crate::chain::{self, RequestInfo};
use crate::config::ServerConfig;
use crate::error::{self, GatewayError};
use crate::live::Live;
use crate::router::RouteMiss;
use crate::routes::Runtime;

/// The request id header, accepted from clients and set on responses and upstream requests.
pub const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// The W3C trace context header.
pub const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// A random 64-bit value (std's hasher keys are randomly seeded per process and per call).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    h.finish()
}

/// A valid `traceparent` (version 00 layout, non-zero ids), or `None`.
fn parse_traceparent(value: &str) -> Option<&str> {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    match parts.as_slice() {
        [version, trace, parent, flags, ..]
            if hex(version, 2)
                && *version != "ff"
                && hex(trace, 32)
                && nonzero(trace)
                && hex(parent, 16)
                && nonzero(parent)
                && hex(flags, 2) =>
        {
            Some(value)
        }
        _ => None,
    }
}

/// A fresh trace context for a request that came without one.
fn new_traceparent() -> String {
    format!(
        "00-{:016x}{:016x}-{:016x}-00",
        random_u64(),
        random_u64(),
        random_u64() | 1
    )
}

/// The trace context for a call made on behalf of `parent`: same trace, new parent id.
pub fn child_traceparent(parent: &str) -> String {
    let mut parts = parent.splitn(4, '-');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(trace), Some(_), Some(flags)) => {
            format!(
                "00-{trace}-{:016x}-{}",
                random_u64() | 1,
                &flags[..flags.len().min(2)]
            )
        }
        _ => new_traceparent(),
    }
}

/// Serves the live runtime on `listener` until `shutdown` turns true, then stops accepting and
/// waits up to `server.shutdown_grace_ms` for in-flight requests.
pub async fn serve(
    listener: TcpListener,
    live: Arc<Live>,
    settings: ServerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = Arc::new(connection_builder(&settings));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(settings.max_connections));
    // Connections past the cap get one 503 each; this bounds how many get even that.
    let turned_away = Arc::new(Semaphore::new(settings.max_connections / 10 + 16));
    let requests = Arc::new(Semaphore::new(settings.max_requests));
    let ids = Arc::new(RequestIds::new());
    let limits = Arc::new(RequestLimits {
        max_body: settings.max_request_body_bytes,
    });
    loop {
        let (stream, client) = tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            turn_away(stream, &turned_away, &ids);
            continue;
        };
        let live = Arc::clone(&live);
        let ids = Arc::clone(&ids);
        let requests = Arc::clone(&requests);
        let limits = Arc::clone(&limits);
        let service = service_fn(move |request: Request<Incoming>| {
            // Each request runs to its end on the runtime it started with, whatever reloads do.
            let runtime = live.runtime();
            let ids = Arc::clone(&ids);
            let slot = Arc::clone(&requests).try_acquire_owned();
            let limits = Arc::clone(&limits);
            async move {
                let response = match slot {
                    Ok(_slot) => handle(&runtime, &ids, &limits, request, client).await,
                    Err(_) => error::into_response(&GatewayError::Overloaded, &ids.next()),
                };
                Ok::<_, Infallible>(response)
            }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %client, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("shutting down: waiting for in-flight requests");
    let grace = Duration::from_millis(settings.shutdown_grace_ms);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(?grace, "grace period over; closing remaining connections");
    }
}

/// HTTP/1.1 and HTTP/2 settings from `[server]`.
fn connection_builder(settings: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(settings.header_read_timeout_ms))
        .max_headers(settings.max_headers)
        .max_buf_size(settings.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.http2_max_streams)
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    builder
}

/// Answers a connection past the cap with one 503 and closes it, or just closes it when even
/// those answers are at their cap.
fn turn_away(stream: tokio::net::TcpStream, permits: &Arc<Semaphore>, ids: &Arc<RequestIds>) {
    let Ok(permit) = Arc::clone(permits).try_acquire_owned() else {
        drop(stream);
        return;
    };
    let ids = Arc::clone(ids);
    tokio::spawn(async move {
        let service = service_fn(move |_request: Request<Incoming>| {
            let mut response = error::into_response(&GatewayError::Overloaded, &ids.next());
            response
                .headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            async move { Ok::<_, Infallible>(response) }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(2))
            .keep_alive(false)
            .serve_connection(TokioIo::new(stream), service);
        let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
        drop(permit);
    });
}

/// Per-request limits the server enforces before a route runs.
#[derive(Debug)]
pub struct RequestLimits {
    /// `server.max_request_body_bytes`.
    pub max_body: u64,
}

/// Serves one request.
pub async fn handle(
    runtime: &Runtime,
    ids: &RequestIds,
    limits: &RequestLimits,
    request: Request<Incoming>,
    client: SocketAddr,
) -> Response<Body> {
    let request_id: Arc<str> = match request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
    {
        Some(id) if valid_request_id(id) => id.into(),
        _ => ids.next().into(),
    };
    let span = tracing::info_span!(
        "tessera.request",
        http.request.method = %request.method(),
        url.path = %request.uri().path(),
        http.route = field::Empty,
        http.response.status_code = field::Empty,
        request_id = %request_id,
    );
    async move {
        let mut response = route(runtime, limits, request, client, &request_id).await;
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(REQUEST_ID, v);
        }
        tracing::Span::current().record("http.response.status_code", response.status().as_u16());
        response
    }
    .instrument(span)
    .await
}

async fn route(
    runtime: &Runtime,
    limits: &RequestLimits,
    request: Request<Incoming>,
    client: SocketAddr,
    request_id: &Arc<str>,
) -> Response<Body> {
    let found = runtime
        .router
        .lookup(request.method(), request.uri().path());
    let matched = match found {
        Ok(m) => m,
        Err(RouteMiss::NotFound) => {
            return error::into_response(&GatewayError::RouteNotFound, request_id);
        }
        Err(RouteMiss::MethodNotAllowed(allow)) => {
            return error::into_response(&GatewayError::MethodNotAllowed { allow }, request_id);
        }
    };
    tracing::Span::current().record("http.route", matched.pattern.as_str());
    let Some(entry) = runtime.routes.get(matched.value) else {
        let e = GatewayError::Internal(anyhow::anyhow!(
            "router returned route #{} of {}",
            matched.value,
            runtime.routes.len()
        ));
        return error::into_response(&e, request_id);
    };
    let declared = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_body) {
        return error::into_response(
            &GatewayError::BodyTooLarge {
                limit: limits.max_body as usize,
            },
            request_id,
        );
    }
    let traceparent = request
        .headers()
        .get(&TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_traceparent)
        .map_or_else(new_traceparent, str::to_owned);
    let info = RequestInfo {
        request_id: Arc::clone(request_id),
        client,
        params: matched.params.into(),
        traceparent: Some(traceparent.into()),
        body_limit: limits.max_body,
        body_limit_hit: Arc::new(AtomicBool::new(false)),
    };
    let hit = Arc::clone(&info.body_limit_hit);
    let request =
        request.map(|b| body::boxed(body::CappedBody::new(body::boxed(b), limits.max_body, hit)));
    chain::run(runtime, entry, request, &info).await
}

/// Client-supplied ids are kept when they are short and printable, so traces line up.
fn valid_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// Generates request ids: unique per process start and counter, 24 hex digits.
#[derive(Debug)]
pub struct RequestIds {
    prefix: u64,
    counter: AtomicU64,
}

impl RequestIds {
    /// A generator seeded from the clock and the process id.
    pub fn new() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let prefix =
            (nanos ^ (u64::from(std::process::id()) << 40)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Self {
            prefix,
            counter: AtomicU64::new(0),
        }
    }

    /// The next id.
    pub fn next(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}{:08x}", self.prefix, n as u32)
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_unique_and_client_ids_checked() {
        let ids = RequestIds::new();
        assert_ne!(ids.next(), ids.next());
        assert!(valid_request_id("abc-123"));
        assert!(!valid_request_id(""));
        assert!(!valid_request_id("has space"));
        assert!(!valid_request_id(&"x".repeat(129)));
    }

    #[test]
    fn trace_context_is_kept_and_children_get_new_parent_ids() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(parse_traceparent(tp), Some(tp));
        assert_eq!(
            parse_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(parse_traceparent("garbage"), None);
        let child = child_traceparent(tp);
        assert!(
            child.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{child}"
        );
        assert!(child.ends_with("-01"));
        assert_ne!(child, tp);
        assert!(parse_traceparent(&child).is_some());
        assert!(parse_traceparent(&new_traceparent()).is_some());
    }
}
