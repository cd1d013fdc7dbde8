//! Named upstream services: pooled clients, round-robin targets, timeouts, and the proxy.
//!
//! An upstream with `tls = true` is reached over `https` ([`crate::tls::client`]); a TLS failure
//! (unknown CA, wrong name, refused client certificate) is a connect failure (502) and is logged
//! with its reason. An upstream with `protocol = "h2"` or `"grpc"` is spoken to in HTTP/2 only:
//! with prior knowledge in cleartext (h2c), with ALPN `h2` over TLS; its requests multiplex over
//! one connection per target.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::Scheme;
use http::{Request, Response, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use anyhow::Context as _;

use crate::access::ServedBy;
use crate::body::{self, Body};
use crate::config::{Config, UpstreamConfig, UpstreamProtocol};
use crate::error::GatewayError;
use crate::headers::strip_hop_by_hop;
use crate::metrics::{Exchange, Metrics, TargetMetrics};
use crate::telemetry::TraceSpan;
use crate::tls::client::{self as tls_client, ClientTls};
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;

/// A pooled keep-alive client that speaks `http`, and `https` with its TLS settings.
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, Body>;

/// One upstream service.
#[derive(Debug)]
pub struct Upstream {
    name: String,
    targets: Vec<Target>,
    next: AtomicUsize,
    scheme: Scheme,
    protocol: UpstreamProtocol,
    client: UpstreamClient,
    response_timeout: Duration,
    read_timeout: Duration,
    retries: u32,
    unhealthy_after: u32,
    cooldown: Duration,
    epoch: Instant,
}

/// One `host:port` of an upstream, with its passive health record.
#[derive(Debug)]
struct Target {
    authority: http::uri::Authority,
    /// `upstream/host:port`, what the access log names as having served a request.
    served_by: Arc<str>,
    metrics: TargetMetrics,
    consecutive_failures: AtomicU32,
    /// Milliseconds since the upstream's epoch until which the target is out of rotation.
    down_until_ms: AtomicU64,
}

impl Upstream {
    /// Builds the client for a config entry (its targets were checked when it was read);
    /// `base` resolves its CA and client certificate paths. Fails, naming the file, when a TLS
    /// file cannot be used.
    pub fn new(
        name: &str,
        config: &UpstreamConfig,
        base: &Config,
        metrics: &Metrics,
    ) -> anyhow::Result<Self> {
        let targets = config
            .targets
            .iter()
            .map(|t| Target {
                authority: t.get_ref().authority().clone(),
                served_by: format!("{name}/{}", t.get_ref().authority()).into(),
                metrics: metrics.target(name, t.get_ref().authority().as_str()),
                consecutive_failures: AtomicU32::new(0),
                down_until_ms: AtomicU64::new(0),
            })
            .collect();
        let (scheme, tls) = if config.tls {
            let ca_file = config.ca_file.as_deref().map(|p| base.resolve(p));
            let client_cert = config.client_cert.as_deref().map(|p| base.resolve(p));
            let client_key = config.client_key.as_deref().map(|p| base.resolve(p));
            let settings = ClientTls {
                ca_file: ca_file.as_deref(),
                client_auth: client_cert.as_deref().zip(client_key.as_deref()),
            };
            let tls = tls_client::client_config(&settings)
                .with_context(|| format!("upstreams.{name}: TLS"))?;
            (Scheme::HTTPS, Some(tls))
        } else {
            (Scheme::HTTP, None)
        };
        let server_name = match &config.server_name {
            Some(n) => Some(
                rustls_pki_types::ServerName::try_from(n.clone())
                    .with_context(|| format!("upstreams.{name}.server_name: `{n}`"))?,
            ),
            None => None,
        };
        let client = pooled_client(
            Duration::from_millis(config.connect_timeout_ms),
            config.max_idle_per_target,
            tls,
            server_name,
            config.protocol.is_http2(),
        );
        Ok(Self {
            name: name.to_owned(),
            targets,
            next: AtomicUsize::new(0),
            scheme,
            protocol: config.protocol,
            client,
            response_timeout: Duration::from_millis(config.response_timeout_ms),
            read_timeout: Duration::from_millis(config.read_timeout_ms),
            retries: config.retries,
            unhealthy_after: config.unhealthy_after_failures,
            cooldown: Duration::from_millis(config.unhealthy_cooldown_ms),
            epoch: Instant::now(),
        })
    }

    /// The upstream's name from config.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Each target (`host:port`) and whether it is in rotation now.
    pub fn target_health(&self) -> impl Iterator<Item = (&str, bool)> {
        let now = self.now_ms();
        self.targets.iter().map(move |t| {
            (
                t.authority.as_str(),
                t.down_until_ms.load(Ordering::Relaxed) <= now,
            )
        })
    }

    /// The HTTP version (and gRPC conventions) spoken to the targets.
    pub fn protocol(&self) -> UpstreamProtocol {
        self.protocol
    }

    /// The configured time to wait for response headers.
    pub fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// Longest pause allowed between two pieces of a response body.
    pub fn read_timeout(&self) -> Duration {
        self.read_timeout
    }

    /// Attempts after the first for idempotent requests without a body.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The next target in rotation, round-robin, skipping targets that are out of rotation
    /// unless all of them are.
    fn pick(&self) -> &Target {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        let n = self.targets.len();
        (0..n)
            .map(|k| &self.targets[(start + k) % n])
            .find(|t| t.down_until_ms.load(Ordering::Relaxed) <= now)
            .unwrap_or(&self.targets[start % n])
    }

    /// Records an exchange with `target`: failures in a row take it out of rotation for the
    /// cooldown; any answer puts it back.
    fn record(&self, target: &Target, ok: bool) {
        if ok {
            if target.consecutive_failures.swap(0, Ordering::Relaxed) >= self.unhealthy_after {
                tracing::info!(upstream = %self.name, target = %target.authority, "target answered again; back in rotation");
            }
            target.down_until_ms.store(0, Ordering::Relaxed);
            return;
        }
        let failures = target.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if self.unhealthy_after > 0 && failures >= self.unhealthy_after && self.targets.len() > 1 {
            let until = self.now_ms() + self.cooldown.as_millis() as u64;
            if target.down_until_ms.swap(until, Ordering::Relaxed) <= self.now_ms() {
                tracing::warn!(upstream = %self.name, target = %target.authority, failures, cooldown = ?self.cooldown, "target out of rotation after failures in a row");
            }
        }
    }

    /// Sends `request` (its URI holds only path and query) to the next target and waits for the
    /// response headers at most `timeout`. The response body streams.
    pub async fn send(
        &self,
        mut request: Request<Body>,
        timeout: Duration,
    ) -> Result<Response<Body>, GatewayError> {
        let target = self.pick();
        let started = Instant::now();
        if self.protocol == UpstreamProtocol::Grpc {
            // gRPC servers may insist on it; hop-by-hop rules removed the client's copy.
            request
                .headers_mut()
                .insert(header::TE, HeaderValue::from_static("trailers"));
        }
        let result = send_to(
            &self.client,
            &self.name,
            self.scheme.clone(),
            target.authority.clone(),
            request,
            timeout,
            self.protocol.is_http2(),
        )
        .await;
        self.record(target, result.is_ok());
        let exchange = match &result {
            Ok(_) => Exchange::Answered,
            Err(GatewayError::UpstreamTimeout { .. }) => Exchange::TimedOut,
            Err(_) => Exchange::ConnectFailed,
        };
        target.metrics.record(exchange, started.elapsed());
        let mut response = result?;
        response
            .extensions_mut()
            .insert(ServedBy(Arc::clone(&target.served_by)));
        Ok(response)
    }
}

/// Sends `request` to `scheme://authority` over `client`; `label` names the destination in
/// errors. The request goes in HTTP/2 with `http2` (the client must then be an HTTP/2 one),
/// else in HTTP/1.1, whatever version the client spoke to the gateway.
pub async fn send_to(
    client: &UpstreamClient,
    label: &str,
    scheme: Scheme,
    authority: http::uri::Authority,
    mut request: Request<Body>,
    timeout: Duration,
    http2: bool,
) -> Result<Response<Body>, GatewayError> {
    let path_and_query = request
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let uri = Uri::builder()
        .scheme(scheme)
        .authority(authority.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|e| GatewayError::BadRequest(format!("cannot build upstream URI: {e}")))?;
    *request.uri_mut() = uri;
    if http2 {
        *request.version_mut() = http::Version::HTTP_2;
        // `:authority` comes from the URI; a `host` field beside it could disagree.
        request.headers_mut().remove(header::HOST);
    } else {
        *request.version_mut() = http::Version::HTTP_11;
        if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
            request.headers_mut().insert(header::HOST, host);
        }
    }
    match tokio::time::timeout(timeout, client.request(request)).await {
        Err(_) => Err(GatewayError::UpstreamTimeout {
            upstream: label.to_owned(),
            timeout,
        }),
        Ok(Err(e)) => {
            let context = match tls_client::find_tls_error(&e) {
                Some(tls) => {
                    tracing::warn!(upstream = label, target = %authority, reason = %tls, "TLS with the upstream failed");
                    format!("target {authority}: TLS: {tls}")
                }
                None => format!("target {authority}"),
            };
            Err(GatewayError::UpstreamConnect {
                upstream: label.to_owned(),
                source: anyhow::Error::new(e).context(context),
            })
        }
        Ok(Ok(response)) => Ok(response.map(body::boxed)),
    }
}

/// A pooled client with the given connect timeout; `https` uses `tls` (a client without it
/// trusts nothing: its upstream is never called over `https`). With `http2` it speaks HTTP/2
/// only, and offers only `h2` in TLS.
fn pooled_client(
    connect_timeout: Duration,
    max_idle: usize,
    tls: Option<rustls::ClientConfig>,
    server_name: Option<rustls_pki_types::ServerName<'static>>,
    http2: bool,
) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    // The TLS layer hands the connector `https` URIs.
    connector.enforce_http(false);
    let tls = tls.unwrap_or_else(tls_client::trusting_nothing);
    let connector = tls_client::connector(connector, tls, server_name, http2);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(max_idle)
        .pool_idle_timeout(Duration::from_secs(60))
        .http2_only(http2)
        .build(connector)
}

/// All upstreams by name, and the client for hosts that routes allow plugins to call directly.
#[derive(Debug)]
pub struct Upstreams {
    by_name: BTreeMap<String, Arc<Upstream>>,
    direct: UpstreamClient,
}

impl Default for Upstreams {
    /// No upstreams; allowed hosts are verified against the system's roots.
    fn default() -> Self {
        let direct_tls = tls_client::builder()
            .with_root_certificates(tls_client::system_roots())
            .with_no_client_auth();
        Self {
            by_name: BTreeMap::new(),
            direct: pooled_client(DIRECT_CONNECT_TIMEOUT, 8, Some(direct_tls), None, false),
        }
    }
}

/// Connect timeout for calls to allowed hosts that are not configured upstreams.
const DIRECT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Response timeout for those calls (a plugin may lower it per call).
pub const DIRECT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(15);

impl Upstreams {
    /// Builds every upstream in the config, and the client for allowed hosts (which trusts
    /// `plugins.ca_file`, else the system's roots). Fails, naming the file, when a TLS file
    /// cannot be used.
    pub fn new(config: &Config, metrics: &Metrics) -> anyhow::Result<Self> {
        let by_name = config
            .upstreams
            .iter()
            .map(|(name, u)| {
                let upstream = Upstream::new(name, u, config, metrics)?;
                Ok((name.clone(), Arc::new(upstream)))
            })
            .collect::<anyhow::Result<_>>()?;
        let ca_file = config.plugins.ca_file.as_deref().map(|p| config.resolve(p));
        let direct_tls = tls_client::client_config(&ClientTls {
            ca_file: ca_file.as_deref(),
            ..ClientTls::default()
        })
        .context("plugins.ca_file")?;
        Ok(Self {
            by_name,
            direct: pooled_client(DIRECT_CONNECT_TIMEOUT, 8, Some(direct_tls), None, false),
        })
    }

    /// The client for allowed hosts outside the configured upstreams.
    pub fn direct(&self) -> &UpstreamClient {
        &self.direct
    }

    /// Every upstream.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.by_name.values()
    }

    /// The upstream called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.by_name.get(name)
    }
}

/// Adds `x-forwarded-for` (appending the client address), `-proto` and `-host`. Forwarded
/// headers from clients outside `server.trusted_proxies` are gone by now ([`crate::edge`]), so
/// what is extended or kept here came from a trusted proxy.
pub fn add_forwarded(
    headers: &mut HeaderMap,
    client: SocketAddr,
    original_host: Option<HeaderValue>,
) {
    let ip = client.ip().to_string();
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prior) if !prior.trim().is_empty() => format!("{prior}, {ip}"),
        _ => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert("x-forwarded-for", v);
    }
    headers
        .entry("x-forwarded-proto")
        .or_insert(HeaderValue::from_static("http"));
    if let Some(host) = original_host {
        headers.entry("x-forwarded-host").or_insert(host);
    }
}

/// Methods that may be sent twice (RFC 9110 §9.2.2).
fn idempotent(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::TRACE
            | http::Method::PUT
            | http::Method::DELETE
    )
}

/// Proxies a request to `upstream`, streaming both bodies. Idempotent requests without a body
/// are retried on another target when the connection fails, up to the upstream's `retries`.
pub async fn proxy(
    upstream: &Upstream,
    mut request: Request<Body>,
    client: SocketAddr,
    request_id: &str,
    trace: Option<&TraceSpan>,
) -> Result<Response<Body>, GatewayError> {
    // HTTP/2 clients name the host in `:authority`.
    let original_host = request.headers().get(header::HOST).cloned().or_else(|| {
        request
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let headers = request.headers_mut();
    strip_hop_by_hop(headers);
    add_forwarded(headers, client, original_host);
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(crate::ids::REQUEST_ID, v);
    }
    // With traces on, the upstream's parent is this call's span; otherwise the client's
    // `traceparent` passes through as sent.
    let span = trace.map(|parent| {
        parent.child(
            "tessera.outbound",
            SpanKind::Client,
            vec![
                KeyValue::new(
                    "http.request.method",
                    crate::metrics::method_label(request.method()),
                ),
                KeyValue::new("server.address", upstream.name().to_owned()),
                KeyValue::new("url.path", request.uri().path().to_owned()),
            ],
        )
    });
    if let Some(span) = &span
        && let Ok(v) = HeaderValue::from_str(&span.traceparent())
    {
        request.headers_mut().insert(crate::ids::TRACEPARENT, v);
    }
    let replayable = upstream.retries() > 0
        && idempotent(request.method())
        && http_body::Body::is_end_stream(request.body());
    let mut attempts_left = if replayable { upstream.retries() } else { 0 };
    let (parts, body) = request.into_parts();
    let mut body = Some(body);
    let response = loop {
        let this_body = body.take().unwrap_or_else(body::empty);
        let attempt = Request::from_parts(parts.clone(), this_body);
        match upstream.send(attempt, upstream.response_timeout()).await {
            Err(GatewayError::UpstreamConnect { .. }) if attempts_left > 0 => {
                attempts_left -= 1;
                tracing::debug!(upstream = %upstream.name(), "connection failed; retrying an idempotent request");
            }
            other => break other,
        }
    };
    if let Some(span) = span {
        match &response {
            Ok(r) => span.set(KeyValue::new(
                "http.response.status_code",
                i64::from(r.status().as_u16()),
            )),
            Err(e) => span.fail(e.status().1),
        }
        span.end();
    }
    let response = response?;
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = body::boxed(body::IdleTimeoutBody::new(body, upstream.read_timeout()));
    Ok(Response::from_parts(parts, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        add_forwarded(
            &mut h,
            "127.0.0.1:5000".parse().unwrap(),
            Some(HeaderValue::from_static("example.com")),
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.com");
    }
}
