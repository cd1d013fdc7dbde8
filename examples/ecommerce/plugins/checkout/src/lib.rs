//! `POST /api/checkout`: the cart becomes an order, paid for, with every step undone on failure.
