//! Plugin-set framing and hop-by-hop headers at every crossing, and slow request bodies that must
//! not hold plugin instances.
//!
//! A plugin may write any header; the gateway frames each message by the body it really sends
//! and drops hop-by-hop fields (RFC 9110 §7.6.1, RFC 9112 §6.3), so a plugin can neither desync a
//! pooled upstream connection nor the client's. Request bodies are read before a plugin instance
//! is taken, so clients that trickle bodies cannot starve the pool (`max_instances = 64` here).

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tessera_tests::*;

/// Headers a plugin set that must never reach the other side: hop-by-hop fields (and the one
/// `connection` names) and the framing headers the gateway recomputes.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "x-secret",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
    "transfer-encoding",
    "proxy-authenticate",
];

/// More slow clients than the plugin pool has instances (the harness sets 64).
const SLOW_CLIENTS: usize = 260;

/// Normal requests sent while slow clients are held; every one must answer 200.
const NORMAL_REQUESTS: usize = 30;

/// A route to the hostile handler in `mode`, granted the upstream `target`.
fn hostile_route(path: &str, mode: &str) -> String {
    format!(
        "[[routes]]\npath = \"{path}\"\nhandler = {{ plugin = \"hostile\", upstreams = [\"target\"], config = {{ mode = \"{mode}\" }} }}\n"
    )
}

/// The check the framing tests rely on: a request that announces more body than it sends eats
/// into the next request on that connection, which the recording upstream records as malformed.
#[tokio::test]
async fn the_recording_upstream_shows_a_desync_as_a_malformed_next_request() {
    let up = recording_upstream().await;
    let mut conn = RawConnection::open(up.addr()).await;
    let first = conn
        .exchange(b"GET /a HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n\r\n")
        .await;
    assert_eq!((first.status, first.text().as_str()), (200, "request 0"));
    let second = conn.exchange(b"GET /b HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert_eq!(second.status, 400, "{}", second.head);
    let recorded = up.requests();
    assert_eq!(recorded.len(), 2, "{recorded:#?}");
    assert!(recorded[0].answered_before_body && recorded[0].body == b"GET /");
    assert!(!recorded[1].well_formed, "{recorded:#?}");
    assert_eq!(recorded[1].request_line, "b HTTP/1.1");
}

#[tokio::test]
async fn a_filter_setting_content_length_on_a_bodiless_get_cannot_desync_the_pooled_upstream() {
    let up = recording_upstream().await;
    let gw = gateway(&format!(
        "[upstreams.rec]\ntargets = [\"{}\"]\n\
         [[routes]]\npath = \"/filtered\"\nupstream = \"rec\"\n\
         [[routes.filters]]\nplugin = \"test-filter\"\nconfig = {{ set_request_headers = [[\"content-length\", \"5\"], [\"host\", \"evil.example\"]] }}\n\
         [[routes]]\npath = \"/plain/{{n}}\"\nupstream = \"rec\"\n",
        up.addr()
    ))
    .await;

    let mut statuses = vec![get(&gw, "/filtered").await.status];
    for n in 0..5 {
        statuses.push(get(&gw, &format!("/plain/{n}")).await.status);
    }

    let recorded = up.requests();
    let dump = || {
        recorded
            .iter()
            .map(|r| format!("[connection {}] {:?}", r.connection, r.raw_text()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(statuses, vec![StatusCode::OK; 6], "{}", dump());
    assert_eq!(recorded.len(), 6, "{}", dump());
    assert!(
        recorded.iter().all(|r| r.well_formed),
        "a request reached the upstream malformed (desync):\n{}",
        dump()
    );
    let filtered = &recorded[0];
    assert_eq!(
        filtered.request_line,
        "GET /filtered HTTP/1.1",
        "{}",
        dump()
    );
    assert!(
        filtered.body.is_empty() && !filtered.answered_before_body,
        "{}",
        dump()
    );
    assert!(
        matches!(filtered.header("content-length"), None | Some("0")),
        "the filter's content-length reached the upstream: {:?}",
        filtered.raw_text()
    );
    assert!(
        filtered.header_count("host") == 1 && filtered.header("host") != Some("evil.example"),
        "the filter's host reached the upstream: {:?}",
        filtered.raw_text()
    );
    // The desync, if any, would show on the next request of the same pooled connection.
    assert!(
        recorded[1..]
            .iter()
            .any(|r| r.connection == filtered.connection),
        "no follow-up request shared the filtered request's connection:\n{}",
        dump()
    );
    for (n, r) in recorded[1..].iter().enumerate() {
        assert_eq!(
            r.request_line,
            format!("GET /plain/{n} HTTP/1.1"),
            "{}",
            dump()
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_handler_cannot_set_framing_or_hop_by_hop_headers_for_the_client() {
    let gw = gateway(
        "[[routes]]\npath = \"/hop\"\nhandler = { plugin = \"hostile\", config = { mode = \"hop-headers\" } }\n",
    )
    .await;
    let mut conn = RawConnection::open(gw.local_addr()).await;
    // The second exchange on the same connection proves the first was framed as sent.
    for round in 1..=2 {
        let reply = conn
            .exchange(b"GET /hop HTTP/1.1\r\nhost: gateway.test\r\n\r\n")
            .await;
        assert_eq!(reply.status, 200, "round {round}: {}", reply.head);
        assert_eq!(reply.text(), "hello world", "round {round}: {}", reply.head);
        assert_eq!(
            reply.header("content-length"),
            Some("11"),
            "round {round}: {}",
            reply.head
        );
        for name in HOP_BY_HOP {
            assert!(
                reply.header(name).is_none(),
                "round {round}: `{name}` reached the client: {}",
                reply.head
            );
        }
        assert_eq!(reply.header("x-kept"), Some("1"), "{}", reply.head);
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_filter_cannot_reframe_a_proxied_response() {
    const PARTS: [&str; 4] = ["first part, ", "second part, ", "third part, ", "the end"];
    let streamed = upstream(|_| async {
        let frames = PARTS.map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))));
        Response::new(StreamBody::new(stream::iter(frames)).boxed_unsync())
    })
    .await;
    let fixed = upstream(|_| async { Response::new(full("0123456789")) }).await;
    let filter = "[[routes.filters]]\nplugin = \"test-filter\"\nconfig = { set_response_headers = [[\"content-length\", \"5\"], [\"connection\", \"close, x-secret\"], [\"x-secret\", \"1\"], [\"keep-alive\", \"timeout=1\"]] }\n";
    let gw = gateway(&format!(
        "[upstreams.streamed]\ntargets = [\"{streamed}\"]\n[upstreams.fixed]\ntargets = [\"{fixed}\"]\n\
         [[routes]]\npath = \"/streamed\"\nupstream = \"streamed\"\n{filter}\
         [[routes]]\npath = \"/fixed\"\nupstream = \"fixed\"\n{filter}"
    ))
    .await;
    let mut conn = RawConnection::open(gw.local_addr()).await;
    let whole = PARTS.concat();
    for (path, expected) in [
        ("/streamed", whole.as_str()),
        ("/fixed", "0123456789"),
        ("/streamed", whole.as_str()),
    ] {
        let reply = conn
            .exchange(format!("GET {path} HTTP/1.1\r\nhost: gateway.test\r\n\r\n").as_bytes())
            .await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.head);
        assert_eq!(reply.text(), expected, "{path}: {}", reply.head);
        if let Some(length) = reply.header("content-length") {
            assert_eq!(length, expected.len().to_string(), "{path}: {}", reply.head);
        }
        for name in ["x-secret", "keep-alive"] {
            assert!(
                reply.header(name).is_none(),
                "{path}: `{name}` reached the client: {}",
                reply.head
            );
        }
        assert!(
            !reply
                .header("connection")
                .is_some_and(|c| c.contains("x-secret")),
            "{path}: the filter's connection header reached the client: {}",
            reply.head
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_plugins_outbound_call_is_framed_by_its_body_and_addressed_to_its_upstream() {
    let up = recording_upstream().await;
    let gw = gateway(&format!(
        "[upstreams.target]\ntargets = [\"{}\"]\n{}",
        up.addr(),
        hostile_route("/outbound", "outbound-headers")
    ))
    .await;
    let reply = get(&gw, "/outbound").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.text(), "request 0", "the upstream's answer came back");

    let recorded = up.requests();
    assert_eq!(recorded.len(), 1, "{recorded:#?}");
    let call = &recorded[0];
    assert!(call.well_formed, "{:?}", call.raw_text());
    assert_eq!(call.request_line, "POST /echo HTTP/1.1");
    assert_eq!(call.body, b"abc", "{:?}", call.raw_text());
    assert!(!call.answered_before_body, "{:?}", call.raw_text());
    assert_eq!(
        call.header("content-length"),
        Some("3"),
        "{:?}",
        call.raw_text()
    );
    assert_eq!(
        call.header_count("content-length"),
        1,
        "{:?}",
        call.raw_text()
    );
    for name in HOP_BY_HOP {
        assert!(
            call.header(name).is_none(),
            "`{name}` reached the upstream: {:?}",
            call.raw_text()
        );
    }
    assert_eq!(call.header_count("host"), 1, "{:?}", call.raw_text());
    assert_eq!(
        call.header("host"),
        Some(up.addr().to_string().as_str()),
        "{:?}",
        call.raw_text()
    );
    assert_eq!(call.header("x-kept"), Some("1"), "{:?}", call.raw_text());
    gw.shutdown().await;
}

#[tokio::test]
async fn an_outbound_call_with_a_huge_header_fails_at_once() {
    let up = recording_upstream().await;
    let gw = gateway(&format!(
        "[upstreams.target]\ntargets = [\"{}\"]\n{}",
        up.addr(),
        hostile_route("/huge-header", "huge-header")
    ))
    .await;
    let started = Instant::now();
    let reply = get(&gw, "/huge-header").await;
    let took = started.elapsed();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert!(
        reply.text().starts_with("InvalidRequest"),
        "the plugin saw {}",
        reply.text()
    );
    // The harness gives plugins 2 s; the refusal must not wait for it.
    eprintln!("20 MiB outbound header: refused, answered in {took:?}");
    assert!(
        took < Duration::from_millis(1500),
        "answered after {took:?}"
    );
    assert!(up.requests().is_empty(), "the huge header was sent");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_plugin_flooding_its_log_still_answers() {
    let gw = gateway(
        "[[routes]]\npath = \"/log-flood\"\nhandler = { plugin = \"hostile\", config = { mode = \"log-flood\" }, limits = { timeout_ms = 60000 } }\n\
         [[routes]]\npath = \"/hello/{name}\"\nhandler = { plugin = \"hello\" }\n",
    )
    .await;
    let started = Instant::now();
    let reply = get(&gw, "/log-flood").await;
    let took = started.elapsed();
    eprintln!("log flood (1,100,000 lines): {} in {took:?}", reply.status);
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (StatusCode::OK, "done")
    );
    assert!(
        took < Duration::from_secs(30),
        "1,100,000 log lines took {took:?}"
    );
    assert_eq!(get(&gw, "/hello/after").await.status, StatusCode::OK);
    gw.shutdown().await;
}

/// The `hello` handler twice: `POST /hello` (reads a JSON body) for slow clients, and
/// `GET /hello/{name}` for the normal traffic that must keep flowing.
const HELLO_ROUTES: &str = "[[routes]]\npath = \"/hello\"\nhandler = { plugin = \"hello\" }\n\
     [[routes]]\npath = \"/hello/{name}\"\nhandler = { plugin = \"hello\" }\n";

/// A request head for `POST /hello` announcing 100 body bytes, and the one byte that follows.
const SLOW_HEAD: &[u8] =
    b"POST /hello HTTP/1.1\r\nhost: gateway.test\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{";

/// Sends [`NORMAL_REQUESTS`] `GET /hello/{n}`, one after another, each given 5 s; returns the
/// failures (status or timeout) by request number.
async fn normal_traffic(gw: &tessera::RunningGateway) -> Vec<(usize, Option<StatusCode>)> {
    let mut failures = Vec::new();
    let started = Instant::now();
    for n in 0..NORMAL_REQUESTS {
        let status = tokio::time::timeout(Duration::from_secs(5), get(gw, &format!("/hello/{n}")))
            .await
            .ok()
            .map(|r| r.status);
        if status != Some(StatusCode::OK) {
            failures.push((n, status));
        }
    }
    eprintln!(
        "normal traffic beside {SLOW_CLIENTS} slow bodies: {} of {NORMAL_REQUESTS} ok in {:?}",
        NORMAL_REQUESTS - failures.len(),
        started.elapsed()
    );
    failures
}

#[tokio::test]
async fn slow_http2_request_bodies_hold_no_plugin_instances() {
    let gw = gateway(HELLO_ROUTES).await;
    let mut stalled = h2_stalled_streams(gw.local_addr(), "/hello", SLOW_CLIENTS, 3, b"{").await;
    assert_eq!(stalled.opened, SLOW_CLIENTS, "streams the gateway accepted");
    let failures = normal_traffic(&gw).await;
    assert!(
        failures.is_empty(),
        "with {SLOW_CLIENTS} slow HTTP/2 bodies held, normal requests failed: {failures:?}"
    );
    // Still waiting for their bodies, not turned away to make room.
    let answered: Vec<_> = (stalled.statuses_within(Duration::ZERO).await)
        .into_iter()
        .flatten()
        .collect();
    assert!(
        answered.is_empty(),
        "slow streams were answered: {answered:?}"
    );
    drop(stalled);
    gw.shutdown().await;
}

#[tokio::test]
async fn slow_http1_request_bodies_hold_no_plugin_instances() {
    let gw = gateway(HELLO_ROUTES).await;
    let mut slow = Vec::with_capacity(SLOW_CLIENTS);
    for _ in 0..SLOW_CLIENTS {
        let mut conn = RawConnection::open(gw.local_addr()).await;
        conn.send(SLOW_HEAD).await;
        slow.push(conn);
    }
    let failures = normal_traffic(&gw).await;
    assert!(
        failures.is_empty(),
        "with {SLOW_CLIENTS} slow HTTP/1.1 bodies held, normal requests failed: {failures:?}"
    );
    // Still waiting for their bodies, not turned away to make room.
    for conn in &mut slow {
        let (closed, answer) = conn.closed_within(Duration::from_millis(1)).await;
        assert!(
            !closed && answer.is_empty(),
            "a slow connection was answered: {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
    drop(slow);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_stalled_request_body_gets_408_and_the_connection_closes() {
    // A proxied route too: its upstream waits for the whole body, which never comes.
    let collecting = upstream(|req| async move {
        let body = req.into_body().collect().await.map(|b| b.to_bytes().len());
        Response::new(full(format!("body {body:?}")))
    })
    .await;
    let gw = gateway_with(
        "body_read_timeout_ms = 300\n",
        &format!(
            "{HELLO_ROUTES}[upstreams.collecting]\ntargets = [\"{collecting}\"]\n\
             [[routes]]\npath = \"/proxied\"\nupstream = \"collecting\"\n"
        ),
    )
    .await;
    let proxied_head =
        b"POST /proxied HTTP/1.1\r\nhost: gateway.test\r\ncontent-length: 100\r\n\r\nx";
    for (route, head) in [("handler", SLOW_HEAD), ("proxy", &proxied_head[..])] {
        let mut conn = RawConnection::open(gw.local_addr()).await;
        let started = Instant::now();
        conn.send(head).await;
        let reply = conn.read_response().await;
        eprintln!(
            "stalled body ({route} route, 300 ms timeout): {} in {:?}",
            reply.status,
            started.elapsed()
        );
        assert_eq!(reply.status, 408, "{route}: {}{}", reply.head, reply.text());
        assert_eq!(
            reply.header("connection"),
            Some("close"),
            "{route}: {}",
            reply.head
        );
        let json: serde_json::Value = serde_json::from_slice(&reply.body).unwrap_or_else(|e| {
            panic!("{route}: the 408 body is not JSON ({e}): {}", reply.text())
        });
        assert_eq!(json["error"], "body_timeout", "{route}: {json}");
        let (closed, extra) = conn.closed_within(Duration::from_secs(3)).await;
        assert!(closed, "{route}: the connection stayed open after the 408");
        assert!(
            extra.is_empty(),
            "{route}: bytes after the 408: {:?}",
            String::from_utf8_lossy(&extra)
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{route}: 408 and close took {:?}",
            started.elapsed()
        );
    }

    // HTTP/2: each stalled stream gets its own 408.
    let mut stalled = h2_stalled_streams(gw.local_addr(), "/hello", 10, 1, b"{").await;
    assert_eq!(stalled.opened, 10);
    let statuses = stalled.statuses_within(Duration::from_secs(3)).await;
    assert_eq!(
        statuses,
        vec![Some(StatusCode::REQUEST_TIMEOUT); 10],
        "HTTP/2 streams with stalled bodies"
    );
    assert_eq!(get(&gw, "/hello/after").await.status, StatusCode::OK);
    drop(stalled);
    gw.shutdown().await;
}
