//! Named upstream services: pooled clients, round-robin targets, timeouts, and the proxy.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::bindings::{self, HttpError, OutgoingRequest};
use crate::body::{self, Body};
use crate::config::UpstreamConfig;
use crate::error::GatewayError;
use crate::plugin::CallContext;

/// Checks an upstream target: `host:port` (no scheme, no path).
pub fn parse_target(target: &str) -> Result<http::uri::Authority, String> {
    let authority: http::uri::Authority = target
        .parse()
        .map_err(|_| format!("`{target}` is not a host:port target"))?;
    if authority.port_u16().is_none() {
        return Err(format!("`{target}` needs a port, e.g. `{target}:80`"));
    }
    if target.contains('@') {
        return Err(format!("`{target}` must not contain userinfo"));
    }
    Ok(authority)
}

/// One upstream service.
#[derive(Debug)]
pub struct Upstream {
    name: String,
    targets: Vec<http::uri::Authority>,
    next: AtomicUsize,
    client: Client<HttpConnector, Body>,
    response_timeout: Duration,
}

impl Upstream {
    /// Builds the client for a config entry (validated already).
    pub fn new(name: &str, config: &UpstreamConfig) -> Result<Self, String> {
        let targets = config
            .targets
            .iter()
            .map(|t| parse_target(t.get_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_millis(config.connect_timeout_ms)));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(config.max_idle_per_target)
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Ok(Self {
            name: name.to_owned(),
            targets,
            next: AtomicUsize::new(0),
            client,
            response_timeout: Duration::from_millis(config.response_timeout_ms),
        })
    }

    /// The upstream's name from config.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configured time to wait for response headers.
    pub fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// The next target, round-robin.
    fn pick(&self) -> &http::uri::Authority {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.targets.len();
        &self.targets[i]
    }

    /// Sends `request` (its URI holds only path and query) to the next target and waits for the
    /// response headers at most `timeout`. The response body streams.
    pub async fn send(
        &self,
        mut request: Request<Body>,
        timeout: Duration,
    ) -> Result<Response<Body>, GatewayError> {
        let target = self.pick().clone();
        let path_and_query = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let uri = Uri::builder()
            .scheme("http")
            .authority(target.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| GatewayError::BadRequest(format!("cannot build upstream URI: {e}")))?;
        *request.uri_mut() = uri;
        // HTTP/1.1 to upstreams; the client negotiates nothing else over cleartext.
        *request.version_mut() = http::Version::HTTP_11;
        if let Ok(host) = HeaderValue::from_str(target.as_str()) {
            request.headers_mut().insert(header::HOST, host);
        }
        let sent = tokio::time::timeout(timeout, self.client.request(request)).await;
        match sent {
            Err(_) => Err(GatewayError::UpstreamTimeout {
                upstream: self.name.clone(),
                timeout,
            }),
            Ok(Err(e)) => Err(GatewayError::UpstreamConnect {
                upstream: self.name.clone(),
                source: anyhow::Error::new(e).context(format!("target {target}")),
            }),
            Ok(Ok(response)) => Ok(response.map(body::boxed)),
        }
    }
}

/// All upstreams by name.
#[derive(Debug, Default)]
pub struct Upstreams {
    by_name: BTreeMap<String, Arc<Upstream>>,
}

impl Upstreams {
    /// Builds every upstream in the config.
    pub fn new(configs: &BTreeMap<String, UpstreamConfig>) -> Result<Self, String> {
        let mut by_name = BTreeMap::new();
        for (name, config) in configs {
            by_name.insert(name.clone(), Arc::new(Upstream::new(name, config)?));
        }
        Ok(Self { by_name })
    }

    /// The upstream called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.by_name.get(name)
    }
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1); never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// Adds `x-forwarded-for` (appending the client address), `-proto` and `-host`.
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
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    if let Some(host) = original_host {
        headers.entry("x-forwarded-host").or_insert(host);
    }
}

/// Proxies a request to `upstream`, streaming both bodies.
pub async fn proxy(
    upstream: &Upstream,
    mut request: Request<Body>,
    client: SocketAddr,
    request_id: &str,
) -> Result<Response<Body>, GatewayError> {
    let original_host = request.headers().get(header::HOST).cloned();
    let headers = request.headers_mut();
    strip_hop_by_hop(headers);
    add_forwarded(headers, client, original_host);
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(crate::server::REQUEST_ID, v);
    }
    let mut response = upstream.send(request, upstream.response_timeout()).await?;
    strip_hop_by_hop(response.headers_mut());
    Ok(response)
}

/// Sends a plugin's outgoing request to a named upstream the route granted, and buffers the
/// response for the plugin. Every failure is a typed `http-error` the plugin can match on.
pub async fn send_for_plugin(
    call: &CallContext,
    request: OutgoingRequest,
) -> Result<bindings::Response, HttpError> {
    let uri: Uri = request
        .url
        .parse()
        .map_err(|_| HttpError::InvalidRequest(format!("`{}` is not a valid URL", request.url)))?;
    if uri.scheme_str() != Some("http") {
        return Err(HttpError::InvalidRequest(format!(
            "`{}`: use http://<upstream>/<path> to name an upstream",
            request.url
        )));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| HttpError::InvalidRequest(format!("`{}` has no host", request.url)))?;
    // A named upstream is a bare name: no port, no userinfo tricks.
    let name = authority.as_str();
    if authority.port().is_some() || name.contains('@') || !crate::config::valid_name(name) {
        return Err(HttpError::Denied(format!(
            "`{name}` is not an upstream this route grants"
        )));
    }
    if !call.granted.iter().any(|g| g == name) {
        return Err(HttpError::Denied(format!(
            "upstream `{name}` is not granted to this plugin on this route"
        )));
    }
    let upstream = call
        .upstreams
        .get(name)
        .ok_or_else(|| HttpError::Denied(format!("upstream `{name}` does not exist")))?;

    let method = http::Method::from_bytes(request.method.as_bytes()).map_err(|_| {
        HttpError::InvalidRequest(format!("`{}` is not an HTTP method", request.method))
    })?;
    let mut builder = Request::builder()
        .method(method)
        .uri(uri.path_and_query().map_or("/", |p| p.as_str()));
    let headers = builder
        .headers_mut()
        .ok_or_else(|| HttpError::InvalidRequest("bad request".into()))?;
    for h in &request.headers {
        let (name, value) =
            crate::chain::header_from_plugin(h).map_err(HttpError::InvalidRequest)?;
        headers.append(name, value);
    }
    strip_hop_by_hop(headers);
    if let Ok(v) = HeaderValue::from_str(&call.request_id) {
        headers.insert(crate::server::REQUEST_ID, v);
    }
    let body = request.body.map(Bytes::from).unwrap_or_default();
    let outgoing = builder
        .body(body::full(body))
        .map_err(|e| HttpError::InvalidRequest(e.to_string()))?;

    let mut timeout = upstream.response_timeout();
    if let Some(ms) = request.timeout_ms {
        timeout = timeout.min(Duration::from_millis(u64::from(ms)));
    }
    let response = match upstream.send(outgoing, timeout).await {
        Ok(r) => r,
        Err(GatewayError::UpstreamTimeout { .. }) => return Err(HttpError::Timeout),
        Err(e) => return Err(HttpError::ConnectionFailed(e.to_string())),
    };
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = match tokio::time::timeout(timeout, body::collect(body, call.max_body_bytes)).await {
        Err(_) => return Err(HttpError::Timeout),
        Ok(Err(body::CollectError::TooLarge)) => return Err(HttpError::BodyTooLarge),
        Ok(Err(body::CollectError::Stream(e))) => {
            return Err(HttpError::ConnectionFailed(e.to_string()));
        }
        Ok(Ok(b)) => b,
    };
    Ok(bindings::Response {
        status: parts.status.as_u16(),
        headers: crate::chain::headers_to_plugin(&parts.headers),
        body: Some(body.to_vec()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_need_host_and_port() {
        assert!(parse_target("127.0.0.1:80").is_ok());
        assert!(parse_target("users.internal:8080").is_ok());
        assert!(parse_target("127.0.0.1").is_err());
        assert!(parse_target("http://x:1/").is_err());
        assert!(parse_target("a@b:1").is_err());
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

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
