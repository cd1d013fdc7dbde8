//! Tessera: a programmable API gateway.
//!
//! Routes either proxy to upstream services or are served by WebAssembly components that follow
//! the `tessera:gateway` WIT package (`wit/`). Filters rewrite requests and responses around any
//! route; handlers answer requests and may call upstreams through the host.
//!
//! The request path, in the order a request meets it:
//! [`server`] (accept, request id) → [`router`] (method + path) → [`chain`] (filters in, target,
//! filters out) → [`plugin`] (instances, limits, host imports) / [`upstream`] (proxy, LB,
//! timeouts) → [`error`] (every failure becomes a response in one function).
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let config = tessera::config::Config::load("tessera.toml".as_ref())?;
//! let gateway = tessera::Gateway::new(config).await?.start().await?;
//! println!("listening on {}", gateway.local_addr());
//! gateway.wait().await;
//! # Ok(()) }
//! ```

pub mod bindings;
pub mod body;
pub mod chain;
pub mod config;
pub mod error;
pub mod outbound;
pub mod plugin;
pub mod router;
pub mod routes;
pub mod server;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;

use crate::config::Config;
use crate::plugin::PluginEngine;
use crate::routes::Runtime;

/// A gateway built from a config: plugins compiled, routes resolved, not yet listening.
#[derive(Debug)]
pub struct Gateway {
    config: Config,
    runtime: Arc<Runtime>,
}

impl Gateway {
    /// Builds the plugin engine, loads plugins and resolves routes. Fails, naming what is wrong,
    /// when a plugin is missing, invalid, or does not implement the world a route needs.
    pub async fn new(config: Config) -> anyhow::Result<Self> {
        let engine = Arc::new(PluginEngine::new(&config.plugins)?);
        let runtime = Arc::new(Runtime::build(&config, engine).await?);
        Ok(Self { config, runtime })
    }

    /// The live runtime (routes, plugins, upstreams).
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Binds `server.listen` and serves in the background.
    pub async fn start(self) -> anyhow::Result<RunningGateway> {
        let listen = self.config.server.listen;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding server.listen {listen}"))?;
        let local_addr = listener.local_addr()?;
        let (shutdown, signal) = watch::channel(false);
        let task = tokio::spawn(server::serve(
            listener,
            Arc::clone(&self.runtime),
            self.config.server.max_connections,
            Duration::from_millis(self.config.server.shutdown_grace_ms),
            signal,
        ));
        tracing::info!(%local_addr, routes = self.runtime.routes.len(), "tessera listening");
        Ok(RunningGateway {
            local_addr,
            shutdown,
            task,
        })
    }
}

/// A serving gateway.
#[derive(Debug)]
pub struct RunningGateway {
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningGateway {
    /// The address it listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that starts a graceful shutdown when sent `true`.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }

    /// Stops accepting, lets in-flight requests finish (up to the grace period), and returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }

    /// Waits until the gateway stops (after a shutdown was requested through a handle).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}
