//! Loaded plugins: a compiled version ([`LoadedPlugin`]), why one could not be loaded
//! ([`LoadError`]), and the set a gateway serves ([`PluginRegistry`]): which files a config names,
//! loading them, and refreshing after files change.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use anyhow::{Context as _, bail};
use sha2::{Digest, Sha256};
use wasmtime::component::InstancePre;

use super::engine::PluginEngine;
use super::state::PluginState;
use crate::bindings::{config_check, request_filter, request_handler};
use crate::config::PluginUse;
use crate::upstream::Upstreams;
use wasmtime_wasi_http::p2::bindings::exports::wasi::http::incoming_handler;

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
    /// The plugin's `config-check` refused the config of a route entry that uses it.
    #[error("route `{route}` {entry}: plugin `{plugin}` refuses its config: {message}")]
    ConfigRefused {
        /// `name@version`.
        plugin: String,
        /// The route's path pattern.
        route: String,
        /// The entry below the route: `handler`, `filters[0]`, ...
        entry: String,
        /// The plugin's message, made safe to show.
        message: String,
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
            Self::ConfigRefused { .. } => "config_refused",
            Self::InvalidName => "invalid_name",
            Self::NoDirectory(_) => "no_directory",
            Self::Io { .. } => "io",
            Self::Internal(_) => "internal",
        }
    }
}

/// A compiled plugin version, ready to instantiate.
pub struct LoadedPlugin {
    pub(super) name: String,
    pub(super) version: String,
    /// `name@version`, for logs and errors.
    pub(super) label: Arc<str>,
    pub(super) digest: [u8; 32],
    pub(super) loaded_at: SystemTime,
    pub(super) requests: std::sync::atomic::AtomicU64,
    pub(super) errors: std::sync::atomic::AtomicU64,
    pub(super) metrics: crate::metrics::PluginMetrics,
    pub(super) pre: InstancePre<PluginState>,
    pub(super) filter: Option<request_filter::GuestIndices>,
    pub(super) handler: Option<request_handler::GuestIndices>,
    /// A standard `wasi:http/proxy` component's `incoming-handler` (only when `handler` is not
    /// there): served as a route handler with streaming bodies.
    pub(super) wasi_http: Option<incoming_handler::GuestIndices>,
    /// Whether the component imports `wasi:http` (outgoing calls outside `http-client`).
    pub(super) imports_wasi_http: bool,
    pub(super) config_check: Option<config_check::GuestIndices>,
    /// SHA-256 of each config JSON this version's `config-check` accepted.
    pub(super) accepted_configs: std::sync::Mutex<std::collections::HashSet<[u8; 32]>>,
}

impl fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("filter", &self.filter.is_some())
            .field("handler", &self.handler.is_some())
            .field("wasi_http", &self.wasi_http.is_some())
            .field("config_check", &self.config_check.is_some())
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
        self.metrics
            .failed(crate::error::PluginFailure::InvalidOutput, false);
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
                return Err(LoadError::WrongWorld(self.wrong_world(*usage)));
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
        if self.wasi_http.is_some() {
            worlds.push("wasi:http/proxy");
        }
        worlds
    }

    /// Whether the component can serve the given use.
    pub fn supports(&self, usage: PluginUse) -> bool {
        match usage {
            PluginUse::Filter => self.filter.is_some(),
            PluginUse::Handler => self.handler.is_some() || self.wasi_http.is_some(),
        }
    }

    /// Whether this is a standard `wasi:http/proxy` component (served with streaming bodies)
    /// rather than a `tessera:gateway` handler.
    pub fn serves_wasi_http(&self) -> bool {
        self.wasi_http.is_some()
    }

    /// Why this component cannot serve `usage`.
    fn wrong_world(&self, usage: PluginUse) -> String {
        let name = &self.name;
        if usage == PluginUse::Filter && self.wasi_http.is_some() {
            return format!(
                "a route uses plugin `{name}` as a filter, but it is a wasi:http/proxy component, which can only serve a route as its handler"
            );
        }
        wrong_world(name, usage)
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
    let or_wasi_http = match usage {
        PluginUse::Handler => " or wasi:http/incoming-handler",
        PluginUse::Filter => "",
    };
    format!(
        "a route uses plugin `{name}` as a {world}, but it does not export tessera:gateway/{iface}{or_wasi_http} (build it for the `{world}` world)"
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

    /// Loads every plugin the config names and checks each route's use of them, the config of
    /// each use included (a plugin's `config-check`); any failure is an error. Versions in
    /// `reuse` whose file content is unchanged are kept, not recompiled.
    pub async fn load(
        engine: &Arc<PluginEngine>,
        config: &crate::config::Config,
        reuse: Option<&PluginRegistry>,
        upstreams: &Arc<Upstreams>,
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
        for plugin in registry.plugins.values() {
            plugin.check_configs(engine, config, upstreams).await?;
        }
        Ok(registry)
    }

    /// After plugin files changed: loads what changed, keeping the previous version of any
    /// plugin whose new file is unreadable, invalid or does not fit the routes that use it, and
    /// of any removed plugin that routes still use. Returns the registry and what was refused.
    pub async fn refresh(
        &self,
        engine: &Arc<PluginEngine>,
        config: &crate::config::Config,
        upstreams: &Arc<Upstreams>,
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
            let checked = match loaded.and_then(|p| p.fits(&uses).map(|()| p)) {
                Ok(p) => p.check_configs(engine, config, upstreams).await.map(|()| p),
                Err(e) => Err(e),
            };
            match checked {
                Ok(p) => {
                    plugins.insert(name.clone(), p);
                }
                Err(e) => {
                    let why = crate::error::chain(&e);
                    let reason = format!("plugin file {} refused: {why}", path.display());
                    tracing::error!(plugin = %name, file = %path.display(), error = %why, "plugin file refused; the previous version keeps serving");
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
                bail!("{}", plugin.wrong_world(usage));
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
