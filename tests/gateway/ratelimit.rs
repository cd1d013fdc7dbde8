//! The `rate-limit` filter through the real gateway: exact counting under concurrency, the 429
//! and its fields, keys, and Redis shared by two gateways, gone and back.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use tessera_tests::*;

/// An upstream answering 200 `ok` that counts its calls.
async fn counting_upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let addr = upstream(move |_| {
        seen.fetch_add(1, Ordering::SeqCst);
        async { Response::new(full("ok")) }
    })
    .await;
    (addr, calls)
}

/// A route `path` to upstream `up` behind the rate-limit filter with `config` (TOML inline
/// table body), counting in bucket `bucket`.
fn limited_route(path: &str, bucket: &str, config: &str) -> String {
    format!(
        "[[routes]]\npath = \"{path}\"\nupstream = \"up\"\n\
         [[routes.filters]]\nplugin = \"rate-limit\"\nbuckets = [\"{bucket}\"]\n\
         config = {{ bucket = \"{bucket}\", {config} }}\n"
    )
}

fn keyed(path: &str, key: &str) -> Request<http_body_util::Full<bytes::Bytes>> {
    Request::get(path)
        .header("x-api-key", key)
        .body(Default::default())
        .unwrap()
}

// Windows of a year (aligned to the Unix epoch): a test never straddles two.
const YEAR: u64 = 31_536_000;

#[tokio::test]
async fn exactly_the_limit_passes_under_concurrency_and_the_rest_get_429() {
    let (up, calls) = counting_upstream().await;
    let gw = gateway(&format!(
        "[upstreams.up]\ntargets = [\"{up}\"]\n[buckets.rl]\nbackend = \"memory\"\n{}",
        limited_route(
            "/api",
            "rl",
            &format!("limit = 7, window_secs = {YEAR}, key = []")
        )
    ))
    .await;
    let replies = futures::future::join_all((0..40).map(|_| get(&gw, "/api"))).await;
    let allowed: Vec<_> = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .collect();
    let limited: Vec<_> = replies
        .iter()
        .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!((allowed.len(), limited.len()), (7, 33));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        7,
        "refused requests never reach the upstream"
    );
    let mut remaining: Vec<u64> = allowed
        .iter()
        .map(|r| r.header("ratelimit-remaining").unwrap().parse().unwrap())
        .collect();
    remaining.sort_unstable();
    assert_eq!(remaining, [0, 1, 2, 3, 4, 5, 6]);
    for reply in limited {
        let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=YEAR).contains(&retry), "retry-after {retry}");
        assert_eq!(reply.header("ratelimit-limit"), Some("7"));
        assert_eq!(reply.header("ratelimit-remaining"), Some("0"));
        assert_eq!(
            reply.header("ratelimit-reset"),
            Some(retry.to_string().as_str())
        );
        assert_eq!(
            reply.header("ratelimit-policy"),
            Some(format!("\"default\";q=7;w={YEAR}").as_str())
        );
        assert_eq!(reply.json()["error"], "too_many_requests");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn api_keys_are_limited_apart_and_a_missing_key_can_be_refused() {
    let (up, _) = counting_upstream().await;
    let gw = gateway(&format!(
        "[upstreams.up]\ntargets = [\"{up}\"]\n[buckets.rl]\nbackend = \"memory\"\n{}",
        limited_route(
            "/api",
            "rl",
            &format!(
                "limit = 2, window_secs = {YEAR}, algorithm = \"sliding\", key = [\"header:x-api-key\"], missing = \"reject\""
            )
        )
    ))
    .await;
    for _ in 0..2 {
        assert_eq!(
            send(&gw, keyed("/api", "alice")).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        send(&gw, keyed("/api", "alice")).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(send(&gw, keyed("/api", "bob")).await.status, StatusCode::OK);
    let reply = get(&gw, "/api").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.text().contains("x-api-key"), "{}", reply.text());
    gw.shutdown().await;
}

fn redis_config(up: std::net::SocketAddr, url: &str) -> String {
    format!(
        "[upstreams.up]\ntargets = [\"{up}\"]\n\
         [buckets.shared]\nbackend = \"redis\"\nurl = \"{url}\"\ntimeout_ms = 250\n{}{}",
        limited_route(
            "/open",
            "shared",
            &format!("limit = 3, window_secs = {YEAR}, key = [], fail = \"open\"")
        ),
        limited_route(
            "/closed",
            "shared",
            &format!("limit = 3, window_secs = {YEAR}, key = [], fail = \"closed\"")
        ),
    )
}

#[tokio::test]
async fn two_gateways_sharing_redis_enforce_one_limit() {
    let redis = RedisServer::start();
    let (up, calls) = counting_upstream().await;
    let one = gateway(&redis_config(up, &redis.url())).await;
    let two = gateway(&redis_config(up, &redis.url())).await;
    let replies = futures::future::join_all(
        (0..12).map(|i| get(if i % 2 == 0 { &one } else { &two }, "/open")),
    )
    .await;
    let allowed = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    let limited = replies
        .iter()
        .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((allowed, limited), (3, 9));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // Either gateway now refuses.
    assert_eq!(
        get(&one, "/open").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        get(&two, "/open").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    one.shutdown().await;
    two.shutdown().await;
}

#[tokio::test]
async fn redis_down_applies_the_fail_policy_quickly_and_counting_resumes() {
    let mut redis = RedisServer::start();
    let (up, _) = counting_upstream().await;
    let gw = gateway(&redis_config(up, &redis.url())).await;
    assert_eq!(get(&gw, "/open").await.status, StatusCode::OK);
    redis.kill();
    for _ in 0..5 {
        let started = Instant::now();
        let open = get(&gw, "/open").await;
        assert_eq!(
            open.status,
            StatusCode::OK,
            "fail open lets requests through"
        );
        let closed = get(&gw, "/closed").await;
        assert_eq!(
            closed.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            closed.text()
        );
        assert_eq!(closed.header("retry-after"), Some("1"));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "a down Redis costs at most its timeout: {:?}",
            started.elapsed()
        );
    }
    redis.restart();
    // The restarted Redis is empty: once the bucket reconnects, each route counts from zero.
    let back = Instant::now();
    loop {
        let reply = get(&gw, "/closed").await;
        if reply.status == StatusCode::OK {
            break;
        }
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "no recovery after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut statuses = Vec::new();
    for path in [
        "/closed", "/closed", "/closed", "/open", "/open", "/open", "/open",
    ] {
        statuses.push(get(&gw, path).await.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 429, 200, 200, 200, 429]);
    gw.shutdown().await;
}
