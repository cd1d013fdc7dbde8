//! `tessera.toml`: the one config file.
//!
//! Parsing is strict (`deny_unknown_fields` everywhere) and every error names the key and, where
//! the file has one, the line. [`Config::load`] reads and validates a file; paths inside it are
//! relative to the file's directory. `validate` holds the checks that run after parsing.

mod compression;
mod secret;
mod tls;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

pub use self::tls::{CertificateConfig, ListenerTlsConfig, TlsVersion};
use self::validate::Validator;
pub use compression::{CompressionConfig, ContentCoding, MediaRange};
pub use secret::{MAX_SECRET_FILE_BYTES, PluginConfig, Secret};

/// A config that could not be loaded; the message names the file, key and line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The file parses but a value is wrong.
    #[error("{}: {key}: {message}", at_line(path, *line))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending value (0 when unknown).
        line: usize,
        /// The key, e.g. `routes[2].upstream`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// `file:line`, or just `file` when the line is not known.
fn at_line(path: &Path, line: usize) -> String {
    if line == 0 {
        path.display().to_string()
    } else {
        format!("{}:{line}", path.display())
    }
}

/// The whole gateway configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listener and request limits.
    #[serde(default)]
    pub server: ServerConfig,
    /// The admin API; absent means no admin listener.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// Where plugins come from and their default limits.
    #[serde(default)]
    pub plugins: PluginsConfig,
    /// Named upstream services.
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// Routes, matched by method and path.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Prometheus metrics.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The access log.
    #[serde(default)]
    pub access_log: AccessLogConfig,
    /// OpenTelemetry traces.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Key-value buckets plugins share (`wasi:keyvalue`), by name; a route entry's `buckets`
    /// grants them.
    #[serde(default)]
    pub buckets: BTreeMap<String, BucketConfig>,
    /// The directory relative paths resolve against (the config file's directory).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Largest request body the gateway buffers for a plugin, in bytes. Default 10 MiB.
    /// Proxied bodies stream and are not limited by this.
    pub max_body_bytes: usize,
    /// How long a graceful shutdown waits for in-flight requests, in ms. Default 30000.
    pub shutdown_grace_ms: u64,
    /// Connections served at once; a connection beyond it gets one 503 with `retry-after` and is
    /// closed. Default 10000.
    pub max_connections: usize,
    /// Requests in progress at once (all connections, HTTP/2 streams included); beyond it, 503
    /// with `retry-after`. Default 10000.
    pub max_requests: usize,
    /// Largest request body accepted on any route, proxied ones included (checked against
    /// `content-length` up front and counted while streaming); beyond it, 413. Default 100 MiB.
    pub max_request_body_bytes: u64,
    /// Header fields a request may have; beyond it, 431. Default 100.
    pub max_headers: usize,
    /// Bytes the request line and headers may take; beyond it, 431. Default 64 KiB.
    pub max_header_bytes: usize,
    /// Time a client has to send a complete request head, counted from the moment the connection
    /// waits for one, so it also closes idle keep-alive connections. Default 10000 ms.
    pub header_read_timeout_ms: u64,
    /// HTTP/2 streams per connection. Default 100.
    pub http2_max_streams: u32,
    /// Longest pause between two pieces of a request body, on every route (proxied bodies too),
    /// in ms; past it, 408 and the connection is closed. Like nginx's `client_body_timeout`.
    /// Default 10000.
    pub body_read_timeout_ms: u64,
    /// Total time a client has to send a body the gateway buffers for a plugin (a handler, or a
    /// filter with `buffer_body`), in ms; past it, 408. Default 30000.
    pub body_buffer_timeout_ms: u64,
    /// Requests of one connection (HTTP/2 streams) that may hold plugin instances at once; a
    /// request beyond it waits up to 1 s for a slot, then gets 429 with `retry-after`. 0 turns
    /// the cap off. Default 32.
    pub max_plugin_requests_per_connection: u32,
    /// Requests of one client address that may hold plugin instances at once; beyond it, 429
    /// with `retry-after`. The address is the forwarded one when the peer is a trusted proxy.
    /// 0 turns the cap off. Default 0 (off: behind a load balancer that is not listed in
    /// `trusted_proxies`, every client would share the balancer's address).
    pub max_plugin_requests_per_client: u32,
    /// Peers (`ip` or `ip/prefix`) whose forwarded headers (`x-forwarded-*`, `forwarded`,
    /// `x-real-ip`) and `x-request-id` are believed. From other peers those headers are replaced.
    /// Default: none.
    pub trusted_proxies: Vec<Spanned<String>>,
    /// Whose `x-request-id` is kept (always validated): `trusted` (from `trusted_proxies` only),
    /// `always`, or `never`. Default `trusted`.
    pub accept_request_id: AcceptRequestId,
    /// Remove dot segments (`.`, `..`, also percent-encoded) from the path before routing, as
    /// RFC 3986 §5.2.4 does; the upstream gets the normalised path. Default true.
    pub normalize_path: bool,
    /// Merge runs of slashes in the path (`//a///b` → `/a/b`) before routing. Default true.
    pub merge_slashes: bool,
    /// What an encoded slash or backslash (`%2F`, `%5C`) or a raw backslash in the path does:
    /// `reject` (400), `keep` (forwarded as sent; never decoded into a path parameter), or
    /// `decode` (turned into `/` before normalising and routing). Default `reject`.
    pub escaped_slashes: EscapedSlashes,
    /// `[server.tls]`: serve TLS on `listen` with these certificates. Default: none
    /// (cleartext).
    pub tls: Option<ListenerTlsConfig>,
    /// `[server.compression]`: gzip and brotli responses, negotiated by `accept-encoding`.
    /// Default: on, with the defaults of [`CompressionConfig`].
    pub compression: CompressionConfig,
}

/// `server.accept_request_id`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AcceptRequestId {
    /// Only from peers in `trusted_proxies`.
    #[default]
    Trusted,
    /// From any client.
    Always,
    /// Never: every request gets a new id.
    Never,
}

/// `server.escaped_slashes`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EscapedSlashes {
    /// 400.
    #[default]
    Reject,
    /// Forwarded unchanged; path parameters keep them encoded.
    Keep,
    /// Decoded to `/` before normalising and routing.
    Decode,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 10 * 1024 * 1024,
            shutdown_grace_ms: 30_000,
            max_connections: 10_000,
            max_requests: 10_000,
            max_request_body_bytes: 100 * 1024 * 1024,
            max_headers: 100,
            max_header_bytes: 64 * 1024,
            header_read_timeout_ms: 10_000,
            http2_max_streams: 100,
            body_read_timeout_ms: 10_000,
            body_buffer_timeout_ms: 30_000,
            max_plugin_requests_per_connection: 32,
            max_plugin_requests_per_client: 0,
            trusted_proxies: Vec::new(),
            accept_request_id: AcceptRequestId::Trusted,
            normalize_path: true,
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Reject,
            tls: None,
            compression: CompressionConfig::default(),
        }
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `GET /metrics` on the admin listener (with the admin token). Default true.
    pub enabled: bool,
    /// An address of its own where `GET /metrics` is served without a token, for scrapers on a
    /// private network. Default: none.
    pub listen: Option<SocketAddr>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: None,
        }
    }
}

/// `[access_log]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLogConfig {
    /// `json` (one object per line), `text`, or `off`. Default `json`.
    pub format: AccessLogFormat,
    /// A file the lines are appended to (relative to the config file). Default: standard output.
    pub path: Option<PathBuf>,
}

/// `access_log.format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// One human-readable line.
    Text,
    /// No access log.
    Off,
}

/// `[telemetry]`: OpenTelemetry traces exported over OTLP/HTTP (protobuf).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Export traces. Default false. `OTEL_SDK_DISABLED=true` turns it off regardless.
    pub enabled: bool,
    /// The OTLP/HTTP traces URL, e.g. `http://collector:4318/v1/traces`. Default:
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`,
    /// else `http://localhost:4318/v1/traces`.
    pub endpoint: Option<String>,
    /// `service.name` of the spans. Default: `OTEL_SERVICE_NAME`, else `tessera`.
    pub service_name: Option<String>,
    /// Share of new traces recorded (0.0 to 1.0); a request that arrives with a `traceparent`
    /// follows its sampled flag. Default 1.0.
    pub sample_ratio: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            endpoint: None,
            service_name: None,
            sample_ratio: 1.0,
        }
    }
}

/// `[admin]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin listener. Default `127.0.0.1:8081`.
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// Bearer token every admin request must carry; may be a `${env:NAME}` or `${file:PATH}`
    /// reference. The `TESSERA_ADMIN_TOKEN` environment variable, when set, takes its place.
    #[serde(default)]
    pub token: Option<Secret>,
    /// Connections the admin listener serves at once; more are closed at once. It also applies
    /// `[server]`'s header limits and header read timeout. Default 64.
    #[serde(default = "default_admin_connections")]
    pub max_connections: usize,
    /// `[admin.tls]`: serve the admin API over TLS (same keys as `[server.tls]`, without
    /// `plain_listen`). Default: none (cleartext).
    #[serde(default)]
    pub tls: Option<ListenerTlsConfig>,
}

fn default_admin_connections() -> usize {
    64
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8081))
}

/// The environment variable that supplies (and overrides) `admin.token`.
pub const ADMIN_TOKEN_ENV: &str = "TESSERA_ADMIN_TOKEN";

impl AdminConfig {
    /// The token in force: the environment's, else the file's.
    pub fn effective_token(&self) -> Option<String> {
        std::env::var(ADMIN_TOKEN_ENV)
            .ok()
            .filter(|t| !t.is_empty())
            .or_else(|| {
                self.token
                    .as_ref()
                    .map(|t| t.expose().to_owned())
                    .filter(|t| !t.is_empty())
            })
    }
}

/// `[plugins]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// A directory whose `<name>.wasm` files are loaded as plugin `<name>`. Default: none.
    pub directory: Option<PathBuf>,
    /// Plugins by name and file, in addition to the directory's.
    pub files: BTreeMap<String, PathBuf>,
    /// Limits every plugin call gets.
    pub limits: PluginLimits,
    /// Plugin instances alive at once across all requests (sizes the instance pool; a request
    /// holds one per filter plus one for a handler). Each slot reserves address space, not
    /// memory: see the configuration reference for the sizing formula. Default 2048.
    pub max_instances: u32,
    /// Requests that may wait for an instance when all are in use; beyond it, 503 at once.
    /// Default 4096.
    pub max_queued: usize,
    /// How long a request waits for an instance before 503 + `retry-after`, in ms. Default 1000.
    pub queue_timeout_ms: u64,
    /// Bounds of instance reuse, for entries with `instances = "reuse"`.
    pub reuse: ReuseConfig,
    /// Where compiled plugins are cached between runs. Default: none (compile at every start).
    pub cache_dir: Option<PathBuf>,
    /// PEM bundle of the CAs trusted for plugins' `https://` calls to `allow_hosts`. Default:
    /// none (the system's roots).
    pub ca_file: Option<PathBuf>,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            directory: None,
            files: BTreeMap::new(),
            limits: PluginLimits::default(),
            max_instances: 2048,
            max_queued: 4096,
            queue_timeout_ms: 1000,
            reuse: ReuseConfig::default(),
            cache_dir: None,
            ca_file: None,
        }
    }
}

/// `[plugins.reuse]`: how long a reused instance lives.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReuseConfig {
    /// Requests one instance serves before it is discarded. Default 1000.
    pub max_requests: u32,
    /// Age after which an instance is discarded, in ms. Default 60000.
    pub max_age_ms: u64,
    /// Idle instances kept per route entry (each holds a slot of the pool). Default 16.
    pub max_idle: usize,
}

impl Default for ReuseConfig {
    fn default() -> Self {
        Self {
            max_requests: 1000,
            max_age_ms: 60_000,
            max_idle: 16,
        }
    }
}

/// How a route entry gets plugin instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceMode {
    /// A fresh instance for every request: nothing survives between requests.
    #[default]
    PerRequest,
    /// One instance serves many requests, one at a time, within `[plugins.reuse]`'s bounds;
    /// what the plugin keeps in memory survives from one request to the next.
    Reuse,
}

/// `[plugins.limits]`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginLimits {
    /// Wall-clock budget of one plugin call (on-request, on-response or handle), in ms,
    /// including time spent waiting on outbound calls. Default 5000.
    pub timeout_ms: u64,
    /// Largest linear memory a plugin instance may grow to, in bytes. Default 64 MiB.
    pub memory_bytes: usize,
    /// Outbound calls one plugin instance (one request) may make. Default 64.
    pub max_calls: u32,
    /// Outbound calls of one plugin instance running at once. Default 16.
    pub max_in_flight: u32,
    /// Bytes a plugin may return in one request, response or answer (header names and values
    /// plus body). Default 16 MiB.
    pub max_output_bytes: usize,
    /// Header fields a plugin may return. Default 200.
    pub max_output_headers: usize,
    /// Log lines (log calls and stdout/stderr lines) one plugin instance may write; the rest are
    /// dropped and counted in one warning. Default 100.
    pub max_log_lines: u32,
    /// Bytes of log messages one plugin instance may write. Default 64 KiB.
    pub max_log_bytes: usize,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            timeout_ms: 5_000,
            memory_bytes: 64 * 1024 * 1024,
            max_calls: 64,
            max_in_flight: 16,
            max_output_bytes: 16 * 1024 * 1024,
            max_output_headers: 200,
            max_log_lines: 100,
            max_log_bytes: 64 * 1024,
        }
    }
}

/// `limits = { ... }` on a handler or filter entry: overrides of `[plugins.limits]` for it.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryLimits {
    /// Overrides `timeout_ms`.
    pub timeout_ms: Option<u64>,
    /// Overrides `memory_bytes`; at most the global value, which sizes the instance pool.
    pub memory_bytes: Option<usize>,
    /// Overrides `max_calls`.
    pub max_calls: Option<u32>,
    /// Overrides `max_in_flight`.
    pub max_in_flight: Option<u32>,
    /// Overrides `max_output_bytes`.
    pub max_output_bytes: Option<usize>,
    /// Overrides `max_output_headers`.
    pub max_output_headers: Option<usize>,
    /// Overrides `max_log_lines`.
    pub max_log_lines: Option<u32>,
    /// Overrides `max_log_bytes`.
    pub max_log_bytes: Option<usize>,
}

impl PluginLimits {
    /// These limits with an entry's overrides applied.
    pub fn with(&self, entry: Option<&EntryLimits>) -> PluginLimits {
        let Some(e) = entry else { return *self };
        PluginLimits {
            timeout_ms: e.timeout_ms.unwrap_or(self.timeout_ms),
            memory_bytes: e.memory_bytes.unwrap_or(self.memory_bytes),
            max_calls: e.max_calls.unwrap_or(self.max_calls),
            max_in_flight: e.max_in_flight.unwrap_or(self.max_in_flight),
            max_output_bytes: e.max_output_bytes.unwrap_or(self.max_output_bytes),
            max_output_headers: e.max_output_headers.unwrap_or(self.max_output_headers),
            max_log_lines: e.max_log_lines.unwrap_or(self.max_log_lines),
            max_log_bytes: e.max_log_bytes.unwrap_or(self.max_log_bytes),
        }
    }
}

/// What a filter's failure does to the request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailPolicy {
    /// The request fails with the plugin's error status (500/503/504).
    #[default]
    Closed,
    /// The request (or response) goes on unmodified and the failure is logged.
    Open,
}

/// `[upstreams.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `host:port` targets, used round-robin.
    pub targets: Vec<Spanned<TargetAddr>>,
    /// TCP connect timeout in ms. Default 1000.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Time to wait for response headers, in ms. Default 15000.
    #[serde(default = "default_response_timeout_ms")]
    pub response_timeout_ms: u64,
    /// Idle keep-alive connections kept per target. Default 32.
    #[serde(default = "default_pool_idle")]
    pub max_idle_per_target: usize,
    /// Longest pause between two pieces of a proxied response body, in ms; past it the response
    /// is cut off. Default 30000.
    #[serde(default = "default_read_timeout_ms")]
    pub read_timeout_ms: u64,
    /// Extra attempts, on another target, for idempotent requests without a body whose
    /// connection failed. Default 0 (no retries).
    #[serde(default)]
    pub retries: u32,
    /// Connection failures or timeouts in a row that take a target out of rotation (0: never).
    /// Default 3.
    #[serde(default = "default_unhealthy_after")]
    pub unhealthy_after_failures: u32,
    /// How long a failing target stays out of rotation, in ms. Default 10000.
    #[serde(default = "default_cooldown_ms")]
    pub unhealthy_cooldown_ms: u64,
    /// Connect to the targets over TLS (the proxy and plugin calls use `https`). Default false.
    #[serde(default)]
    pub tls: bool,
    /// PEM bundle of the CAs trusted for this upstream's certificates. Only with `tls`.
    /// Default: none (the system's roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The name sent as SNI and verified against the certificate. Only with `tls`. Default:
    /// the target's host.
    #[serde(default)]
    pub server_name: Option<String>,
    /// PEM client certificate chain presented to the targets (mTLS). Only with `tls`, and
    /// with `client_key`. Default: none.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`. Default: none.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// The HTTP version spoken to the targets: `http1` (default), `h2` (HTTP/2 only: prior
    /// knowledge in cleartext, ALPN `h2` with `tls`), or `grpc` (HTTP/2 as `h2`, and calls carry
    /// `te: trailers` and a `grpc-timeout` no longer than the call's timeout).
    #[serde(default)]
    pub protocol: UpstreamProtocol,
}

/// `upstreams.*.protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1.
    #[default]
    Http1,
    /// HTTP/2 only.
    H2,
    /// gRPC over HTTP/2.
    Grpc,
}

impl UpstreamProtocol {
    /// Whether the targets are spoken to in HTTP/2.
    pub fn is_http2(self) -> bool {
        matches!(self, Self::H2 | Self::Grpc)
    }
}

fn default_read_timeout_ms() -> u64 {
    30_000
}
fn default_unhealthy_after() -> u32 {
    3
}
fn default_cooldown_ms() -> u64 {
    10_000
}

fn default_connect_timeout_ms() -> u64 {
    1_000
}
fn default_response_timeout_ms() -> u64 {
    15_000
}
fn default_pool_idle() -> usize {
    32
}

/// An upstream target, `host:port` (no scheme, no path, no userinfo), checked when the config
/// is read so that everything built from a config can rely on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetAddr(http::uri::Authority);

impl TargetAddr {
    /// Parses `host:port`; the message says what is wrong.
    pub fn parse(target: &str) -> Result<Self, String> {
        if target.contains('@') {
            return Err(format!("`{target}` must not contain userinfo"));
        }
        let authority: http::uri::Authority = target
            .parse()
            .map_err(|_| format!("`{target}` is not a host:port target"))?;
        if authority.port_u16().is_none() {
            return Err(format!("`{target}` needs a port, e.g. `{target}:80`"));
        }
        Ok(Self(authority))
    }

    /// The target as a URI authority.
    pub fn authority(&self) -> &http::uri::Authority {
        &self.0
    }
}

impl std::fmt::Display for TargetAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for TargetAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// An HTTP method in a route's `methods`, any case, parsed when the config is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodName(http::Method);

impl MethodName {
    /// The method.
    pub fn method(&self) -> &http::Method {
        &self.0
    }
}

impl<'de> Deserialize<'de> for MethodName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        http::Method::from_bytes(text.to_ascii_uppercase().as_bytes())
            .map(Self)
            .map_err(|_| serde::de::Error::custom(format!("`{text}` is not an HTTP method")))
    }
}

/// `[[routes]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Path pattern: `/users/{id}`, or a catch-all tail `/static/{*rest}`.
    pub path: Spanned<String>,
    /// Methods served; empty means any.
    #[serde(default)]
    pub methods: Vec<Spanned<MethodName>>,
    /// Proxy target: the name of an upstream.
    #[serde(default)]
    pub upstream: Option<Spanned<String>>,
    /// Plugin target.
    #[serde(default)]
    pub handler: Option<HandlerConfig>,
    /// Filters in the order they see the request.
    #[serde(default)]
    pub filters: Vec<FilterConfig>,
    /// Whether this route's responses may be compressed (`[server.compression]`); `false` opts
    /// the route out. Default true.
    #[serde(default = "default_route_compression")]
    pub compression: bool,
}

fn default_route_compression() -> bool {
    true
}

/// A route's `handler = { plugin = "...", ... }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerConfig {
    /// Plugin name.
    pub plugin: Spanned<String>,
    /// Free-form config handed to the plugin as JSON; its strings may be `${env:NAME}` or
    /// `${file:PATH}` references.
    #[serde(default)]
    pub config: Option<PluginConfig>,
    /// Upstreams the plugin may call by name.
    #[serde(default)]
    pub upstreams: Vec<Spanned<String>>,
    /// Hosts outside the upstreams the plugin may call, exactly as written (`host` or `host:port`).
    #[serde(default)]
    pub allow_hosts: Vec<Spanned<String>>,
    /// Key-value buckets (`[buckets.<name>]`) the plugin may open. Default none.
    #[serde(default)]
    pub buckets: Vec<Spanned<String>>,
    /// Sends a share of requests to another plugin, rolled back automatically if it fails.
    #[serde(default)]
    pub canary: Option<CanaryConfig>,
    /// Overrides of `[plugins.limits]` for this entry.
    #[serde(default)]
    pub limits: Option<EntryLimits>,
    /// `per-request` (default) or `reuse`.
    #[serde(default)]
    pub instances: InstanceMode,
}

/// `canary = { plugin = "...", percent = 10 }` on a handler or filter entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryConfig {
    /// The plugin (a new version, under its own name) that gets the share.
    pub plugin: Spanned<String>,
    /// Share of requests, 1 to 100.
    pub percent: u8,
    /// How many canary requests are judged. Default 20.
    #[serde(default = "default_canary_window")]
    pub min_requests: u32,
    /// Failure rate (traps, timeouts, limits) over those requests that rolls the canary back.
    /// Default 0.2.
    #[serde(default = "default_canary_failure_rate")]
    pub max_failure_rate: f64,
}

fn default_canary_window() -> u32 {
    20
}
fn default_canary_failure_rate() -> f64 {
    0.2
}

/// One entry of a route's `filters`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Plugin name.
    pub plugin: Spanned<String>,
    /// Free-form config handed to the plugin as JSON; its strings may be `${env:NAME}` or
    /// `${file:PATH}` references.
    #[serde(default)]
    pub config: Option<PluginConfig>,
    /// Buffer bodies (up to `server.max_body_bytes`) so the filter can read and rewrite them.
    /// Default false: bodies stream past the filter.
    #[serde(default)]
    pub buffer_body: bool,
    /// Upstreams the filter may call by name.
    #[serde(default)]
    pub upstreams: Vec<Spanned<String>>,
    /// Hosts outside the upstreams the filter may call, exactly as written (`host` or `host:port`).
    #[serde(default)]
    pub allow_hosts: Vec<Spanned<String>>,
    /// Key-value buckets (`[buckets.<name>]`) the filter may open. Default none.
    #[serde(default)]
    pub buckets: Vec<Spanned<String>>,
    /// Sends a share of requests to another plugin, rolled back automatically if it fails.
    #[serde(default)]
    pub canary: Option<CanaryConfig>,
    /// Overrides of `[plugins.limits]` for this entry.
    #[serde(default)]
    pub limits: Option<EntryLimits>,
    /// `per-request` (default) or `reuse`.
    #[serde(default)]
    pub instances: InstanceMode,
    /// `closed` (default): a failing filter fails the request. `open`: the request or response
    /// goes on unmodified and the failure is logged.
    #[serde(default)]
    pub fail: FailPolicy,
}

/// The fields handler and filter entries share, borrowed: what validation, the routing table
/// and the admin API need from either.
#[derive(Debug, Clone, Copy)]
pub struct PluginEntry<'a> {
    /// Plugin name.
    pub plugin: &'a Spanned<String>,
    /// Free-form config for the plugin, references resolved.
    pub config: Option<&'a PluginConfig>,
    /// Upstreams the plugin may call.
    pub upstreams: &'a [Spanned<String>],
    /// Other hosts the plugin may call.
    pub allow_hosts: &'a [Spanned<String>],
    /// Key-value buckets the plugin may open.
    pub buckets: &'a [Spanned<String>],
    /// The entry's canary, if any.
    pub canary: Option<&'a CanaryConfig>,
    /// Overrides of `[plugins.limits]`.
    pub limits: Option<&'a EntryLimits>,
    /// How instances are had.
    pub instances: InstanceMode,
}

impl HandlerConfig {
    /// The fields this entry shares with filter entries.
    pub fn entry(&self) -> PluginEntry<'_> {
        PluginEntry {
            plugin: &self.plugin,
            config: self.config.as_ref(),
            upstreams: &self.upstreams,
            allow_hosts: &self.allow_hosts,
            buckets: &self.buckets,
            canary: self.canary.as_ref(),
            limits: self.limits.as_ref(),
            instances: self.instances,
        }
    }
}

impl FilterConfig {
    /// The fields this entry shares with handler entries.
    pub fn entry(&self) -> PluginEntry<'_> {
        PluginEntry {
            plugin: &self.plugin,
            config: self.config.as_ref(),
            upstreams: &self.upstreams,
            allow_hosts: &self.allow_hosts,
            buckets: &self.buckets,
            canary: self.canary.as_ref(),
            limits: self.limits.as_ref(),
            instances: self.instances,
        }
    }
}

impl RouteConfig {
    /// The route's plugin entries (handler first, then filters in order), each with its use and
    /// its key below the route (`handler`, `filters[0]`, ...).
    pub fn plugin_entries(&self) -> Vec<(PluginEntry<'_>, PluginUse, String)> {
        let mut entries = Vec::with_capacity(self.filters.len() + 1);
        if let Some(h) = &self.handler {
            entries.push((h.entry(), PluginUse::Handler, "handler".to_owned()));
        }
        for (j, f) in self.filters.iter().enumerate() {
            entries.push((f.entry(), PluginUse::Filter, format!("filters[{j}]")));
        }
        entries
    }

    /// Whether an entry of this route runs plugin `name`, as its plugin or as its canary.
    pub fn uses_plugin(&self, name: &str) -> bool {
        self.plugin_entries().iter().any(|(e, _, _)| {
            e.plugin.get_ref() == name || e.canary.is_some_and(|c| c.plugin.get_ref() == name)
        })
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, path, &base)
    }

    /// Parses and validates config text; `path` is only used in messages. Secret references
    /// (`${env:NAME}`, `${file:PATH}`) are resolved against the process environment and
    /// `base_dir`.
    pub fn parse(text: &str, path: &Path, base_dir: &Path) -> Result<Self, ConfigError> {
        Self::parse_with_env(text, path, base_dir, &|name| std::env::var_os(name))
    }

    /// Like [`Config::parse`], with `${env:NAME}` references looked up through `env`.
    pub fn parse_with_env(
        text: &str,
        path: &Path,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        config.base_dir = base_dir.to_owned();
        let resolver = secret::Resolver {
            text,
            path,
            base_dir,
            env,
        };
        secret::resolve_config(&mut config, &resolver)?;
        Validator { text, path }.check(&config)?;
        Ok(config)
    }

    /// Resolves a path from the config against the config file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base_dir.join(p)
        }
    }

    /// Every plugin named by routes, with the keys that name it (for messages).
    pub fn plugin_uses(&self) -> Vec<(&str, PluginUse)> {
        let mut uses = Vec::new();
        for route in &self.routes {
            for (entry, usage, _) in route.plugin_entries() {
                uses.push((entry.plugin.get_ref().as_str(), usage));
                if let Some(c) = entry.canary {
                    uses.push((c.plugin.get_ref().as_str(), usage));
                }
            }
        }
        uses
    }

    /// Path patterns of the routes that run plugin `name` (as plugin or canary).
    pub fn routes_using(&self, name: &str) -> Vec<&str> {
        self.routes
            .iter()
            .filter(|r| r.uses_plugin(name))
            .map(|r| r.path.get_ref().as_str())
            .collect()
    }
}

/// Where a bucket's data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BucketBackend {
    /// In the gateway process: shared by its requests, not by other gateways.
    Memory,
    /// In a Redis server: shared by every gateway that uses it.
    Redis,
}

/// `[buckets.<name>]`: one key-value bucket. Fields marked memory or redis apply to that backend
/// only; setting one for the other backend is an error.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketConfig {
    /// `memory` or `redis`. Required.
    pub backend: Spanned<BucketBackend>,
    /// How long a value lives after it was last written, in ms (at most ten years). Default:
    /// until evicted (memory) or deleted (redis).
    #[serde(default)]
    pub ttl_ms: Option<u64>,
    /// Largest value a plugin may write, in bytes. Default 1 MiB.
    #[serde(default = "default_bucket_max_value_bytes")]
    pub max_value_bytes: usize,
    /// Memory: most keys held; past it the least recently written key is evicted. Default 100000.
    #[serde(default)]
    pub max_entries: Option<usize>,
    /// Memory: most bytes of keys and values held; past it the least recently written keys are
    /// evicted. Default 64 MiB.
    #[serde(default)]
    pub max_bytes: Option<usize>,
    /// Redis: the server, `redis://[user:password@]host[:port][/db]`; may be a `${env:…}` or
    /// `${file:…}` reference, so the password stays out of the file. Required for redis.
    #[serde(default)]
    pub url: Option<Secret>,
    /// Redis: what every key of the bucket starts with on the server. Default
    /// `tessera:<bucket>:`.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Redis: how long one operation (connecting included) may take before it fails, in ms.
    /// Default 250.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

fn default_bucket_max_value_bytes() -> usize {
    1024 * 1024
}

impl BucketConfig {
    /// Default of `max_entries`.
    pub const DEFAULT_MAX_ENTRIES: usize = 100_000;
    /// Default of `max_bytes`.
    pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;
    /// Default of `timeout_ms`.
    pub const DEFAULT_TIMEOUT_MS: u64 = 250;
}

/// How a route uses a plugin, which decides the world it must implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginUse {
    /// As a filter (`tessera:gateway/filter`).
    Filter,
    /// As a handler (`tessera:gateway/handler`).
    Handler,
}

/// Upstream and plugin names: what can appear as a URL host or a file stem without surprises.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Plugin config tables (references resolved) become the JSON the plugin reads with
/// `config::get`.
pub fn table_to_json(table: Option<&PluginConfig>) -> String {
    match table {
        None => "{}".to_owned(),
        Some(t) => serde_json::to_string(t.table()).unwrap_or_else(|_| "{}".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("tessera.toml"), Path::new("."))
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = parse("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("lisen"), "{err}");
    }

    #[test]
    fn plugin_config_becomes_json() {
        let text = "[plugins.files]\nh = \"h.wasm\"\n[[routes]]\npath = \"/\"\nhandler = { plugin = \"h\", config = { greeting = \"hi\", n = 2 } }\n";
        let config = parse(text).unwrap();
        let json = table_to_json(config.routes[0].handler.as_ref().unwrap().config.as_ref());
        assert_eq!(json, r#"{"greeting":"hi","n":2}"#);
    }
}
