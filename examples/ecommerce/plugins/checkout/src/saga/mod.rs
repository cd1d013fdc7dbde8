//! The checkout as a saga: each step that changes something is recorded, and on a failure the
//! recorded steps are undone in reverse (cancel the order, void the payment, release the
//! reservations) before the client is answered.
//!
//! The steps are grouped by the service they talk to: `stock` (cart, catalogue, inventory),
//! `payment` (gRPC), `order`. This module runs them in order and undoes them.

mod order;
mod payment;
mod stock;

use std::collections::HashMap;

use serde_json::{Value, json};
use tessera_ecommerce_model::CartItem;
use tessera_sdk::{http, log};

use crate::answer::{Answer, Failure, Undo, UndoStatus};
use crate::config::{Config, ms};
use crate::input::Input;
use crate::services::{self, settled};

pub use payment::{payment_json, state_name};

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
        let order = self.create_order(&priced, &authorized.id, amount)?;
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
pub(super) fn key_used_elsewhere(step: &'static str) -> Failure {
    Failure::new(
        422,
        "idempotency_key_reused",
        "this Idempotency-Key belongs to an earlier checkout; use a new key",
    )
    .at(step)
}
