//! A stored response and its binary form in the bucket.
//!
//! Layout (integers big-endian): `TSC1`, stored-at ms (u64), expires-at ms (u64), status
//! (u16), header count (u16), per header its name length (u16), name, value length (u32),
//! value; then the body length (u32) and the body. Anything that does not parse exactly,
//! trailing bytes included, is no entry: a bucket may be shared, so its bytes are input.

use tessera_sdk::Response;

use crate::NOT_STORED;

const MAGIC: &[u8; 4] = b"TSC1";

/// A cached response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// When it was stored, ms since the Unix epoch.
    pub stored_ms: u64,
    /// When it stops being fresh, ms since the Unix epoch.
    pub expires_ms: u64,
    /// The status.
    pub status: u16,
    /// Header fields, in order, without those never stored.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Entry {
    /// The storable parts of `response`.
    pub fn from_response(response: &Response, stored_ms: u64, expires_ms: u64) -> Self {
        Self {
            stored_ms,
            expires_ms,
            status: response.status(),
            headers: response
                .headers()
                .iter()
                .filter(|(name, _)| !NOT_STORED.contains(name))
                .map(|(name, value)| (name.to_owned(), value.to_vec()))
                .collect(),
            body: response.body().unwrap_or_default().to_vec(),
        }
    }

    /// The answer to a request at `now_ms`, with `x-cache: hit` and `age`.
    pub fn into_response(self, now_ms: u64) -> Response {
        let mut response = Response::new(self.status).with_body(self.body);
        let headers = response.headers_mut();
        for (name, value) in self.headers {
            headers.append(&name, value);
        }
        let age = now_ms.saturating_sub(self.stored_ms) / 1000;
        headers.set("age", age.to_string());
        headers.set("x-cache", "hit");
        response
    }

    /// The bytes stored in the bucket. Headers and a body too long for their length fields
    /// cannot occur: the gateway's header and body caps are far below them.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.stored_ms.to_be_bytes());
        out.extend_from_slice(&self.expires_ms.to_be_bytes());
        out.extend_from_slice(&self.status.to_be_bytes());
        let headers: Vec<_> = self
            .headers
            .iter()
            .filter(|(n, v)| u16::try_from(n.len()).is_ok() && u32::try_from(v.len()).is_ok())
            .take(usize::from(u16::MAX))
            .collect();
        out.extend_from_slice(&(headers.len() as u16).to_be_bytes());
        for (name, value) in headers {
            out.extend_from_slice(&(name.len() as u16).to_be_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(value.len() as u32).to_be_bytes());
            out.extend_from_slice(value);
        }
        let body = &self.body[..self.body.len().min(u32::MAX as usize)];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    /// The entry `bytes` hold, if they are one.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader(bytes);
        if r.take(4)? != MAGIC {
            return None;
        }
        let stored_ms = u64::from_be_bytes(r.array()?);
        let expires_ms = u64::from_be_bytes(r.array()?);
        let status = u16::from_be_bytes(r.array()?);
        let count = u16::from_be_bytes(r.array()?);
        let mut headers = Vec::with_capacity(usize::from(count).min(256));
        for _ in 0..count {
            let len = u16::from_be_bytes(r.array()?);
            let name = std::str::from_utf8(r.take(usize::from(len))?)
                .ok()?
                .to_owned();
            let len = u32::from_be_bytes(r.array()?);
            let value = r.take(usize::try_from(len).ok()?)?.to_vec();
            headers.push((name, value));
        }
        let len = u32::from_be_bytes(r.array()?);
        let body = r.take(usize::try_from(len).ok()?)?.to_vec();
        if !r.0.is_empty() || !(100..=599).contains(&status) {
            return None;
        }
        Some(Self {
            stored_ms,
            expires_ms,
            status,
            headers,
            body,
        })
    }
}

/// Reads from the front of a byte slice; `None` when it runs out.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_anything_else() {
        let response = Response::new(200)
            .with_header("content-type", "text/plain")
            .with_header("set-cookie", "a=b")
            .with_header("connection", "close")
            .with_header("x-bin", vec![0xff, 0x00])
            .with_body("hello");
        let entry = Entry::from_response(&response, 1_000, 61_000);
        assert_eq!(
            entry.headers,
            [
                ("content-type".to_owned(), b"text/plain".to_vec()),
                ("x-bin".to_owned(), vec![0xff, 0x00])
            ]
        );
        let bytes = entry.encode();
        assert_eq!(Entry::decode(&bytes), Some(entry.clone()));
        for cut in 0..bytes.len() {
            assert_eq!(Entry::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Entry::decode(&longer), None);
        assert_eq!(Entry::decode(b"42"), None);
        let served = entry.into_response(31_500);
        assert_eq!(served.header("age"), Some("30"));
        assert_eq!(served.header("x-cache"), Some("hit"));
        assert_eq!(served.text_body(), "hello");
    }
}
