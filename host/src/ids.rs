//! Request ids and W3C trace context: the identifiers a request carries through the gateway, to
//! upstreams and to plugins. A leaf module: anything on the request path may use it.

use std::cell::RefCell;

/// The request id header, set on responses, upstream requests and plugin calls.
pub const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// The W3C trace context header.
pub const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// Random bytes fetched from the OS at a time; ids are cut from a per-thread buffer so a request
/// costs no system call.
const POOL: usize = 4096;

thread_local! {
    static RANDOM: RefCell<(Vec<u8>, usize)> = const { RefCell::new((Vec::new(), POOL)) };
}

/// `N` bytes from the operating system's CSPRNG.
fn random_bytes<const N: usize>() -> [u8; N] {
    RANDOM.with(|cell| {
        let (pool, used) = &mut *cell.borrow_mut();
        if pool.len() != POOL || *used + N > POOL {
            pool.resize(POOL, 0);
            // The OS generator failing is not recoverable here and does not happen on Linux
            // after boot; fall back to std's randomly keyed hasher rather than repeat bytes.
            if getrandom::fill(pool).is_err() {
                fill_from_hasher(pool);
            }
            *used = 0;
        }
        let mut out = [0u8; N];
        out.copy_from_slice(&pool[*used..*used + N]);
        *used += N;
        out
    })
}

fn fill_from_hasher(buf: &mut [u8]) {
    use std::hash::{BuildHasher, Hasher};
    for (i, chunk) in buf.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(i);
        let v = h.finish().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// Lowercase hex; every request pays for an id, so no formatting machinery.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0x0f)]);
    }
    String::from_utf8(out).unwrap_or_default()
}

/// A new request id: 128 random bits as 32 lowercase hex digits. Ids say nothing about the
/// process or how many requests it served.
pub fn new_request_id() -> String {
    hex(&random_bytes::<16>())
}

/// Whether a request id from elsewhere (a trusted proxy) may be kept: short and printable, so it
/// is safe in logs and headers.
pub fn valid_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// A valid `traceparent` (W3C Trace Context: version 00 has exactly four fields; a later
/// version may append fields after the four it shares with 00), or `None`.
pub fn parse_traceparent(value: &str) -> Option<&str> {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    match parts.as_slice() {
        [version, _, _, _, _, ..] if *version == "00" => None,
        [version, trace, parent, flags, ..]
            if hex(version, 2)
                && *version != "ff"
                && hex(trace, 32)
                && nonzero(trace)
                && hex(parent, 16)
                && nonzero(parent)
                && hex(flags, 2) =>
        {
            Some(value)
        }
        _ => None,
    }
}

/// A non-zero random span id.
fn span_id() -> String {
    let mut id = random_bytes::<8>();
    id[7] |= 1;
    hex(&id)
}

/// A fresh trace context for a request that came without one.
pub fn new_traceparent() -> String {
    let mut trace = random_bytes::<16>();
    trace[15] |= 1;
    format!("00-{}-{}-00", hex(&trace), span_id())
}

/// A request's W3C trace context: the client's `traceparent` when it sent a valid one, else a new
/// trace, made only when a plugin first calls out (most requests never need one).
#[derive(Debug, Default)]
pub struct TraceContext {
    incoming: Option<String>,
    made: std::sync::OnceLock<String>,
}

impl TraceContext {
    /// From the request's `traceparent` header value, if any.
    pub fn new(incoming: Option<&str>) -> Self {
        Self {
            incoming: incoming.and_then(parse_traceparent).map(str::to_owned),
            made: std::sync::OnceLock::new(),
        }
    }

    /// The trace id: 32 hex digits.
    pub fn trace_id(&self) -> &str {
        self.traceparent().get(3..35).unwrap_or_default()
    }

    /// The request's `traceparent`; the same for every call of the request.
    pub fn traceparent(&self) -> &str {
        match &self.incoming {
            Some(tp) => tp,
            None => self.made.get_or_init(new_traceparent),
        }
    }
}

/// The trace context for a call made on behalf of `parent`: same trace, new parent id.
pub fn child_traceparent(parent: &str) -> String {
    let mut parts = parent.splitn(4, '-');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(trace), Some(_), Some(flags)) => {
            format!("00-{trace}-{}-{}", span_id(), &flags[..flags.len().min(2)])
        }
        _ => new_traceparent(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_random_128_bit_hex() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        // Consecutive ids share no prefix beyond chance (a counter-based id would).
        let ids: Vec<String> = (0..300).map(|_| new_request_id()).collect();
        let same_prefix = ids.windows(2).filter(|w| w[0][..8] == w[1][..8]).count();
        assert_eq!(same_prefix, 0);
    }

    #[test]
    fn outside_ids_are_checked() {
        assert!(valid_request_id("abc-123"));
        assert!(!valid_request_id(""));
        assert!(!valid_request_id("has space"));
        assert!(!valid_request_id(&"x".repeat(129)));
    }

    #[test]
    fn trace_context_is_kept_and_children_get_new_parent_ids() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(parse_traceparent(tp), Some(tp));
        assert_eq!(
            parse_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(parse_traceparent("garbage"), None);
        assert_eq!(
            parse_traceparent(&format!("{tp}-extra")),
            None,
            "00 has four fields"
        );
        let future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes";
        assert_eq!(parse_traceparent(future), Some(future));
        let child = child_traceparent(tp);
        assert!(
            child.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{child}"
        );
        assert!(child.ends_with("-01"));
        assert_ne!(child, tp);
        assert!(parse_traceparent(&child).is_some());
        assert!(parse_traceparent(&new_traceparent()).is_some());
        let kept = TraceContext::new(Some(tp));
        assert_eq!(kept.traceparent(), tp);
        let made = TraceContext::new(Some("garbage"));
        assert_eq!(
            made.traceparent(),
            made.traceparent(),
            "one trace per request"
        );
        assert!(parse_traceparent(made.traceparent()).is_some());
    }
}
