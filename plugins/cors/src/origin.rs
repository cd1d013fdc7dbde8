//! Origins as browsers send them in `Origin` (RFC 6454 §7, the Fetch standard's serialization):
//! `scheme://host[:port]` or the opaque `null`, and the `allow_origins` entries they are
//! matched against.
//!
//! Matching compares the scheme and host case-insensitively and the port as a number, with the
//! scheme's default port (80 for `http`/`ws`, 443 for `https`/`wss`) the same as no port. A
//! browser never sends another spelling, so for browsers this is exact matching; other clients
//! get no advantage from odd spellings because the response echoes what they sent.

use std::fmt;
use std::net::Ipv6Addr;

/// The longest `Origin` value looked at. A browser's longest is a 253-byte DNS name with a
/// scheme and port around it; anything past this is refused before it is parsed.
pub const MAX_ORIGIN_BYTES: usize = 512;

/// The longest DNS name (RFC 1035 §2.3.4) and label.
const MAX_HOST_BYTES: usize = 253;
const MAX_LABEL_BYTES: usize = 63;

/// A tuple origin, normalized: scheme and host lower-case, the default port as `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

/// Why a text is not an origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OriginError {
    /// Too long to be one.
    #[error("longer than {MAX_ORIGIN_BYTES} bytes")]
    TooLong,
    /// No `scheme://`.
    #[error("no scheme: write scheme://host[:port]")]
    NoScheme,
    /// A scheme with characters RFC 3986 §3.1 does not allow.
    #[error("the scheme is not valid")]
    Scheme,
    /// A path, query or fragment after the host (`/` included).
    #[error("an origin has no path, query or fragment (not even a trailing \"/\")")]
    Path,
    /// `user@host`.
    #[error("an origin has no user information")]
    UserInfo,
    /// An empty host.
    #[error("the host is empty")]
    EmptyHost,
    /// A host that is neither a DNS name, an IPv4 address nor a bracketed IPv6 address.
    #[error(
        "the host is not a DNS name or IP address (international names are written in punycode, xn--...)"
    )]
    Host,
    /// A DNS name or label over RFC 1035's lengths.
    #[error("the host is longer than DNS allows")]
    HostTooLong,
    /// A bracketed IPv6 address that does not parse.
    #[error("the IPv6 address is not valid")]
    Ipv6,
    /// A port that is not a number from 0 to 65535.
    #[error("the port is not a number from 0 to 65535")]
    Port,
}

impl Origin {
    /// Parses `scheme://host[:port]`.
    pub fn parse(text: &str) -> Result<Self, OriginError> {
        if text.len() > MAX_ORIGIN_BYTES {
            return Err(OriginError::TooLong);
        }
        let (scheme, authority) = text.split_once("://").ok_or(OriginError::NoScheme)?;
        let scheme = parse_scheme(scheme)?;
        if authority.contains(['/', '?', '#']) {
            return Err(OriginError::Path);
        }
        if authority.contains('@') {
            return Err(OriginError::UserInfo);
        }
        let (host, port) = split_port(authority)?;
        let host = parse_host(host)?;
        let port = port.filter(|&p| Some(p) != default_port(&scheme));
        Ok(Self { scheme, host, port })
    }

    /// The host, lower-case (IPv6 addresses in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

fn parse_scheme(scheme: &str) -> Result<String, OriginError> {
    let mut bytes = scheme.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic());
    if !first_ok || !bytes.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) {
        return Err(OriginError::Scheme);
    }
    Ok(scheme.to_ascii_lowercase())
}

/// Splits `host[:port]`; a bracketed IPv6 host keeps its colons.
fn split_port(authority: &str) -> Result<(&str, Option<u16>), OriginError> {
    let (host, port) = if authority.starts_with('[') {
        match authority.find(']') {
            Some(end) => {
                let (host, rest) = authority.split_at(end + 1);
                match rest {
                    "" => (host, None),
                    _ => (host, Some(rest.strip_prefix(':').ok_or(OriginError::Host)?)),
                }
            }
            None => return Err(OriginError::Ipv6),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => None,
        Some(digits) => {
            // At most five digits: a longer run of zeros is no port a browser sends.
            if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(OriginError::Port);
            }
            Some(digits.parse::<u16>().map_err(|_| OriginError::Port)?)
        }
    };
    Ok((host, port))
}

fn parse_host(host: &str) -> Result<String, OriginError> {
    if host.is_empty() {
        return Err(OriginError::EmptyHost);
    }
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or(OriginError::Ipv6)?;
        let address: Ipv6Addr = inner.parse().map_err(|_| OriginError::Ipv6)?;
        return Ok(format!("[{address}]"));
    }
    let host = host.to_ascii_lowercase();
    check_dns_name(&host)?;
    Ok(host)
}

/// Letters, digits, `-` and `_` in non-empty dot-separated labels, within DNS lengths. IPv4
/// addresses pass too. `_` is not in host names proper, but browsers accept it in URLs.
fn check_dns_name(host: &str) -> Result<(), OriginError> {
    if host.len() > MAX_HOST_BYTES {
        return Err(OriginError::HostTooLong);
    }
    for label in host.split('.') {
        if label.is_empty()
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(OriginError::Host);
        }
        if label.len() > MAX_LABEL_BYTES {
            return Err(OriginError::HostTooLong);
        }
    }
    Ok(())
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// An `allow_origins` entry other than `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// This origin.
    Exact(Origin),
    /// Any subdomain, at any depth, of `suffix` (which starts with `.`), with this scheme and
    /// port. Never `suffix` itself.
    Subdomains {
        /// The scheme, lower-case.
        scheme: String,
        /// `.example.com` for `*.example.com`.
        suffix: String,
        /// The port, `None` for the scheme's default.
        port: Option<u16>,
    },
    /// The opaque origin `null`.
    Null,
}

/// Why an `allow_origins` entry is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// Not an origin.
    #[error("{0:?} is not an origin: {1}")]
    NotAnOrigin(String, OriginError),
    /// A `*` anywhere but as the whole leftmost label.
    #[error("{0:?}: `*` may only stand for subdomains, as in https://*.example.com")]
    Wildcard(String),
    /// `*.` over an IP address or a single label, which would cover whole top-level domains.
    #[error(
        "{0:?}: a wildcard needs a DNS name of at least two labels after `*.` (https://*.example.com)"
    )]
    WildcardSuffix(String),
    /// `null` in another case: browsers send exactly `null`.
    #[error("{0:?}: the opaque origin is written `null`")]
    NullCase(String),
}

impl Rule {
    /// Reads an entry: `scheme://host[:port]`, `scheme://*.domain[:port]` or `null`.
    pub fn parse(entry: &str) -> Result<Self, RuleError> {
        if entry == "null" {
            return Ok(Self::Null);
        }
        if entry.eq_ignore_ascii_case("null") {
            return Err(RuleError::NullCase(entry.to_owned()));
        }
        let not_an_origin = |e| RuleError::NotAnOrigin(entry.to_owned(), e);
        let Some((scheme, authority)) = entry.split_once("://") else {
            return Err(not_an_origin(OriginError::NoScheme));
        };
        let Some(rest) = authority.strip_prefix("*.") else {
            if entry.contains('*') {
                return Err(RuleError::Wildcard(entry.to_owned()));
            }
            return Origin::parse(entry).map(Self::Exact).map_err(not_an_origin);
        };
        if rest.contains('*') {
            return Err(RuleError::Wildcard(entry.to_owned()));
        }
        let origin = Origin::parse(&format!("{scheme}://{rest}")).map_err(not_an_origin)?;
        let is_ip = origin.host.starts_with('[')
            || origin.host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        if is_ip || !origin.host.contains('.') {
            return Err(RuleError::WildcardSuffix(entry.to_owned()));
        }
        Ok(Self::Subdomains {
            scheme: origin.scheme,
            suffix: format!(".{}", origin.host),
            port: origin.port,
        })
    }

    /// Whether a request's origin is one this entry allows.
    pub fn matches(&self, origin: &RequestOrigin<'_>) -> bool {
        match (self, origin) {
            (Self::Null, RequestOrigin::Null) => true,
            (Self::Exact(allowed), RequestOrigin::Tuple { origin, .. }) => allowed == origin,
            (
                Self::Subdomains {
                    scheme,
                    suffix,
                    port,
                },
                RequestOrigin::Tuple { origin, .. },
            ) => {
                // The parsed host has non-empty labels, so what precedes the suffix is at least
                // one whole label: `evilexample.com` and `example.com` itself never match.
                origin.scheme == *scheme
                    && origin.port == *port
                    && origin.host.len() > suffix.len()
                    && origin.host.ends_with(suffix.as_str())
            }
            _ => false,
        }
    }
}

/// The `Origin` of a request, as far as CORS is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOrigin<'a> {
    /// No `Origin` header: not a cross-origin request from a browser.
    Absent,
    /// `null`: a sandboxed document, a `file:` page, a redirect across origins.
    Null,
    /// `scheme://host[:port]`; `raw` is the value as sent, which is what is echoed.
    Tuple {
        /// The header value.
        raw: &'a str,
        /// The value parsed and normalized.
        origin: Origin,
    },
    /// Present but unusable: several `Origin` headers, not UTF-8, not an origin.
    Invalid(String),
}

impl<'a> RequestOrigin<'a> {
    /// Reads the request's `Origin` header(s).
    pub fn of(headers: &'a tessera_sdk::Headers) -> Self {
        let mut values = headers.get_all("origin");
        let value = match (values.next(), values.next()) {
            (None, _) => return Self::Absent,
            (Some(_), Some(_)) => return Self::Invalid("more than one Origin header".to_owned()),
            (Some(value), None) => value,
        };
        if value.len() > MAX_ORIGIN_BYTES {
            return Self::Invalid(format!("Origin is longer than {MAX_ORIGIN_BYTES} bytes"));
        }
        let Ok(text) = std::str::from_utf8(value) else {
            return Self::Invalid("Origin is not UTF-8".to_owned());
        };
        if text == "null" {
            return Self::Null;
        }
        match Origin::parse(text) {
            Ok(origin) => Self::Tuple { raw: text, origin },
            Err(e) => Self::Invalid(format!("Origin {text:?} is not an origin: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(text: &str) -> RequestOrigin<'_> {
        RequestOrigin::Tuple {
            raw: text,
            origin: Origin::parse(text).unwrap(),
        }
    }

    #[test]
    fn origins_normalize_case_and_default_ports() {
        let a = Origin::parse("HTTPS://App.Example.COM:443").unwrap();
        assert_eq!(a.to_string(), "https://app.example.com");
        assert_eq!(a, Origin::parse("https://app.example.com").unwrap());
        assert_eq!(
            Origin::parse("http://127.0.0.1:8080").unwrap().to_string(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            Origin::parse("http://[0:0:0:0:0:0:0:1]:80")
                .unwrap()
                .to_string(),
            "http://[::1]"
        );
        // A default port belongs to its scheme only.
        assert_eq!(
            Origin::parse("http://a.test:443").unwrap().to_string(),
            "http://a.test:443"
        );
        assert_eq!(
            Origin::parse("tauri://localhost").unwrap().to_string(),
            "tauri://localhost"
        );
    }

    #[test]
    fn malformed_origins_are_refused_with_the_reason() {
        for (text, error) in [
            ("app.example.com", OriginError::NoScheme),
            ("https://app.example.com/", OriginError::Path),
            ("https://app.example.com/x", OriginError::Path),
            ("https://app.example.com?x", OriginError::Path),
            ("https://user@app.example.com", OriginError::UserInfo),
            ("https://", OriginError::EmptyHost),
            ("https://:443", OriginError::EmptyHost),
            ("https://app.example.com:", OriginError::Port),
            ("https://app.example.com:65536", OriginError::Port),
            ("https://app.example.com:000080", OriginError::Port),
            ("https://app.example.com:8o", OriginError::Port),
            ("https://app..example.com", OriginError::Host),
            ("https://app.example.com.", OriginError::Host),
            ("https://bücher.example", OriginError::Host),
            ("https://a b.example", OriginError::Host),
            ("https://a.example\r\n", OriginError::Host),
            ("https://a.example\r\nx: y", OriginError::Port),
            ("https://[::1", OriginError::Ipv6),
            ("https://[::g]", OriginError::Ipv6),
            ("https://[::1]x", OriginError::Host),
            ("1http://a.example", OriginError::Scheme),
            ("://a.example", OriginError::Scheme),
        ] {
            assert_eq!(Origin::parse(text), Err(error.clone()), "{text:?}");
        }
        let long = format!("https://{}.example", "a".repeat(64));
        assert_eq!(Origin::parse(&long), Err(OriginError::HostTooLong));
        let huge = format!("https://{}", "a.".repeat(300));
        assert_eq!(Origin::parse(&huge), Err(OriginError::TooLong));
    }

    #[test]
    fn exact_entries_match_only_their_origin() {
        let rule = Rule::parse("https://app.example.com").unwrap();
        assert!(rule.matches(&tuple("https://app.example.com")));
        assert!(rule.matches(&tuple("https://APP.example.com:443")));
        assert!(!rule.matches(&tuple("http://app.example.com")));
        assert!(!rule.matches(&tuple("https://app.example.com:8443")));
        assert!(!rule.matches(&tuple("https://app.example.com.evil.test")));
        assert!(!rule.matches(&tuple("https://a.app.example.com")));
        assert!(!rule.matches(&RequestOrigin::Null));
        assert!(!rule.matches(&RequestOrigin::Absent));
    }

    #[test]
    fn wildcard_entries_match_subdomains_at_any_depth_and_nothing_else() {
        let rule = Rule::parse("https://*.example.com").unwrap();
        assert_eq!(
            rule,
            Rule::Subdomains {
                scheme: "https".into(),
                suffix: ".example.com".into(),
                port: None
            }
        );
        for yes in [
            "https://a.example.com",
            "https://a.b.example.com",
            "https://A.Example.Com",
            "https://a.example.com:443",
        ] {
            assert!(rule.matches(&tuple(yes)), "{yes}");
        }
        for no in [
            "https://example.com",
            "https://evilexample.com",
            "https://a.evilexample.com",
            "https://example.com.evil.test",
            "https://a.example.com.evil.test",
            "http://a.example.com",
            "https://a.example.com:8443",
        ] {
            assert!(!rule.matches(&tuple(no)), "{no}");
        }
        assert!(!rule.matches(&RequestOrigin::Null));

        let with_port = Rule::parse("http://*.dev.example.com:3000").unwrap();
        assert!(with_port.matches(&tuple("http://web.dev.example.com:3000")));
        assert!(!with_port.matches(&tuple("http://web.dev.example.com")));
    }

    #[test]
    fn entries_that_are_not_origins_or_wildcards_are_refused() {
        for (entry, message) in [
            (
                "https://example.com/",
                "\"https://example.com/\" is not an origin: an origin has no path, query or fragment (not even a trailing \"/\")",
            ),
            (
                "example.com",
                "\"example.com\" is not an origin: no scheme: write scheme://host[:port]",
            ),
            (
                "https://a.*.example.com",
                "\"https://a.*.example.com\": `*` may only stand for subdomains, as in https://*.example.com",
            ),
            (
                "https://*example.com",
                "\"https://*example.com\": `*` may only stand for subdomains, as in https://*.example.com",
            ),
            (
                "https://*.*.example.com",
                "\"https://*.*.example.com\": `*` may only stand for subdomains, as in https://*.example.com",
            ),
            (
                "https://*.com",
                "\"https://*.com\": a wildcard needs a DNS name of at least two labels after `*.` (https://*.example.com)",
            ),
            (
                "http://*.10.0.0.1",
                "\"http://*.10.0.0.1\": a wildcard needs a DNS name of at least two labels after `*.` (https://*.example.com)",
            ),
            ("NULL", "\"NULL\": the opaque origin is written `null`"),
        ] {
            assert_eq!(Rule::parse(entry).unwrap_err().to_string(), message);
        }
        assert_eq!(Rule::parse("null"), Ok(Rule::Null));
    }

    #[test]
    fn the_origin_header_is_read_defensively() {
        let headers = |values: &[&[u8]]| {
            let mut h = tessera_sdk::Headers::new();
            for v in values {
                h.append("origin", v.to_vec());
            }
            h
        };
        assert_eq!(RequestOrigin::of(&headers(&[])), RequestOrigin::Absent);
        assert_eq!(RequestOrigin::of(&headers(&[b"null"])), RequestOrigin::Null);
        let h = headers(&[b"https://a.example"]);
        assert_eq!(RequestOrigin::of(&h), tuple("https://a.example"));
        for bad in [
            headers(&[b"https://a.example", b"https://b.example"]),
            headers(&[b"https://a.example/"]),
            headers(&[b"\xff\xfe"]),
            headers(&[b"Null"]),
            headers(&[b""]),
            headers(&[format!("https://{}.example", "a".repeat(4096)).as_bytes()]),
        ] {
            assert!(
                matches!(RequestOrigin::of(&bad), RequestOrigin::Invalid(_)),
                "{bad:?}"
            );
        }
    }
}
