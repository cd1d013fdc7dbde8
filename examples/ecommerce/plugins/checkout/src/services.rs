//! Where the services are: the upstreams the route entry must grant (`carts`, `products`,
//! `orders`, `payments`) and the paths the checkout calls on them.

use tessera_ecommerce_payments_api::SERVICE_PATH;

/// The orders collection: `POST` creates an order.
pub const ORDERS: &str = "http://orders/orders";

/// A user's cart: `GET` reads it, `DELETE` empties it.
pub fn cart(user_id: u64) -> String {
    format!("http://carts/carts/{user_id}")
}

/// A product in the catalogue.
pub fn product(product_id: u64) -> String {
    format!("http://products/products/{product_id}")
}

/// A product's reservations: `POST` holds stock.
pub fn reservations(product_id: u64) -> String {
    format!("http://products/inventory/{product_id}/reservations")
}

/// One reservation: `DELETE` releases it.
pub fn reservation(product_id: u64, reservation_id: &str) -> String {
    format!("{}/{reservation_id}", reservations(product_id))
}

/// `POST` turns a reservation into a sale.
pub fn commit(product_id: u64, reservation_id: &str) -> String {
    format!("{}/commit", reservation(product_id, reservation_id))
}

/// `POST` cancels an order.
pub fn cancel(order_id: u64) -> String {
    format!("{ORDERS}/{order_id}/cancel")
}

/// A method of the payments gRPC service.
pub fn payments(method: &str) -> String {
    format!("http://payments{SERVICE_PATH}{method}")
}
