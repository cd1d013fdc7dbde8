//! The plugin runtime: engine, loading, a fresh instance per request, limits, host imports.
//!
//! A plugin is compiled once per version into an [`InstancePre`]; every request that uses it gets
//! a new [`Store`] and instance from the pooling allocator. Each call into the guest runs under a
//! wall-clock deadline enforced twice: epoch interruption traps a guest that computes past it, and
//! a tokio timeout ends a call that waits on the host past it (epochs do not tick there).
//!
//! The files, in the order a plugin meets them:
//! - `engine`: [`PluginEngine`] (the pooling allocator, the epoch ticker, the linker, compiling
//!   a component, creating a store) and [`CallLimits`];
//! - `cache`: the on-disk compile cache (`plugins.cache_dir`), verified before it is trusted;
//! - `registry`: [`LoadedPlugin`], [`LoadError`] and [`PluginRegistry`] (which files a config
//!   names, loading them, refreshing after they change, checking routes' uses);
//! - `check`: the optional `config-check` export, run for every route entry before a version
//!   serves it;
//! - `instance`: [`PluginInstance`], one per request (instantiation, each call's deadline, how a
//!   failure becomes a [`GatewayError`](crate::error::GatewayError));
//! - `state`: [`PluginState`], the per-store data ([`CallContext`], the memory limiter, the log
//!   budget shared by log calls and stdout/stderr);
//! - `reuse`: [`ReusePool`], idle instances of a route entry that opted into reuse;
//! - `host`: the `tessera:gateway` imports, implemented on [`PluginState`];
//! - `wasi_http`: standard `wasi:http/proxy` components as route handlers, with streaming bodies
//!   ([`PluginInstance::serve_wasi_http`]).
//!
//! [`InstancePre`]: wasmtime::component::InstancePre
//! [`Store`]: wasmtime::Store

mod cache;
mod check;
mod engine;
mod host;
mod instance;
mod registry;
mod reuse;
mod state;
mod wasi_http;

pub use cache::write_atomically;
pub use check::MAX_MESSAGE_CHARS;
pub use engine::{CallLimits, PluginEngine};
pub use instance::PluginInstance;
pub use registry::{LoadError, LoadedPlugin, PluginRegistry};
pub use reuse::ReusePool;
pub use state::{CallContext, PluginState};

/// Ends a plugin call's span, marked failed with the error's code when the call failed.
pub fn end_span(
    span: Option<crate::telemetry::TraceSpan>,
    error: Option<&crate::error::GatewayError>,
) {
    if let Some(span) = span {
        if let Some(e) = error {
            span.fail(e.status().1);
        }
        span.end();
    }
}
