//! The demo payment service's API, generated at build time from
//! `examples/ecommerce/proto/payments.proto` (read that file for what each call does).
//!
//! By default only the protobuf messages are built, with nothing but `prost` underneath, so a
//! plugin compiled for `wasm32-wasip2` can encode requests and decode answers itself:
//!
//! ```
//! use prost::Message;
//! use tessera_ecommerce_payments_api::{AuthorizeRequest, Payment, State, SERVICE_PATH};
//!
//! let request = AuthorizeRequest {
//!     idempotency_key: "checkout-42".into(),
//!     card_number: "4242424242424242".into(),
//!     amount_cents: 7499,
//!     currency: "EUR".into(),
//!     reference: "checkout-42".into(),
//! };
//! let path = format!("{SERVICE_PATH}Authorize");
//! assert_eq!(path, "/tessera.demo.payments.v1.Payments/Authorize");
//! let bytes = request.encode_to_vec();
//! assert_eq!(AuthorizeRequest::decode(bytes.as_slice()).unwrap(), request);
//! assert_eq!(Payment::default().state(), State::Unspecified);
//! ```
//!
//! Features:
//! - `server`: `payments_server`, tonic's server for the service (`PaymentsServer` over a
//!   `Payments` trait).
//! - `client`: `payments_client`, tonic's client, generic over any tonic transport.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// The generated code: messages at the top, the tonic modules beside them when enabled.
#[allow(missing_docs, clippy::all, unused_qualifications)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/tessera.demo.payments.v1.rs"));
}

pub use generated::{
    AuthorizeRequest, CaptureRequest, GetPaymentRequest, Payment, RefundRequest, State, VoidRequest,
};

#[cfg(feature = "client")]
pub use generated::payments_client;
#[cfg(feature = "server")]
pub use generated::payments_server;

/// The gRPC path prefix of every call: a call's path is this followed by the method name, e.g.
/// `/tessera.demo.payments.v1.Payments/Authorize`.
pub const SERVICE_PATH: &str = "/tessera.demo.payments.v1.Payments/";

/// The fully qualified name of the service, as gRPC reflection and health checks name it.
pub const SERVICE_NAME: &str = "tessera.demo.payments.v1.Payments";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_path_matches_the_proto_package_and_service() {
        assert_eq!(SERVICE_PATH, format!("/{SERVICE_NAME}/"));
    }

    #[cfg(feature = "server")]
    #[test]
    fn the_server_names_the_service_as_the_proto_does() {
        use tonic::server::NamedService;
        struct Nothing;
        assert_eq!(
            <payments_server::PaymentsServer<Nothing> as NamedService>::NAME,
            SERVICE_NAME
        );
    }
}
