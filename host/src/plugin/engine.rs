//! The wasmtime engine shared by all plugins of a gateway: the pooling allocator, the epoch
//! ticker that plugin deadlines count in, the linker, compiling a component and creating the
//! store each request's instance lives in.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::WasiHttpCtx;

use super::cache;
use super::registry::{LoadError, LoadedPlugin};
use super::state::{CallContext, LogBudget, PluginLimiter, PluginOutput, PluginState};
use crate::bindings::{self, config_check, request_filter, request_handler};
use crate::config::{PluginLimits, PluginsConfig};
use crate::metrics::Metrics;
use crate::outbound::{Outbound, OutboundLimits};
use wasmtime_wasi_http::p2::bindings::exports::wasi::http::incoming_handler;

/// The limits one plugin call runs under: `[plugins.limits]` with the route entry's overrides.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    /// Wall-clock budget of each call into the plugin.
    pub timeout: Duration,
    /// Linear memory cap.
    pub memory_bytes: usize,
    /// Outbound calls in total.
    pub max_calls: u32,
    /// Outbound calls at once.
    pub max_in_flight: u32,
    /// Bytes of headers and body the plugin may return.
    pub max_output_bytes: usize,
    /// Header fields the plugin may return.
    pub max_output_headers: usize,
    /// Log lines the instance may write.
    pub max_log_lines: u32,
    /// Bytes of log messages the instance may write.
    pub max_log_bytes: usize,
}

impl CallLimits {
    /// From resolved `[plugins.limits]`.
    pub fn from_config(limits: &PluginLimits) -> Self {
        Self {
            timeout: Duration::from_millis(limits.timeout_ms),
            memory_bytes: limits.memory_bytes,
            max_calls: limits.max_calls,
            max_in_flight: limits.max_in_flight,
            max_output_bytes: limits.max_output_bytes,
            max_output_headers: limits.max_output_headers,
            max_log_lines: limits.max_log_lines,
            max_log_bytes: limits.max_log_bytes,
        }
    }

    /// The outbound part.
    pub fn outbound(&self) -> OutboundLimits {
        OutboundLimits {
            max_calls: self.max_calls,
            max_in_flight: self.max_in_flight,
        }
    }
}

/// How often the epoch advances; the granularity of plugin deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Admission to the instance pool: at most `plugins.max_instances` instances alive at once; a
/// request past that waits in a queue (at most `plugins.max_queued` waiting, each at most
/// `plugins.queue_timeout_ms`) and is answered 503 + `retry-after` when it cannot get a slot.
/// The wait is not part of the plugin's own deadline.
#[derive(Debug)]
pub struct InstanceSlots {
    free: Arc<Semaphore>,
    capacity: u32,
    queued: AtomicUsize,
    max_queued: usize,
    queue_timeout: Duration,
}

/// Why no instance slot was had.
#[derive(Debug, thiserror::Error)]
pub enum NoSlot {
    /// The queue already holds `max_queued` requests.
    #[error("all {capacity} plugin instances are busy and {queued} requests already wait")]
    QueueFull {
        /// `plugins.max_instances`.
        capacity: u32,
        /// Requests waiting.
        queued: usize,
    },
    /// No slot came free within the queue timeout.
    #[error("no plugin instance came free within {0:?}")]
    TimedOut(Duration),
}

impl InstanceSlots {
    fn new(config: &PluginsConfig) -> Self {
        Self {
            free: Arc::new(Semaphore::new(config.max_instances as usize)),
            capacity: config.max_instances,
            queued: AtomicUsize::new(0),
            max_queued: config.max_queued,
            queue_timeout: Duration::from_millis(config.queue_timeout_ms),
        }
    }

    /// A slot for one instance, held until the permit is dropped (with the instance).
    pub async fn take(&self) -> Result<OwnedSemaphorePermit, NoSlot> {
        if let Ok(permit) = Arc::clone(&self.free).try_acquire_owned() {
            return Ok(permit);
        }
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let ahead = self.queued.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.queued);
        if ahead >= self.max_queued {
            return Err(NoSlot::QueueFull {
                capacity: self.capacity,
                queued: ahead,
            });
        }
        match tokio::time::timeout(self.queue_timeout, Arc::clone(&self.free).acquire_owned()).await
        {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(NoSlot::TimedOut(self.queue_timeout)),
        }
    }

    /// Instances alive now.
    pub fn in_use(&self) -> usize {
        (self.capacity as usize).saturating_sub(self.free.available_permits())
    }

    /// `plugins.max_instances`.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Requests waiting for a slot now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

/// The wasmtime engine, its linker and the epoch ticker, shared by all plugins of a gateway.
pub struct PluginEngine {
    engine: Engine,
    linker: Linker<PluginState>,
    limits: PluginLimits,
    slots: InstanceSlots,
    metrics: Arc<Metrics>,
    ticker_stop: Arc<AtomicBool>,
}

impl fmt::Debug for PluginEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginEngine")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Drop for PluginEngine {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl PluginEngine {
    /// Builds an engine for the `[plugins]` settings.
    pub fn new(config: &PluginsConfig) -> anyhow::Result<Self> {
        let limits = config.limits;
        let mut pool = PoolingAllocationConfig::default();
        let n = config.max_instances;
        pool.total_component_instances(n)
            // Core instances per component instance: a Rust guest is one main module plus two
            // small shims (3); componentize-js makes 4; componentize-py links libc, libpython and
            // its runtime as separate modules (14). The slots are counted, not preallocated.
            .total_core_instances(n.saturating_mul(16))
            .total_memories(n)
            .total_tables(n.saturating_mul(4))
            .total_stacks(n)
            .max_memory_size(limits.memory_bytes)
            // Resetting a slot by rewriting its pages is far cheaper than faulting them back in.
            .pagemap_scan(Enabled::Auto)
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(1 << 20);
        let mut wasm = Config::new();
        wasm.epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .cranelift_opt_level(wasmtime::OptLevel::Speed);
        // `TESSERA_WASM_PROFILER=perfmap` writes /tmp/perf-<pid>.map so `perf` can name the
        // functions of plugins in its reports.
        if std::env::var("TESSERA_WASM_PROFILER").is_ok_and(|v| v == "perfmap") {
            wasm.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&wasm)
            .map_err(anyhow::Error::from)
            .context("creating the wasm engine")?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking WASI")?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking wasi:http")?;
        bindings::PluginWorld::add_to_linker::<_, HasSelf<PluginState>>(&mut linker, |s| s)
            .map_err(anyhow::Error::from)
            .context("linking the tessera:gateway imports")?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&ticker_stop);
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("tessera-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .context("starting the epoch thread")?;

        Ok(Self {
            engine,
            linker,
            limits,
            slots: InstanceSlots::new(config),
            metrics: Arc::new(Metrics::new()),
            ticker_stop,
        })
    }

    /// Admission to the instance pool, and its gauges.
    pub fn slots(&self) -> &InstanceSlots {
        &self.slots
    }

    /// The gateway's metrics (one set per engine, so per gateway).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The underlying engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The limits each call gets.
    pub fn limits(&self) -> PluginLimits {
        self.limits
    }

    /// Compiles a component (or loads it from `cache_dir`) and checks its imports and exports.
    /// Runs the compiler on a blocking thread.
    pub async fn load(
        self: &Arc<Self>,
        name: &str,
        bytes: Vec<u8>,
        cache_dir: Option<&Path>,
    ) -> Result<LoadedPlugin, LoadError> {
        let digest = Sha256::digest(&bytes);
        let version = cache::hex(&digest[..6]);
        let this = Arc::clone(self);
        let cache = cache_dir.map(|dir| {
            dir.join(format!(
                "{}-{:016x}.cwasm",
                cache::hex(&digest),
                self.fingerprint()
            ))
        });
        let component = tokio::task::spawn_blocking(move || this.compile(&bytes, cache.as_deref()))
            .await
            .map_err(|e| LoadError::Internal(anyhow::Error::new(e).context("compiler thread")))??;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::MissingImports(e.into()))?;
        let filter = request_filter::GuestIndices::new(&pre).ok();
        let handler = request_handler::GuestIndices::new(&pre).ok();
        let config_check = config_check::GuestIndices::new(&pre).ok();
        // A standard `wasi:http/proxy` component (any 0.2.x): a handler with streaming bodies.
        // A component that also exports the tessera handler is served as that.
        let wasi_http = if handler.is_none() {
            incoming_handler::GuestIndices::new(&pre).ok()
        } else {
            None
        };
        // Outgoing `wasi:http` calls are not tracked across requests like `http-client` ones,
        // so a component importing them never gets a reused instance.
        let engine = self.engine.clone();
        let imports_wasi_http = component
            .component_type()
            .imports(&engine)
            .any(|(name, _)| name.starts_with("wasi:http/"));
        if filter.is_none() && handler.is_none() && wasi_http.is_none() {
            return Err(LoadError::WrongWorld(
                "the component exports none of tessera:gateway/request-filter, tessera:gateway/request-handler and wasi:http/incoming-handler".into(),
            ));
        }
        Ok(LoadedPlugin {
            name: name.to_owned(),
            label: format!("{name}@{version}").into(),
            metrics: self.metrics.plugin(name, &version),
            version,
            digest: digest.into(),
            loaded_at: SystemTime::now(),
            requests: Default::default(),
            errors: Default::default(),
            pre,
            filter,
            handler,
            wasi_http,
            imports_wasi_http,
            config_check,
            accepted_configs: Default::default(),
        })
    }

    /// A hash of everything about this engine that decides whether compiled code fits it.
    fn fingerprint(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        h.finish()
    }

    fn compile(&self, bytes: &[u8], cache: Option<&Path>) -> Result<Component, LoadError> {
        match bytes.get(..8) {
            Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => return Err(LoadError::CoreModule),
            Some([0, b'a', b's', b'm', _, _, 1, 0]) => {}
            _ => return Err(LoadError::NotAComponent),
        }
        if let Some(path) = cache
            && let Some(component) = cache::read(&self.engine, path)
        {
            return Ok(component);
        }
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| LoadError::Compile(anyhow::Error::from(e)))?;
        if let Some(path) = cache
            && let Err(e) = cache::write(path, &component)
        {
            tracing::warn!(cache = %path.display(), error = %e, "could not write the plugin cache");
        }
        Ok(component)
    }

    /// Creates a store for one request.
    pub(super) fn store(&self, call: Arc<CallContext>, limits: &CallLimits) -> Store<PluginState> {
        let memory_bytes = limits.memory_bytes;
        let log = Arc::new(arc_swap::ArcSwap::from_pointee(LogBudget::new(
            &call, limits,
        )));
        let mut wasi = WasiCtx::builder();
        wasi.stdout(PluginOutput {
            log: Arc::clone(&log),
            stream: "stdout",
        })
        .stderr(PluginOutput {
            log: Arc::clone(&log),
            stream: "stderr",
        })
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
        let state = PluginState {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limiter: PluginLimiter {
                max_memory: memory_bytes.min(self.limits.memory_bytes),
                memory_denied: false,
            },
            outbound: Outbound::new(Arc::clone(&call.outbound)),
            call,
            log,
            open_calls: 0,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn load_errors_say_what_is_wrong_and_whose_fault_it_is() {
        let engine = Arc::new(PluginEngine::new(&PluginsConfig::default()).unwrap());
        let load = |bytes: &[u8]| engine.load("p", bytes.to_vec(), None);
        let garbage = load(b"\x00\x01not wasm").await.unwrap_err();
        assert!(matches!(garbage, LoadError::NotAComponent), "{garbage:?}");
        let core = load(b"\0asm\x01\0\0\0").await.unwrap_err();
        assert!(matches!(core, LoadError::CoreModule), "{core:?}");
        // A component header followed by nonsense.
        let broken = load(b"\0asm\x0d\0\x01\0\xff\xff").await.unwrap_err();
        assert!(matches!(broken, LoadError::Compile(_)), "{broken:?}");
        assert!(garbage.is_client_fault() && core.is_client_fault() && broken.is_client_fault());
        let io = LoadError::Io {
            action: "writing",
            path: "/x".into(),
            source: std::io::Error::other("disk full"),
        };
        assert!(!io.is_client_fault());
    }
}
