//! Response compression: gzip and brotli, chosen by the request's `accept-encoding`
//! (RFC 9110 §12.5.3), applied to every response as it leaves the gateway, proxied or from a
//! plugin.
//!
//! The body is compressed as it streams: nothing is buffered beyond the encoder's own state, and
//! an error in the source body ends the compressed stream with that error, as it would have
//! ended the uncompressed one. The encoder flushes whenever its source pauses, so a slow stream
//! is not held back until a buffer fills.

use std::io;

use async_compression::Level;
use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder};
use futures::TryStreamExt;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyDataStream, StreamBody};
use tokio_util::io::{ReaderStream, StreamReader};

use crate::body::{self, Body, BoxError};
use crate::config::{CompressionConfig, ContentCoding, MediaRange};

/// Brotli window (`lgwin`): 512 KiB instead of the library's 4 MiB, which bounds the memory of
/// each compressed response; dynamic responses rarely gain from a longer window.
const BROTLI_WINDOW_BITS: i32 = 19;

/// Bytes read from the encoder at a time.
const CHUNK: usize = 8 * 1024;

/// Marks a response that must leave uncompressed (its route opted out).
#[derive(Debug, Clone, Copy)]
pub struct Uncompressed;

/// `[server.compression]`, ready to apply.
#[derive(Debug, Clone)]
pub struct Compression {
    enabled: bool,
    min_bytes: u64,
    content_types: Vec<MediaRange>,
    algorithms: Vec<ContentCoding>,
    gzip_level: u32,
    brotli_quality: u32,
}

impl Compression {
    /// The policy of a `[server.compression]` section.
    pub fn new(config: &CompressionConfig) -> Self {
        Self {
            enabled: config.enabled && !config.algorithms.is_empty(),
            min_bytes: config.min_bytes,
            content_types: config.content_types.clone(),
            algorithms: config.algorithms.clone(),
            gzip_level: config.gzip_level,
            brotli_quality: config.brotli_quality,
        }
    }

    /// What the response will need to know about `request`, taken before the request is
    /// consumed.
    pub fn request_facts<B>(&self, request: &Request<B>) -> RequestFacts {
        if !self.enabled {
            return RequestFacts::default();
        }
        let method = request.method();
        let headers = request.headers();
        RequestFacts {
            never: method == Method::HEAD
                || method == Method::CONNECT
                || headers.contains_key(header::UPGRADE),
            accept: headers
                .get_all(header::ACCEPT_ENCODING)
                .iter()
                .cloned()
                .collect(),
        }
    }

    /// `response`, compressed when it is eligible and the client accepts an encoding the
    /// server offers.
    pub fn apply(&self, facts: &RequestFacts, mut response: Response<Body>) -> Response<Body> {
        if !self.enabled
            || facts.never
            || response.extensions().get::<Uncompressed>().is_some()
            || !self.eligible(&response)
        {
            return response;
        }
        // From here the representation depends on `accept-encoding`, whatever this client sent:
        // caches must key on it.
        add_vary(response.headers_mut());
        let Some(coding) = negotiate(&facts.accept, &self.algorithms) else {
            return response;
        };
        let (mut parts, body) = response.into_parts();
        let headers = &mut parts.headers;
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::CONTENT_ENCODING);
        // Ranges would address the uncompressed bytes.
        headers.remove(header::ACCEPT_RANGES);
        headers.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(coding.token()),
        );
        weaken_etag(headers);
        Response::from_parts(parts, self.encode(body, coding))
    }

    /// Whether the response may be compressed at all, whatever the client accepts.
    fn eligible(&self, response: &Response<Body>) -> bool {
        let status = response.status();
        if status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
            || status == StatusCode::PARTIAL_CONTENT
        {
            return false;
        }
        let headers = response.headers();
        if headers.contains_key(header::CONTENT_RANGE)
            || already_encoded(headers)
            || no_transform(headers)
            || !self.compressible_type(headers.get(header::CONTENT_TYPE))
        {
            return false;
        }
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let length = declared.or_else(|| http_body::Body::size_hint(response.body()).exact());
        length.is_none_or(|n| n >= self.min_bytes.max(1))
    }

    fn compressible_type(&self, value: Option<&HeaderValue>) -> bool {
        let Some(value) = value.and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let essence = value.split(';').next().unwrap_or("").trim();
        let Some((kind, subtype)) = essence.split_once('/') else {
            return false;
        };
        let (kind, subtype) = (kind.to_ascii_lowercase(), subtype.to_ascii_lowercase());
        // Events must reach the client as they happen.
        if kind == "text" && subtype == "event-stream" {
            return false;
        }
        self.content_types
            .iter()
            .any(|range| range.matches(&kind, &subtype))
    }

    fn encode(&self, body: Body, coding: ContentCoding) -> Body {
        let source = StreamReader::new(BodyDataStream::new(body).map_err(io::Error::other));
        match coding {
            ContentCoding::Gzip => {
                let level = i32::try_from(self.gzip_level).unwrap_or(6);
                stream_body(GzipEncoder::with_quality(source, Level::Precise(level)))
            }
            ContentCoding::Brotli => {
                let quality = i32::try_from(self.brotli_quality).unwrap_or(4);
                let params = async_compression::brotli::EncoderParams::default()
                    .quality(Level::Precise(quality))
                    .window_size(BROTLI_WINDOW_BITS);
                stream_body(BrotliEncoder::with_params(source, params))
            }
        }
    }
}

fn stream_body<R>(reader: R) -> Body
where
    R: tokio::io::AsyncRead + Send + 'static,
{
    let frames = ReaderStream::with_capacity(reader, CHUNK)
        .map_ok(http_body::Frame::data)
        .map_err(BoxError::from);
    body::boxed(StreamBody::new(frames))
}

/// What a response's compression needs from its request.
#[derive(Debug, Clone, Default)]
pub struct RequestFacts {
    /// HEAD, CONNECT or an upgrade: never compressed.
    never: bool,
    /// The `accept-encoding` lines.
    accept: Vec<HeaderValue>,
}

/// A `content-encoding` other than `identity`.
fn already_encoded(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .any(|c| !c.is_empty() && !c.eq_ignore_ascii_case(b"identity"))
}

/// `cache-control: no-transform` (RFC 9111 §5.2.2.6).
fn no_transform(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .any(|d| d.eq_ignore_ascii_case(b"no-transform"))
}

/// Appends `accept-encoding` to `vary` unless it is already there (or `vary: *`).
fn add_vary(headers: &mut HeaderMap) {
    let present = headers
        .get_all(header::VARY)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .any(|f| f == b"*" || f.eq_ignore_ascii_case(b"accept-encoding"));
    if !present {
        headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
}

/// A strong `etag` becomes weak: the compressed bytes differ from those it was computed over.
fn weaken_etag(headers: &mut HeaderMap) {
    let Some(etag) = headers.get(header::ETAG) else {
        return;
    };
    let bytes = etag.as_bytes();
    if bytes.starts_with(b"W/") {
        return;
    }
    let mut weak = Vec::with_capacity(bytes.len() + 2);
    weak.extend_from_slice(b"W/");
    weak.extend_from_slice(bytes);
    match HeaderValue::from_bytes(&weak) {
        Ok(v) => {
            headers.insert(header::ETAG, v);
        }
        Err(_) => {
            headers.remove(header::ETAG);
        }
    }
}

/// The encoding to use: among `offered` (server order), the one the client weighs highest,
/// provided it is above zero and not below an explicit `identity` weight. `None`: send as is.
fn negotiate(accept: &[HeaderValue], offered: &[ContentCoding]) -> Option<ContentCoding> {
    if accept.is_empty() {
        return None;
    }
    let mut explicit: Vec<(ContentCoding, u16)> = Vec::new();
    let (mut any, mut identity) = (None, None);
    for (name, q) in accept
        .iter()
        .flat_map(|v| parse_accept_encoding(v.as_bytes()))
    {
        let slot = if name.eq_ignore_ascii_case(b"*") {
            &mut any
        } else if name.eq_ignore_ascii_case(b"identity") {
            &mut identity
        } else if let Some(coding) = coding_named(name) {
            // The first mention counts; a repeated coding is ambiguous, not a second chance.
            if !explicit.iter().any(|(c, _)| *c == coding) {
                explicit.push((coding, q));
            }
            continue;
        } else {
            continue;
        };
        slot.get_or_insert(q);
    }
    let mut best: Option<(ContentCoding, u16)> = None;
    for &coding in offered {
        let q = explicit
            .iter()
            .find(|(c, _)| *c == coding)
            .map(|(_, q)| *q)
            .or(any)
            .unwrap_or(0);
        if q > 0 && best.is_none_or(|(_, b)| q > b) {
            best = Some((coding, q));
        }
    }
    let (coding, q) = best?;
    (q >= identity.unwrap_or(0)).then_some(coding)
}

fn coding_named(name: &[u8]) -> Option<ContentCoding> {
    if name.eq_ignore_ascii_case(b"br") {
        Some(ContentCoding::Brotli)
    } else if name.eq_ignore_ascii_case(b"gzip") || name.eq_ignore_ascii_case(b"x-gzip") {
        // RFC 9110 §8.4.1.3: `x-gzip` is gzip.
        Some(ContentCoding::Gzip)
    } else {
        None
    }
}

/// The entries of one `accept-encoding` line as (coding, weight in thousandths). Malformed
/// entries (no token, a bad or repeated weight, other parameters) are skipped.
fn parse_accept_encoding(line: &[u8]) -> impl Iterator<Item = (&[u8], u16)> {
    line.split(|&b| b == b',').filter_map(|entry| {
        let mut parts = entry.split(|&b| b == b';');
        let name = parts.next()?.trim_ascii();
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return None;
        }
        let mut q = None;
        for param in parts {
            let (key, value) = split_once(param.trim_ascii(), b'=')?;
            if !key.trim_ascii().eq_ignore_ascii_case(b"q") || q.is_some() {
                return None;
            }
            q = Some(parse_qvalue(value.trim_ascii())?);
        }
        Some((name, q.unwrap_or(1000)))
    })
}

fn split_once(bytes: &[u8], at: u8) -> Option<(&[u8], &[u8])> {
    let i = bytes.iter().position(|&b| b == at)?;
    Some((&bytes[..i], &bytes[i + 1..]))
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )` (RFC 9110 §12.4.2), in
/// thousandths.
fn parse_qvalue(value: &[u8]) -> Option<u16> {
    let (int, frac) = match split_once(value, b'.') {
        Some((i, f)) => (i, f),
        None => (value, &b""[..]),
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for (i, d) in frac.iter().enumerate() {
        thousandths += u16::from(d - b'0') * [100, 10, 1][i];
    }
    match int {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// RFC 9110 §5.6.2 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ContentCoding::{Brotli, Gzip};

    const BOTH: &[ContentCoding] = &[Brotli, Gzip];

    fn pick(accept: &str, offered: &[ContentCoding]) -> Option<ContentCoding> {
        negotiate(&[HeaderValue::from_str(accept).unwrap()], offered)
    }

    #[test]
    fn negotiation_follows_weights_then_server_order() {
        assert_eq!(pick("gzip", BOTH), Some(Gzip));
        assert_eq!(pick("gzip, br", BOTH), Some(Brotli));
        assert_eq!(pick("gzip, br", &[Gzip, Brotli]), Some(Gzip));
        assert_eq!(pick("gzip;q=1, br;q=0.5", BOTH), Some(Gzip));
        assert_eq!(pick("GZIP;Q=0.9, Br;q=0.8", BOTH), Some(Gzip));
        assert_eq!(pick("br;q=0, gzip;q=0.001", BOTH), Some(Gzip));
        assert_eq!(pick("*", BOTH), Some(Brotli));
        assert_eq!(pick("*;q=0.5, br;q=0.1", BOTH), Some(Gzip));
        assert_eq!(pick("*, br;q=0", BOTH), Some(Gzip));
        assert_eq!(pick("x-gzip", BOTH), Some(Gzip));
        assert_eq!(pick("deflate, zstd", BOTH), None);
        assert_eq!(pick("br", &[Gzip]), None);
    }

    #[test]
    fn identity_and_exclusions() {
        assert_eq!(pick("identity", BOTH), None);
        assert_eq!(pick("", BOTH), None);
        assert_eq!(pick("gzip;q=0", BOTH), None);
        assert_eq!(pick("*;q=0", BOTH), None);
        assert_eq!(pick("identity;q=1, gzip;q=0.5", BOTH), None);
        assert_eq!(pick("identity;q=0.5, gzip", BOTH), Some(Gzip));
        assert_eq!(pick("identity, gzip", BOTH), Some(Gzip));
        assert_eq!(negotiate(&[], BOTH), None);
        // Several lines are one list.
        let lines = [
            HeaderValue::from_static("identity;q=0.2"),
            HeaderValue::from_static("gzip;q=0.3"),
        ];
        assert_eq!(negotiate(&lines, BOTH), Some(Gzip));
    }

    #[test]
    fn malformed_entries_are_skipped() {
        for accept in [
            "gzip;q=2",
            "gzip;q=1.5",
            "gzip;q=0.1234",
            "gzip;q=",
            "gzip;q=abc",
            "gzip;level=1",
            "gzip;q=0.5;q=1",
            "gz ip",
            ";q=1",
            ",,,",
            "gzip;q=-1",
            "gzip;q=1.001",
        ] {
            assert_eq!(pick(accept, BOTH), None, "{accept}");
        }
        assert_eq!(pick("gzip;q=2, br;q=0.4", BOTH), Some(Brotli));
        assert_eq!(pick(" , gzip ;  q=0.5 ,", BOTH), Some(Gzip));
        let binary = HeaderValue::from_bytes(b"gzip\xff, br").unwrap();
        assert_eq!(negotiate(&[binary], BOTH), Some(Brotli));
    }

    #[test]
    fn qvalues() {
        assert_eq!(parse_qvalue(b"1"), Some(1000));
        assert_eq!(parse_qvalue(b"1.000"), Some(1000));
        assert_eq!(parse_qvalue(b"0.5"), Some(500));
        assert_eq!(parse_qvalue(b"0.05"), Some(50));
        assert_eq!(parse_qvalue(b"0."), Some(0));
        assert_eq!(parse_qvalue(b"0"), Some(0));
        assert_eq!(parse_qvalue(b"1.1"), None);
        assert_eq!(parse_qvalue(b".5"), None);
        assert_eq!(parse_qvalue(b"00.5"), None);
    }

    fn policy() -> Compression {
        Compression::new(&CompressionConfig::default())
    }

    fn response(headers: &[(&str, &str)], len: usize) -> Response<Body> {
        let mut r = Response::new(body::full(vec![b'a'; len]));
        for (n, v) in headers {
            r.headers_mut().append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        r
    }

    #[test]
    fn eligibility() {
        let p = policy();
        let json = [("content-type", "Application/JSON; charset=utf-8")];
        assert!(p.eligible(&response(&json, 2000)));
        assert!(!p.eligible(&response(&json, 1000)));
        assert!(p.eligible(&response(&[("content-type", "text/html")], 2000)));
        assert!(p.eligible(&response(
            &[("content-type", "application/problem+json")],
            2000
        )));
        assert!(!p.eligible(&response(&[("content-type", "text/event-stream")], 2000)));
        assert!(!p.eligible(&response(&[("content-type", "image/png")], 2000)));
        assert!(!p.eligible(&response(&[], 2000)));
        for extra in [
            ("content-encoding", "gzip"),
            ("cache-control", "public, No-Transform"),
            ("content-range", "bytes 0-1999/5000"),
        ] {
            let r = response(&[json[0], extra], 2000);
            assert!(!p.eligible(&r), "{extra:?}");
        }
        assert!(p.eligible(&response(
            &[json[0], ("content-encoding", "identity")],
            2000
        )));
        for status in [204, 206, 304, 101] {
            let mut r = response(&json, 2000);
            *r.status_mut() = StatusCode::from_u16(status).unwrap();
            assert!(!p.eligible(&r), "{status}");
        }
    }

    #[test]
    fn headers_of_a_compressed_response() {
        let p = policy();
        let request = Request::get("/")
            .header("accept-encoding", "gzip")
            .body(())
            .unwrap();
        let facts = p.request_facts(&request);
        let r = response(
            &[
                ("content-type", "application/json"),
                ("content-length", "2000"),
                ("etag", "\"v1\""),
                ("vary", "Origin"),
                ("accept-ranges", "bytes"),
            ],
            2000,
        );
        let r = p.apply(&facts, r);
        let h = r.headers();
        assert_eq!(h["content-encoding"], "gzip");
        assert!(h.get("content-length").is_none());
        assert!(h.get("accept-ranges").is_none());
        assert_eq!(h["etag"], "W/\"v1\"");
        let vary: Vec<_> = h.get_all("vary").iter().collect();
        assert_eq!(vary, ["Origin", "accept-encoding"]);

        // Already varying on it: not repeated. Not accepted: vary all the same.
        let identity = Request::get("/").body(()).unwrap();
        let r = response(
            &[
                ("content-type", "application/json"),
                ("vary", "origin, Accept-Encoding"),
                ("etag", "\"v1\""),
            ],
            2000,
        );
        let r = p.apply(&p.request_facts(&identity), r);
        assert_eq!(r.headers().get_all("vary").iter().count(), 1);
        assert_eq!(r.headers()["etag"], "\"v1\"");
        let r = p.apply(
            &p.request_facts(&identity),
            response(&[("content-type", "application/json")], 2000),
        );
        assert_eq!(r.headers()["vary"], "accept-encoding");
        assert!(r.headers().get("content-encoding").is_none());

        // HEAD and opted-out responses are left alone.
        let head = Request::head("/")
            .header("accept-encoding", "gzip")
            .body(())
            .unwrap();
        let r = p.apply(
            &p.request_facts(&head),
            response(&[("content-type", "application/json")], 2000),
        );
        assert!(r.headers().get("vary").is_none());
        assert!(r.headers().get("content-encoding").is_none());
        let mut r = response(&[("content-type", "application/json")], 2000);
        r.extensions_mut().insert(Uncompressed);
        let r = p.apply(&facts, r);
        assert!(r.headers().get("content-encoding").is_none());
        assert!(r.headers().get("vary").is_none());
    }
}
