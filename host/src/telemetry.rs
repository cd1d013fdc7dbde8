//! OpenTelemetry traces, exported over OTLP/HTTP (protobuf) when `[telemetry]` enables them.
//!
//! Every request gets a `tessera.request` server span, continuing the client's `traceparent`
//! when it sent a valid one; each plugin call a `tessera.plugin.<phase>` span under it; each
//! call to an upstream (proxied, or made by a plugin) a `tessera.outbound` client span under
//! the request or the plugin call, whose id is the parent in the `traceparent` the upstream
//! receives. Attributes follow the OpenTelemetry HTTP semantic conventions.
//!
//! One tracer provider per gateway (nothing global), so several gateways in one process export
//! to their own collectors. Spans are batched and exported off the request path; export goes
//! through a hyper client on the gateway's own tokio runtime.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};

use crate::config::TelemetryConfig;

/// The gateway's tracer, when traces are on.
pub struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        // Shutting the provider down waits for its last export, which runs on the tokio runtime;
        // the last reference may be dropped on one of its workers, so wait on a thread of its own.
        let provider = self.provider.clone();
        let _ = std::thread::Builder::new()
            .name("tessera-telemetry-stop".into())
            .spawn(move || {
                let _ = provider.shutdown();
            });
    }
}

impl Telemetry {
    /// The tracer for `config`, or `None` when traces are off (`enabled = false`, or
    /// `OTEL_SDK_DISABLED=true`). Must run inside the tokio runtime that will export.
    pub fn start(config: &TelemetryConfig) -> anyhow::Result<Option<Arc<Self>>> {
        let disabled =
            std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
        if !config.enabled || disabled {
            return Ok(None);
        }
        let client = ExportClient {
            runtime: tokio::runtime::Handle::try_current()
                .map_err(|_| anyhow::anyhow!("telemetry must start inside the tokio runtime"))?,
            client: hyper_util::client::legacy::Client::builder(
                hyper_util::rt::TokioExecutor::new(),
            )
            .build_http(),
        };
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_http_client(client);
        if let Some(endpoint) = &config.endpoint {
            exporter = exporter.with_endpoint(endpoint.clone());
        }
        let exporter = exporter
            .build()
            .map_err(|e| anyhow::anyhow!("telemetry: cannot build the OTLP exporter: {e}"))?;
        let service = config
            .service_name
            .clone()
            .or_else(|| std::env::var("OTEL_SERVICE_NAME").ok())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "tessera".to_owned());
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sample_ratio,
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(service)
                    .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                    .build(),
            )
            .build();
        let tracer = provider.tracer("tessera");
        Ok(Some(Arc::new(Self { provider, tracer })))
    }

    /// Exports every finished span now (blocking; run it off the async workers).
    pub fn flush(&self) {
        if let Err(e) = self.provider.force_flush() {
            tracing::warn!(error = %e, "exporting traces failed");
        }
    }

    /// Starts a request's server span, continuing `incoming` (a valid `traceparent`) if any.
    pub fn request(
        self: &Arc<Self>,
        incoming: Option<&str>,
        attributes: Vec<KeyValue>,
    ) -> TraceSpan {
        let parent = match incoming.and_then(remote_context) {
            Some(remote) => Context::new().with_remote_span_context(remote),
            None => Context::new(),
        };
        self.span(
            &parent,
            "tessera.request".into(),
            SpanKind::Server,
            attributes,
        )
    }

    fn span(
        self: &Arc<Self>,
        parent: &Context,
        name: Cow<'static, str>,
        kind: SpanKind,
        attributes: Vec<KeyValue>,
    ) -> TraceSpan {
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, parent);
        TraceSpan {
            context: parent.with_span(span),
            telemetry: Arc::clone(self),
        }
    }
}

/// A started span; it ends when [`TraceSpan::end`] is called or it is dropped.
#[derive(Clone)]
pub struct TraceSpan {
    context: Context,
    telemetry: Arc<Telemetry>,
}

impl fmt::Debug for TraceSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TraceSpan")
            .field(&self.traceparent())
            .finish()
    }
}

impl TraceSpan {
    /// A child span.
    pub fn child(
        &self,
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        attributes: Vec<KeyValue>,
    ) -> TraceSpan {
        self.telemetry
            .span(&self.context, name.into(), kind, attributes)
    }

    /// This span as a W3C `traceparent` value (the parent id a callee should record).
    pub fn traceparent(&self) -> String {
        let span = self.context.span();
        let cx = span.span_context();
        format!(
            "00-{}-{}-{:02x}",
            cx.trace_id(),
            cx.span_id(),
            cx.trace_flags().to_u8()
        )
    }

    /// The trace id, as 32 hex digits.
    pub fn trace_id(&self) -> String {
        self.context.span().span_context().trace_id().to_string()
    }

    /// Adds an attribute.
    pub fn set(&self, attribute: KeyValue) {
        self.context.span().set_attribute(attribute);
    }

    /// Marks the span failed, with `error.type`.
    pub fn fail(&self, error_type: impl Into<Cow<'static, str>>) {
        let error_type = error_type.into();
        let span = self.context.span();
        span.set_attribute(KeyValue::new("error.type", error_type.clone()));
        span.set_status(Status::error(error_type));
    }

    /// Ends the span now.
    pub fn end(&self) {
        self.context.span().end();
    }
}

/// The remote parent named by a valid `traceparent`.
fn remote_context(traceparent: &str) -> Option<SpanContext> {
    let valid = crate::ids::parse_traceparent(traceparent)?;
    let mut parts = valid.split('-');
    let (_, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(flags & 1),
        true,
        TraceState::default(),
    ))
}

/// The OTLP exporter's HTTP client: the batch exporter runs on its own thread, so each export
/// is handed to the gateway's tokio runtime and awaited from there.
#[derive(Debug, Clone)]
struct ExportClient {
    runtime: tokio::runtime::Handle,
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<Bytes>,
    >,
}

/// Longest an export may take, response included.
const EXPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Largest collector answer read.
const MAX_EXPORT_RESPONSE: usize = 64 * 1024;

impl opentelemetry_http::HttpClient for ExportClient {
    fn send_bytes<'a, 'b>(
        &'a self,
        request: http::Request<Bytes>,
    ) -> Pin<
        Box<
            dyn Future<Output = Result<http::Response<Bytes>, opentelemetry_http::HttpError>>
                + Send
                + 'b,
        >,
    >
    where
        'a: 'b,
        Self: 'b,
    {
        let client = self.client.clone();
        let task = self.runtime.spawn(async move {
            let request = request.map(http_body_util::Full::new);
            let exchange = async {
                let response = client.request(request).await?;
                let (parts, body) = response.into_parts();
                let body = http_body_util::Limited::new(body, MAX_EXPORT_RESPONSE)
                    .collect()
                    .await?
                    .to_bytes();
                Ok::<_, opentelemetry_http::HttpError>(http::Response::from_parts(parts, body))
            };
            match tokio::time::timeout(EXPORT_TIMEOUT, exchange).await {
                Ok(result) => result,
                Err(_) => Err("the trace collector did not answer in time".into()),
            }
        });
        Box::pin(async move {
            match task.await {
                Ok(result) => result,
                Err(e) => Err(Box::new(e) as opentelemetry_http::HttpError),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incoming_trace_context_is_parsed() {
        let cx = remote_context("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(
            cx.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(cx.span_id().to_string(), "00f067aa0ba902b7");
        assert!(cx.is_sampled());
        assert!(cx.is_remote());
        assert!(
            remote_context("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none()
        );
        assert!(remote_context("nonsense").is_none());
    }
}
