//! The payments service through a real tonic client over cleartext HTTP/2.

use std::time::{Duration, Instant};

use tessera_ecommerce_payments_api::payments_client::PaymentsClient;
use tessera_ecommerce_payments_api::{
    AuthorizeRequest, CaptureRequest, GetPaymentRequest, Payment, RefundRequest, State, VoidRequest,
};
use tessera_ecommerce_services::{
    CARD_DECLINED, CARD_INSUFFICIENT_FUNDS, CARD_SLOW_CAPTURE, CARD_UNAVAILABLE, Services,
};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use super::services;

const CARD: &str = "4242424242424242";

async fn client(services: &Services) -> PaymentsClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://{}", services.payments))
        .unwrap()
        .connect()
        .await
        .expect("payments accepts HTTP/2 connections");
    PaymentsClient::new(channel)
}

fn authorize(key: &str, card: &str, amount_cents: i64) -> AuthorizeRequest {
    AuthorizeRequest {
        idempotency_key: key.into(),
        card_number: card.into(),
        amount_cents,
        currency: "EUR".into(),
        reference: "checkout-1".into(),
    }
}

fn capture(payment: &Payment, key: &str) -> CaptureRequest {
    CaptureRequest {
        payment_id: payment.id.clone(),
        idempotency_key: key.into(),
    }
}

fn void(payment: &Payment, key: &str) -> VoidRequest {
    VoidRequest {
        payment_id: payment.id.clone(),
        idempotency_key: key.into(),
    }
}

fn refund(payment: &Payment, key: &str, amount_cents: i64) -> RefundRequest {
    RefundRequest {
        payment_id: payment.id.clone(),
        idempotency_key: key.into(),
        amount_cents,
    }
}

/// Waits (at most 5 s) until `done` holds: the signal that a background step ran.
async fn until(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn authorize_capture_and_refund() {
    let services = services().await;
    let mut payments = client(&services).await;

    let payment = payments
        .authorize(authorize("a-1", CARD, 12_345))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(payment.state(), State::Authorized);
    assert_eq!(payment.id, "pay_000001");
    assert_eq!(payment.amount_cents, 12_345);
    assert_eq!(payment.currency, "EUR");
    assert_eq!(payment.card_last4, "4242");
    assert_eq!(payment.reference, "checkout-1");
    assert_eq!(payment.decline_reason, "");

    let captured = payments
        .capture(capture(&payment, "c-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(captured.state(), State::Captured);
    assert_eq!(captured.captured_cents, 12_345);

    let partial = payments
        .refund(refund(&payment, "r-1", 345))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (partial.state(), partial.refunded_cents),
        (State::Captured, 345)
    );
    let rest = payments
        .refund(refund(&payment, "r-2", 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (rest.state(), rest.refunded_cents),
        (State::Refunded, 12_345)
    );

    let read = payments
        .get_payment(GetPaymentRequest {
            payment_id: payment.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read, rest);
    assert_eq!(services.shop.payments(), std::slice::from_ref(&rest));
    assert_eq!(services.shop.payment(&payment.id), Some(rest));
}

#[tokio::test]
async fn a_void_releases_the_authorisation_and_answers_again() {
    let services = services().await;
    let mut payments = client(&services).await;
    let payment = payments
        .authorize(authorize("a", CARD, 500))
        .await
        .unwrap()
        .into_inner();
    let voided = payments
        .void(void(&payment, "v-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(voided.state(), State::Voided);
    // Voiding a voided payment answers it again, whatever the key.
    let again = payments
        .void(void(&payment, "v-2"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, voided);

    let status = payments.capture(capture(&payment, "c")).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status.message(),
        "payment pay_000001 is VOIDED; it can be captured only when AUTHORIZED"
    );
    assert_eq!(
        services.shop.payment(&payment.id).unwrap().captured_cents,
        0
    );
}

#[tokio::test]
async fn requests_out_of_range_are_invalid_arguments() {
    let services = services().await;
    let mut payments = client(&services).await;
    let mut lowercase = authorize("k", CARD, 100);
    lowercase.currency = "eur".into();
    let cases = [
        (
            authorize("k", CARD, 0),
            "amount_cents must be greater than 0, got 0",
        ),
        (
            authorize("k", CARD, -100),
            "amount_cents must be greater than 0, got -100",
        ),
        (
            lowercase,
            "currency must be 3 upper-case letters (ISO 4217), got \"eur\"",
        ),
        (
            authorize("k", "12345678901", 100),
            "card_number must be 12 to 19 digits",
        ),
        (
            authorize("k", "12345678901234567890", 100),
            "card_number must be 12 to 19 digits",
        ),
        (
            authorize("k", "4242 4242 4242 4242", 100),
            "card_number must be 12 to 19 digits",
        ),
        (
            authorize("", CARD, 100),
            "idempotency_key must be 1 to 255 characters, got 0",
        ),
    ];
    for (request, message) in cases {
        let status = payments.authorize(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{message}");
        assert_eq!(status.message(), message);
    }
    let payment = payments
        .authorize(authorize("k", CARD, 100))
        .await
        .unwrap()
        .into_inner();
    let status = payments.capture(capture(&payment, "")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = payments
        .refund(refund(&payment, "r", -1))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = payments
        .get_payment(GetPaymentRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(services.shop.payments().len(), 1);
}

#[tokio::test]
async fn cards_that_decline_or_fail_on_purpose() {
    let services = services().await;
    let mut payments = client(&services).await;
    for (key, card, reason) in [
        ("d1", CARD_DECLINED, "card_declined"),
        ("d2", CARD_INSUFFICIENT_FUNDS, "insufficient_funds"),
    ] {
        let payment = payments
            .authorize(authorize(key, card, 100))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(payment.state(), State::Declined, "{card}");
        assert_eq!(payment.decline_reason, reason);
        let status = payments.capture(capture(&payment, "c")).await.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(
            status.message().contains("DECLINED"),
            "{}",
            status.message()
        );
    }

    let status = payments
        .authorize(authorize("u", CARD_UNAVAILABLE, 100))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(services.shop.payments().len(), 2, "nothing recorded for it");
    // The failed call left its key free.
    let payment = payments
        .authorize(authorize("u", CARD, 100))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(payment.state(), State::Authorized);
}

#[tokio::test]
async fn an_idempotency_key_answers_its_first_answer_for_the_same_request_only() {
    let services = services().await;
    let mut payments = client(&services).await;
    let first = payments
        .authorize(authorize("k-1", CARD, 700))
        .await
        .unwrap()
        .into_inner();
    let again = payments
        .authorize(authorize("k-1", CARD, 700))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, first);
    assert_eq!(services.shop.payments().len(), 1);

    let status = payments
        .authorize(authorize("k-1", CARD, 701))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);

    let captured = payments
        .capture(capture(&first, "c-1"))
        .await
        .unwrap()
        .into_inner();
    let replayed = payments
        .capture(capture(&first, "c-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed, captured);
    // Another key for a second capture: the payment is no longer AUTHORIZED.
    let status = payments.capture(capture(&first, "c-2")).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("CAPTURED"),
        "{}",
        status.message()
    );
    // A key used by a capture, reused for a void.
    let status = payments.void(void(&first, "c-1")).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);

    let refunded = payments
        .refund(refund(&first, "r-1", 200))
        .await
        .unwrap()
        .into_inner();
    // The same refund again answers the first answer and refunds nothing more.
    let replayed = payments
        .refund(refund(&first, "r-1", 200))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed, refunded);
    assert_eq!(
        services.shop.payment(&first.id).unwrap().refunded_cents,
        200
    );
}

#[tokio::test]
async fn unknown_payments_are_not_found() {
    let services = services().await;
    let mut payments = client(&services).await;
    let ghost = Payment {
        id: "pay_999999".into(),
        ..Payment::default()
    };
    let statuses = [
        payments.capture(capture(&ghost, "c")).await.unwrap_err(),
        payments.void(void(&ghost, "v")).await.unwrap_err(),
        payments.refund(refund(&ghost, "r", 0)).await.unwrap_err(),
        payments
            .get_payment(GetPaymentRequest {
                payment_id: ghost.id.clone(),
            })
            .await
            .unwrap_err(),
    ];
    for status in statuses {
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "no payment \"pay_999999\"");
    }
}

#[tokio::test]
async fn payments_in_the_wrong_state_are_failed_preconditions() {
    let services = services().await;
    let mut payments = client(&services).await;
    let payment = payments
        .authorize(authorize("a", CARD, 1000))
        .await
        .unwrap()
        .into_inner();
    let status = payments.refund(refund(&payment, "r", 0)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status.message(),
        "payment pay_000001 is AUTHORIZED; it can be refunded only when CAPTURED"
    );
    payments.capture(capture(&payment, "c")).await.unwrap();
    let status = payments.void(void(&payment, "v")).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("is CAPTURED"),
        "{}",
        status.message()
    );
    let status = payments
        .refund(refund(&payment, "r", 1001))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    payments.refund(refund(&payment, "r", 0)).await.unwrap();
    let status = payments
        .refund(refund(&payment, "r2", 0))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("is REFUNDED"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn every_nth_call_fails_when_asked() {
    let services = services().await;
    let mut payments = client(&services).await;
    let payment = payments
        .authorize(authorize("a", CARD, 100))
        .await
        .unwrap()
        .into_inner();
    let get = GetPaymentRequest {
        payment_id: payment.id.clone(),
    };

    services.shop.set_payments_fail_every(3);
    let mut codes = Vec::new();
    for _ in 0..9 {
        codes.push(match payments.get_payment(get.clone()).await {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        });
    }
    use Code::{Ok as Fine, Unavailable as Down};
    assert_eq!(
        codes,
        [Fine, Fine, Down, Fine, Fine, Down, Fine, Fine, Down]
    );

    // A failed call does nothing: the third authorisation is refused, then retried.
    services.shop.set_payments_fail_every(3);
    payments.authorize(authorize("b", CARD, 100)).await.unwrap();
    payments.authorize(authorize("c", CARD, 100)).await.unwrap();
    let status = payments
        .authorize(authorize("d", CARD, 100))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(services.shop.payments().len(), 3);
    payments.authorize(authorize("d", CARD, 100)).await.unwrap();
    assert_eq!(services.shop.payments().len(), 4);

    services.shop.set_payments_fail_every(0);
    for _ in 0..10 {
        payments.get_payment(get.clone()).await.unwrap();
    }
}

#[tokio::test]
async fn a_slow_capture_waits_then_captures() {
    let services = services().await;
    services
        .shop
        .set_slow_capture_delay(Duration::from_millis(300));
    let mut payments = client(&services).await;
    let payment = payments
        .authorize(authorize("a", CARD_SLOW_CAPTURE, 900))
        .await
        .unwrap()
        .into_inner();
    let started = Instant::now();
    let captured = payments
        .capture(capture(&payment, "c"))
        .await
        .unwrap()
        .into_inner();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(captured.state(), State::Captured);
    assert_eq!(captured.captured_cents, 900);
}

#[tokio::test]
async fn a_void_during_a_slow_capture_wins() {
    let services = services().await;
    services.shop.set_slow_capture_delay(Duration::from_secs(2));
    let mut payments = client(&services).await;
    let payment = payments
        .authorize(authorize("a", CARD_SLOW_CAPTURE, 900))
        .await
        .unwrap()
        .into_inner();

    let mut capturing = payments.clone();
    let request = capture(&payment, "c");
    let late = tokio::spawn(async move { capturing.capture(request).await });
    until(|| services.shop.pending_captures() == 1).await;

    let voided = payments
        .void(void(&payment, "v"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(voided.state(), State::Voided);
    let status = late.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("VOIDED"), "{}", status.message());

    let after = services.shop.payment(&payment.id).unwrap();
    assert_eq!((after.state(), after.captured_cents), (State::Voided, 0));
    assert_eq!(services.shop.pending_captures(), 0);
    // The failed capture left its key free; the payment stays voided.
    let status = payments.capture(capture(&payment, "c")).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn a_slow_capture_acts_after_its_caller_gave_up() {
    let services = services().await;
    services.shop.set_slow_capture_delay(Duration::from_secs(2));
    let mut payments = client(&services).await;
    let payment = payments
        .authorize(authorize("a", CARD_SLOW_CAPTURE, 900))
        .await
        .unwrap()
        .into_inner();

    // The caller gives up once its capture has reached the service.
    let mut capturing = payments.clone();
    let request = capture(&payment, "c");
    let caller = tokio::spawn(async move { capturing.capture(request).await });
    until(|| services.shop.pending_captures() == 1).await;
    caller.abort();
    assert!(caller.await.unwrap_err().is_cancelled());
    assert_eq!(
        services.shop.payment(&payment.id).unwrap().state(),
        State::Authorized
    );
    // While it waits, the same capture again is told to come back later.
    let status = payments.capture(capture(&payment, "c")).await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted);

    until(|| services.shop.pending_captures() == 0).await;
    let after = services.shop.payment(&payment.id).unwrap();
    assert_eq!(
        (after.state(), after.captured_cents),
        (State::Captured, 900)
    );
    // The retry now answers the late capture's answer.
    let replayed = payments
        .capture(capture(&payment, "c"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed, after);
}
