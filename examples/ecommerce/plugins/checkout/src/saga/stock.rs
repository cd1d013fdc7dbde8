//! The cart, the catalogue and the inventory: reading the cart, pricing and reserving every
//! line, releasing the reservations.

use serde_json::{Value, json};
use tessera_ecommerce_model::{Cart, OutOfStock, price_cents, product_summary};
use tessera_sdk::http;

use super::{Line, Priced, Saga, cart_empty, key_used_elsewhere, merge};
use crate::answer::{Failure, Undo, UndoStatus};
use crate::config::ms;
use crate::services::{
    self, call_failure, field, may_have_arrived, settled, status_failure, unexpected,
};

impl Saga<'_> {
    /// The cart's lines, one per product.
    pub(super) fn read_cart(&self) -> Result<Vec<Line>, Failure> {
        let timeouts = &self.config.timeouts_ms;
        let result = http::get(services::cart(self.input.user_id))
            .timeout(ms(timeouts.cart))
            .send();
        let response = match result {
            Err(e) => return Err(call_failure("cart", "the carts service", &e)),
            Ok(r) if r.status() == 404 => return Err(cart_empty()),
            Ok(r) if r.is_success() => r,
            Ok(r) => return Err(status_failure("cart", "the carts service", &r)),
        };
        let cart: Cart = response.json_body().map_err(|e| {
            unexpected("cart", "the carts service").detail(format!("cart: {}", e.message()))
        })?;
        if cart.user_id != self.input.user_id {
            return Err(unexpected("cart", "the carts service").detail(format!(
                "asked for the cart of user {}, got user {}'s",
                self.input.user_id, cart.user_id
            )));
        }
        let lines = merge(&cart.items)
            .map_err(|why| unexpected("cart", "the carts service").detail(why))?;
        if lines.is_empty() {
            return Err(cart_empty());
        }
        if lines.len() > self.config.max_products {
            return Err(Failure::new(
                409,
                "cart_too_large",
                format!(
                    "the cart holds {} different products; at most {} can be checked out at once",
                    lines.len(),
                    self.config.max_products
                ),
            )
            .at("cart"));
        }
        if let Some(line) = lines.iter().find(|l| l.quantity > self.config.max_quantity) {
            return Err(Failure::new(
                409,
                "cart_too_large",
                format!(
                    "the cart holds {} units of product {}; at most {} can be checked out at once",
                    line.quantity, line.product_id, self.config.max_quantity
                ),
            )
            .at("cart")
            .with("product_id", json!(line.product_id)));
        }
        Ok(lines)
    }

    /// Prices every product from the catalogue and reserves every line, all at once: a
    /// reservation needs no price, so lookups and holds overlap in one round trip, and a
    /// failure of either releases whatever was held.
    pub(super) fn price_and_reserve(&mut self, lines: &[Line]) -> Result<Vec<Priced>, Failure> {
        let timeouts = &self.config.timeouts_ms;
        let mut calls: Vec<http::OutgoingRequest> = lines
            .iter()
            .map(|l| http::get(services::product(l.product_id)).timeout(ms(timeouts.price)))
            .collect();
        for line in lines {
            let body = json!({ "reservation_id": self.id, "quantity": line.quantity });
            let call = http::post(services::reservations(line.product_id))
                .json(&body)
                .map_err(|e| Failure::new(500, "internal", e.message().to_owned()))?;
            calls.push(call.timeout(ms(timeouts.reserve)));
        }
        let mut results = http::send_all(calls);
        let holds = results.split_off(lines.len());

        let mut unknown = Vec::new();
        let mut reused = Vec::new();
        let mut out_of_stock = Vec::new();
        let mut failed: Vec<Failure> = Vec::new();
        for (line, result) in lines.iter().zip(holds) {
            match result {
                // 200 is the inventory answering this reservation id again: an earlier
                // checkout under the same id may have released or committed it since.
                Ok(r) if r.is_success() => match field(&r, "state").as_deref() {
                    Some(state) if state != "held" => reused.push(line.product_id),
                    _ => self.reserved.push(line.product_id),
                },
                Ok(r) if r.status() == 404 => unknown.push(line.product_id),
                Ok(r)
                    if r.status() == 409
                        && field(&r, "error").as_deref() == Some("out_of_stock") =>
                {
                    let body: Option<OutOfStock> = r.json_body().ok();
                    out_of_stock.push(json!({
                        "product_id": line.product_id,
                        "requested": line.quantity,
                        "available": body.and_then(|b| b.available),
                    }));
                }
                // The id is held for another quantity: an earlier checkout's.
                Ok(r)
                    if r.status() == 409
                        && field(&r, "error").as_deref() == Some("reservation_conflict") =>
                {
                    reused.push(line.product_id);
                }
                Ok(r) => {
                    // A server error may come after the hold was made: release it to be sure.
                    if r.status() >= 500 {
                        self.reserved.push(line.product_id);
                    }
                    failed.push(
                        status_failure("reserve", "the inventory", &r)
                            .with("product_id", json!(line.product_id)),
                    );
                }
                Err(e) => {
                    if may_have_arrived(&e) {
                        self.reserved.push(line.product_id);
                    }
                    failed.push(
                        call_failure("reserve", "the inventory", &e)
                            .with("product_id", json!(line.product_id)),
                    );
                }
            }
        }
        let mut priced = Vec::with_capacity(lines.len());
        for (line, result) in lines.iter().zip(results) {
            let product = match result {
                Ok(r) if r.status() == 404 => {
                    unknown.push(line.product_id);
                    continue;
                }
                Ok(r) if r.is_success() => r.json_body::<Value>().ok(),
                Ok(r) => {
                    failed.push(
                        status_failure("price", "the catalogue", &r)
                            .with("product_id", json!(line.product_id)),
                    );
                    continue;
                }
                Err(e) => {
                    failed.push(
                        call_failure("price", "the catalogue", &e)
                            .with("product_id", json!(line.product_id)),
                    );
                    continue;
                }
            };
            let cents = product.as_ref().and_then(price_cents);
            match (product, cents) {
                (Some(product), Some(unit_cents)) => priced.push(Priced {
                    line: *line,
                    unit_cents,
                    product: product_summary(&product),
                }),
                _ => failed.push(
                    unexpected("price", "the catalogue")
                        .with("product_id", json!(line.product_id))
                        .detail(format!("product {} has no usable price", line.product_id)),
                ),
            }
        }

        // Answers about the cart itself come first: they hold whatever else failed.
        if !unknown.is_empty() {
            unknown.sort_unstable();
            unknown.dedup();
            let names = unknown
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Failure::new(
                409,
                "unknown_product",
                format!("the cart holds products the catalogue does not sell: {names}"),
            )
            .at("price")
            .with("product_ids", json!(unknown)));
        }
        if !reused.is_empty() {
            return Err(key_used_elsewhere("reserve").detail(format!(
                "reservation {} of products {reused:?} belongs to an earlier checkout",
                self.id
            )));
        }
        if !out_of_stock.is_empty() {
            return Err(Failure::new(
                409,
                "out_of_stock",
                "not enough stock for every product in the cart; nothing was reserved or charged",
            )
            .at("reserve")
            .with("items", Value::Array(out_of_stock)));
        }
        if let Some(first) = failed.first() {
            let all_timeouts = failed.iter().all(|f| f.status == 504);
            let mut failure = first.clone();
            if !all_timeouts {
                failure.status = 502;
                failure.code = "upstream_unavailable";
            }
            return Err(failure);
        }
        Ok(priced)
    }

    /// Releases the reservations of `products`, all at once. Releasing is idempotent, and a
    /// reservation that was never made answers 404, which counts as released.
    pub(super) fn release(&self, products: &[u64]) -> Vec<Undo> {
        let timeout = ms(self.config.timeouts_ms.release);
        let calls = products
            .iter()
            .map(|p| http::delete(services::reservation(*p, &self.id)).timeout(timeout));
        products
            .iter()
            .zip(http::send_all(calls))
            .map(|(product_id, result)| Undo {
                action: "release_reservation",
                target: Some(("product_id", json!(product_id))),
                status: match settled(result, true) {
                    Ok(()) => UndoStatus::Done,
                    Err(why) => UndoStatus::Failed(format!("the inventory {why}")),
                },
            })
            .collect()
    }
}
