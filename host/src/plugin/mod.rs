//! The plugin runtime: engine, loading, a fresh instance per request, limits, host imports.
//!
//! A plugin is compiled once per version into an [`InstancePre`]; every request that uses it gets
//! a new [`Store`] and instance from the pooling allocator. Each call into the guest runs under a
//! wall-clock deadline enforced twice: epoch interruption traps a guest that computes past it, and
//! a tokio timeout ends a call that waits on the host past it (epochs do not tick there).

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, InstancePre, Linker, ResourceTable};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter,
    Store, Trap, UpdateDeadline,
};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::{self, RequestAction, request_filter, request_handler};
use crate::config::{PluginLimits, PluginUse, PluginsConfig};
use crate::error::{GatewayError, PluginFailure};
use crate::outbound::{Outbound, OutboundLimits};
use crate::upstream::Upstreams;

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

/// Why a plugin could not be loaded (from a file, the admin API or a reload). Client faults
/// (what was uploaded or configured is wrong) and server faults (the disk, the gateway) are told
/// apart by [`LoadError::is_client_fault`], so the admin API can answer 4xx or 5xx.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly component (the file does not start with the component header)")]
    NotAComponent,
    /// A core module, not a component.
    #[error("this is a core wasm module, not a component; build the plugin for wasm32-wasip2")]
    CoreModule,
    /// A component that does not validate or compile.
    #[error("the component could not be compiled")]
    Compile(#[source] anyhow::Error),
    /// It imports something the gateway does not provide.
    #[error("the component imports something the gateway does not provide")]
    MissingImports(#[source] anyhow::Error),
    /// It does not export the world a route needs (or neither world).
    #[error("{0}")]
    WrongWorld(String),
    /// The plugin name is not a valid name.
    #[error("plugin names use letters, digits, '-' and '_' (at most 64)")]
    InvalidName,
    /// There is nowhere to keep an uploaded plugin.
    #[error("plugins.directory is not set, so there is nowhere to keep plugin `{0}`")]
    NoDirectory(String),
    /// Reading or writing a plugin file failed.
    #[error("{action} {path}")]
    Io {
        /// `reading` or `writing`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The gateway failed (a compiler thread died, the routing table could not be rebuilt).
    #[error("internal error while loading the plugin")]
    Internal(#[source] anyhow::Error),
}

impl LoadError {
    /// Whether the uploader or the config is at fault (4xx), rather than the server (5xx).
    pub fn is_client_fault(&self) -> bool {
        !matches!(self, Self::Io { .. } | Self::Internal(_))
    }

    /// A stable machine-readable name of the variant, for API answers.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotAComponent => "not_a_component",
            Self::CoreModule => "core_module",
            Self::Compile(_) => "compile",
            Self::MissingImports(_) => "missing_imports",
            Self::WrongWorld(_) => "wrong_world",
            Self::InvalidName => "invalid_name",
            Self::NoDirectory(_) => "no_directory",
            Self::Io { .. } => "io",
            Self::Internal(_) => "internal",
        }
    }
}

/// How often the epoch advances; the granularity of plugin deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// The wasmtime engine, its linker and the epoch ticker, shared by all plugins of a gateway.
pub struct PluginEngine {
    engine: Engine,
    linker: Linker<PluginState>,
    limits: PluginLimits,
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
            // A Rust guest is one main module plus a few small shim modules.
            .total_core_instances(n.saturating_mul(8))
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
            ticker_stop,
        })
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
        let version = hex(&digest[..6]);
        let this = Arc::clone(self);
        let cache = cache_dir.map(|dir| {
            dir.join(format!(
                "{}-{:016x}.cwasm",
                hex(&digest),
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
        if filter.is_none() && handler.is_none() {
            return Err(LoadError::WrongWorld(
                "the component exports neither tessera:gateway/request-filter nor tessera:gateway/request-handler".into(),
            ));
        }
        Ok(LoadedPlugin {
            name: name.to_owned(),
            label: format!("{name}@{version}").into(),
            version,
            digest: digest.into(),
            loaded_at: SystemTime::now(),
            requests: Default::default(),
            errors: Default::default(),
            pre,
            filter,
            handler,
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
            && let Some(component) = self.read_cache(path)
        {
            return Ok(component);
        }
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| LoadError::Compile(anyhow::Error::from(e)))?;
        if let Some(path) = cache
            && let Err(e) = write_cache(path, &component)
        {
            tracing::warn!(cache = %path.display(), error = %e, "could not write the plugin cache");
        }
        Ok(component)
    }

    /// A cache file is `sha256(payload) ‖ payload`; anything that does not verify is ignored.
    fn read_cache(&self, path: &Path) -> Option<Component> {
        let data = std::fs::read(path).ok()?;
        if data.len() < 32 || Sha256::digest(&data[32..]).as_slice() != &data[..32] {
            tracing::warn!(cache = %path.display(), "ignoring a corrupt plugin cache entry");
            return None;
        }
        // SAFETY: `deserialize` runs native code it is handed. The payload is byte-for-byte what
        // `Component::serialize` wrote for this engine fingerprint (checked by the digest above),
        // and wasmtime itself rejects payloads from another engine version or configuration.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(&self.engine, &data[32..]) };
        match component {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(cache = %path.display(), error = %e, "ignoring an incompatible plugin cache entry");
                None
            }
        }
    }

    /// Creates a store for one request.
    fn store(&self, call: Arc<CallContext>, limits: &CallLimits) -> Store<PluginState> {
        let memory_bytes = limits.memory_bytes;
        let log = Arc::new(LogBudget::new(&call, limits));
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
            table: ResourceTable::new(),
            limiter: PluginLimiter {
                max_memory: memory_bytes.min(self.limits.memory_bytes),
                memory_denied: false,
            },
            outbound: Outbound::new(Arc::clone(&call)),
            call,
            log,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store
    }
}

fn write_cache(path: &Path, component: &Component) -> anyhow::Result<()> {
    let payload = component.serialize().map_err(anyhow::Error::from)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut data = Vec::with_capacity(32 + payload.len());
    data.extend_from_slice(&Sha256::digest(&payload));
    data.extend_from_slice(&payload);
    // Write then rename, so a reader never sees half a file.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let unique = NEXT.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{unique}", std::process::id()));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A compiled plugin version, ready to instantiate.
pub struct LoadedPlugin {
    name: String,
    version: String,
    /// `name@version`, for logs and errors.
    label: Arc<str>,
    digest: [u8; 32],
    loaded_at: SystemTime,
    requests: std::sync::atomic::AtomicU64,
    errors: std::sync::atomic::AtomicU64,
    pre: InstancePre<PluginState>,
    filter: Option<request_filter::GuestIndices>,
    handler: Option<request_handler::GuestIndices>,
}

impl fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("filter", &self.filter.is_some())
            .field("handler", &self.handler.is_some())
            .finish_non_exhaustive()
    }
}

impl LoadedPlugin {
    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Content hash prefix identifying this version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// When this version was loaded.
    pub fn loaded_at(&self) -> SystemTime {
        self.loaded_at
    }

    /// SHA-256 of the component file.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    /// Counts a failure found outside the call (e.g. output the gateway refused).
    pub fn count_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Calls into this version so far (one per instance: a filter's two phases count once).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Failed calls (traps, timeouts, limits, invalid output) so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Checks this component against every route use of its name (from `Config::plugin_uses`).
    pub fn fits(&self, uses: &[(&str, PluginUse)]) -> Result<(), LoadError> {
        for (used, usage) in uses {
            if *used == self.name && !self.supports(*usage) {
                return Err(LoadError::WrongWorld(wrong_world(&self.name, *usage)));
            }
        }
        Ok(())
    }

    /// The worlds this component implements.
    pub fn worlds(&self) -> Vec<&'static str> {
        let mut worlds = Vec::new();
        if self.filter.is_some() {
            worlds.push("filter");
        }
        if self.handler.is_some() {
            worlds.push("handler");
        }
        worlds
    }

    /// Whether the component can serve the given use.
    pub fn supports(&self, usage: PluginUse) -> bool {
        match usage {
            PluginUse::Filter => self.filter.is_some(),
            PluginUse::Handler => self.handler.is_some(),
        }
    }

    /// `name@version`, as logs and errors name this version.
    pub fn label(&self) -> &Arc<str> {
        &self.label
    }
}

fn wrong_world(name: &str, usage: PluginUse) -> String {
    let (world, iface) = match usage {
        PluginUse::Filter => ("filter", "request-filter"),
        PluginUse::Handler => ("handler", "request-handler"),
    };
    format!(
        "a route uses plugin `{name}` as a {world}, but it does not export tessera:gateway/{iface} (build it for the `{world}` world)"
    )
}

/// Reads and loads one plugin file, reusing `reuse`'s version when the content is unchanged.
async fn load_file(
    engine: &Arc<PluginEngine>,
    name: &str,
    path: &Path,
    cache_dir: Option<&Path>,
    reuse: Option<&PluginRegistry>,
) -> Result<Arc<LoadedPlugin>, LoadError> {
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|source| LoadError::Io {
            action: "reading",
            path: path.to_owned(),
            source,
        })?;
    if let Some(old) = reuse.and_then(|r| r.get(name))
        && Sha256::digest(&bytes).as_slice() == old.digest()
    {
        return Ok(Arc::clone(old));
    }
    let started = Instant::now();
    let plugin = engine.load(name, bytes, cache_dir).await?;
    tracing::info!(plugin = %name, version = %plugin.version, took_ms = started.elapsed().as_millis() as u64, "plugin loaded");
    Ok(Arc::new(plugin))
}

/// Loaded plugins by name.
#[derive(Debug, Default, Clone)]
pub struct PluginRegistry {
    plugins: BTreeMap<String, Arc<LoadedPlugin>>,
}

impl PluginRegistry {
    /// The plugin files a config names: `<name>.wasm` in `plugins.directory`, then
    /// `plugins.files` (which win on a name clash).
    pub fn files(config: &crate::config::Config) -> anyhow::Result<BTreeMap<String, PathBuf>> {
        let (files, skipped) = Self::scan(config)?;
        for path in skipped {
            tracing::warn!(file = %path.display(), "skipping a plugin file whose name is not a valid plugin name");
        }
        Ok(files)
    }

    /// Like [`PluginRegistry::files`], quietly: also returns the `.wasm` files skipped for their
    /// names. The file watcher calls this on every poll.
    pub fn scan(
        config: &crate::config::Config,
    ) -> anyhow::Result<(BTreeMap<String, PathBuf>, Vec<PathBuf>)> {
        let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut skipped = Vec::new();
        if let Some(dir) = &config.plugins.directory {
            let dir = config.resolve(dir);
            let entries = std::fs::read_dir(&dir)
                .with_context(|| format!("reading plugins.directory {}", dir.display()))?;
            for entry in entries {
                let path = entry?.path();
                if path.extension().is_some_and(|e| e == "wasm")
                    && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
                {
                    if crate::config::valid_name(stem) {
                        files.insert(stem.to_owned(), path.clone());
                    } else {
                        skipped.push(path);
                    }
                }
            }
        }
        for (name, path) in &config.plugins.files {
            files.insert(name.clone(), config.resolve(path));
        }
        Ok((files, skipped))
    }

    /// Loads every plugin the config names and checks each route's use of them; any failure is
    /// an error. Versions in `reuse` whose file content is unchanged are kept, not recompiled.
    pub async fn load(
        engine: &Arc<PluginEngine>,
        config: &crate::config::Config,
        reuse: Option<&PluginRegistry>,
    ) -> anyhow::Result<Self> {
        let cache_dir = config.plugins.cache_dir.as_ref().map(|d| config.resolve(d));
        let mut plugins = BTreeMap::new();
        for (name, path) in Self::files(config)? {
            let plugin = load_file(engine, &name, &path, cache_dir.as_deref(), reuse)
                .await
                .with_context(|| format!("loading plugin `{name}` from {}", path.display()))?;
            plugins.insert(name, plugin);
        }
        let registry = Self { plugins };
        registry.check_uses(config)?;
        Ok(registry)
    }

    /// After plugin files changed: loads what changed, keeping the previous version of any
    /// plugin whose new file is unreadable, invalid or does not fit the routes that use it, and
    /// of any removed plugin that routes still use. Returns the registry and what was refused.
    pub async fn refresh(
        &self,
        engine: &Arc<PluginEngine>,
        config: &crate::config::Config,
    ) -> (Self, Vec<String>) {
        let mut refused = Vec::new();
        let files = match Self::files(config) {
            Ok(f) => f,
            Err(e) => return (self.clone(), vec![format!("{e:#}")]),
        };
        let cache_dir = config.plugins.cache_dir.as_ref().map(|d| config.resolve(d));
        let uses = config.plugin_uses();
        let mut plugins = BTreeMap::new();
        for (name, path) in &files {
            let loaded = load_file(engine, name, path, cache_dir.as_deref(), Some(self)).await;
            let checked = loaded.and_then(|p| p.fits(&uses).map(|()| p));
            match checked {
                Ok(p) => {
                    plugins.insert(name.clone(), p);
                }
                Err(e) => {
                    let reason = format!("plugin file {} refused: {e:#}", path.display());
                    tracing::error!(plugin = %name, file = %path.display(), error = %format!("{e:#}"), "plugin file refused; the previous version keeps serving");
                    refused.push(reason);
                    if let Some(old) = self.plugins.get(name) {
                        plugins.insert(name.clone(), Arc::clone(old));
                    }
                }
            }
        }
        for (name, old) in &self.plugins {
            if !files.contains_key(name) && uses.iter().any(|(u, _)| u == name) {
                tracing::warn!(plugin = %name, "plugin file removed while routes use it; the loaded version keeps serving until the routes stop using it");
                refused.push(format!("plugin `{name}` is still used by routes; its file was removed but the loaded version stays"));
                plugins.insert(name.clone(), Arc::clone(old));
            }
        }
        (Self { plugins }, refused)
    }

    /// Checks that every plugin a route names exists and implements the world the route needs.
    pub fn check_uses(&self, config: &crate::config::Config) -> anyhow::Result<()> {
        for (name, usage) in config.plugin_uses() {
            let Some(plugin) = self.plugins.get(name) else {
                bail!(
                    "a route uses plugin `{name}`, which is not loaded (check plugins.files / plugins.directory)"
                );
            };
            if !plugin.supports(usage) {
                bail!("{}", wrong_world(name, usage));
            }
        }
        Ok(())
    }

    /// The current version of a plugin.
    pub fn get(&self, name: &str) -> Option<&Arc<LoadedPlugin>> {
        self.plugins.get(name)
    }

    /// All plugins.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<LoadedPlugin>> {
        self.plugins.values()
    }

    /// A copy with `plugin` added or replaced.
    pub fn with(&self, plugin: Arc<LoadedPlugin>) -> Self {
        let mut plugins = self.plugins.clone();
        plugins.insert(plugin.name().to_owned(), plugin);
        Self { plugins }
    }

    /// A copy without `name`.
    pub fn without(&self, name: &str) -> Self {
        let mut plugins = self.plugins.clone();
        plugins.remove(name);
        Self { plugins }
    }
}

/// What the host imports know about the request a plugin instance serves.
#[derive(Debug)]
pub struct CallContext {
    /// `name@version`, for logs.
    pub plugin: Arc<str>,
    /// The route's plugin config as JSON.
    pub config_json: Arc<str>,
    /// The request id.
    pub request_id: Arc<str>,
    /// The matched route pattern.
    pub route: Arc<str>,
    /// Path parameters.
    pub params: Arc<[(String, String)]>,
    /// Upstreams this plugin may call on this route.
    pub granted: Arc<[String]>,
    /// The gateway's upstreams.
    pub upstreams: Arc<Upstreams>,
    /// Hosts (not upstreams) this plugin may call directly on this route.
    pub allow_hosts: Arc<[String]>,
    /// The request's W3C trace context; outbound calls carry a child of it.
    pub traceparent: Option<Arc<str>>,
    /// Caps on outbound calls.
    pub limits: OutboundLimits,
    /// Largest response body an outbound call may hand the plugin.
    pub max_body_bytes: usize,
    /// Largest header block an outbound call may carry (`server.max_header_bytes`).
    pub max_header_bytes: usize,
}

/// Per-store data: WASI, the limiter and the request's context.
pub struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: PluginLimiter,
    call: Arc<CallContext>,
    outbound: Outbound,
    log: Arc<LogBudget>,
}

impl fmt::Debug for PluginState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginState")
            .field("call", &self.call)
            .finish_non_exhaustive()
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Caps linear memory and remembers whether the cap was hit, so the log can say so.
struct PluginLimiter {
    max_memory: usize,
    memory_denied: bool,
}

impl ResourceLimiter for PluginLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = desired <= self.max_memory;
        if !ok {
            self.memory_denied = true;
        }
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// How much one plugin instance may log (log calls and stdout/stderr lines together): past
/// `max_log_lines` or `max_log_bytes` lines are dropped, and one warning says how many when the
/// instance ends. Without it a plugin at `info` could write hundreds of megabytes per request.
struct LogBudget {
    plugin: Arc<str>,
    request_id: Arc<str>,
    max_lines: u32,
    max_bytes: usize,
    lines: AtomicU32,
    bytes: AtomicUsize,
    suppressed: AtomicU32,
}

impl LogBudget {
    fn new(call: &CallContext, limits: &CallLimits) -> Self {
        Self {
            plugin: Arc::clone(&call.plugin),
            request_id: Arc::clone(&call.request_id),
            max_lines: limits.max_log_lines,
            max_bytes: limits.max_log_bytes,
            lines: AtomicU32::new(0),
            bytes: AtomicUsize::new(0),
            suppressed: AtomicU32::new(0),
        }
    }

    /// Whether a line of `len` bytes may be written; counts it either way.
    fn admit(&self, len: usize) -> bool {
        let lines = self.lines.fetch_add(1, Ordering::Relaxed);
        let bytes = self.bytes.fetch_add(len, Ordering::Relaxed);
        let ok = lines < self.max_lines && bytes + len <= self.max_bytes;
        if !ok {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }
}

impl Drop for LogBudget {
    fn drop(&mut self) {
        let suppressed = self.suppressed.load(Ordering::Relaxed);
        if suppressed > 0 {
            tracing::warn!(
                target: "tessera::plugin",
                plugin = %self.plugin,
                request_id = %self.request_id,
                suppressed,
                max_lines = self.max_lines,
                max_bytes = self.max_bytes,
                "plugin log lines suppressed: {suppressed} over the instance's log limits"
            );
        }
    }
}

/// Guest stdout/stderr: each line becomes a log event tagged with the plugin.
#[derive(Clone)]
struct PluginOutput {
    log: Arc<LogBudget>,
    stream: &'static str,
}

impl IsTerminal for PluginOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for PluginOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(LineLogger {
            log: Arc::clone(&self.log),
            stream: self.stream,
            line: Vec::new(),
        })
    }
}

/// Longest line kept before it is logged in pieces.
const MAX_LINE: usize = 4096;

struct LineLogger {
    log: Arc<LogBudget>,
    stream: &'static str,
    line: Vec<u8>,
}

impl LineLogger {
    fn emit(&mut self) {
        if self.line.is_empty() {
            return;
        }
        if self.log.admit(self.line.len()) {
            let text = String::from_utf8_lossy(&self.line);
            tracing::info!(target: "tessera::plugin", plugin = %self.log.plugin, request_id = %self.log.request_id, stream = self.stream, "{}", text.trim_end());
        }
        self.line.clear();
    }
}

impl tokio::io::AsyncWrite for LineLogger {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        for &b in buf {
            if b == b'\n' {
                self.emit();
            } else {
                self.line.push(b);
                if self.line.len() >= MAX_LINE {
                    self.emit();
                }
            }
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.emit();
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineLogger {
    fn drop(&mut self) {
        self.emit();
    }
}

/// One plugin instance serving one request. A filter's instance lives from its on-request to its
/// on-response, so a filter may carry state between the two phases of the same request.
pub struct PluginInstance {
    store: Store<PluginState>,
    plugin: Arc<LoadedPlugin>,
    instance: wasmtime::component::Instance,
    timeout: Duration,
    canary: Option<Arc<crate::canary::Canary>>,
    failed: bool,
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
        plugin.requests.fetch_add(1, Ordering::Relaxed);
        let mut store = engine.store(Arc::new(call), limits);
        let timeout = limits.timeout;
        arm_deadline(&mut store, timeout);
        let instance =
            match tokio::time::timeout(timeout, plugin.pre.instantiate_async(&mut store)).await {
                Ok(Ok(instance)) => instance,
                Ok(Err(e)) => {
                    let kind = if is_pool_exhausted(&e) {
                        PluginFailure::Overloaded
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
        })
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

    /// Calls the filter's `on-request`.
    pub async fn on_request(
        &mut self,
        request: bindings::Request,
    ) -> Result<RequestAction, GatewayError> {
        let guest = self.filter_guest()?;
        arm_deadline(&mut self.store, self.timeout);
        let result = tokio::time::timeout(
            self.timeout,
            guest.call_on_request(&mut self.store, &request),
        )
        .await;
        self.finish(result, "on-request")
    }

    /// Calls the filter's `on-response`.
    pub async fn on_response(
        &mut self,
        response: bindings::Response,
    ) -> Result<bindings::Response, GatewayError> {
        let guest = self.filter_guest()?;
        arm_deadline(&mut self.store, self.timeout);
        let result = tokio::time::timeout(
            self.timeout,
            guest.call_on_response(&mut self.store, &response),
        )
        .await;
        self.finish(result, "on-response")
    }

    /// Calls the handler's `handle`.
    pub async fn handle(
        &mut self,
        request: bindings::Request,
    ) -> Result<bindings::Response, GatewayError> {
        let indices = self
            .plugin
            .handler
            .as_ref()
            .ok_or_else(|| self.not_a("handler"))?;
        let guest = indices
            .load(&mut self.store, &self.instance)
            .map_err(|e| failure(&self.plugin, PluginFailure::Instantiate, e.into()))?;
        arm_deadline(&mut self.store, self.timeout);
        let result =
            tokio::time::timeout(self.timeout, guest.call_handle(&mut self.store, &request)).await;
        self.finish(result, "handle")
    }

    fn filter_guest(&mut self) -> Result<request_filter::Guest, GatewayError> {
        let indices = self
            .plugin
            .filter
            .as_ref()
            .ok_or_else(|| self.not_a("filter"))?;
        indices
            .load(&mut self.store, &self.instance)
            .map_err(|e| failure(&self.plugin, PluginFailure::Instantiate, e.into()))
    }

    fn not_a(&self, world: &str) -> GatewayError {
        failure(
            &self.plugin,
            PluginFailure::Instantiate,
            anyhow::anyhow!("plugin is not a {world}"),
        )
    }

    fn finish<R>(
        &mut self,
        result: Result<wasmtime::Result<R>, tokio::time::error::Elapsed>,
        export: &str,
    ) -> Result<R, GatewayError> {
        if !matches!(result, Ok(Ok(_))) {
            self.failed = true;
        }
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                let kind = match e.downcast_ref::<Trap>() {
                    Some(Trap::Interrupt) => PluginFailure::Timeout,
                    _ => PluginFailure::Trap,
                };
                let mut e = anyhow::Error::from(e).context(format!("{export} trapped"));
                if self.store.data().limiter.memory_denied {
                    e = e.context(format!(
                        "the plugin's memory limit ({} bytes) was reached",
                        self.store.data().limiter.max_memory
                    ));
                }
                Err(failure(&self.plugin, kind, e))
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
fn arm_deadline(store: &mut Store<PluginState>, timeout: Duration) {
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

fn failure(plugin: &LoadedPlugin, kind: PluginFailure, source: anyhow::Error) -> GatewayError {
    plugin.errors.fetch_add(1, Ordering::Relaxed);
    GatewayError::Plugin {
        plugin: plugin.label().to_string(),
        kind,
        source,
    }
}

mod host {
    //! The `tessera:gateway` imports, implemented on [`PluginState`].

    use wasmtime::component::Resource;

    use super::PluginState;
    use crate::bindings::{HttpError, OutgoingRequest, Response};
    use crate::bindings::{Level, config, context, http_client, log};
    use crate::outbound::PendingCall;

    /// Longest log message a plugin may write; longer ones are cut.
    const MAX_LOG_MESSAGE: usize = 8192;

    impl log::Host for PluginState {
        fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
            if !self.log.admit(message.len().min(MAX_LOG_MESSAGE)) {
                return Ok(());
            }
            let mut message = message;
            if message.len() > MAX_LOG_MESSAGE {
                let mut cut = MAX_LOG_MESSAGE;
                while !message.is_char_boundary(cut) {
                    cut -= 1;
                }
                message.truncate(cut);
                message.push_str(" […]");
            }
            let plugin = &*self.call.plugin;
            let request_id = &*self.call.request_id;
            match level {
                Level::Trace => {
                    tracing::trace!(target: "tessera::plugin", plugin, request_id, "{message}")
                }
                Level::Debug => {
                    tracing::debug!(target: "tessera::plugin", plugin, request_id, "{message}")
                }
                Level::Info => {
                    tracing::info!(target: "tessera::plugin", plugin, request_id, "{message}")
                }
                Level::Warn => {
                    tracing::warn!(target: "tessera::plugin", plugin, request_id, "{message}")
                }
                Level::Error => {
                    tracing::error!(target: "tessera::plugin", plugin, request_id, "{message}")
                }
            }
            Ok(())
        }
    }

    impl config::Host for PluginState {
        fn get(&mut self) -> wasmtime::Result<String> {
            Ok(self.call.config_json.to_string())
        }
    }

    impl context::Host for PluginState {
        fn route_param(&mut self, name: String) -> wasmtime::Result<Option<String>> {
            Ok(self
                .call
                .params
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone()))
        }

        fn route_params(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
            Ok(self.call.params.to_vec())
        }

        fn request_id(&mut self) -> wasmtime::Result<String> {
            Ok(self.call.request_id.to_string())
        }

        fn route(&mut self) -> wasmtime::Result<String> {
            Ok(self.call.route.to_string())
        }
    }

    impl crate::bindings::TypesHost for PluginState {}

    impl http_client::Host for PluginState {
        async fn send(
            &mut self,
            request: OutgoingRequest,
        ) -> wasmtime::Result<Result<Response, HttpError>> {
            Ok(self.outbound.send(request).await)
        }

        async fn start(
            &mut self,
            request: OutgoingRequest,
        ) -> wasmtime::Result<Resource<PendingCall>> {
            let pending = self.outbound.start(request);
            Ok(self.table.push(pending)?)
        }

        async fn send_all(
            &mut self,
            requests: Vec<OutgoingRequest>,
        ) -> wasmtime::Result<Vec<Result<Response, HttpError>>> {
            Ok(self.outbound.send_all(requests).await)
        }
    }

    impl http_client::HostPendingResponse for PluginState {
        async fn wait(
            &mut self,
            pending: Resource<PendingCall>,
        ) -> wasmtime::Result<Result<Response, HttpError>> {
            let pending = self.table.get_mut(&pending)?;
            Ok(crate::outbound::wait(pending).await)
        }

        async fn drop(&mut self, pending: Resource<PendingCall>) -> wasmtime::Result<()> {
            // Dropping the entry aborts a call still running.
            self.table.delete(pending)?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(max_lines: u32, max_bytes: usize) -> LogBudget {
        LogBudget {
            plugin: "p@1".into(),
            request_id: "r".into(),
            max_lines,
            max_bytes,
            lines: AtomicU32::new(0),
            bytes: AtomicUsize::new(0),
            suppressed: AtomicU32::new(0),
        }
    }

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

    #[test]
    fn log_budget_caps_lines_and_bytes_and_counts_the_rest() {
        let lines = budget(3, 1 << 20);
        let admitted = (0..1000).filter(|_| lines.admit(10)).count();
        assert_eq!(admitted, 3);
        assert_eq!(lines.suppressed.load(Ordering::Relaxed), 997);

        let bytes = budget(1000, 100);
        assert!(bytes.admit(60));
        assert!(!bytes.admit(60), "over the byte cap");
        assert!(!bytes.admit(1), "the cap stays spent");
        assert_eq!(bytes.suppressed.load(Ordering::Relaxed), 2);
    }
}
