//! The `cache` filter through the real gateway: a miss stored and served as a hit without the
//! upstream, `cache-control`, `set-cookie`, expiry, `vary`, the query, `HEAD`, and a handler.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use tessera_tests::*;

/// An upstream whose answer depends on the path, with the number of its calls in the body.
async fn origin() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let addr = upstream(move |request| {
        let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
        let lang = request
            .headers()
            .get("accept-language")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        let path = request.uri().path().to_owned();
        async move {
            let builder = Response::builder().header("content-type", "text/plain");
            let builder = match path.as_str() {
                "/fresh" => builder.header("cache-control", "max-age=60"),
                "/short" => builder.header("cache-control", "max-age=1"),
                "/no-store" => builder.header("cache-control", "no-store"),
                "/private" => builder.header("cache-control", "private, max-age=60"),
                "/cookie" => builder
                    .header("cache-control", "max-age=60")
                    .header("set-cookie", "session=secret"),
                "/lang" => builder
                    .header("cache-control", "max-age=60")
                    .header("vary", "accept-language"),
                _ => builder,
            };
            let body = if path == "/lang" {
                format!("{lang} {n}")
            } else {
                format!("call {n}")
            };
            builder.body(full(body)).unwrap()
        }
    })
    .await;
    (addr, calls)
}

async fn cached_gateway(up: std::net::SocketAddr) -> tessera::RunningGateway {
    gateway(&format!(
        "[upstreams.up]\ntargets = [\"{up}\"]\n[buckets.cache]\nbackend = \"memory\"\n\
         [[routes]]\npath = \"/{{*rest}}\"\nupstream = \"up\"\n\
         [[routes.filters]]\nplugin = \"cache\"\nbuckets = [\"cache\"]\nbuffer_body = true\n\
         config = {{ bucket = \"cache\", vary = [\"accept-language\"] }}\n"
    ))
    .await
}

#[tokio::test]
async fn a_miss_is_stored_and_then_served_without_the_upstream() {
    let (up, calls) = origin().await;
    let gw = cached_gateway(up).await;
    let first = get(&gw, "/fresh").await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(
        (first.header("x-cache"), first.text().as_str()),
        (Some("miss"), "call 1")
    );
    let second = get(&gw, "/fresh").await;
    assert_eq!(
        (second.header("x-cache"), second.text().as_str()),
        (Some("hit"), "call 1")
    );
    assert_eq!(second.header("content-type"), Some("text/plain"));
    assert_eq!(second.header("cache-control"), Some("max-age=60"));
    let age: u64 = second.header("age").unwrap().parse().unwrap();
    assert!(age <= 60, "age {age}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the hit never reached the upstream"
    );

    // HEAD is answered from the GET entry, without a body.
    let head = send(&gw, request(Method::HEAD, "/fresh", "")).await;
    assert_eq!(
        (head.status, head.header("x-cache")),
        (StatusCode::OK, Some("hit"))
    );
    assert!(head.body.is_empty());
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Another query is another entry.
    assert_eq!(get(&gw, "/fresh?page=2").await.text(), "call 2");
    assert_eq!(get(&gw, "/fresh?page=2").await.text(), "call 2");
    assert_eq!(get(&gw, "/fresh").await.text(), "call 1");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn no_store_private_set_cookie_and_no_freshness_are_never_stored() {
    let (up, calls) = origin().await;
    let gw = cached_gateway(up).await;
    for path in ["/no-store", "/private", "/cookie", "/plain"] {
        let before = calls.load(Ordering::SeqCst);
        for _ in 0..2 {
            let reply = get(&gw, path).await;
            assert_eq!(reply.header("x-cache"), Some("miss"), "{path}");
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            before + 2,
            "{path} was cached"
        );
    }
    let reply = get(&gw, "/cookie").await;
    assert_eq!(reply.header("set-cookie"), Some("session=secret"));
    gw.shutdown().await;
}

#[tokio::test]
async fn an_entry_expires_after_max_age() {
    let (up, calls) = origin().await;
    let gw = cached_gateway(up).await;
    assert_eq!(get(&gw, "/short").await.header("x-cache"), Some("miss"));
    // Generous: the entry is fresh for 1 s; a slow machine may already see it stale.
    let again = get(&gw, "/short").await;
    let stored_calls = calls.load(Ordering::SeqCst);
    assert!(again.header("x-cache") == Some("hit") || stored_calls == 2);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let later = get(&gw, "/short").await;
    assert_eq!(later.header("x-cache"), Some("miss"));
    assert_eq!(later.text(), format!("call {}", stored_calls + 1));
    gw.shutdown().await;
}

#[tokio::test]
async fn vary_headers_keep_entries_apart() {
    let (up, calls) = origin().await;
    let gw = cached_gateway(up).await;
    let lang = |l: &str| {
        Request::get("/lang")
            .header("accept-language", l)
            .body(Default::default())
            .unwrap()
    };
    assert_eq!(send(&gw, lang("en")).await.text(), "en 1");
    assert_eq!(send(&gw, lang("fr")).await.text(), "fr 2");
    let en = send(&gw, lang("en")).await;
    assert_eq!(
        (en.header("x-cache"), en.text().as_str()),
        (Some("hit"), "en 1")
    );
    let fr = send(&gw, lang("fr")).await;
    assert_eq!(
        (fr.header("x-cache"), fr.text().as_str()),
        (Some("hit"), "fr 2")
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_handler_target_is_cached_too() {
    let gw = gateway(
        "[buckets.cache]\nbackend = \"memory\"\n\
         [[routes]]\npath = \"/hello/{name}\"\nhandler = { plugin = \"hello\", config = { greeting = \"Hello\" } }\n\
         [[routes.filters]]\nplugin = \"cache\"\nbuckets = [\"cache\"]\nbuffer_body = true\n\
         config = { bucket = \"cache\", default_ttl_secs = 60 }\n",
    )
    .await;
    let first = get(&gw, "/hello/ada").await;
    assert_eq!(
        (first.status, first.header("x-cache")),
        (StatusCode::OK, Some("miss"))
    );
    let second = get(&gw, "/hello/ada").await;
    assert_eq!(second.header("x-cache"), Some("hit"));
    assert_eq!(second.body, first.body);
    assert_eq!(get(&gw, "/hello/bob").await.header("x-cache"), Some("miss"));
    gw.shutdown().await;
}
