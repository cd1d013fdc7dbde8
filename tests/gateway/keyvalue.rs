//! Shared state through `wasi:keyvalue`: memory and Redis buckets, grants, caps, TTL, eviction,
//! atomic counters and compare-and-swap, and a Redis that goes away and comes back.

use std::time::{Duration, Instant};

use http::StatusCode;
use tessera::RunningGateway;
use tessera_tests::*;

/// A `test-handler` route in a kv mode, granted `grants` (a TOML list body).
fn kv_route(path: &str, grants: &str, config: &str) -> String {
    format!(
        "[[routes]]\npath = \"{path}\"\nhandler = {{ plugin = \"test-handler\", buckets = [{grants}], config = {{ {config} }} }}\n"
    )
}

/// Routes for increment, get, set and compare-and-swap on bucket `b`, keyed by the path.
fn kv_routes(b: &str) -> String {
    [
        kv_route(
            "/incr/{key}",
            &format!("\"{b}\""),
            &format!("mode = \"kv-incr\", bucket = \"{b}\""),
        ),
        kv_route(
            "/get/{key}",
            &format!("\"{b}\""),
            &format!("mode = \"kv-get\", bucket = \"{b}\""),
        ),
        kv_route(
            "/set/{key}",
            &format!("\"{b}\""),
            &format!("mode = \"kv-set\", bucket = \"{b}\", value = \"v\""),
        ),
        kv_route(
            "/cas/{key}",
            &format!("\"{b}\""),
            &format!("mode = \"kv-cas\", bucket = \"{b}\""),
        ),
        kv_route(
            "/cas-race/{key}",
            &format!("\"{b}\""),
            &format!("mode = \"kv-cas\", bucket = \"{b}\", race = \"10\""),
        ),
    ]
    .concat()
}

async fn expect(gw: &RunningGateway, path: &str, status: StatusCode, body: &str) {
    let reply = get(gw, path).await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (status, body),
        "GET {path}"
    );
}

#[tokio::test]
async fn memory_counter_counts_across_requests_and_fresh_instances() {
    let gw = gateway(&format!(
        "[buckets.counters]\nbackend = \"memory\"\n{}",
        kv_routes("counters")
    ))
    .await;
    for n in 1..=5 {
        expect(&gw, "/incr/hits", StatusCode::OK, &n.to_string()).await;
    }
    expect(&gw, "/get/hits", StatusCode::OK, "5").await;
    expect(&gw, "/get/other", StatusCode::NOT_FOUND, "absent").await;
    gw.shutdown().await;
}

#[tokio::test]
async fn concurrent_increments_are_exact() {
    let gw = gateway(&format!(
        "[buckets.counters]\nbackend = \"memory\"\n{}",
        kv_routes("counters")
    ))
    .await;
    let replies = futures::future::join_all((0..200).map(|_| get(&gw, "/incr/hits"))).await;
    let mut counts: Vec<i64> = replies
        .iter()
        .map(|r| {
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
            r.text().parse().expect("a count")
        })
        .collect();
    counts.sort_unstable();
    assert_eq!(counts, (1..=200).collect::<Vec<i64>>(), "each count once");
    expect(&gw, "/get/hits", StatusCode::OK, "200").await;
    gw.shutdown().await;
}

#[tokio::test]
async fn only_granted_buckets_open_and_unknown_looks_the_same() {
    let routes = [
        kv_route("/granted", "\"a\"", "mode = \"kv-open\", bucket = \"a\""),
        kv_route("/ungranted", "\"a\"", "mode = \"kv-open\", bucket = \"b\""),
        kv_route("/unknown", "\"a\"", "mode = \"kv-open\", bucket = \"nope\""),
        kv_route("/none", "", "mode = \"kv-open\", bucket = \"a\""),
    ]
    .concat();
    let gw = gateway(&format!(
        "[buckets.a]\nbackend = \"memory\"\n[buckets.b]\nbackend = \"memory\"\n{routes}"
    ))
    .await;
    expect(&gw, "/granted", StatusCode::OK, "opened").await;
    for path in ["/ungranted", "/unknown", "/none"] {
        expect(&gw, path, StatusCode::INTERNAL_SERVER_ERROR, "AccessDenied").await;
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn oversized_values_keys_and_calls_are_refused() {
    let routes = [
        kv_route(
            "/value/{n}",
            "\"b\"",
            "mode = \"kv-set\", bucket = \"b\", key = \"k\", value_len = 101",
        ),
        kv_route(
            "/small",
            "\"b\"",
            "mode = \"kv-set\", bucket = \"b\", key = \"k\", value_len = 100",
        ),
        kv_route(
            "/key",
            "\"b\"",
            &format!(
                "mode = \"kv-set\", bucket = \"b\", key = \"{}\", value = \"v\"",
                "k".repeat(1025)
            ),
        ),
        // max_calls is 8 for test plugins: open + 8 increments is one too many.
        kv_route(
            "/ops",
            "\"b\"",
            "mode = \"kv-ops\", bucket = \"b\", key = \"n\", count = 8",
        ),
        kv_route(
            "/ops-ok",
            "\"b\"",
            "mode = \"kv-ops\", bucket = \"b\", key = \"m\", count = 7",
        ),
    ]
    .concat();
    let gw = gateway(&format!(
        "[buckets.b]\nbackend = \"memory\"\nmax_value_bytes = 100\n{routes}"
    ))
    .await;
    expect(&gw, "/small", StatusCode::OK, "ok").await;
    let big = get(&gw, "/value/1").await;
    assert_eq!(big.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        big.text().contains("max_value_bytes (100)"),
        "{}",
        big.text()
    );
    let key = get(&gw, "/key").await;
    assert_eq!(key.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(key.text().contains("longer than 1024"), "{}", key.text());
    let ops = get(&gw, "/ops").await;
    assert_eq!(ops.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(ops.text().contains("call limit"), "{}", ops.text());
    expect(&gw, "/ops-ok", StatusCode::OK, "7").await;
    gw.shutdown().await;
}

#[tokio::test]
async fn values_expire_after_the_ttl() {
    let gw = gateway(&format!(
        "[buckets.short]\nbackend = \"memory\"\nttl_ms = 300\n{}",
        kv_routes("short")
    ))
    .await;
    expect(&gw, "/set/k", StatusCode::OK, "ok").await;
    let written = Instant::now();
    expect(&gw, "/get/k", StatusCode::OK, "v").await;
    loop {
        let reply = get(&gw, "/get/k").await;
        if reply.status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(
            written.elapsed() < Duration::from_secs(5),
            "the value outlived its 300 ms TTL"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        written.elapsed() >= Duration::from_millis(300),
        "expired early"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_full_memory_bucket_evicts_the_least_recently_written() {
    let gw = gateway(&format!(
        "[buckets.small]\nbackend = \"memory\"\nmax_entries = 3\n{}",
        kv_routes("small")
    ))
    .await;
    for k in ["a", "b", "c"] {
        expect(&gw, &format!("/set/{k}"), StatusCode::OK, "ok").await;
    }
    expect(&gw, "/set/a", StatusCode::OK, "ok").await; // `b` is now the oldest write
    expect(&gw, "/set/d", StatusCode::OK, "ok").await;
    expect(&gw, "/get/b", StatusCode::NOT_FOUND, "absent").await;
    for k in ["a", "c", "d"] {
        expect(&gw, &format!("/get/{k}"), StatusCode::OK, "v").await;
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn compare_and_swap_retries_after_a_conflict() {
    let gw = gateway(&format!(
        "[buckets.b]\nbackend = \"memory\"\n{}",
        kv_routes("b")
    ))
    .await;
    expect(&gw, "/cas/n", StatusCode::OK, "1 after 1").await;
    expect(&gw, "/cas/n", StatusCode::OK, "2 after 1").await;
    // Another writer sets 10 between the read and the swap: the swap fails, the retry wins.
    expect(&gw, "/cas-race/n", StatusCode::OK, "11 after 2").await;
    expect(&gw, "/get/n", StatusCode::OK, "11").await;
    gw.shutdown().await;
}

#[tokio::test]
async fn batches_and_key_listing() {
    let routes = [
        kv_route(
            "/batch",
            "\"b\"",
            "mode = \"kv-batch\", bucket = \"b\", keys = [\"x\", \"y\", \"z\"]",
        ),
        kv_route("/list", "\"b\"", "mode = \"kv-list\", bucket = \"b\""),
    ]
    .concat();
    let gw = gateway(&format!("[buckets.b]\nbackend = \"memory\"\n{routes}")).await;
    let reply = get(&gw, "/batch").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.json(),
        serde_json::json!({ "values": ["x", "y", "z", null], "first_left": false })
    );
    expect(&gw, "/list", StatusCode::OK, r#"["y","z"]"#).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn bucket_settings_are_checked_at_load() {
    let cases = [
        ("[buckets.r]\nbackend = \"redis\"\n", "buckets.r.url"),
        (
            "[buckets.m]\nbackend = \"memory\"\nurl = \"redis://127.0.0.1\"\n",
            "buckets.m.url",
        ),
        (
            "[buckets.r]\nbackend = \"redis\"\nurl = \"http://127.0.0.1\"\n",
            "buckets.r.url",
        ),
        (
            "[buckets.m]\nbackend = \"memory\"\nmax_entries = 0\n",
            "buckets.m.max_entries",
        ),
        (
            "[buckets.m]\nbackend = \"memory\"\nttl_ms = 9223372036854775807\n",
            "buckets.m.ttl_ms",
        ),
        (
            "[buckets.m]\nbackend = \"memory\"\n[[routes]]\npath = \"/\"\nhandler = { plugin = \"h\", buckets = [\"m\", \"typo\"] }\n",
            "routes[0].handler.buckets",
        ),
    ];
    for (text, key) in cases {
        let text = format!("[plugins.files]\nh = \"h.wasm\"\n{text}");
        let err = tessera::config::Config::parse(
            &text,
            std::path::Path::new("t.toml"),
            std::path::Path::new("."),
        )
        .expect_err(key)
        .to_string();
        assert!(err.contains(key), "{err}");
        assert!(err.contains("t.toml:"), "names the line: {err}");
    }
}

/// `[buckets.shared]` on the Redis at `url`, with the kv routes.
fn redis_routes(url: &str, extra: &str) -> String {
    format!(
        "[buckets.shared]\nbackend = \"redis\"\nurl = \"{url}\"\ntimeout_ms = 250\n{extra}\n{}",
        kv_routes("shared")
    )
}

#[tokio::test]
async fn redis_counter_is_shared_by_two_gateways() {
    let redis = RedisServer::start();
    let one = gateway(&redis_routes(&redis.url(), "")).await;
    let two = gateway(&redis_routes(&redis.url(), "")).await;
    for n in 1..=6 {
        let gw = if n % 2 == 0 { &two } else { &one };
        expect(gw, "/incr/hits", StatusCode::OK, &n.to_string()).await;
    }
    let replies = futures::future::join_all(
        (0..100).map(|i| get(if i % 2 == 0 { &one } else { &two }, "/incr/hits")),
    )
    .await;
    assert!(replies.iter().all(|r| r.status == StatusCode::OK));
    expect(&one, "/get/hits", StatusCode::OK, "106").await;
    // Compare-and-swap sees the other writer on the server too.
    expect(&two, "/cas-race/n", StatusCode::OK, "11 after 2").await;
    expect(&one, "/get/n", StatusCode::OK, "11").await;
    one.shutdown().await;
    two.shutdown().await;
}

#[tokio::test]
async fn redis_keys_are_prefixed_listed_batched_and_expire() {
    let redis = RedisServer::start();
    let routes = [
        kv_route(
            "/batch",
            "\"shared\"",
            "mode = \"kv-batch\", bucket = \"shared\", keys = [\"x\", \"y\", \"z\"]",
        ),
        kv_route(
            "/list",
            "\"shared\"",
            "mode = \"kv-list\", bucket = \"shared\"",
        ),
        kv_route(
            "/other/set/{key}",
            "\"other\"",
            "mode = \"kv-set\", bucket = \"other\", value = \"o\"",
        ),
    ]
    .concat();
    let gw = gateway(&format!(
        "{}\n[buckets.other]\nbackend = \"redis\"\nurl = \"{}\"\n{routes}",
        redis_routes(&redis.url(), "ttl_ms = 400"),
        redis.url()
    ))
    .await;
    expect(&gw, "/other/set/elsewhere", StatusCode::OK, "ok").await;
    let reply = get(&gw, "/batch").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.json(),
        serde_json::json!({ "values": ["x", "y", "z", null], "first_left": false })
    );
    // Only this bucket's keys, without the prefix.
    expect(&gw, "/list", StatusCode::OK, r#"["y","z"]"#).await;
    let written = Instant::now();
    loop {
        let reply = get(&gw, "/list").await;
        if reply.text() == "[]" {
            break;
        }
        assert!(
            written.elapsed() < Duration::from_secs(5),
            "keys outlived their 400 ms TTL"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn redis_down_fails_fast_and_recovers_when_it_returns() {
    let mut redis = RedisServer::start();
    let gw = gateway(&redis_routes(&redis.url(), "")).await;
    expect(&gw, "/incr/hits", StatusCode::OK, "1").await;
    redis.kill();
    for _ in 0..3 {
        let started = Instant::now();
        let reply = get(&gw, "/incr/hits").await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            reply.text().starts_with("Other(\"redis bucket `shared`"),
            "{}",
            reply.text()
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a dead Redis cost {:?}",
            started.elapsed()
        );
    }
    redis.restart();
    let back = Instant::now();
    loop {
        let reply = get(&gw, "/incr/hits").await;
        if reply.status == StatusCode::OK {
            // The restarted server is empty.
            assert_eq!(reply.text(), "1");
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "no recovery after Redis came back: {}",
            reply.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    expect(&gw, "/incr/hits", StatusCode::OK, "2").await;
    gw.shutdown().await;
}

#[tokio::test]
async fn the_gateway_starts_while_redis_is_down() {
    let mut redis = RedisServer::start();
    redis.kill();
    let gw = gateway(&redis_routes(&redis.url(), "")).await;
    let reply = get(&gw, "/incr/hits").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.text().contains("cannot connect"), "{}", reply.text());
    redis.restart();
    expect(&gw, "/incr/hits", StatusCode::OK, "1").await;
    gw.shutdown().await;
}

#[tokio::test]
async fn memory_buckets_with_unchanged_settings_keep_their_data_across_reloads() {
    let dir = std::env::temp_dir().join(format!("tessera-kv-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tessera.toml");
    let text = |change: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[access_log]\nformat = \"off\"\n{}\n[buckets.keep]\nbackend = \"memory\"\n\
             [buckets.change]\nbackend = \"memory\"\n{change}\n{}{}",
            plugins_section(),
            kv_route(
                "/keep",
                "\"keep\"",
                "mode = \"kv-incr\", bucket = \"keep\", key = \"n\""
            ),
            kv_route(
                "/change",
                "\"change\"",
                "mode = \"kv-incr\", bucket = \"change\", key = \"n\""
            ),
        )
    };
    std::fs::write(&path, text("")).unwrap();
    let gw = tessera::Gateway::from_file(&path)
        .await
        .unwrap()
        .start()
        .await
        .unwrap();
    expect(&gw, "/keep", StatusCode::OK, "1").await;
    expect(&gw, "/change", StatusCode::OK, "1").await;
    std::fs::write(&path, text("max_entries = 5")).unwrap();
    gw.live().reload_config().await.expect("reload");
    expect(&gw, "/keep", StatusCode::OK, "2").await;
    expect(&gw, "/change", StatusCode::OK, "1").await;
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_forged_handle_traps_instead_of_reaching_another_bucket() {
    let routes = [
        kv_route(
            "/secret/set/{key}",
            "\"secret\"",
            "mode = \"kv-set\", bucket = \"secret\", value = \"s3cret\"",
        ),
        "[[routes]]\npath = \"/forge\"\nhandler = { plugin = \"hostile\", buckets = [\"b\"], config = { mode = \"forged-bucket\" } }\n".to_owned(),
        kv_route("/b/get/{key}", "\"b\"", "mode = \"kv-get\", bucket = \"b\""),
    ]
    .concat();
    let gw = gateway(&format!(
        "[buckets.secret]\nbackend = \"memory\"\n[buckets.b]\nbackend = \"memory\"\n{routes}"
    ))
    .await;
    expect(&gw, "/secret/set/k", StatusCode::OK, "ok").await;
    let reply = get(&gw, "/forge").await;
    assert_eq!(
        reply.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        reply.text()
    );
    assert!(reply.text().contains("plugin_failed"), "{}", reply.text());
    assert!(!reply.text().contains("s3cret"));
    // The gateway and the bucket go on serving.
    expect(&gw, "/b/get/k", StatusCode::NOT_FOUND, "absent").await;
    gw.shutdown().await;
}

#[tokio::test]
async fn a_stalled_redis_costs_at_most_the_timeout() {
    let redis = RedisServer::start();
    let gw = gateway(&redis_routes(&redis.url(), "")).await;
    expect(&gw, "/incr/hits", StatusCode::OK, "1").await;
    redis.freeze(true);
    for _ in 0..3 {
        let started = Instant::now();
        let reply = get(&gw, "/incr/hits").await;
        let took = started.elapsed();
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            reply.text().contains("no answer within 250 ms"),
            "{}",
            reply.text()
        );
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(2),
            "a stalled Redis cost {took:?}"
        );
    }
    redis.freeze(false);
    let back = Instant::now();
    loop {
        let reply = get(&gw, "/get/hits").await;
        if reply.status == StatusCode::OK {
            // The increments that timed out may or may not have reached the server.
            let n: i64 = reply.text().parse().expect("a count");
            assert!((1..=4).contains(&n), "{n}");
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(10), "{}", reply.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.shutdown().await;
}
