//! A route's filter chain around its target.
//!
//! Filters see the request in the order the route lists them; the first that answers ends the
//! way in. On the way back every filter that saw the request sees the response, in reverse order.
//! Each filter gets one fresh instance for the request, used for both phases.
//!
//! A body a plugin must see (a handler's, a `buffer_body` filter's) is read before the plugin's
//! instance is taken, so a client sending its body slowly holds no instance; and what a plugin
//! hands back becomes HTTP only through [`crate::headers::from_plugin`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};

use crate::access::ServedBy;
use crate::admission::Admission;
use crate::bindings::{self, RequestAction};
use crate::body::{self, Body, BodyFault, BodyFaultKind, CollectError};
use crate::canary::Canary;
use crate::error::{self, GatewayError, PluginFailure};
use crate::metrics::Phase;
use crate::outbound::OutboundContext;
use crate::plugin::CallLimits;
use crate::plugin::{CallContext, LoadedPlugin, PluginInstance};
use crate::records::{
    apply_request, apply_response, headers_to_plugin, request_to_plugin, response_from_plugin,
};
use crate::runtime::{RouteEntry, RoutePlugin, Runtime, Target};
use crate::telemetry::TraceSpan;

/// What the host imports need to know about the request, shared by every plugin call in it.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// The request id.
    pub request_id: Arc<str>,
    /// The client's address.
    pub client: SocketAddr,
    /// The client's IP as plugins see it: the forwarded one behind a trusted proxy.
    pub client_ip: std::net::IpAddr,
    /// Path parameters of the matched route.
    pub params: Arc<[(String, String)]>,
    /// The request's trace context (the client's `traceparent`, or one the gateway started).
    pub traceparent: Arc<crate::ids::TraceContext>,
    /// The request's span, when traces are on.
    pub trace: Option<TraceSpan>,
    /// `server.max_request_body_bytes`.
    pub body_limit: u64,
    /// `server.body_read_timeout_ms`: longest pause between two pieces of the request body.
    pub body_read_timeout: Duration,
    /// `server.body_buffer_timeout_ms`: total time to receive a body buffered for a plugin.
    pub body_buffer_timeout: Duration,
    /// What went wrong with the request body while it was read, if anything.
    pub body_fault: Arc<BodyFault>,
    /// The request's slots for plugin instances (per connection and per client).
    pub admission: Arc<Admission>,
}

impl RequestInfo {
    /// The error to answer with: a body fault (too large, too slow) wins over whatever failure
    /// it caused downstream.
    fn blame(&self, e: GatewayError) -> GatewayError {
        match self.body_fault.get() {
            Some(BodyFaultKind::TooLarge) => GatewayError::BodyTooLarge {
                limit: usize::try_from(self.body_limit).unwrap_or(usize::MAX),
            },
            Some(BodyFaultKind::Timeout) => GatewayError::BodyTimeout {
                timeout: self.body_read_timeout,
            },
            None => e,
        }
    }
}

/// Runs the route: filters in, target, filters out. Never fails: errors become responses here
/// (through [`error::into_response`]) so that filters still see them on the way out.
pub async fn run(
    runtime: &Runtime,
    route: &RouteEntry,
    request: Request<Body>,
    info: &RequestInfo,
) -> Response<Body> {
    let mut entered: Vec<(PluginInstance, &RoutePlugin)> = Vec::with_capacity(route.filters.len());
    let mut request = Some(request);
    let mut early: Option<Response<Body>> = None;

    for filter in &route.filters {
        let Some(mut current) = request.take() else {
            break;
        };
        // A body the filter sees is read before its instance is taken.
        let mut buffered = None;
        if filter.buffer_body {
            let (parts, body) = current.into_parts();
            match read_request_body(body, runtime.max_body_bytes, info).await {
                Ok(bytes) => {
                    current = Request::from_parts(parts, body::full(bytes.clone()));
                    buffered = Some(bytes);
                }
                Err(e) => {
                    early = Some(error::into_response(&e, &info.request_id));
                    break;
                }
            }
        }
        let mut instance = match instantiate(runtime, route, filter, info).await {
            Ok(i) => i,
            Err(e) if filter.fail_open && !matches!(e, GatewayError::TooManyRequests { .. }) => {
                tracing::warn!(plugin = %filter.plugin, error = %e, "filter failed (fail = \"open\"): request passed on unmodified");
                request = Some(current);
                continue;
            }
            Err(e) => {
                early = Some(error::into_response(&e, &info.request_id));
                break;
            }
        };
        match filter_request(&mut instance, filter, current, buffered, info).await {
            FilterOutcome::Continue(next) => {
                request = Some(next);
                entered.push((instance, filter));
            }
            FilterOutcome::Respond(response) => {
                early = Some(response);
                break;
            }
            FilterOutcome::Failed(e, Some(original)) if filter.fail_open => {
                tracing::warn!(plugin = %filter.plugin, error = %e, "filter failed (fail = \"open\"): request passed on unmodified");
                request = Some(original);
            }
            FilterOutcome::Failed(e, _) => {
                early = Some(error::into_response(&info.blame(e), &info.request_id));
                break;
            }
        }
    }

    let mut response = match (early, request) {
        (Some(r), _) => r,
        (None, Some(request)) => match target(runtime, route, request, info).await {
            Ok(r) => r,
            Err(e) => error::into_response(&info.blame(e), &info.request_id),
        },
        (None, None) => error::into_response(
            &GatewayError::Internal(anyhow::anyhow!("request lost in the filter chain")),
            &info.request_id,
        ),
    };

    while let Some((mut instance, filter)) = entered.pop() {
        response = match filter_response(runtime, &mut instance, filter, response, info).await {
            Ok(r) => {
                release(filter, instance);
                r
            }
            Err((e, Some(original))) if filter.fail_open => {
                tracing::warn!(plugin = %filter.plugin, error = %e, "filter failed (fail = \"open\"): response passed on unmodified");
                original
            }
            Err((e, _)) => error::into_response(&e, &info.request_id),
        };
    }
    response
}

async fn instantiate(
    runtime: &Runtime,
    route: &RouteEntry,
    use_: &RoutePlugin,
    info: &RequestInfo,
) -> Result<PluginInstance, GatewayError> {
    let picked = pick(runtime, use_)?;
    instantiate_picked(runtime, route, use_, info, picked).await
}

/// The plugin version an entry runs for this request: its own, or its canary's for the canary's
/// share of requests.
fn pick<'a>(
    runtime: &'a Runtime,
    use_: &'a RoutePlugin,
) -> Result<(&'a Arc<LoadedPlugin>, Option<&'a Arc<Canary>>), GatewayError> {
    let canary = use_.canary.as_ref().filter(|c| c.pick());
    let name = canary.map_or(use_.plugin.as_str(), |c| c.plugin.as_str());
    let plugin = runtime
        .plugins
        .get(name)
        .ok_or_else(|| GatewayError::Internal(anyhow::anyhow!("plugin `{name}` is not loaded")))?;
    Ok((plugin, canary))
}

async fn instantiate_picked(
    runtime: &Runtime,
    route: &RouteEntry,
    use_: &RoutePlugin,
    info: &RequestInfo,
    (plugin, canary): (&Arc<LoadedPlugin>, Option<&Arc<Canary>>),
) -> Result<PluginInstance, GatewayError> {
    info.admission.enter().await?;
    let name = plugin.name();
    let call = CallContext {
        plugin: Arc::clone(plugin.label()),
        config_json: Arc::clone(&use_.config_json),
        request_id: Arc::clone(&info.request_id),
        route: Arc::clone(&route.pattern),
        params: Arc::clone(&info.params),
        client: info.client_ip,
        outbound: Arc::new(OutboundContext {
            plugin: Arc::from(name),
            metrics: Arc::clone(runtime.engine.metrics()),
            request_id: Arc::clone(&info.request_id),
            traceparent: Arc::clone(&info.traceparent),
            granted: Arc::clone(&use_.upstreams),
            allow_hosts: Arc::clone(&use_.allow_hosts),
            upstreams: Arc::clone(&runtime.upstreams),
            limits: use_.limits.outbound(),
            max_body_bytes: runtime.max_body_bytes,
            max_header_bytes: runtime.max_header_bytes,
        }),
        kv: crate::kv::KvAccess {
            buckets: Arc::clone(&runtime.buckets),
            granted: Arc::clone(&use_.buckets),
        },
    };
    // Reuse serves the entry's own plugin only; a canary's share always gets fresh instances.
    if canary.is_none()
        && let Some(pool) = &use_.reuse
        && let Some(mut instance) = pool.take()
    {
        instance.rebind(call, &use_.limits);
        return Ok(instance);
    }
    match PluginInstance::new(&runtime.engine, plugin, call, &use_.limits).await {
        Ok(instance) => Ok(instance.reporting_to(canary.cloned())),
        Err(e) => {
            // A full pool says nothing about the canary's quality.
            let overloaded = matches!(
                e,
                GatewayError::Plugin {
                    kind: PluginFailure::Overloaded,
                    ..
                }
            );
            if let Some(c) = canary
                && !overloaded
            {
                c.record(true);
            }
            Err(e)
        }
    }
}

enum FilterOutcome {
    Continue(Request<Body>),
    Respond(Response<Body>),
    /// The filter failed; the unmodified request comes back when the failure was the plugin's.
    Failed(GatewayError, Option<Request<Body>>),
}

/// Runs a filter's `on-request`; `buffered` is the request body when the filter sees bodies
/// (already read, and also the body `request` carries).
async fn filter_request(
    instance: &mut PluginInstance,
    filter: &RoutePlugin,
    request: Request<Body>,
    buffered: Option<Bytes>,
    info: &RequestInfo,
) -> FilterOutcome {
    let (parts, body) = request.into_parts();
    let record = request_to_plugin(&parts, buffered.map(|b| b.to_vec()));
    let span = instance.traced(info.trace.as_ref(), Phase::OnRequest);
    let action = instance.on_request(record).await;
    crate::plugin::end_span(span, action.as_ref().err());
    let action = match action {
        Ok(a) => a,
        Err(e) => return FilterOutcome::Failed(e, Some(Request::from_parts(parts, body))),
    };
    match action {
        RequestAction::Continue(rewritten) => {
            let mut next = parts.clone();
            let applied = check_output(
                &filter.limits,
                &rewritten.headers,
                rewritten.body.as_deref(),
            )
            .and_then(|()| apply_request(&mut next, rewritten));
            match applied {
                Ok(Some(bytes)) => {
                    FilterOutcome::Continue(Request::from_parts(next, body::full(bytes)))
                }
                Ok(None) => FilterOutcome::Continue(Request::from_parts(next, body)),
                Err(message) => FilterOutcome::Failed(
                    invalid_output(instance, message),
                    Some(Request::from_parts(parts, body)),
                ),
            }
        }
        RequestAction::Respond(response) => {
            let built = check_output(&filter.limits, &response.headers, response.body.as_deref())
                .and_then(|()| response_from_plugin(response));
            match built {
                Ok(r) => FilterOutcome::Respond(r),
                Err(message) => FilterOutcome::Failed(
                    invalid_output(instance, message),
                    Some(Request::from_parts(parts, body)),
                ),
            }
        }
    }
}

/// Runs a filter's `on-response`; on failure, gives the unmodified response back when it can.
async fn filter_response(
    runtime: &Runtime,
    instance: &mut PluginInstance,
    filter: &RoutePlugin,
    response: Response<Body>,
    info: &RequestInfo,
) -> Result<Response<Body>, (GatewayError, Option<Response<Body>>)> {
    let (parts, body) = response.into_parts();
    let (body, visible) = if filter.buffer_body {
        match body::collect(body, runtime.max_body_bytes).await {
            Ok(bytes) => (body::full(bytes.clone()), Some(bytes.to_vec())),
            Err(CollectError::TooLarge) => {
                let e = GatewayError::Internal(anyhow::anyhow!(
                    "response body larger than {} bytes cannot be buffered for filter `{}`",
                    runtime.max_body_bytes,
                    filter.plugin
                ));
                return Err((e, None));
            }
            Err(CollectError::Stream(e)) => {
                return Err((
                    GatewayError::Internal(anyhow::anyhow!("response body failed: {e}")),
                    None,
                ));
            }
        }
    } else {
        (body, None)
    };
    let record = bindings::Response {
        status: parts.status.as_u16(),
        headers: headers_to_plugin(&parts.headers),
        body: visible,
    };
    let span = instance.traced(info.trace.as_ref(), Phase::OnResponse);
    let rewritten = instance.on_response(record).await;
    crate::plugin::end_span(span, rewritten.as_ref().err());
    let rewritten = match rewritten {
        Ok(r) => r,
        Err(e) => return Err((e, Some(Response::from_parts(parts, body)))),
    };
    let mut next = parts.clone();
    let applied = check_output(
        &filter.limits,
        &rewritten.headers,
        rewritten.body.as_deref(),
    )
    .and_then(|()| apply_response(&mut next, rewritten));
    match applied {
        Ok(Some(bytes)) => Ok(Response::from_parts(next, body::full(bytes))),
        Ok(None) => Ok(Response::from_parts(next, body)),
        Err(message) => Err((
            invalid_output(instance, message),
            Some(Response::from_parts(parts, body)),
        )),
    }
}

/// Refuses plugin output over the entry's caps on header count and total bytes.
fn check_output(
    limits: &CallLimits,
    headers: &[bindings::Header],
    body: Option<&[u8]>,
) -> Result<(), String> {
    if headers.len() > limits.max_output_headers {
        return Err(format!(
            "returned {} headers; at most {} are allowed",
            headers.len(),
            limits.max_output_headers
        ));
    }
    let bytes: usize = headers
        .iter()
        .map(|h| h.name.len() + h.value.len())
        .sum::<usize>()
        + body.map_or(0, <[u8]>::len);
    if bytes > limits.max_output_bytes {
        return Err(format!(
            "returned {bytes} bytes; at most {} are allowed",
            limits.max_output_bytes
        ));
    }
    Ok(())
}

async fn target(
    runtime: &Runtime,
    route: &RouteEntry,
    request: Request<Body>,
    info: &RequestInfo,
) -> Result<Response<Body>, GatewayError> {
    match &route.target {
        Target::Upstream(upstream) => {
            crate::upstream::proxy(
                upstream,
                request,
                info.client,
                &info.request_id,
                info.trace.as_ref(),
            )
            .await
        }
        Target::Handler(handler) => {
            let picked = pick(runtime, handler)?;
            if picked.0.serves_wasi_http() {
                // A standard wasi:http component reads the body as it streams in.
                let mut instance =
                    instantiate_picked(runtime, route, handler, info, picked).await?;
                let span = instance.traced(info.trace.as_ref(), Phase::Handle);
                let served_by = Arc::clone(instance.plugin().label());
                let mut answer = instance
                    .serve_wasi_http(request, &handler.limits, span)
                    .await?;
                answer.extensions_mut().insert(ServedBy(served_by));
                return Ok(answer);
            }
            // The body first: a slow client must not hold an instance while it sends.
            let (parts, body) = request.into_parts();
            let bytes = read_request_body(body, runtime.max_body_bytes, info).await?;
            let mut instance = instantiate_picked(runtime, route, handler, info, picked).await?;
            let record = request_to_plugin(&parts, Some(bytes.to_vec()));
            let span = instance.traced(info.trace.as_ref(), Phase::Handle);
            let response = instance.handle(record).await;
            crate::plugin::end_span(span, response.as_ref().err());
            let response = response?;
            let mut answer =
                check_output(&handler.limits, &response.headers, response.body.as_deref())
                    .and_then(|()| response_from_plugin(response))
                    .map_err(|e| invalid_output(&instance, e))?;
            answer
                .extensions_mut()
                .insert(ServedBy(Arc::clone(instance.plugin().label())));
            release(handler, instance);
            Ok(answer)
        }
    }
}

/// An instance whose request went well: back to its entry's reuse pool when the entry opted in
/// (the pool decides whether it may serve again), dropped otherwise. Failed instances are never
/// released, so they are always dropped.
fn release(use_: &RoutePlugin, instance: PluginInstance) {
    if let Some(pool) = &use_.reuse {
        pool.give_back(instance);
    }
}

/// Reads a request body a plugin will see, within `limit` bytes and `server.body_buffer_timeout_ms`
/// (pauses are cut short by `server.body_read_timeout_ms` while streaming).
async fn read_request_body(
    body: Body,
    limit: usize,
    info: &RequestInfo,
) -> Result<Bytes, GatewayError> {
    let read = tokio::time::timeout(info.body_buffer_timeout, body::collect(body, limit)).await;
    match read {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(CollectError::TooLarge)) => Err(GatewayError::BodyTooLarge { limit }),
        Ok(Err(CollectError::Stream(e))) => Err(info.blame(GatewayError::BadRequest(format!(
            "could not read the request body: {e}"
        )))),
        Err(_) => {
            info.body_fault.set(BodyFaultKind::Timeout);
            Err(GatewayError::BodyTimeout {
                timeout: info.body_buffer_timeout,
            })
        }
    }
}

fn invalid_output(instance: &PluginInstance, message: String) -> GatewayError {
    instance.plugin().count_error();
    GatewayError::Plugin {
        plugin: instance.plugin().label().to_string(),
        kind: PluginFailure::InvalidOutput,
        source: anyhow::anyhow!(message),
    }
}
