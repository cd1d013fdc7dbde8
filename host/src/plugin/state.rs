//! Per-store data: what the host imports know about the request ([`CallContext`]), WASI and
//! `wasi:http`, the memory limiter, and the log budget that guest log calls and stdout/stderr
//! lines share.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::engine::CallLimits;
use crate::outbound::{Outbound, OutboundContext};

/// What the host imports know about the request a plugin instance serves.
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
    /// The client's address (the forwarded one behind a trusted proxy).
    pub client: std::net::IpAddr,
    /// What the plugin's outbound calls may do.
    pub outbound: Arc<OutboundContext>,
    /// The key-value buckets the plugin may open.
    pub kv: crate::kv::KvAccess,
}

/// Leaves the config out: it may hold resolved secrets.
impl fmt::Debug for CallContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallContext")
            .field("plugin", &self.plugin)
            .field("request_id", &self.request_id)
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

/// The log budget of the request an instance serves now; a reused instance gets a new one per
/// request, and stdout/stderr (set up once with the store) follow it.
pub(super) type CurrentLog = Arc<arc_swap::ArcSwap<LogBudget>>;

/// Per-store data: WASI, the limiter and the request's context.
pub struct PluginState {
    pub(super) wasi: WasiCtx,
    pub(super) http: WasiHttpCtx,
    pub(crate) table: ResourceTable,
    pub(super) limiter: PluginLimiter,
    pub(crate) call: Arc<CallContext>,
    pub(crate) outbound: Outbound,
    pub(super) log: CurrentLog,
    /// `pending-response` handles the guest holds; a reused instance must hold none between
    /// requests (a call of one request must not run into the next).
    pub(super) open_calls: u32,
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

/// `wasi:http`'s outgoing calls go through [`Outbound`], the same checks and clients as
/// `tessera:gateway/http-client` (see [`crate::outbound`]).
impl WasiHttpView for PluginState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// Caps linear memory and remembers whether the cap was hit, so the log can say so.
pub(super) struct PluginLimiter {
    pub(super) max_memory: usize,
    pub(super) memory_denied: bool,
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
pub(super) struct LogBudget {
    plugin: Arc<str>,
    request_id: Arc<str>,
    max_lines: u32,
    max_bytes: usize,
    lines: AtomicU32,
    bytes: AtomicUsize,
    suppressed: AtomicU32,
}

impl LogBudget {
    pub(super) fn new(call: &CallContext, limits: &CallLimits) -> Self {
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
    pub(super) fn admit(&self, len: usize) -> bool {
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
pub(super) struct PluginOutput {
    pub(super) log: CurrentLog,
    pub(super) stream: &'static str,
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
    log: CurrentLog,
    stream: &'static str,
    line: Vec<u8>,
}

impl LineLogger {
    fn emit(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let log = self.log.load();
        if log.admit(self.line.len()) {
            let text = String::from_utf8_lossy(&self.line);
            tracing::info!(target: "tessera::plugin", plugin = %log.plugin, request_id = %log.request_id, stream = self.stream, "{}", text.trim_end());
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
