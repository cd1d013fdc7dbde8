//! Proxy routes: forwarding, streaming, load balancing, upstream failures.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tessera_tests::*;

#[tokio::test]
async fn forwards_method_path_query_headers_and_body() {
    let up = upstream(|req| async move {
        let (parts, body) = req.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        let headers: serde_json::Map<String, serde_json::Value> = parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().into()))
            .collect();
        let echo = serde_json::json!({
            "method": parts.method.as_str(),
            "uri": parts.uri.to_string(),
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
        });
        Response::builder()
            .header("x-upstream", "yes")
            .header("connection", "x-private")
            .header("x-private", "hop")
            .body(full(echo.to_string()))
            .unwrap()
    })
    .await;
    let gw = gateway(&format!(
        "[upstreams.echo]\ntargets = [\"{up}\"]\n[[routes]]\npath = \"/api/{{*rest}}\"\nupstream = \"echo\"\n"
    ))
    .await;
    let request = Request::builder()
        .method(Method::PUT)
        .uri("/api/items/7?color=red&size=2")
        .header("x-custom", "abc")
        .header("connection", "keep-alive, x-drop-me")
        .header("x-drop-me", "secret")
        .header("te", "trailers")
        .body(http_body_util::Full::new(Bytes::from_static(b"payload")))
        .unwrap();
    let reply = send(&gw, request).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-upstream"), Some("yes"));
    assert_eq!(
        reply.header("x-private"),
        None,
        "hop-by-hop response header leaked"
    );
    assert!(reply.header("x-request-id").is_some());
    let echo = reply.json();
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["uri"], "/api/items/7?color=red&size=2");
    assert_eq!(echo["body"], "payload");
    let headers = &echo["headers"];
    assert_eq!(headers["x-custom"], "abc");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["host"], up.to_string());
    assert!(
        headers.get("x-drop-me").is_none(),
        "header named by Connection leaked"
    );
    assert!(headers.get("te").is_none(), "TE leaked");
    assert_eq!(
        headers["x-request-id"],
        reply.header("x-request-id").unwrap()
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn large_bodies_stream_both_ways() {
    // The upstream sends the first chunk, then waits for the test to have received it through the
    // gateway before sending the rest: a gateway that buffered whole bodies would hang here.
    let (first_seen_tx, first_seen_rx) = tokio::sync::watch::channel(false);
    let first_seen_rx = Arc::new(first_seen_rx);
    let up = upstream(move |req| {
        let mut first_seen = (*first_seen_rx).clone();
        async move {
            // Count the uploaded bytes without keeping them.
            let mut body = req.into_body();
            let mut uploaded = 0usize;
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.unwrap().into_data() {
                    uploaded += data.len();
                }
            }
            let (tx, rx) =
                tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(4);
            tokio::spawn(async move {
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from(format!(
                        "uploaded={uploaded};"
                    )))))
                    .await;
                let _ = first_seen.wait_for(|seen| *seen).await;
                for _ in 0..16 {
                    let _ = tx
                        .send(Ok(Frame::data(Bytes::from(vec![b'x'; 1 << 20]))))
                        .await;
                }
            });
            let stream = tokio_stream_from(rx);
            Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)))
        }
    })
    .await;
    let gw = gateway(&format!(
        "[upstreams.big]\ntargets = [\"{up}\"]\n[[routes]]\npath = \"/big\"\nupstream = \"big\"\n"
    ))
    .await;

    let upload = Bytes::from(vec![7u8; 24 << 20]);
    let uri: http::Uri = format!("http://{}/big", gw.local_addr()).parse().unwrap();
    let response = client()
        .request(
            Request::post(uri)
                .body(http_body_util::Full::new(upload))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("first chunk arrives before the upstream finishes")
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert_eq!(&first[..], format!("uploaded={};", 24 << 20).as_bytes());
    first_seen_tx.send(true).unwrap();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest.len(), 16 << 20);
    gw.shutdown().await;
}

/// An mpsc receiver as a stream, without another dependency.
fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn round_robin_over_targets() {
    let a = upstream(|_| async { Response::new(full("a")) }).await;
    let b = upstream(|_| async { Response::new(full("b")) }).await;
    let gw = gateway(&format!("[upstreams.pair]\ntargets = [\"{a}\", \"{b}\"]\n[[routes]]\npath = \"/\"\nupstream = \"pair\"\n")).await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(get(&gw, "/").await.text());
    }
    seen.sort();
    assert_eq!(seen, ["a", "a", "b", "b"]);
    gw.shutdown().await;
}

#[tokio::test]
async fn slow_upstream_is_a_504_and_dead_upstream_a_502() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let slow = upstream(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
        async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Response::new(full("late"))
        }
    })
    .await;
    let dead = dead_address().await;
    let gw = gateway(&format!(
        "[upstreams.slow]\ntargets = [\"{slow}\"]\nresponse_timeout_ms = 200\n\
         [upstreams.dead]\ntargets = [\"{dead}\"]\n\
         [[routes]]\npath = \"/slow\"\nupstream = \"slow\"\n\
         [[routes]]\npath = \"/dead\"\nupstream = \"dead\"\n"
    ))
    .await;
    let started = Instant::now();
    let reply = get(&gw, "/slow").await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(reply.json()["error"], "upstream_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "timeout took {:?}",
        started.elapsed()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let reply = get(&gw, "/dead").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    let json = reply.json();
    assert_eq!(json["error"], "upstream_unavailable");
    assert_eq!(json["request_id"], reply.header("x-request-id").unwrap());
    assert!(
        !reply.text().contains("127.0.0.1"),
        "upstream address leaked to the client: {}",
        reply.text()
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn unknown_path_is_404_and_wrong_method_405() {
    let up = upstream(|_| async { Response::new(full("ok")) }).await;
    let gw = gateway(&format!(
        "[upstreams.u]\ntargets = [\"{up}\"]\n[[routes]]\npath = \"/only-get\"\nmethods = [\"GET\"]\nupstream = \"u\"\n"
    ))
    .await;
    let reply = get(&gw, "/nowhere").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.json()["error"], "not_found");
    assert_eq!(reply.header("content-type"), Some("application/json"));

    let reply = send(&gw, request(Method::DELETE, "/only-get", "")).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.header("allow"), Some("GET, HEAD"));
    assert_eq!(reply.json()["error"], "method_not_allowed");

    assert_eq!(get(&gw, "/only-get").await.text(), "ok");
    gw.shutdown().await;
}
