//! Latency, stopped services and the gateway config the services describe.

use std::time::{Duration, Instant};

use http::StatusCode;
use tessera_ecommerce_payments_api::GetPaymentRequest;
use tessera_ecommerce_payments_api::payments_client::PaymentsClient;
use tessera_ecommerce_services::{Service, Services};
use tonic::transport::Endpoint;

use super::*;

async fn payments_client(
    services: &Services,
) -> Result<PaymentsClient<tonic::transport::Channel>, tonic::transport::Error> {
    let channel = Endpoint::from_shared(format!("http://{}", services.payments))
        .unwrap()
        .connect()
        .await?;
    Ok(PaymentsClient::new(channel))
}

#[tokio::test]
async fn every_service_waits_the_latency_before_it_answers() {
    let latency = Duration::from_millis(150);
    let services = tessera_ecommerce_services::start_all(latency)
        .await
        .unwrap();
    for (addr, path) in [
        (services.users, "/users/1"),
        (services.orders, "/orders/1001"),
        (services.products, "/products/100"),
        (services.products, "/inventory/100"),
        (services.stores, "/stores/10"),
        (services.carts, "/carts/1"),
    ] {
        let started = Instant::now();
        assert_eq!(get(addr, path).await.status, StatusCode::OK, "{path}");
        assert!(started.elapsed() >= latency, "{path} answered early");
    }
    let mut payments = payments_client(&services).await.unwrap();
    let started = Instant::now();
    let status = payments
        .get_payment(GetPaymentRequest {
            payment_id: "pay_000001".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert!(started.elapsed() >= latency, "payments answered early");
}

#[tokio::test]
async fn a_stopped_service_refuses_connections_and_the_others_go_on() {
    let services = services().await;
    let mut payments = payments_client(&services).await.unwrap();
    payments
        .get_payment(GetPaymentRequest {
            payment_id: "pay_1".into(),
        })
        .await
        .unwrap_err();

    services.stop(Service::Payments).await;
    services.stop(Service::Carts).await;
    services.stop(Service::Carts).await;

    assert!(
        tokio::net::TcpStream::connect(services.carts)
            .await
            .is_err()
    );
    assert!(
        tokio::net::TcpStream::connect(services.payments)
            .await
            .is_err()
    );
    assert!(payments_client(&services).await.is_err());
    // The connection open before the stop is closed too.
    let status = payments
        .get_payment(GetPaymentRequest {
            payment_id: "pay_1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");

    assert_eq!(get(services.users, "/users/1").await.status, StatusCode::OK);
    // The state outlives the server.
    assert_eq!(services.shop.cart(1).len(), 1);
}

#[test]
fn the_upstreams_config_names_every_service_and_speaks_grpc_to_payments() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let services = runtime.block_on(services());
    let toml = services.upstreams_toml();
    for service in Service::ALL {
        let entry = format!(
            "[upstreams.{}]\ntargets = [\"{}\"]\n",
            service.name(),
            services.addr(service)
        );
        assert!(toml.contains(&entry), "{toml}");
    }
    let payments = format!(
        "[upstreams.payments]\ntargets = [\"{}\"]\nprotocol = \"grpc\"\n",
        services.payments
    );
    assert!(toml.ends_with(&payments), "{toml}");
    assert_eq!(toml.matches("protocol").count(), 1);
}
