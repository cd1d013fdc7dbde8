//! Wire-level helpers: a strictly framing upstream that records raw requests, a raw client that
//! keeps one connection, and an HTTP/2 client that holds streams open. They see the bytes the
//! gateway really sends, so a framing mistake shows up as a malformed message, not as a guess.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};

/// How long a wire helper waits for the other side before giving up.
const WIRE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a [`RecordingUpstream`] waits for a request body before answering anyway.
const EARLY_ANSWER: std::time::Duration = std::time::Duration::from_millis(200);

/// One request as a [`RecordingUpstream`] read it off the wire.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// The connection it came on: 0, 1, ... in the order the upstream accepted them.
    pub connection: usize,
    /// The exact bytes: the head, then the body as framed (chunk-size lines included).
    pub bytes: Vec<u8>,
    /// The request line, e.g. `GET /a HTTP/1.1`.
    pub request_line: String,
    /// Header fields in order, names lower-cased, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body as its framing delimits it (chunked bodies decoded).
    pub body: Vec<u8>,
    /// The request line, headers and framing parse as HTTP/1.1 (RFC 9112). A request that
    /// starts in the middle of the previous one's bytes (a desync) does not.
    pub well_formed: bool,
    /// The body its framing announced had not all arrived after a short wait, so the upstream
    /// answered first (as many servers do) and then read what was left.
    pub answered_before_body: bool,
}

impl RecordedRequest {
    /// The method, from the request line.
    pub fn method(&self) -> &str {
        self.request_line.split(' ').next().unwrap_or("")
    }

    /// The request target (path and query), from the request line.
    pub fn target(&self) -> &str {
        self.request_line.split(' ').nth(1).unwrap_or("")
    }

    /// The first value of a header (name in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// How many field lines carry `name`.
    pub fn header_count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }

    /// The exact bytes, lossily as text (for failure messages).
    pub fn raw_text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// A keep-alive HTTP/1.1 upstream on 127.0.0.1 that parses requests from the byte stream itself,
/// exactly as their framing says (`content-length`, or `transfer-encoding: chunked`, or no body),
/// records each one, and answers each with a small `200` carrying `content-length`, keeping the
/// connection open.
///
/// If the body a request announces does not arrive within 200 ms, it answers anyway and then
/// keeps reading the announced body: so a gateway that announces more body than it sends finds
/// its NEXT request on that pooled connection eaten into that body, and that request is recorded
/// as not [`well_formed`](RecordedRequest::well_formed) (it is then answered `400` and the
/// connection closed).
#[derive(Debug, Clone)]
pub struct RecordingUpstream {
    addr: SocketAddr,
    requests: Arc<std::sync::Mutex<Vec<RecordedRequest>>>,
}

impl RecordingUpstream {
    /// The address to put in an `[upstreams.*]` section.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Starts a [`RecordingUpstream`].
pub async fn recording_upstream() -> RecordingUpstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the recording upstream");
    let addr = listener
        .local_addr()
        .expect("the recording upstream's address");
    let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = Arc::clone(&requests);
    tokio::spawn(async move {
        let mut connection = 0;
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_recorded(stream, connection, Arc::clone(&log)));
            connection += 1;
        }
    });
    RecordingUpstream { addr, requests }
}

async fn serve_recorded(
    mut stream: tokio::net::TcpStream,
    connection: usize,
    log: Arc<std::sync::Mutex<Vec<RecordedRequest>>>,
) {
    use tokio::io::AsyncWriteExt;
    let record = |r: RecordedRequest| {
        let mut log = log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        log.push(r);
        log.len() - 1
    };
    let update = |index: usize, f: &dyn Fn(&mut RecordedRequest)| {
        let mut log = log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut log[index]);
    };
    let mut buf = Vec::new();
    loop {
        let Some(head_len) = read_head(&mut stream, &mut buf).await else {
            return;
        };
        let head = parse_head(&buf[..head_len], true);
        let index = record(RecordedRequest {
            connection,
            bytes: buf[..head_len].to_vec(),
            request_line: head.start_line.clone(),
            headers: head.headers.clone(),
            body: Vec::new(),
            well_formed: head.framing.is_some(),
            answered_before_body: false,
        });
        let Some(framing) = head.framing else {
            let _ = stream
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
            return;
        };
        let answer = format!("request {index}");
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        let body = match tokio::time::timeout(
            EARLY_ANSWER,
            read_framed_body(&mut stream, &mut buf, head_len, framing),
        )
        .await
        {
            Ok(body) => body,
            Err(_) => {
                update(index, &|r| r.answered_before_body = true);
                if stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                read_framed_body(&mut stream, &mut buf, head_len, framing).await
            }
        };
        let Some(Ok((consumed, body))) = body else {
            // Closed mid-body, or malformed chunking: keep what came and stop.
            let bytes = std::mem::take(&mut buf);
            update(index, &|r| {
                r.bytes = bytes.clone();
                r.well_formed = false;
            });
            return;
        };
        let bytes = buf.drain(..consumed).collect::<Vec<u8>>();
        let early = {
            let mut log = log
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let r = &mut log[index];
            r.bytes = bytes;
            r.body = body;
            r.answered_before_body
        };
        if !early && stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// How a message's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    /// No framing header on a response: the body runs to the end of the connection.
    UntilClose,
}

/// A parsed message head. `framing` is `None` when the head is malformed.
#[derive(Debug)]
struct Head {
    start_line: String,
    headers: Vec<(String, String)>,
    framing: Option<Framing>,
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Parses a request head (`request` true) or response head strictly: CRLF line ends, a
/// well-formed start line, token field names with no space before the colon, at most one
/// `content-length` (digits only) and `transfer-encoding` only as `chunked`.
fn parse_head(head: &[u8], request: bool) -> Head {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.strip_suffix("\r\n\r\n").unwrap_or(&text).split("\r\n");
    let start_line = lines.next().unwrap_or("").to_owned();
    let mut ok = !head.contains(&0) && !text.replace("\r\n", "").contains(['\r', '\n']);
    let parts: Vec<&str> = start_line.split(' ').collect();
    ok &= if request {
        parts.len() == 3
            && is_token(parts[0])
            && parts[0].bytes().all(|b| b.is_ascii_uppercase())
            && (parts[1].starts_with('/') || parts[1] == "*" || parts[1].starts_with("http://"))
            && parts[2] == "HTTP/1.1"
    } else {
        parts.len() >= 2
            && parts[0] == "HTTP/1.1"
            && parts[1].len() == 3
            && parts[1].bytes().all(|b| b.is_ascii_digit())
    };
    let mut headers = Vec::new();
    for line in lines {
        match line.split_once(':') {
            Some((name, value)) if is_token(name) => {
                headers.push((name.to_ascii_lowercase(), value.trim().to_owned()))
            }
            _ => {
                ok = false;
                headers.push((String::new(), line.to_owned()));
            }
        }
    }
    let values = |name: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let (te, cl) = (values("transfer-encoding"), values("content-length"));
    let framing = match (te.as_slice(), cl.as_slice()) {
        ([], []) if request => Some(Framing::Length(0)),
        ([], []) => Some(Framing::UntilClose),
        ([te], _) if te.eq_ignore_ascii_case("chunked") => Some(Framing::Chunked),
        ([], [cl]) if !cl.is_empty() && cl.bytes().all(|b| b.is_ascii_digit()) => {
            cl.parse().ok().map(Framing::Length)
        }
        _ => None,
    };
    // A request with both is a smuggling vector (RFC 9112 §6.1); refuse it.
    let both = request && !te.is_empty() && !cl.is_empty();
    Head {
        start_line,
        headers,
        framing: framing.filter(|_| ok && !both),
    }
}

/// Reads until `buf` holds a whole head; returns its length (with the blank line). `None` when
/// the connection ends first.
async fn read_head(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    use tokio::io::AsyncReadExt;
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(end + 4);
        }
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Where the body that starts at `buf[0]` ends, and its decoded bytes; `Ok(None)` when more
/// bytes are needed, `Err` when the chunked framing is malformed.
fn framed_body(buf: &[u8], framing: Framing) -> Result<Option<(usize, Vec<u8>)>, String> {
    match framing {
        Framing::Length(n) => Ok((buf.len() >= n).then(|| (n, buf[..n].to_vec()))),
        Framing::UntilClose => Ok(None),
        Framing::Chunked => {
            let mut at = 0;
            let mut body = Vec::new();
            loop {
                let Some(eol) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                let line = String::from_utf8_lossy(&buf[at..at + eol]).into_owned();
                let size_text = line.split(';').next().unwrap_or("");
                if size_text.is_empty() || !size_text.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!("bad chunk-size line {line:?}"));
                }
                let size = usize::from_str_radix(size_text, 16)
                    .map_err(|e| format!("chunk size {size_text:?}: {e}"))?;
                at += eol + 2;
                if size == 0 {
                    // Trailer fields, then the blank line.
                    loop {
                        let Some(eol) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
                            return Ok(None);
                        };
                        at += eol + 2;
                        if eol == 0 {
                            return Ok(Some((at, body)));
                        }
                    }
                }
                if buf.len() < at + size + 2 {
                    return Ok(None);
                }
                body.extend_from_slice(&buf[at..at + size]);
                if &buf[at + size..at + size + 2] != b"\r\n" {
                    return Err("chunk data not followed by CRLF".to_owned());
                }
                at += size + 2;
            }
        }
    }
}

/// Reads the body that starts at `buf[start]`; returns the bytes consumed from `buf[0]` and the
/// decoded body. `None` when the connection ends first (for [`Framing::UntilClose`], the end is
/// the body's end). Cancel-safe: it re-parses `buf`, which keeps whatever was read.
async fn read_framed_body(
    stream: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    start: usize,
    framing: Framing,
) -> Option<Result<(usize, Vec<u8>), String>> {
    use tokio::io::AsyncReadExt;
    loop {
        match framed_body(&buf[start..], framing) {
            Ok(Some((n, body))) => return Some(Ok((start + n, body))),
            Ok(None) => {}
            Err(e) => return Some(Err(e)),
        }
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) if framing == Framing::UntilClose => {
                return Some(Ok((buf.len(), buf[start..].to_vec())));
            }
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// A response read off a [`RawConnection`], framed strictly.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// Header fields in order, names lower-cased, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body as its framing delimits it (chunked bodies decoded).
    pub body: Vec<u8>,
    /// The exact bytes of the head.
    pub head: String,
}

impl RawResponse {
    /// The first value of a header (name in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body, lossily as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One client connection driven by hand: send bytes, read responses framed strictly by their
/// headers, send the next request on the same connection.
#[derive(Debug)]
pub struct RawConnection {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl RawConnection {
    /// Connects to `addr` (a gateway's [`RunningGateway::local_addr`]).
    pub async fn open(addr: SocketAddr) -> Self {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes bytes.
    pub async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream
            .write_all(bytes)
            .await
            .unwrap_or_else(|e| panic!("writing to the gateway: {e}"));
    }

    /// Reads one response, exactly as its framing says (`content-length`, chunked, or to the
    /// end of the connection), leaving any following bytes for the next read. Panics, with what
    /// arrived, on a malformed head, a short body, or nothing within 10 s.
    pub async fn read_response(&mut self) -> RawResponse {
        let read = async {
            let Some(head_len) = read_head(&mut self.stream, &mut self.buf).await else {
                panic!(
                    "the connection ended before a response head; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
            };
            let head = parse_head(&self.buf[..head_len], false);
            let head_text = String::from_utf8_lossy(&self.buf[..head_len]).into_owned();
            let Some(framing) = head.framing else {
                panic!("malformed response head: {head_text:?}");
            };
            let status: u16 = head.start_line[9..12]
                .parse()
                .unwrap_or_else(|e| panic!("status in {head_text:?}: {e}"));
            // 1xx, 204 and 304 have no body whatever the headers say (RFC 9112 §6.3).
            let framing = if status < 200 || status == 204 || status == 304 {
                Framing::Length(0)
            } else {
                framing
            };
            let (consumed, body) =
                match read_framed_body(&mut self.stream, &mut self.buf, head_len, framing).await {
                    Some(Ok(done)) => done,
                    Some(Err(e)) => panic!("malformed response body after {head_text:?}: {e}"),
                    None => panic!(
                        "the connection ended inside the body framed by {head_text:?}; got {:?}",
                        String::from_utf8_lossy(&self.buf[head_len..])
                    ),
                };
            self.buf.drain(..consumed);
            RawResponse {
                status,
                headers: head.headers,
                body,
                head: head_text,
            }
        };
        tokio::time::timeout(WIRE_WAIT, read)
            .await
            .unwrap_or_else(|_| panic!("no complete response within {WIRE_WAIT:?}"))
    }

    /// Sends a request and reads its response.
    pub async fn exchange(&mut self, request: &[u8]) -> RawResponse {
        self.send(request).await;
        self.read_response().await
    }

    /// Whether the server closes the connection within `wait`. Bytes that arrive meanwhile
    /// (there should be none) are returned with the answer.
    pub async fn closed_within(&mut self, wait: std::time::Duration) -> (bool, Vec<u8>) {
        use tokio::io::AsyncReadExt;
        let mut extra = std::mem::take(&mut self.buf);
        let closed = tokio::time::timeout(wait, async {
            loop {
                match self.stream.read_buf(&mut extra).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok();
        (closed, extra)
    }
}

/// HTTP/2 requests held open: each has sent its headers and the first bytes of its body, and
/// never ends its stream. Dropping this resets the streams and closes the connections.
pub struct StalledStreams {
    /// Streams opened (all requested ones, unless the server stopped granting streams).
    pub opened: usize,
    streams: Vec<(h2::client::ResponseFuture, h2::SendStream<Bytes>)>,
    connections: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for StalledStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StalledStreams")
            .field("opened", &self.opened)
            .finish_non_exhaustive()
    }
}

impl StalledStreams {
    /// The status each stream has been answered with within `wait` from now (e.g. after a body
    /// read timeout), `None` for those still unanswered, in the order they were opened.
    pub async fn statuses_within(&mut self, wait: std::time::Duration) -> Vec<Option<StatusCode>> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut statuses = Vec::new();
        for (response, _) in &mut self.streams {
            let status = match tokio::time::timeout_at(deadline, response).await {
                Ok(Ok(r)) => Some(r.status()),
                _ => None,
            };
            statuses.push(status);
        }
        statuses
    }
}

impl Drop for StalledStreams {
    fn drop(&mut self) {
        for c in &self.connections {
            c.abort();
        }
    }
}

/// Opens `streams` HTTP/2 (h2c, prior knowledge) requests `POST path` to `addr`, spread over
/// `connections` connections; each sends `first_bytes` of its body and never ends the stream.
/// Returns once the server has read every one of them (a PING sent after the last stream on
/// each connection has come back), or after 10 s with those opened so far.
pub async fn h2_stalled_streams(
    addr: SocketAddr,
    path: &str,
    streams: usize,
    connections: usize,
    first_bytes: &'static [u8],
) -> StalledStreams {
    let mut held = StalledStreams {
        opened: 0,
        streams: Vec::new(),
        connections: Vec::new(),
    };
    let uri: http::Uri = format!("http://{addr}{path}")
        .parse()
        .unwrap_or_else(|e| panic!("uri for {path}: {e}"));
    let opening = async {
        for c in 0..connections {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
            let (mut client, mut connection) = h2::client::handshake(tcp)
                .await
                .unwrap_or_else(|e| panic!("HTTP/2 handshake with {addr}: {e}"));
            let mut ping_pong = connection
                .ping_pong()
                .expect("a new HTTP/2 connection has its ping-pong handle");
            held.connections.push(tokio::spawn(async move {
                let _ = connection.await;
            }));
            // Streams split as evenly as the count allows.
            let share = streams / connections + usize::from(c < streams % connections);
            for _ in 0..share {
                client = client
                    .ready()
                    .await
                    .unwrap_or_else(|e| panic!("HTTP/2 connection refused a stream: {e}"));
                let request = Request::post(uri.clone())
                    .header("content-type", "application/json")
                    .body(())
                    .expect("HTTP/2 request");
                let (response, mut body) = client
                    .send_request(request, false)
                    .unwrap_or_else(|e| panic!("opening an HTTP/2 stream: {e}"));
                body.send_data(Bytes::from_static(first_bytes), false)
                    .unwrap_or_else(|e| panic!("sending body bytes: {e}"));
                held.streams.push((response, body));
                held.opened += 1;
            }
            // The server handles frames in order: the pong proves it has seen every stream.
            ping_pong
                .ping(h2::Ping::opaque())
                .await
                .unwrap_or_else(|e| panic!("HTTP/2 ping: {e}"));
        }
    };
    let _ = tokio::time::timeout(WIRE_WAIT, opening).await;
    held
}
