//! The payments service: `tessera.demo.payments.v1.Payments` (`proto/payments.proto`) over gRPC,
//! with an in-memory ledger.
//!
//! Idempotency: every call that changes money carries an `idempotency_key`. A key is remembered
//! with the request and the answer of the first call that succeeded under it; the same request
//! again answers that first answer and changes nothing, a different request under the key is
//! ALREADY_EXISTS, and the same request while the first is still running (a slow capture) is
//! ABORTED. A call that failed changed nothing and is not remembered: its key may be used again.
//!
//! Failures on purpose, by card number, so a caller's error handling can be exercised:
//! [`CARD_DECLINED`], [`CARD_INSUFFICIENT_FUNDS`], [`CARD_UNAVAILABLE`],
//! [`CARD_SLOW_CAPTURE`]; and [`Shop::set_payments_fail_every`] for a steady rate of
//! UNAVAILABLE answers.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tessera_ecommerce_payments_api::payments_server::Payments;
use tessera_ecommerce_payments_api::{
    AuthorizeRequest, CaptureRequest, GetPaymentRequest, Payment, RefundRequest, State, VoidRequest,
};
use tonic::{Request, Response, Status};

use crate::shop::{Shop, lock};

/// Authorize answers DECLINED with `decline_reason` `card_declined`.
pub const CARD_DECLINED: &str = "4000000000000002";
/// Authorize answers DECLINED with `decline_reason` `insufficient_funds`.
pub const CARD_INSUFFICIENT_FUNDS: &str = "4000000000009995";
/// Authorize fails with UNAVAILABLE (and records nothing).
pub const CARD_UNAVAILABLE: &str = "4000000000000119";
/// Capture of a payment made with this card waits [`DEFAULT_SLOW_CAPTURE_DELAY`] (see
/// [`Shop::set_slow_capture_delay`]) before it acts, then looks at the payment again: still
/// AUTHORIZED, it is captured, even if the caller gave up waiting; voided meanwhile, the capture
/// answers FAILED_PRECONDITION and takes nothing.
pub const CARD_SLOW_CAPTURE: &str = "4000000000000259";

/// How long a capture of a [`CARD_SLOW_CAPTURE`] payment waits unless set otherwise.
pub const DEFAULT_SLOW_CAPTURE_DELAY: Duration = Duration::from_secs(10);

/// The longest idempotency key, in characters.
const MAX_KEY_CHARS: usize = 255;

/// The ledger and the failure switches.
#[derive(Debug)]
pub(crate) struct Ledger {
    book: Mutex<Book>,
    /// Every n-th call answers UNAVAILABLE; 0 is off.
    fail_every: AtomicU64,
    /// Calls counted since `fail_every` was last set.
    calls: AtomicU64,
    slow_capture_delay: Mutex<Duration>,
}

impl Default for Ledger {
    fn default() -> Ledger {
        Ledger {
            book: Mutex::default(),
            fail_every: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            slow_capture_delay: Mutex::new(DEFAULT_SLOW_CAPTURE_DELAY),
        }
    }
}

#[derive(Debug, Default)]
struct Book {
    payments: BTreeMap<String, Record>,
    keys: HashMap<String, KeyUse>,
    /// The number in the last payment id given.
    last_id: u64,
}

#[derive(Debug)]
struct Record {
    payment: Payment,
    slow_capture: bool,
    /// Slow captures waiting to act on this payment.
    pending_captures: usize,
}

/// What an idempotency key was used for.
#[derive(Debug)]
enum KeyUse {
    /// The call is running (a slow capture).
    InFlight(Call),
    /// The call succeeded with `answer`.
    Done { call: Call, answer: Payment },
}

/// A call that changes money, as its idempotency key remembers it.
#[derive(Debug, Clone, PartialEq)]
enum Call {
    Authorize(AuthorizeRequest),
    Capture(CaptureRequest),
    Void(VoidRequest),
    Refund(RefundRequest),
}

impl Book {
    /// The first answer if `call` was done under `key` before; `None` if the key is new.
    fn replay(&self, key: &str, call: &Call) -> Result<Option<Payment>, Status> {
        match self.keys.get(key) {
            None => Ok(None),
            Some(KeyUse::Done {
                call: first,
                answer,
            }) if first == call => Ok(Some(answer.clone())),
            Some(KeyUse::InFlight(first)) if first == call => Err(Status::aborted(format!(
                "a call with idempotency key {key:?} is still running; try again later"
            ))),
            Some(_) => Err(Status::already_exists(format!(
                "idempotency key {key:?} was used for a different request"
            ))),
        }
    }

    fn remember(&mut self, key: &str, call: Call, answer: &Payment) {
        self.keys.insert(
            key.to_owned(),
            KeyUse::Done {
                call,
                answer: answer.clone(),
            },
        );
    }

    fn record(&mut self, payment_id: &str) -> Result<&mut Record, Status> {
        self.payments
            .get_mut(payment_id)
            .ok_or_else(|| Status::not_found(format!("no payment {payment_id:?}")))
    }

    fn authorize(&mut self, request: &AuthorizeRequest) -> Result<Payment, Status> {
        let call = Call::Authorize(request.clone());
        if let Some(answer) = self.replay(&request.idempotency_key, &call)? {
            return Ok(answer);
        }
        let decline_reason = match request.card_number.as_str() {
            CARD_UNAVAILABLE => {
                return Err(Status::unavailable(
                    "the card network did not answer; nothing was authorised",
                ));
            }
            CARD_DECLINED => "card_declined",
            CARD_INSUFFICIENT_FUNDS => "insufficient_funds",
            _ => "",
        };
        self.last_id += 1;
        let card = &request.card_number;
        let payment = Payment {
            id: format!("pay_{:06}", self.last_id),
            state: if decline_reason.is_empty() {
                State::Authorized
            } else {
                State::Declined
            } as i32,
            amount_cents: request.amount_cents,
            currency: request.currency.clone(),
            decline_reason: decline_reason.to_owned(),
            captured_cents: 0,
            refunded_cents: 0,
            card_last4: card[card.len() - 4..].to_owned(),
            reference: request.reference.clone(),
        };
        self.payments.insert(
            payment.id.clone(),
            Record {
                payment: payment.clone(),
                slow_capture: card == CARD_SLOW_CAPTURE,
                pending_captures: 0,
            },
        );
        self.remember(&request.idempotency_key, call, &payment);
        Ok(payment)
    }

    /// A capture, or `Ok(None)` when this one has to wait first: the key is then marked in
    /// flight and [`Book::finish_slow_capture`] completes it.
    fn capture(&mut self, request: &CaptureRequest) -> Result<Option<Payment>, Status> {
        let call = Call::Capture(request.clone());
        if let Some(answer) = self.replay(&request.idempotency_key, &call)? {
            return Ok(Some(answer));
        }
        let record = self.record(&request.payment_id)?;
        require_state(&record.payment, State::Authorized, "captured")?;
        if record.slow_capture {
            record.pending_captures += 1;
            self.keys
                .insert(request.idempotency_key.clone(), KeyUse::InFlight(call));
            return Ok(None);
        }
        let payment = capture(record);
        self.remember(&request.idempotency_key, call, &payment);
        Ok(Some(payment))
    }

    /// The end of a slow capture: the payment is looked at again, since a void may have come
    /// while the capture waited.
    fn finish_slow_capture(&mut self, request: &CaptureRequest) -> Result<Payment, Status> {
        let key = &request.idempotency_key;
        let record = self.record(&request.payment_id)?;
        record.pending_captures -= 1;
        let result =
            require_state(&record.payment, State::Authorized, "captured").map(|()| capture(record));
        match &result {
            Ok(payment) => self.remember(key, Call::Capture(request.clone()), payment),
            Err(_) => {
                self.keys.remove(key);
            }
        }
        result
    }

    fn void(&mut self, request: &VoidRequest) -> Result<Payment, Status> {
        let call = Call::Void(request.clone());
        if let Some(answer) = self.replay(&request.idempotency_key, &call)? {
            return Ok(answer);
        }
        let record = self.record(&request.payment_id)?;
        if record.payment.state() != State::Voided {
            require_state(&record.payment, State::Authorized, "voided")?;
            record.payment.state = State::Voided as i32;
        }
        let payment = record.payment.clone();
        self.remember(&request.idempotency_key, call, &payment);
        Ok(payment)
    }

    fn refund(&mut self, request: &RefundRequest) -> Result<Payment, Status> {
        let call = Call::Refund(request.clone());
        if let Some(answer) = self.replay(&request.idempotency_key, &call)? {
            return Ok(answer);
        }
        let record = self.record(&request.payment_id)?;
        let payment = &mut record.payment;
        require_state(payment, State::Captured, "refunded")?;
        let refundable = payment.captured_cents - payment.refunded_cents;
        let amount = match request.amount_cents {
            0 => refundable,
            amount if amount > refundable => {
                return Err(Status::failed_precondition(format!(
                    "a refund of {amount} cents is more than the {refundable} cents left to refund on payment {}",
                    payment.id
                )));
            }
            amount => amount,
        };
        payment.refunded_cents += amount;
        if payment.refunded_cents == payment.captured_cents {
            payment.state = State::Refunded as i32;
        }
        let payment = payment.clone();
        self.remember(&request.idempotency_key, call, &payment);
        Ok(payment)
    }
}

fn capture(record: &mut Record) -> Payment {
    let payment = &mut record.payment;
    payment.state = State::Captured as i32;
    payment.captured_cents = payment.amount_cents;
    payment.clone()
}

/// FAILED_PRECONDITION naming the payment's state unless it is `required`.
fn require_state(payment: &Payment, required: State, action: &str) -> Result<(), Status> {
    let state = payment.state();
    if state == required {
        return Ok(());
    }
    Err(Status::failed_precondition(format!(
        "payment {} is {}; it can be {action} only when {}",
        payment.id,
        state.as_str_name(),
        required.as_str_name()
    )))
}

fn check_key(key: &str) -> Result<(), Status> {
    let chars = key.chars().count();
    if chars == 0 || chars > MAX_KEY_CHARS {
        return Err(Status::invalid_argument(format!(
            "idempotency_key must be 1 to {MAX_KEY_CHARS} characters, got {chars}"
        )));
    }
    Ok(())
}

fn check_payment_id(payment_id: &str) -> Result<(), Status> {
    if payment_id.is_empty() {
        return Err(Status::invalid_argument("payment_id is required"));
    }
    Ok(())
}

fn check_authorize(request: &AuthorizeRequest) -> Result<(), Status> {
    check_key(&request.idempotency_key)?;
    let card = &request.card_number;
    if !(12..=19).contains(&card.len()) || !card.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Status::invalid_argument(
            "card_number must be 12 to 19 digits",
        ));
    }
    if request.amount_cents <= 0 {
        return Err(Status::invalid_argument(format!(
            "amount_cents must be greater than 0, got {}",
            request.amount_cents
        )));
    }
    let currency = &request.currency;
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Status::invalid_argument(format!(
            "currency must be 3 upper-case letters (ISO 4217), got {currency:?}"
        )));
    }
    Ok(())
}

impl Ledger {
    /// Counts a call; UNAVAILABLE if it is the n-th of [`Shop::set_payments_fail_every`].
    fn count_call(&self) -> Result<(), Status> {
        let every = self.fail_every.load(Ordering::SeqCst);
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if every > 0 && call.is_multiple_of(every) {
            return Err(Status::unavailable(format!(
                "the payment service is failing every {every}th call (call {call})"
            )));
        }
        Ok(())
    }
}

/// The gRPC service over the shop's ledger.
#[derive(Debug, Clone)]
pub(crate) struct PaymentsService {
    pub(crate) shop: Shop,
}

impl PaymentsService {
    fn ledger(&self) -> &Ledger {
        &self.shop.state.payments
    }
}

#[tonic::async_trait]
impl Payments for PaymentsService {
    async fn authorize(
        &self,
        request: Request<AuthorizeRequest>,
    ) -> Result<Response<Payment>, Status> {
        self.ledger().count_call()?;
        let request = request.into_inner();
        check_authorize(&request)?;
        lock(&self.ledger().book)
            .authorize(&request)
            .map(Response::new)
    }

    async fn capture(&self, request: Request<CaptureRequest>) -> Result<Response<Payment>, Status> {
        self.ledger().count_call()?;
        let request = request.into_inner();
        check_payment_id(&request.payment_id)?;
        check_key(&request.idempotency_key)?;
        if let Some(payment) = lock(&self.ledger().book).capture(&request)? {
            return Ok(Response::new(payment));
        }
        // The slow capture runs in a task of its own, so it acts when its time comes even if
        // the caller stops waiting (which drops this future): that is the late capture a
        // caller's timeout has to reckon with.
        let delay = *lock(&self.ledger().slow_capture_delay);
        let shop = self.shop.clone();
        let capture = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            lock(&shop.state.payments.book).finish_slow_capture(&request)
        });
        match capture.await {
            Ok(result) => result.map(Response::new),
            Err(_) => Err(Status::internal("the capture stopped before it finished")),
        }
    }

    async fn void(&self, request: Request<VoidRequest>) -> Result<Response<Payment>, Status> {
        self.ledger().count_call()?;
        let request = request.into_inner();
        check_payment_id(&request.payment_id)?;
        check_key(&request.idempotency_key)?;
        lock(&self.ledger().book).void(&request).map(Response::new)
    }

    async fn refund(&self, request: Request<RefundRequest>) -> Result<Response<Payment>, Status> {
        self.ledger().count_call()?;
        let request = request.into_inner();
        check_payment_id(&request.payment_id)?;
        check_key(&request.idempotency_key)?;
        if request.amount_cents < 0 {
            return Err(Status::invalid_argument(format!(
                "amount_cents must not be negative, got {}",
                request.amount_cents
            )));
        }
        lock(&self.ledger().book)
            .refund(&request)
            .map(Response::new)
    }

    async fn get_payment(
        &self,
        request: Request<GetPaymentRequest>,
    ) -> Result<Response<Payment>, Status> {
        self.ledger().count_call()?;
        let request = request.into_inner();
        check_payment_id(&request.payment_id)?;
        let mut book = lock(&self.ledger().book);
        let record = book.record(&request.payment_id)?;
        Ok(Response::new(record.payment.clone()))
    }
}

impl Shop {
    /// Every payment, in id order, as it is now.
    pub fn payments(&self) -> Vec<Payment> {
        lock(&self.state.payments.book)
            .payments
            .values()
            .map(|record| record.payment.clone())
            .collect()
    }

    /// One payment, as it is now.
    pub fn payment(&self, payment_id: &str) -> Option<Payment> {
        lock(&self.state.payments.book)
            .payments
            .get(payment_id)
            .map(|record| record.payment.clone())
    }

    /// Makes every `n`-th payments call from now on answer UNAVAILABLE before it does
    /// anything (`n` = 3: the 3rd, 6th, 9th ...). The count starts again at each call of
    /// this; 0 turns the failures off. The demo reads `n` from `TESSERA_DEMO_PAYMENTS_FAIL_EVERY`.
    pub fn set_payments_fail_every(&self, n: u64) {
        let ledger = &self.state.payments;
        ledger.calls.store(0, Ordering::SeqCst);
        ledger.fail_every.store(n, Ordering::SeqCst);
    }

    /// How long a capture of a [`CARD_SLOW_CAPTURE`] payment waits before it acts (default
    /// [`DEFAULT_SLOW_CAPTURE_DELAY`]). Captures already waiting keep their delay.
    pub fn set_slow_capture_delay(&self, delay: Duration) {
        *lock(&self.state.payments.slow_capture_delay) = delay;
    }

    /// Slow captures waiting to act.
    pub fn pending_captures(&self) -> usize {
        lock(&self.state.payments.book)
            .payments
            .values()
            .map(|record| record.pending_captures)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authorize(key: &str, card: &str, amount_cents: i64) -> AuthorizeRequest {
        AuthorizeRequest {
            idempotency_key: key.into(),
            card_number: card.into(),
            amount_cents,
            currency: "EUR".into(),
            reference: "checkout-1".into(),
        }
    }

    fn capture_request(payment_id: &str, key: &str) -> CaptureRequest {
        CaptureRequest {
            payment_id: payment_id.into(),
            idempotency_key: key.into(),
        }
    }

    #[test]
    fn authorize_requests_are_checked() {
        let good = authorize("k", "4242424242424242", 100);
        assert!(check_authorize(&good).is_ok());
        let cases = [
            (authorize("", "4242424242424242", 100), "idempotency_key"),
            (authorize("k", "42424242424", 100), "card_number"),
            (authorize("k", "42424242424242424242", 100), "card_number"),
            (authorize("k", "4242-4242-4242-4242", 100), "card_number"),
            (authorize("k", "4242424242424242", 0), "amount_cents"),
            (authorize("k", "4242424242424242", -5), "amount_cents"),
        ];
        for (request, field) in cases {
            let status = check_authorize(&request).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().starts_with(field), "{}", status.message());
        }
        for currency in ["eur", "EU", "EURO", "E1R", ""] {
            let mut request = good.clone();
            request.currency = currency.into();
            let status = check_authorize(&request).unwrap_err();
            assert!(status.message().starts_with("currency"), "{currency}");
        }
    }

    #[test]
    fn failed_calls_leave_the_key_free() {
        let mut book = Book::default();
        let payment = book
            .authorize(&authorize("a", "4242424242424242", 100))
            .unwrap();
        let refund = RefundRequest {
            payment_id: payment.id.clone(),
            idempotency_key: "r".into(),
            amount_cents: 0,
        };
        let status = book.refund(&refund).unwrap_err();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert_eq!(
            status.message(),
            "payment pay_000001 is AUTHORIZED; it can be refunded only when CAPTURED"
        );
        book.capture(&capture_request(&payment.id, "c"))
            .unwrap()
            .unwrap();
        let refunded = book.refund(&refund).unwrap();
        assert_eq!(refunded.state(), State::Refunded);
        assert_eq!(refunded.refunded_cents, 100);
    }

    #[test]
    fn partial_refunds_add_up_to_the_captured_amount() {
        let mut book = Book::default();
        let payment = book
            .authorize(&authorize("a", "4242424242424242", 1000))
            .unwrap();
        book.capture(&capture_request(&payment.id, "c"))
            .unwrap()
            .unwrap();
        let refund = |key: &str, amount_cents| RefundRequest {
            payment_id: payment.id.clone(),
            idempotency_key: key.into(),
            amount_cents,
        };
        let partial = book.refund(&refund("r1", 300)).unwrap();
        assert_eq!(
            (partial.state(), partial.refunded_cents),
            (State::Captured, 300)
        );
        let status = book.refund(&refund("r2", 701)).unwrap_err();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        let rest = book.refund(&refund("r3", 0)).unwrap();
        assert_eq!((rest.state(), rest.refunded_cents), (State::Refunded, 1000));
        // The first refund's key still answers its first answer.
        assert_eq!(book.refund(&refund("r1", 300)).unwrap(), partial);
    }

    #[test]
    fn a_slow_capture_holds_its_key_until_it_finishes() {
        let mut book = Book::default();
        let payment = book
            .authorize(&authorize("a", CARD_SLOW_CAPTURE, 500))
            .unwrap();
        let request = capture_request(&payment.id, "c");
        assert_eq!(book.capture(&request).unwrap(), None);
        assert_eq!(
            book.capture(&request).unwrap_err().code(),
            tonic::Code::Aborted
        );
        let other = VoidRequest {
            payment_id: payment.id.clone(),
            idempotency_key: "c".into(),
        };
        assert_eq!(
            book.void(&other).unwrap_err().code(),
            tonic::Code::AlreadyExists
        );
        let captured = book.finish_slow_capture(&request).unwrap();
        assert_eq!(captured.state(), State::Captured);
        assert_eq!(book.capture(&request).unwrap(), Some(captured));
    }
}
