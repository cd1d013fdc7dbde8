//! Standard `wasi:http/proxy` components as route handlers (`tests/plugins/wasi-http-rust`, built
//! from source): streaming bodies both ways, a fresh instance per request, the header rule,
//! outgoing calls under the route's grants and caps, timeouts, traps, and filters around them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tessera::RunningGateway;
use tessera_tests::*;

/// An upstream that answers with the path and the headers a call arrived with, after `delay`.
async fn backend(delay: Duration) -> SocketAddr {
    upstream(move |req| async move {
        tokio::time::sleep(delay).await;
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let answer = serde_json::json!({
            "path": req.uri().path(),
            "host": header("host"),
            "x-request-id": header("x-request-id"),
            "traceparent": header("traceparent"),
            "x-from-guest": header("x-from-guest"),
        });
        Response::new(full(answer.to_string()))
    })
    .await
}

/// An upstream that records how many requests it holds at once (and the most it ever held), and
/// answers each after `delay`.
async fn gauge_upstream(delay: Duration) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let now = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (n, p) = (Arc::clone(&now), Arc::clone(&peak));
    let addr = upstream(move |_| {
        let (now, peak) = (Arc::clone(&n), Arc::clone(&p));
        async move {
            let held = now.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(held, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            now.fetch_sub(1, Ordering::SeqCst);
            Response::new(full("ok"))
        }
    })
    .await;
    (addr, now, peak)
}

/// A gateway whose `/w/{action}` routes to the component, granted `backend` (and not `secret`).
async fn wasi_gateway(backend_addr: SocketAddr, extra: &str) -> RunningGateway {
    let secret = backend(Duration::ZERO).await;
    gateway(&format!(
        "[upstreams.backend]\ntargets = [\"{backend_addr}\"]\n\
         [upstreams.secret]\ntargets = [\"{secret}\"]\n\
         [[routes]]\npath = \"/w/{{action}}\"\nhandler = {{ plugin = \"wasi-http\", upstreams = [\"backend\"] }}\n\
         {extra}"
    ))
    .await
}

#[tokio::test]
async fn the_component_sees_the_request_and_gets_a_fresh_instance_each_time() {
    let gw = wasi_gateway(backend(Duration::ZERO).await, "").await;
    for _ in 0..3 {
        let reply = send(
            &gw,
            Request::builder()
                .method(Method::PUT)
                .uri("/w/echo?x=1&y=two")
                .header("x-custom", "value")
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let json = reply.json();
        assert_eq!(json["method"], "PUT");
        assert_eq!(json["path"], "/w/echo?x=1&y=two");
        assert_eq!(json["scheme"], "http");
        assert_eq!(json["authority"], gw.local_addr().to_string());
        let headers = json["headers"].as_array().unwrap();
        let has = |name: &str, value: &str| {
            headers
                .iter()
                .any(|h| h[0] == name && (value.is_empty() || h[1] == value))
        };
        assert!(has("x-custom", "value"), "{headers:?}");
        let request_id = reply.header("x-request-id").unwrap();
        assert!(has("x-request-id", request_id), "{headers:?}");
        assert!(!has("host", ""), "host reaches the guest as the authority");
        assert_eq!(json["served"], 1, "each request gets a fresh instance");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn the_host_frames_the_response_whatever_the_component_says() {
    let gw = wasi_gateway(backend(Duration::ZERO).await, "").await;
    let reply = get(&gw, "/w/echo?framing").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.json().is_object());
    assert_eq!(
        reply.header("content-length"),
        None,
        "the guest's content-length is not taken"
    );
    assert_eq!(reply.header("transfer-encoding"), Some("chunked"));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_body_three_times_the_plugins_memory_streams_through() {
    let memory = 8 << 20;
    let gw = wasi_gateway(
        backend(Duration::ZERO).await,
        &format!(
            "[[routes]]\npath = \"/small/{{action}}\"\nhandler = {{ plugin = \"wasi-http\", limits = {{ memory_bytes = {memory}, timeout_ms = 30000 }} }}\n"
        ),
    )
    .await;
    let body: Vec<u8> = (0..3 * memory).map(|i| (i % 251) as u8).collect();
    let reply = send(&gw, request(Method::POST, "/small/stream", body.clone())).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header("x-streamed"), Some("yes"));
    assert_eq!(reply.body.len(), body.len());
    assert!(reply.body == body, "the body comes back byte for byte");
    gw.shutdown().await;
}

#[tokio::test]
async fn the_response_reaches_the_client_while_the_component_still_writes() {
    let gw = wasi_gateway(backend(Duration::ZERO).await, "").await;
    let started = Instant::now();
    let uri = format!("http://{}/w/drip?n=3&ms=300", gw.local_addr());
    let response = client()
        .request(Request::get(uri).body(Full::<Bytes>::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    let first_at = started.elapsed();
    assert_eq!(&first[..], b"line 0\n");
    let mut rest = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            rest.extend_from_slice(&data);
        }
    }
    let done_at = started.elapsed();
    assert_eq!(rest, b"line 1\nline 2\n");
    assert!(
        first_at + Duration::from_millis(450) < done_at,
        "the first line arrived at {first_at:?}, the end at {done_at:?}: it waited for the rest"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn calls_reach_granted_upstreams_with_the_request_id_and_trace_context() {
    let addr = backend(Duration::ZERO).await;
    let gw = wasi_gateway(addr, "").await;
    let reply = get(&gw, "/w/call?url=http://backend/items/7").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let json = reply.json();
    assert_eq!(json["status"], 200, "{json}");
    let seen: Value = serde_json::from_str(json["body"].as_str().unwrap()).unwrap();
    assert_eq!(seen["path"], "/items/7");
    assert_eq!(
        seen["host"],
        addr.to_string(),
        "host is the upstream's target"
    );
    assert_eq!(seen["x-from-guest"], "1");
    assert_eq!(
        seen["x-request-id"].as_str(),
        reply.header("x-request-id"),
        "the call carries the request's id"
    );
    let traceparent = seen["traceparent"].as_str().unwrap();
    assert_eq!(traceparent.split('-').count(), 4, "{traceparent}");
    gw.shutdown().await;
}

#[tokio::test]
async fn hosts_not_granted_are_denied_to_the_component_and_counted() {
    let gw = wasi_gateway(
        backend(Duration::ZERO).await,
        "[metrics]\nlisten = \"127.0.0.1:0\"\n",
    )
    .await;
    for url in [
        "http://secret/x",
        "http://example.com/",
        "https://backend.example:8443/",
        "http://user@backend/x",
    ] {
        let reply = get(&gw, &format!("/w/call?url={url}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{url}: {}", reply.text());
        assert_eq!(
            reply.json()["error"],
            "ErrorCode::HttpRequestDenied",
            "{url}"
        );
    }
    let metrics = fetch(
        Request::get(format!("http://{}/metrics", gw.metrics_addr().unwrap()))
            .body(Full::default())
            .unwrap(),
    )
    .await
    .text();
    let denied = metrics
        .lines()
        .find(|l| {
            l.starts_with(
                r#"tessera_plugin_outbound_calls_total{plugin="wasi-http",upstream="-",result="denied"}"#,
            )
        })
        .unwrap_or_else(|| panic!("no denied calls counted:\n{metrics}"));
    assert!(denied.ends_with(" 4"), "{denied}");
    gw.shutdown().await;
}

#[tokio::test]
async fn calls_in_flight_and_in_total_are_capped_per_request() {
    let (addr, _, peak) = gauge_upstream(Duration::from_millis(150)).await;
    let gw = wasi_gateway(
        addr,
        "[[routes]]\npath = \"/capped/{action}\"\nhandler = { plugin = \"wasi-http\", upstreams = [\"backend\"], limits = { max_in_flight = 2, max_calls = 3 } }\n",
    )
    .await;
    let reply = get(&gw, "/capped/fanout?url=http://backend/&n=3").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let results = reply.json();
    for r in results.as_array().unwrap() {
        assert_eq!(r["status"], 200, "{results}");
    }
    assert_eq!(
        peak.load(Ordering::SeqCst),
        2,
        "at most max_in_flight calls at once"
    );

    let reply = get(&gw, "/capped/fanout?url=http://backend/&n=4").await;
    let results = reply.json();
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), 4);
    assert!(
        results[..3].iter().all(|r| r["status"] == 200),
        "{results:?}"
    );
    assert_eq!(
        results[3]["error"], "ErrorCode::ConnectionLimitReached",
        "the call past max_calls is refused"
    );

    // Without the cap, the same calls run together.
    peak.store(0, Ordering::SeqCst);
    let reply = get(&gw, "/w/fanout?url=http://backend/&n=3").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(peak.load(Ordering::SeqCst), 3);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_slow_upstream_times_out_by_the_guests_first_byte_timeout_or_the_plugins_deadline() {
    let gw = wasi_gateway(
        backend(Duration::from_secs(5)).await,
        "[[routes]]\npath = \"/short/{action}\"\nhandler = { plugin = \"wasi-http\", upstreams = [\"backend\"], limits = { timeout_ms = 300 } }\n",
    )
    .await;
    let started = Instant::now();
    let reply = get(&gw, "/w/call?url=http://backend/slow&first_byte_ms=100").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["error"], "ErrorCode::HttpResponseTimeout");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    for path in ["/short/call?url=http://backend/slow", "/short/spin"] {
        let started = Instant::now();
        let reply = get(&gw, path).await;
        assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT, "{path}");
        assert_eq!(reply.json()["error"], "plugin_timeout", "{path}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{path}: {:?}",
            started.elapsed()
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_trap_is_a_500_or_a_cut_response_and_the_gateway_keeps_serving() {
    let gw = wasi_gateway(backend(Duration::ZERO).await, "").await;
    let reply = get(&gw, "/w/trap").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    let json = reply.json();
    assert_eq!(json["error"], "plugin_failed");
    assert_eq!(json["request_id"].as_str(), reply.header("x-request-id"));

    // Failing after the head was sent: the client must not see a clean end.
    let uri = format!("http://{}/w/cut", gw.local_addr());
    let response = client()
        .request(Request::get(uri).body(Full::<Bytes>::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.into_body().collect().await.is_err(),
        "a response cut short by a trap ends in an error"
    );

    let reply = get(&gw, "/w/echo").await;
    assert_eq!(reply.status, StatusCode::OK);
    gw.shutdown().await;
}

#[tokio::test]
async fn filters_run_around_the_component() {
    let gw = wasi_gateway(
        backend(Duration::ZERO).await,
        "[[routes]]\npath = \"/f/{action}\"\nhandler = { plugin = \"wasi-http\" }\n\
         filters = [{ plugin = \"test-filter\", config = { tag = \"a\" } }, { plugin = \"test-filter\", buffer_body = true, config = { upper_body = true } }]\n",
    )
    .await;
    let reply = get(&gw, "/f/echo").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header("x-trace"), Some("out:a"));
    let text = reply.text();
    assert!(text.contains("\"X-TRACE\",\"IN:A\""), "{text}");
    gw.shutdown().await;
}

#[tokio::test]
async fn wrong_uses_are_refused_at_load() {
    for (route, expected) in [
        (
            "path = \"/x\"\nupstream = \"backend\"\nfilters = [{ plugin = \"wasi-http\" }]",
            "wasi:http/proxy component, which can only serve a route as its handler",
        ),
        (
            "path = \"/x\"\nhandler = { plugin = \"wasi-http\", instances = \"reuse\" }",
            "fresh instance per request",
        ),
        (
            "path = \"/x\"\nhandler = { plugin = \"test-filter\" }",
            "does not export tessera:gateway/request-handler or wasi:http/incoming-handler",
        ),
    ] {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{}\n[upstreams.backend]\ntargets = [\"127.0.0.1:9\"]\n[[routes]]\n{route}\n",
            plugins_section()
        );
        let error = match tessera::Gateway::new(config(&text)).await {
            Ok(_) => panic!("{route}: accepted"),
            Err(e) => format!("{e:#}"),
        };
        assert!(error.contains(expected), "{route}: {error}");
    }
}

/// A gateway with the JavaScript component (`tests/plugins/wasi-http-js`) as `wasi-http-js`, on
/// `/js/{action}`, granted `backend`.
async fn js_gateway(backend_addr: SocketAddr, extra: &str) -> RunningGateway {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace_ms = 5000\n{}wasi-http-js = {:?}\n\
         [upstreams.backend]\ntargets = [\"{backend_addr}\"]\n\
         [[routes]]\npath = \"/js/{{action}}\"\nhandler = {{ plugin = \"wasi-http-js\", upstreams = [\"backend\"] }}\n\
         {extra}",
        plugins_section(),
        wasi_http_js_plugin().display().to_string()
    );
    let gateway = tessera::Gateway::new(config(&text))
        .await
        .expect("gateway builds");
    gateway.start().await.expect("gateway starts")
}

#[tokio::test]
async fn a_javascript_fetch_event_component_serves_a_route_with_streaming_bodies() {
    let gw = js_gateway(backend(Duration::ZERO).await, "").await;
    for _ in 0..2 {
        let reply = send(
            &gw,
            Request::builder()
                .method(Method::POST)
                .uri("/js/echo?q=1")
                .header("x-custom", "value")
                .body(Full::default())
                .unwrap(),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let json = reply.json();
        assert_eq!(json["method"], "POST");
        assert_eq!(json["path"], "/js/echo?q=1");
        let headers = json["headers"].as_array().unwrap();
        assert!(
            headers
                .iter()
                .any(|h| h[0] == "x-custom" && h[1] == "value"),
            "{headers:?}"
        );
        assert_eq!(json["served"], 1, "each request gets a fresh instance");
    }

    let body: Vec<u8> = (0..4 << 20).map(|i| (i % 253) as u8).collect();
    let reply = send(&gw, request(Method::POST, "/js/stream", body.clone())).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header("x-streamed"), Some("yes"));
    assert!(reply.body == body, "the body comes back byte for byte");
    gw.shutdown().await;
}

#[tokio::test]
async fn javascript_fetch_is_held_to_the_routes_grants_and_deadline() {
    let addr = backend(Duration::ZERO).await;
    let slow = backend(Duration::from_secs(5)).await;
    let gw = js_gateway(
        addr,
        &format!(
            "[upstreams.slow]\ntargets = [\"{slow}\"]\n\
             [[routes]]\npath = \"/js-short/{{action}}\"\nhandler = {{ plugin = \"wasi-http-js\", upstreams = [\"slow\"], limits = {{ timeout_ms = 500 }} }}\n"
        ),
    )
    .await;
    let reply = get(&gw, "/js/call?url=http://backend/items/7").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let json = reply.json();
    assert_eq!(json["status"], 200, "{json}");
    let seen: Value = serde_json::from_str(json["body"].as_str().unwrap()).unwrap();
    assert_eq!(seen["path"], "/items/7");
    assert_eq!(seen["x-from-guest"], "js");
    assert_eq!(seen["x-request-id"].as_str(), reply.header("x-request-id"));

    for url in ["http://example.com/", "http://slow/x"] {
        let reply = get(&gw, &format!("/js/call?url={url}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{url}: {}", reply.text());
        let json = reply.json();
        assert!(json["error"].is_string(), "{url} was not refused: {json}");
    }

    let started = Instant::now();
    let reply = get(&gw, "/js-short/call?url=http://slow/x").await;
    assert_eq!(
        reply.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        reply.text()
    );
    assert_eq!(reply.json()["error"], "plugin_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    gw.shutdown().await;
}
