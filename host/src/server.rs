//! Accepting connections and serving requests: HTTP/1.1 and HTTP/2, in cleartext or over TLS
//! (the handshake runs in the connection's own task, within its timeout, never in the accept
//! loop), a connection cap shared by all listeners, request ids, the request span, graceful
//! shutdown. What a request must look like before it is routed is [`crate::edge`]'s.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant, SystemTime};

use http::header::HeaderValue;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::{Instrument, field};

use opentelemetry::KeyValue;

use crate::access::{self, AccessLog};
use crate::admission::{Admission, ClientSlots};
use crate::body::{self, Body, BodyFault};
use crate::chain::{self, RequestInfo};
use crate::compression::Uncompressed;
use crate::config::{AcceptRequestId, ServerConfig};
use crate::edge::{self, PathRules, Peer, TrustedProxies};
use crate::error::{self, GatewayError};
use crate::ids::{self, REQUEST_ID, TRACEPARENT};
use crate::live::Live;
use crate::metrics::{self, Metrics};
use crate::router::RouteMiss;
use crate::runtime::Runtime;
use crate::telemetry::{Telemetry, TraceSpan};
use crate::tls::TlsAcceptor;

/// A bound listener and, for a TLS listener, the handshake its connections run first.
#[derive(Debug)]
pub struct Listener {
    /// The socket.
    pub tcp: TcpListener,
    /// `None` for cleartext.
    pub tls: Option<TlsAcceptor>,
}

/// Accepts from `primary`, or from whichever of the two has a connection first.
async fn accept<'a>(
    primary: &'a Listener,
    extra: Option<&'a Listener>,
) -> (
    std::io::Result<(tokio::net::TcpStream, SocketAddr)>,
    &'a Listener,
) {
    match extra {
        None => (primary.tcp.accept().await, primary),
        Some(extra) => tokio::select! {
            a = primary.tcp.accept() => (a, primary),
            a = extra.tcp.accept() => (a, extra),
        },
    }
}

/// Serves the live runtime on `listener` (and `extra`, the cleartext listener beside a TLS one)
/// until `shutdown` turns true, then stops accepting and waits up to `server.shutdown_grace_ms`
/// for in-flight requests.
pub async fn serve(
    listener: Listener,
    extra: Option<Listener>,
    live: Arc<Live>,
    settings: ServerConfig,
    observers: Observers,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = Arc::new(connection_builder(&settings));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(settings.max_connections));
    // Connections past the cap get one 503 each; this bounds how many get even that.
    let turned_away = Arc::new(Semaphore::new(settings.max_connections / 10 + 16));
    let requests = Arc::new(Semaphore::new(settings.max_requests));
    let metrics = Arc::clone(&observers.metrics);
    let policy = Arc::new(EdgePolicy {
        observers,
        ..EdgePolicy::new(&settings)
    });
    loop {
        let ((stream, client), from) = tokio::select! {
            _ = shutdown.changed() => break,
            (accepted, from) = accept(&listener, extra.as_ref()) => match accepted {
                Ok(a) => (a, from),
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
            // A 503 in cleartext means nothing to a TLS client, and a handshake past the cap
            // is the work the cap exists to refuse: TLS connections are just closed.
            if from.tls.is_none() {
                turn_away(stream, &turned_away);
            }
            continue;
        };
        let open = metrics.connection();
        let live = Arc::clone(&live);
        let requests = Arc::clone(&requests);
        let policy = Arc::clone(&policy);
        // Plugin requests this connection (its HTTP/2 streams) may run at once.
        let plugin_slots = (settings.max_plugin_requests_per_connection > 0).then(|| {
            Arc::new(Semaphore::new(
                settings.max_plugin_requests_per_connection as usize,
            ))
        });
        let secure = from.tls.is_some();
        let service = service_fn(move |request: Request<Incoming>| {
            // Each request runs to its end on the runtime it started with, whatever reloads do.
            let runtime = live.runtime();
            let slot = Arc::clone(&requests).try_acquire_owned();
            let policy = Arc::clone(&policy);
            let plugin_slots = plugin_slots.clone();
            async move {
                let response = match slot {
                    Ok(_slot) => {
                        handle(&runtime, &policy, plugin_slots, request, client, secure).await
                    }
                    Err(_) => {
                        error::into_response(&GatewayError::Overloaded, &ids::new_request_id())
                    }
                };
                Ok::<_, Infallible>(response)
            }
        });
        let Some(tls) = &from.tls else {
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, %client, "connection ended with an error");
                }
                drop((permit, open));
            });
            continue;
        };
        let (tls, builder, watcher) = (tls.clone(), Arc::clone(&builder), graceful.watcher());
        tokio::spawn(async move {
            if let Some(stream) = tls.handshake(stream, client).await {
                let connection = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned();
                if let Err(e) = watcher.watch(connection).await {
                    tracing::debug!(error = %e, %client, "connection ended with an error");
                }
            }
            drop((permit, open));
        });
    }
    drop(listener);
    drop(extra);
    tracing::info!("shutting down: waiting for in-flight requests");
    let grace = Duration::from_millis(settings.shutdown_grace_ms);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(?grace, "grace period over; closing remaining connections");
    }
}

/// HTTP/1.1 and HTTP/2 settings from `[server]` (the admin listener uses them too).
pub fn connection_builder(settings: &ServerConfig) -> auto::Builder<TokioExecutor> {
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
fn turn_away(stream: tokio::net::TcpStream, permits: &Arc<Semaphore>) {
    let Ok(permit) = Arc::clone(permits).try_acquire_owned() else {
        drop(stream);
        return;
    };
    tokio::spawn(async move {
        let service = service_fn(move |_request: Request<Incoming>| {
            let mut response =
                error::into_response(&GatewayError::Overloaded, &ids::new_request_id());
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

/// What the server enforces on every request before a route runs, from `[server]`.
#[derive(Debug)]
pub struct EdgePolicy {
    /// `max_request_body_bytes`.
    pub max_body: u64,
    /// `body_read_timeout_ms`.
    pub body_read_timeout: Duration,
    /// `body_buffer_timeout_ms`.
    pub body_buffer_timeout: Duration,
    /// `trusted_proxies`.
    pub trusted: TrustedProxies,
    /// `accept_request_id`.
    pub accept_request_id: AcceptRequestId,
    /// The path rules.
    pub path: PathRules,
    /// `max_plugin_requests_per_client`, across connections.
    pub clients: Arc<ClientSlots>,
    /// Metrics, access log and traces.
    pub observers: Observers,
}

/// What watches requests go by: metrics always, the access log and traces when configured.
#[derive(Debug, Clone, Default)]
pub struct Observers {
    /// The gateway's metrics.
    pub metrics: Arc<Metrics>,
    /// The access log, unless it is off.
    pub access: Option<Arc<AccessLog>>,
    /// The tracer, when traces are on.
    pub telemetry: Option<Arc<Telemetry>>,
}

impl EdgePolicy {
    /// The policy of a `[server]` section.
    pub fn new(settings: &ServerConfig) -> Self {
        Self {
            max_body: settings.max_request_body_bytes,
            body_read_timeout: Duration::from_millis(settings.body_read_timeout_ms),
            body_buffer_timeout: Duration::from_millis(settings.body_buffer_timeout_ms),
            trusted: TrustedProxies::new(&settings.trusted_proxies),
            accept_request_id: settings.accept_request_id,
            path: PathRules::from(settings),
            clients: Arc::new(ClientSlots::new(settings.max_plugin_requests_per_client)),
            observers: Observers::default(),
        }
    }
}

/// Serves one request; `plugin_slots` caps the plugin requests of its connection; `secure`
/// says the connection is TLS (the upstream is told `x-forwarded-proto: https`).
pub async fn handle(
    runtime: &Runtime,
    policy: &EdgePolicy,
    plugin_slots: Option<Arc<Semaphore>>,
    mut request: Request<Incoming>,
    client: SocketAddr,
    secure: bool,
) -> Response<Body> {
    let started = Instant::now();
    let peer = Peer::new(client, request.headers(), &policy.trusted);
    let accept_id = match policy.accept_request_id {
        AcceptRequestId::Always => true,
        AcceptRequestId::Trusted => peer.trusted,
        AcceptRequestId::Never => false,
    };
    let request_id: Arc<str> = match request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
    {
        Some(id) if accept_id && ids::valid_request_id(id) => id.into(),
        _ => ids::new_request_id().into(),
    };
    // Upstreams and plugins see the id the client is told, never one the gateway did not accept.
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        request.headers_mut().insert(REQUEST_ID, v);
    }
    edge::drop_untrusted_forwarded(request.headers_mut(), &peer);
    if secure {
        // What a trusted proxy said is kept; otherwise the scheme is this connection's.
        request
            .headers_mut()
            .entry("x-forwarded-proto")
            .or_insert(HeaderValue::from_static("https"));
    }
    let observers = &policy.observers;
    let method = request.method().clone();
    let incoming = request
        .headers()
        .get(&TRACEPARENT)
        .and_then(|v| v.to_str().ok());
    let trace = observers
        .telemetry
        .as_ref()
        .map(|t| t.request(incoming, request_attributes(&request, &peer)));
    // With traces on, the request's trace context is its span's, so ids line up everywhere.
    let traceparent = Arc::new(match &trace {
        Some(span) => ids::TraceContext::new(Some(&span.traceparent())),
        None => ids::TraceContext::new(incoming),
    });
    let bytes_in = observers
        .access
        .as_ref()
        .map(|_| Arc::new(AtomicU64::new(0)));
    let pending = observers.access.as_ref().map(|_| access::Pending {
        started,
        time: SystemTime::now(),
        request_id: Arc::clone(&request_id),
        trace_id: traceparent.trace_id().to_owned(),
        client: peer.client,
        method: method.clone(),
        path: request.uri().path().to_owned(),
        route: None,
        bytes_in: bytes_in.clone().unwrap_or_default(),
    });
    // The response is compressed on its way out; what that needs of the request is taken now.
    let compression = runtime.compression.request_facts(&request);
    let span = tracing::info_span!(
        "tessera.request",
        http.request.method = %request.method(),
        url.path = %request.uri().path(),
        http.route = field::Empty,
        http.response.status_code = field::Empty,
        request_id = %request_id,
    );
    async move {
        let admission = Admission::new(plugin_slots, Arc::clone(&policy.clients), peer.client);
        let mut matched = None;
        let observed = Observed {
            request_id: Arc::clone(&request_id),
            trace: trace.clone(),
            traceparent,
            bytes_in,
        };
        let mut response = match route(
            runtime,
            policy,
            admission,
            request,
            peer,
            observed,
            &mut matched,
        )
        .await
        {
            Ok(r) => r,
            Err(e) => error::into_response(&e, &request_id),
        };
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(REQUEST_ID, v);
        }
        // Compressed before it is logged, so the log counts the bytes that were sent.
        let response = runtime.compression.apply(&compression, response);
        let status = response.status();
        tracing::Span::current().record("http.response.status_code", status.as_u16());
        observers
            .metrics
            .request(matched.as_ref(), &method, status, started.elapsed());
        if let Some(span) = trace {
            span.set(KeyValue::new(
                "http.response.status_code",
                i64::from(status.as_u16()),
            ));
            if let Some(route) = &matched {
                span.set(KeyValue::new("http.route", route.to_string()));
            }
            if status.is_server_error() {
                span.fail(status.as_u16().to_string());
            }
            span.end();
        }
        match (&observers.access, pending) {
            (Some(log), Some(mut pending)) => {
                pending.route = matched;
                access::log_response(log, pending, response)
            }
            _ => response,
        }
    }
    .instrument(span)
    .await
}

/// What the observers need carried into the route.
struct Observed {
    request_id: Arc<str>,
    trace: Option<TraceSpan>,
    traceparent: Arc<ids::TraceContext>,
    bytes_in: Option<Arc<AtomicU64>>,
}

/// The request span's attributes (OpenTelemetry HTTP server conventions).
fn request_attributes(request: &Request<Incoming>, peer: &Peer) -> Vec<KeyValue> {
    let version = match request.version() {
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_10 => "1.0",
        _ => "1.1",
    };
    vec![
        KeyValue::new(
            "http.request.method",
            metrics::method_label(request.method()),
        ),
        KeyValue::new("url.path", request.uri().path().to_owned()),
        KeyValue::new("url.scheme", "http"),
        KeyValue::new("network.protocol.version", version),
        KeyValue::new("client.address", peer.client.to_string()),
    ]
}

/// Checks the request head, routes it and runs the route; errors before the route runs come
/// back as `Err`.
async fn route(
    runtime: &Runtime,
    policy: &EdgePolicy,
    admission: Admission,
    mut request: Request<Incoming>,
    peer: Peer,
    observed: Observed,
    matched_route: &mut Option<Arc<str>>,
) -> Result<Response<Body>, GatewayError> {
    edge::check_head(&request)?;
    let path = edge::normalize_path(request.uri().path(), policy.path)?;
    if path != request.uri().path() {
        let rewritten = match request.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path.into_owned(),
        };
        let invalid = || GatewayError::BadRequest("the path is not valid once normalised".into());
        let mut parts = http::uri::Parts::from(request.uri().clone());
        parts.path_and_query = Some(rewritten.parse().map_err(|_| invalid())?);
        *request.uri_mut() = http::Uri::from_parts(parts).map_err(|_| invalid())?;
    }
    let matched = match runtime
        .router
        .lookup(request.method(), request.uri().path())
    {
        Ok(m) => m,
        Err(RouteMiss::NotFound) => return Err(GatewayError::RouteNotFound),
        Err(RouteMiss::MethodNotAllowed(allow)) => {
            return Err(GatewayError::MethodNotAllowed { allow });
        }
    };
    tracing::Span::current().record("http.route", matched.pattern.as_str());
    let Some(entry) = runtime.routes.get(matched.value) else {
        return Err(GatewayError::Internal(anyhow::anyhow!(
            "router returned route #{} of {}",
            matched.value,
            runtime.routes.len()
        )));
    };
    *matched_route = Some(Arc::clone(&entry.pattern));
    let declared = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > policy.max_body) {
        return Err(GatewayError::BodyTooLarge {
            limit: usize::try_from(policy.max_body).unwrap_or(usize::MAX),
        });
    }
    let info = RequestInfo {
        request_id: observed.request_id,
        client: peer.addr,
        client_ip: peer.client,
        params: matched.params.into(),
        traceparent: observed.traceparent,
        trace: observed.trace,
        body_limit: policy.max_body,
        body_read_timeout: policy.body_read_timeout,
        body_buffer_timeout: policy.body_buffer_timeout,
        body_fault: Arc::new(BodyFault::default()),
        admission: Arc::new(admission),
    };
    let fault = Arc::clone(&info.body_fault);
    let (max_body, idle) = (policy.max_body, policy.body_read_timeout);
    let request = request.map(|b| {
        if http_body::Body::is_end_stream(&b) {
            return body::boxed(b);
        }
        let timed = body::IdleTimeoutBody::new(body::boxed(b), idle).recording(Arc::clone(&fault));
        let capped = body::boxed(body::CappedBody::new(body::boxed(timed), max_body, fault));
        match observed.bytes_in {
            Some(count) => body::boxed(access::CountedBody::new(capped, count)),
            None => capped,
        }
    });
    let mut response = chain::run(runtime, entry, request, &info).await;
    if !entry.compress {
        response.extensions_mut().insert(Uncompressed);
    }
    Ok(response)
}
