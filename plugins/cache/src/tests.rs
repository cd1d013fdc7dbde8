use serde_json::json;
use tessera_sdk::testing::MockHost;

use super::*;

const T0: u64 = 1_767_225_600_000;

fn host(config: serde_json::Value) -> MockHost {
    MockHost::new().config(config).bucket("c")
}

/// One request through the filter at `now_ms`; `upstream` answers a miss. Returns the response
/// the client gets and whether the upstream was called.
fn exchange(
    host: &MockHost,
    request: Request,
    now_ms: u64,
    upstream: impl FnOnce() -> Response,
) -> (Response, bool) {
    let action = host.run(|| lookup(request, now_ms)).expect("lookup");
    match action {
        Action::Respond(r) => (r, false),
        Action::Continue(_) => {
            let response = host.run(|| store(upstream(), now_ms)).expect("store");
            (response, true)
        }
    }
}

fn ok(body: &str) -> Response {
    Response::text(200, body)
}

fn get(path: &str) -> Request {
    Request::new("GET", path)
}

#[test]
fn a_miss_is_stored_and_the_next_request_is_a_hit() {
    let host = host(json!({ "bucket": "c", "default_ttl_secs": 60 }));
    let (first, called) = exchange(&host, get("/a"), T0, || {
        ok("one")
            .with_header("set-cookie-not", "x")
            .with_header("connection", "close")
    });
    assert!(called);
    assert_eq!(first.header("x-cache"), Some("miss"));
    let (second, called) = exchange(&host, get("/a"), T0 + 5_500, || ok("two"));
    assert!(!called, "a fresh entry answers without the upstream");
    assert_eq!(second.header("x-cache"), Some("hit"));
    assert_eq!(second.header("age"), Some("5"));
    assert_eq!(second.text_body(), "one");
    assert_eq!(
        second.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(second.header("connection"), None);
}

#[test]
fn max_age_and_s_maxage_set_the_lifetime_and_expired_entries_are_replaced() {
    let host = host(json!({ "bucket": "c" }));
    fn fresh_for(cc: &'static str) -> impl FnOnce() -> Response {
        move || ok("v1").with_header("cache-control", cc)
    }
    exchange(&host, get("/a"), T0, fresh_for("public, max-age=10"));
    assert!(!exchange(&host, get("/a"), T0 + 9_999, || ok("x")).1);
    let (expired, called) = exchange(&host, get("/a"), T0 + 10_000, fresh_for("max-age=10"));
    assert!(called, "an expired entry is a miss");
    assert_eq!(expired.text_body(), "v1");
    // The expired entry was overwritten by the new response.
    let (hit, called) = exchange(&host, get("/a"), T0 + 19_000, || ok("x"));
    assert!(!called);
    assert_eq!(hit.header("age"), Some("9"));

    // s-maxage wins over max-age.
    exchange(&host, get("/s"), T0, fresh_for("max-age=1, s-maxage=100"));
    assert!(!exchange(&host, get("/s"), T0 + 50_000, || ok("x")).1);
}

#[test]
fn without_freshness_and_a_zero_default_nothing_is_stored() {
    let host = host(json!({ "bucket": "c" }));
    exchange(&host, get("/a"), T0, || ok("v"));
    assert!(exchange(&host, get("/a"), T0, || ok("v")).1);
}

#[test]
fn no_store_private_no_cache_and_set_cookie_are_not_stored() {
    let host = host(json!({ "bucket": "c", "default_ttl_secs": 60 }));
    for (path, header, value) in [
        ("/1", "cache-control", "no-store"),
        ("/2", "cache-control", "private, max-age=60"),
        ("/3", "cache-control", "no-cache"),
        ("/4", "set-cookie", "session=secret"),
        ("/5", "vary", "accept-language"),
        ("/6", "vary", "*"),
    ] {
        exchange(&host, get(path), T0, || ok("v").with_header(header, value));
        assert!(
            exchange(&host, get(path), T0, || ok("v")).1,
            "{header}: {value} must not be stored"
        );
    }
}

#[test]
fn cache_set_cookie_stores_the_response_without_the_cookie() {
    let host = host(json!({ "bucket": "c", "default_ttl_secs": 60, "cache_set_cookie": true }));
    let (first, _) = exchange(&host, get("/a"), T0, || {
        ok("v").with_header("set-cookie", "session=secret")
    });
    assert_eq!(first.header("set-cookie"), Some("session=secret"));
    let (hit, called) = exchange(&host, get("/a"), T0, || ok("x"));
    assert!(!called);
    assert_eq!(hit.header("set-cookie"), None);
}

#[test]
fn only_configured_statuses_and_sizes_are_stored() {
    let host = host(json!({
        "bucket": "c", "default_ttl_secs": 60, "statuses": [200, 404], "max_body_bytes": 4
    }));
    exchange(&host, get("/missing"), T0, || Response::text(404, "nope"));
    assert_eq!(
        exchange(&host, get("/missing"), T0, || ok("x")).0.status(),
        404
    );
    exchange(&host, get("/error"), T0, || Response::text(500, "oops"));
    assert!(exchange(&host, get("/error"), T0, || ok("x")).1);
    exchange(&host, get("/big"), T0, || ok("12345"));
    assert!(exchange(&host, get("/big"), T0, || ok("x")).1);
}

#[test]
fn a_body_the_filter_cannot_see_is_not_stored() {
    let host = host(json!({ "bucket": "c", "default_ttl_secs": 60 }));
    let (response, _) = exchange(&host, get("/a"), T0, || Response::new(200));
    assert_eq!(response.header("x-cache"), Some("miss"));
    assert!(exchange(&host, get("/a"), T0, || ok("x")).1);
    assert!(
        host.logs()
            .iter()
            .any(|l| l.message.contains("buffer_body")),
        "{:?}",
        host.logs()
    );
}

#[test]
fn query_and_vary_headers_separate_entries() {
    let host = host(json!({ "bucket": "c", "default_ttl_secs": 60, "vary": ["Accept-Language"] }));
    exchange(&host, get("/a?x=1"), T0, || ok("x1"));
    assert!(exchange(&host, get("/a?x=2"), T0, || ok("x2")).1);
    assert!(exchange(&host, get("/a"), T0, || ok("none")).1);
    assert_eq!(
        exchange(&host, get("/a?x=1"), T0, || ok("?")).0.text_body(),
        "x1"
    );
    assert_eq!(
        exchange(&host, get("/a"), T0, || ok("?")).0.text_body(),
        "none"
    );

    let lang = |l: &str| get("/l").with_header("accept-language", l);
    exchange(&host, lang("en"), T0, || {
        ok("hello").with_header("vary", "Accept-Language")
    });
    exchange(&host, lang("fr"), T0, || ok("bonjour"));
    assert_eq!(
        exchange(&host, lang("en"), T0, || ok("?")).0.text_body(),
        "hello"
    );
    assert_eq!(
        exchange(&host, lang("fr"), T0, || ok("?")).0.text_body(),
        "bonjour"
    );
    assert!(exchange(&host, get("/l"), T0, || ok("none")).1);
}

#[test]
fn head_reads_get_entries_but_never_stores() {
    let host = host(json!({ "bucket": "c", "default_ttl_secs": 60 }));
    exchange(&host, Request::new("HEAD", "/a"), T0, || {
        Response::new(200).with_body("")
    });
    assert!(exchange(&host, get("/a"), T0, || ok("body")).1);
    let (hit, called) = exchange(&host, Request::new("HEAD", "/a"), T0, || ok("x"));
    assert!(!called);
    assert_eq!(hit.header("x-cache"), Some("hit"));
}

#[test]
fn other_methods_pass_untouched() {
    let host = host(json!({ "bucket": "c", "default_ttl_secs": 60 }));
    let (response, called) = exchange(&host, Request::new("POST", "/a"), T0, || ok("v"));
    assert!(called);
    assert_eq!(response.header("x-cache"), None);
    assert!(exchange(&host, get("/a"), T0, || ok("v")).1);
}

#[test]
fn request_no_cache_revalidates_and_no_store_skips_the_cache() {
    let host = host(json!({ "bucket": "c", "default_ttl_secs": 60 }));
    exchange(&host, get("/a"), T0, || ok("old"));
    let refresh = get("/a").with_header("cache-control", "no-cache");
    let (fresh, called) = exchange(&host, refresh, T0, || ok("new"));
    assert!(called);
    assert_eq!(fresh.text_body(), "new");
    assert_eq!(
        exchange(&host, get("/a"), T0, || ok("?")).0.text_body(),
        "new"
    );
    let pragma = get("/a").with_header("pragma", "no-cache");
    assert!(exchange(&host, pragma, T0, || ok("newer")).1);

    let bypass = get("/b").with_header("cache-control", "no-store");
    let (response, _) = exchange(&host, bypass, T0, || ok("v"));
    assert_eq!(response.header("x-cache"), None);
    assert!(exchange(&host, get("/b"), T0, || ok("v")).1);
}

#[test]
fn authorized_requests_are_stored_only_when_the_response_says_public() {
    let host = host(json!({ "bucket": "c", "default_ttl_secs": 60 }));
    let authed = |p: &str| get(p).with_header("authorization", "Bearer t");
    exchange(&host, authed("/a"), T0, || ok("mine"));
    assert!(exchange(&host, get("/a"), T0, || ok("x")).1);
    exchange(&host, authed("/b"), T0, || {
        ok("everyone's").with_header("cache-control", "public, max-age=60")
    });
    assert!(!exchange(&host, get("/b"), T0, || ok("x")).1);
}

#[test]
fn a_failing_bucket_never_fails_the_request() {
    let host = host(json!({ "bucket": "c", "default_ttl_secs": 60 }));
    host.bucket_down("c", true);
    let (response, called) = exchange(&host, get("/a"), T0, || ok("v"));
    assert!(called);
    assert_eq!(
        (response.status(), response.header("x-cache")),
        (200, Some("miss"))
    );
    host.bucket_down("c", false);
    exchange(&host, get("/a"), T0, || ok("v"));
    assert!(!exchange(&host, get("/a"), T0, || ok("x")).1);
}

#[test]
fn a_malformed_entry_is_a_miss_and_is_replaced() {
    let host = host(json!({ "bucket": "c", "default_ttl_secs": 60 }));
    let key = host.run(|| cache_key(&Config::load().unwrap(), &get("/a")));
    let host = host.kv_insert("c", &key, "garbage");
    let (response, called) = exchange(&host, get("/a"), T0, || ok("v"));
    assert!(called);
    assert_eq!(response.text_body(), "v");
    assert!(!exchange(&host, get("/a"), T0, || ok("x")).1);
}

#[test]
fn keys_stay_short_for_long_requests() {
    let host = host(json!({ "bucket": "c", "default_ttl_secs": 60, "vary": ["x-long"] }));
    let long = get(&format!("/a?q={}", "x".repeat(5000))).with_header("x-long", "y".repeat(5000));
    exchange(&host, long.clone(), T0, || ok("v"));
    assert!(!exchange(&host, long, T0, || ok("x")).1);
}

#[test]
fn bad_config_is_a_500_naming_the_problem_in_the_log() {
    for (config, needle) in [
        (json!({ "bucket": "c", "statuses": [99] }), "statuses"),
        (
            json!({ "bucket": "c", "vary": ["bad header"] }),
            "bad header",
        ),
        (json!({ "bucket": "c", "ttl": 5 }), "ttl"),
        (json!({}), "bucket"),
    ] {
        let host = host(config);
        let action = host.on_request::<Cache>(get("/a"));
        let Action::Respond(response) = action else {
            panic!("{needle}: a bad config must answer");
        };
        assert_eq!(response.status(), 500);
        assert!(
            host.logs().iter().any(|l| l.message.contains(needle)),
            "{needle}: {:?}",
            host.logs()
        );
    }
}

#[test]
fn through_the_filter_trait() {
    let host = host(json!({ "bucket": "c", "default_ttl_secs": 60 }));
    assert!(matches!(
        host.on_request::<Cache>(get("/a")),
        Action::Continue(_)
    ));
    let response = host.on_response::<Cache>(ok("v"));
    assert_eq!(response.header("x-cache"), Some("miss"));
    let Action::Respond(hit) = host.on_request::<Cache>(get("/a")) else {
        panic!("the second request must be a hit");
    };
    assert_eq!(hit.text_body(), "v");
}
