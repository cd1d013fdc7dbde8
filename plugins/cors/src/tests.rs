//! The filter through MockHost: preflights answered here, actual requests passed on and their
//! responses given the policy's headers, hostile input, and what the config check says.

use serde_json::{Value, json};
use tessera_sdk::testing::MockHost;

use super::*;

const APP: &str = "https://app.example.com";

fn host(config: Value) -> MockHost {
    MockHost::new().config(config)
}

/// A route allowing `APP` with credentials, PUT, one request header and one exposed header.
fn app_host() -> MockHost {
    host(json!({
        "allow_origins": [APP, "https://*.example.org"],
        "allow_methods": ["GET", "POST", "PUT"],
        "allow_headers": ["Content-Type", "x-request-id"],
        "expose_headers": ["x-total-count"],
        "allow_credentials": true,
        "max_age": 600,
    }))
}

fn preflight(origin: &str, method: &str, headers: Option<&str>) -> Request {
    let mut request = Request::new("OPTIONS", "/api/items")
        .with_header("origin", origin)
        .with_header("access-control-request-method", method);
    if let Some(h) = headers {
        request = request.with_header("access-control-request-headers", h);
    }
    request
}

fn answered(action: Action) -> Response {
    match action {
        Action::Respond(r) => r,
        Action::Continue(r) => panic!("the filter passed the request on: {r:?}"),
    }
}

fn passed(action: Action) -> Request {
    match action {
        Action::Continue(r) => r,
        Action::Respond(r) => panic!("the filter answered {}: {}", r.status(), r.text_body()),
    }
}

/// The request through on-request (it must pass on), then `upstream` through on-response.
fn exchange(host: &MockHost, request: Request, upstream: Response) -> Response {
    passed(host.on_request::<Cors>(request));
    host.on_response::<Cors>(upstream)
}

/// Every `access-control-*` header, in order.
fn cors_headers(response: &Response) -> Vec<(String, String)> {
    response
        .headers()
        .iter()
        .filter(|(n, _)| n.starts_with("access-control-"))
        .map(|(n, v)| (n.to_owned(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

fn vary(response: &Response) -> Vec<String> {
    response
        .headers()
        .get_all("vary")
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn a_preflight_from_an_allowed_origin_is_answered_204_with_the_allow_headers() {
    let response = answered(app_host().on_request::<Cors>(preflight(
        APP,
        "PUT",
        Some("content-type,X-Request-Id"),
    )));
    assert_eq!(response.status(), 204);
    assert_eq!(response.body(), None);
    assert_eq!(
        cors_headers(&response),
        pairs(&[
            ("access-control-allow-origin", APP),
            ("access-control-allow-credentials", "true"),
            ("access-control-allow-methods", "GET, POST, PUT"),
            ("access-control-allow-headers", "content-type, x-request-id"),
            ("access-control-max-age", "600"),
        ])
    );
    assert_eq!(
        vary(&response),
        ["origin, access-control-request-method, access-control-request-headers"]
    );
    // Without requested headers the configured ones are still listed, so the browser's cached
    // answer covers the next request that sends them.
    let response = answered(app_host().on_request::<Cors>(preflight(APP, "GET", None)));
    assert_eq!(response.status(), 204);
    assert_eq!(
        response.header("access-control-allow-headers"),
        Some("content-type, x-request-id")
    );
}

#[test]
fn options_without_origin_or_request_method_is_not_a_preflight_and_passes_on() {
    let host = app_host();
    let plain = Request::new("OPTIONS", "/api/items");
    let no_method = Request::new("OPTIONS", "/api/items").with_header("origin", APP);
    let no_origin =
        Request::new("OPTIONS", "/api/items").with_header("access-control-request-method", "PUT");
    for request in [plain, no_method, no_origin] {
        let forwarded = passed(host.on_request::<Cors>(request.clone()));
        assert_eq!(forwarded, request, "passed on untouched");
        host.on_response::<Cors>(Response::new(200));
    }
}

#[test]
fn preflights_the_policy_does_not_allow_are_refused_403_without_cors_headers() {
    let host = app_host();
    for (request, reason) in [
        (
            preflight("https://evil.example", "PUT", None),
            "origin not allowed",
        ),
        (
            preflight("https://app.example.com:8443", "GET", None),
            "origin not allowed",
        ),
        (
            preflight(APP, "DELETE", None),
            "method \\\"DELETE\\\" not allowed",
        ),
        (
            preflight(APP, "put", None),
            "method \\\"put\\\" not allowed",
        ),
        (
            preflight(APP, "PUT", Some("content-type, x-secret")),
            "header \\\"x-secret\\\" not allowed",
        ),
        (
            preflight(APP, "PUT", Some("x-ok\u{7f}")),
            "access-control-request-headers is not a list of header names",
        ),
        (
            preflight(APP, "PUT", Some("x:y")),
            "access-control-request-headers is not a list of header names",
        ),
        (
            preflight(APP, "PU T", None),
            "access-control-request-method is not one method name",
        ),
        (
            preflight(APP, "PUT", None).with_header("access-control-request-method", "GET"),
            "access-control-request-method is not one method name",
        ),
    ] {
        let response = answered(host.on_request::<Cors>(request.clone()));
        assert_eq!(response.status(), 403, "{request:?}");
        assert_eq!(cors_headers(&response), [], "{request:?}");
        let body = response.text_body();
        assert!(
            body.contains(&format!("\"CORS preflight refused: {reason}\"")),
            "{body}"
        );
        assert!(
            !body.contains("evil"),
            "the origin is not echoed in the body: {body}"
        );
        assert_eq!(
            vary(&response),
            ["origin, access-control-request-method, access-control-request-headers"]
        );
    }
    // Why the origin was refused is in the log, at debug level: a flood of bad preflights does
    // not fill the warning log.
    assert!(host.logs().iter().all(|l| l.level == "debug"));
}

#[test]
fn an_actual_request_from_an_allowed_origin_gets_the_policy_headers_and_loses_the_upstreams() {
    let upstream = Response::text(200, "[]")
        .with_header("vary", "accept-encoding")
        .with_header("access-control-allow-origin", "*")
        .with_header("access-control-allow-methods", "DELETE")
        .with_header("access-control-expose-headers", "x-internal")
        .with_header("x-total-count", "0");
    let request = Request::new("GET", "/api/items").with_header("origin", APP);
    let response = exchange(&app_host(), request, upstream);
    assert_eq!(response.status(), 200);
    assert_eq!(response.text_body(), "[]");
    assert_eq!(
        cors_headers(&response),
        pairs(&[
            ("access-control-allow-origin", APP),
            ("access-control-allow-credentials", "true"),
            ("access-control-expose-headers", "x-total-count"),
        ])
    );
    assert_eq!(vary(&response), ["accept-encoding", "origin"]);
    assert_eq!(response.header("x-total-count"), Some("0"));
}

#[test]
fn disallowed_origins_pass_on_but_their_responses_carry_no_cors_headers() {
    let host = app_host();
    let upstream = || {
        Response::text(200, "secret")
            .with_header("access-control-allow-origin", "*")
            .with_header("access-control-allow-credentials", "true")
    };
    for origin in [
        "https://evil.example",
        "https://example.com",
        "https://evilexample.org",
        "http://app.example.com",
        "null",
    ] {
        let request = Request::new("POST", "/api/items").with_header("origin", origin);
        let response = exchange(&host, request, upstream());
        assert_eq!(response.status(), 200, "{origin}");
        assert_eq!(cors_headers(&response), [], "{origin}");
        assert_eq!(vary(&response), ["origin"], "{origin}");
    }
    // An allowed origin with a method the policy does not allow: no headers either.
    let request = Request::new("DELETE", "/api/items/1").with_header("origin", APP);
    let response = exchange(&host, request, upstream());
    assert_eq!(cors_headers(&response), []);
    // No Origin at all (not a browser's cross-origin request): the upstream's CORS headers
    // go all the same, and the response still varies on Origin for caches.
    let response = exchange(&host, Request::new("GET", "/api/items"), upstream());
    assert_eq!(cors_headers(&response), []);
    assert_eq!(vary(&response), ["origin"]);
}

#[test]
fn refuse_disallowed_origins_answers_403_and_never_passes_them_on() {
    let host = host(json!({ "allow_origins": [APP], "refuse_disallowed_origins": true }));
    let response = answered(host.on_request::<Cors>(
        Request::new("POST", "/api/items").with_header("origin", "https://evil.example"),
    ));
    assert_eq!(response.status(), 403);
    assert_eq!(cors_headers(&response), []);
    assert_eq!(vary(&response), ["origin"]);
    assert!(response.text_body().contains("\"error\":\"forbidden\""));
    // Allowed and Origin-less requests pass as before.
    let request = Request::new("POST", "/api/items").with_header("origin", APP);
    let response = exchange(&host, request, Response::new(201));
    assert_eq!(response.header("access-control-allow-origin"), Some(APP));
    exchange(
        &host,
        Request::new("POST", "/api/items"),
        Response::new(201),
    );
}

#[test]
fn subdomain_wildcards_match_at_any_depth_but_never_the_bare_domain() {
    let host = app_host();
    for (origin, allowed) in [
        ("https://a.example.org", true),
        ("https://a.b.example.org", true),
        ("https://example.org", false),
        ("https://evilexample.org", false),
        ("https://a.example.org.evil.test", false),
        ("http://a.example.org", false),
    ] {
        let request = Request::new("GET", "/").with_header("origin", origin);
        let response = exchange(&host, request, Response::new(200));
        let expected = allowed.then_some(origin);
        assert_eq!(
            response.header("access-control-allow-origin"),
            expected,
            "{origin}"
        );
    }
}

#[test]
fn any_origin_answers_a_star_and_null_only_when_listed() {
    let any = host(json!({ "allow_origins": ["*"], "expose_headers": ["*"] }));
    let request = Request::new("GET", "/").with_header("origin", "https://anyone.example");
    let response = exchange(&any, request, Response::new(200));
    assert_eq!(
        cors_headers(&response),
        pairs(&[
            ("access-control-allow-origin", "*"),
            ("access-control-expose-headers", "*"),
        ])
    );
    let null = Request::new("GET", "/").with_header("origin", "null");
    let response = exchange(&any, null.clone(), Response::new(200));
    assert_eq!(cors_headers(&response), [], "`*` does not cover null");
    let response = answered(any.on_request::<Cors>(preflight("null", "GET", None)));
    assert_eq!(response.status(), 403);

    let with_null = host(json!({ "allow_origins": ["*", "null"] }));
    let response = exchange(&with_null, null.clone(), Response::new(200));
    assert_eq!(response.header("access-control-allow-origin"), Some("*"));

    let listed = host(json!({ "allow_origins": [APP, "null"] }));
    let response = exchange(&listed, null, Response::new(200));
    assert_eq!(response.header("access-control-allow-origin"), Some("null"));
    let response = answered(listed.on_request::<Cors>(preflight("null", "POST", None)));
    assert_eq!(response.status(), 204);
    assert_eq!(response.header("access-control-allow-origin"), Some("null"));
}

#[test]
fn any_method_and_reflected_headers_echo_what_the_preflight_asks() {
    let host = host(json!({
        "allow_origins": [APP],
        "allow_methods": ["*"],
        "reflect_request_headers": true,
        "allow_credentials": true,
    }));
    let response =
        answered(host.on_request::<Cors>(preflight(APP, "PATCH", Some("X-One, x-two,,x-one"))));
    assert_eq!(response.status(), 204);
    assert_eq!(
        cors_headers(&response),
        pairs(&[
            ("access-control-allow-origin", APP),
            ("access-control-allow-credentials", "true"),
            ("access-control-allow-methods", "PATCH"),
            ("access-control-allow-headers", "x-one, x-two"),
        ])
    );
    // Reflection never passes on what is not a header name.
    let response =
        answered(host.on_request::<Cors>(preflight(APP, "PATCH", Some("x-one, x\r\ninjected: 1"))));
    assert_eq!(response.status(), 403);
    // Nor an unbounded list.
    let many: Vec<String> = (0..=MAX_REQUESTED_HEADERS)
        .map(|i| format!("x-h{i}"))
        .collect();
    let response =
        answered(host.on_request::<Cors>(preflight(APP, "PATCH", Some(&many.join(",")))));
    assert_eq!(response.status(), 403);
    assert!(response.text_body().contains("more than 64 headers"));
}

#[test]
fn several_request_headers_fields_are_one_list() {
    let request = preflight(APP, "PUT", Some("content-type"))
        .with_header("access-control-request-headers", "x-request-id");
    let response = answered(app_host().on_request::<Cors>(request));
    assert_eq!(response.status(), 204);
    let request = preflight(APP, "PUT", Some("content-type"))
        .with_header("access-control-request-headers", "x-nope");
    let response = answered(app_host().on_request::<Cors>(request));
    assert_eq!(response.status(), 403);
}

#[test]
fn lower_case_standard_methods_in_the_config_mean_what_browsers_send() {
    let host = host(json!({ "allow_origins": [APP], "allow_methods": ["get", "delete", "PATCH"] }));
    let response = answered(host.on_request::<Cors>(preflight(APP, "DELETE", None)));
    assert_eq!(
        response.header("access-control-allow-methods"),
        Some("GET, DELETE, PATCH")
    );
    // `patch` is not normalized by browsers, so it is not here either.
    let response = answered(host.on_request::<Cors>(preflight(APP, "patch", None)));
    assert_eq!(response.status(), 403);
}

#[test]
fn hostile_origin_headers_get_no_cors_headers_and_no_panic() {
    let host = app_host();
    let huge = format!("https://{}.example.com", "a".repeat(100_000));
    let cases: Vec<Request> = vec![
        Request::new("GET", "/")
            .with_header("origin", APP)
            .with_header("origin", "https://evil.example"),
        Request::new("GET", "/")
            .with_header("origin", APP)
            .with_header("origin", APP),
        Request::new("GET", "/").with_header("origin", huge.as_str()),
        Request::new("GET", "/").with_header("origin", b"https://app.example.com\xff".to_vec()),
        Request::new("GET", "/").with_header("origin", format!("{APP}/")),
        Request::new("GET", "/").with_header("origin", format!("{APP}\r\nx-injected: 1")),
        Request::new("GET", "/").with_header("origin", "https://a.example.org\0"),
        Request::new("GET", "/").with_header("origin", ""),
        Request::new("GET", "/").with_header("origin", "*"),
    ];
    for request in cases {
        let as_preflight = {
            let mut p = request.clone();
            p.set_method("OPTIONS");
            p.headers_mut()
                .append("access-control-request-method", "GET");
            p
        };
        let response = exchange(&host, request.clone(), Response::new(200));
        assert_eq!(cors_headers(&response), [], "{request:?}");
        let response = answered(host.on_request::<Cors>(as_preflight));
        assert_eq!(response.status(), 403, "{request:?}");
        assert_eq!(cors_headers(&response), [], "{request:?}");
    }
    assert!(
        host.logs()
            .iter()
            .any(|l| l.message.contains("more than one Origin header")),
        "{:?}",
        host.logs()
    );
    assert!(
        host.logs().iter().all(|l| l.message.len() < 2048),
        "a huge Origin is not copied into the log"
    );
}

#[test]
fn vary_is_added_to_not_replaced_and_never_duplicated() {
    let host = app_host();
    let request = || Request::new("GET", "/").with_header("origin", APP);
    for (upstream_vary, expected) in [
        (
            vec!["Accept-Encoding, Accept"],
            vec!["Accept-Encoding, Accept", "origin"],
        ),
        (vec!["accept", "Origin"], vec!["accept", "Origin"]),
        (vec!["*"], vec!["*"]),
        (vec![], vec!["origin"]),
    ] {
        let mut upstream = Response::new(200);
        for v in &upstream_vary {
            upstream.headers_mut().append("vary", *v);
        }
        let response = exchange(&host, request(), upstream);
        assert_eq!(vary(&response), expected, "{upstream_vary:?}");
    }
}

#[test]
fn error_responses_from_behind_the_filter_get_cors_headers_too() {
    // A browser can only read an upstream's 502 or a later filter's 401 if it carries them.
    let request = Request::new("POST", "/api/items").with_header("origin", APP);
    let response = exchange(&app_host(), request, Response::text(502, "bad gateway"));
    assert_eq!(response.status(), 502);
    assert_eq!(response.header("access-control-allow-origin"), Some(APP));
}

#[test]
fn a_grant_is_only_used_by_the_request_that_earned_it() {
    // A reused instance: on-response of another request id must not see this one's grant.
    let first = app_host().request_id("first");
    passed(first.on_request::<Cors>(Request::new("GET", "/").with_header("origin", APP)));
    let second = app_host().request_id("second");
    let response = second.on_response::<Cors>(Response::new(200));
    assert_eq!(cors_headers(&response), []);
    assert_eq!(vary(&response), ["origin"]);
    // And a grant is used once.
    let response = first.on_response::<Cors>(Response::new(200));
    assert_eq!(cors_headers(&response), []);
}

/// What the gateway says about `config` at load, or `None` if it accepts it.
fn refused(config: Value) -> Option<String> {
    let parsed: Config = match tessera_sdk::parse_config(&config.to_string()) {
        Ok(c) => c,
        Err(e) => return Some(e),
    };
    check_config(&parsed).err()
}

#[test]
fn the_config_check_refuses_what_cannot_work_and_names_the_key() {
    for (config, message) in [
        (
            json!({ "allow_origins": [] }),
            "allow_origins: list at least one origin, or \"*\" for any",
        ),
        (json!({}), "missing field `allow_origins`"),
        (
            json!({ "allow_origins": [APP], "allow_origin": [APP] }),
            "allow_origin: unknown field `allow_origin`, expected one of `allow_origins`, `allow_methods`, `allow_headers`, `reflect_request_headers`, `expose_headers`, `allow_credentials`, `max_age`, `refuse_disallowed_origins`",
        ),
        (
            json!({ "allow_origins": [APP, "https://b.example", "https://c.example/"] }),
            "allow_origins[2]: \"https://c.example/\" is not an origin: an origin has no path, query or fragment (not even a trailing \"/\")",
        ),
        (
            json!({ "allow_origins": ["*.example.com"] }),
            "allow_origins[0]: \"*.example.com\" is not an origin: no scheme: write scheme://host[:port]",
        ),
        (
            json!({ "allow_origins": ["https://*.com"] }),
            "allow_origins[0]: \"https://*.com\": a wildcard needs a DNS name of at least two labels after `*.` (https://*.example.com)",
        ),
        (
            json!({ "allow_origins": [APP, "*"] }),
            "allow_origins[1]: \"*\" allows every origin; it can only be combined with \"null\"",
        ),
        (
            json!({ "allow_origins": ["*"], "allow_credentials": true }),
            "allow_credentials: cannot be true when allow_origins has \"*\" (browsers refuse credentials with a wildcard); list the origins",
        ),
        (
            json!({ "allow_origins": [APP, "null"], "allow_credentials": true }),
            "allow_credentials: cannot be true when allow_origins has \"null\" (any site can send Origin: null from a sandboxed iframe)",
        ),
        (
            json!({ "allow_origins": [APP], "allow_methods": [] }),
            "allow_methods: list at least one method, or \"*\" for any",
        ),
        (
            json!({ "allow_origins": [APP], "allow_methods": ["GET", "*"] }),
            "allow_methods[1]: \"*\" allows every method; list it alone",
        ),
        (
            json!({ "allow_origins": [APP], "allow_methods": ["GET", "P UT"] }),
            "allow_methods[1]: \"P UT\" is not a valid method",
        ),
        (
            json!({ "allow_origins": [APP], "allow_headers": ["x-a", "x:b"] }),
            "allow_headers[1]: \"x:b\" is not a valid header name",
        ),
        (
            json!({ "allow_origins": [APP], "allow_headers": ["*"] }),
            "allow_headers[0]: use reflect_request_headers = true to allow every requested header",
        ),
        (
            json!({ "allow_origins": [APP], "allow_headers": ["x-a"], "reflect_request_headers": true }),
            "allow_headers: leave it empty with reflect_request_headers = true (every requested header is allowed)",
        ),
        (
            json!({ "allow_origins": [APP], "expose_headers": ["x-a", "x\nb"] }),
            "expose_headers[1]: \"x\\nb\" is not a valid header name",
        ),
        (
            json!({ "allow_origins": [APP], "expose_headers": ["*"], "allow_credentials": true }),
            "expose_headers[0]: \"*\" exposes every header only without credentials; list the headers when allow_credentials = true",
        ),
        (
            json!({ "allow_origins": [APP], "max_age": 86401 }),
            "max_age: 86401 is more than 86400 seconds (a day); browsers cap it lower",
        ),
        (
            json!({ "allow_origins": [APP], "max_age": -1 }),
            "max_age: invalid value: integer `-1`, expected u32",
        ),
    ] {
        assert_eq!(
            refused(config.clone()).as_deref(),
            Some(message),
            "{config}"
        );
    }
    for fine in [
        json!({ "allow_origins": [APP] }),
        json!({ "allow_origins": ["*"] }),
        json!({ "allow_origins": ["*", "null"], "expose_headers": ["*"] }),
        json!({ "allow_origins": ["https://*.example.com:8443", "http://[::1]:3000"], "allow_credentials": true, "max_age": 86400 }),
        json!({ "allow_origins": [APP], "allow_methods": ["*"], "reflect_request_headers": true }),
    ] {
        assert_eq!(refused(fine.clone()), None, "{fine}");
    }
}

#[test]
fn a_config_that_changed_under_a_running_instance_answers_500_not_a_panic() {
    let host = host(json!({ "allow_origins": ["*"], "allow_credentials": true }));
    let response = answered(host.on_request::<Cors>(preflight(APP, "GET", None)));
    assert_eq!(response.status(), 500);
    assert!(response.text_body().contains("the plugin is misconfigured"));
}
