//! The orders service: the fixture orders, and orders placed by `POST /orders`.
//!
//! An order is placed once per `checkout_id`: the same request again answers the order already
//! placed, so a checkout that retries after a lost answer cannot order twice. A different request
//! under a `checkout_id` already used is refused (409), since answering the old order would hide
//! the caller's mistake.

use std::collections::HashMap;
use std::time::SystemTime;

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::http::{
    Answer, MAX_LINES, bad_request, check_id, check_quantity, json, method_not_allowed, not_found,
    parse_id, read_json, segments,
};
use crate::shop::{Shop, lock};

/// The first id given to a placed order; the fixture orders are numbered below it.
pub const FIRST_PLACED_ORDER_ID: u64 = 2001;

/// An order, in the shape the service answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Order {
    /// The order's id: the fixture's below 2001, placed orders from 2001 up.
    pub id: u64,
    /// The customer.
    pub user_id: u64,
    /// The store that sold it.
    pub store_id: u64,
    /// Where the order is.
    pub status: OrderStatus,
    /// When it was placed, RFC 3339 in UTC (`2026-11-22T10:00:00Z`).
    pub created_at: String,
    /// What was ordered.
    pub items: Vec<OrderItem>,
    /// The checkout that placed it; absent on the fixture orders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout_id: Option<String>,
    /// The payment that pays for it; absent on the fixture orders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderItem {
    /// The product's id.
    pub product_id: u64,
    /// How many, 1 to 1000.
    pub quantity: u32,
    /// The price of one unit when ordered, in the shop's currency (not cents, as the
    /// products' `price`).
    pub unit_price: f64,
}

/// An order's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    /// Placed, not shipped yet: the only status that can be cancelled.
    Processing,
    /// On its way.
    Shipped,
    /// Arrived.
    Delivered,
    /// Cancelled.
    Cancelled,
}

impl OrderStatus {
    fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Processing => "processing",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Delivered => "delivered",
            OrderStatus::Cancelled => "cancelled",
        }
    }
}

/// `POST /orders`'s body.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrder {
    checkout_id: String,
    user_id: u64,
    store_id: u64,
    payment_id: String,
    items: Vec<OrderItem>,
}

impl NewOrder {
    fn check(&self) -> Result<(), String> {
        check_id("checkout_id", &self.checkout_id)?;
        check_id("payment_id", &self.payment_id)?;
        if self.items.is_empty() || self.items.len() > MAX_LINES {
            return Err(format!(
                "items: 1 to {MAX_LINES} lines, got {}",
                self.items.len()
            ));
        }
        for (i, item) in self.items.iter().enumerate() {
            check_quantity(&format!("items[{i}].quantity"), item.quantity)?;
            // JSON has no NaN or infinity, so only the sign is left to check.
            if item.unit_price < 0.0 {
                return Err(format!(
                    "items[{i}].unit_price must not be negative, got {}",
                    item.unit_price
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
pub(crate) struct OrderBook {
    /// The fixture orders, then the placed ones in id order.
    orders: Vec<Order>,
    /// Placed orders by checkout id, with the request that placed them.
    by_checkout: HashMap<String, (u64, NewOrder)>,
    next_id: u64,
}

/// Why a change was refused.
#[derive(Debug, PartialEq)]
enum Refusal {
    UnknownOrder,
    CheckoutIdReused { order_id: u64 },
    NotCancellable { status: OrderStatus },
}

impl OrderBook {
    pub(crate) fn from_fixture() -> OrderBook {
        let orders: Vec<Order> = serde_json::from_str(include_str!("../fixtures/orders.json"))
            .expect("fixtures/orders.json is a list of orders (checked by a test)");
        let next_id = orders
            .iter()
            .map(|order| order.id + 1)
            .max()
            .unwrap_or(0)
            .max(FIRST_PLACED_ORDER_ID);
        OrderBook {
            orders,
            by_checkout: HashMap::new(),
            next_id,
        }
    }

    fn get(&self, id: u64) -> Option<&Order> {
        self.orders.iter().find(|order| order.id == id)
    }

    /// Places an order. `Ok((true, _))` for a new order, `Ok((false, _))` for the same request
    /// again.
    fn place(&mut self, new: NewOrder, created_at: String) -> Result<(bool, Order), Refusal> {
        if let Some((order_id, placed_by)) = self.by_checkout.get(&new.checkout_id) {
            return match (placed_by == &new, self.get(*order_id)) {
                (true, Some(order)) => Ok((false, order.clone())),
                _ => Err(Refusal::CheckoutIdReused {
                    order_id: *order_id,
                }),
            };
        }
        let order = Order {
            id: self.next_id,
            user_id: new.user_id,
            store_id: new.store_id,
            status: OrderStatus::Processing,
            created_at,
            items: new.items.clone(),
            checkout_id: Some(new.checkout_id.clone()),
            payment_id: Some(new.payment_id.clone()),
        };
        self.next_id += 1;
        self.by_checkout
            .insert(new.checkout_id.clone(), (order.id, new));
        self.orders.push(order.clone());
        Ok((true, order))
    }

    fn cancel(&mut self, id: u64) -> Result<Order, Refusal> {
        let order = self
            .orders
            .iter_mut()
            .find(|order| order.id == id)
            .ok_or(Refusal::UnknownOrder)?;
        match order.status {
            OrderStatus::Processing | OrderStatus::Cancelled => {
                order.status = OrderStatus::Cancelled;
                Ok(order.clone())
            }
            status => Err(Refusal::NotCancellable { status }),
        }
    }
}

fn refused(id: u64, refusal: Refusal) -> Answer {
    match refusal {
        Refusal::UnknownOrder => not_found("no such orders record"),
        Refusal::CheckoutIdReused { order_id } => json(
            StatusCode::CONFLICT,
            &json!({
                "error": "checkout_id_conflict",
                "message": format!(
                    "checkout_id already placed order {order_id} with a different request"
                ),
                "order_id": order_id,
            }),
        ),
        Refusal::NotCancellable { status } => json(
            StatusCode::CONFLICT,
            &json!({
                "error": "not_cancellable",
                "message": format!("order {id} is {}; only a processing order can be cancelled", status.as_str()),
                "status": status,
            }),
        ),
    }
}

/// The user id of `GET /orders?user_id={id}`.
fn user_id_query(query: Option<&str>) -> Option<u64> {
    query
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("user_id=")))
        .and_then(|v| v.parse::<u64>().ok())
}

/// The orders service's routes.
pub(crate) async fn answer(shop: &Shop, request: Request<Incoming>) -> Answer {
    let (parts, body) = request.into_parts();
    let orders = &shop.state.orders;
    match (segments(parts.uri.path()).as_slice(), parts.method) {
        (["orders"], Method::GET) => {
            let Some(user_id) = user_id_query(parts.uri.query()) else {
                return bad_request("user_id is required");
            };
            let orders = lock(orders);
            let mine: Vec<&Order> = orders
                .orders
                .iter()
                .filter(|order| order.user_id == user_id)
                .collect();
            json(StatusCode::OK, &mine)
        }
        (["orders"], Method::POST) => {
            let new: NewOrder = match read_json(body).await {
                Ok(new) => new,
                Err(answer) => return answer,
            };
            if let Err(message) = new.check() {
                return bad_request(message);
            }
            match lock(orders).place(new, rfc3339_utc(SystemTime::now())) {
                Ok((true, order)) => json(StatusCode::CREATED, &order),
                Ok((false, order)) => json(StatusCode::OK, &order),
                Err(refusal) => refused(0, refusal),
            }
        }
        (["orders"], _) => method_not_allowed("GET, POST"),
        (["orders", id], method) => {
            if method != Method::GET {
                return method_not_allowed("GET");
            }
            match parse_id(id).and_then(|id| lock(orders).get(id).cloned()) {
                Some(order) => json(StatusCode::OK, &order),
                None => not_found("no such orders record"),
            }
        }
        (["orders", id, "cancel"], method) => {
            if method != Method::POST {
                return method_not_allowed("POST");
            }
            let Some(id) = parse_id(id) else {
                return not_found("no such orders record");
            };
            match lock(orders).cancel(id) {
                Ok(order) => json(StatusCode::OK, &order),
                Err(refusal) => refused(id, refusal),
            }
        }
        (_, Method::GET) => not_found("no such orders record"),
        _ => not_found("no such resource"),
    }
}

/// `time` as RFC 3339 in UTC to the second, e.g. `2026-11-22T10:00:00Z`.
pub(crate) fn rfc3339_utc(time: SystemTime) -> String {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01: Howard Hinnant's `civil_from_days`
/// (<https://howardhinnant.github.io/date_algorithms.html>), for days on or after the epoch.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

impl Shop {
    /// The orders placed through `POST /orders`, in id order, as they are now.
    pub fn created_orders(&self) -> Vec<Order> {
        lock(&self.state.orders)
            .orders
            .iter()
            .filter(|order| order.id >= FIRST_PLACED_ORDER_ID)
            .cloned()
            .collect()
    }

    /// One order, fixture or placed.
    pub fn order(&self, id: u64) -> Option<Order> {
        lock(&self.state.orders).get(id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn new_order(checkout_id: &str) -> NewOrder {
        NewOrder {
            checkout_id: checkout_id.into(),
            user_id: 1,
            store_id: 10,
            payment_id: "pay_000001".into(),
            items: vec![OrderItem {
                product_id: 100,
                quantity: 2,
                unit_price: 74.99,
            }],
        }
    }

    #[test]
    fn fixture_orders_answer_exactly_as_the_fixture_reads() {
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../fixtures/orders.json")).unwrap();
        let book = OrderBook::from_fixture();
        let fixture = fixture.as_array().unwrap();
        assert_eq!(fixture.len(), book.orders.len());
        for (value, order) in fixture.iter().zip(&book.orders) {
            assert_eq!(serde_json::to_string(order).unwrap(), value.to_string());
        }
        assert_eq!(book.next_id, FIRST_PLACED_ORDER_ID);
    }

    #[test]
    fn placing_is_once_per_checkout_id() {
        let mut book = OrderBook::from_fixture();
        let (created, first) = book
            .place(new_order("c1"), "2026-11-22T10:00:00Z".into())
            .unwrap();
        assert!(created);
        assert_eq!(first.id, 2001);
        assert_eq!(first.status, OrderStatus::Processing);
        let (created, again) = book
            .place(new_order("c1"), "2026-11-22T10:05:00Z".into())
            .unwrap();
        assert!(!created);
        assert_eq!(again, first);
        let mut other = new_order("c1");
        other.items[0].quantity = 3;
        assert_eq!(
            book.place(other, String::new()),
            Err(Refusal::CheckoutIdReused { order_id: 2001 })
        );
        let (_, second) = book.place(new_order("c2"), String::new()).unwrap();
        assert_eq!(second.id, 2002);
    }

    #[test]
    fn only_processing_orders_cancel() {
        let mut book = OrderBook::from_fixture();
        assert_eq!(book.cancel(1003).unwrap().status, OrderStatus::Cancelled);
        assert_eq!(book.cancel(1003).unwrap().status, OrderStatus::Cancelled);
        assert_eq!(book.cancel(1005).unwrap().status, OrderStatus::Cancelled);
        assert_eq!(
            book.cancel(1001),
            Err(Refusal::NotCancellable {
                status: OrderStatus::Delivered
            })
        );
        assert_eq!(book.cancel(4242), Err(Refusal::UnknownOrder));
    }

    #[test]
    fn new_orders_are_checked() {
        assert!(new_order("c").check().is_ok());
        let mut o = new_order("");
        assert_eq!(
            o.check().unwrap_err(),
            "checkout_id must be 1 to 128 characters, got 0"
        );
        o = new_order("c");
        o.items.clear();
        assert_eq!(o.check().unwrap_err(), "items: 1 to 100 lines, got 0");
        o = new_order("c");
        o.items[0].quantity = 0;
        assert_eq!(
            o.check().unwrap_err(),
            "items[0].quantity must be 1 to 1000, got 0"
        );
        o = new_order("c");
        o.items[0].unit_price = -1.0;
        assert_eq!(
            o.check().unwrap_err(),
            "items[0].unit_price must not be negative, got -1"
        );
        o = new_order("c");
        o.payment_id = "x".repeat(129);
        assert!(o.check().unwrap_err().starts_with("payment_id"));
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let at = |secs| rfc3339_utc(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_789_381_260), "2026-09-14T10:21:00Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59Z");
        assert_eq!(at(4_107_542_400), "2100-03-01T00:00:00Z");
    }
}
