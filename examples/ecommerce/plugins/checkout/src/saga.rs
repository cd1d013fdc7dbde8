//! The checkout as a saga: each step that changes something is recorded, and on a failure the
//! recorded steps are undone in reverse (cancel the order, void the payment, release the
//! reservations) before the client is answered.

use std::collections::HashMap;

use serde_json::{Value, json};
use tessera_ecommerce_model::{
    Cart, CartItem, Item, NewOrder, Order, OutOfStock, decimal, price_cents, product_summary,
};
use tessera_ecommerce_payments_api::{
    AuthorizeRequest, CaptureRequest, Payment, RefundRequest, State, VoidRequest,
};
use tessera_sdk::grpc::{self, Code, GrpcError};
use tessera_sdk::http::{self, HttpError};
use tessera_sdk::{Response, log};

use crate::answer::{Answer, Failure, Undo, UndoStatus};
use crate::config::{Config, ms};
use crate::input::Input;
use crate::services;

/// A cart line after merging the lines of one product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Line {
    product_id: u64,
    quantity: u32,
}

/// A line priced from the catalogue.
#[derive(Debug, Clone)]
struct Priced {
    line: Line,
    unit_cents: i64,
    product: Value,
}

/// What the checkout has done so far that a failure must undo.
#[derive(Debug)]
struct Saga<'a> {
    config: &'a Config,
    input: &'a Input,
    id: String,
    /// Products whose reservation is held, or may be (its call's outcome is unknown).
    reserved: Vec<u64>,
    /// The authorised payment, to void.
    payment: Option<String>,
    /// Set when the authorisation's outcome is unknown (it timed out).
    payment_unknown: bool,
    /// The created order, to cancel.
    order: Option<u64>,
    /// Set when the order's creation timed out.
    order_unknown: bool,
}

/// Runs checkout `id` for `input` and answers: 201 with the order and the payment, or the
/// failure with what was undone.
pub fn run(config: &Config, input: &Input, id: &str) -> Answer {
    let mut saga = Saga {
        config,
        input,
        id: id.to_owned(),
        reserved: Vec::new(),
        payment: None,
        payment_unknown: false,
        order: None,
        order_unknown: false,
    };
    match saga.forward() {
        Ok(answer) => answer,
        Err(failure) => {
            let undone = saga.compensate();
            failure.into_checkout_answer(id, &undone)
        }
    }
}

impl Saga<'_> {
    fn forward(&mut self) -> Result<Answer, Failure> {
        let lines = self.read_cart()?;
        let priced = self.price_and_reserve(&lines)?;
        let amount = total_cents(&priced)?;
        if amount == 0 {
            return Err(Failure::new(
                409,
                "nothing_to_pay",
                "the cart's total is 0; there is no payment to take",
            )
            .at("price"));
        }
        let authorized = self.authorize(amount)?;
        let order = self.create_order(&priced, &authorized.id)?;
        let captured = self.capture(&authorized.id, amount)?;
        // Past the capture the checkout has happened: what follows is bookkeeping whose failures
        // are reported as warnings, never undone.
        let warnings = self.finish(&lines);
        let products: HashMap<u64, Value> = priced
            .iter()
            .map(|p| (p.line.product_id, p.product.clone()))
            .collect();
        log::info(format!(
            "checkout {}: order {} paid with payment {} ({} cents)",
            self.id, order.id, captured.id, amount
        ));
        Ok(Answer {
            status: 201,
            body: json!({
                "checkout_id": self.id,
                "order": order.to_json(&products),
                "payment": payment_json(&captured),
                "warnings": warnings,
            }),
            location: Some(self.config.location_of(order.id)),
            retry_after: None,
        })
    }

    /// The cart's lines, one per product.
    fn read_cart(&self) -> Result<Vec<Line>, Failure> {
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
    fn price_and_reserve(&mut self, lines: &[Line]) -> Result<Vec<Priced>, Failure> {
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

    /// Authorises `amount` cents on the card.
    fn authorize(&mut self, amount: i64) -> Result<Payment, Failure> {
        let currency = &self.config.currency;
        let request = AuthorizeRequest {
            idempotency_key: format!("{}:authorize", self.id),
            card_number: self.input.card_number.clone(),
            amount_cents: amount,
            currency: currency.clone(),
            reference: self.id.clone(),
        };
        let result = grpc::unary(services::payments("Authorize"), &request)
            .timeout(ms(self.config.timeouts_ms.authorize))
            .send::<Payment>();
        let payment = match result {
            Ok(p) => p,
            Err(e) => {
                if outcome_unknown(&e) {
                    self.payment_unknown = true;
                }
                if e.code() == Code::AlreadyExists {
                    return Err(key_used_elsewhere("authorize").detail(e.to_string()));
                }
                return Err(payment_failure("authorize", &e));
            }
        };
        match State::try_from(payment.state) {
            Ok(State::Authorized) => {
                self.payment = Some(payment.id.clone());
                if payment.amount_cents != amount || &payment.currency != currency {
                    return Err(unexpected_payment("authorize").detail(format!(
                        "asked to authorise {amount} {currency}, payment {} holds {} {}",
                        payment.id, payment.amount_cents, payment.currency
                    )));
                }
                Ok(payment)
            }
            Ok(State::Declined) => Err(Failure::new(
                402,
                "payment_declined",
                "the card was declined; nothing was charged",
            )
            .at("authorize")
            .with("reason", json!(decline_reason(&payment.decline_reason)))),
            // The payment service answers an idempotency key's first result again: this key's
            // payment belongs to an earlier checkout that went on without this request.
            Ok(State::Captured | State::Voided | State::Refunded) => {
                Err(key_used_elsewhere("authorize").detail(format!(
                    "payment {} for {} is already {}",
                    payment.id,
                    self.id,
                    state_name(payment.state)
                )))
            }
            _ => Err(unexpected_payment("authorize")
                .detail(format!("authorisation answered state {}", payment.state))),
        }
    }

    /// Creates the order for the priced lines, paid by `payment_id`.
    fn create_order(&mut self, priced: &[Priced], payment_id: &str) -> Result<Order, Failure> {
        let body = NewOrder {
            checkout_id: self.id.clone(),
            user_id: self.input.user_id,
            store_id: self.input.store_id,
            payment_id: payment_id.to_owned(),
            items: priced
                .iter()
                .map(|p| Item {
                    product_id: p.line.product_id,
                    quantity: p.line.quantity,
                    unit_price: decimal(p.unit_cents),
                })
                .collect(),
        };
        let call = http::post(services::ORDERS)
            .json(&body)
            .map_err(|e| Failure::new(500, "internal", e.message().to_owned()))?
            .timeout(ms(self.config.timeouts_ms.create_order));
        let response = match call.send() {
            Ok(r) if r.is_success() => r,
            Ok(r)
                if r.status() == 409
                    && field(&r, "error").as_deref() == Some("checkout_id_conflict") =>
            {
                return Err(key_used_elsewhere("create_order").detail(format!(
                    "orders answered {}: {}",
                    r.status(),
                    truncated(&r)
                )));
            }
            Ok(r) if (400..500).contains(&r.status()) => {
                let reason = r
                    .json_body::<Value>()
                    .ok()
                    .and_then(|b| b["error"].as_str().map(|c| code_or(c, "rejected")))
                    .unwrap_or_else(|| "rejected".to_owned());
                return Err(Failure::new(
                    422,
                    "order_rejected",
                    "the orders service refused the order; nothing was charged",
                )
                .at("create_order")
                .with("reason", json!(reason))
                .detail(format!(
                    "orders answered {}: {}",
                    r.status(),
                    truncated(&r)
                )));
            }
            Ok(r) => return Err(status_failure("create_order", "the orders service", &r)),
            Err(e) => {
                if matches!(e, HttpError::Timeout) {
                    self.order_unknown = true;
                }
                return Err(call_failure("create_order", "the orders service", &e));
            }
        };
        let order: Order = response.json_body().map_err(|e| {
            unexpected("create_order", "the orders service").detail(e.message().to_owned())
        })?;
        if order.status == "cancelled" {
            // Orders answers a checkout id's first order again; this one was undone earlier.
            return Err(key_used_elsewhere("create_order").detail(format!(
                "order {} of checkout {} is cancelled",
                order.id, self.id
            )));
        }
        self.order = Some(order.id);
        if order.user_id != self.input.user_id {
            return Err(
                unexpected("create_order", "the orders service").detail(format!(
                    "order {} is user {}'s, not user {}'s",
                    order.id, order.user_id, self.input.user_id
                )),
            );
        }
        Ok(order)
    }

    /// Captures the authorised payment.
    fn capture(&mut self, payment_id: &str, amount: i64) -> Result<Payment, Failure> {
        let request = CaptureRequest {
            payment_id: payment_id.to_owned(),
            idempotency_key: format!("{}:capture", self.id),
        };
        let payment = grpc::unary(services::payments("Capture"), &request)
            .timeout(ms(self.config.timeouts_ms.capture))
            .send::<Payment>()
            .map_err(|e| payment_failure("capture", &e))?;
        if State::try_from(payment.state) != Ok(State::Captured) || payment.captured_cents != amount
        {
            return Err(unexpected_payment("capture").detail(format!(
                "capture of {payment_id} answered state {} with {} cents captured of {amount}",
                payment.state, payment.captured_cents
            )));
        }
        Ok(payment)
    }

    /// Empties the cart and commits the reservations, all at once. Failures are warnings: the
    /// order is placed and paid.
    fn finish(&self, lines: &[Line]) -> Vec<Value> {
        let timeouts = &self.config.timeouts_ms;
        let mut calls =
            vec![http::delete(services::cart(self.input.user_id)).timeout(ms(timeouts.empty_cart))];
        calls.extend(lines.iter().map(|l| {
            http::post(services::commit(l.product_id, &self.id)).timeout(ms(timeouts.commit))
        }));
        let mut results = http::send_all(calls).into_iter();
        let mut warnings = Vec::new();
        if let Some(Err(why)) = results.next().map(|r| settled(r, true)) {
            log::warn(format!(
                "checkout {}: the cart was not emptied: {why}",
                self.id
            ));
            warnings.push(json!({
                "step": "empty_cart",
                "message": format!("the cart could not be emptied ({why}); its products are still in it"),
            }));
        }
        for (line, result) in lines.iter().zip(results) {
            if let Err(why) = settled(result, false) {
                log::warn(format!(
                    "checkout {}: reservation of product {} was not committed: {why}",
                    self.id, line.product_id
                ));
                warnings.push(json!({
                    "step": "commit",
                    "product_id": line.product_id,
                    "message": format!("the reservation could not be committed ({why}); it stays held"),
                }));
            }
        }
        warnings
    }

    /// Undoes what was done, in reverse: cancel the order, void the payment (or refund it if it
    /// turns out captured), then release every reservation at once.
    fn compensate(&mut self) -> Vec<Undo> {
        let mut undone = Vec::new();
        if let Some(order_id) = self.order.take() {
            undone.push(self.cancel_order(order_id));
        } else if self.order_unknown {
            undone.push(Undo {
                action: "cancel_order",
                target: None,
                status: UndoStatus::Unknown(
                    "creating the order timed out; an order made late carries this checkout_id"
                        .to_owned(),
                ),
            });
        }
        if let Some(payment_id) = self.payment.take() {
            undone.push(self.void_payment(&payment_id));
        } else if self.payment_unknown {
            undone.push(Undo {
                action: "void_payment",
                target: None,
                status: UndoStatus::Unknown(
                    "the authorisation did not answer; an authorisation made late carries this \
                     checkout_id as its reference and is never captured"
                        .to_owned(),
                ),
            });
        }
        let reserved = std::mem::take(&mut self.reserved);
        undone.extend(self.release(&reserved));
        undone
    }

    fn cancel_order(&self, order_id: u64) -> Undo {
        let result = http::post(services::cancel(order_id))
            .timeout(ms(self.config.timeouts_ms.cancel_order))
            .send();
        Undo {
            action: "cancel_order",
            target: Some(("order_id", json!(order_id))),
            status: match settled(result, false) {
                Ok(()) => UndoStatus::Done,
                Err(why) => UndoStatus::Failed(format!("the orders service {why}")),
            },
        }
    }

    /// Voids the authorisation. A void refused because the payment was captured (a capture
    /// that timed out here but went through) becomes a refund.
    fn void_payment(&self, payment_id: &str) -> Undo {
        let timeout = ms(self.config.timeouts_ms.void);
        let target = Some(("payment_id", json!(payment_id)));
        let void = VoidRequest {
            payment_id: payment_id.to_owned(),
            idempotency_key: format!("{}:void", self.id),
        };
        let voided = grpc::unary(services::payments("Void"), &void)
            .timeout(timeout)
            .send::<Payment>();
        match voided {
            Ok(p) if State::try_from(p.state) == Ok(State::Voided) => {
                return Undo {
                    action: "void_payment",
                    target,
                    status: UndoStatus::Done,
                };
            }
            // Captured after all: give the money back.
            Ok(p) if State::try_from(p.state) == Ok(State::Captured) => {}
            Err(e) if e.code() == Code::FailedPrecondition => {}
            Ok(p) => {
                return Undo {
                    action: "void_payment",
                    target,
                    status: UndoStatus::Failed(format!(
                        "the payment service left the payment {}",
                        state_name(p.state)
                    )),
                };
            }
            Err(e) => {
                log::warn(format!("checkout {}: void of {payment_id}: {e}", self.id));
                return Undo {
                    action: "void_payment",
                    target,
                    status: UndoStatus::Failed(payment_problem(&e)),
                };
            }
        }
        let refund = RefundRequest {
            payment_id: payment_id.to_owned(),
            idempotency_key: format!("{}:refund", self.id),
            amount_cents: 0,
        };
        let refunded = grpc::unary(services::payments("Refund"), &refund)
            .timeout(timeout)
            .send::<Payment>();
        Undo {
            action: "refund_payment",
            target,
            status: match refunded {
                Ok(p) if State::try_from(p.state) == Ok(State::Refunded) => UndoStatus::Done,
                Ok(p) => UndoStatus::Failed(format!(
                    "the payment service left the payment {}",
                    state_name(p.state)
                )),
                Err(e) => {
                    log::warn(format!("checkout {}: refund of {payment_id}: {e}", self.id));
                    UndoStatus::Failed(payment_problem(&e))
                }
            },
        }
    }

    /// Releases the reservations of `products`, all at once. Releasing is idempotent, and a
    /// reservation that was never made answers 404, which counts as released.
    fn release(&self, products: &[u64]) -> Vec<Undo> {
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

/// Merges the cart's lines by product, keeping first-seen order; a line must have a quantity.
fn merge(items: &[CartItem]) -> Result<Vec<Line>, String> {
    let mut lines: Vec<Line> = Vec::new();
    for item in items {
        if item.quantity == 0 || item.product_id == 0 {
            return Err(format!(
                "cart line {item:?} is not a product and a quantity"
            ));
        }
        match lines.iter_mut().find(|l| l.product_id == item.product_id) {
            Some(line) => {
                line.quantity = line
                    .quantity
                    .checked_add(item.quantity)
                    .ok_or_else(|| format!("quantities of product {} overflow", item.product_id))?;
            }
            None => lines.push(Line {
                product_id: item.product_id,
                quantity: item.quantity,
            }),
        }
    }
    Ok(lines)
}

fn total_cents(priced: &[Priced]) -> Result<i64, Failure> {
    priced
        .iter()
        .try_fold(0i64, |sum, p| {
            p.unit_cents
                .checked_mul(i64::from(p.line.quantity))
                .and_then(|line| sum.checked_add(line))
        })
        .ok_or_else(|| {
            Failure::new(
                409,
                "cart_too_large",
                "the cart's total is too large to charge",
            )
            .at("price")
        })
}

fn cart_empty() -> Failure {
    Failure::new(
        409,
        "cart_empty",
        "the cart is empty; there is nothing to check out",
    )
    .at("cart")
}

/// The answer when this checkout's ids meet an earlier checkout's results: only possible
/// without an idempotency bucket, when a key is used again after its checkout finished.
fn key_used_elsewhere(step: &'static str) -> Failure {
    Failure::new(
        422,
        "idempotency_key_reused",
        "this Idempotency-Key belongs to an earlier checkout; use a new key",
    )
    .at(step)
}

/// Whether a call that failed may still have reached the service and done its work.
fn may_have_arrived(e: &HttpError) -> bool {
    matches!(
        e,
        HttpError::Timeout | HttpError::ConnectionFailed(_) | HttpError::BodyTooLarge
    )
}

/// Whether a payment call that failed may have happened: it timed out, or the service broke
/// off or answered garbage. A refused connection, `UNAVAILABLE` and the service's refusals mean
/// it did nothing.
fn outcome_unknown(e: &GrpcError) -> bool {
    matches!(
        e.code(),
        Code::DeadlineExceeded
            | Code::Unknown
            | Code::Internal
            | Code::Cancelled
            | Code::Aborted
            | Code::DataLoss
    )
}

/// A 2xx (and, with `gone_is_fine`, a 404) is settled; otherwise why not, for a message.
fn settled(result: Result<Response, HttpError>, gone_is_fine: bool) -> Result<(), String> {
    match result {
        Ok(r) if r.is_success() || (gone_is_fine && r.status() == 404) => Ok(()),
        Ok(r) => Err(format!("answered {}", r.status())),
        Err(HttpError::Timeout) => Err("did not answer in time".to_owned()),
        Err(e) => {
            log::debug(format!("call failed: {e}"));
            Err("could not be reached".to_owned())
        }
    }
}

/// A string field of a JSON answer (`error`, `state`), if there is one.
fn field(response: &Response, name: &str) -> Option<String> {
    let body: Value = response.json_body().ok()?;
    body.get(name)?.as_str().map(str::to_owned)
}

/// A call that produced no response: 504 for a timeout, else 502.
fn call_failure(step: &'static str, service: &str, e: &HttpError) -> Failure {
    let failure = match e {
        HttpError::Timeout => Failure::new(
            504,
            "upstream_timeout",
            format!("{service} did not answer in time"),
        ),
        _ => Failure::new(
            502,
            "upstream_unavailable",
            format!("{service} could not be reached"),
        ),
    };
    failure.at(step).detail(format!("{step}: {e}"))
}

/// A service answered a status the step cannot go on with.
fn status_failure(step: &'static str, service: &str, r: &Response) -> Failure {
    Failure::new(
        502,
        "upstream_unavailable",
        format!("{service} answered {}", r.status()),
    )
    .at(step)
    .detail(format!("{step}: {} {}", r.status(), truncated(r)))
}

/// A service answered something that is not what the step expects.
fn unexpected(step: &'static str, service: &str) -> Failure {
    Failure::new(
        502,
        "upstream_unavailable",
        format!("{service} sent an unexpected answer"),
    )
    .at(step)
}

fn unexpected_payment(step: &'static str) -> Failure {
    Failure::new(
        502,
        "payment_unavailable",
        "the payment service sent an unexpected answer",
    )
    .at(step)
}

/// A failed payment call: 504 `payment_timeout` past its deadline, else 502.
fn payment_failure(step: &'static str, e: &GrpcError) -> Failure {
    let failure = if e.code() == Code::DeadlineExceeded {
        Failure::new(
            504,
            "payment_timeout",
            "the payment service did not answer in time",
        )
    } else {
        Failure::new(502, "payment_unavailable", payment_problem(e))
    };
    failure.at(step).detail(format!("{step}: {e}"))
}

/// What a client may read about a failed payment call (the service's own message stays in the
/// log).
fn payment_problem(e: &GrpcError) -> String {
    match e {
        GrpcError::Status { code, .. } => format!("the payment service answered {code}"),
        GrpcError::Http(HttpError::Timeout) => "the payment service did not answer in time".into(),
        GrpcError::Http(_) => "the payment service could not be reached".into(),
        GrpcError::Protocol(_) => "the payment service sent an invalid answer".into(),
        _ => "the payment service failed".into(),
    }
}

/// The payment in the answer: the protobuf `Payment` as JSON, amounts both as decimals in the
/// currency and as cents, the state as a lower-case name, and only the last four digits of the
/// card.
pub fn payment_json(p: &Payment) -> Value {
    json!({
        "id": p.id,
        "state": state_name(p.state),
        "amount": decimal(p.amount_cents),
        "amount_cents": p.amount_cents,
        "captured": decimal(p.captured_cents),
        "captured_cents": p.captured_cents,
        "refunded": decimal(p.refunded_cents),
        "refunded_cents": p.refunded_cents,
        "currency": p.currency,
        "card_last4": p.card_last4,
        "reference": p.reference,
    })
}

/// The protobuf `State` as a lower-case name; a number this build does not know is `unknown`.
pub fn state_name(state: i32) -> &'static str {
    match State::try_from(state) {
        Ok(State::Unspecified) => "unspecified",
        Ok(State::Authorized) => "authorized",
        Ok(State::Declined) => "declined",
        Ok(State::Captured) => "captured",
        Ok(State::Voided) => "voided",
        Ok(State::Refunded) => "refunded",
        Err(_) => "unknown",
    }
}

/// A decline reason fit for the answer: the service's code when it is one (`card_declined`,
/// `insufficient_funds`), else `declined`.
fn decline_reason(reason: &str) -> String {
    code_or(reason, "declined")
}

/// A machine-readable code from another service, passed on only when it looks like one.
fn code_or(code: &str, otherwise: &str) -> String {
    let ok = !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok { code } else { otherwise }.to_owned()
}

/// The start of a body, for the log.
fn truncated(r: &Response) -> String {
    r.text_body().chars().take(200).collect()
}
