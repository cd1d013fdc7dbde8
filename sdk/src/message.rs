//! Requests, responses and headers as plugins see them.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::host::bindings::tessera::gateway::types as wit;

/// An ordered list of header fields. Names are compared case-insensitively and stored
/// lower-case; a name may repeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    fields: Vec<(String, Vec<u8>)>,
}

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// The first value of `name` as text, if present and valid UTF-8.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_bytes(name)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The first value of `name` as bytes.
    pub fn get_bytes(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get_bytes(name).is_some()
    }

    /// Replaces every value of `name` with `value`.
    pub fn set(&mut self, name: &str, value: impl Into<Vec<u8>>) {
        self.remove(name);
        self.append(name, value);
    }

    /// Adds a value, keeping existing ones.
    pub fn append(&mut self, name: &str, value: impl Into<Vec<u8>>) {
        self.fields.push((name.to_ascii_lowercase(), value.into()));
    }

    /// Removes every value of `name`; returns whether there was one.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.fields.len();
        self.fields.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        before != self.fields.len()
    }

    /// All fields in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.fields.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    pub(crate) fn from_wit(list: Vec<wit::Header>) -> Self {
        Self {
            fields: list.into_iter().map(|h| (h.name, h.value)).collect(),
        }
    }

    pub(crate) fn into_wit(self) -> Vec<wit::Header> {
        self.fields
            .into_iter()
            .map(|(name, value)| wit::Header { name, value })
            .collect()
    }
}

/// An incoming request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    method: String,
    path: String,
    query: Option<String>,
    headers: Headers,
    body: Option<Vec<u8>>,
}

impl Request {
    /// A request with no headers and no body, e.g. for tests.
    pub fn new(method: &str, path_and_query: &str) -> Self {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (path_and_query.to_owned(), None),
        };
        Self {
            method: method.to_ascii_uppercase(),
            path,
            query,
            headers: Headers::new(),
            body: None,
        }
    }

    /// Builder-style: adds a header.
    pub fn with_header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Builder-style: sets the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// The method, upper-case.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// Changes the method.
    pub fn set_method(&mut self, method: &str) {
        self.method = method.to_ascii_uppercase();
    }

    /// The path, percent-encoded as received.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Changes the path (must start with `/`, or the gateway refuses the request).
    pub fn set_path(&mut self, path: impl Into<String>) {
        self.path = path.into();
    }

    /// The query string without `?`.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// Changes the query string.
    pub fn set_query(&mut self, query: Option<String>) {
        self.query = query;
    }

    /// The first value of a query parameter, percent-decoded (`+` as space).
    pub fn query_param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_deref()?.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The headers, to change.
    pub fn headers_mut(&mut self) -> &mut Headers {
        &mut self.headers
    }

    /// Shorthand for `headers().get(name)`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// The body, when the gateway buffered it (always for handlers).
    pub fn body(&self) -> Option<&[u8]> {
        self.body.as_deref()
    }

    /// Replaces the body.
    pub fn set_body(&mut self, body: impl Into<Vec<u8>>) {
        self.body = Some(body.into());
    }

    /// The body as text (invalid UTF-8 replaced); empty when there is none.
    pub fn text_body(&self) -> String {
        String::from_utf8_lossy(self.body.as_deref().unwrap_or_default()).into_owned()
    }

    /// The body parsed as JSON; a missing or malformed body is a 400 error.
    pub fn json_body<T: DeserializeOwned>(&self) -> Result<T, Error> {
        let body = self.body.as_deref().unwrap_or_default();
        serde_json::from_slice(body).map_err(|e| Error::new(400, format!("invalid JSON body: {e}")))
    }

    pub(crate) fn from_wit(r: wit::Request) -> Self {
        Self {
            method: r.method,
            path: r.path,
            query: r.query,
            headers: Headers::from_wit(r.headers),
            body: r.body,
        }
    }

    pub(crate) fn into_wit(self) -> wit::Request {
        wit::Request {
            method: self.method,
            path: self.path,
            query: self.query,
            headers: self.headers.into_wit(),
            body: self.body,
        }
    }
}

/// A response: produced by a handler, or seen and rewritten by a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    status: u16,
    headers: Headers,
    body: Option<Vec<u8>>,
    trailers: Headers,
}

impl Response {
    /// An empty response with `status`.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Headers::new(),
            body: None,
            trailers: Headers::new(),
        }
    }

    /// A `text/plain; charset=utf-8` response.
    pub fn text(status: u16, text: impl Into<String>) -> Self {
        Self::new(status)
            .with_header("content-type", "text/plain; charset=utf-8")
            .with_body(text.into())
    }

    /// An `application/json` response holding `value`. A value that cannot be encoded (a map
    /// with non-string keys, a failing `Serialize`) gives the 500 error response instead, with the
    /// reason in the log.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Self::new(status)
                .with_header("content-type", "application/json")
                .with_body(body),
            Err(e) => Error::internal("the plugin could not encode its answer")
                .with_detail(format!("cannot encode JSON: {e}"))
                .into_response(),
        }
    }

    /// Builder-style: adds a header.
    pub fn with_header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Builder-style: sets the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Changes the status code.
    pub fn set_status(&mut self, status: u16) {
        self.status = status;
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The headers, to change.
    pub fn headers_mut(&mut self) -> &mut Headers {
        &mut self.headers
    }

    /// Shorthand for `headers().get(name)`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// The body, if present (for filters: only when the route buffers bodies).
    pub fn body(&self) -> Option<&[u8]> {
        self.body.as_deref()
    }

    /// The body as text (lossy), empty when absent.
    pub fn text_body(&self) -> String {
        String::from_utf8_lossy(self.body.as_deref().unwrap_or_default()).into_owned()
    }

    /// Replaces the body.
    pub fn set_body(&mut self, body: impl Into<Vec<u8>>) {
        self.body = Some(body.into());
    }

    /// The body parsed as JSON; failure is a 502 error (the data came from elsewhere).
    pub fn json_body<T: DeserializeOwned>(&self) -> Result<T, Error> {
        let body = self.body.as_deref().unwrap_or_default();
        serde_json::from_slice(body)
            .map_err(|e| Error::new(502, format!("invalid JSON in response: {e}")))
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Builder-style: adds a trailer field (for canned answers in tests; see
    /// [`Response::trailers`]).
    pub fn with_trailer(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.trailers.append(name, value);
        self
    }

    /// The trailer fields that followed the body of a response to a call made with
    /// [`OutgoingRequest::start`](crate::http::OutgoingRequest::start) (gRPC's `grpc-status`
    /// travels there). Empty for other calls and for responses without trailers. A plugin's
    /// own answer cannot carry trailers: they are not sent.
    pub fn trailers(&self) -> &Headers {
        &self.trailers
    }

    pub(crate) fn from_wit(r: wit::Response) -> Self {
        Self {
            status: r.status,
            headers: Headers::from_wit(r.headers),
            body: r.body,
            trailers: Headers::new(),
        }
    }

    pub(crate) fn set_trailers(&mut self, trailers: Headers) {
        self.trailers = trailers;
    }

    pub(crate) fn into_wit(self) -> wit::Response {
        wit::Response {
            status: self.status,
            headers: self.headers.into_wit(),
            body: self.body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_case_insensitive_and_repeatable() {
        let mut h = Headers::new();
        h.append("X-A", "1");
        h.append("x-a", "2");
        assert_eq!(h.get("x-A"), Some("1"));
        assert_eq!(h.get_all("X-a").count(), 2);
        h.set("x-a", "3");
        assert_eq!(h.get_all("x-a").collect::<Vec<_>>(), vec![b"3".as_slice()]);
        assert!(h.remove("X-A"));
        assert!(h.is_empty());
    }

    #[test]
    fn query_params_decode() {
        let r = Request::new("get", "/s?q=a+b%21&empty&x=1");
        assert_eq!(r.method(), "GET");
        assert_eq!(r.path(), "/s");
        assert_eq!(r.query_param("q").as_deref(), Some("a b!"));
        assert_eq!(r.query_param("empty").as_deref(), Some(""));
        assert_eq!(r.query_param("nope"), None);
    }

    #[test]
    fn json_round_trip() {
        let r = Response::json(201, &serde_json::json!({"a": 1}));
        assert_eq!(r.header("content-type"), Some("application/json"));
        let v: serde_json::Value = r.json_body().unwrap();
        assert_eq!(v["a"], 1);
        let bad = Request::new("POST", "/").with_body("{");
        assert_eq!(
            bad.json_body::<serde_json::Value>().unwrap_err().status(),
            400
        );
    }
}
