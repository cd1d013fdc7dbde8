//! Plugin routes: handlers, filters around proxy and handler routes, failures contained.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tessera_tests::*;

/// An upstream that echoes the request's path and headers as JSON.
async fn echo_upstream() -> std::net::SocketAddr {
    upstream(|req| async move {
        let headers: serde_json::Map<String, serde_json::Value> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
            .collect();
        let path = req.uri().path().to_owned();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let echo = serde_json::json!({ "path": path, "headers": headers, "body": String::from_utf8_lossy(&body) });
        Response::builder()
            .header("server", "echo")
            .body(full(echo.to_string()))
            .unwrap()
    })
    .await
}

#[tokio::test]
async fn handler_plugin_answers_with_params_config_and_request_id() {
    // A request id is kept when it comes from a trusted proxy.
    let gw = gateway_with(
        "trusted_proxies = [\"127.0.0.1\"]\n",
        "[[routes]]\npath = \"/hello/{name}\"\nhandler = { plugin = \"hello\", config = { greeting = \"Hej\" } }\n",
    )
    .await;
    let reply = send(
        &gw,
        Request::get("/hello/ada%20l")
            .header("x-request-id", "req-42")
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let json = reply.json();
    assert_eq!(json["message"], "Hej, ada l!");
    assert_eq!(json["request_id"], "req-42");
    assert_eq!(json["route"], "/hello/{name}");
    assert_eq!(reply.header("x-request-id"), Some("req-42"));
    gw.shutdown().await;
}

#[tokio::test]
async fn handler_sees_method_query_headers_and_body() {
    let gw = gateway(
        "[[routes]]\npath = \"/echo/{a}/{*rest}\"\nhandler = { plugin = \"test-handler\" }\n",
    )
    .await;
    let request = Request::builder()
        .method(Method::POST)
        .uri("/echo/one/two/three?x=1")
        .header("x-thing", "v")
        .body(http_body_util::Full::new(Bytes::from_static(b"12345")))
        .unwrap();
    let json = send(&gw, request).await.json();
    assert_eq!(json["method"], "POST");
    assert_eq!(json["path"], "/echo/one/two/three");
    assert_eq!(json["query"], "x=1");
    assert_eq!(
        json["params"],
        serde_json::json!([["a", "one"], ["rest", "two/three"]])
    );
    assert_eq!(json["body_len"], 5);
    assert_eq!(json["client"], "127.0.0.1");
    assert!(
        json["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h[0] == "x-thing" && h[1] == "v")
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn filters_rewrite_requests_and_responses_around_a_proxy() {
    let up = echo_upstream().await;
    let gw = gateway(&format!(
        "[upstreams.echo]\ntargets = [\"{up}\"]\n\
         [[routes]]\npath = \"/users/{{id}}\"\nupstream = \"echo\"\n\
         [[routes.filters]]\nplugin = \"headers\"\n\
         config.request = {{ set = {{ x-api-version = \"2\" }}, remove = [\"cookie\"] }}\n\
         config.response = {{ set = {{ server = \"tessera\" }}, add = {{ cache-control = \"no-store\" }} }}\n\
         [[routes.filters]]\nplugin = \"test-filter\"\nconfig = {{ prefix = \"/v2\" }}\n"
    ))
    .await;
    let request = Request::get("/users/7")
        .header("cookie", "secret")
        .body(Default::default())
        .unwrap();
    let reply = send(&gw, request).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("server"), Some("tessera"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let echo = reply.json();
    assert_eq!(echo["path"], "/v2/users/7");
    assert_eq!(echo["headers"]["x-api-version"], "2");
    assert!(echo["headers"].get("cookie").is_none());
    gw.shutdown().await;
}

#[tokio::test]
async fn filters_run_in_order_in_and_reverse_order_out() {
    let gw = gateway(
        "[[routes]]\npath = \"/t\"\nhandler = { plugin = \"test-handler\" }\n\
         [[routes.filters]]\nplugin = \"test-filter\"\nconfig = { tag = \"a\" }\n\
         [[routes.filters]]\nplugin = \"test-filter\"\nconfig = { tag = \"b\" }\n",
    )
    .await;
    let reply = get(&gw, "/t").await;
    let seen: Vec<String> = reply.json()["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0] == "x-trace")
        .map(|h| h[1].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(seen, ["in:a", "in:b"]);
    let out: Vec<&str> = reply
        .headers
        .get_all("x-trace")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(out, ["out:b", "out:a"]);
    gw.shutdown().await;
}

#[tokio::test]
async fn filter_can_answer_early_and_the_target_is_never_called() {
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&calls);
    let up = upstream(move |_| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { Response::new(full("secret data")) }
    })
    .await;
    let gw = gateway(&format!(
        "[upstreams.u]\ntargets = [\"{up}\"]\n[[routes]]\npath = \"/private\"\nupstream = \"u\"\n\
         [[routes.filters]]\nplugin = \"test-filter\"\nconfig = {{ deny_without = \"x-api-key\" }}\n"
    ))
    .await;
    let reply = get(&gw, "/private").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.text(), "missing x-api-key\n");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);

    let reply = send(
        &gw,
        Request::get("/private")
            .header("x-api-key", "k")
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.text(), "secret data");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn filter_with_buffered_body_rewrites_the_response_body() {
    let up = upstream(|_| async {
        Response::builder()
            .header("content-length", "5")
            .body(full("hello"))
            .unwrap()
    })
    .await;
    let gw = gateway(&format!(
        "[upstreams.u]\ntargets = [\"{up}\"]\n[[routes]]\npath = \"/\"\nupstream = \"u\"\n\
         [[routes.filters]]\nplugin = \"test-filter\"\nbuffer_body = true\nconfig = {{ upper_body = true }}\n"
    ))
    .await;
    let reply = get(&gw, "/").await;
    assert_eq!(reply.text(), "HELLO");
    gw.shutdown().await;
}

#[tokio::test]
async fn panicking_plugin_is_a_500_and_the_next_request_succeeds() {
    let gw = gateway(
        "[[routes]]\npath = \"/panic\"\nhandler = { plugin = \"test-handler\", config = { mode = \"panic\" } }\n\
         [[routes]]\npath = \"/panic-filter\"\nhandler = { plugin = \"hello\" }\n\
         [[routes.filters]]\nplugin = \"test-filter\"\nconfig = { panic = \"response\" }\n\
         [[routes]]\npath = \"/hello/{name}\"\nhandler = { plugin = \"hello\" }\n",
    )
    .await;
    for _ in 0..3 {
        let reply = get(&gw, "/panic").await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        let json = reply.json();
        assert_eq!(json["error"], "plugin_failed");
        assert_eq!(json["request_id"], reply.header("x-request-id").unwrap());
        assert!(
            !reply.text().contains("panicked"),
            "trap detail leaked: {}",
            reply.text()
        );

        let reply = get(&gw, "/panic-filter").await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);

        let reply = get(&gw, "/hello/ok").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn runaway_plugins_are_stopped_by_deadline_and_memory_cap() {
    let gw = gateway(
        "[[routes]]\npath = \"/loop\"\nhandler = { plugin = \"test-handler\", config = { mode = \"loop\" } }\n\
         [[routes]]\npath = \"/alloc\"\nhandler = { plugin = \"test-handler\", config = { mode = \"alloc\" } }\n\
         [[routes]]\npath = \"/hello/{name}\"\nhandler = { plugin = \"hello\" }\n",
    )
    .await;
    let started = Instant::now();
    let reply = get(&gw, "/loop").await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(reply.json()["error"], "plugin_timeout");
    // The test config gives plugins 2 s.
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "deadline took {:?}",
        started.elapsed()
    );

    let reply = get(&gw, "/alloc").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(get(&gw, "/hello/x").await.status, StatusCode::OK);
    gw.shutdown().await;
}

#[tokio::test]
async fn invalid_plugin_output_is_refused() {
    let gw = gateway("[[routes]]\npath = \"/\"\nhandler = { plugin = \"test-handler\", config = { mode = \"bad-header\" } }\n").await;
    let reply = get(&gw, "/").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.header("x-evil").is_none());
    assert!(reply.header("set-cookie").is_none());
    gw.shutdown().await;
}

#[tokio::test]
async fn handler_calls_granted_upstreams_only() {
    let up = upstream(|req| async move { Response::new(full(format!("users saw {}", req.uri()))) })
        .await;
    let gw = gateway(&format!(
        "[upstreams.users]\ntargets = [\"{up}\"]\n[upstreams.other]\ntargets = [\"{up}\"]\n\
         [[routes]]\npath = \"/ok\"\nhandler = {{ plugin = \"test-handler\", upstreams = [\"users\"], config = {{ mode = \"call\", url = \"http://users/users/42?x=1\" }} }}\n\
         [[routes]]\npath = \"/denied\"\nhandler = {{ plugin = \"test-handler\", upstreams = [\"users\"], config = {{ mode = \"call\", url = \"http://other/\" }} }}\n\
         [[routes]]\npath = \"/absolute\"\nhandler = {{ plugin = \"test-handler\", upstreams = [\"users\"], config = {{ mode = \"call\", url = \"http://{up}/\" }} }}\n"
    ))
    .await;
    let json = get(&gw, "/ok").await.json();
    assert_eq!(json["status"], 200);
    assert_eq!(json["body"], "users saw /users/42?x=1");
    let json = get(&gw, "/denied").await.json();
    assert!(
        json["error"].as_str().unwrap().starts_with("Denied"),
        "{json}"
    );
    let json = get(&gw, "/absolute").await.json();
    assert!(
        json["error"].as_str().unwrap().starts_with("Denied"),
        "{json}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn plugin_stdout_does_not_break_the_request() {
    let gw = gateway("[[routes]]\npath = \"/\"\nhandler = { plugin = \"test-handler\", config = { mode = \"print\" } }\n").await;
    let reply = get(&gw, "/").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "printed");
    gw.shutdown().await;
}

/// `instances = "reuse"`: guest memory survives from one request to the next (the trade-off the
/// entry opted into); a failure discards the instance; per-request instances never share state.
#[tokio::test]
async fn reused_instances_keep_guest_memory_and_fresh_ones_never_do() {
    let gw = gateway(
        "[[routes]]\npath = \"/fresh\"\nhandler = { plugin = \"test-handler\", config = { mode = \"counter\" } }\n\
         [[routes]]\npath = \"/reused\"\nhandler = { plugin = \"test-handler\", instances = \"reuse\", config = { mode = \"counter\" } }\n\
         [[routes]]\npath = \"/fragile\"\nhandler = { plugin = \"test-handler\", instances = \"reuse\", config = { mode = \"counter\", panic_at = 3 } }\n",
    )
    .await;
    let mut fresh = Vec::new();
    let mut reused = Vec::new();
    for _ in 0..4 {
        fresh.push(get(&gw, "/fresh").await.text());
        reused.push(get(&gw, "/reused").await.text());
    }
    assert_eq!(
        fresh,
        ["1", "1", "1", "1"],
        "per-request instances share nothing"
    );
    assert_eq!(
        reused,
        ["1", "2", "3", "4"],
        "one instance served them in turn"
    );

    // The third request traps; the instance is discarded and the next starts from scratch.
    let statuses: Vec<(StatusCode, String)> = {
        let mut out = Vec::new();
        for _ in 0..4 {
            let r = get(&gw, "/fragile").await;
            out.push((r.status, r.text()));
        }
        out
    };
    assert_eq!(statuses[0], (StatusCode::OK, "1".to_owned()));
    assert_eq!(statuses[1], (StatusCode::OK, "2".to_owned()));
    assert_eq!(statuses[2].0, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        statuses[3],
        (StatusCode::OK, "1".to_owned()),
        "{statuses:?}"
    );
    // Reuse never crosses route entries: /reused kept its own count.
    assert_eq!(get(&gw, "/reused").await.text(), "5");
    gw.shutdown().await;
}

/// The same for a filter: its instance serves both phases of a request, then goes back to the
/// entry's pool.
#[tokio::test]
async fn reused_filter_instances_serve_request_after_request() {
    let up = upstream(|_| async { Response::new(full("ok")) }).await;
    let gw = gateway(&format!(
        "[upstreams.u]\ntargets = [\"{up}\"]\n\
         [[routes]]\npath = \"/fresh\"\nupstream = \"u\"\nfilters = [{{ plugin = \"test-filter\", config = {{ count = true }} }}]\n\
         [[routes]]\npath = \"/reused\"\nupstream = \"u\"\nfilters = [{{ plugin = \"test-filter\", instances = \"reuse\", config = {{ count = true }} }}]\n"
    ))
    .await;
    let mut fresh = Vec::new();
    let mut reused = Vec::new();
    for _ in 0..3 {
        fresh.push(
            get(&gw, "/fresh")
                .await
                .header("x-count")
                .map(str::to_owned),
        );
        reused.push(
            get(&gw, "/reused")
                .await
                .header("x-count")
                .map(str::to_owned),
        );
    }
    let some = |v: &[&str]| v.iter().map(|s| Some((*s).to_owned())).collect::<Vec<_>>();
    assert_eq!(fresh, some(&["1", "1", "1"]));
    assert_eq!(reused, some(&["1", "2", "3"]));
    gw.shutdown().await;
}

#[tokio::test]
async fn plugins_see_the_client_address_the_gateway_trusts() {
    let routes = "[[routes]]\npath = \"/echo\"\nhandler = { plugin = \"test-handler\" }\n";
    let forwarded = || {
        Request::builder()
            .uri("/echo")
            .header("x-forwarded-for", "198.51.100.4")
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap()
    };
    // A client's own forwarded header is not believed ...
    let direct = gateway(routes).await;
    assert_eq!(
        send(&direct, forwarded()).await.json()["client"],
        "127.0.0.1"
    );
    // ... a trusted proxy's is.
    let proxied = gateway_with("trusted_proxies = [\"127.0.0.1/32\"]\n", routes).await;
    assert_eq!(
        send(&proxied, forwarded()).await.json()["client"],
        "198.51.100.4"
    );
}
