//! Plugins calling upstreams through the host: concurrency, dependent calls, grants, limits,
//! cancellation.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::{Response, StatusCode};
use serde_json::Value;
use tessera::RunningGateway;
use tessera_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An upstream that answers `name` plus the path after `delay`.
async fn slow_upstream(name: &'static str, delay: Duration) -> SocketAddr {
    upstream(move |req| async move {
        tokio::time::sleep(delay).await;
        Response::new(full(format!("{name}{}", req.uri().path())))
    })
    .await
}

fn upstreams(pairs: &[(&str, SocketAddr)]) -> String {
    pairs
        .iter()
        .map(|(name, addr)| format!("[upstreams.{name}]\ntargets = [\"{addr}\"]\n"))
        .collect()
}

fn handler_route(path: &str, grants: &[&str], config: &str) -> String {
    let grants: Vec<String> = grants.iter().map(|g| format!("\"{g}\"")).collect();
    format!(
        "[[routes]]\npath = \"{path}\"\nhandler = {{ plugin = \"test-handler\", upstreams = [{}], config = {{ {config} }} }}\n",
        grants.join(", ")
    )
}

#[tokio::test]
async fn three_slow_upstreams_answer_in_the_time_of_one() {
    let delay = Duration::from_millis(200);
    let (a, b, c) = tokio::join!(
        slow_upstream("a", delay),
        slow_upstream("b", delay),
        slow_upstream("c", delay)
    );
    let urls = r#"urls = ["http://a/1", "http://b/2", "http://c/3"]"#;
    let gw = gateway(&format!(
        "{}{}{}",
        upstreams(&[("a", a), ("b", b), ("c", c)]),
        handler_route(
            "/all",
            &["a", "b", "c"],
            &format!("mode = \"fan-out\", {urls}")
        ),
        handler_route(
            "/started",
            &["a", "b", "c"],
            &format!("mode = \"start\", {urls}")
        ),
    ))
    .await;
    for path in ["/all", "/started"] {
        // The first request also pays for connecting; time the second.
        get(&gw, path).await;
        let started = Instant::now();
        let reply = get(&gw, path).await;
        let took = started.elapsed();
        assert_eq!(reply.status, StatusCode::OK);
        let bodies: Vec<Value> = reply
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["body"].clone())
            .collect();
        assert_eq!(
            bodies,
            ["a/1", "b/2", "c/3"],
            "results keep the order of the calls"
        );
        assert!(
            took < Duration::from_millis(450),
            "{path}: three 200 ms calls took {took:?}"
        );
        eprintln!("{path}: three 200 ms upstreams answered in {took:?}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_call_can_use_the_result_of_an_earlier_one() {
    let first = upstream(|_| async { Response::new(full("/items/7")) }).await;
    let second = slow_upstream("second saw ", Duration::ZERO).await;
    let gw = gateway(&format!(
        "{}{}",
        upstreams(&[("first", first), ("second", second)]),
        handler_route(
            "/chain",
            &["first", "second"],
            r#"mode = "chain", urls = ["http://first/next", "http://second"]"#
        ),
    ))
    .await;
    let json = get(&gw, "/chain").await.json();
    assert_eq!(json["body"], "second saw /items/7");
    gw.shutdown().await;
}

/// A listener that only counts the connections it gets.
async fn counting_listener() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (addr, count)
}

#[tokio::test]
async fn denied_upstreams_and_disguised_hosts_never_get_a_connection() {
    let (target, connections) = counting_listener().await;
    let port = target.port();
    let allowed = slow_upstream("allowed", Duration::ZERO).await;
    let denied_urls = [
        "http://other/".to_owned(),                   // configured, not granted
        format!("http://127.0.0.1:{port}/"),          // absolute, not allowed
        format!("http://users@127.0.0.1:{port}/"),    // userinfo
        format!("http://granted@127.0.0.1:{port}/"),  // userinfo naming a grant
        format!("http://2130706433:{port}/"),         // decimal IPv4
        format!("http://[::ffff:127.0.0.1]:{port}/"), // IPv4-mapped IPv6
        format!("http://localhost:{port}/"),          // a name for the same host
        format!("http://granted:{port}/"),            // a grant with a port
    ];
    let urls: Vec<String> = denied_urls.iter().map(|u| format!("{u:?}")).collect();
    let gw = gateway(&format!(
        "{}{}[[routes]]\npath = \"/allowed\"\nhandler = {{ plugin = \"test-handler\", allow_hosts = [\"{allowed}\"], config = {{ mode = \"call\", url = \"http://{allowed}/x\" }} }}\n",
        upstreams(&[("other", target), ("granted", target)]),
        handler_route("/denied", &["granted"], &format!("mode = \"fan-out\", urls = [{}]", urls.join(", "))),
    ))
    .await;
    let reports = get(&gw, "/denied").await.json();
    for (url, report) in denied_urls.iter().zip(reports.as_array().unwrap()) {
        let error = report["error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with("Denied"),
            "{url} was not denied: {report}"
        );
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "a denied call reached the network"
    );

    let json = get(&gw, "/allowed").await.json();
    assert_eq!(
        json["body"], "allowed/x",
        "an explicitly allowed host works: {json}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn per_call_timeout_and_call_caps() {
    let slow = slow_upstream("slow", Duration::from_millis(1500)).await;
    let quick = slow_upstream("quick", Duration::from_millis(200)).await;
    let ten: Vec<String> = (0..10).map(|i| format!("\"http://quick/{i}\"")).collect();
    let gw = gateway(&format!(
        "{}{}{}",
        upstreams(&[("slow", slow), ("quick", quick)]),
        handler_route(
            "/timeout",
            &["slow"],
            r#"mode = "call", url = "http://slow/", timeout_ms = 150"#
        ),
        handler_route(
            "/many",
            &["quick"],
            &format!("mode = \"fan-out\", urls = [{}]", ten.join(", "))
        ),
    ))
    .await;
    let started = Instant::now();
    let json = get(&gw, "/timeout").await.json();
    assert_eq!(json["error"], "Timeout");
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "timeout took {:?}",
        started.elapsed()
    );

    // The test config allows 8 calls per request, 4 at a time.
    let started = Instant::now();
    let reports = get(&gw, "/many").await.json();
    let took = started.elapsed();
    let reports = reports.as_array().unwrap();
    let ok = reports.iter().filter(|r| r["status"] == 200).count();
    let limited = reports
        .iter()
        .filter(|r| {
            r["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("LimitExceeded"))
        })
        .count();
    assert_eq!((ok, limited), (8, 2), "{reports:?}");
    assert!(
        took >= Duration::from_millis(400),
        "8 calls of 200 ms, 4 at a time, took {took:?}"
    );
    gw.shutdown().await;
}

/// What a [`hanging_upstream`] reports.
#[derive(Debug)]
enum Hang {
    /// A request arrived (the call is in flight).
    Arrived,
    /// The gateway hung up, at this instant.
    Closed(Instant),
}

/// An upstream that reads a request, never answers, and reports when a request arrives and when
/// the gateway hangs up.
async fn hanging_upstream() -> (SocketAddr, tokio::sync::mpsc::Receiver<Hang>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut arrived = false;
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => {
                            let _ = tx.send(Hang::Closed(Instant::now())).await;
                            return;
                        }
                        Ok(_) if !arrived => {
                            arrived = true;
                            let _ = tx.send(Hang::Arrived).await;
                        }
                        Ok(_) => {}
                    }
                }
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn client_disconnect_cancels_outbound_calls() {
    let (hang, mut events) = hanging_upstream().await;
    let gw = gateway(&format!(
        "{}{}{}",
        upstreams(&[("hang", hang)]),
        handler_route("/send", &["hang"], r#"mode = "call", url = "http://hang/""#),
        handler_route(
            "/start",
            &["hang"],
            r#"mode = "start", urls = ["http://hang/a", "http://hang/b"]"#
        ),
    ))
    .await;
    for (path, calls) in [("/send", 1), ("/start", 2)] {
        let mut client = tokio::net::TcpStream::connect(gw.local_addr())
            .await
            .unwrap();
        client
            .write_all(format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n").as_bytes())
            .await
            .unwrap();
        // The calls are in flight once each has reached the upstream.
        for _ in 0..calls {
            let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
                .await
                .unwrap_or_else(|_| panic!("{path}: the call never reached the upstream"));
            assert!(matches!(event, Some(Hang::Arrived)), "{path}: {event:?}");
        }
        let hung_up = Instant::now();
        drop(client);
        for _ in 0..calls {
            let event = tokio::time::timeout(Duration::from_secs(1), events.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!("{path}: the upstream connection stayed open after the client left")
                });
            let Some(Hang::Closed(seen)) = event else {
                panic!("{path}: expected the connection to close, got {event:?}");
            };
            assert!(seen >= hung_up);
        }
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn outbound_calls_carry_request_id_and_trace_context() {
    let echo = upstream(|req| async move {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        Response::new(full(format!(
            "{}|{}",
            header("x-request-id"),
            header("traceparent")
        )))
    })
    .await;
    let gw = gateway(&format!(
        "{}{}",
        upstreams(&[("echo", echo)]),
        handler_route(
            "/traced",
            &["echo"],
            r#"mode = "call", url = "http://echo/""#
        ),
    ))
    .await;
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let request = http::Request::get("/traced")
        .header("x-request-id", "trace-me-1")
        .header("traceparent", incoming)
        .body(Default::default())
        .unwrap();
    let reply = send(&gw, request).await;
    let json = reply.json();
    let body = json["body"].as_str().unwrap();
    let (request_id, traceparent) = body.split_once('|').unwrap();
    // The client is no trusted proxy: its id is replaced, and the call carries the new one.
    assert_ne!(request_id, "trace-me-1");
    assert_eq!(Some(request_id), reply.header("x-request-id"));
    assert!(
        traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{traceparent}"
    );
    assert!(traceparent.ends_with("-01"), "{traceparent}");
    assert_ne!(
        traceparent, incoming,
        "the call is a child span with its own parent id"
    );
    gw.shutdown().await;
}

/// A gateway whose `[plugins]` section has `max_instances` and `extra` keys in place of the
/// harness's pool of 64.
async fn gateway_with_pool(max_instances: u32, extra: &str, routes: &str) -> RunningGateway {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{}\n{routes}",
        plugins_section().replace(
            "max_instances = 64\n",
            &format!("max_instances = {max_instances}\n{extra}")
        )
    );
    tessera::Gateway::new(config(&text))
        .await
        .expect("gateway builds")
        .start()
        .await
        .expect("gateway starts")
}

/// `/call`: the test handler calling the `slow` upstream once.
fn slow_call_route(slow: SocketAddr) -> String {
    format!(
        "{}{}",
        upstreams(&[("slow", slow)]),
        handler_route(
            "/call",
            &["slow"],
            r#"mode = "call", url = "http://slow/x""#
        )
    )
}

/// Sends `n` requests at once; returns their statuses.
async fn at_once(gw: &Arc<RunningGateway>, n: usize, path: &str) -> Vec<StatusCode> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let gw = Arc::clone(gw);
            let path = path.to_owned();
            tokio::spawn(async move { get(&gw, &path).await.status })
        })
        .collect();
    let mut statuses = Vec::with_capacity(n);
    for t in tasks {
        statuses.push(t.await.expect("request task"));
    }
    statuses
}

#[tokio::test]
async fn six_hundred_concurrent_plugin_requests_with_slow_upstreams_all_answer() {
    let slow = slow_upstream("slow", Duration::from_millis(100)).await;
    let gw = Arc::new(gateway_with_pool(1024, "", &slow_call_route(slow)).await);
    let started = Instant::now();
    let statuses = at_once(&gw, 600, "/call").await;
    let failed: Vec<_> = statuses.iter().filter(|s| **s != StatusCode::OK).collect();
    assert!(
        failed.is_empty(),
        "{} of 600 failed: {failed:?}",
        failed.len()
    );
    // Generous: 600 overlapping 100 ms calls, not 600 × 100 ms one after another.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn past_the_pool_requests_queue_then_get_503() {
    let slow = slow_upstream("slow", Duration::from_millis(100)).await;
    let routes = slow_call_route(slow);
    // Four instances, a long queue: forty requests all wait their turn and succeed.
    let gw = Arc::new(gateway_with_pool(4, "queue_timeout_ms = 30000\n", &routes).await);
    let statuses = at_once(&gw, 40, "/call").await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    // One instance, a short queue wait: requests that cannot get it are told to retry.
    let gw = Arc::new(gateway_with_pool(1, "queue_timeout_ms = 50\n", &routes).await);
    let statuses = at_once(&gw, 10, "/call").await;
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let busy = statuses
        .iter()
        .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    assert!(ok >= 1 && busy >= 1 && ok + busy == 10, "{statuses:?}");
    let reply = get(&gw, "/call").await;
    assert_eq!(reply.status, StatusCode::OK, "capacity comes back");
}
