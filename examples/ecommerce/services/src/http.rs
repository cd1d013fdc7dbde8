//! What the HTTP services share: JSON answers, bounded JSON request bodies, path segments.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

/// Every HTTP answer is a complete body.
pub(crate) type Answer = Response<Full<Bytes>>;

/// The largest request body a service reads; more is refused with 413.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// The most lines a cart or an order holds.
pub(crate) const MAX_LINES: usize = 100;

/// The largest quantity of one product in a cart line, an order line or a reservation.
pub(crate) const MAX_QUANTITY: u32 = 1000;

/// The longest caller-chosen id (reservation, checkout, payment ids), in characters.
pub(crate) const MAX_ID_CHARS: usize = 128;

/// A JSON answer.
pub(crate) fn json(status: StatusCode, value: &impl Serialize) -> Answer {
    // Serialising these plain data types cannot fail; an empty object is the safe fallback.
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `{"error": message}` with `status`.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Answer {
    json(status, &json!({ "error": message.into() }))
}

/// 404 `{"error": message}`.
pub(crate) fn not_found(message: impl Into<String>) -> Answer {
    error(StatusCode::NOT_FOUND, message)
}

/// 400 `{"error": message}`.
pub(crate) fn bad_request(message: impl Into<String>) -> Answer {
    error(StatusCode::BAD_REQUEST, message)
}

/// 204 with no body.
pub(crate) fn no_content() -> Answer {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

/// 405 with the `Allow` header (RFC 9110 §15.5.6) and `{"error": "only <allowed>"}`.
pub(crate) fn method_not_allowed(allow: &'static str) -> Answer {
    let mut response = error(StatusCode::METHOD_NOT_ALLOWED, format!("only {allow}"));
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// The path's segments after the leading `/`: `/carts/1/items` is `["carts", "1", "items"]`.
pub(crate) fn segments(path: &str) -> Vec<&str> {
    path.strip_prefix('/').unwrap_or(path).split('/').collect()
}

/// A numeric id from a path segment.
pub(crate) fn parse_id(segment: &str) -> Option<u64> {
    // `u64::from_str` takes a leading `+`; an id in a URL is digits only.
    if segment.is_empty() || !segment.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    segment.parse().ok()
}

/// A caller-chosen id from a path segment, percent-decoded.
pub(crate) fn decode_segment(segment: &str) -> Option<String> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// Checks a caller-chosen id: 1 to [`MAX_ID_CHARS`] characters, no control characters.
pub(crate) fn check_id(field: &str, id: &str) -> Result<(), String> {
    let chars = id.chars().count();
    if chars == 0 || chars > MAX_ID_CHARS {
        return Err(format!(
            "{field} must be 1 to {MAX_ID_CHARS} characters, got {chars}"
        ));
    }
    if id.chars().any(char::is_control) {
        return Err(format!("{field} must not contain control characters"));
    }
    Ok(())
}

/// Checks a quantity is 1 to [`MAX_QUANTITY`].
pub(crate) fn check_quantity(field: &str, quantity: u32) -> Result<(), String> {
    if quantity == 0 || quantity > MAX_QUANTITY {
        return Err(format!(
            "{field} must be 1 to {MAX_QUANTITY}, got {quantity}"
        ));
    }
    Ok(())
}

/// Reads a JSON body of at most [`MAX_BODY_BYTES`] into `T`. The error answer names what is
/// wrong: the body's size, its syntax, or the field (`items[0].quantity: invalid type ...`).
pub(crate) async fn read_json<T: DeserializeOwned>(body: Incoming) -> Result<T, Answer> {
    let bytes = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body larger than {MAX_BODY_BYTES} bytes"),
            ));
        }
        Err(_) => return Err(bad_request("the request body could not be read")),
    };
    parse_json(&bytes).map_err(bad_request)
}

/// [`read_json`]'s parsing, apart from the body so it can be tested on bytes.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err("a JSON body is required".into());
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data if path != "." => format!("{path}: {inner}"),
            serde_json::error::Category::Data => format!("body: {inner}"),
            _ => format!("body is not valid JSON: {inner}"),
        }
    })?;
    deserializer
        .end()
        .map_err(|e| format!("body is not valid JSON: {e}"))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Line {
        product_id: u64,
        quantity: u32,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        items: Vec<Line>,
    }

    #[test]
    fn parse_errors_name_the_field() {
        let e = parse_json::<Body>(br#"{"items":[{"product_id":1,"quantity":"x"}]}"#).unwrap_err();
        assert!(e.starts_with("items[0].quantity: invalid type"), "{e}");
        let e = parse_json::<Body>(br#"{"items":[{"product_id":1,"quantity":-1}]}"#).unwrap_err();
        assert!(e.starts_with("items[0].quantity: invalid value"), "{e}");
        let e = parse_json::<Body>(br#"{"items":[],"extra":1}"#).unwrap_err();
        assert!(e.contains("unknown field `extra`"), "{e}");
        let e = parse_json::<Body>(br#"{}"#).unwrap_err();
        assert!(e.contains("missing field `items`"), "{e}");
        let e = parse_json::<Body>(br#""items""#).unwrap_err();
        assert!(e.starts_with("body: invalid type"), "{e}");
    }

    #[test]
    fn parse_errors_tell_syntax_and_emptiness_apart() {
        assert_eq!(
            parse_json::<Body>(b"  ").unwrap_err(),
            "a JSON body is required"
        );
        let e = parse_json::<Body>(b"{\"items\": [").unwrap_err();
        assert!(e.starts_with("body is not valid JSON"), "{e}");
        let e = parse_json::<Body>(b"{\"items\": []} trailing").unwrap_err();
        assert!(e.starts_with("body is not valid JSON"), "{e}");
        assert!(parse_json::<Body>(b"{\"items\": []}\n").is_ok());
    }

    #[test]
    fn ids_in_paths_are_digits_only() {
        assert_eq!(parse_id("1001"), Some(1001));
        for bad in ["", "+1", "-1", "1a", "1.0", "99999999999999999999999"] {
            assert_eq!(parse_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn caller_ids_are_bounded_and_printable() {
        assert!(check_id("reservation_id", "r-1").is_ok());
        assert!(check_id("reservation_id", &"é".repeat(128)).is_ok());
        assert_eq!(
            check_id("reservation_id", &"a".repeat(129)).unwrap_err(),
            "reservation_id must be 1 to 128 characters, got 129"
        );
        assert!(check_id("reservation_id", "").is_err());
        assert!(check_id("reservation_id", "a\nb").is_err());
        assert_eq!(decode_segment("a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(decode_segment("%FF"), None);
    }
}
