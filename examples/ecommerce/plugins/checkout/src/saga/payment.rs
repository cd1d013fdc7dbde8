//! The payment service over gRPC: authorising, capturing, voiding (or refunding), and the
//! protobuf `Payment` as the JSON the client reads.

use serde_json::{Value, json};
use tessera_ecommerce_model::decimal;
use tessera_ecommerce_payments_api::{
    AuthorizeRequest, CaptureRequest, Payment, RefundRequest, State, VoidRequest,
};
use tessera_sdk::grpc::{self, Code, GrpcError};
use tessera_sdk::http::HttpError;
use tessera_sdk::log;

use super::{Saga, key_used_elsewhere};
use crate::answer::{Failure, Undo, UndoStatus};
use crate::config::ms;
use crate::services::{self, code_or};

impl Saga<'_> {
    /// Authorises `amount` cents on the card.
    pub(super) fn authorize(&mut self, amount: i64) -> Result<Payment, Failure> {
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
            Ok(State::Authorized) if payment.id.is_empty() => {
                self.payment_unknown = true;
                Err(unexpected_payment("authorize")
                    .detail("the authorisation answered a payment without an id"))
            }
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

    /// Captures the authorised payment.
    pub(super) fn capture(&mut self, payment_id: &str, amount: i64) -> Result<Payment, Failure> {
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

    /// Voids the authorisation. A void refused because the payment was captured (a capture
    /// that timed out here but went through) becomes a refund.
    pub(super) fn void_payment(&self, payment_id: &str) -> Undo {
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
