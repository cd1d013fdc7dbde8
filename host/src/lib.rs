//! Tessera: a programmable API gateway.
//!
//! Routes either proxy to upstream services or are served by WebAssembly components that follow
//! the `tessera:gateway` WIT package (`wit/`). Filters rewrite requests and responses around any
//! route; handlers answer requests and may call upstreams through the host.
//!
//! The request path, in the order a request meets it:
//! [`server`] (accept, request id) → [`edge`] (framing, host, path, forwarded headers) →
//! [`router`] (method + path) → [`chain`] (filters in, target, filters out) → [`plugin`]
//! (instances, limits, host imports) / [`upstream`] (proxy, LB, timeouts) → [`error`] (every
//! failure becomes a response in one function). [`headers`] holds the one rule for headers a
//! plugin hands back, [`records`] the conversions between WIT records and HTTP; [`ids`] the request id and trace context. [`runtime`] is the live routing
//! table the router's matches index into (routes resolved against upstreams and loaded plugins),
//! and [`live`] swaps it on reload. [`tls`] terminates TLS on the listeners (certificates by SNI,
//! swapped while serving) and speaks it to upstreams. [`kv`] holds the key-value buckets plugins
//! share (`wasi:keyvalue`).
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let config = tessera::config::Config::load("tessera.toml".as_ref())?;
//! let gateway = tessera::Gateway::new(config).await?.start().await?;
//! println!("listening on {}", gateway.local_addr());
//! gateway.wait().await;
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

pub mod access;
pub mod admin;
pub mod admission;
// Generated bindings the benches and fuzz targets reach into; the WIT is their documentation.
#[doc(hidden)]
pub mod bindings;
pub mod body;
pub mod canary;
pub mod chain;
pub mod compression;
pub mod config;
pub mod edge;
pub mod error;
pub mod headers;
pub mod ids;
pub mod kv;
pub mod live;
pub mod metrics;
pub mod outbound;
pub mod plugin;
pub mod records;
pub mod router;
pub mod runtime;
pub mod server;
pub mod telemetry;
pub mod tls;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::watch;

use crate::config::Config;
use crate::live::Live;

/// A gateway built from a config: plugins compiled, routes resolved, not yet listening.
#[derive(Debug)]
pub struct Gateway {
    live: Arc<Live>,
}

impl Gateway {
    /// Builds the plugin engine, loads plugins and resolves routes. Fails, naming what is wrong,
    /// when a plugin is missing, invalid, or does not implement the world a route needs.
    pub async fn new(config: Config) -> anyhow::Result<Self> {
        Ok(Self {
            live: Arc::new(Live::new(config, None).await?),
        })
    }

    /// Like [`Gateway::new`] for a config file, which is then watched and can be reloaded.
    pub async fn from_file(path: &std::path::Path) -> anyhow::Result<Self> {
        let config = Config::load(path)?;
        Ok(Self {
            live: Arc::new(Live::new(config, Some(path.to_owned())).await?),
        })
    }

    /// The live state (runtime, config, reloads).
    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// Binds `server.listen` (TLS when `[server.tls]` is set, and then `server.tls.plain_listen`
    /// beside it if given) and `admin.listen`, watches plugin, config and certificate files, and
    /// serves in the background.
    pub async fn start(self) -> anyhow::Result<RunningGateway> {
        let config = self.live.config();
        let listen = config.server.listen;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding server.listen {listen}"))?;
        let local_addr = listener.local_addr()?;
        let tls = match (&config.server.tls, self.live.server_tls()) {
            (Some(settings), Some(store)) => {
                Some(tls::TlsAcceptor::new(Arc::clone(store), settings).context("server.tls")?)
            }
            _ => None,
        };
        let mut plain_addr = None;
        let mut plain = None;
        if let Some(addr) = config.server.tls.as_ref().and_then(|t| t.plain_listen) {
            let tcp = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding server.tls.plain_listen {addr}"))?;
            plain_addr = Some(tcp.local_addr()?);
            plain = Some(server::Listener { tcp, tls: None });
        }
        let (shutdown, signal) = watch::channel(false);
        let mut admin_addr = None;
        if let Some(admin) = &config.admin {
            let token = admin
                .effective_token()
                .context("the admin API needs a token (admin.token or TESSERA_ADMIN_TOKEN)")?;
            let admin_listener = tokio::net::TcpListener::bind(admin.listen)
                .await
                .with_context(|| format!("binding admin.listen {}", admin.listen))?;
            admin_addr = Some(admin_listener.local_addr()?);
            let admin_tls = match (&admin.tls, self.live.admin_tls()) {
                (Some(settings), Some(store)) => {
                    Some(tls::TlsAcceptor::new(Arc::clone(store), settings).context("admin.tls")?)
                }
                _ => None,
            };
            tokio::spawn(admin::serve(
                server::Listener {
                    tcp: admin_listener,
                    tls: admin_tls,
                },
                Arc::clone(&self.live),
                token,
                config.server.clone(),
                admin.max_connections,
                signal.clone(),
            ));
        }
        let mut metrics_addr = None;
        if let Some(listen) = config.metrics.listen {
            let metrics_listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding metrics.listen {listen}"))?;
            metrics_addr = Some(metrics_listener.local_addr()?);
            tokio::spawn(admin::serve_metrics(
                metrics_listener,
                Arc::clone(&self.live),
                config.server.clone(),
                signal.clone(),
            ));
        }
        let metrics = Arc::clone(self.live.metrics());
        let access_config = config::AccessLogConfig {
            path: config.access_log.path.as_deref().map(|p| config.resolve(p)),
            ..config.access_log.clone()
        };
        let observers = server::Observers {
            access: access::AccessLog::start(&access_config, Arc::clone(&metrics))?.map(Arc::new),
            telemetry: telemetry::Telemetry::start(&config.telemetry)?,
            metrics,
        };
        let telemetry = observers.telemetry.clone();
        let watcher = self.live.watch();
        let task = tokio::spawn(server::serve(
            server::Listener { tcp: listener, tls },
            plain,
            Arc::clone(&self.live),
            config.server.clone(),
            observers,
            signal,
        ));
        tracing::info!(%local_addr, tls = config.server.tls.is_some(), plain = ?plain_addr, admin = ?admin_addr, metrics = ?metrics_addr, routes = self.live.runtime().routes.len(), "tessera listening");
        Ok(RunningGateway {
            local_addr,
            plain_addr,
            admin_addr,
            metrics_addr,
            telemetry,
            live: self.live,
            shutdown,
            task,
            watcher,
        })
    }
}

/// A serving gateway.
#[derive(Debug)]
pub struct RunningGateway {
    local_addr: SocketAddr,
    plain_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    telemetry: Option<Arc<telemetry::Telemetry>>,
    live: Arc<Live>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    watcher: tokio::task::JoinHandle<()>,
}

impl RunningGateway {
    /// The address it listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The cleartext listener beside the TLS one (`server.tls.plain_listen`), when configured.
    pub fn plain_addr(&self) -> Option<SocketAddr> {
        self.plain_addr
    }

    /// The admin API's address, when configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The live state (runtime, config, reloads).
    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// The address of the token-less metrics listener (`metrics.listen`), when configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Exports the traces finished so far, now (when traces are on).
    pub async fn flush_traces(&self) {
        if let Some(t) = self.telemetry.clone() {
            let _ = tokio::task::spawn_blocking(move || t.flush()).await;
        }
    }

    /// A handle that starts a graceful shutdown when sent `true`.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }

    /// Stops accepting, lets in-flight requests finish (up to the grace period), and returns.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        let _ = (&mut self.task).await;
        self.watcher.abort();
        self.flush_traces().await;
    }

    /// Waits until the gateway stops (after a shutdown was requested through a handle).
    pub async fn wait(mut self) {
        let _ = (&mut self.task).await;
        self.watcher.abort();
        self.flush_traces().await;
    }
}
