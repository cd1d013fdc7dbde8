//! What the gateway checks and rewrites in a client's request before routing it: framing
//! (`transfer-encoding`), `host`, the path, and the headers that claim where a request came from.
//!
//! - **Transfer-Encoding** (HTTP/1.x): exactly one field line whose value is `chunked` (any case,
//!   surrounding whitespace allowed). Several lines are a 400; any other coding, including lists
//!   that end in `chunked`, a 501, as nginx answers. The connection is closed after either.
//! - **Host** (RFC 9112 §3.2): an HTTP/1.1 request has exactly one `host` line, an HTTP/1.0 one at
//!   most one; an HTTP/2 request's `host`, when present, names the same authority as
//!   `:authority` (RFC 9113 §8.3.1). Otherwise 400.
//! - **Path** (the model Envoy uses): encoded slashes and backslashes (`%2F`, `%5C`, a raw `\`)
//!   are rejected, kept, or decoded to `/` (`server.escaped_slashes`); then runs of slashes are
//!   merged (`server.merge_slashes`) and dot segments removed as RFC 3986 §5.2.4 describes
//!   (`server.normalize_path`), `%2e` counting as `.`. Routing and the upstream see the result,
//!   so `/users/..%2f..%2forders` can neither match `/users/{id}` nor reach an upstream that
//!   decodes it.
//! - **Forwarded headers**: from a peer outside `server.trusted_proxies`, `x-forwarded-for`,
//!   `x-forwarded-host`, `x-forwarded-proto`, `forwarded` and `x-real-ip` are removed before any
//!   filter sees the request (the proxy then sets its own); from a trusted peer they are kept and
//!   the proxy extends `x-forwarded-for`.

use std::borrow::Cow;
use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName};
use http::{Request, Version};
use ipnet::IpNet;
use toml::Spanned;

use crate::config::{EscapedSlashes, ServerConfig};
use crate::error::GatewayError;
use crate::router::starts_with_escaped_slash;

/// Headers through which a request claims to have been forwarded.
const FORWARDED: [HeaderName; 5] = [
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("forwarded"),
    HeaderName::from_static("x-real-ip"),
];

/// Parses `ip` or `ip/prefix`.
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    text.parse::<IpNet>()
        .map(|net| net.trunc())
        .map_err(|_| format!("`{text}` is not an IP address or an `ip/prefix` network"))
}

/// `server.trusted_proxies`, parsed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// From the (validated) config list; entries that do not parse are skipped.
    pub fn new(list: &[Spanned<String>]) -> Self {
        Self(
            list.iter()
                .filter_map(|s| parse_cidr(s.get_ref()).ok())
                .collect(),
        )
    }

    /// Whether `ip` is a trusted proxy. IPv4-mapped IPv6 addresses count as their IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// Who sent a request: the peer of the connection and, behind trusted proxies, the client.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The connection's remote address.
    pub addr: std::net::SocketAddr,
    /// Whether that address is a trusted proxy.
    pub trusted: bool,
    /// The client: the peer, or behind trusted proxies the right-most `x-forwarded-for` entry
    /// that is not itself a trusted proxy.
    pub client: IpAddr,
}

impl Peer {
    /// Classifies the peer of `headers`' request.
    pub fn new(addr: std::net::SocketAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> Self {
        let is_trusted = trusted.contains(addr.ip());
        let mut client = addr.ip().to_canonical();
        if is_trusted {
            let hops: Vec<IpAddr> = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
                .collect();
            for hop in hops.into_iter().rev() {
                client = hop.to_canonical();
                if !trusted.contains(hop) {
                    break;
                }
            }
        }
        Self {
            addr,
            trusted: is_trusted,
            client,
        }
    }
}

/// Removes forwarded headers a peer outside the trusted proxies sent.
pub fn drop_untrusted_forwarded(headers: &mut HeaderMap, peer: &Peer) {
    if !peer.trusted {
        for name in &FORWARDED {
            headers.remove(name);
        }
    }
}

/// Checks `transfer-encoding` and `host`; the error says what was wrong.
pub fn check_head<B>(request: &Request<B>) -> Result<(), GatewayError> {
    let headers = request.headers();
    let version = request.version();
    if version <= Version::HTTP_11 {
        let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
        if let Some(first) = codings.next() {
            if codings.next().is_some() {
                return Err(GatewayError::BadRequest(
                    "more than one transfer-encoding header".into(),
                ));
            }
            let value = first.as_bytes().trim_ascii();
            if !value.eq_ignore_ascii_case(b"chunked") {
                return Err(GatewayError::NotImplemented(
                    "transfer-encoding other than `chunked` is not supported".into(),
                ));
            }
        }
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(GatewayError::BadRequest("more than one host header".into()));
    }
    match version {
        Version::HTTP_11 if host.is_none() => {
            Err(GatewayError::BadRequest("missing host header".into()))
        }
        Version::HTTP_2 | Version::HTTP_3 => match (host, request.uri().authority()) {
            (Some(h), Some(authority))
                if !h
                    .as_bytes()
                    .eq_ignore_ascii_case(authority.as_str().as_bytes()) =>
            {
                Err(GatewayError::BadRequest(
                    "host header differs from :authority".into(),
                ))
            }
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// The path settings of `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct PathRules {
    /// `server.normalize_path`.
    pub normalize: bool,
    /// `server.merge_slashes`.
    pub merge_slashes: bool,
    /// `server.escaped_slashes`.
    pub escaped_slashes: EscapedSlashes,
}

impl From<&ServerConfig> for PathRules {
    fn from(s: &ServerConfig) -> Self {
        Self {
            normalize: s.normalize_path,
            merge_slashes: s.merge_slashes,
            escaped_slashes: s.escaped_slashes,
        }
    }
}

/// A dot segment: `.` or `..`, with any dot written as `%2e` or `%2E`.
fn dots(segment: &str) -> Option<usize> {
    let mut rest = segment.as_bytes();
    let mut n = 0;
    while !rest.is_empty() {
        if rest[0] == b'.' {
            rest = &rest[1..];
        } else if rest.len() >= 3 && rest[0] == b'%' && rest[1] == b'2' && (rest[2] | 0x20) == b'e'
        {
            rest = &rest[3..];
        } else {
            return None;
        }
        n += 1;
    }
    (n == 1 || n == 2).then_some(n)
}

/// The path routing and the upstream see, under `rules`; a rejected path is a 400 naming why.
pub fn normalize_path<'p>(path: &'p str, rules: PathRules) -> Result<Cow<'p, str>, GatewayError> {
    if !path.starts_with('/') {
        return Ok(Cow::Borrowed(path));
    }
    let mut out = Cow::Borrowed(path);
    let bytes = path.as_bytes();
    let escaped =
        (0..bytes.len()).any(|i| bytes[i] == b'\\' || starts_with_escaped_slash(&bytes[i..]));
    if escaped {
        match rules.escaped_slashes {
            EscapedSlashes::Reject => {
                return Err(GatewayError::BadRequest(
                    "the path contains an encoded slash or a backslash".into(),
                ));
            }
            EscapedSlashes::Keep => {}
            EscapedSlashes::Decode => {
                // Only ASCII sequences are replaced, so the result is as valid UTF-8 as `path`.
                let mut decoded = Vec::with_capacity(bytes.len());
                let mut i = 0;
                while i < bytes.len() {
                    if bytes[i] == b'\\' {
                        decoded.push(b'/');
                        i += 1;
                    } else if starts_with_escaped_slash(&bytes[i..]) {
                        decoded.push(b'/');
                        i += 3;
                    } else {
                        decoded.push(bytes[i]);
                        i += 1;
                    }
                }
                out = Cow::Owned(String::from_utf8(decoded).unwrap_or_else(|_| path.to_owned()));
            }
        }
    }
    if rules.merge_slashes && out.contains("//") {
        let mut merged = String::with_capacity(out.len());
        for c in out.chars() {
            if !(c == '/' && merged.ends_with('/')) {
                merged.push(c);
            }
        }
        out = Cow::Owned(merged);
    }
    if rules.normalize && out.split('/').any(|s| dots(s).is_some()) {
        out = Cow::Owned(remove_dot_segments(&out));
    }
    Ok(out)
}

/// RFC 3986 §5.2.4 for an absolute path: `.` segments go, `..` removes the segment before it
/// (never above the root); a path ending in a dot segment keeps its trailing slash.
fn remove_dot_segments(path: &str) -> String {
    let segments: Vec<&str> = path[1..].split('/').collect();
    let mut kept: Vec<&str> = Vec::with_capacity(segments.len());
    let mut trailing_slash = false;
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match dots(segment) {
            Some(1) => trailing_slash = last,
            Some(_) => {
                kept.pop();
                trailing_slash = last;
            }
            None => kept.push(segment),
        }
    }
    let mut out = String::with_capacity(path.len());
    out.push('/');
    out.push_str(&kept.join("/"));
    if trailing_slash && !kept.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(escaped_slashes: EscapedSlashes) -> PathRules {
        PathRules {
            normalize: true,
            merge_slashes: true,
            escaped_slashes,
        }
    }

    fn norm(path: &str) -> Result<String, u16> {
        normalize_path(path, rules(EscapedSlashes::Reject))
            .map(Cow::into_owned)
            .map_err(|e| e.status().0.as_u16())
    }

    #[test]
    fn dot_segments_are_removed_in_every_spelling() {
        assert_eq!(norm("/users/.."), Ok("/".into()));
        assert_eq!(norm("/users/%2e%2e"), Ok("/".into()));
        assert_eq!(norm("/users/%2E%2e/orders/1001"), Ok("/orders/1001".into()));
        assert_eq!(norm("/users/.%2e/x"), Ok("/x".into()));
        assert_eq!(norm("/a/./b"), Ok("/a/b".into()));
        assert_eq!(norm("/a/b/.."), Ok("/a/".into()));
        assert_eq!(norm("/a/b/."), Ok("/a/b/".into()));
        assert_eq!(norm("/../../etc"), Ok("/etc".into()));
        assert_eq!(
            norm("/a/...b/..."),
            Ok("/a/...b/...".into()),
            "not dot segments"
        );
        assert_eq!(norm("/a/%2e%2e%2e"), Ok("/a/%2e%2e%2e".into()));
        assert_eq!(norm("/users/1"), Ok("/users/1".into()));
        assert_eq!(norm("/"), Ok("/".into()));
        assert_eq!(norm("*"), Ok("*".into()));
    }

    #[test]
    fn slashes_are_merged() {
        assert_eq!(norm("//users//1"), Ok("/users/1".into()));
        assert_eq!(norm("/a/"), Ok("/a/".into()));
        let keep = PathRules {
            merge_slashes: false,
            ..rules(EscapedSlashes::Reject)
        };
        assert_eq!(normalize_path("//a", keep).unwrap(), "//a");
    }

    #[test]
    fn escaped_slashes_are_rejected_kept_or_decoded() {
        for bad in [
            "/users/..%2f..%2forders%2f1001",
            "/users/a%2Fb",
            "/users/..\\..\\orders\\1001",
            "/users/a%5cb",
        ] {
            assert_eq!(norm(bad), Err(400), "{bad}");
        }
        let decode = rules(EscapedSlashes::Decode);
        assert_eq!(
            normalize_path("/users/..%2f..%2forders%2f1001", decode).unwrap(),
            "/orders/1001"
        );
        assert_eq!(
            normalize_path("/users/..\\..\\orders\\1001", decode).unwrap(),
            "/orders/1001"
        );
        let keep = rules(EscapedSlashes::Keep);
        assert_eq!(
            normalize_path("/users/a%2Fb", keep).unwrap(),
            "/users/a%2Fb"
        );
        assert_eq!(
            normalize_path("/users/..%2f..%2forders", keep).unwrap(),
            "/users/..%2f..%2forders",
            "one segment, not a dot segment"
        );
    }

    #[test]
    fn transfer_encoding_must_be_exactly_chunked() {
        let req = |values: &[&str]| {
            let mut b = Request::post("/").header("host", "t");
            for v in values {
                b = b.header("transfer-encoding", *v);
            }
            b.body(()).unwrap()
        };
        let status = |r: Result<(), GatewayError>| r.map_err(|e| e.status().0.as_u16());
        assert_eq!(status(check_head(&req(&["chunked"]))), Ok(()));
        assert_eq!(status(check_head(&req(&["CHUNKED"]))), Ok(()));
        assert_eq!(status(check_head(&req(&["\tchunked "]))), Ok(()));
        assert_eq!(status(check_head(&req(&["identity, chunked"]))), Err(501));
        assert_eq!(status(check_head(&req(&["gzip, chunked"]))), Err(501));
        assert_eq!(status(check_head(&req(&["chunked", "chunked"]))), Err(400));
    }

    #[test]
    fn host_is_required_once() {
        let status = |r: Result<(), GatewayError>| r.map_err(|e| e.status().0.as_u16());
        let none = Request::get("/").body(()).unwrap();
        assert_eq!(status(check_head(&none)), Err(400));
        let two = Request::get("/")
            .header("host", "a")
            .header("host", "b")
            .body(())
            .unwrap();
        assert_eq!(status(check_head(&two)), Err(400));
        let old = Request::get("/")
            .version(Version::HTTP_10)
            .body(())
            .unwrap();
        assert_eq!(status(check_head(&old)), Ok(()));
        let h2 = Request::get("http://api.example/")
            .version(Version::HTTP_2)
            .header("host", "other.example")
            .body(())
            .unwrap();
        assert_eq!(status(check_head(&h2)), Err(400));
        let h2 = Request::get("http://api.example/")
            .version(Version::HTTP_2)
            .body(())
            .unwrap();
        assert_eq!(status(check_head(&h2)), Ok(()));
    }

    #[test]
    fn forwarded_headers_are_believed_only_from_trusted_proxies() {
        let trusted = TrustedProxies(vec![parse_cidr("10.0.0.0/8").unwrap()]);
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "203.0.113.7, 10.1.1.1".parse().unwrap());
        headers.insert("x-real-ip", "1.2.3.4".parse().unwrap());
        let peer = Peer::new("10.0.0.5:4000".parse().unwrap(), &headers, &trusted);
        assert!(peer.trusted);
        assert_eq!(peer.client, "203.0.113.7".parse::<IpAddr>().unwrap());
        let mut kept = headers.clone();
        drop_untrusted_forwarded(&mut kept, &peer);
        assert_eq!(kept.len(), 2);

        let outsider = Peer::new("198.51.100.1:4000".parse().unwrap(), &headers, &trusted);
        assert!(!outsider.trusted);
        assert_eq!(outsider.client, "198.51.100.1".parse::<IpAddr>().unwrap());
        drop_untrusted_forwarded(&mut headers, &outsider);
        assert!(headers.is_empty());

        let mapped: IpAddr = "::ffff:10.0.0.9".parse().unwrap();
        assert!(trusted.contains(mapped));
        assert!(parse_cidr("not-an-ip").is_err());
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("::1").is_ok());
    }
}
