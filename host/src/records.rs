//! WIT records ↔ HTTP messages: what a plugin is shown of a request or response, and how what it
//! hands back becomes HTTP again. Headers coming back pass the boundary's one rule
//! ([`crate::headers::from_plugin`]); statuses, methods and paths are checked here. Used by the
//! filter chain and by outbound calls.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use crate::bindings;
use crate::body::{self, Body};
use crate::headers::{self, Framing};

/// The request as a plugin record.
pub fn request_to_plugin(parts: &http::request::Parts, body: Option<Vec<u8>>) -> bindings::Request {
    bindings::Request {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: headers_to_plugin(&parts.headers),
        body,
    }
}

/// Applies a filter's rewritten request; returns the new body if the filter set one.
pub fn apply_request(
    parts: &mut http::request::Parts,
    rewritten: bindings::Request,
) -> Result<Option<Vec<u8>>, String> {
    parts.method = http::Method::from_bytes(rewritten.method.as_bytes())
        .map_err(|_| format!("returned an invalid method `{}`", rewritten.method))?;
    if !rewritten.path.starts_with('/') {
        return Err(format!(
            "returned a path that does not start with '/': `{}`",
            rewritten.path
        ));
    }
    let path_and_query = match &rewritten.query {
        Some(q) => format!("{}?{}", rewritten.path, q),
        None => rewritten.path.clone(),
    };
    let pq: http::uri::PathAndQuery = path_and_query
        .parse()
        .map_err(|_| format!("returned an invalid path or query `{path_and_query}`"))?;
    let mut uri = http::uri::Parts::from(parts.uri.clone());
    uri.path_and_query = Some(pq);
    parts.uri = http::Uri::from_parts(uri).map_err(|e| format!("returned an invalid URI: {e}"))?;
    let framing = match rewritten.body {
        Some(_) => Framing::NewBody,
        None => Framing::Unchanged(&parts.headers),
    };
    let mut headers = headers::from_plugin(&rewritten.headers, framing, Some(&parts.headers))?;
    if let Some(body) = &rewritten.body {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    parts.headers = headers;
    Ok(rewritten.body)
}

/// Applies a filter's rewritten response to `parts`; returns the new body if the filter set one.
/// An unchanged body keeps the framing of the response the filter was shown.
pub fn apply_response(
    parts: &mut http::response::Parts,
    rewritten: bindings::Response,
) -> Result<Option<Vec<u8>>, String> {
    parts.status = status_from_plugin(rewritten.status)?;
    let framing = match rewritten.body {
        Some(_) => Framing::NewBody,
        None => Framing::Unchanged(&parts.headers),
    };
    parts.headers = headers::from_plugin(&rewritten.headers, framing, Some(&parts.headers))?;
    Ok(rewritten.body)
}

/// A plugin's response as an HTTP response.
pub fn response_from_plugin(response: bindings::Response) -> Result<Response<Body>, String> {
    let mut out = Response::new(body::full(response.body.unwrap_or_default()));
    *out.status_mut() = status_from_plugin(response.status)?;
    // The body's length is known; the gateway frames it.
    *out.headers_mut() = headers::from_plugin(&response.headers, Framing::NewBody, None)?;
    Ok(out)
}

/// A plugin's status, checked: a final status (200..=599); informational ones are the host's.
pub fn status_from_plugin(status: u16) -> Result<StatusCode, String> {
    match StatusCode::from_u16(status) {
        Ok(s) if (200..=599).contains(&status) => Ok(s),
        _ => Err(format!("returned status {status}, outside 200..=599")),
    }
}

/// Headers as plugin records.
pub fn headers_to_plugin(headers: &HeaderMap) -> Vec<bindings::Header> {
    headers
        .iter()
        .map(|(name, value)| bindings::Header {
            name: name.as_str().to_owned(),
            value: value.as_bytes().to_vec(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn header(name: &str, value: &[u8]) -> bindings::Header {
        bindings::Header {
            name: name.to_owned(),
            value: value.to_vec(),
        }
    }

    #[test]
    fn plugin_status_must_be_final() {
        assert!(status_from_plugin(200).is_ok());
        assert!(status_from_plugin(101).is_err());
        assert!(status_from_plugin(600).is_err());
    }

    #[test]
    fn rewritten_request_is_applied() {
        let (mut parts, _) = Request::get("/a?x=1").body(()).unwrap().into_parts();
        let rewritten = bindings::Request {
            method: "POST".into(),
            path: "/b".into(),
            query: Some("y=2".into()),
            headers: vec![header("x-new", b"1")],
            body: Some(b"hi".to_vec()),
        };
        let body = apply_request(&mut parts, rewritten).unwrap();
        assert_eq!(parts.method, http::Method::POST);
        assert_eq!(parts.uri, "/b?y=2");
        assert_eq!(parts.headers["x-new"], "1");
        assert_eq!(parts.headers[header::CONTENT_LENGTH], "2");
        assert_eq!(parts.headers.len(), 2);
        assert_eq!(body.as_deref(), Some(&b"hi"[..]));
    }

    #[test]
    fn a_rewritten_response_keeps_the_framing_of_an_unchanged_body() {
        let (mut parts, _) = Response::builder()
            .header(header::CONTENT_LENGTH, "10")
            .body(())
            .unwrap()
            .into_parts();
        let rewritten = bindings::Response {
            status: 201,
            headers: vec![header("content-length", b"5"), header("x-new", b"1")],
            body: None,
        };
        assert_eq!(apply_response(&mut parts, rewritten).unwrap(), None);
        assert_eq!(parts.status, StatusCode::CREATED);
        assert_eq!(parts.headers[header::CONTENT_LENGTH], "10");
        assert_eq!(parts.headers["x-new"], "1");
    }

    #[test]
    fn rewritten_path_must_be_absolute() {
        let (mut parts, _) = Request::get("/a").body(()).unwrap().into_parts();
        let rewritten = bindings::Request {
            method: "GET".into(),
            path: "b".into(),
            query: None,
            headers: vec![],
            body: None,
        };
        assert!(apply_request(&mut parts, rewritten).is_err());
    }
}
