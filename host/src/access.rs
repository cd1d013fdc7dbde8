//! The access log: one line per request, written when its response body has been sent (or the
//! client went away), so the line has the bytes sent and the whole duration.
//!
//! Lines are formatted on the request path and appended to a bounded buffer that a writer
//! thread takes whole every 100 ms (sooner when 256 KiB have gathered): a request never waits on
//! the disk or a slow pipe, and never wakes a thread. When 8 MiB are waiting, lines are dropped
//! and counted (`tessera_access_log_dropped_total`): a gateway that stalls requests to keep its
//! log complete fails its clients instead of its log.
//!
//! The path is logged without its query string (queries often carry tokens).

use std::io::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use serde::Serialize;

use crate::body::{self, Body, BoxError};
use crate::config::{AccessLogConfig, AccessLogFormat};
use crate::metrics::Metrics;

/// A response extension naming what served the request: `upstream/host:port` or
/// `plugin@version`.
#[derive(Debug, Clone)]
pub struct ServedBy(pub Arc<str>);

/// A response extension with the error code of a response the gateway made from an error.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

/// Bytes of lines waiting for the writer; past this, lines are dropped and counted.
const MAX_PENDING: usize = 8 * 1024 * 1024;
/// Pending bytes at which the writer is woken before its next tick.
const WAKE_AT: usize = 256 * 1024;
/// How often the writer writes what has gathered.
const TICK: Duration = Duration::from_millis(100);

/// Where access log lines go.
#[derive(Debug)]
pub struct AccessLog {
    format: AccessLogFormat,
    shared: Arc<Gathered>,
    metrics: Arc<Metrics>,
}

/// Lines formatted and not yet written. Requests append under a short lock; the writer takes
/// the whole buffer every tick, so a request never wakes a thread or makes a system call.
#[derive(Debug, Default)]
struct Gathered {
    lines: Mutex<Vec<u8>>,
    wake: Condvar,
    closed: AtomicBool,
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        // The writer writes what is left, then stops.
        self.shared.closed.store(true, Ordering::Release);
        self.shared.wake.notify_one();
    }
}

impl AccessLog {
    /// Starts the writer for `config`; `None` when the log is off. The file (when not stdout) is
    /// opened for appending now, so a bad path fails the start.
    pub fn start(config: &AccessLogConfig, metrics: Arc<Metrics>) -> anyhow::Result<Option<Self>> {
        if config.format == AccessLogFormat::Off {
            return Ok(None);
        }
        let out: Box<dyn std::io::Write + Send> = match config.path.as_deref() {
            None => Box::new(std::io::stdout()),
            Some(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        anyhow::anyhow!("access_log.path {}: cannot open: {e}", path.display())
                    })?,
            ),
        };
        let shared = Arc::new(Gathered::default());
        let writer = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("tessera-access-log".into())
            .spawn(move || write_lines(&writer, out))?;
        Ok(Some(Self {
            format: config.format,
            shared,
            metrics,
        }))
    }

    fn write(&self, entry: &Entry<'_>) {
        let line = match self.format {
            AccessLogFormat::Json => serde_json::to_string(entry).unwrap_or_default(),
            AccessLogFormat::Text => entry.text(),
            AccessLogFormat::Off => return,
        };
        let mut lines = self.shared.lines.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() + line.len() + 1 > MAX_PENDING {
            drop(lines);
            self.metrics.access_log_dropped();
            return;
        }
        lines.extend_from_slice(line.as_bytes());
        lines.push(b'\n');
        let full = lines.len() >= WAKE_AT;
        drop(lines);
        if full {
            self.shared.wake.notify_one();
        }
    }
}

/// Writes what has gathered every tick (or sooner when much has), until the log is dropped.
fn write_lines(shared: &Gathered, mut out: Box<dyn std::io::Write + Send>) {
    let mut batch = Vec::new();
    loop {
        let closed = {
            let lines = shared.lines.lock().unwrap_or_else(|p| p.into_inner());
            let (mut lines, _) = shared
                .wake
                .wait_timeout_while(lines, TICK, |l| {
                    l.len() < WAKE_AT && !shared.closed.load(Ordering::Acquire)
                })
                .unwrap_or_else(|p| p.into_inner());
            std::mem::swap(&mut *lines, &mut batch);
            shared.closed.load(Ordering::Acquire)
        };
        if !batch.is_empty() && out.write_all(&batch).and_then(|()| out.flush()).is_err() {
            tracing::error!("the access log cannot be written; access logging stops");
            return;
        }
        batch.clear();
        if closed {
            return;
        }
    }
}

/// What is known of a request when its response head leaves; the rest (bytes out, duration) is
/// added when the body is done.
#[derive(Debug)]
pub struct Pending {
    /// When the request head arrived.
    pub started: Instant,
    /// Wall-clock time of the same moment.
    pub time: SystemTime,
    /// The request id.
    pub request_id: Arc<str>,
    /// The trace id.
    pub trace_id: String,
    /// The client's address (the forwarded one behind a trusted proxy).
    pub client: std::net::IpAddr,
    /// Method.
    pub method: http::Method,
    /// Path, without the query.
    pub path: String,
    /// The matched route pattern.
    pub route: Option<Arc<str>>,
    /// Request body bytes read.
    pub bytes_in: Arc<AtomicU64>,
}

#[derive(Serialize)]
struct Entry<'a> {
    time: String,
    request_id: &'a str,
    trace_id: &'a str,
    client: String,
    method: &'a str,
    path: &'a str,
    route: Option<&'a str>,
    status: u16,
    bytes_in: u64,
    bytes_out: u64,
    duration_ms: f64,
    served_by: Option<&'a str>,
    error: Option<&'static str>,
}

impl Entry<'_> {
    fn text(&self) -> String {
        format!(
            "{} {} \"{} {}\" {} in={} out={} {:.3}ms route={} served_by={} error={} request_id={} trace_id={}",
            self.time,
            self.client,
            self.method,
            self.path.escape_debug(),
            self.status,
            self.bytes_in,
            self.bytes_out,
            self.duration_ms,
            self.route.unwrap_or("-"),
            self.served_by.unwrap_or("-"),
            self.error.unwrap_or("-"),
            self.request_id,
            self.trace_id,
        )
    }
}

/// Wraps `response`'s body so that the request's line is written when the body is done.
pub fn log_response(
    log: &Arc<AccessLog>,
    pending: Pending,
    response: http::Response<Body>,
) -> http::Response<Body> {
    let (parts, inner) = response.into_parts();
    let logged = LoggedBody {
        inner,
        bytes_out: 0,
        line: Some(Line {
            pending,
            status: parts.status.as_u16(),
            served_by: parts.extensions.get::<ServedBy>().map(|s| Arc::clone(&s.0)),
            error: parts.extensions.get::<ErrorCode>().map(|e| e.0),
            log: Arc::clone(log),
        }),
    };
    http::Response::from_parts(parts, body::boxed(logged))
}

struct Line {
    pending: Pending,
    status: u16,
    served_by: Option<Arc<str>>,
    error: Option<&'static str>,
    log: Arc<AccessLog>,
}

impl Line {
    fn write(self, bytes_out: u64) {
        let p = &self.pending;
        let entry = Entry {
            time: rfc3339(p.time),
            request_id: &p.request_id,
            trace_id: &p.trace_id,
            client: p.client.to_string(),
            method: p.method.as_str(),
            path: &p.path,
            route: p.route.as_deref(),
            status: self.status,
            bytes_in: p.bytes_in.load(Ordering::Relaxed),
            bytes_out,
            duration_ms: (p.started.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
            served_by: self.served_by.as_deref(),
            error: self.error,
        };
        self.log.write(&entry);
    }
}

/// A response body that writes the access log line once it ended or was dropped.
struct LoggedBody {
    inner: Body,
    bytes_out: u64,
    line: Option<Line>,
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        if let Some(line) = self.line.take() {
            line.write(self.bytes_out);
        }
    }
}

impl http_body::Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes_out += data.len() as u64;
                }
            }
            Poll::Ready(None) => {
                if let Some(line) = self.line.take() {
                    line.write(self.bytes_out);
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that counts the bytes read from it.
#[derive(Debug)]
pub struct CountedBody {
    inner: Body,
    count: Arc<AtomicU64>,
}

impl CountedBody {
    /// Counts `inner`'s bytes into `count`.
    pub fn new(inner: Body, count: Arc<AtomicU64>) -> Self {
        Self { inner, count }
    }
}

impl http_body::Body for CountedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.count.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `2026-11-21T20:30:00.123Z`: RFC 3339 in UTC with milliseconds.
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (days in 400-year eras of
/// 146,097 days, years starting in March so the leap day comes last).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // 2024-02-29 (a leap day) 12:34:56.789.
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.789Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_102_444_800); // 2100-01-01, not a leap year
        assert_eq!(rfc3339(t), "2100-01-01T00:00:00.000Z");
    }
}
