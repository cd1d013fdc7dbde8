//! The demo payment service's API, generated from `examples/ecommerce/proto/payments.proto`.
