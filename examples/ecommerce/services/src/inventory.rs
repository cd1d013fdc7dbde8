//! Inventory on the products service: stock per product and reservations against it.
//!
//! A reservation holds stock for a caller-chosen `reservation_id` (the checkout uses its
//! checkout id) until it is committed (the stock is sold) or released (the stock is back).
//! Reservations are keyed by product and reservation id, so one checkout reserves each of its
//! products under the same id. Every change happens under the inventory's one lock, which is
//! what keeps `available` from ever going below zero however many reservations race.

use std::collections::{BTreeMap, HashMap};

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::http::{
    Answer, bad_request, check_id, check_quantity, decode_segment, error, json, method_not_allowed,
    not_found, parse_id, read_json, segments,
};
use crate::shop::{Shop, lock};

/// A reservation of stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reservation {
    /// The caller's id for it, 1 to 128 characters.
    pub reservation_id: String,
    /// The product reserved.
    pub product_id: u64,
    /// How many units.
    pub quantity: u32,
    /// Held, released or committed.
    pub state: ReservationState,
}

/// Where a reservation is in its life. `Held` is the only state that changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReservationState {
    /// The units are taken from `available` and counted in `reserved`.
    Held,
    /// The units went back to `available`.
    Released,
    /// The units are sold: no longer `reserved`, not back in `available`.
    Committed,
}

/// One product's stock.
#[derive(Debug, Clone, Copy, Default)]
struct Level {
    available: u64,
    reserved: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Inventory {
    levels: BTreeMap<u64, Level>,
    /// In the order they were made.
    reservations: Vec<Reservation>,
    by_key: HashMap<(u64, String), usize>,
}

/// Why a change was refused.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    UnknownProduct,
    UnknownReservation,
    OutOfStock {
        requested: u32,
        available: u64,
    },
    /// The reservation id is taken, on this product, for another quantity.
    Conflict {
        existing: Reservation,
    },
    /// A committed reservation cannot be released.
    Committed,
    /// A released reservation cannot be committed.
    Released,
}

/// `POST /inventory/{product_id}/reservations`'s body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReserveBody {
    reservation_id: String,
    quantity: u32,
}

impl Inventory {
    /// Stock from each product's `stock` field.
    pub(crate) fn from_products(products: &[Value]) -> Inventory {
        let mut inventory = Inventory::default();
        for product in products {
            if let (Some(id), Some(stock)) = (product["id"].as_u64(), product["stock"].as_u64()) {
                inventory.set_stock(id, stock);
            }
        }
        inventory
    }

    pub(crate) fn available(&self, product_id: u64) -> Option<u64> {
        self.levels.get(&product_id).map(|level| level.available)
    }

    fn set_stock(&mut self, product_id: u64, available: u64) {
        self.levels.entry(product_id).or_default().available = available;
    }

    fn level(&self, product_id: u64) -> Result<Level, Refusal> {
        self.levels
            .get(&product_id)
            .copied()
            .ok_or(Refusal::UnknownProduct)
    }

    fn index(&self, product_id: u64, reservation_id: &str) -> Result<usize, Refusal> {
        self.level(product_id)?;
        self.by_key
            .get(&(product_id, reservation_id.to_owned()))
            .copied()
            .ok_or(Refusal::UnknownReservation)
    }

    /// Holds `quantity` units. `Ok((true, _))` for a new reservation, `Ok((false, _))` for the
    /// same request again (nothing more is taken).
    fn reserve(
        &mut self,
        product_id: u64,
        reservation_id: &str,
        quantity: u32,
    ) -> Result<(bool, Reservation), Refusal> {
        let level = self.level(product_id)?;
        match self.index(product_id, reservation_id) {
            Ok(i) if self.reservations[i].quantity == quantity => {
                return Ok((false, self.reservations[i].clone()));
            }
            Ok(i) => {
                return Err(Refusal::Conflict {
                    existing: self.reservations[i].clone(),
                });
            }
            Err(_) => {}
        }
        if level.available < u64::from(quantity) {
            return Err(Refusal::OutOfStock {
                requested: quantity,
                available: level.available,
            });
        }
        let level = self.levels.entry(product_id).or_default();
        level.available -= u64::from(quantity);
        level.reserved += u64::from(quantity);
        let reservation = Reservation {
            reservation_id: reservation_id.to_owned(),
            product_id,
            quantity,
            state: ReservationState::Held,
        };
        self.by_key.insert(
            (product_id, reservation_id.to_owned()),
            self.reservations.len(),
        );
        self.reservations.push(reservation.clone());
        Ok((true, reservation))
    }

    /// Gives a held reservation's units back. Releasing a released one answers it again.
    fn release(&mut self, product_id: u64, reservation_id: &str) -> Result<Reservation, Refusal> {
        let i = self.index(product_id, reservation_id)?;
        let reservation = &mut self.reservations[i];
        match reservation.state {
            ReservationState::Held => {
                let quantity = u64::from(reservation.quantity);
                reservation.state = ReservationState::Released;
                let level = self.levels.entry(product_id).or_default();
                level.reserved -= quantity;
                level.available += quantity;
            }
            ReservationState::Released => {}
            ReservationState::Committed => return Err(Refusal::Committed),
        }
        Ok(self.reservations[i].clone())
    }

    /// Sells a held reservation's units. Committing a committed one answers it again.
    fn commit(&mut self, product_id: u64, reservation_id: &str) -> Result<Reservation, Refusal> {
        let i = self.index(product_id, reservation_id)?;
        let reservation = &mut self.reservations[i];
        match reservation.state {
            ReservationState::Held => {
                reservation.state = ReservationState::Committed;
                let quantity = u64::from(reservation.quantity);
                self.levels.entry(product_id).or_default().reserved -= quantity;
            }
            ReservationState::Committed => {}
            ReservationState::Released => return Err(Refusal::Released),
        }
        Ok(self.reservations[i].clone())
    }
}

fn refused(product_id: u64, refusal: Refusal) -> Answer {
    match refusal {
        Refusal::UnknownProduct => not_found(format!("no such product {product_id}")),
        Refusal::UnknownReservation => {
            not_found(format!("no such reservation of product {product_id}"))
        }
        Refusal::OutOfStock {
            requested,
            available,
        } => json(
            StatusCode::CONFLICT,
            &json!({
                "error": "out_of_stock",
                "product_id": product_id,
                "requested": requested,
                "available": available,
            }),
        ),
        Refusal::Conflict { existing } => json(
            StatusCode::CONFLICT,
            &json!({
                "error": "reservation_conflict",
                "message": format!(
                    "reservation {:?} of product {product_id} exists for quantity {}",
                    existing.reservation_id, existing.quantity
                ),
                "reservation": existing,
            }),
        ),
        Refusal::Committed => error(StatusCode::CONFLICT, "committed"),
        Refusal::Released => error(StatusCode::CONFLICT, "released"),
    }
}

fn answer_with(
    status: StatusCode,
    product_id: u64,
    result: Result<Reservation, Refusal>,
) -> Answer {
    match result {
        Ok(reservation) => json(status, &reservation),
        Err(refusal) => refused(product_id, refusal),
    }
}

/// The inventory routes, under `/inventory/` on the products service.
pub(crate) async fn answer(shop: &Shop, request: Request<Incoming>) -> Answer {
    let (parts, body) = request.into_parts();
    let segments = segments(parts.uri.path());
    let (product_id, rest) = match segments.as_slice() {
        ["inventory", product_id, rest @ ..] => (parse_id(product_id), rest),
        _ => return not_found("no such resource"),
    };
    let Some(product_id) = product_id else {
        return not_found("no such product: the product id must be a number");
    };
    let inventory = &shop.state.inventory;
    match (rest, parts.method) {
        ([], Method::GET) => match lock(inventory).level(product_id) {
            Ok(level) => json(
                StatusCode::OK,
                &json!({
                    "product_id": product_id,
                    "available": level.available,
                    "reserved": level.reserved,
                }),
            ),
            Err(refusal) => refused(product_id, refusal),
        },
        ([], _) => method_not_allowed("GET"),
        (["reservations"], Method::POST) => {
            // An unknown product is 404 whatever the body says.
            if let Err(refusal) = lock(inventory).level(product_id) {
                return refused(product_id, refusal);
            }
            let body: ReserveBody = match read_json(body).await {
                Ok(body) => body,
                Err(answer) => return answer,
            };
            let checked = check_id("reservation_id", &body.reservation_id)
                .and_then(|()| check_quantity("quantity", body.quantity));
            if let Err(message) = checked {
                return bad_request(message);
            }
            match lock(inventory).reserve(product_id, &body.reservation_id, body.quantity) {
                Ok((true, reservation)) => json(StatusCode::CREATED, &reservation),
                Ok((false, reservation)) => json(StatusCode::OK, &reservation),
                Err(refusal) => refused(product_id, refusal),
            }
        }
        (["reservations"], _) => method_not_allowed("POST"),
        (["reservations", reservation_id, rest @ ..], method) => {
            let Some(reservation_id) = decode_segment(reservation_id) else {
                return refused(product_id, Refusal::UnknownReservation);
            };
            match (rest, method) {
                ([], Method::GET) => {
                    let inventory = lock(inventory);
                    let found = inventory
                        .index(product_id, &reservation_id)
                        .map(|i| inventory.reservations[i].clone());
                    answer_with(StatusCode::OK, product_id, found)
                }
                ([], Method::DELETE) => {
                    let released = lock(inventory).release(product_id, &reservation_id);
                    answer_with(StatusCode::OK, product_id, released)
                }
                ([], _) => method_not_allowed("GET, DELETE"),
                (["commit"], Method::POST) => {
                    let committed = lock(inventory).commit(product_id, &reservation_id);
                    answer_with(StatusCode::OK, product_id, committed)
                }
                (["commit"], _) => method_not_allowed("POST"),
                _ => not_found("no such resource"),
            }
        }
        _ => not_found("no such resource"),
    }
}

impl Shop {
    /// The units of a product that can be reserved, or `None` for a product without stock
    /// records.
    pub fn available(&self, product_id: u64) -> Option<u64> {
        lock(&self.state.inventory).available(product_id)
    }

    /// The units of a product held by reservations, or `None` for a product without stock
    /// records.
    pub fn reserved(&self, product_id: u64) -> Option<u64> {
        lock(&self.state.inventory)
            .levels
            .get(&product_id)
            .map(|level| level.reserved)
    }

    /// Sets the units of a product that can be reserved (held reservations stay as they are).
    /// A product id without stock records gets them.
    pub fn set_stock(&self, product_id: u64, available: u64) {
        lock(&self.state.inventory).set_stock(product_id, available);
    }

    /// Every reservation made, in the order they were made, in their current states.
    pub fn reservations(&self) -> Vec<Reservation> {
        lock(&self.state.inventory).reservations.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inventory(stock: &[(u64, u64)]) -> Inventory {
        let mut inventory = Inventory::default();
        for &(id, n) in stock {
            inventory.set_stock(id, n);
        }
        inventory
    }

    fn level(inventory: &Inventory, id: u64) -> (u64, u64) {
        let level = inventory.level(id).unwrap();
        (level.available, level.reserved)
    }

    #[test]
    fn stock_is_seeded_from_the_products_fixture() {
        let catalog = crate::catalog::Catalog::from_fixtures();
        let inventory = Inventory::from_products(&catalog.products);
        assert_eq!(inventory.available(100), Some(12));
        assert_eq!(inventory.available(103), Some(250));
        assert_eq!(inventory.available(107), Some(0));
        assert_eq!(inventory.available(999), None);
    }

    #[test]
    fn a_reservation_holds_then_commits_or_releases() {
        let mut inv = inventory(&[(1, 10)]);
        let (created, r) = inv.reserve(1, "a", 3).unwrap();
        assert!(created);
        assert_eq!(r.state, ReservationState::Held);
        assert_eq!(level(&inv, 1), (7, 3));

        assert_eq!(
            inv.commit(1, "a").unwrap().state,
            ReservationState::Committed
        );
        assert_eq!(level(&inv, 1), (7, 0));
        assert_eq!(
            inv.commit(1, "a").unwrap().state,
            ReservationState::Committed
        );
        assert_eq!(inv.release(1, "a"), Err(Refusal::Committed));
        assert_eq!(level(&inv, 1), (7, 0));

        inv.reserve(1, "b", 2).unwrap();
        assert_eq!(
            inv.release(1, "b").unwrap().state,
            ReservationState::Released
        );
        assert_eq!(level(&inv, 1), (7, 0));
        assert_eq!(
            inv.release(1, "b").unwrap().state,
            ReservationState::Released
        );
        assert_eq!(level(&inv, 1), (7, 0));
        assert_eq!(inv.commit(1, "b"), Err(Refusal::Released));
    }

    #[test]
    fn the_same_reservation_again_takes_nothing_more() {
        let mut inv = inventory(&[(1, 5)]);
        inv.reserve(1, "a", 4).unwrap();
        let (created, r) = inv.reserve(1, "a", 4).unwrap();
        assert!(!created);
        assert_eq!(r.quantity, 4);
        assert_eq!(level(&inv, 1), (1, 4));
        assert!(matches!(
            inv.reserve(1, "a", 1),
            Err(Refusal::Conflict { existing }) if existing.quantity == 4
        ));
        // Released, the same request answers the released reservation; it is not made again.
        inv.release(1, "a").unwrap();
        let (created, r) = inv.reserve(1, "a", 4).unwrap();
        assert!(!created);
        assert_eq!(r.state, ReservationState::Released);
        assert_eq!(level(&inv, 1), (5, 0));
    }

    #[test]
    fn reservation_ids_are_per_product() {
        let mut inv = inventory(&[(1, 5), (2, 5)]);
        inv.reserve(1, "checkout-1", 2).unwrap();
        let (created, _) = inv.reserve(2, "checkout-1", 3).unwrap();
        assert!(created);
        assert_eq!(level(&inv, 1), (3, 2));
        assert_eq!(level(&inv, 2), (2, 3));
        assert_eq!(inv.release(2, "checkout-1").unwrap().quantity, 3);
        assert_eq!(level(&inv, 1), (3, 2));
    }

    #[test]
    fn refusals() {
        let mut inv = inventory(&[(1, 2)]);
        assert_eq!(inv.reserve(9, "a", 1), Err(Refusal::UnknownProduct));
        assert_eq!(
            inv.reserve(1, "a", 3),
            Err(Refusal::OutOfStock {
                requested: 3,
                available: 2
            })
        );
        assert_eq!(level(&inv, 1), (2, 0));
        assert_eq!(inv.release(1, "nope"), Err(Refusal::UnknownReservation));
        assert_eq!(inv.commit(9, "nope"), Err(Refusal::UnknownProduct));
        assert!(inv.reservations.is_empty());
    }
}
