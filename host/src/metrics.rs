//! Prometheus metrics: what the gateway counts, and `GET /metrics`.
//!
//! One [`Metrics`] per gateway (tests run several in one process, so nothing is global). Series
//! a request touches every time are resolved once where their labels are known: a plugin
//! version's at load ([`PluginMetrics`]), an upstream target's when the upstream is built
//! ([`TargetMetrics`]). Gauges that describe state (instances in use, target health) are read
//! from the live runtime at scrape time, so they are never stale.
//!
//! Label values are bounded by the config: routes are patterns (never raw paths), methods
//! outside the standard set count as `_OTHER`, plugins are `name` + `version` of loaded
//! components, targets are configured `host:port`s and allowed hosts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::error::PluginFailure;
use crate::runtime::Runtime;

/// An exposition format, picked by the scraper's `accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text: what Prometheus asks for first.
    OpenMetrics,
    /// The Prometheus text format 0.0.4: for everything else (curl, `promtool`, older scrapers).
    Text,
}

impl Format {
    /// OpenMetrics when `accept` names it, else the Prometheus text format.
    pub fn from_accept(accept: Option<&str>) -> Self {
        let wants = accept.is_some_and(|a| {
            a.split(',').any(|range| {
                let mut params = range.split(';');
                let media = params.next().unwrap_or("").trim();
                let refused = params.any(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0))
                });
                media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
            })
        });
        if wants { Self::OpenMetrics } else { Self::Text }
    }

    /// The `content-type` of the exposition.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// A label value shared with the rest of the gateway (a route pattern, a plugin name).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Shared(pub Arc<str>);

impl EncodeLabelValue for Shared {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&&*self.0, encoder)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: Shared,
    method: &'static str,
    status_class: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: Shared,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TargetLabels {
    upstream: Shared,
    target: Shared,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TargetErrorLabels {
    upstream: Shared,
    target: Shared,
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PluginLabels {
    plugin: Shared,
    version: Shared,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PluginCallLabels {
    plugin: Shared,
    version: Shared,
    phase: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PluginFailureLabels {
    plugin: Shared,
    version: Shared,
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutboundLabels {
    plugin: Shared,
    upstream: Shared,
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Request and upstream latencies: 1 ms to 10 s.
fn latency_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

/// Plugin instantiation and calls: 10 µs to 5 s.
fn plugin_histogram() -> Histogram {
    Histogram::new([
        0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
        0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
    ])
}

/// Every metric the gateway exports.
pub struct Metrics {
    /// `metrics.enabled`: when false, requests, upstream exchanges and plugin calls are not
    /// recorded (state gauges and reloads still are).
    on: Arc<AtomicBool>,
    /// The route label of requests no route matched.
    unmatched: Arc<str>,
    /// One scrape at a time: a scrape rebuilds the health gauges, which another scrape must
    /// not see half-built (highly available Prometheus pairs scrape at the same moment).
    rendering: std::sync::Mutex<()>,
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: HistogramFamily<RouteLabels>,
    upstream_duration: HistogramFamily<TargetLabels>,
    upstream_errors: Family<TargetErrorLabels, Counter>,
    target_healthy: Family<TargetLabels, Gauge>,
    plugin_instantiation: HistogramFamily<PluginLabels>,
    plugin_calls: HistogramFamily<PluginCallLabels>,
    plugin_failures: Family<PluginFailureLabels, Counter>,
    instances_in_use: Gauge,
    instances_capacity: Gauge,
    instances_queued: Gauge,
    outbound_calls: Family<OutboundLabels, Counter>,
    reloads: Family<ResultLabels, Counter>,
    open_connections: Gauge<i64, AtomicI64>,
    access_log_dropped: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `tessera_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tessera");
        let m = Self {
            on: Arc::new(AtomicBool::new(true)),
            unmatched: Arc::from("unmatched"),
            rendering: std::sync::Mutex::new(()),
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            upstream_duration: Family::new_with_constructor(latency_histogram),
            upstream_errors: Family::default(),
            target_healthy: Family::default(),
            plugin_instantiation: Family::new_with_constructor(plugin_histogram),
            plugin_calls: Family::new_with_constructor(plugin_histogram),
            plugin_failures: Family::default(),
            instances_in_use: Gauge::default(),
            instances_capacity: Gauge::default(),
            instances_queued: Gauge::default(),
            outbound_calls: Family::default(),
            reloads: Family::default(),
            open_connections: Gauge::default(),
            access_log_dropped: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "http_requests",
            "Requests answered, by route pattern (`unmatched` when no route matched), method and status class",
            m.requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time from the request head to the response head, by route pattern",
            Unit::Seconds,
            m.request_duration.clone(),
        );
        registry.register_with_unit(
            "upstream_request_duration",
            "Time from sending a request to an upstream target to its response head (proxied requests and plugin calls)",
            Unit::Seconds,
            m.upstream_duration.clone(),
        );
        registry.register(
            "upstream_errors",
            "Upstream exchanges that failed, by upstream, target and kind (connect, timeout)",
            m.upstream_errors.clone(),
        );
        registry.register(
            "upstream_target_healthy",
            "1 when the target is in rotation, 0 while passive health checks keep it out",
            m.target_healthy.clone(),
        );
        registry.register_with_unit(
            "plugin_instantiation_duration",
            "Time to instantiate a plugin version for a request",
            Unit::Seconds,
            m.plugin_instantiation.clone(),
        );
        registry.register_with_unit(
            "plugin_call_duration",
            "Time of one call into a plugin, by phase (on_request, on_response, handle)",
            Unit::Seconds,
            m.plugin_calls.clone(),
        );
        registry.register(
            "plugin_failures",
            "Plugin failures by kind: trap, timeout, memory_limit, invalid_output, instantiate, overloaded",
            m.plugin_failures.clone(),
        );
        registry.register(
            "plugin_instances_in_use",
            "Plugin instances serving requests now",
            m.instances_in_use.clone(),
        );
        registry.register(
            "plugin_instances_capacity",
            "Plugin instances that may be alive at once (plugins.max_instances)",
            m.instances_capacity.clone(),
        );
        registry.register(
            "plugin_instances_queued",
            "Requests waiting for a plugin instance",
            m.instances_queued.clone(),
        );
        registry.register(
            "plugin_outbound_calls",
            "Calls plugins made through the host, by plugin, upstream (or allowed host) and result",
            m.outbound_calls.clone(),
        );
        registry.register(
            "reloads",
            "Config and plugin reloads, by result (ok, refused)",
            m.reloads.clone(),
        );
        registry.register(
            "open_connections",
            "Client connections open on the gateway listeners",
            m.open_connections.clone(),
        );
        registry.register(
            "access_log_dropped",
            "Access log lines dropped because the writer fell behind",
            m.access_log_dropped.clone(),
        );
        Self { registry, ..m }
    }

    /// Turns recording on the request path on or off (`metrics.enabled`).
    pub fn set_enabled(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }

    /// Counts one answered request and its duration (request head to response head).
    pub fn request(
        &self,
        route: Option<&Arc<str>>,
        method: &http::Method,
        status: http::StatusCode,
        elapsed: Duration,
    ) {
        if !self.on.load(Ordering::Relaxed) {
            return;
        }
        let route = Shared(Arc::clone(route.unwrap_or(&self.unmatched)));
        self.requests
            .get_or_create(&RequestLabels {
                route: route.clone(),
                method: method_label(method),
                status_class: status_class(status),
            })
            .inc();
        self.request_duration
            .get_or_create(&RouteLabels { route })
            .observe(elapsed.as_secs_f64());
    }

    /// The series of one upstream target.
    pub fn target(&self, upstream: &str, target: &str) -> TargetMetrics {
        let (upstream, target) = (Shared(upstream.into()), Shared(target.into()));
        let error = |kind| {
            self.upstream_errors
                .get_or_create_owned(&TargetErrorLabels {
                    upstream: upstream.clone(),
                    target: target.clone(),
                    kind,
                })
        };
        TargetMetrics {
            on: Arc::clone(&self.on),
            connect_errors: error("connect"),
            timeouts: error("timeout"),
            duration: self.upstream_duration.get_or_create_owned(&TargetLabels {
                upstream: upstream.clone(),
                target: target.clone(),
            }),
        }
    }

    /// The series of one plugin version.
    pub fn plugin(self: &Arc<Self>, name: &str, version: &str) -> PluginMetrics {
        let (plugin, version) = (Shared(name.into()), Shared(version.into()));
        let call = |phase| {
            self.plugin_calls.get_or_create_owned(&PluginCallLabels {
                plugin: plugin.clone(),
                version: version.clone(),
                phase,
            })
        };
        PluginMetrics {
            instantiation: self
                .plugin_instantiation
                .get_or_create_owned(&PluginLabels {
                    plugin: plugin.clone(),
                    version: version.clone(),
                }),
            on_request: call("on_request"),
            on_response: call("on_response"),
            handle: call("handle"),
            plugin,
            version,
            metrics: Arc::clone(self),
        }
    }

    /// Counts one outbound call of `plugin` to `upstream` (an upstream name or allowed host).
    pub fn outbound_call(&self, plugin: &Arc<str>, upstream: &str, result: &'static str) {
        if !self.on.load(Ordering::Relaxed) {
            return;
        }
        self.outbound_calls
            .get_or_create(&OutboundLabels {
                plugin: Shared(Arc::clone(plugin)),
                upstream: Shared(upstream.into()),
                result,
            })
            .inc();
    }

    /// Counts a reload.
    pub fn reload(&self, refused: bool) {
        let result = if refused { "refused" } else { "ok" };
        self.reloads.get_or_create(&ResultLabels { result }).inc();
    }

    /// A connection opened; the guard counts it closed when dropped.
    pub fn connection(self: &Arc<Self>) -> ConnectionGuard {
        self.open_connections.inc();
        ConnectionGuard(Arc::clone(self))
    }

    /// Counts an access log line the writer could not take.
    pub fn access_log_dropped(&self) {
        self.access_log_dropped.inc();
    }

    /// The exposition, with state gauges read from `runtime` now.
    pub fn render(&self, runtime: &Runtime, format: Format) -> String {
        let _one = self.rendering.lock().unwrap_or_else(|p| p.into_inner());
        let slots = runtime.engine.slots();
        self.instances_in_use.set(gauge(slots.in_use()));
        self.instances_capacity.set(i64::from(slots.capacity()));
        self.instances_queued.set(gauge(slots.queued()));
        // Rebuilt from the live runtime so targets removed by a reload disappear.
        self.target_healthy.clear();
        for upstream in runtime.upstreams.iter() {
            for (target, healthy) in upstream.target_health() {
                self.target_healthy
                    .get_or_create(&TargetLabels {
                        upstream: Shared(upstream.name().into()),
                        target: Shared(target.into()),
                    })
                    .set(i64::from(healthy));
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        match format {
            Format::OpenMetrics => out,
            Format::Text => prometheus_text(&out),
        }
    }
}

/// The Prometheus text format of an OpenMetrics exposition: a counter family `x` (samples
/// `x_total`) is described as `x_total`, and the `# UNIT` and `# EOF` lines go; samples are
/// the same in both.
fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let described = ["# HELP ", "# TYPE "].into_iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match described {
            Some(renamed) => out.push_str(&renamed),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Counts an open connection closed when dropped.
#[derive(Debug)]
pub struct ConnectionGuard(Arc<Metrics>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.open_connections.dec();
    }
}

/// One upstream target's series.
#[derive(Debug, Clone)]
pub struct TargetMetrics {
    on: Arc<AtomicBool>,
    duration: Histogram,
    connect_errors: Counter,
    timeouts: Counter,
}

/// How an exchange with an upstream target ended, for [`TargetMetrics::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    /// A response head arrived (any status).
    Answered,
    /// No connection, or it failed before a response.
    ConnectFailed,
    /// No response head within the timeout.
    TimedOut,
}

impl TargetMetrics {
    /// Records one exchange.
    pub fn record(&self, exchange: Exchange, elapsed: Duration) {
        if !self.on.load(Ordering::Relaxed) {
            return;
        }
        match exchange {
            Exchange::Answered => self.duration.observe(elapsed.as_secs_f64()),
            Exchange::ConnectFailed => {
                self.connect_errors.inc();
            }
            Exchange::TimedOut => {
                self.timeouts.inc();
            }
        }
    }
}

/// A plugin call, for [`PluginMetrics::call`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A filter's `on-request`.
    OnRequest,
    /// A filter's `on-response`.
    OnResponse,
    /// A handler's `handle`.
    Handle,
}

/// One plugin version's series.
#[derive(Clone)]
pub struct PluginMetrics {
    instantiation: Histogram,
    on_request: Histogram,
    on_response: Histogram,
    handle: Histogram,
    plugin: Shared,
    version: Shared,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for PluginMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginMetrics")
            .field("plugin", &self.plugin.0)
            .field("version", &self.version.0)
            .finish_non_exhaustive()
    }
}

impl PluginMetrics {
    /// Records an instantiation.
    pub fn instantiated(&self, elapsed: Duration) {
        if !self.metrics.on.load(Ordering::Relaxed) {
            return;
        }
        self.instantiation.observe(elapsed.as_secs_f64());
    }

    /// Records a call that returned (whatever it returned).
    pub fn call(&self, phase: Phase, elapsed: Duration) {
        if !self.metrics.on.load(Ordering::Relaxed) {
            return;
        }
        let histogram = match phase {
            Phase::OnRequest => &self.on_request,
            Phase::OnResponse => &self.on_response,
            Phase::Handle => &self.handle,
        };
        histogram.observe(elapsed.as_secs_f64());
    }

    /// Counts a failure; `memory` says the plugin's memory cap was hit.
    pub fn failed(&self, kind: PluginFailure, memory: bool) {
        if !self.metrics.on.load(Ordering::Relaxed) {
            return;
        }
        let kind = match kind {
            PluginFailure::Trap if memory => "memory_limit",
            PluginFailure::Trap => "trap",
            PluginFailure::Timeout => "timeout",
            PluginFailure::Overloaded => "overloaded",
            PluginFailure::InvalidOutput => "invalid_output",
            PluginFailure::Instantiate => "instantiate",
        };
        self.metrics
            .plugin_failures
            .get_or_create(&PluginFailureLabels {
                plugin: self.plugin.clone(),
                version: self.version.clone(),
                kind,
            })
            .inc();
    }
}

/// The method as a label: the standard ones by name, anything else `_OTHER` (a client must not
/// be able to mint series).
pub fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => "_OTHER",
    }
}

fn status_class(status: http::StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(method_label(&http::Method::GET), "GET");
        let custom = http::Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&custom), "_OTHER");
        assert_eq!(status_class(http::StatusCode::NOT_FOUND), "4xx");
        assert_eq!(
            status_class(http::StatusCode::from_u16(599).unwrap()),
            "5xx"
        );
    }

    #[test]
    fn counters_and_histograms_render_with_their_labels() {
        let metrics = Arc::new(Metrics::new());
        let route: Arc<str> = "/users/{id}".into();
        metrics.request(
            Some(&route),
            &http::Method::GET,
            http::StatusCode::OK,
            Duration::from_millis(3),
        );
        metrics.request(
            None,
            &http::Method::GET,
            http::StatusCode::NOT_FOUND,
            Duration::from_millis(1),
        );
        let plugin = metrics.plugin("auth", "abc123");
        plugin.failed(PluginFailure::Trap, true);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &metrics.registry).unwrap();
        assert!(
            out.contains(
                r#"tessera_http_requests_total{route="/users/{id}",method="GET",status_class="2xx"} 1"#
            ),
            "{out}"
        );
        assert!(out.contains(r#"route="unmatched""#), "{out}");
        assert!(
            out.contains(r#"tessera_plugin_failures_total{plugin="auth",version="abc123",kind="memory_limit"} 1"#),
            "{out}"
        );
        assert!(out.contains("tessera_http_request_duration_seconds_bucket"));
        assert!(out.ends_with("# EOF\n"));
        let text = prometheus_text(&out);
        assert!(
            text.contains("# TYPE tessera_http_requests_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP tessera_http_requests_total Requests"),
            "{text}"
        );
        assert!(text.contains("# TYPE tessera_http_request_duration_seconds histogram\n"));
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
    }

    #[test]
    fn the_format_follows_accept() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::from_accept(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::from_accept(None), Format::Text);
        assert_eq!(Format::from_accept(Some("*/*")), Format::Text);
        assert_eq!(
            Format::from_accept(Some("application/openmetrics-text;q=0")),
            Format::Text
        );
    }
}
