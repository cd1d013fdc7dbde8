//! The orders service: creating the order, cancelling it.

use serde_json::{Value, json};
use tessera_ecommerce_model::{Item, NewOrder, Order, decimal};
use tessera_sdk::http::{self, HttpError};

use super::{Priced, Saga, key_used_elsewhere};
use crate::answer::{Failure, Undo, UndoStatus};
use crate::config::ms;
use crate::services::{
    self, call_failure, code_or, field, settled, status_failure, truncated, unexpected,
};

impl Saga<'_> {
    /// Creates the order for the priced lines, paid by `payment_id`.
    pub(super) fn create_order(
        &mut self,
        priced: &[Priced],
        payment_id: &str,
        amount: i64,
    ) -> Result<Order, Failure> {
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
        // What the order says it costs must be what is charged.
        if (order.total() - decimal(amount)).abs() >= 0.005 {
            return Err(
                unexpected("create_order", "the orders service").detail(format!(
                    "order {} totals {}, the payment is {amount} cents",
                    order.id,
                    order.total()
                )),
            );
        }
        Ok(order)
    }

    pub(super) fn cancel_order(&self, order_id: u64) -> Undo {
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
}
