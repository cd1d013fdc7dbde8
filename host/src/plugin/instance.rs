//! One plugin instance serving one request: instantiation, the deadline of each call, and how a
//! failed call (trap, timeout, memory limit, exhausted pool) becomes a [`GatewayError`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use wasmtime::{Store, Trap, UpdateDeadline};

use super::engine::{CallLimits, PluginEngine};
use super::registry::LoadedPlugin;
use super::state::{CallContext, PluginState};
use crate::bindings::{self, RequestAction, request_filter, request_handler};
use crate::error::{GatewayError, PluginFailure};
use crate::metrics::Phase;
use crate::telemetry::TraceSpan;
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;

/// One plugin instance serving one request. A filter's instance lives from its on-request to its
/// on-response, so a filter may carry state between the two phases of the same request.
pub struct PluginInstance {
    pub(super) store: Store<PluginState>,
    pub(super) plugin: Arc<LoadedPlugin>,
    pub(super) instance: wasmtime::component::Instance,
    pub(super) timeout: Duration,
    canary: Option<Arc<crate::canary::Canary>>,
    failed: bool,
    /// The filter or handler exports, once looked up.
    filter: Option<request_filter::Guest>,
    handler: Option<request_handler::Guest>,
    /// When it was instantiated and how many requests it served (reuse mode bounds both).
    born: Instant,
    served: u32,
    /// The instance's slot in the pool; given back after the store (and its instance) is gone.
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for PluginInstance {
    fn drop(&mut self) {
        if let Some(canary) = &self.canary {
            canary.record(self.failed);
        }
    }
}

impl fmt::Debug for PluginInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginInstance")
            .field("plugin", &self.plugin.label())
            .finish_non_exhaustive()
    }
}

impl PluginInstance {
    /// Instantiates `plugin` for a request.
    pub async fn new(
        engine: &PluginEngine,
        plugin: &Arc<LoadedPlugin>,
        call: CallContext,
        limits: &CallLimits,
    ) -> Result<Self, GatewayError> {
        // Waiting for a slot is not the plugin's time: its deadline starts after.
        let slot = engine
            .slots()
            .take()
            .await
            .map_err(|e| GatewayError::Plugin {
                plugin: plugin.label().to_string(),
                kind: PluginFailure::Overloaded,
                source: e.into(),
            })?;
        plugin.requests.fetch_add(1, Ordering::Relaxed);
        let mut store = engine.store(Arc::new(call), limits);
        let timeout = limits.timeout;
        arm_deadline(&mut store, timeout);
        let started = Instant::now();
        let instance =
            match tokio::time::timeout(timeout, plugin.pre.instantiate_async(&mut store)).await {
                Ok(Ok(instance)) => {
                    plugin.metrics.instantiated(started.elapsed());
                    instance
                }
                Ok(Err(e)) => {
                    let kind = if is_pool_exhausted(&e) {
                        PluginFailure::Overloaded
                    } else if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
                        // The epoch deadline passed during the component's start functions.
                        PluginFailure::Timeout
                    } else if e.downcast_ref::<Trap>().is_some() {
                        PluginFailure::Trap
                    } else {
                        PluginFailure::Instantiate
                    };
                    return Err(failure(
                        plugin,
                        kind,
                        anyhow::Error::from(e).context("instantiating"),
                    ));
                }
                Err(_) => {
                    return Err(failure(
                        plugin,
                        PluginFailure::Timeout,
                        anyhow::anyhow!("instantiation timed out"),
                    ));
                }
            };
        Ok(Self {
            store,
            plugin: Arc::clone(plugin),
            instance,
            timeout,
            canary: None,
            failed: false,
            filter: None,
            handler: None,
            born: Instant::now(),
            served: 1,
            _slot: slot,
        })
    }

    /// Points a reused instance at its next request: new request context, outbound state and log
    /// budget. Guest memory is what the previous request left.
    pub fn rebind(&mut self, call: CallContext, limits: &CallLimits) {
        self.plugin.requests.fetch_add(1, Ordering::Relaxed);
        self.timeout = limits.timeout;
        self.served += 1;
        let call = Arc::new(call);
        let state = self.store.data_mut();
        state
            .log
            .store(Arc::new(super::state::LogBudget::new(&call, limits)));
        state.outbound = crate::outbound::Outbound::new(Arc::clone(&call.outbound));
        state.call = call;
    }

    /// Whether this instance may serve another request: it never failed (trap, timeout, memory
    /// cap, invalid output), holds no outbound call open, and is within `max_requests` and
    /// `max_age`.
    pub fn reusable(&self, max_requests: u32, max_age: Duration) -> bool {
        let state = self.store.data();
        !self.failed
            && !state.limiter.memory_denied
            && state.open_calls == 0
            && self.canary.is_none()
            && self.served < max_requests
            && self.born.elapsed() < max_age
    }

    /// Makes this instance report its outcome (trapped or timed out, or not) to a canary.
    pub fn reporting_to(mut self, canary: Option<Arc<crate::canary::Canary>>) -> Self {
        self.canary = canary;
        self
    }

    /// The plugin this instance runs.
    pub fn plugin(&self) -> &Arc<LoadedPlugin> {
        &self.plugin
    }

    /// Starts the span of the next call under the request's span (when traces are on); the
    /// plugin's outbound calls during it are its children.
    pub fn traced(&mut self, request: Option<&TraceSpan>, phase: Phase) -> Option<TraceSpan> {
        let span = request.map(|parent| {
            let name = match phase {
                Phase::OnRequest => "tessera.plugin.on_request",
                Phase::OnResponse => "tessera.plugin.on_response",
                Phase::Handle => "tessera.plugin.handle",
            };
            parent.child(
                name,
                SpanKind::Internal,
                vec![
                    KeyValue::new("tessera.plugin.name", self.plugin.name().to_owned()),
                    KeyValue::new("tessera.plugin.version", self.plugin.version().to_owned()),
                ],
            )
        });
        self.store.data_mut().outbound.parent = span.clone();
        span
    }

    /// Calls the filter's `on-request`.
    pub async fn on_request(
        &mut self,
        request: bindings::Request,
    ) -> Result<RequestAction, GatewayError> {
        let guest = self.filter_guest()?;
        arm_deadline(&mut self.store, self.timeout);
        let started = Instant::now();
        let result = tokio::time::timeout(
            self.timeout,
            guest.call_on_request(&mut self.store, &request),
        )
        .await;
        self.finish(result, Phase::OnRequest, started)
    }

    /// Calls the filter's `on-response`.
    pub async fn on_response(
        &mut self,
        response: bindings::Response,
    ) -> Result<bindings::Response, GatewayError> {
        let guest = self.filter_guest()?;
        arm_deadline(&mut self.store, self.timeout);
        let started = Instant::now();
        let result = tokio::time::timeout(
            self.timeout,
            guest.call_on_response(&mut self.store, &response),
        )
        .await;
        self.finish(result, Phase::OnResponse, started)
    }

    /// Calls the handler's `handle`.
    pub async fn handle(
        &mut self,
        request: bindings::Request,
    ) -> Result<bindings::Response, GatewayError> {
        let guest = match &self.handler {
            Some(guest) => guest.clone(),
            None => {
                let indices = self
                    .plugin
                    .handler
                    .as_ref()
                    .ok_or_else(|| self.not_a("handler"))?;
                let guest = indices
                    .load(&mut self.store, &self.instance)
                    .map_err(|e| failure(&self.plugin, PluginFailure::Instantiate, e.into()))?;
                self.handler = Some(guest.clone());
                guest
            }
        };
        arm_deadline(&mut self.store, self.timeout);
        let started = Instant::now();
        let result =
            tokio::time::timeout(self.timeout, guest.call_handle(&mut self.store, &request)).await;
        self.finish(result, Phase::Handle, started)
    }

    /// The filter's exports, looked up (and type-checked) once per instance: a filter calls
    /// twice per request, a reused one many times.
    fn filter_guest(&mut self) -> Result<request_filter::Guest, GatewayError> {
        if let Some(guest) = &self.filter {
            return Ok(guest.clone());
        }
        let indices = self
            .plugin
            .filter
            .as_ref()
            .ok_or_else(|| self.not_a("filter"))?;
        let guest = indices
            .load(&mut self.store, &self.instance)
            .map_err(|e| failure(&self.plugin, PluginFailure::Instantiate, e.into()))?;
        self.filter = Some(guest.clone());
        Ok(guest)
    }

    pub(super) fn not_a(&self, world: &str) -> GatewayError {
        failure(
            &self.plugin,
            PluginFailure::Instantiate,
            anyhow::anyhow!("plugin is not a {world}"),
        )
    }

    pub(super) fn finish<R>(
        &mut self,
        result: Result<wasmtime::Result<R>, tokio::time::error::Elapsed>,
        phase: Phase,
        started: Instant,
    ) -> Result<R, GatewayError> {
        self.plugin.metrics.call(phase, started.elapsed());
        if !matches!(result, Ok(Ok(_))) {
            self.failed = true;
        }
        let export = match phase {
            Phase::OnRequest => "on-request",
            Phase::OnResponse => "on-response",
            Phase::Handle => "handle",
        };
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                let kind = match e.downcast_ref::<Trap>() {
                    Some(Trap::Interrupt) => PluginFailure::Timeout,
                    _ => PluginFailure::Trap,
                };
                let mut e = anyhow::Error::from(e).context(format!("{export} trapped"));
                let memory = self.store.data().limiter.memory_denied;
                if memory {
                    e = e.context(format!(
                        "the plugin's memory limit ({} bytes) was reached",
                        self.store.data().limiter.max_memory
                    ));
                }
                self.plugin.metrics.failed(kind, memory);
                self.plugin.errors.fetch_add(1, Ordering::Relaxed);
                Err(GatewayError::Plugin {
                    plugin: self.plugin.label().to_string(),
                    kind,
                    source: e,
                })
            }
            Err(_) => Err(failure(
                &self.plugin,
                PluginFailure::Timeout,
                anyhow::anyhow!("{export} did not finish within {:?}", self.timeout),
            )),
        }
    }
}

/// Arms the epoch deadline for one call: the guest yields to tokio every tick, and traps with
/// `Trap::Interrupt` once the wall-clock budget is spent.
pub(super) fn arm_deadline(store: &mut Store<PluginState>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if Instant::now() >= deadline {
            Ok(UpdateDeadline::Interrupt)
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
}

/// Whether instantiation failed because the pooling allocator is at `plugins.max_instances`
/// (or another of its concurrency caps): recognised by wasmtime's error type, not its wording.
fn is_pool_exhausted(e: &wasmtime::Error) -> bool {
    e.chain()
        .any(|cause| cause.is::<wasmtime::PoolConcurrencyLimitError>())
}

pub(super) fn failure(
    plugin: &LoadedPlugin,
    kind: PluginFailure,
    source: anyhow::Error,
) -> GatewayError {
    plugin.errors.fetch_add(1, Ordering::Relaxed);
    plugin.metrics.failed(kind, false);
    GatewayError::Plugin {
        plugin: plugin.label().to_string(),
        kind,
        source,
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

    use super::*;

    #[test]
    fn pool_exhaustion_is_recognised_by_type_not_text() {
        let lookalike =
            wasmtime::Error::msg("maximum concurrent limit of 256 for component instances reached");
        assert!(!is_pool_exhausted(&lookalike));

        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(1)
            .total_core_instances(1)
            .total_memories(1)
            .total_tables(1);
        let mut config = Config::new();
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).unwrap();
        // `(module (memory 1))`, in binary.
        let wasm = b"\0asm\x01\0\0\0\x05\x03\x01\x00\x01";
        let module = wasmtime::Module::new(&engine, wasm).unwrap();
        let mut store = Store::new(&engine, ());
        let _first = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
        let second = wasmtime::Instance::new(&mut store, &module, &[]).unwrap_err();
        assert!(is_pool_exhausted(&second), "{second:#}");
    }
}
