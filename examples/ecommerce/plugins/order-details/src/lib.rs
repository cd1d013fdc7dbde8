//! `GET /api/orders/{id}`: the order, then concurrently its user, its store and every product
//! of its lines, merged into one document.
//!
//! ```json
//! { "order": { "id": 1001, "status": "delivered", "created_at": "…", "store_id": 10, "total": 139.69,
//!              "items": [ { "product_id": 100, "quantity": 1, "unit_price": 74.99, "product": { … } } ] },
//!   "user": { "id": 1, "name": "Ada Lovelace", "loyalty_tier": "gold" },
//!   "store": { "id": 10, "name": "…", "city": "London", … },
//!   "errors": [] }
//! ```
//!
//! No such order: 404. Orders service failing: 502 (504 on timeout). User, store or product
//! service failing: 200 with that part `null` and an entry in `errors` (`{"part": "store",
//! "error": "…"}`; products are named `product:<id>`).

use serde_json::json;
use tessera_ecommerce_model::{Errors, Missing, Order, json_of, public_user, store_summary};
use tessera_sdk::{Error, Handler, Request, Response, context, http};

/// The handler.
#[derive(Debug)]
pub struct OrderDetails;

impl Handler for OrderDetails {
    fn handle(_request: Request) -> Result<Response, Error> {
        let id =
            context::param("id").ok_or_else(|| Error::internal("route has no {id} parameter"))?;
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::bad_request("order id must be a number"));
        }
        let order = match json_of(http::get(format!("http://orders/orders/{id}")).send()) {
            Ok(v) => v,
            Err(Missing::NotFound) => {
                return Err(Error::not_found(format!("order {id} not found")));
            }
            Err(Missing::Failed(why)) => {
                return Err(Error::new(502, format!("orders service: {why}")));
            }
        };
        let order: Order = serde_json::from_value(order).map_err(|e| {
            Error::new(502, format!("orders service sent an unexpected order: {e}"))
        })?;

        // Everything else depends only on the order: fetch it all at once.
        let product_ids = order.product_ids();
        let mut calls = vec![
            http::get(format!("http://users/users/{}", order.user_id)),
            http::get(format!("http://stores/stores/{}", order.store_id)),
        ];
        calls.extend(
            product_ids
                .iter()
                .map(|p| http::get(format!("http://products/products/{p}"))),
        );
        let mut results = http::send_all(calls).into_iter();

        let mut errors = Errors::default();
        let user = errors.part("user", next(&mut results).map(|u| public_user(&u)));
        let store = errors.part("store", next(&mut results).map(|s| store_summary(&s)));
        let products = errors.products(&product_ids, results);
        Ok(Response::json(
            200,
            &json!({
                "order": order.to_json(&products),
                "user": user,
                "store": store,
                "errors": errors.into_json(),
            }),
        ))
    }
}

fn next(
    results: &mut impl Iterator<Item = Result<Response, http::HttpError>>,
) -> Result<serde_json::Value, Missing> {
    json_of(
        results
            .next()
            .unwrap_or(Err(http::HttpError::InvalidRequest(
                "missing result".into(),
            ))),
    )
}

tessera_sdk::handler!(OrderDetails);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use tessera_sdk::testing::MockHost;

    fn ok(value: serde_json::Value) -> Response {
        Response::json(200, &value)
    }

    fn host_with_order() -> MockHost {
        let ms = Duration::from_millis;
        MockHost::new()
            .param("id", "1001")
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
            .respond("GET", "http://stores/stores/10", ok(json!({"id": 10, "name": "Soho", "city": "London"})))
            .delay("GET", "http://stores/stores/10", ms(100))
            .respond("GET", "http://products/products/100", ok(json!({"id": 100, "name": "TAOCP", "category": "books", "price": 74.99, "stock": 3})))
            .delay("GET", "http://products/products/100", ms(100))
            .respond("GET", "http://products/products/103", ok(json!({"id": 103, "name": "Notebook", "category": "stationery", "price": 9.9})))
            .delay("GET", "http://products/products/103", ms(100))
    }

    #[test]
    fn merges_order_user_store_and_products_fetching_concurrently() {
        let host = host_with_order();
        let response = host.handle::<OrderDetails>(Request::new("GET", "/api/orders/1001"));
        assert_eq!(response.status(), 200, "{}", response.text_body());
        let body: serde_json::Value = response.json_body().unwrap();
        assert_eq!(
            body["user"],
            json!({"id": 1, "name": "Ada", "loyalty_tier": "gold"}),
            "private fields must not leak"
        );
        assert_eq!(body["store"]["name"], "Soho");
        assert_eq!(body["order"]["total"], 179.68);
        assert_eq!(body["order"]["items"][1]["product"]["name"], "Notebook");
        assert_eq!(body["order"]["items"][2]["product"]["id"], 100);
        assert_eq!(body["errors"], json!([]));
        // One call for the order, then user + store + 2 distinct products at once.
        assert_eq!(host.calls().len(), 5);
        assert_eq!(
            host.elapsed(),
            Duration::from_millis(150),
            "secondary calls must overlap"
        );
    }

    #[test]
    fn unknown_order_is_404() {
        let host = MockHost::new().param("id", "42").respond(
            "GET",
            "http://orders/orders/42",
            Response::json(404, &json!({"error": "no"})),
        );
        let response = host.handle::<OrderDetails>(Request::new("GET", "/api/orders/42"));
        assert_eq!(response.status(), 404);
        assert_eq!(host.calls().len(), 1);
    }

    #[test]
    fn failing_store_service_leaves_store_null_and_says_so() {
        let host = host_with_order().fail(
            "GET",
            "http://stores/stores/10",
            http::HttpError::ConnectionFailed("connection refused".into()),
        );
        let response = host.handle::<OrderDetails>(Request::new("GET", "/api/orders/1001"));
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json_body().unwrap();
        assert!(body["store"].is_null());
        assert_eq!(body["errors"][0]["part"], "store");
        assert!(body["user"]["name"].is_string());
    }

    #[test]
    fn failing_orders_service_is_502_and_bad_ids_400() {
        let host = MockHost::new().param("id", "7").fail(
            "GET",
            "http://orders/orders/7",
            http::HttpError::Timeout,
        );
        assert_eq!(
            host.handle::<OrderDetails>(Request::new("GET", "/api/orders/7"))
                .status(),
            502
        );
        let host = MockHost::new().param("id", "7;drop");
        assert_eq!(
            host.handle::<OrderDetails>(Request::new("GET", "/"))
                .status(),
            400
        );
        assert!(host.calls().is_empty());
    }
}
