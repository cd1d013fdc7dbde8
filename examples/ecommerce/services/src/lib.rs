//! The e-commerce demo's upstream services, each a small server on a loopback port. The read
//! side answers from JSON fixtures (`fixtures/*.json`); the write side a checkout needs (carts,
//! inventory reservations, placing orders, payments) keeps its state in memory, in a [`Shop`]
//! that tests can read and change while the services run.
//!
//! The HTTP services speak HTTP/1.1 and cleartext HTTP/2 (prior knowledge) with JSON bodies;
//! payments speaks gRPC over cleartext HTTP/2.
//!
//! | service | endpoints |
//! |---|---|
//! | users | `GET /users/{id}` |
//! | orders | `GET /orders/{id}`, `GET /orders?user_id={id}`, `POST /orders`, `POST /orders/{id}/cancel` |
//! | products | `GET /products/{id}` (`stock` is the live `available`), `GET /inventory/{product_id}`, `POST /inventory/{product_id}/reservations`, `GET` and `DELETE /inventory/{product_id}/reservations/{reservation_id}`, `POST /inventory/{product_id}/reservations/{reservation_id}/commit` |
//! | stores | `GET /stores/{id}` |
//! | carts | `GET`, `PUT` and `DELETE /carts/{user_id}`, `POST /carts/{user_id}/items` |
//! | payments | gRPC `tessera.demo.payments.v1.Payments`: `Authorize`, `Capture`, `Void`, `Refund`, `GetPayment` (`proto/payments.proto`) |
//!
//! Unknown ids are 404 `{"error": "..."}`; a body that is not what the endpoint takes is 400
//! `{"error": "..."}` naming the field (bodies are JSON, at most 64 KiB, unknown fields
//! refused); a method an endpoint does not take is 405 with `Allow`.
//!
//! ## Carts
//! A cart is `{"user_id": 1, "items": [{"product_id": 100, "quantity": 1}]}`: one line per
//! product, at most 100 lines, quantities 1 to 1000. Users 1 to 3 start with carts
//! (`fixtures/carts.json`; user 3's holds product 107, which is out of stock); anyone else's is
//! empty. `PUT` replaces the items (`{"items": [...]}`) and answers the cart; `POST .../items`
//! adds one line's `{"product_id", "quantity"}` (to the product's line if it has one) and answers
//! the cart; `DELETE` empties it with 204, however often. Product ids are not checked.
//!
//! ## Inventory
//! Stock starts from the products' `stock` fields. `GET /inventory/{product_id}` is
//! `{"product_id", "available", "reserved"}`. A reservation holds units for a caller's
//! `reservation_id` (1 to 128 characters; percent-encode it in paths), per product:
//!
//! | call | answer |
//! |---|---|
//! | `POST .../reservations` `{"reservation_id", "quantity"}` | 201 `{"reservation_id", "product_id", "quantity", "state": "held"}`; the same again: 200 and the reservation as it is (nothing more taken); the id with another quantity: 409 `{"error": "reservation_conflict", ...}`; too few units: 409 `{"error": "out_of_stock", "product_id", "requested", "available"}`; unknown product: 404 |
//! | `DELETE .../reservations/{id}` | 200 state `released`, the units back (again: the same answer); committed: 409 `{"error": "committed"}`; unknown: 404 |
//! | `POST .../reservations/{id}/commit` | 200 state `committed`, the units sold (again: the same answer); released: 409 `{"error": "released"}`; unknown: 404 |
//!
//! All changes happen under one lock: `available` never goes below zero.
//!
//! ## Orders
//! `POST /orders` with `{"checkout_id", "user_id", "store_id", "payment_id", "items":
//! [{"product_id", "quantity", "unit_price"}]}` places an order: 201 and the order in the
//! fixtures' shape, `id` from 2001 up, `status` `processing`, `created_at` now (RFC 3339, UTC),
//! plus `checkout_id` and `payment_id`. The same request again answers 200 and the same order; the
//! `checkout_id` with a different request is 409 `{"error": "checkout_id_conflict", "order_id"}`.
//! `POST /orders/{id}/cancel` answers the order with `status` `cancelled` (again: the same); an
//! order shipped or delivered is 409 `{"error": "not_cancellable", "status"}`. Placed orders
//! are read like the fixture ones.
//!
//! ## Payments
//! Amounts are in cents. Authorize takes `amount_cents > 0`, a `currency` of 3 upper-case
//! letters and a card of 12 to 19 digits, else INVALID_ARGUMENT; every call that changes money
//! needs an `idempotency_key` (1 to 255 characters). Capture, Void and Refund of an unknown id
//! are NOT_FOUND; a payment in the wrong state is FAILED_PRECONDITION with a message naming the
//! state. The same key with the same request answers the first answer again and changes
//! nothing; with a different request it is ALREADY_EXISTS. Failures on purpose:
//!
//! | switch | effect |
//! |---|---|
//! | card [`CARD_DECLINED`] `4000000000000002` | Authorize answers state DECLINED, `decline_reason` `card_declined` |
//! | card [`CARD_INSUFFICIENT_FUNDS`] `4000000000009995` | Authorize answers state DECLINED, `decline_reason` `insufficient_funds` |
//! | card [`CARD_UNAVAILABLE`] `4000000000000119` | Authorize fails UNAVAILABLE; nothing is recorded |
//! | card [`CARD_SLOW_CAPTURE`] `4000000000000259` | Capture waits 10 s ([`Shop::set_slow_capture_delay`]) before it acts, and acts even if the caller gave up; a Void in the meantime wins and the capture answers FAILED_PRECONDITION, taking nothing |
//! | [`Shop::set_payments_fail_every`]`(n)` | every n-th call answers UNAVAILABLE before doing anything (0: off); the demo reads `n` from `TESSERA_DEMO_PAYMENTS_FAIL_EVERY` |
//!
//! Any other valid card is approved.
//!
//! ## Latency and outages
//! Every service (payments too) waits the `latency` given to [`start_all`] before it answers,
//! to make the difference between sequential and concurrent calls visible. [`Services::stop`]
//! takes one service down (connections refused) for tests of outages.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod carts;
mod catalog;
mod http;
mod inventory;
mod orders;
mod payments;
mod server;
mod shop;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

pub use carts::CartItem;
pub use inventory::{Reservation, ReservationState};
pub use orders::{FIRST_PLACED_ORDER_ID, Order, OrderItem, OrderStatus};
pub use payments::{
    CARD_DECLINED, CARD_INSUFFICIENT_FUNDS, CARD_SLOW_CAPTURE, CARD_UNAVAILABLE,
    DEFAULT_SLOW_CAPTURE_DELAY,
};
pub use shop::Shop;
/// The payment records [`Shop::payments`] answers are the API's own messages.
pub use tessera_ecommerce_payments_api::{Payment, State as PaymentState};

/// One of the services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// `/users/{id}`.
    Users,
    /// `/orders/{id}`, `/orders?user_id=`, placing and cancelling orders.
    Orders,
    /// `/products/{id}` and `/inventory/...`.
    Products,
    /// `/stores/{id}`.
    Stores,
    /// `/carts/{user_id}`.
    Carts,
    /// gRPC `tessera.demo.payments.v1.Payments`.
    Payments,
}

impl Service {
    /// All of them, in a fixed order.
    pub const ALL: [Service; 6] = [
        Service::Users,
        Service::Orders,
        Service::Products,
        Service::Stores,
        Service::Carts,
        Service::Payments,
    ];

    /// The name used for the upstream in the gateway config and in URLs.
    pub fn name(self) -> &'static str {
        match self {
            Service::Users => "users",
            Service::Orders => "orders",
            Service::Products => "products",
            Service::Stores => "stores",
            Service::Carts => "carts",
            Service::Payments => "payments",
        }
    }

    /// The `protocol` of its `[upstreams.*]` entry, if not the default HTTP/1.1.
    pub fn protocol(self) -> Option<&'static str> {
        match self {
            Service::Payments => Some("grpc"),
            _ => None,
        }
    }
}

/// The running services: their addresses and the [`Shop`] behind them.
///
/// The servers run until the runtime stops or [`Services::stop`]; dropping this does not stop
/// them. A test may point a field at another address (e.g. a closed port) before building the
/// gateway config from [`Services::upstreams_toml`].
#[derive(Debug, Clone)]
pub struct Services {
    /// users.
    pub users: SocketAddr,
    /// orders.
    pub orders: SocketAddr,
    /// products (and inventory).
    pub products: SocketAddr,
    /// stores.
    pub stores: SocketAddr,
    /// carts.
    pub carts: SocketAddr,
    /// payments (gRPC).
    pub payments: SocketAddr,
    /// The state the services answer from.
    pub shop: Shop,
    tasks: Arc<Mutex<Vec<ServerTask>>>,
}

/// A running server's task, by service.
type ServerTask = (Service, JoinHandle<()>);

impl Services {
    /// The address of one service.
    pub fn addr(&self, service: Service) -> SocketAddr {
        match service {
            Service::Users => self.users,
            Service::Orders => self.orders,
            Service::Products => self.products,
            Service::Stores => self.stores,
            Service::Carts => self.carts,
            Service::Payments => self.payments,
        }
    }

    /// `[upstreams.*]` TOML for all the services; payments with `protocol = "grpc"`.
    pub fn upstreams_toml(&self) -> String {
        Service::ALL
            .iter()
            .map(|s| {
                let protocol = s
                    .protocol()
                    .map(|p| format!("protocol = \"{p}\"\n"))
                    .unwrap_or_default();
                format!(
                    "[upstreams.{}]\ntargets = [\"{}\"]\n{protocol}",
                    s.name(),
                    self.addr(*s)
                )
            })
            .collect()
    }

    /// Stops one service: its port is closed and its open connections are dropped, so calls
    /// to it fail to connect. Its state stays in the [`Shop`]; a slow capture already waiting
    /// still acts. Stopping a stopped service does nothing.
    pub async fn stop(&self, service: Service) {
        let stopping: Vec<JoinHandle<()>> = {
            let mut tasks = shop::lock(&self.tasks);
            let (stopping, running) = std::mem::take(&mut *tasks)
                .into_iter()
                .partition(|(s, _)| *s == service);
            *tasks = running;
            stopping.into_iter().map(|(_, task)| task).collect()
        };
        for task in stopping {
            task.abort();
            // Wait until the listener and connections are dropped.
            let _ = task.await;
        }
    }
}

/// Starts all the services on 127.0.0.1 with `latency` added to every answer, over a
/// [`Shop::new`] seeded from the fixtures.
pub async fn start_all(latency: Duration) -> std::io::Result<Services> {
    start_all_with(Shop::new(), latency).await
}

/// Starts all the services on 127.0.0.1 over `shop`, with `latency` added to every answer.
pub async fn start_all_with(shop: Shop, latency: Duration) -> std::io::Result<Services> {
    let mut tasks = Vec::new();
    let mut start = async |service| -> std::io::Result<SocketAddr> {
        let running = server::start(service, shop.clone(), latency).await?;
        tasks.push((service, running.task));
        Ok(running.addr)
    };
    let started = async {
        Ok::<_, std::io::Error>((
            start(Service::Users).await?,
            start(Service::Orders).await?,
            start(Service::Products).await?,
            start(Service::Stores).await?,
            start(Service::Carts).await?,
            start(Service::Payments).await?,
        ))
    }
    .await;
    match started {
        Ok((users, orders, products, stores, carts, payments)) => Ok(Services {
            users,
            orders,
            products,
            stores,
            carts,
            payments,
            shop,
            tasks: Arc::new(Mutex::new(tasks)),
        }),
        Err(e) => {
            for (_, task) in tasks {
                task.abort();
            }
            Err(e)
        }
    }
}
