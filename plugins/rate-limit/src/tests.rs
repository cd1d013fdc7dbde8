use serde_json::json;
use tessera_sdk::testing::MockHost;

use super::*;

/// 2026-01-01T00:00:00Z, a multiple of every window the tests use.
const T0: u64 = 1_767_225_600_000;

fn host(config: serde_json::Value) -> MockHost {
    MockHost::new()
        .config(config)
        .bucket("rl")
        .route("/api/{id}")
}

/// Runs `on_request` at `now_ms`: `Ok` the request passed on, `Err` the answer.
fn at(host: &MockHost, request: Request, now_ms: u64) -> Result<Request, Response> {
    let action = host.run(|| {
        limit_request(request, now_ms).unwrap_or_else(|e| Action::Respond(e.into_response()))
    });
    match action {
        Action::Continue(r) => Ok(r),
        Action::Respond(r) => Err(r),
    }
}

fn get() -> Request {
    Request::new("GET", "/api/1")
}

fn keyed(key: &str) -> Request {
    get().with_header("x-api-key", key)
}

#[test]
fn exactly_limit_requests_pass_then_429_with_headers() {
    let host = host(json!({ "bucket": "rl", "limit": 3, "window_secs": 60, "key": [] }));
    for remaining in ["2", "1", "0"] {
        at(&host, get(), T0 + 10_000).expect("within the limit");
        let response = host.run(|| annotate_response(Response::new(200)));
        assert_eq!(response.header("ratelimit-remaining"), Some(remaining));
        assert_eq!(response.header("ratelimit-limit"), Some("3"));
        assert_eq!(response.header("ratelimit-reset"), Some("50"));
    }
    let refused = at(&host, get(), T0 + 10_000).expect_err("over the limit");
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.header("retry-after"), Some("50"));
    assert_eq!(refused.header("ratelimit-remaining"), Some("0"));
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some("\"default\";q=3;w=60")
    );
    assert_eq!(refused.header("ratelimit"), Some("\"default\";r=0;t=50"));
    let body: serde_json::Value = serde_json::from_slice(refused.body().unwrap()).unwrap();
    assert_eq!(body["error"], "too_many_requests");
}

#[test]
fn a_new_fixed_window_starts_from_zero() {
    let host = host(json!({ "bucket": "rl", "limit": 2, "window_secs": 10, "key": [] }));
    at(&host, get(), T0 + 8_000).unwrap();
    at(&host, get(), T0 + 9_000).unwrap();
    let refused = at(&host, get(), T0 + 9_999).unwrap_err();
    assert_eq!(refused.header("retry-after"), Some("1"));
    // The fixed window lets a burst through at its edge: two more right after it.
    at(&host, get(), T0 + 10_000).expect("new window");
    at(&host, get(), T0 + 10_001).expect("new window");
    assert_eq!(at(&host, get(), T0 + 10_002).unwrap_err().status(), 429);
}

#[test]
fn keys_are_counted_apart() {
    let host = host(json!({
        "bucket": "rl", "limit": 1, "window_secs": 60, "key": ["header:X-Api-Key", "param:id"]
    }))
    .param("id", "7");
    at(&host, keyed("alice"), T0).unwrap();
    assert_eq!(at(&host, keyed("alice"), T0).unwrap_err().status(), 429);
    at(&host, keyed("bob"), T0).expect("another key has its own counter");
    // Another route (scope) counts apart too.
    let other = host.clone().route("/other");
    at(&other, keyed("alice"), T0).expect("another route has its own counter");
}

#[test]
fn a_shared_scope_shares_counters_across_routes() {
    let config =
        json!({ "bucket": "rl", "limit": 1, "window_secs": 60, "key": [], "scope": "api" });
    let one = host(config.clone());
    at(&one, get(), T0).unwrap();
    let two = one.clone().route("/elsewhere");
    assert_eq!(at(&two, get(), T0).unwrap_err().status(), 429);
}

#[test]
fn a_missing_header_is_empty_or_rejected() {
    let shared = host(json!({
        "bucket": "rl", "limit": 1, "window_secs": 60, "key": ["header:x-api-key"]
    }));
    at(&shared, get(), T0).unwrap();
    assert_eq!(at(&shared, get(), T0).unwrap_err().status(), 429);
    at(&shared, keyed(""), T0).expect_err("an empty header is the same key as none");

    let strict = host(json!({
        "bucket": "rl", "limit": 1, "window_secs": 60, "key": ["header:x-api-key"],
        "missing": "reject"
    }));
    let refused = at(&strict, get(), T0).unwrap_err();
    assert_eq!(refused.status(), 400);
    assert!(
        refused.text_body().contains("x-api-key"),
        "{}",
        refused.text_body()
    );
}

#[test]
fn the_client_is_the_address_the_gateway_resolved() {
    let host = host(json!({
        "bucket": "rl", "limit": 1, "window_secs": 60, "key": ["client"], "missing": "reject"
    }));
    host.set_client_address("203.0.113.9".parse().unwrap());
    at(&host, get(), T0).unwrap();
    // A forwarded header the client wrote changes nothing: the gateway decides the address.
    let spoofed = get().with_header("x-forwarded-for", "192.0.2.1");
    assert_eq!(at(&host, spoofed, T0).unwrap_err().status(), 429);
    host.set_client_address("203.0.113.10".parse().unwrap());
    at(&host, get(), T0).expect("another client");
    // The IPv4-mapped spelling of a client is the same client.
    host.set_client_address("::ffff:203.0.113.10".parse().unwrap());
    assert_eq!(at(&host, get(), T0).unwrap_err().status(), 429);
}

#[test]
fn an_unavailable_bucket_fails_open_or_closed() {
    let open = host(json!({ "bucket": "rl", "limit": 1, "window_secs": 60, "key": [] }));
    open.bucket_down("rl", true);
    at(&open, get(), T0).expect("fail open lets it through");
    at(&open, get(), T0).expect("and again: nothing was counted");
    assert!(
        open.logs()
            .iter()
            .any(|l| l.level == "warn" && l.message.contains("unavailable")),
        "{:?}",
        open.logs()
    );
    let response = open.run(|| annotate_response(Response::new(200)));
    assert_eq!(response.header("ratelimit-remaining"), None);
    // Back: counting resumes.
    open.bucket_down("rl", false);
    at(&open, get(), T0).unwrap();
    assert_eq!(at(&open, get(), T0).unwrap_err().status(), 429);

    let closed = host(json!({
        "bucket": "rl", "limit": 1, "window_secs": 60, "key": [], "fail": "closed"
    }));
    closed.bucket_down("rl", true);
    let refused = at(&closed, get(), T0).unwrap_err();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.header("retry-after"), Some("1"));

    let ungranted = MockHost::new()
        .config(
            json!({ "bucket": "rl", "limit": 1, "window_secs": 60, "key": [], "fail": "closed" }),
        )
        .ungranted_bucket("rl");
    assert_eq!(at(&ungranted, get(), T0).unwrap_err().status(), 503);
}

#[test]
fn sliding_weighs_the_previous_window() {
    let host = host(json!({
        "bucket": "rl", "limit": 10, "window_secs": 10, "key": [], "algorithm": "sliding"
    }));
    for _ in 0..10 {
        at(&host, get(), T0 + 1_000).unwrap();
    }
    assert_eq!(at(&host, get(), T0 + 9_000).unwrap_err().status(), 429);
    // Half-way into the next window half of the previous one still counts: 5 more fit.
    for _ in 0..5 {
        at(&host, get(), T0 + 15_000).expect("within the sliding limit");
    }
    let refused = at(&host, get(), T0 + 15_000).unwrap_err();
    assert_eq!(refused.status(), 429);
    // One more fits once the previous window's weight drops by one request: 1 s later.
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(refused.header("ratelimit-remaining"), Some("0"));
    // Refused requests are not counted.
    let key = {
        let id = host
            .run(|| identity(&Config::load().unwrap(), &get()))
            .unwrap();
        counter_key(&id, (T0 + 15_000) / 10_000)
    };
    assert_eq!(host.kv_value("rl", &key).as_deref(), Some(&b"5"[..]));
    at(&host, get(), T0 + 16_000).expect("the previous window weighs less now");
}

#[test]
fn sliding_retry_after_past_a_full_window() {
    let host = host(json!({
        "bucket": "rl", "limit": 2, "window_secs": 10, "key": [], "algorithm": "sliding"
    }));
    at(&host, get(), T0 + 2_000).unwrap();
    at(&host, get(), T0 + 2_000).unwrap();
    let refused = at(&host, get(), T0 + 2_000).unwrap_err();
    // 8 s to the window's end, then 2 * (1 - t/10) + 1 <= 2 needs t >= 5 s.
    assert_eq!(refused.header("retry-after"), Some("13"));
    assert_eq!(at(&host, get(), T0 + 14_900).unwrap_err().status(), 429);
    at(&host, get(), T0 + 15_000).expect("as retry-after said");
}

#[test]
fn allowed_headers_are_optional_and_tied_to_their_request() {
    let quiet = host(json!({
        "bucket": "rl", "limit": 5, "window_secs": 60, "key": [], "headers_on_allowed": false,
        "header_style": "draft"
    }));
    at(&quiet, get(), T0).unwrap();
    let response = quiet.run(|| annotate_response(Response::new(200)));
    assert!(!response.headers().contains("ratelimit"));

    let loud = host(json!({
        "bucket": "rl", "limit": 5, "window_secs": 60, "key": [], "header_style": "draft"
    }));
    at(&loud, get(), T0).unwrap();
    let other_request = loud.clone().request_id("another");
    let response = other_request.run(|| annotate_response(Response::new(200)));
    assert!(!response.headers().contains("ratelimit"));
    at(&loud, get(), T0).unwrap();
    let response = loud.run(|| annotate_response(Response::new(200)));
    assert_eq!(response.header("ratelimit"), Some("\"default\";r=3;t=60"));
    assert!(!response.headers().contains("ratelimit-limit"));
}

#[test]
fn bad_config_is_a_500_naming_the_problem_in_the_log() {
    for (config, needle) in [
        (
            json!({ "bucket": "rl", "limit": 0, "window_secs": 60, "key": [] }),
            "limit",
        ),
        (
            json!({ "bucket": "rl", "limit": 1, "window_secs": 0, "key": [] }),
            "window_secs",
        ),
        (
            json!({ "bucket": "rl", "limit": 1, "window_secs": 1, "key": ["cookie:a"] }),
            "cookie:a",
        ),
        (
            json!({ "bucket": "rl", "limit": 1, "window_secs": 1 }),
            "key",
        ),
        (
            json!({ "bucket": "rl", "limit": 1, "window_secs": 1, "key": [], "limt": 2 }),
            "limt",
        ),
        (
            json!({ "bucket": "rl", "limit": 1, "window_secs": 1, "key": [], "fail": "maybe" }),
            "maybe",
        ),
    ] {
        let host = host(config);
        let refused = at(&host, get(), T0).unwrap_err();
        assert_eq!(refused.status(), 500);
        assert!(
            host.logs().iter().any(|l| l.message.contains(needle)),
            "{needle}: {:?}",
            host.logs()
        );
    }
}

#[test]
fn through_the_filter_trait() {
    let host = host(json!({ "bucket": "rl", "limit": 1, "window_secs": 3600, "key": [] }));
    assert!(matches!(
        host.on_request::<RateLimit>(get()),
        Action::Continue(_)
    ));
    let response = host.on_response::<RateLimit>(Response::new(200));
    assert_eq!(response.header("ratelimit-remaining"), Some("0"));
    let Action::Respond(refused) = host.on_request::<RateLimit>(get()) else {
        panic!("the second request in the hour must be refused");
    };
    assert_eq!(refused.status(), 429);
}
