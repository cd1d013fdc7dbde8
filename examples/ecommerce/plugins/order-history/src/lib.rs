//! `GET /api/users/{id}/orders?limit=N`: the user and the user's orders concurrently, then every
//! distinct product of those orders concurrently (each product fetched once), merged.
//!
//! ```json
//! { "user": { "id": 1, "name": "Ada Lovelace", "loyalty_tier": "gold" },
//!   "orders": [ { "id": 1003, "status": "processing", "total": 69.3, "items": [ … with "product" … ] } ],
//!   "errors": [] }
//! ```
//!
//! Orders are newest first; `limit` (default 10, 1..=50) caps how many. No such user: 404.
//! Orders service failing: 502. User or product service failing: 200 with `null` parts and
//! `errors` entries, as in order-details.

use serde_json::{Value, json};
use tessera_ecommerce_model::{Errors, Missing, Order, json_of, public_user};
use tessera_sdk::{Error, Handler, Request, Response, context, http};

/// Default and largest `limit`.
const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 50;

/// The handler.
#[derive(Debug)]
pub struct OrderHistory;

impl Handler for OrderHistory {
    fn handle(request: Request) -> Result<Response, Error> {
        let id =
            context::param("id").ok_or_else(|| Error::internal("route has no {id} parameter"))?;
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::bad_request("user id must be a number"));
        }
        let limit = match request.query_param("limit") {
            None => DEFAULT_LIMIT,
            Some(l) => match l.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(Error::bad_request(format!(
                        "limit must be between 1 and {MAX_LIMIT}"
                    )));
                }
            },
        };

        // The user and the orders do not depend on each other: start both, then wait.
        let user = http::get(format!("http://users/users/{id}")).start();
        let orders = http::get(format!("http://orders/orders?user_id={id}")).start();
        let (user, orders) = (json_of(user.wait()), json_of(orders.wait()));

        let mut errors = Errors::default();
        let user = match user {
            Err(Missing::NotFound) => return Err(Error::not_found(format!("user {id} not found"))),
            other => errors.part("user", other.map(|u| public_user(&u))),
        };
        let mut orders: Vec<Order> = match orders {
            Ok(v) => serde_json::from_value(v).map_err(|e| {
                Error::new(502, format!("orders service sent unexpected orders: {e}"))
            })?,
            Err(Missing::NotFound) => Vec::new(),
            Err(Missing::Failed(why)) => {
                return Err(Error::new(502, format!("orders service: {why}")));
            }
        };
        // RFC 3339 UTC timestamps sort as text.
        orders.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        orders.truncate(limit);

        let mut product_ids: Vec<u64> = Vec::new();
        for order in &orders {
            for p in order.product_ids() {
                if !product_ids.contains(&p) {
                    product_ids.push(p);
                }
            }
        }
        let results = http::send_all(
            product_ids
                .iter()
                .map(|p| http::get(format!("http://products/products/{p}"))),
        );
        let products = errors.products(&product_ids, results);
        let orders: Vec<Value> = orders.iter().map(|o| o.to_json(&products)).collect();
        Ok(Response::json(
            200,
            &json!({ "user": user, "orders": orders, "errors": errors.into_json() }),
        ))
    }
}

tessera_sdk::handler!(OrderHistory);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use tessera_sdk::testing::MockHost;

    fn ok(value: Value) -> Response {
        Response::json(200, &value)
    }

    fn host() -> MockHost {
        let ms = Duration::from_millis;
        MockHost::new()
            .param("id", "1")
            .respond("GET", "http://users/users/1", ok(json!({"id": 1, "name": "Ada", "email": "x", "loyalty_tier": "gold"})))
            .delay("GET", "http://users/users/1", ms(80))
            .respond(
                "GET",
                "http://orders/orders?user_id=1",
                ok(json!([
                    {"id": 1, "user_id": 1, "store_id": 10, "status": "delivered", "created_at": "2026-01-01T00:00:00Z",
                     "items": [{"product_id": 100, "quantity": 1, "unit_price": 1.0}]},
                    {"id": 2, "user_id": 1, "store_id": 10, "status": "shipped", "created_at": "2026-02-01T00:00:00Z",
                     "items": [{"product_id": 100, "quantity": 2, "unit_price": 1.0}, {"product_id": 101, "quantity": 1, "unit_price": 2.5}]}
                ])),
            )
            .delay("GET", "http://orders/orders?user_id=1", ms(100))
            .respond("GET", "http://products/products/100", ok(json!({"id": 100, "name": "A", "category": "c", "price": 1.0})))
            .delay("GET", "http://products/products/100", ms(50))
            .respond("GET", "http://products/products/101", ok(json!({"id": 101, "name": "B", "category": "c", "price": 2.5})))
            .delay("GET", "http://products/products/101", ms(50))
    }

    #[test]
    fn newest_first_each_product_fetched_once_and_concurrently() {
        let host = host();
        let response = host.handle::<OrderHistory>(Request::new("GET", "/api/users/1/orders"));
        assert_eq!(response.status(), 200, "{}", response.text_body());
        let body: Value = response.json_body().unwrap();
        assert_eq!(body["user"]["name"], "Ada");
        assert!(body["user"].get("email").is_none());
        assert_eq!(body["orders"][0]["id"], 2);
        assert_eq!(body["orders"][0]["items"][1]["product"]["name"], "B");
        assert_eq!(body["orders"][1]["items"][0]["product"]["name"], "A");
        let product_calls = host
            .calls()
            .iter()
            .filter(|c| c.url().contains("/products/"))
            .count();
        assert_eq!(product_calls, 2, "each distinct product once");
        // max(user 80, orders 100) + max(products 50, 50).
        assert_eq!(host.elapsed(), Duration::from_millis(150));
    }

    #[test]
    fn limit_is_applied_and_checked() {
        let host = host();
        let body: Value = host
            .handle::<OrderHistory>(Request::new("GET", "/api/users/1/orders?limit=1"))
            .json_body()
            .unwrap();
        assert_eq!(body["orders"].as_array().unwrap().len(), 1);
        assert_eq!(body["orders"][0]["id"], 2);
        let host = self::host();
        assert_eq!(
            host.handle::<OrderHistory>(Request::new("GET", "/?limit=0"))
                .status(),
            400
        );
        assert_eq!(
            host.handle::<OrderHistory>(Request::new("GET", "/?limit=abc"))
                .status(),
            400
        );
    }

    #[test]
    fn unknown_user_is_404() {
        let host = MockHost::new()
            .param("id", "9")
            .respond(
                "GET",
                "http://users/users/9",
                Response::json(404, &json!({})),
            )
            .respond("GET", "http://orders/orders?user_id=9", ok(json!([])));
        assert_eq!(
            host.handle::<OrderHistory>(Request::new("GET", "/"))
                .status(),
            404
        );
    }
}
