//! The edge against hostile clients: path normalisation, transfer-encoding, forwarded headers and
//! Host, request ids, the admin listener.
//!
//! Most requests here go over raw sockets: HTTP clients normalise paths and framing, and these
//! tests are about what the gateway does with requests that were not normalised.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tessera::RunningGateway;
use tessera_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "edge-admin-token-0123456789";

/// Headers the echo upstream reports back, as it received them.
const REPORTED: [&str; 6] = [
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "forwarded",
    "x-real-ip",
    "x-request-id",
];

/// An upstream that answers every request with what it received: the target in
/// `x-upstream-target`, and a JSON body `{"target": ..., "headers": {name: "v1 | v2" or null}}`.
/// Every target it was asked for is kept in `targets`.
struct Echo {
    addr: SocketAddr,
    targets: Arc<Mutex<Vec<String>>>,
}

impl Echo {
    async fn start() -> Self {
        let targets = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&targets);
        let addr = upstream(move |req| {
            let target = req
                .uri()
                .path_and_query()
                .map_or_else(|| req.uri().path().to_owned(), |pq| pq.as_str().to_owned());
            seen.lock().unwrap().push(target.clone());
            let headers: serde_json::Map<String, Value> = REPORTED
                .iter()
                .map(|name| {
                    let values: Vec<&str> = req
                        .headers()
                        .get_all(*name)
                        .iter()
                        .map(|v| v.to_str().unwrap_or("<binary>"))
                        .collect();
                    let value = if values.is_empty() {
                        Value::Null
                    } else {
                        Value::from(values.join(" | "))
                    };
                    ((*name).to_owned(), value)
                })
                .collect();
            let body = json!({ "target": target, "headers": headers }).to_string();
            async move {
                let _ = req.into_body().collect().await;
                Response::builder()
                    .header("x-upstream-target", target)
                    .header("content-type", "application/json")
                    .body(full(body))
                    .unwrap()
            }
        })
        .await;
        Self { addr, targets }
    }

    /// `[upstreams.echo]` and routes that send `patterns` to it.
    fn routes(&self, patterns: &[&str]) -> String {
        let mut s = format!("[upstreams.echo]\ntargets = [\"{}\"]\n", self.addr);
        for p in patterns {
            s.push_str(&format!(
                "[[routes]]\npath = \"{p}\"\nupstream = \"echo\"\n"
            ));
        }
        s
    }

    fn calls(&self) -> usize {
        self.targets.lock().unwrap().len()
    }

    fn targets(&self) -> Vec<String> {
        self.targets.lock().unwrap().clone()
    }
}

/// A response read off a raw socket.
#[derive(Debug, Default)]
struct RawReply {
    /// The status, when a status line arrived.
    status: Option<u16>,
    /// Header lines, names lowercased, in order.
    headers: Vec<(String, String)>,
    /// The body (de-chunked when chunked).
    body: String,
    /// Everything that came back, for failure messages.
    raw: String,
}

impl RawReply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.raw))
    }

    /// `connection: close` among the headers.
    fn says_close(&self) -> bool {
        self.headers
            .iter()
            .any(|(n, v)| n == "connection" && v.to_ascii_lowercase().contains("close"))
    }
}

/// Parses `bytes` as one response; `None` until it is complete (`eof`: the peer closed, so a
/// body without a length ends here).
fn parse_reply(bytes: &[u8], eof: bool) -> Option<RawReply> {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let head_end = text.find("\r\n\r\n")?;
    let mut lines = text[..head_end].split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &text[head_end + 4..];
    let mut reply = RawReply {
        status,
        headers,
        raw: text.clone(),
        ..RawReply::default()
    };
    if let Some(len) = reply.header("content-length") {
        let len: usize = len.parse().ok()?;
        if rest.len() < len {
            return None;
        }
        reply.body = rest[..len].to_owned();
    } else if reply
        .header("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
    {
        let mut chunks = rest;
        loop {
            let (size, after) = chunks.split_once("\r\n")?;
            let size = usize::from_str_radix(size.trim(), 16).ok()?;
            if size == 0 {
                break;
            }
            if after.len() < size + 2 {
                return None;
            }
            reply.body.push_str(&after[..size]);
            chunks = &after[size + 2..];
        }
    } else if !eof && !matches!(status, Some(204 | 304)) {
        return None;
    }
    Some(reply)
}

/// Reads one response: until it is complete, the peer closes, or `wait` passes. An incomplete
/// answer comes back with what could be parsed (`status: None` when nothing arrived).
async fn read_reply(stream: &mut TcpStream, wait: Duration) -> RawReply {
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(reply) = parse_reply(&buf, false) {
                    return reply;
                }
            }
            // Closed, reset or out of time.
            _ => {
                return parse_reply(&buf, true).unwrap_or_else(|| RawReply {
                    raw: String::from_utf8_lossy(&buf).into_owned(),
                    ..RawReply::default()
                });
            }
        }
    }
}

/// Whether the peer closes the connection within `wait` (EOF or reset; data is not a close).
async fn closes_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(wait, stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// Sends `request` on a new connection to `addr` and reads one response (5 s at most).
async fn exchange_with(addr: SocketAddr, request: &[u8]) -> (RawReply, TcpStream) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let reply = read_reply(&mut stream, Duration::from_secs(5)).await;
    (reply, stream)
}

/// `GET target` on a new connection with the request line exactly as given.
async fn raw_get(gw: &RunningGateway, target: &str) -> RawReply {
    let request = format!("GET {target} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n");
    exchange_with(gw.local_addr(), request.as_bytes()).await.0
}

fn is_generated_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

// --- Path normalisation -------------------------------------------------------------------

/// What the default config (`normalize_path`, `merge_slashes`, `escaped_slashes = "reject"`)
/// does with each path shape: the status, and the path the upstream got.
#[tokio::test]
async fn dot_segments_and_repeated_slashes_are_resolved_before_routing() {
    let echo = Echo::start().await;
    let gw = gateway(&echo.routes(&["/", "/users/{id}", "/orders/{id}"])).await;
    let cases: [(&str, u16, Option<&str>); 10] = [
        ("/users/..", 200, Some("/")),
        ("/users/%2e%2e", 200, Some("/")),
        ("/users/%2E%2E/orders/1001", 200, Some("/orders/1001")),
        ("/users/.%2E/orders/1001", 200, Some("/orders/1001")),
        ("/users/./1", 200, Some("/users/1")),
        ("//users//1", 200, Some("/users/1")),
        (
            "/users/%2e/1?next=a%2F..%2Fb",
            200,
            Some("/users/1?next=a%2F..%2Fb"),
        ),
        ("/users/..%2f..%2forders%2f1001", 400, None),
        ("/users/..\\..\\orders\\1001", 400, None),
        ("/users/a%2Fb", 400, None),
    ];
    for (target, status, upstream_saw) in cases {
        let calls_before = echo.calls();
        let reply = raw_get(&gw, target).await;
        assert_eq!(reply.status, Some(status), "{target}: {}", reply.raw);
        match upstream_saw {
            Some(expected) => {
                assert_eq!(
                    reply.header("x-upstream-target"),
                    Some(expected),
                    "{target}: {}",
                    reply.raw
                );
            }
            None => assert_eq!(
                echo.calls(),
                calls_before,
                "{target} was refused but reached the upstream"
            ),
        }
    }
    // Whatever the shape, the upstream only ever saw resolved paths.
    for target in echo.targets() {
        let path = target.split('?').next().unwrap_or_default();
        assert!(
            !path.contains("..")
                && !path.to_ascii_lowercase().contains("%2e")
                && !path.contains("//"),
            "the upstream received {target:?}"
        );
    }
    gw.shutdown().await;
}

/// `escaped_slashes = "decode"`: %2F, %5C and '\' become '/', then dot segments are removed.
#[tokio::test]
async fn escaped_slashes_decode_into_segments_then_dots_resolve() {
    let echo = Echo::start().await;
    let gw = gateway_with(
        "escaped_slashes = \"decode\"\n",
        &format!(
            "{}[[routes]]\npath = \"/hello/{{name}}\"\nhandler = {{ plugin = \"hello\" }}\n",
            echo.routes(&["/", "/users/{id}", "/orders/{id}"])
        ),
    )
    .await;
    for (target, expected) in [
        ("/users/..%2f..%2forders%2f1001", "/orders/1001"),
        ("/users/..%2F..%2Forders%2F1001", "/orders/1001"),
        ("/users/..%5c..%5corders%5c1001", "/orders/1001"),
        ("/users/..\\..\\orders\\1001", "/orders/1001"),
        ("/users/%2e%2e", "/"),
    ] {
        let reply = raw_get(&gw, target).await;
        assert_eq!(reply.status, Some(200), "{target}: {}", reply.raw);
        assert_eq!(
            reply.header("x-upstream-target"),
            Some(expected),
            "{target}: {}",
            reply.raw
        );
    }
    // `a%2Fb` is two segments now: `/users/{id}` does not match, nor does `/hello/{name}`.
    let calls_before = echo.calls();
    for target in ["/users/a%2Fb", "/hello/a%2Fb"] {
        let reply = raw_get(&gw, target).await;
        assert_eq!(reply.status, Some(404), "{target}: {}", reply.raw);
    }
    assert_eq!(echo.calls(), calls_before);
    for target in echo.targets() {
        assert!(!target.contains(".."), "the upstream received {target:?}");
    }
    gw.shutdown().await;
}

/// `escaped_slashes = "keep"`: %2F stays encoded, so a `{param}` never holds a '/' and the
/// upstream gets the path as sent.
#[tokio::test]
async fn escaped_slashes_kept_stay_encoded_in_params_and_upstream_paths() {
    let echo = Echo::start().await;
    let gw = gateway_with(
        "escaped_slashes = \"keep\"\n",
        &format!(
            "{}[[routes]]\npath = \"/hello/{{name}}\"\nhandler = {{ plugin = \"hello\" }}\n",
            echo.routes(&["/", "/users/{id}", "/orders/{id}"])
        ),
    )
    .await;
    let reply = raw_get(&gw, "/hello/a%2Fb").await;
    assert_eq!(reply.status, Some(200), "{}", reply.raw);
    assert_eq!(reply.json()["message"], "Hello, a%2Fb!", "{}", reply.raw);
    // Other escapes are still decoded.
    let reply = raw_get(&gw, "/hello/a%20b").await;
    assert_eq!(reply.status, Some(200), "{}", reply.raw);
    assert_eq!(reply.json()["message"], "Hello, a b!", "{}", reply.raw);
    // An escaped backslash never decodes into a separator inside a parameter either.
    let reply = raw_get(&gw, "/hello/a%5Cb").await;
    if reply.status == Some(200) {
        let message = reply.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            !message.contains('\\') && !message.contains('/'),
            "{message}"
        );
    }

    let reply = raw_get(&gw, "/users/a%2Fb").await;
    assert_eq!(reply.status, Some(200), "{}", reply.raw);
    assert_eq!(reply.header("x-upstream-target"), Some("/users/a%2Fb"));
    // One segment that is not a dot segment: it matches `/users/{id}` and goes upstream as sent,
    // never resolved into /orders (what the upstream makes of it is why "keep" is not the default).
    let reply = raw_get(&gw, "/users/..%2f..%2forders%2f1001").await;
    assert_eq!(reply.status, Some(200), "{}", reply.raw);
    assert_eq!(
        reply.header("x-upstream-target"),
        Some("/users/..%2f..%2forders%2f1001"),
        "{}",
        reply.raw
    );
    // Dot segments are still removed.
    let reply = raw_get(&gw, "/users/%2E%2E/orders/1001").await;
    assert_eq!(reply.status, Some(200), "{}", reply.raw);
    assert_eq!(reply.header("x-upstream-target"), Some("/orders/1001"));
    gw.shutdown().await;
}

// --- Transfer-Encoding --------------------------------------------------------------------

#[tokio::test]
async fn only_a_single_chunked_transfer_coding_is_accepted() {
    let echo = Echo::start().await;
    let gw = gateway(&echo.routes(&["/{*rest}"])).await;
    let body = "5\r\nhello\r\n0\r\n\r\n";

    for (te_lines, status) in [
        ("transfer-encoding: identity, chunked\r\n", 501),
        ("transfer-encoding: gzip, chunked\r\n", 501),
        (
            "transfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n",
            400,
        ),
        (
            "transfer-encoding: gzip\r\ntransfer-encoding: chunked\r\n",
            400,
        ),
    ] {
        let request = format!("POST /te HTTP/1.1\r\nhost: t\r\n{te_lines}\r\n{body}");
        let (reply, mut stream) = exchange_with(gw.local_addr(), request.as_bytes()).await;
        assert_eq!(reply.status, Some(status), "{te_lines:?}: {}", reply.raw);
        assert!(reply.says_close(), "{te_lines:?}: {}", reply.raw);
        assert!(
            closes_within(&mut stream, Duration::from_secs(3)).await,
            "{te_lines:?}: the connection stayed open"
        );
    }
    assert_eq!(echo.calls(), 0, "a refused request reached the upstream");

    for te_line in [
        "transfer-encoding: CHUNKED\r\n",
        "transfer-encoding:\tchunked\r\n",
        "transfer-encoding:  chunked \t\r\n",
    ] {
        let request =
            format!("POST /te HTTP/1.1\r\nhost: t\r\nconnection: close\r\n{te_line}\r\n{body}");
        let (reply, _) = exchange_with(gw.local_addr(), request.as_bytes()).await;
        assert_eq!(reply.status, Some(200), "{te_line:?}: {}", reply.raw);
        assert_eq!(reply.header("x-upstream-target"), Some("/te"));
    }
    assert_eq!(echo.calls(), 3);
    gw.shutdown().await;
}

// --- Forwarded headers and Host -----------------------------------------------------------

/// A request through the pooled client, with the forwarding headers a client might forge.
async fn forged(gw: &RunningGateway, extra: &[(&str, &str)]) -> Value {
    let mut request = Request::get("/users/1").header("host", "shop.example");
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let reply = send(gw, request.body(Full::default()).unwrap()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json()["headers"].clone()
}

const FORGED: [(&str, &str); 5] = [
    ("x-forwarded-for", "203.0.113.9"),
    ("x-forwarded-host", "evil.example"),
    ("x-forwarded-proto", "https"),
    ("forwarded", "for=203.0.113.9;proto=https"),
    ("x-real-ip", "203.0.113.9"),
];

#[tokio::test]
async fn untrusted_peers_cannot_forge_forwarding_headers() {
    let echo = Echo::start().await;
    // The default (no trusted proxies), and a list that does not include this peer.
    for server in [
        "",
        "trusted_proxies = [\"10.0.0.0/8\", \"::1/128\", \"192.0.2.7\"]\n",
    ] {
        let gw = gateway_with(server, &echo.routes(&["/users/{id}"])).await;
        let seen = forged(&gw, &FORGED).await;
        assert_eq!(seen["x-forwarded-for"], "127.0.0.1", "{server}: {seen}");
        assert_eq!(seen["x-forwarded-host"], "shop.example", "{server}: {seen}");
        assert_eq!(seen["x-forwarded-proto"], "http", "{server}: {seen}");
        assert_eq!(seen["forwarded"], Value::Null, "{server}: {seen}");
        assert_eq!(seen["x-real-ip"], Value::Null, "{server}: {seen}");

        // Nothing forged: the same values.
        let seen = forged(&gw, &[]).await;
        assert_eq!(seen["x-forwarded-for"], "127.0.0.1", "{server}: {seen}");
        assert_eq!(seen["x-forwarded-host"], "shop.example", "{server}: {seen}");
        assert_eq!(seen["x-forwarded-proto"], "http", "{server}: {seen}");
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn trusted_proxies_extend_the_chain_and_keep_their_headers() {
    let echo = Echo::start().await;
    for server in [
        "trusted_proxies = [\"127.0.0.1/32\"]\n",
        "trusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1\"]\n",
    ] {
        let gw = gateway_with(server, &echo.routes(&["/users/{id}"])).await;
        let seen = forged(&gw, &FORGED).await;
        assert_eq!(
            seen["x-forwarded-for"], "203.0.113.9, 127.0.0.1",
            "{server}: {seen}"
        );
        assert_eq!(seen["x-forwarded-host"], "evil.example", "{server}: {seen}");
        assert_eq!(seen["x-forwarded-proto"], "https", "{server}: {seen}");
        assert_eq!(
            seen["forwarded"], "for=203.0.113.9;proto=https",
            "{server}: {seen}"
        );
        assert_eq!(seen["x-real-ip"], "203.0.113.9", "{server}: {seen}");

        // A trusted proxy that sent none: the gateway fills in what is absent.
        let seen = forged(&gw, &[]).await;
        assert_eq!(seen["x-forwarded-for"], "127.0.0.1", "{server}: {seen}");
        assert_eq!(seen["x-forwarded-host"], "shop.example", "{server}: {seen}");
        assert_eq!(seen["x-forwarded-proto"], "http", "{server}: {seen}");
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn http11_needs_exactly_one_host_and_http10_needs_none() {
    let echo = Echo::start().await;
    let gw = gateway(&echo.routes(&["/users/{id}"])).await;
    for (what, request) in [
        (
            "no Host",
            &b"GET /users/1 HTTP/1.1\r\nconnection: close\r\n\r\n"[..],
        ),
        (
            "two Host lines",
            b"GET /users/1 HTTP/1.1\r\nhost: a.example\r\nhost: b.example\r\nconnection: close\r\n\r\n",
        ),
        (
            "two equal Host lines",
            b"GET /users/1 HTTP/1.1\r\nhost: a.example\r\nhost: a.example\r\nconnection: close\r\n\r\n",
        ),
    ] {
        let (reply, _) = exchange_with(gw.local_addr(), request).await;
        assert_eq!(reply.status, Some(400), "{what}: {}", reply.raw);
    }
    assert_eq!(
        echo.calls(),
        0,
        "a request without one Host reached the upstream"
    );

    let (reply, _) = exchange_with(gw.local_addr(), b"GET /users/1 HTTP/1.0\r\n\r\n").await;
    assert_eq!(reply.status, Some(200), "{}", reply.raw);
    assert_eq!(reply.header("x-upstream-target"), Some("/users/1"));
    gw.shutdown().await;
}

// --- Request ids --------------------------------------------------------------------------

/// `GET /users/1` with an optional client id; returns the id the client got and the one the
/// upstream got.
async fn ids_seen(gw: &RunningGateway, client_id: Option<&str>) -> (String, String) {
    let mut request = Request::get("/users/1");
    if let Some(id) = client_id {
        request = request.header("x-request-id", id);
    }
    let reply = send(gw, request.body(Full::default()).unwrap()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let ids = reply.json()["headers"]["x-request-id"]
        .as_str()
        .unwrap_or("<none>")
        .to_owned();
    (
        reply.header("x-request-id").unwrap_or("<none>").to_owned(),
        ids,
    )
}

#[tokio::test]
async fn generated_request_ids_are_random_128_bit_hex_and_reach_the_upstream() {
    let echo = Echo::start().await;
    let gw = gateway(&echo.routes(&["/users/{id}"])).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (client, upstream) = ids_seen(&gw, None).await;
        assert!(is_generated_id(&client), "{client:?}");
        assert_eq!(client, upstream, "the upstream got another id");
        ids.push(client);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "ids repeat: {ids:?}");
    // 128 random bits: no long common prefix the way a counter would have.
    assert_ne!(ids[0][..16], ids[4][..16], "{ids:?}");

    // Error responses carry one too, in the header and the body.
    let reply = get(&gw, "/nowhere").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let id = reply.header("x-request-id").unwrap_or_default().to_owned();
    assert!(is_generated_id(&id), "{id:?}");
    assert_eq!(reply.json()["request_id"], id.as_str());
    gw.shutdown().await;
}

#[tokio::test]
async fn client_request_ids_are_kept_only_from_trusted_peers_and_only_when_valid() {
    let echo = Echo::start().await;
    let routes = echo.routes(&["/users/{id}"]);

    // Untrusted (the default): replaced.
    let gw = gateway(&routes).await;
    let (client, upstream) = ids_seen(&gw, Some("abc")).await;
    assert!(is_generated_id(&client), "{client:?}");
    assert_eq!(client, upstream);
    gw.shutdown().await;

    // Trusted: kept, unless invalid.
    let gw = gateway_with("trusted_proxies = [\"127.0.0.1/32\"]\n", &routes).await;
    let (client, upstream) = ids_seen(&gw, Some("abc")).await;
    assert_eq!(client, "abc");
    assert_eq!(upstream, "abc");
    let long = "x".repeat(129);
    for bad in ["has space", long.as_str()] {
        let (client, upstream) = ids_seen(&gw, Some(bad)).await;
        assert!(is_generated_id(&client), "{bad:?} → {client:?}");
        assert_eq!(client, upstream);
    }
    gw.shutdown().await;

    // accept_request_id overrides the peer check both ways.
    let gw = gateway_with(
        "trusted_proxies = [\"127.0.0.1/32\"]\naccept_request_id = \"never\"\n",
        &routes,
    )
    .await;
    let (client, _) = ids_seen(&gw, Some("abc")).await;
    assert!(is_generated_id(&client), "{client:?}");
    gw.shutdown().await;
    let gw = gateway_with("accept_request_id = \"always\"\n", &routes).await;
    let (client, upstream) = ids_seen(&gw, Some("abc")).await;
    assert_eq!((client.as_str(), upstream.as_str()), ("abc", "abc"));
    let (client, _) = ids_seen(&gw, Some("has space")).await;
    assert!(is_generated_id(&client), "{client:?}");
    gw.shutdown().await;
}

// --- The admin listener -------------------------------------------------------------------

/// A gateway with the admin API on an ephemeral port; `server` and `admin` are extra TOML lines.
async fn with_admin(server: &str, admin: &str) -> RunningGateway {
    gateway_with(
        server,
        &format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n{admin}"),
    )
    .await
}

fn admin_addr(gw: &RunningGateway) -> SocketAddr {
    gw.admin_addr().expect("admin configured")
}

/// An admin request through the pooled client with the given `authorization` value.
async fn admin(gw: &RunningGateway, method: Method, path: &str, authorization: &str) -> Reply {
    let request = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", admin_addr(gw)))
        .header("authorization", authorization)
        .body(Full::new(Bytes::new()))
        .unwrap();
    fetch(request).await
}

#[tokio::test]
async fn admin_listener_cuts_slow_and_oversized_request_heads() {
    let gw = with_admin(
        "header_read_timeout_ms = 500\nmax_headers = 20\nmax_header_bytes = 16384\n",
        "",
    )
    .await;
    let auth = format!("authorization: Bearer {TOKEN}\r\n");

    // A request head that never ends.
    let started = Instant::now();
    let mut stream = TcpStream::connect(admin_addr(&gw)).await.unwrap();
    stream
        .write_all(format!("GET /admin/health HTTP/1.1\r\nhost: t\r\n{auth}x-slow: ").as_bytes())
        .await
        .unwrap();
    assert!(
        closes_within(&mut stream, Duration::from_secs(3)).await,
        "a half-sent admin request kept its connection"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "closed after {:?}",
        started.elapsed()
    );

    let many: String = (0..30).map(|i| format!("x-h{i}: v\r\n")).collect();
    let (reply, _) = exchange_with(
        admin_addr(&gw),
        format!("GET /admin/health HTTP/1.1\r\nhost: t\r\n{auth}{many}\r\n").as_bytes(),
    )
    .await;
    assert_eq!(reply.status, Some(431), "{}", reply.raw);
    let big = "a".repeat(20_000);
    let (reply, _) = exchange_with(
        admin_addr(&gw),
        format!("GET /admin/health HTTP/1.1\r\nhost: t\r\n{auth}x-big: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(
        reply.status,
        Some(431),
        "{}",
        &reply.raw[..reply.raw.len().min(200)]
    );

    // Still serving.
    let reply = admin(
        &gw,
        Method::GET,
        "/admin/health",
        &format!("Bearer {TOKEN}"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    gw.shutdown().await;
}

#[tokio::test]
async fn admin_listener_holds_at_most_max_connections() {
    let gw = with_admin("header_read_timeout_ms = 5000\n", "max_connections = 4\n").await;
    let addr = admin_addr(&gw);
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    let request =
        format!("GET /admin/health HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {TOKEN}\r\n\r\n");
    let mut answers = Vec::new();
    for mut stream in held {
        let request = request.clone();
        answers.push(tokio::spawn(async move {
            // A turned-away connection may already be reset: a failed write is a refusal.
            if stream.write_all(request.as_bytes()).await.is_err() {
                return (None, stream);
            }
            let reply = read_reply(&mut stream, Duration::from_secs(2)).await;
            (reply.status, stream)
        }));
    }
    let mut statuses = Vec::new();
    let mut streams = Vec::new();
    for a in answers {
        let (status, stream) = a.await.unwrap();
        statuses.push(status);
        streams.push(stream);
    }
    let served = statuses.iter().filter(|s| **s == Some(200)).count();
    assert!(
        (1..=4).contains(&served),
        "{served} of 10 held connections were served: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| matches!(s, Some(200 | 503) | None)),
        "{statuses:?}"
    );
    drop(streams);

    // Capacity comes back once they are gone.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (reply, _) = exchange_with(
            addr,
            format!(
                "GET /admin/health HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {TOKEN}\r\nconnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        if reply.status == Some(200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "admin still refusing: {}",
            reply.raw
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn admin_uploads_are_refused_before_the_body_is_read() {
    let gw = with_admin("", "").await;
    for (what, path, length, status) in [
        (
            "an invalid name",
            "/admin/plugins/bad..name",
            1_000_000,
            400,
        ),
        (
            "over the 64 MiB cap",
            "/admin/plugins/big",
            100_000_000,
            413,
        ),
    ] {
        // Headers only: the body never comes, so an answer proves it was not waited for.
        let started = Instant::now();
        let (reply, _) = exchange_with(
            admin_addr(&gw),
            format!(
                "PUT {path} HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {TOKEN}\r\ncontent-length: {length}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        assert_eq!(reply.status, Some(status), "{what}: {}", reply.raw);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{what}: answered after {:?}",
            started.elapsed()
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn admin_bearer_scheme_is_case_insensitive() {
    let gw = with_admin("", "").await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let reply = admin(
            &gw,
            Method::GET,
            "/admin/health",
            &format!("{scheme} {TOKEN}"),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{scheme}: {}", reply.text());
    }
    for wrong in [
        format!("bearer {TOKEN}x"),
        format!("Basic {TOKEN}"),
        TOKEN.to_owned(),
    ] {
        let reply = admin(&gw, Method::GET, "/admin/health", &wrong).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{wrong}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn admin_wrong_method_is_405_with_allow() {
    let gw = with_admin("", "").await;
    let auth = format!("Bearer {TOKEN}");
    for (method, path, allow) in [
        (Method::DELETE, "/admin/reload", "POST"),
        (Method::GET, "/admin/reload", "POST"),
        (Method::POST, "/admin/plugins", "GET"),
    ] {
        let reply = admin(&gw, method.clone(), path, &auth).await;
        assert_eq!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {}",
            reply.text()
        );
        let given = reply.header("allow").unwrap_or_default();
        assert!(
            given.split(',').map(str::trim).any(|m| m == allow),
            "{method} {path}: allow = {given:?}"
        );
    }
    // Unknown endpoints stay 404.
    let reply = admin(&gw, Method::GET, "/admin/nothing", &auth).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    gw.shutdown().await;
}
