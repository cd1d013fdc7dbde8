//! The filter through MockHost, as the gateway calls it.

use serde_json::{Value, json};
use tessera_sdk::testing::MockHost;

use super::*;

fn host(config: Value) -> MockHost {
    MockHost::new().config(config)
}

fn json_request(body: &str) -> Request {
    Request::new("POST", "/orders")
        .with_header("content-type", "application/json")
        .with_body(body)
}

fn json_response(status: u16, body: &str) -> Response {
    Response::new(status)
        .with_header("content-type", "application/json; charset=utf-8")
        .with_body(body)
}

/// The request the filter passes on.
fn passed(host: &MockHost, request: Request) -> Request {
    match host.on_request::<TransformFilter>(request) {
        Action::Continue(r) => r,
        Action::Respond(r) => panic!("answered {}: {}", r.status(), r.text_body()),
    }
}

/// The answer the filter gives instead of passing the request on.
fn answered(host: &MockHost, request: Request) -> Response {
    match host.on_request::<TransformFilter>(request) {
        Action::Continue(r) => panic!("passed on: {r:?}"),
        Action::Respond(r) => r,
    }
}

fn body_json(body: Option<&[u8]>) -> Value {
    serde_json::from_slice(body.expect("a body")).expect("JSON")
}

fn logged(host: &MockHost, level: &str, text: &str) -> bool {
    host.logs()
        .iter()
        .any(|l| l.level == level && l.message.contains(text))
}

/// What the gateway says about `config` at load.
fn refusal(config: Value) -> String {
    let parsed = tessera_sdk::parse_config::<Config>(&config.to_string());
    match parsed.and_then(|c| check_config(&c)) {
        Ok(()) => panic!("accepted: {config}"),
        Err(e) => e,
    }
}

#[test]
fn request_bodies_lose_denied_fields_and_gain_constants_before_the_upstream() {
    let host = host(json!({ "request": {
        "deny": ["is_admin", "items[*].price"],
        "rename": { "qty": "quantity" },
        "set": { "source": "gateway", "meta.version": 2 },
        "headers": { "set": { "x-transformed": "yes" }, "remove": ["x-debug"] },
    } }));
    let request = json_request(
        r#"{"customer":"c-1","is_admin":true,"qty":3,"items":[{"sku":"A","price":0.01},{"sku":"B"}]}"#,
    )
    .with_header("x-debug", "1")
    .with_header("content-digest", "sha-256=:abc=:");
    let out = passed(&host, request);
    assert_eq!(
        out.body(),
        Some(
            br#"{"customer":"c-1","quantity":3,"items":[{"sku":"A"},{"sku":"B"}],"meta":{"version":2},"source":"gateway"}"#
                .as_slice()
        ),
        "{}",
        out.text_body()
    );
    assert_eq!(out.header("x-transformed"), Some("yes"));
    assert!(!out.headers().contains("x-debug"));
    assert!(
        !out.headers().contains("content-digest"),
        "a digest of the old bytes would be wrong"
    );
    assert_eq!(out.header("content-type"), Some("application/json"));
}

#[test]
fn response_bodies_are_unwrapped_cut_down_reshaped_and_wrapped() {
    let host = host(json!({ "response": {
        "unwrap": "data",
        "allow": ["id", "name", "address", "items[*].sku", "items[*].price"],
        "rename": { "items[*].price": "cost" },
        "move": { "address.city": "city" },
        "set": { "api_version": 2 },
        "wrap": "result",
    } }));
    let upstream = json_response(
        200,
        r#"{"data":{"id":7,"name":"Ada","password_hash":"x","address":{"city":"Lyon","zip":"69001"},
            "items":[{"sku":"A","price":5,"supplier":"s"},{"sku":"B","price":6}]},"debug":{"sql":"..."}}"#,
    );
    let out = host.on_response::<TransformFilter>(upstream);
    assert_eq!(out.status(), 200);
    assert_eq!(
        out.text_body(),
        r#"{"result":{"id":7,"name":"Ada","address":{"zip":"69001"},"items":[{"sku":"A","cost":5},{"sku":"B","cost":6}],"city":"Lyon","api_version":2}}"#
    );
}

#[test]
fn a_root_array_is_transformed_element_by_element() {
    let host = host(json!({ "response": { "deny": ["secret"], "set": { "kind": "user" } } }));
    let out = host.on_response::<TransformFilter>(json_response(
        200,
        r#"[{"id":1,"secret":"a"},{"id":2},"loose",null]"#,
    ));
    assert_eq!(
        body_json(out.body()),
        json!([{ "id": 1, "kind": "user" }, { "id": 2, "kind": "user" }, "loose", null])
    );
}

#[test]
fn bodies_not_labelled_json_or_not_changed_pass_byte_for_byte() {
    let host =
        host(json!({ "response": { "deny": ["secret"] }, "request": { "deny": ["secret"] } }));
    let text = r#"{"secret": "in a text body"}"#;
    for response in [
        Response::new(200)
            .with_header("content-type", "text/plain")
            .with_body(text),
        Response::new(200).with_body(text),
        Response::new(200)
            .with_header("content-type", "application/octet-stream")
            .with_body(vec![0xff, 0x00, 0x7b]),
        // JSON the operations leave alone keeps its exact bytes (spacing, escapes, numbers).
        json_response(200, "{ \"id\" : 1.50, \"name\": \"\\u00e9\" }\n"),
        // An empty body (a HEAD answer, a 204) stays empty.
        json_response(200, ""),
    ] {
        let expected = response.body().map(<[u8]>::to_vec);
        let out = host.on_response::<TransformFilter>(response.clone());
        assert_eq!(out.body().map(<[u8]>::to_vec), expected, "{response:?}");
        assert_eq!(out.headers(), response.headers());
    }
    let request = Request::new("PUT", "/")
        .with_header("content-type", "text/csv")
        .with_body("secret,a\n1,2\n");
    assert_eq!(passed(&host, request.clone()), request);
}

#[test]
fn invalid_json_requests_are_refused_unless_configured_to_pass() {
    let reject = host(json!({ "request": { "deny": ["is_admin"] } }));
    // A lenient upstream parser would read these; the filter cannot, so they do not get by it.
    for body in [
        r#"{"is_admin":true,"n":NaN}"#,
        r#"{"is_admin":true,}"#,
        "{\"is_admin\":true,\"s\":\"\\ud800\"}",
        &format!("{}{}", "[".repeat(200), "]".repeat(200)),
    ] {
        let out = answered(&reject, json_request(body));
        assert_eq!(out.status(), 400, "{body}");
        let answer = body_json(out.body());
        assert_eq!(answer["error"], "bad_request");
        assert!(
            answer["message"]
                .as_str()
                .unwrap()
                .starts_with("the request body is not valid JSON: "),
            "{answer}"
        );
    }

    let pass = host(json!({ "request": { "deny": ["is_admin"], "invalid_body": "pass" } }));
    let request = json_request(r#"{"is_admin":true,"n":NaN}"#);
    assert_eq!(passed(&pass, request.clone()), request);
    assert!(logged(
        &pass,
        "warn",
        "request body passed untouched: not valid JSON"
    ));
}

#[test]
fn invalid_json_responses_become_a_502_unless_configured_to_pass() {
    let reject = host(json!({ "response": { "allow": ["id"] } }));
    let out = reject.on_response::<TransformFilter>(json_response(200, "<html>oops</html>"));
    assert_eq!(out.status(), 502);
    let answer = body_json(out.body());
    assert_eq!(
        answer["message"],
        "the upstream's answer could not be transformed"
    );
    assert!(!out.text_body().contains("oops"));
    assert!(logged(
        &reject,
        "warn",
        "response body (200): not valid JSON"
    ));

    let pass = host(json!({ "response": { "allow": ["id"], "invalid_body": "pass" } }));
    let upstream = json_response(200, "<html>oops</html>");
    assert_eq!(
        pass.on_response::<TransformFilter>(upstream.clone()),
        upstream
    );
    assert!(logged(&pass, "warn", "passed untouched: not valid JSON"));
}

#[test]
fn compressed_and_partial_bodies_are_never_rewritten() {
    let config = json!({ "request": { "deny": ["a"] }, "response": { "deny": ["a"] } });
    let gzip_request = json_request("\u{1f}\u{8b}...").with_header("content-encoding", "gzip");
    let out = answered(&host(config.clone()), gzip_request.clone());
    assert_eq!(out.status(), 415);

    let gzip = json_response(200, "\u{1f}\u{8b}...").with_header("content-encoding", "gzip");
    let reject = host(config.clone());
    assert_eq!(
        reject.on_response::<TransformFilter>(gzip.clone()).status(),
        502
    );
    assert!(logged(&reject, "warn", "content-encoding gzip"));
    let partial = json_response(206, r#"{"a":1,"#).with_header("content-range", "bytes 0-6/20");
    let out = host(json!({ "response": { "deny": ["a"], "body_statuses": [206] } }))
        .on_response::<TransformFilter>(partial);
    assert_eq!(out.status(), 502);

    let mut config = config;
    config["request"]["invalid_body"] = "pass".into();
    config["response"]["invalid_body"] = "pass".into();
    let pass = host(config);
    assert_eq!(passed(&pass, gzip_request.clone()), gzip_request);
    assert_eq!(pass.on_response::<TransformFilter>(gzip.clone()), gzip);
    assert!(logged(&pass, "warn", "content-encoding gzip"));
}

#[test]
fn response_operations_ask_the_upstream_for_whole_uncompressed_bodies() {
    let request = Request::new("GET", "/users")
        .with_header("accept-encoding", "gzip, br")
        .with_header("range", "bytes=0-99")
        .with_header("if-range", "\"v1\"")
        .with_body("");
    let out = passed(
        &host(json!({ "response": { "deny": ["a"] } })),
        request.clone(),
    );
    for name in ["accept-encoding", "range", "if-range"] {
        assert!(!out.headers().contains(name), "{name}");
    }
    // Without response body operations the request keeps them.
    let out = passed(&host(json!({ "request": { "deny": ["a"] } })), request);
    assert_eq!(out.header("accept-encoding"), Some("gzip, br"));
    assert_eq!(out.header("range"), Some("bytes=0-99"));
}

#[test]
fn without_buffered_bodies_body_operations_refuse_and_say_why() {
    let strict = host(json!({ "response": { "deny": ["password"] } }));
    // `buffer_body` is off: the gateway hands the filter no body (None, not empty).
    let out = answered(&strict, Request::new("GET", "/users/1"));
    assert_eq!(out.status(), 500);
    assert_eq!(
        body_json(out.body())["message"],
        "the plugin is misconfigured"
    );
    assert!(logged(&strict, "warn", "set `buffer_body = true`"));
    let out = strict.on_response::<TransformFilter>(
        Response::new(200).with_header("content-type", "application/json"),
    );
    assert_eq!(out.status(), 500);

    // Headers and statuses need no bodies.
    let headers_only = host(json!({
        "request": { "headers": { "set": { "x-a": "1" } } },
        "response": { "headers": { "remove": ["server"] }, "status": { "404": 200 } },
    }));
    let out = passed(&headers_only, Request::new("GET", "/"));
    assert_eq!(out.header("x-a"), Some("1"));
    let out = headers_only
        .on_response::<TransformFilter>(Response::new(404).with_header("server", "nginx"));
    assert_eq!(out.status(), 200);
    assert!(!out.headers().contains("server"));
    assert_eq!(out.body(), None);
}

#[test]
fn only_2xx_bodies_change_unless_body_statuses_says_otherwise() {
    let upstream_error = json_response(500, r#"{"error":"boom","trace":"..."}"#);
    let default = host(json!({ "response": { "allow": ["id"] } }));
    assert_eq!(
        default.on_response::<TransformFilter>(upstream_error.clone()),
        upstream_error,
        "error bodies, the gateway's own among them, keep their shape"
    );
    let wider = host(json!({ "response": {
        "allow": ["id", "error"],
        "body_statuses": ["2xx", "5XX", 404],
    } }));
    let out = wider.on_response::<TransformFilter>(upstream_error);
    assert_eq!(out.text_body(), r#"{"error":"boom"}"#);
    let out = wider.on_response::<TransformFilter>(json_response(404, r#"{"id":1,"x":2}"#));
    assert_eq!(out.text_body(), r#"{"id":1}"#);
    let out = wider.on_response::<TransformFilter>(json_response(409, r#"{"id":1,"x":2}"#));
    assert_eq!(out.text_body(), r#"{"id":1,"x":2}"#);
}

#[test]
fn statuses_are_remapped_once_after_the_body_operations() {
    let host = host(json!({ "response": {
        "deny": ["x"],
        "body_statuses": [404],
        "status": { "404": 200, "200": 204 },
    } }));
    // The body operations choose by the upstream's status, before it is remapped.
    let out = host.on_response::<TransformFilter>(json_response(404, r#"{"x":1,"y":2}"#));
    assert_eq!(out.status(), 200, "not chained on to 204");
    assert_eq!(out.text_body(), r#"{"y":2}"#);
    // A 204 has no body.
    let out = host.on_response::<TransformFilter>(json_response(200, r#"{"x":1}"#));
    assert_eq!(out.status(), 204);
    assert_eq!(out.body(), Some(&[][..]));
    let out = host.on_response::<TransformFilter>(json_response(503, "{}"));
    assert_eq!(out.status(), 503);
}

#[test]
fn a_rewritten_response_drops_what_described_the_old_bytes() {
    let host = host(json!({ "response": { "deny": ["x"] } }));
    let upstream = json_response(200, r#"{"x":1,"y":2}"#)
        .with_header("etag", "\"v42\"")
        .with_header("content-digest", "sha-256=:abc=:")
        .with_header("accept-ranges", "bytes")
        .with_header("cache-control", "max-age=60");
    let out = host.on_response::<TransformFilter>(upstream.clone());
    assert_eq!(out.text_body(), r#"{"y":2}"#);
    assert_eq!(out.header("etag"), Some("W/\"v42\""));
    assert!(!out.headers().contains("content-digest"));
    assert!(!out.headers().contains("accept-ranges"));
    assert_eq!(out.header("cache-control"), Some("max-age=60"));
    // Nothing to remove: the upstream's validators stay.
    let unchanged = json_response(200, r#"{"y":2}"#).with_header("etag", "\"v43\"");
    assert_eq!(
        host.on_response::<TransformFilter>(unchanged.clone()),
        unchanged
    );
    // Already weak stays as it is.
    let weak = json_response(200, r#"{"x":1}"#).with_header("etag", "W/\"v44\"");
    assert_eq!(
        host.on_response::<TransformFilter>(weak).header("etag"),
        Some("W/\"v44\"")
    );
}

#[test]
fn headers_are_removed_then_set_in_each_direction() {
    let host = host(json!({
        "request": { "headers": { "remove": ["Cookie", "x-version"], "set": { "X-Version": "2" } } },
        "response": { "headers": { "remove": ["server", "x-powered-by"], "set": { "cache-control": "no-store" } } },
    }));
    let request = Request::new("GET", "/")
        .with_header("cookie", "a=b")
        .with_header("x-version", "1")
        .with_header("x-version", "1b");
    let out = passed(&host, request);
    assert!(!out.headers().contains("cookie"));
    assert_eq!(
        out.headers().get_all("x-version").collect::<Vec<_>>(),
        [b"2".as_slice()]
    );
    let out = host.on_response::<TransformFilter>(
        Response::new(200)
            .with_header("server", "nginx")
            .with_header("X-Powered-By", "php")
            .with_header("cache-control", "max-age=60"),
    );
    assert!(!out.headers().contains("server"));
    assert!(!out.headers().contains("x-powered-by"));
    assert_eq!(out.header("cache-control"), Some("no-store"));
}

#[test]
fn an_empty_config_passes_everything_as_it_is() {
    let host = host(json!({}));
    let request = json_request(r#"{"a":1}"#).with_header("accept-encoding", "gzip");
    assert_eq!(passed(&host, request.clone()), request);
    let response = json_response(404, r#"{"a":1}"#);
    assert_eq!(
        host.on_response::<TransformFilter>(response.clone()),
        response
    );
    // Without bodies too.
    assert_eq!(
        passed(&host, Request::new("GET", "/")),
        Request::new("GET", "/")
    );
}

#[test]
fn config_errors_name_the_key() {
    for (config, expected) in [
        (json!({ "requst": {} }), "requst: unknown field `requst`"),
        (
            json!({ "response": { "alow": ["a"] } }),
            "response.alow: unknown field `alow`",
        ),
        (
            json!({ "response": { "rename": { "a..b": "c" } } }),
            r#"response.rename["a..b"]: "a..b": a field name is missing at byte 2"#,
        ),
        (
            json!({ "response": { "rename": { "a.b": "x.y" } } }),
            r#"response.rename["a.b"]: "x.y" is not a field name"#,
        ),
        (
            json!({ "response": { "rename": { "a.b": "b" } } }),
            r#"response.rename["a.b"]: the new name is the old one"#,
        ),
        (
            json!({ "request": { "allow": ["id", "items[0].x"] } }),
            r#"request.allow[1]: "items[0].x": `[` at byte 5: only `[*]`"#,
        ),
        (
            json!({ "request": { "allow": [] } }),
            "request.allow: an empty list would remove every field",
        ),
        (
            json!({ "request": { "deny": ["items[*]"] } }),
            r#"request.deny[0]: "items[*]": the path must end with a field name"#,
        ),
        (
            json!({ "response": { "deny": ["[*].secret"] } }),
            r#"response.deny[0]: "[*].secret": a path starts with a field name"#,
        ),
        (
            json!({ "response": { "set": { "a": 1, "a.b": 2 } } }),
            r#"response.set["a.b"]: touches the same fields as response.set["a"]"#,
        ),
        (
            json!({ "response": { "rename": { "first": "given", "given": "first" } } }),
            r#"response.rename["given"]: touches the same fields as response.rename["first"]"#,
        ),
        (
            json!({ "response": { "move": { "a": "x.a", "b": "x" } } }),
            r#"response.move["b"]: touches the same fields as response.move["a"]"#,
        ),
        (
            json!({ "response": { "move": { "items[*].a": "a" } } }),
            r#"response.move["items[*].a"]: "a" must pick the same objects as "items[*].a""#,
        ),
        (
            json!({ "response": { "move": { "a": "a" } } }),
            r#"response.move["a"]: the field is moved onto itself"#,
        ),
        (
            json!({ "response": { "unwrap": "data[*].attributes" } }),
            "response.unwrap: \"data[*].attributes\": `[*]` is not allowed here",
        ),
        (
            json!({ "response": { "wrap": "" } }),
            "response.wrap: \"\": the path is empty",
        ),
        (
            json!({ "response": { "status": { "404": 99 } } }),
            r#"response.status["404"]: 99 is not a final status (200-599)"#,
        ),
        (
            json!({ "response": { "status": { "4o4": 200 } } }),
            r#"response.status["4o4"]: "4o4" is not a final status"#,
        ),
        (
            json!({ "response": { "status": { "600": 200 } } }),
            r#"response.status["600"]: "600" is not a final status"#,
        ),
        (
            json!({ "response": { "status": { "404": 200, "0404": 204 } } }),
            r#"response.status["404"]: 404 is remapped twice"#,
        ),
        (
            json!({ "response": { "status": { "404": 70000 } } }),
            "response.status.404: invalid value: integer `70000`",
        ),
        (
            json!({ "request": { "status": { "404": 200 } } }),
            "request.status: requests have no status",
        ),
        (
            json!({ "response": { "body_statuses": ["2xx", "6xx"] } }),
            r#"response.body_statuses[1]: expected a status (200-599) or a class ("2xx" to "5xx"), not "6xx""#,
        ),
        (
            json!({ "response": { "body_statuses": [] } }),
            "response.body_statuses: an empty list",
        ),
        (
            json!({ "response": { "invalid_body": "ignore" } }),
            "response.invalid_body: unknown variant `ignore`, expected `reject` or `pass`",
        ),
        (
            json!({ "request": { "headers": { "set": { "content-length": "5" } } } }),
            r#"request.headers.set["content-length"]: content-length is the gateway's"#,
        ),
        (
            json!({ "response": { "headers": { "remove": ["x-a", "Transfer-Encoding"] } } }),
            "response.headers.remove[1]: transfer-encoding is the gateway's",
        ),
        (
            json!({ "request": { "headers": { "set": { "Host": "evil" } } } }),
            r#"request.headers.set["Host"]: host is the gateway's"#,
        ),
        (
            json!({ "request": { "headers": { "set": { "Connection": "close" } } } }),
            r#"request.headers.set["Connection"]: connection is the gateway's"#,
        ),
        (
            json!({ "request": { "headers": { "set": { "x-a": "1\r\nx-b: 2" } } } }),
            r#"request.headers.set["x-a"]: not a valid header value"#,
        ),
        (
            json!({ "request": { "headers": { "set": { "x-a": " padded" } } } }),
            r#"request.headers.set["x-a"]: not a valid header value"#,
        ),
        (
            json!({ "request": { "headers": { "set": { "x a": "1" } } } }),
            r#"request.headers.set["x a"]: "x a" is not a valid header name"#,
        ),
        (
            json!({ "request": { "headers": { "set": { "X-A": "1", "x-a": "2" } } } }),
            r#"request.headers.set["x-a"]: x-a is set twice"#,
        ),
        (
            json!({ "request": { "headers": { "add": { "x-a": "1" } } } }),
            "request.headers.add: unknown field `add`, expected `set` or `remove`",
        ),
    ] {
        let e = refusal(config.clone());
        assert!(
            e.starts_with(expected),
            "{config}:\n  got      {e}\n  expected {expected}"
        );
    }
}

#[test]
fn good_configs_pass_the_check() {
    for config in [
        json!({}),
        json!({ "request": {}, "response": {} }),
        json!({ "response": {
            "unwrap": "data.user",
            "allow": ["id", "items[*].sku", r"odd\.name"],
            "deny": ["items[*].cost"],
            "rename": { "id": "user_id", "items[*].sku": "code" },
            "move": { "address.city": "city", "items[*].p.n": "items[*].name", "price.amount": "price" },
            "set": { "meta.source": "gw", "flags": [1, 2], "items[*].seen": true },
            "wrap": "result.data",
            "invalid_body": "pass",
            "headers": { "set": { "cache-control": "no-store", "x-empty": "" }, "remove": ["server"] },
            "body_statuses": ["2xx", 404],
            "status": { "404": 200, "500": 503 },
        } }),
    ] {
        let parsed = tessera_sdk::parse_config::<Config>(&config.to_string()).unwrap();
        assert_eq!(check_config(&parsed), Ok(()), "{config}");
    }
}

#[test]
fn a_config_the_gateway_did_not_check_answers_500_and_logs_the_key() {
    // Reached only through a gateway that skips `config-check`: the request is refused, the
    // operator reads which key.
    let host = host(json!({ "response": { "rename": { "a": "b.c" } } }));
    let out = answered(&host, Request::new("GET", "/").with_body(""));
    assert_eq!(out.status(), 500);
    assert!(!out.text_body().contains("rename"));
    assert!(logged(&host, "warn", r#"response.rename["a"]"#));
}
