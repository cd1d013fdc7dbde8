//! [`Shop`]: the state behind the services, shared by the servers and by tests.
//!
//! Each service keeps its state behind its own lock, taken only for the few instructions of one
//! change and never across an `.await`. The methods that read and set that state live next to
//! the service they belong to (`carts.rs`, `inventory.rs`, `orders.rs`, `payments.rs`).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::carts::Carts;
use crate::catalog::Catalog;
use crate::inventory::Inventory;
use crate::orders::OrderBook;
use crate::payments::Ledger;

/// The services' state: carts, stock and reservations, orders, payments. Cloning gives another
/// handle to the same state.
///
/// [`start_all`](crate::start_all) makes one seeded from the fixtures; tests read and change it
/// through the methods here while the services run:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let services = tessera_ecommerce_services::start_all(std::time::Duration::ZERO).await?;
/// services.shop.set_stock(100, 1);
/// assert_eq!(services.shop.available(100), Some(1));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Shop {
    pub(crate) state: Arc<State>,
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) catalog: Catalog,
    pub(crate) carts: Mutex<Carts>,
    pub(crate) inventory: Mutex<Inventory>,
    pub(crate) orders: Mutex<OrderBook>,
    pub(crate) payments: Ledger,
}

impl Shop {
    /// A shop as the fixtures describe it: carts for users 1 to 3, stock from the products'
    /// `stock` fields, the fixture orders, no payments.
    pub fn new() -> Shop {
        let catalog = Catalog::from_fixtures();
        let inventory = Inventory::from_products(&catalog.products);
        Shop {
            state: Arc::new(State {
                carts: Mutex::new(Carts::from_fixture()),
                inventory: Mutex::new(inventory),
                orders: Mutex::new(OrderBook::from_fixture()),
                payments: Ledger::default(),
                catalog,
            }),
        }
    }
}

impl Default for Shop {
    fn default() -> Shop {
        Shop::new()
    }
}

/// Locks `mutex`. A panic while holding one of these locks cannot leave its data half-changed
/// (each change is a few assignments with nothing fallible between them), so a poisoned lock
/// is used as it is rather than taking every later request down with it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
