//! The one header rule of the plugin boundary, and the hop-by-hop list every crossing shares.
//!
//! Whatever a plugin hands back becomes HTTP headers at three crossings: a filter's rewritten
//! request (towards the upstream or the handler), a filter's or handler's response (towards the
//! client), and a plugin's outbound call. All three go through [`from_plugin`]:
//!
//! - names must be tokens and values must not hold CR, LF or NUL, or the output is refused;
//! - framing (`content-length`, `transfer-encoding`) is never taken from a plugin: the host frames
//!   by the body it actually sends, or keeps the framing of the message the plugin left unchanged;
//! - hop-by-hop headers ([`HOP_BY_HOP`], and every header `connection` names) are dropped, which
//!   also covers the connection-specific fields RFC 9113 §8.2.2 forbids in HTTP/2;
//! - `host` is never taken from a plugin: a request keeps the client's `host`, an outbound call
//!   gets its destination's authority.
//!
//! A plugin setting `content-length: 5` on a bodiless request would otherwise make a keep-alive
//! upstream read the next client's request as this one's body (request smuggling).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::bindings;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1, plus the legacy
/// `keep-alive`, `proxy-connection` and the proxy credentials); never forwarded, never taken from
/// a plugin. `connection` also names further ones per message.
pub const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including those the `connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Removes what a trailer section may never carry on to its reader: hop-by-hop fields (which
/// include `transfer-encoding`) and `content-length`. Framing belongs to the message head.
pub fn strip_trailer_framing(trailers: &mut HeaderMap) {
    strip_hop_by_hop(trailers);
    trailers.remove(header::CONTENT_LENGTH);
}

/// One header from a plugin, checked: a name must be a token, a value must not hold CR, LF or NUL.
pub fn header_from_plugin(h: &bindings::Header) -> Result<(HeaderName, HeaderValue), String> {
    let name = HeaderName::from_bytes(h.name.as_bytes())
        .map_err(|_| format!("returned an invalid header name {:?}", h.name))?;
    let value = HeaderValue::from_bytes(&h.value).map_err(|_| {
        format!(
            "returned an invalid value for header `{name}` (control characters are not allowed)"
        )
    })?;
    Ok((name, value))
}

/// What the host keeps from the message a plugin was shown.
#[derive(Debug, Clone, Copy)]
pub enum Framing<'a> {
    /// The plugin supplied a new body (or the message is new): the host frames it by its length.
    NewBody,
    /// The body is the one the plugin was shown, unchanged: its framing headers, and its `host`,
    /// come from `original`.
    Unchanged(&'a HeaderMap),
}

/// A plugin's header list as HTTP headers under the boundary's rule (see the module docs).
/// `original` is the message the plugin was shown, when there was one: its `host` is kept, and
/// with [`Framing::Unchanged`] so are its `content-length` and `transfer-encoding`.
pub fn from_plugin(
    list: &[bindings::Header],
    framing: Framing<'_>,
    original: Option<&HeaderMap>,
) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::with_capacity(list.len());
    for h in list {
        let (name, value) = header_from_plugin(h)?;
        headers.append(name, value);
    }
    strip_hop_by_hop(&mut headers);
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::HOST);
    if let Framing::Unchanged(before) = framing {
        for name in [header::CONTENT_LENGTH, header::TRANSFER_ENCODING] {
            for value in before.get_all(&name) {
                headers.append(name.clone(), value.clone());
            }
        }
    }
    if let Some(host) = original.and_then(|o| o.get(header::HOST)) {
        headers.insert(header::HOST, host.clone());
    }
    Ok(headers)
}

/// Bytes a header block takes on the wire in HTTP/1.1 (`name: value\r\n` per field).
pub fn block_size(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(name: &str, value: &str) -> bindings::Header {
        bindings::Header {
            name: name.to_owned(),
            value: value.as_bytes().to_vec(),
        }
    }

    fn hostile() -> Vec<bindings::Header> {
        vec![
            h("connection", "close, x-secret"),
            h("x-secret", "1"),
            h("keep-alive", "timeout=5"),
            h("proxy-connection", "keep-alive"),
            h("transfer-encoding", "chunked"),
            h("content-length", "5"),
            h("te", "trailers"),
            h("trailer", "x-t"),
            h("upgrade", "websocket"),
            h("host", "evil.example"),
            h("x-kept", "1"),
        ]
    }

    #[test]
    fn trailers_keep_no_framing_or_hop_by_hop_fields() {
        let mut trailers = HeaderMap::new();
        for field in hostile() {
            let (name, value) = header_from_plugin(&field).unwrap();
            trailers.append(name, value);
        }
        trailers.append("grpc-status", HeaderValue::from_static("0"));
        strip_trailer_framing(&mut trailers);
        let mut left: Vec<&str> = trailers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["grpc-status", "host", "x-kept"]);
    }

    #[test]
    fn values_with_control_characters_are_refused() {
        assert!(header_from_plugin(&h("x-a", "ok")).is_ok());
        assert!(header_from_plugin(&h("x-a", "a\r\nb")).is_err());
        assert!(header_from_plugin(&h("x-a", "a\0b")).is_err());
        assert!(header_from_plugin(&h("x a", "v")).is_err());
        assert!(header_from_plugin(&h("", "v")).is_err());
        assert!(header_from_plugin(&h(":authority", "v")).is_err());
    }

    #[test]
    fn framing_hop_by_hop_and_host_never_come_from_a_plugin() {
        let out = from_plugin(&hostile(), Framing::NewBody, None).unwrap();
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out["x-kept"], "1");
    }

    #[test]
    fn an_unchanged_body_keeps_its_original_framing_and_host() {
        let mut original = HeaderMap::new();
        original.insert(header::CONTENT_LENGTH, HeaderValue::from_static("42"));
        original.insert(header::HOST, HeaderValue::from_static("api.example"));
        let out = from_plugin(&hostile(), Framing::Unchanged(&original), Some(&original)).unwrap();
        assert_eq!(out[header::CONTENT_LENGTH], "42");
        assert_eq!(out[header::HOST], "api.example");
        assert!(!out.contains_key(header::TRANSFER_ENCODING));
        assert!(!out.contains_key("x-secret"));
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn proxied_hop_by_hop_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-kept"));
    }
}
