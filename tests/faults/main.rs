//! Upstream faults: refused, reset before and during the response, timeouts, stalled bodies,
//! 5xx; retries only where configured and safe; passive health checks; and no file descriptor
//! left behind afterwards.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tessera_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A raw upstream: reads a request head, then does `act` with the socket.
async fn raw_upstream<F, Fut>(act: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let act = Arc::new(act);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let act = Arc::clone(&act);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                act(stream).await;
            });
        }
    });
    addr
}

/// Waits until the peer closes the connection.
async fn until_closed(mut s: tokio::net::TcpStream) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// Closes with a TCP reset instead of a clean close.
fn reset(s: tokio::net::TcpStream) {
    if let Ok(std) = s.into_std() {
        let _ = socket2::SockRef::from(&std).set_linger(Some(Duration::ZERO));
    }
}

async fn body_result(
    gw: &tessera::RunningGateway,
    path: &str,
) -> (StatusCode, Result<Bytes, String>, Duration) {
    let started = Instant::now();
    let uri: http::Uri = format!("http://{}{path}", gw.local_addr()).parse().unwrap();
    let response = client()
        .request(
            Request::get(uri)
                .body(http_body_util::Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| e.to_string());
    (status, body, started.elapsed())
}

#[tokio::test]
async fn upstream_faults_are_answered_in_time_and_leave_nothing_behind() {
    let dead = dead_address().await;
    let reset_early = raw_upstream(|s| async move { reset(s) }).await;
    let reset_midway = raw_upstream(|mut s| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nonly ten b")
            .await;
        reset(s);
    })
    .await;
    // Both keep the connection until the gateway hangs up, so every descriptor left open at the
    // end would be the gateway's.
    let stalled_body = raw_upstream(|mut s| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nstart")
            .await;
        until_closed(s).await;
    })
    .await;
    let slow = raw_upstream(until_closed).await;
    let failing = upstream(|_| async {
        Response::builder()
            .status(503)
            .body(full("upstream overloaded"))
            .unwrap()
    })
    .await;
    let good = upstream(|_| async { Response::new(full("good")) }).await;
    let flaky_ok = Arc::new(AtomicBool::new(false));
    let flaky = {
        let ok = Arc::clone(&flaky_ok);
        raw_upstream(move |mut s| {
            let ok = ok.load(Ordering::SeqCst);
            async move {
                if ok {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nflaky")
                        .await;
                } else {
                    reset(s);
                }
            }
        })
        .await
    };

    // A first gateway opens what a process opens once (e.g. wasmtime's /proc/self/pagemap
    // handle); the count after it is the baseline the fault run must come back to.
    let warm_up =
        gateway("[[routes]]\npath = \"/hello/{name}\"\nhandler = { plugin = \"hello\" }\n").await;
    assert_eq!(get(&warm_up, "/hello/x").await.status, StatusCode::OK);
    warm_up.shutdown().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fds_before = open_fds();

    let gw = gateway(&format!(
        "[upstreams.dead]\ntargets = [\"{dead}\"]\n\
         [upstreams.reset_early]\ntargets = [\"{reset_early}\"]\n\
         [upstreams.reset_midway]\ntargets = [\"{reset_midway}\"]\n\
         [upstreams.stalled]\ntargets = [\"{stalled_body}\"]\nread_timeout_ms = 300\n\
         [upstreams.slow]\ntargets = [\"{slow}\"]\nresponse_timeout_ms = 300\n\
         [upstreams.failing]\ntargets = [\"{failing}\"]\n\
         [upstreams.retrying]\ntargets = [\"{dead}\", \"{good}\"]\nretries = 1\nunhealthy_after_failures = 0\n\
         [upstreams.no_retry]\ntargets = [\"{dead}\", \"{good}\"]\nunhealthy_after_failures = 0\n\
         [upstreams.health]\ntargets = [\"{flaky}\", \"{good}\"]\nunhealthy_after_failures = 2\nunhealthy_cooldown_ms = 400\n\
         [[routes]]\npath = \"/dead\"\nupstream = \"dead\"\n\
         [[routes]]\npath = \"/reset-early\"\nupstream = \"reset_early\"\n\
         [[routes]]\npath = \"/reset-midway\"\nupstream = \"reset_midway\"\n\
         [[routes]]\npath = \"/stalled\"\nupstream = \"stalled\"\n\
         [[routes]]\npath = \"/slow\"\nupstream = \"slow\"\n\
         [[routes]]\npath = \"/failing\"\nupstream = \"failing\"\n\
         [[routes]]\npath = \"/retrying\"\nupstream = \"retrying\"\n\
         [[routes]]\npath = \"/no-retry\"\nupstream = \"no_retry\"\n\
         [[routes]]\npath = \"/health\"\nupstream = \"health\"\n"
    ))
    .await;

    let mut table = vec![
        "| fault | status | time |".to_owned(),
        "|---|---|---|".to_owned(),
    ];
    for round in 0..5 {
        for (path, expected, limit) in [
            ("/dead", StatusCode::BAD_GATEWAY, 2000),
            ("/reset-early", StatusCode::BAD_GATEWAY, 2000),
            ("/slow", StatusCode::GATEWAY_TIMEOUT, 1500),
            ("/failing", StatusCode::SERVICE_UNAVAILABLE, 1000),
        ] {
            let (status, body, took) = body_result(&gw, path).await;
            assert_eq!(status, expected, "{path}: {body:?}");
            assert!(took < Duration::from_millis(limit), "{path} took {took:?}");
            if path == "/failing" {
                assert_eq!(
                    body.as_deref().unwrap(),
                    b"upstream overloaded",
                    "5xx bodies pass through"
                );
            }
            if round == 0 {
                table.push(format!(
                    "| {path} | {} | {} ms |",
                    status.as_u16(),
                    took.as_millis()
                ));
            }
        }
        // Headers came, then the upstream broke off: the client sees the cut, not a made-up end.
        let (status, body, _) = body_result(&gw, "/reset-midway").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.is_err(), "a truncated body must not look complete");
        let (status, body, took) = body_result(&gw, "/stalled").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.is_err(), "a stalled body must be cut off");
        assert!(
            took < Duration::from_millis(1500),
            "stalled body cut after {took:?}"
        );
        if round == 0 {
            table.push("| /reset-midway | 200 + cut body | - |".to_owned());
            table.push(format!(
                "| /stalled (read_timeout 300 ms) | 200 + cut body | {} ms |",
                took.as_millis()
            ));
        }
    }

    // Retries: idempotent requests without a body find the good target; others are not retried.
    for _ in 0..10 {
        let (status, _, _) = body_result(&gw, "/retrying").await;
        assert_eq!(
            status,
            StatusCode::OK,
            "a GET should be retried on the other target"
        );
    }
    let mut post_failures = 0;
    let mut get_failures = 0;
    for _ in 0..10 {
        let reply = send(&gw, request(Method::POST, "/retrying", "payload")).await;
        if reply.status == StatusCode::BAD_GATEWAY {
            post_failures += 1;
        }
        if get(&gw, "/no-retry").await.status == StatusCode::BAD_GATEWAY {
            get_failures += 1;
        }
    }
    assert!(
        post_failures > 0,
        "a POST with a body must never be retried"
    );
    assert!(get_failures > 0, "without `retries` nothing is retried");

    // Passive health: two failures in a row take the flaky target out; after the cooldown, once
    // it answers again, it is back in rotation.
    let mut failures = 0;
    for _ in 0..12 {
        if get(&gw, "/health").await.status != StatusCode::OK {
            failures += 1;
        }
    }
    assert_eq!(
        failures, 2,
        "the flaky target should leave rotation after 2 failures"
    );
    flaky_ok.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut bodies = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let reply = get(&gw, "/health").await;
        assert_eq!(reply.status, StatusCode::OK);
        bodies.insert(reply.text());
    }
    assert!(
        bodies.contains("flaky") && bodies.contains("good"),
        "{bodies:?}"
    );

    gw.shutdown().await;
    // Connections close asynchronously once the gateway and its pools are gone.
    let mut fds_after = open_fds();
    for _ in 0..50 {
        if fds_after <= fds_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        fds_after = open_fds();
    }
    eprintln!("{}", table.join("\n"));
    eprintln!("file descriptors: {fds_before} before the gateway, {fds_after} after the fault run");
    assert!(
        fds_after <= fds_before,
        "file descriptors leaked: {fds_before} → {fds_after}"
    );
}
