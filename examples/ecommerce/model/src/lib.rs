//! What the e-commerce plugins read from the services and how they shape their answers.
//!
//! Merged answers carry an `errors` array: when a secondary service fails, the part it would
//! have filled is `null` and `errors` says which part is missing and why, while the answer
//! stays 200. Missing primary data (the order, the user of a history) is a 404.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tessera_sdk::Response;
use tessera_sdk::http::HttpError;

/// An order as the orders service returns it.
#[derive(Debug, Clone, Deserialize)]
pub struct Order {
    /// Order id.
    pub id: u64,
    /// Who ordered.
    pub user_id: u64,
    /// Where.
    pub store_id: u64,
    /// `processing`, `shipped`, `delivered`, `cancelled`.
    pub status: String,
    /// RFC 3339 timestamp.
    pub created_at: String,
    /// Lines of the order.
    pub items: Vec<Item>,
}

/// One order line.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Item {
    /// Product id.
    pub product_id: u64,
    /// How many.
    pub quantity: u32,
    /// Price per unit when ordered.
    pub unit_price: f64,
}

impl Order {
    /// Sum of the lines, rounded to cents.
    pub fn total(&self) -> f64 {
        let cents: f64 = self
            .items
            .iter()
            .map(|i| (i.unit_price * 100.0).round() * f64::from(i.quantity))
            .sum();
        cents / 100.0
    }

    /// Distinct product ids in first-seen order.
    pub fn product_ids(&self) -> Vec<u64> {
        let mut ids = Vec::new();
        for item in &self.items {
            if !ids.contains(&item.product_id) {
                ids.push(item.product_id);
            }
        }
        ids
    }

    /// The order with each line's product (or `null`) merged in.
    pub fn to_json(&self, products: &HashMap<u64, Value>) -> Value {
        let items: Vec<Value> = self
            .items
            .iter()
            .map(|i| {
                json!({
                    "product_id": i.product_id,
                    "quantity": i.quantity,
                    "unit_price": i.unit_price,
                    "product": products.get(&i.product_id).cloned().unwrap_or(Value::Null),
                })
            })
            .collect();
        json!({
            "id": self.id,
            "status": self.status,
            "created_at": self.created_at,
            "store_id": self.store_id,
            "total": self.total(),
            "items": items,
        })
    }
}

/// The fields of a user record that may leave the gateway.
pub fn public_user(user: &Value) -> Value {
    json!({
        "id": user["id"],
        "name": user["name"],
        "loyalty_tier": user["loyalty_tier"],
    })
}

/// The fields of a product a client needs with an order.
pub fn product_summary(product: &Value) -> Value {
    json!({
        "id": product["id"],
        "name": product["name"],
        "category": product["category"],
        "price": product["price"],
    })
}

/// The fields of a store a client needs with an order.
pub fn store_summary(store: &Value) -> Value {
    json!({
        "id": store["id"],
        "name": store["name"],
        "city": store["city"],
        "address": store["address"],
        "opening_hours": store["opening_hours"],
    })
}

/// Why a part of an answer is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// The service answered 404.
    NotFound,
    /// The service answered another non-2xx status, the body was not JSON, or the call failed.
    Failed(String),
}

/// A service's JSON answer, or why there is none.
pub fn json_of(result: Result<Response, HttpError>) -> Result<Value, Missing> {
    match result {
        Ok(r) if r.status() == 404 => Err(Missing::NotFound),
        Ok(r) if r.is_success() => r
            .json_body::<Value>()
            .map_err(|e| Missing::Failed(e.message().to_owned())),
        Ok(r) => Err(Missing::Failed(format!("service answered {}", r.status()))),
        Err(e) => Err(Missing::Failed(e.to_string())),
    }
}

/// Collects the `errors` entries of a merged answer.
#[derive(Debug, Default)]
pub struct Errors(Vec<Value>);

impl Errors {
    /// Takes a secondary part: its value, or `null` plus an entry naming `part`.
    pub fn part(&mut self, part: &str, result: Result<Value, Missing>) -> Value {
        match result {
            Ok(v) => v,
            Err(Missing::NotFound) => {
                self.0.push(json!({ "part": part, "error": "not found" }));
                Value::Null
            }
            Err(Missing::Failed(why)) => {
                self.0.push(json!({ "part": part, "error": why }));
                Value::Null
            }
        }
    }

    /// Takes the product answers for `ids`, in order: summaries by id for those that came, and an
    /// entry (`product:<id>`) for each that did not.
    pub fn products(
        &mut self,
        ids: &[u64],
        results: impl IntoIterator<Item = Result<Response, HttpError>>,
    ) -> HashMap<u64, Value> {
        let mut results = results.into_iter();
        let mut products = HashMap::new();
        for id in ids {
            let result = results
                .next()
                .unwrap_or_else(|| Err(HttpError::InvalidRequest("missing result".into())));
            let product = self.part(
                &format!("product:{id}"),
                json_of(result).map(|p| product_summary(&p)),
            );
            if !product.is_null() {
                products.insert(*id, product);
            }
        }
        products
    }

    /// The entries, for the answer.
    pub fn into_json(self) -> Value {
        Value::Array(self.0)
    }
}

/// A cart as the carts service returns it (`GET /carts/{user_id}`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Cart {
    /// Whose cart.
    pub user_id: u64,
    /// What is in it; a product may appear on several lines.
    pub items: Vec<CartItem>,
}

/// One line of a cart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub struct CartItem {
    /// Product id.
    pub product_id: u64,
    /// How many.
    pub quantity: u32,
}

/// The body of `POST /orders` on the orders service. Creating an order twice with the same
/// `checkout_id` creates it once.
#[derive(Debug, Clone, Serialize)]
pub struct NewOrder {
    /// The checkout the order comes from.
    pub checkout_id: String,
    /// Who ordered.
    pub user_id: u64,
    /// Where.
    pub store_id: u64,
    /// The payment that pays for it.
    pub payment_id: String,
    /// Lines, priced from the catalogue.
    pub items: Vec<Item>,
}

/// The body of a 409 from `POST /inventory/{product_id}/reservations`.
#[derive(Debug, Clone, Deserialize)]
pub struct OutOfStock {
    /// `out_of_stock`.
    pub error: String,
    /// The product.
    pub product_id: Option<u64>,
    /// Units asked for.
    pub requested: Option<u64>,
    /// Units there are.
    pub available: Option<u64>,
}

/// Most a catalogue price may be, in currency units; more is refused as implausible.
pub const MAX_PRICE: f64 = 1e9;

/// A product's `price` (a decimal in currency units, e.g. `74.99`) in cents: `None` unless it is
/// a number from 0 to [`MAX_PRICE`] with at most two decimals.
pub fn price_cents(product: &Value) -> Option<i64> {
    let price = product.get("price")?.as_f64()?;
    if !(0.0..=MAX_PRICE).contains(&price) {
        return None;
    }
    let cents = (price * 100.0).round();
    // 9.9 * 100 is 990.0000000000001: anything closer than that is the same cent.
    if (price * 100.0 - cents).abs() > 1e-6 {
        return None;
    }
    #[allow(clippy::cast_possible_truncation)] // bounded by MAX_PRICE above
    Some(cents as i64)
}

/// Cents as a decimal in currency units (`7499` → `74.99`), as the services and answers write
/// amounts.
pub fn decimal(cents: i64) -> f64 {
    #[allow(clippy::cast_precision_loss)] // exact below 2^53 cents
    let value = cents as f64 / 100.0;
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_read_as_cents() {
        let cents = |v: Value| price_cents(&json!({ "price": v }));
        assert_eq!(cents(json!(74.99)), Some(7499));
        assert_eq!(cents(json!(9.9)), Some(990));
        assert_eq!(cents(json!(35)), Some(3500));
        assert_eq!(cents(json!(0)), Some(0));
        assert_eq!(cents(json!(0.001)), None);
        assert_eq!(cents(json!(-1)), None);
        assert_eq!(cents(json!(2e9)), None);
        assert_eq!(cents(json!("9.90")), None);
        assert_eq!(price_cents(&json!({})), None);
        assert_eq!(decimal(7499), 74.99);
        assert_eq!(decimal(990), 9.9);
        assert_eq!(decimal(0), 0.0);
    }
}
