//! The live state and everything that replaces it while traffic flows.
//!
//! Requests take a snapshot (`Arc<Runtime>`) when they start and finish on it; a reload builds a
//! whole new runtime off the request path, validates it, and swaps it in atomically. Nothing
//! that fails validation changes what is serving.
//!
//! Sources of change: the watched plugin directory and config file (polled; a file must stay
//! unchanged for one poll before it is read, so writers that do not rename into place are not
//! read half-written), the TLS certificate files (polled by content, same rule), SIGHUP, and the
//! admin API.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use anyhow::Context as _;

use crate::config::{Config, ListenerTlsConfig};
use crate::plugin::{LoadError, LoadedPlugin, PluginEngine};
use crate::runtime::Runtime;
use crate::tls::CertStore;
use crate::tls::certs::{CertFiles, CertSet};

/// How often the plugin directory and config file are checked.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// What a reload did.
#[derive(Debug, Default)]
pub struct ReloadReport {
    /// Plugins whose version changed, was added or removed.
    pub changed: Vec<String>,
    /// Inputs refused (the previous state keeps serving for them).
    pub refused: Vec<String>,
}

/// The serving state and the means to replace it.
#[derive(Debug)]
pub struct Live {
    engine: Arc<PluginEngine>,
    runtime: ArcSwap<Runtime>,
    config: ArcSwap<Config>,
    config_path: Option<PathBuf>,
    /// One reload at a time; requests never wait on it.
    reloading: tokio::sync::Mutex<()>,
    /// Reloads done (config or plugins, whatever started them), and how many refused something.
    reloads: ReloadCounts,
    /// Certificates of the TLS listeners (`server.tls`, `admin.tls`), when configured.
    server_tls: Option<Arc<CertStore>>,
    admin_tls: Option<Arc<CertStore>>,
}

/// How many reloads ran and how many refused something, so a watcher's work is observable
/// (`GET /admin/ready`) without reading the log.
#[derive(Debug, Default)]
pub struct ReloadCounts {
    done: std::sync::atomic::AtomicU64,
    refused: std::sync::atomic::AtomicU64,
    last_refusal: std::sync::Mutex<Option<String>>,
}

impl ReloadCounts {
    fn record(&self, refusal: Option<String>) {
        use std::sync::atomic::Ordering;
        if let Some(reason) = refusal {
            *self.last_refusal.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
            self.refused.fetch_add(1, Ordering::SeqCst);
        }
        self.done.fetch_add(1, Ordering::SeqCst);
    }

    /// Why the latest refused reload refused something.
    pub fn last_refusal(&self) -> Option<String> {
        self.last_refusal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reloads run so far.
    pub fn done(&self) -> u64 {
        self.done.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Reloads that refused a config or a plugin file.
    pub fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Live {
    /// Builds the first runtime for `config` (read from `config_path`, if it came from a file).
    pub async fn new(config: Config, config_path: Option<PathBuf>) -> anyhow::Result<Self> {
        let server_tls = load_certs("server.tls", config.server.tls.as_ref(), &config)?;
        let admin_tls = load_certs(
            "admin.tls",
            config.admin.as_ref().and_then(|a| a.tls.as_ref()),
            &config,
        )?;
        let engine = Arc::new(PluginEngine::new(&config.plugins)?);
        let runtime = Runtime::build(&config, Arc::clone(&engine), None).await?;
        engine.metrics().set_enabled(config.metrics.enabled);
        Ok(Self {
            server_tls,
            admin_tls,
            engine,
            runtime: ArcSwap::from_pointee(runtime),
            config: ArcSwap::from_pointee(config),
            config_path,
            reloading: tokio::sync::Mutex::new(()),
            reloads: ReloadCounts::default(),
        })
    }

    /// The runtime new requests get.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        self.engine.metrics()
    }

    /// The certificates `server.listen` serves, when `[server.tls]` is configured.
    pub fn server_tls(&self) -> Option<&Arc<CertStore>> {
        self.server_tls.as_ref()
    }

    /// The certificates the admin listener serves, when `[admin.tls]` is configured.
    pub fn admin_tls(&self) -> Option<&Arc<CertStore>> {
        self.admin_tls.as_ref()
    }

    /// How many reloads ran and were refused.
    pub fn reloads(&self) -> &ReloadCounts {
        &self.reloads
    }

    /// Re-reads the config file and, if it is valid and its plugins load, serves it.
    pub async fn reload_config(&self) -> Result<ReloadReport, ReloadError> {
        let _one = self.reloading.lock().await;
        let result = self.reload_config_locked().await;
        self.engine.metrics().reload(result.is_err());
        self.reloads
            .record(result.as_ref().err().map(|e| crate::error::chain(e)));
        result
    }

    async fn reload_config_locked(&self) -> Result<ReloadReport, ReloadError> {
        let path = self
            .config_path
            .as_deref()
            .ok_or(ReloadError::NoConfigFile)?;
        let new = Config::load(path)?;
        let old = self.config();
        if new.server.listen != old.server.listen {
            tracing::warn!(old = %old.server.listen, new = %new.server.listen, "server.listen changed: the new address takes effect only after a restart");
        }
        if new.admin.as_ref().map(|a| a.listen) != old.admin.as_ref().map(|a| a.listen) {
            tracing::warn!(
                "admin.listen changed: the new address takes effect only after a restart"
            );
        }
        if new.metrics.listen != old.metrics.listen
            || new.access_log.format != old.access_log.format
            || new.access_log.path != old.access_log.path
            || new.telemetry != old.telemetry
        {
            tracing::warn!(
                "metrics.listen, [access_log] or [telemetry] changed: they take effect only after a restart"
            );
        }
        if new.plugins.max_instances != old.plugins.max_instances
            || new.plugins.max_queued != old.plugins.max_queued
            || new.plugins.queue_timeout_ms != old.plugins.queue_timeout_ms
            || new.plugins.limits.memory_bytes != old.plugins.limits.memory_bytes
        {
            tracing::warn!(
                "plugins.max_instances / max_queued / queue_timeout_ms / limits.memory_bytes changed: they shape the instance pool and take effect only after a restart"
            );
        }
        let tls_changes = [
            (
                "server.tls",
                self.server_tls.as_ref(),
                old.server.tls.as_ref(),
                new.server.tls.as_ref(),
            ),
            (
                "admin.tls",
                self.admin_tls.as_ref(),
                old.admin.as_ref().and_then(|a| a.tls.as_ref()),
                new.admin.as_ref().and_then(|a| a.tls.as_ref()),
            ),
        ]
        .into_iter()
        .map(|(label, store, before, after)| tls_change(label, store, before, after, &new))
        .collect::<anyhow::Result<Vec<_>>>()
        .map_err(ReloadError::Refused)?;
        let current = self.runtime();
        let runtime = Runtime::build(&new, Arc::clone(&self.engine), Some(&current))
            .await
            .map_err(ReloadError::Refused)?;
        let changed = diff(&current, &runtime);
        self.runtime.store(Arc::new(runtime));
        self.engine.metrics().set_enabled(new.metrics.enabled);
        self.config.store(Arc::new(new));
        for (store, files, set) in tls_changes.into_iter().flatten() {
            store.replace(files, set);
        }
        tracing::info!(path = %path.display(), ?changed, "config reloaded");
        Ok(ReloadReport {
            changed,
            refused: Vec::new(),
        })
    }

    /// Re-reads the plugin files and swaps in every one that loads and fits its routes.
    pub async fn reload_plugins(&self) -> ReloadReport {
        let _one = self.reloading.lock().await;
        let report = self.reload_plugins_locked().await;
        self.engine.metrics().reload(!report.refused.is_empty());
        self.reloads.record(report.refused.last().cloned());
        report
    }

    async fn reload_plugins_locked(&self) -> ReloadReport {
        let config = self.config();
        let current = self.runtime();
        let (plugins, refused) = current
            .plugins
            .refresh(&self.engine, &config, &current.upstreams)
            .await;
        let runtime = Runtime::assemble(
            &config,
            Arc::clone(&self.engine),
            Arc::clone(&current.upstreams),
            plugins,
            Some(&current),
        );
        match runtime {
            Ok(runtime) => {
                let changed = diff(&current, &runtime);
                if !changed.is_empty() {
                    tracing::info!(?changed, "plugins reloaded");
                    self.runtime.store(Arc::new(runtime));
                }
                ReloadReport { changed, refused }
            }
            Err(e) => {
                let mut refused = refused;
                refused.push(format!("{e:#}"));
                ReloadReport {
                    changed: Vec::new(),
                    refused,
                }
            }
        }
    }

    /// Validates a component as plugin `name`, writes it where a restart finds it, and serves it.
    pub async fn put_plugin(
        &self,
        name: &str,
        bytes: Vec<u8>,
    ) -> Result<Arc<LoadedPlugin>, LoadError> {
        let _one = self.reloading.lock().await;
        if !crate::config::valid_name(name) {
            return Err(LoadError::InvalidName);
        }
        let config = self.config();
        let path = plugin_path(&config, name)?;
        let cache_dir = config.plugins.cache_dir.as_ref().map(|d| config.resolve(d));
        let plugin = Arc::new(
            self.engine
                .load(name, bytes.clone(), cache_dir.as_deref())
                .await?,
        );
        plugin.fits(&config.plugin_uses())?;
        let current = self.runtime();
        plugin
            .check_configs(&self.engine, &config, &current.upstreams)
            .await?;
        crate::plugin::write_atomically(&path, &bytes).map_err(|source| LoadError::Io {
            action: "writing",
            path: path.clone(),
            source,
        })?;
        let runtime = Runtime::assemble(
            &config,
            Arc::clone(&self.engine),
            Arc::clone(&current.upstreams),
            current.plugins.with(Arc::clone(&plugin)),
            Some(&current),
        )
        .map_err(LoadError::Internal)?;
        self.runtime.store(Arc::new(runtime));
        tracing::info!(plugin = %name, version = %plugin.version(), file = %path.display(), "plugin uploaded and serving");
        Ok(plugin)
    }

    /// Unloads plugin `name` and deletes its file; refused while routes use it.
    pub async fn delete_plugin(&self, name: &str) -> Result<(), DeleteError> {
        let _one = self.reloading.lock().await;
        let config = self.config();
        let current = self.runtime();
        if current.plugins.get(name).is_none() {
            return Err(DeleteError::NotFound);
        }
        let users: Vec<String> = config
            .routes_using(name)
            .into_iter()
            .map(str::to_owned)
            .collect();
        if !users.is_empty() {
            return Err(DeleteError::InUse(users));
        }
        let path = plugin_path(&config, name).map_err(|e| DeleteError::Other(e.into()))?;
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(DeleteError::Other(
                    anyhow::Error::new(e).context(format!("removing {}", path.display())),
                ));
            }
        }
        let runtime = Runtime::assemble(
            &config,
            Arc::clone(&self.engine),
            Arc::clone(&current.upstreams),
            current.plugins.without(name),
            Some(&current),
        )
        .map_err(DeleteError::Other)?;
        self.runtime.store(Arc::new(runtime));
        tracing::info!(plugin = %name, "plugin deleted");
        Ok(())
    }

    /// Watches the plugin files and the config file until the returned handle is dropped.
    pub fn watch(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        // The baseline is what is loaded now, so a change made right after start is not missed.
        let mut plugins = Watched::starting_at(signature(&plugin_files(&self.config())));
        let mut config = Watched::starting_at(signature(self.config_path.as_slice()));
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(POLL_INTERVAL);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(live) = weak.upgrade() else { break };
                if live.config_path.is_some()
                    && config.changed(signature(live.config_path.as_slice()))
                    && let Err(e) = live.reload_config().await
                {
                    tracing::error!(error = %crate::error::chain(&e), "config reload refused");
                }
                for store in [&live.server_tls, &live.admin_tls].into_iter().flatten() {
                    store.poll();
                }
                let files = plugin_files(&live.config());
                if plugins.changed(signature(&files)) {
                    let report = live.reload_plugins().await;
                    for reason in &report.refused {
                        tracing::warn!(%reason, "plugin change refused");
                    }
                }
            }
        })
    }
}

/// Why a config reload was refused; the previous config keeps serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The gateway was built from a config value, not a file.
    #[error("this gateway was not started from a config file")]
    NoConfigFile,
    /// The file could not be read, parsed or validated.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The config is valid but its plugins or routes could not be built.
    #[error("the new config was refused; the previous config keeps serving")]
    Refused(#[source] anyhow::Error),
}

impl ReloadError {
    /// Whether the config (the operator's input) is at fault (4xx), rather than the server:
    /// an unreadable file or a plugin file that cannot be read is the server's (5xx).
    pub fn is_client_fault(&self) -> bool {
        match self {
            Self::NoConfigFile => true,
            Self::Config(e) => !matches!(e, crate::config::ConfigError::Read { .. }),
            Self::Refused(e) => e
                .chain()
                .find_map(|cause| cause.downcast_ref::<LoadError>())
                .is_none_or(LoadError::is_client_fault),
        }
    }
}

/// Why a plugin could not be deleted.
#[derive(Debug)]
pub enum DeleteError {
    /// No such plugin is loaded.
    NotFound,
    /// Routes (by path) still use it.
    InUse(Vec<String>),
    /// Anything else.
    Other(anyhow::Error),
}

/// Reads and checks a TLS section's certificates, if the section is there.
fn load_certs(
    label: &'static str,
    tls: Option<&ListenerTlsConfig>,
    config: &Config,
) -> anyhow::Result<Option<Arc<CertStore>>> {
    let Some(tls) = tls else { return Ok(None) };
    let store = CertStore::load(label, CertFiles::of(tls, config)).context(label)?;
    Ok(Some(Arc::new(store)))
}

/// A checked certificate set to serve once a reload succeeds: the store, its new files, the set.
type TlsSwap = (Arc<CertStore>, Vec<CertFiles>, CertSet);

/// What a config reload does to a listener's TLS: a new set of files is read and checked now
/// (a failure refuses the whole reload) and swapped in once the reload succeeds. Listener
/// settings (TLS on or off, minimum version, handshake timeout, `plain_listen`) need a restart.
fn tls_change(
    label: &'static str,
    store: Option<&Arc<CertStore>>,
    before: Option<&ListenerTlsConfig>,
    after: Option<&ListenerTlsConfig>,
    new: &Config,
) -> anyhow::Result<Option<TlsSwap>> {
    let (Some(store), Some(before), Some(after)) = (store, before, after) else {
        if before.is_some() != after.is_some() {
            tracing::warn!(
                section = label,
                "TLS was added or removed: the listener changes only after a restart"
            );
        }
        if let Some(after) = after {
            // Not served until a restart, but a bad file is still refused now.
            CertSet::load(&CertFiles::of(after, new)).context(label)?;
        }
        return Ok(None);
    };
    if before.min_version != after.min_version
        || before.handshake_timeout_ms != after.handshake_timeout_ms
        || before.plain_listen != after.plain_listen
    {
        tracing::warn!(
            section = label,
            "min_version / handshake_timeout_ms / plain_listen changed: they take effect only after a restart"
        );
    }
    let files = CertFiles::of(after, new);
    if files == store.files() {
        return Ok(None);
    }
    let set = CertSet::load(&files).context(label)?;
    Ok(Some((Arc::clone(store), files, set)))
}

/// Plugins whose version differs between two runtimes.
fn diff(old: &Runtime, new: &Runtime) -> Vec<String> {
    let mut changed = Vec::new();
    for p in new.plugins.iter() {
        match old.plugins.get(p.name()) {
            Some(o) if o.digest() == p.digest() => {}
            _ => changed.push(p.label().to_string()),
        }
    }
    for p in old.plugins.iter() {
        if new.plugins.get(p.name()).is_none() {
            changed.push(format!("-{}", p.name()));
        }
    }
    changed
}

/// Where plugin `name` lives: its `plugins.files` entry, else `<directory>/<name>.wasm`.
fn plugin_path(config: &Config, name: &str) -> Result<PathBuf, LoadError> {
    if let Some(path) = config.plugins.files.get(name) {
        return Ok(config.resolve(path));
    }
    match &config.plugins.directory {
        Some(dir) => Ok(config.resolve(dir).join(format!("{name}.wasm"))),
        None => Err(LoadError::NoDirectory(name.to_owned())),
    }
}

/// Every plugin file the config names; an unreadable directory counts as empty (the reload
/// that follows reports it). Quiet: the watcher calls it every poll, and a wrongly named file is
/// reported when plugins load, not every 200 ms.
fn plugin_files(config: &Config) -> Vec<PathBuf> {
    crate::plugin::PluginRegistry::scan(config)
        .map_or_else(|_| Vec::new(), |(f, _skipped)| f.into_values().collect())
}

type Signature = BTreeMap<PathBuf, Option<(u64, SystemTime)>>;

fn signature(files: &[PathBuf]) -> Signature {
    files
        .iter()
        .map(|f| {
            let meta = std::fs::metadata(f).ok();
            let sig = meta.map(|m| (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
            (f.clone(), sig)
        })
        .collect()
}

/// Change detection with a one-poll debounce: a new signature is acted on once it has been seen
/// twice in a row, so a file still being written is not read.
#[derive(Default)]
struct Watched {
    applied: Option<Signature>,
    seen: Option<Signature>,
}

impl Watched {
    fn starting_at(now: Signature) -> Self {
        Self {
            applied: Some(now.clone()),
            seen: Some(now),
        }
    }

    fn changed(&mut self, now: Signature) -> bool {
        if self.applied.is_none() {
            self.applied = Some(now.clone());
            self.seen = Some(now);
            return false;
        }
        if self.applied.as_ref() == Some(&now) {
            self.seen = Some(now);
            return false;
        }
        if self.seen.as_ref() == Some(&now) {
            self.applied = Some(now);
            return true;
        }
        self.seen = Some(now);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(len: u64) -> Signature {
        let mut s = Signature::new();
        s.insert(PathBuf::from("a.wasm"), Some((len, SystemTime::UNIX_EPOCH)));
        s
    }

    /// Log output captured in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_watcher_does_not_warn_about_a_misnamed_file_on_every_poll() {
        let dir = std::env::temp_dir().join(format!("tessera-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("not a name.wasm"), b"x").unwrap();
        std::fs::write(dir.join("good.wasm"), b"x").unwrap();
        let text = format!("[plugins]\ndirectory = {:?}\n", dir.display().to_string());
        let config = Config::parse(
            &text,
            std::path::Path::new("t.toml"),
            std::path::Path::new("."),
        )
        .unwrap();
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        // Ten polls of the watcher.
        let files = tracing::subscriber::with_default(subscriber, || {
            let mut files = Vec::new();
            for _ in 0..10 {
                files = plugin_files(&config);
            }
            files
        });
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(files, vec![dir.join("good.wasm")]);
        let log = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
        assert!(log.is_empty(), "the watcher's scan logged: {log}");
    }

    #[test]
    fn a_change_is_applied_once_it_is_stable() {
        let mut w = Watched::default();
        assert!(!w.changed(sig(1)), "the first look is the baseline");
        assert!(!w.changed(sig(1)));
        assert!(!w.changed(sig(2)), "still being written?");
        assert!(!w.changed(sig(3)), "still changing");
        assert!(w.changed(sig(3)), "stable for one poll");
        assert!(!w.changed(sig(3)), "applied once");
    }
}
