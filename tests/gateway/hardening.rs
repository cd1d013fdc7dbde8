//! What clients can send: header limits, body caps, slow and idle connections, capacity caps,
//! ambiguous framing, malformed requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::{Response, StatusCode};
use http_body_util::BodyExt;
use tessera_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An upstream that counts requests and echoes the body length and framing it saw.
async fn counting_echo() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&count);
    let addr = upstream(move |req| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let path = req.uri().path().to_owned();
            let te = req.headers().contains_key("transfer-encoding");
            let cl = req
                .headers()
                .get("content-length")
                .map(|v| v.to_str().unwrap_or("").to_owned());
            let body = req.into_body().collect().await.map(|b| b.to_bytes().len());
            Response::new(full(format!("path={path} body={body:?} te={te} cl={cl:?}")))
        }
    })
    .await;
    (addr, count)
}

fn status_of(raw: &str) -> Option<u16> {
    raw.split_whitespace().nth(1).and_then(|s| s.parse().ok())
}

#[tokio::test]
async fn oversized_headers_are_431() {
    let (up, calls) = counting_echo().await;
    let gw = gateway_with("max_headers = 20\nmax_header_bytes = 16384\n", &format!("[upstreams.u]\ntargets = [\"{up}\"]\n[[routes]]\npath = \"/{{*p}}\"\nupstream = \"u\"\n")).await;
    let many: String = (0..30).map(|i| format!("x-h{i}: v\r\n")).collect();
    let raw = raw_exchange(
        &gw,
        format!("GET / HTTP/1.1\r\nhost: t\r\n{many}\r\n").as_bytes(),
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(status_of(&raw), Some(431), "{raw}");
    let big = "a".repeat(20_000);
    let raw = raw_exchange(
        &gw,
        format!("GET / HTTP/1.1\r\nhost: t\r\nx-big: {big}\r\n\r\n").as_bytes(),
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(status_of(&raw), Some(431), "{}", &raw[..raw.len().min(200)]);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn request_body_cap_is_413_up_front_and_while_streaming() {
    let (up, calls) = counting_echo().await;
    let gw = gateway_with(
        "max_request_body_bytes = 1000\n",
        &format!(
            "[upstreams.u]\ntargets = [\"{up}\"]\n[[routes]]\npath = \"/p\"\nupstream = \"u\"\n\
             [[routes]]\npath = \"/h\"\nhandler = {{ plugin = \"test-handler\" }}\n"
        ),
    )
    .await;
    // Declared too large: refused before any upstream sees it.
    let raw = raw_exchange(
        &gw,
        b"POST /p HTTP/1.1\r\nhost: t\r\ncontent-length: 2000\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(status_of(&raw), Some(413), "{raw}");
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    // Chunked, no length: counted while streaming to the upstream.
    let chunk = "x".repeat(600);
    let body = format!("258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n");
    let raw = raw_exchange(
        &gw,
        format!("POST /p HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n{body}")
            .as_bytes(),
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(status_of(&raw), Some(413), "{raw}");
    let raw = raw_exchange(
        &gw,
        format!("POST /h HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n{body}")
            .as_bytes(),
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(status_of(&raw), Some(413), "{raw}");

    // Within the cap it flows.
    let reply = send(&gw, request(http::Method::POST, "/p", vec![b'y'; 900])).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.text().contains("body=Ok(900)"), "{}", reply.text());
    gw.shutdown().await;
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed() {
    let gw = gateway_with(
        "header_read_timeout_ms = 500\n",
        "[[routes]]\npath = \"/hello/{name}\"\nhandler = { plugin = \"hello\" }\n",
    )
    .await;
    // Slowloris: a request head that never ends.
    let started = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(gw.local_addr())
        .await
        .unwrap();
    stream
        .write_all(b"GET /hello/x HTTP/1.1\r\nhost: t\r\nx-slow: ")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut buf)).await;
    assert!(
        closed.is_ok(),
        "a slow request head kept the connection open"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "closed after {:?}",
        started.elapsed()
    );

    // Idle keep-alive: one request, then silence.
    let mut stream = tokio::net::TcpStream::connect(gw.local_addr())
        .await
        .unwrap();
    stream
        .write_all(b"GET /hello/x HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    stream.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let started = Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "an idle keep-alive connection stayed open");
    assert!(started.elapsed() < Duration::from_secs(2));
    gw.shutdown().await;
}

#[tokio::test]
async fn capacity_caps_answer_503_with_retry_after() {
    // The upstream says when a request reached it, so the test knows what is in flight.
    let (arrived, mut arrivals) = tokio::sync::mpsc::unbounded_channel::<()>();
    let slow = upstream(move |_| {
        let _ = arrived.send(());
        async {
            tokio::time::sleep(Duration::from_millis(600)).await;
            Response::new(full("slow"))
        }
    })
    .await;
    let arrival = async |arrivals: &mut tokio::sync::mpsc::UnboundedReceiver<()>| {
        tokio::time::timeout(Duration::from_secs(10), arrivals.recv())
            .await
            .expect("a request reaches the upstream");
    };
    let routes = format!(
        "[upstreams.slow]\ntargets = [\"{slow}\"]\n[[routes]]\npath = \"/slow\"\nupstream = \"slow\"\n"
    );

    // Requests: one in flight at a time.
    let gw = Arc::new(gateway_with("max_requests = 1\n", &routes).await);
    let first = {
        let gw = Arc::clone(&gw);
        tokio::spawn(async move { get(&gw, "/slow").await.status })
    };
    arrival(&mut arrivals).await;
    let reply = get(&gw, "/slow").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(first.await.unwrap(), StatusCode::OK);
    assert_eq!(
        get(&gw, "/slow").await.status,
        StatusCode::OK,
        "capacity comes back"
    );
    Arc::try_unwrap(gw).unwrap().shutdown().await;
    arrival(&mut arrivals).await; // the request that showed capacity came back

    // Connections: two held open, the third is answered 503 and closed.
    let gw = gateway_with(
        "max_connections = 2\nheader_read_timeout_ms = 3000\n",
        &routes,
    )
    .await;
    // Two connections the gateway serves: each has a request at the upstream.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(gw.local_addr())
            .await
            .unwrap();
        stream
            .write_all(b"GET /slow HTTP/1.1\r\nhost: t\r\n\r\n")
            .await
            .unwrap();
        arrival(&mut arrivals).await;
        held.push(stream);
    }
    let raw = raw_exchange(
        &gw,
        b"GET /slow HTTP/1.1\r\nhost: t\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(status_of(&raw), Some(503), "{raw}");
    assert!(raw.to_ascii_lowercase().contains("retry-after: 1"), "{raw}");
    gw.shutdown().await;
}

#[tokio::test]
async fn ambiguous_framing_and_malformed_requests_are_refused_or_normalised() {
    let (up, _calls) = counting_echo().await;
    let gw = gateway(&format!(
        "[upstreams.u]\ntargets = [\"{up}\"]\n[[routes]]\npath = \"/{{*p}}\"\nupstream = \"u\"\n"
    ))
    .await;
    let wait = Duration::from_secs(3);

    // Content-Length with Transfer-Encoding: either refused, or the chunked framing wins and the
    // bytes after the last chunk are a request of their own to the gateway, never smuggled.
    let raw = raw_exchange(
        &gw,
        b"POST /a HTTP/1.1\r\nhost: t\r\ncontent-length: 30\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
        wait,
    )
    .await;
    match status_of(&raw) {
        Some(400) => {}
        Some(200) => {
            assert!(raw.contains("path=/a body=Ok(0)"), "{raw}");
            assert!(
                !raw.contains("cl=Some(\"30\")"),
                "the conflicting length reached the upstream: {raw}"
            );
        }
        other => panic!("unexpected answer {other:?}: {raw}"),
    }

    // Two different Content-Length values.
    let raw = raw_exchange(
        &gw,
        b"POST /a HTTP/1.1\r\nhost: t\r\ncontent-length: 4\r\ncontent-length: 5\r\n\r\nabcde",
        wait,
    )
    .await;
    assert_eq!(status_of(&raw), Some(400), "{raw}");

    // Bare LF line endings: refused, or parsed as the same request and re-framed upstream.
    let raw = raw_exchange(
        &gw,
        b"GET /lf HTTP/1.1\nhost: t\nconnection: close\n\n",
        wait,
    )
    .await;
    match status_of(&raw) {
        Some(400) => {}
        Some(200) => assert!(raw.contains("path=/lf body=Ok(0)"), "{raw}"),
        other => panic!("unexpected answer {other:?}: {raw}"),
    }

    // Malformed request lines.
    for bad in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"G\x00T / HTTP/1.1\r\n\r\n",
    ] {
        let raw = raw_exchange(&gw, bad, wait).await;
        assert!(
            matches!(status_of(&raw), Some(400) | Some(505)) || raw.is_empty(),
            "{:?} → {raw}",
            String::from_utf8_lossy(bad)
        );
    }
    // And the gateway still serves.
    assert_eq!(get(&gw, "/fine").await.status, StatusCode::OK);
    gw.shutdown().await;
}

/// At `plugins.max_instances` the next plugin request waits up to `plugins.queue_timeout_ms`
/// (1 s by default) for a slot, then gets 503 `plugin_overloaded` with `retry-after`.
#[tokio::test]
async fn an_exhausted_instance_pool_answers_503_with_retry_after() {
    // An upstream that accepts and never answers: each call to it holds its plugin's instance.
    let (silent_addr, mut arrivals) = silent_upstream().await;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{}\n{}",
        plugins_section().replace("max_instances = 64", "max_instances = 2"),
        hold_and_hello(silent_addr)
    );
    let gw = tessera::Gateway::new(config(&text))
        .await
        .expect("gateway builds")
        .start()
        .await
        .expect("gateway starts");
    let gw = Arc::new(gw);
    let holders: Vec<_> = (0..2)
        .map(|_| {
            let gw = Arc::clone(&gw);
            tokio::spawn(async move { get(&gw, "/hold").await.status })
        })
        .collect();
    // Both instances are taken once both calls reached the upstream.
    held_at_upstream(&mut arrivals, 2).await;
    let reply = get(&gw, "/hello/x").await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text()
    );
    assert_eq!(reply.json()["error"], "plugin_overloaded");
    assert_eq!(reply.header("retry-after"), Some("1"));
    for h in holders {
        assert_eq!(h.await.unwrap(), StatusCode::GATEWAY_TIMEOUT);
    }
    assert_eq!(get(&gw, "/hello/x").await.status, StatusCode::OK);
}

/// `max_plugin_requests_per_client`: one client address cannot hold more plugin requests than
/// its share (429 + `retry-after`), while another address is still served.
#[tokio::test]
async fn one_client_address_cannot_take_every_plugin_instance() {
    // An upstream that accepts and never answers: each call holds its plugin's instance until
    // the plugin's 2 s deadline.
    let (silent_addr, mut arrivals) = silent_upstream().await;
    let gw = Arc::new(
        gateway_with(
            "max_plugin_requests_per_client = 2\n",
            &hold_and_hello(silent_addr),
        )
        .await,
    );
    let holders: Vec<_> = (0..2)
        .map(|_| {
            let gw = Arc::clone(&gw);
            tokio::spawn(async move { get(&gw, "/hold").await.status })
        })
        .collect();
    held_at_upstream(&mut arrivals, 2).await;
    // 127.0.0.1 holds its two: a third plugin request from it is refused at once.
    let started = Instant::now();
    let reply = get(&gw, "/hello/x").await;
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        reply.text()
    );
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert!(started.elapsed() < Duration::from_secs(1));
    // Another address (the loopback range is all local) is served meanwhile.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut stream = socket.connect(gw.local_addr()).await.unwrap();
    stream
        .write_all(b"GET /hello/other HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("answered")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(status_of(&answer), Some(200), "{answer}");
    for h in holders {
        assert_eq!(h.await.unwrap(), StatusCode::GATEWAY_TIMEOUT);
    }
    // The slots came back.
    assert_eq!(get(&gw, "/hello/x").await.status, StatusCode::OK);
}

/// `max_plugin_requests_per_connection`: HTTP/2 streams of one connection beyond the cap wait up to
/// 1 s for a sibling, then get 429; another connection is served meanwhile.
#[tokio::test]
async fn one_http2_connection_cannot_take_every_plugin_instance() {
    let (silent_addr, mut arrivals) = silent_upstream().await;
    let gw = gateway_with(
        "max_plugin_requests_per_connection = 2\n",
        &hold_and_hello(silent_addr),
    )
    .await;
    // One HTTP/2 connection (prior knowledge), its streams multiplexed.
    let h2: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .pool_max_idle_per_host(1)
            .build_http();
    let uri =
        |path: &str| -> http::Uri { format!("http://{}{path}", gw.local_addr()).parse().unwrap() };
    // Open the connection first, so the streams below share it.
    let first = h2
        .request(
            http::Request::get(uri("/hello/warm"))
                .body(Default::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let holders: Vec<_> = (0..2)
        .map(|_| {
            let h2 = h2.clone();
            let u = uri("/hold");
            tokio::spawn(async move {
                h2.request(http::Request::get(u).body(Default::default()).unwrap())
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    held_at_upstream(&mut arrivals, 2).await;
    let started = Instant::now();
    let third = h2
        .request(
            http::Request::get(uri("/hello/third"))
                .body(Default::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "it waited for a sibling first: {:?}",
        started.elapsed()
    );
    // A request on another connection is not held back.
    assert_eq!(get(&gw, "/hello/other").await.status, StatusCode::OK);
    for h in holders {
        assert_eq!(h.await.unwrap(), StatusCode::GATEWAY_TIMEOUT);
    }
    gw.shutdown().await;
}

/// An upstream that accepts connections and never answers, so a plugin calling it holds its
/// instance until the plugin's deadline (2 s in the harness); each accepted connection is
/// reported, so a test knows when the calls are in flight.
async fn silent_upstream() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let (arrived, arrivals) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
            let _ = arrived.send(());
        }
    });
    (addr, arrivals)
}

/// Routes for the instance-holding tests: `/hold` calls the silent upstream (holding its
/// instance), `/hello/{name}` answers at once.
fn hold_and_hello(silent: std::net::SocketAddr) -> String {
    format!(
        "[upstreams.target]\ntargets = [\"{silent}\"]\n\
         [[routes]]\npath = \"/hold\"\nhandler = {{ plugin = \"hostile\", upstreams = [\"target\"], config = {{ mode = \"wait-forever\" }} }}\n\
         [[routes]]\npath = \"/hello/{{name}}\"\nhandler = {{ plugin = \"hello\" }}\n"
    )
}

/// Waits until `n` calls have reached a [`silent_upstream`].
async fn held_at_upstream(arrivals: &mut tokio::sync::mpsc::UnboundedReceiver<()>, n: usize) {
    for _ in 0..n {
        tokio::time::timeout(Duration::from_secs(10), arrivals.recv())
            .await
            .expect("the holding calls reach the upstream");
    }
}
