use std::time::Duration;

use serde_json::json;
use tessera_sdk::testing::MockHost;

use super::*;

const ROUTE: &str = "/api/v2/orders/{id}";

/// The demo's order details, as config.
fn order_details() -> Value {
    json!({
        "params": { "id": "integer" },
        "backends": [
            { "name": "order", "url": "http://orders/orders/{id}", "required": true, "group": "order",
              "allow": ["id", "status", "created_at", "store_id", "items[*].product_id",
                        "items[*].quantity", "items[*].unit_price", "items[*].product"] },
            { "name": "user", "url": "http://users/users/{order.user_id}", "group": "user",
              "allow": ["id", "name", "loyalty_tier"] },
            { "name": "store", "url": "http://stores/stores/{order.store_id}", "group": "store",
              "allow": ["id", "name", "city"] },
            { "name": "product", "url": "http://products/products/{each}",
              "for_each": "order.items[*].product_id", "merge_as": "product",
              "allow": ["id", "name", "category", "price"] }
        ],
        "compute": [
            { "set": "order.total", "sum": "order.items[*]", "multiply": ["unit_price", "quantity"], "round": 2 }
        ]
    })
}

fn ok(value: Value) -> Response {
    Response::json(200, &value)
}

fn host() -> MockHost {
    let ms = Duration::from_millis;
    MockHost::new()
        .route(ROUTE)
        .param("id", "1001")
        .config(order_details())
        .respond(
            "GET",
            "http://orders/orders/1001",
            ok(json!({"id": 1001, "user_id": 1, "store_id": 10, "status": "delivered", "created_at": "2026-09-14T10:21:00Z",
                      "items": [{"product_id": 100, "quantity": 1, "unit_price": 74.99},
                                {"product_id": 103, "quantity": 3, "unit_price": 9.90},
                                {"product_id": 100, "quantity": 1, "unit_price": 74.99}]})),
        )
        .delay("GET", "http://orders/orders/1001", ms(50))
        .respond(
            "GET",
            "http://users/users/1",
            ok(json!({"id": 1, "name": "Ada", "email": "ada@example.com", "loyalty_tier": "gold"})),
        )
        .delay("GET", "http://users/users/1", ms(100))
        .respond(
            "GET",
            "http://stores/stores/10",
            ok(json!({"id": 10, "name": "Soho", "city": "London", "manager": "x"})),
        )
        .delay("GET", "http://stores/stores/10", ms(100))
        .respond(
            "GET",
            "http://products/products/100",
            ok(json!({"id": 100, "name": "TAOCP", "category": "books", "price": 74.99, "stock": 3})),
        )
        .delay("GET", "http://products/products/100", ms(100))
        .respond(
            "GET",
            "http://products/products/103",
            ok(json!({"id": 103, "name": "Notebook", "category": "stationery", "price": 9.9})),
        )
        .delay("GET", "http://products/products/103", ms(100))
}

fn answer(host: &MockHost) -> (u16, Value) {
    let response = host.handle::<Aggregate>(Request::new("GET", "/api/v2/orders/1001"));
    let body = response.json_body().unwrap_or(Value::Null);
    (response.status(), body)
}

#[test]
fn merges_the_order_with_its_user_store_and_products_concurrently() {
    let host = host();
    let (status, body) = answer(&host);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({
            "order": {
                "id": 1001, "status": "delivered", "created_at": "2026-09-14T10:21:00Z", "store_id": 10,
                "items": [
                    {"product_id": 100, "quantity": 1, "unit_price": 74.99,
                     "product": {"id": 100, "name": "TAOCP", "category": "books", "price": 74.99}},
                    {"product_id": 103, "quantity": 3, "unit_price": 9.9,
                     "product": {"id": 103, "name": "Notebook", "category": "stationery", "price": 9.9}},
                    {"product_id": 100, "quantity": 1, "unit_price": 74.99,
                     "product": {"id": 100, "name": "TAOCP", "category": "books", "price": 74.99}}
                ],
                "total": 179.68
            },
            "user": {"id": 1, "name": "Ada", "loyalty_tier": "gold"},
            "store": {"id": 10, "name": "Soho", "city": "London"},
            "errors": []
        })
    );
    // The order, then user, store and the 2 distinct products at once.
    assert_eq!(host.calls().len(), 5);
    assert_eq!(host.elapsed(), Duration::from_millis(150));
}

#[test]
fn an_optional_part_that_fails_is_null_with_an_error_entry() {
    let host = host()
        .fail(
            "GET",
            "http://stores/stores/10",
            HttpError::ConnectionFailed("connection refused".into()),
        )
        .respond(
            "GET",
            "http://products/products/103",
            Response::json(404, &json!({"error": "no"})),
        );
    let (status, body) = answer(&host);
    assert_eq!(status, 200);
    assert!(body["store"].is_null());
    assert!(body["order"]["items"][1]["product"].is_null());
    assert_eq!(body["order"]["items"][0]["product"]["name"], "TAOCP");
    assert_eq!(
        body["errors"],
        json!([
            {"part": "product:103", "error": "not found"},
            {"part": "store", "error": "connection failed: connection refused"}
        ])
    );
}

#[test]
fn a_required_backend_decides_the_status() {
    let not_found = MockHost::new()
        .route(ROUTE)
        .param("id", "42")
        .config(order_details())
        .respond(
            "GET",
            "http://orders/orders/42",
            Response::json(404, &json!({})),
        );
    let r = not_found.handle::<Aggregate>(Request::new("GET", "/"));
    assert_eq!(r.status(), 404);
    assert_eq!(
        not_found.calls().len(),
        1,
        "nothing depends on a missing order"
    );

    let timeout = MockHost::new()
        .route(ROUTE)
        .param("id", "7")
        .config(order_details())
        .fail("GET", "http://orders/orders/7", HttpError::Timeout);
    assert_eq!(
        timeout
            .handle::<Aggregate>(Request::new("GET", "/"))
            .status(),
        504
    );

    let broken = MockHost::new()
        .route(ROUTE)
        .param("id", "7")
        .config(order_details())
        .respond(
            "GET",
            "http://orders/orders/7",
            Response::text(200, "<html>"),
        );
    let r = broken.handle::<Aggregate>(Request::new("GET", "/"));
    assert_eq!(r.status(), 502);
    assert!(
        !r.text_body().contains("html"),
        "detail stays in the log: {}",
        r.text_body()
    );

    let bad_id = MockHost::new()
        .route(ROUTE)
        .param("id", "7;drop")
        .config(order_details());
    assert_eq!(
        bad_id
            .handle::<Aggregate>(Request::new("GET", "/"))
            .status(),
        400
    );
    assert!(bad_id.calls().is_empty());
}

#[test]
fn values_from_answers_are_encoded_so_they_cannot_change_the_path() {
    let host = MockHost::new()
        .route(ROUTE)
        .param("id", "1")
        .config(order_details())
        .respond(
            "GET",
            "http://orders/orders/1",
            ok(json!({"id": 1, "user_id": "../../admin?x=1", "store_id": 10, "items": []})),
        );
    let (status, body) = answer(&host);
    assert_eq!(status, 200, "{body}");
    let urls: Vec<String> = host.calls().iter().map(|c| c.url().to_owned()).collect();
    assert!(
        urls.contains(&"http://users/users/%2E%2E%2F%2E%2E%2Fadmin%3Fx%3D1".to_owned()),
        "{urls:?}"
    );
    assert_eq!(body["order"]["total"], 0, "a sum of nothing is 0");
}

#[test]
fn a_backend_reading_a_failed_one_fails_with_it() {
    let config = json!({
        "backends": [
            { "name": "a", "url": "http://s/a" },
            { "name": "b", "url": "http://s/b/{a.next}", "group": "b" },
            { "name": "c", "url": "http://s/c", "group": "c" }
        ]
    });
    let host = MockHost::new()
        .config(config)
        .fail(
            "GET",
            "http://s/a",
            HttpError::ConnectionFailed("refused".into()),
        )
        .respond("GET", "http://s/c", ok(json!({"k": 1})));
    let r = host.handle::<Aggregate>(Request::new("GET", "/"));
    assert_eq!(r.status(), 200);
    let body: Value = r.json_body().unwrap();
    assert_eq!(
        body,
        json!({
            "b": null, "c": {"k": 1},
            "errors": [
                {"part": "a", "error": "connection failed: refused"},
                {"part": "b", "error": "depends on `a`, which failed"}
            ]
        })
    );
    assert_eq!(host.calls().len(), 2, "b is never called");
}

#[test]
fn target_mapping_deny_query_and_forwarded_headers() {
    let config = json!({
        "forward_headers": ["authorization"],
        "backends": [
            { "name": "search", "url": "http://s/search?q={query.q}&limit=5", "target": "data.hits",
              "group": "hits", "headers": {"x-api-version": "2"} },
            { "name": "me", "url": "http://s/me", "deny": ["password", "tokens[*].secret"],
              "mapping": {"display_name": "name", "tokens[*].kind": "type"} }
        ],
        "compute": [ { "set": "hit_count", "count": "hits[*]" } ]
    });
    let host = MockHost::new()
        .config(config)
        .respond("GET", "http://s/search?q=red%20shoes&limit=5", ok(json!({"data": {"hits": [1, 2, 3]}})))
        .respond(
            "GET",
            "http://s/me",
            ok(json!({"display_name": "Ada", "password": "x", "tokens": [{"kind": "a", "secret": "s"}]})),
        );
    let request = Request::new("GET", "/x?q=red+shoes").with_header("authorization", "Bearer t");
    let r = host.handle::<Aggregate>(request);
    assert_eq!(r.status(), 200, "{}", r.text_body());
    let body: Value = r.json_body().unwrap();
    assert_eq!(
        body,
        json!({"hits": [1, 2, 3], "name": "Ada", "tokens": [{"type": "a"}], "hit_count": 3, "errors": []})
    );
    let calls = host.calls();
    assert!(
        calls
            .iter()
            .all(|c| c.headers().get("authorization") == Some("Bearer t"))
    );
    assert_eq!(calls[0].headers().get("x-api-version"), Some("2"));

    let missing = MockHost::new().config(json!({
        "backends": [{ "name": "search", "url": "http://s/search?q={query.q}" }]
    }));
    let r = missing.handle::<Aggregate>(Request::new("GET", "/x"));
    assert_eq!(r.status(), 400);
    assert!(r.text_body().contains("query parameter `q` is required"));
}

#[test]
fn a_fan_out_over_plain_values_is_a_list_and_is_capped() {
    let config = json!({
        "max_each": 2,
        "backends": [
            { "name": "user", "url": "http://s/u", "required": true, "group": "user" },
            { "name": "friend", "url": "http://s/u/{each}", "for_each": "user.friends[*]", "group": "friends", "allow": ["name"] }
        ]
    });
    let host = MockHost::new()
        .config(config.clone())
        .respond("GET", "http://s/u", ok(json!({"friends": [2, 3, 2]})))
        .respond("GET", "http://s/u/2", ok(json!({"name": "B", "x": 1})))
        .respond("GET", "http://s/u/3", ok(json!({"name": "C"})));
    let body: Value = host
        .handle::<Aggregate>(Request::new("GET", "/"))
        .json_body()
        .unwrap();
    assert_eq!(body["friends"], json!([{"name": "B"}, {"name": "C"}]));

    let many = MockHost::new().config(config).respond(
        "GET",
        "http://s/u",
        ok(json!({"friends": [1, 2, 3]})),
    );
    let body: Value = many
        .handle::<Aggregate>(Request::new("GET", "/"))
        .json_body()
        .unwrap();
    assert!(body["friends"].is_null());
    assert_eq!(body["errors"][0]["part"], "friend");
    assert!(
        body["errors"][0]["error"]
            .as_str()
            .unwrap()
            .contains("at most 2")
    );
    assert_eq!(many.calls().len(), 1, "over the cap nothing is called");
}

#[test]
fn configs_that_cannot_work_are_refused_naming_the_key() {
    let refuse = |config: Value, route: Option<&str>| -> String {
        let config: Config = serde_json::from_value(config).unwrap();
        config.plan(route).unwrap_err()
    };
    let one = |b: Value| json!({ "backends": [b] });
    let cases = [
        (json!({ "backends": [] }), "at least one"),
        (
            one(json!({ "name": "a", "url": "http://s/{id}" })),
            "no `{id}` parameter",
        ),
        (
            one(json!({ "name": "a", "url": "http://s/{b.x}" })),
            "no backend `b`",
        ),
        (
            one(json!({ "name": "a", "url": "http://s/{a.x}" })),
            "its own answer",
        ),
        (
            one(json!({ "name": "query", "url": "http://s/" })),
            "reserved",
        ),
        (
            one(json!({ "name": "a.b", "url": "http://s/" })),
            "not a name",
        ),
        (
            one(json!({ "name": "a", "url": "http://s/{each}" })),
            "needs for_each",
        ),
        (
            one(json!({ "name": "a", "url": "http://s/", "allow": ["x"], "deny": ["y"] })),
            "not both",
        ),
        (
            one(json!({ "name": "a", "url": "http://s/", "headers": {"host": "x"} })),
            "set by the gateway",
        ),
        (
            one(json!({ "name": "a", "url": "http://s/", "headers": {"x-a": "1\r\nx-b: 2"} })),
            "CR, LF",
        ),
        (
            one(json!({ "name": "a", "url": "http://s/", "allow": ["items["] })),
            "backends[0].allow[0]",
        ),
        (
            one(json!({ "name": "a", "url": "http://s/", "group": "errors" })),
            "errors key",
        ),
        (
            one(json!({ "name": "a", "url": "http://s/", "mapping": {"x": "y.z"} })),
            "not a key",
        ),
        (
            json!({ "backends": [
                { "name": "a", "url": "http://s/{b.x}" },
                { "name": "b", "url": "http://s/{a.x}" } ] }),
            "a, b depend on each other in a cycle",
        ),
        (
            json!({ "backends": [
                { "name": "a", "url": "http://s/" },
                { "name": "b", "url": "http://s/{each}", "for_each": "a.list[*]", "merge_as": "x" } ] }),
            "plain values",
        ),
        (
            json!({ "backends": [
                { "name": "a", "url": "http://s/" },
                { "name": "b", "url": "http://s/{each}", "for_each": "a.list[*].id" } ] }),
            "needs merge_as",
        ),
        (
            json!({ "backends": [
                { "name": "a", "url": "http://s/" },
                { "name": "b", "url": "http://s/x", "for_each": "a.list[*].id", "merge_as": "x" } ] }),
            "puts `{each}`",
        ),
        (
            json!({ "backends": [{ "name": "a", "url": "http://s/" }],
                    "compute": [{ "set": "t", "sum": "a[*]", "count": "a[*]" }] }),
            "compute[0]: give one of sum or count",
        ),
        (
            json!({ "backends": [{ "name": "a", "url": "http://s/" }], "max_each": 0 }),
            "max_each",
        ),
        (
            json!({ "backends": [{ "name": "a", "url": "http://s/" }], "params": { "nope": "integer" } }),
            "params.nope",
        ),
    ];
    for (config, says) in cases {
        let e = refuse(config.clone(), Some("/x/{id2}"));
        assert!(e.contains(says), "{config}\n→ {e}");
    }
    // Names and their backends are refused as a whole document by the SDK's parse.
    let e = tessera_sdk::parse_config::<Config>(
        r#"{"backends": [{"name": "a", "url": "http://s/", "requird": true}]}"#,
    )
    .unwrap_err();
    assert!(e.starts_with("backends[0].requird: unknown field"), "{e}");
}
