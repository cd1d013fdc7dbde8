//! Listening and serving: the HTTP services over HTTP/1.1 or cleartext HTTP/2 (prior
//! knowledge), the payments service as gRPC over cleartext HTTP/2.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tessera_ecommerce_payments_api::payments_server::PaymentsServer;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tonic::codegen::Service as GrpcService;

use crate::http::Answer;
use crate::payments::PaymentsService;
use crate::shop::Shop;
use crate::{Service, carts, catalog, inventory, orders};

/// A service listening on 127.0.0.1. Aborting `task` closes the listener and every connection.
pub(crate) struct Running {
    pub(crate) addr: SocketAddr,
    pub(crate) task: JoinHandle<()>,
}

/// Starts `service` on an ephemeral 127.0.0.1 port.
pub(crate) async fn start(
    service: Service,
    shop: Shop,
    latency: Duration,
) -> std::io::Result<Running> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = match service {
        Service::Payments => {
            let grpc = PaymentsServer::new(PaymentsService { shop });
            tokio::spawn(accept(listener, move |stream| {
                serve_grpc(stream, grpc.clone(), latency)
            }))
        }
        _ => tokio::spawn(accept(listener, move |stream| {
            serve_http(stream, service, shop.clone(), latency)
        })),
    };
    Ok(Running { addr, task })
}

/// Accepts connections until the task is aborted; the connections live in a `JoinSet` so they
/// end with it.
async fn accept<F, C>(listener: TcpListener, serve: F)
where
    F: Fn(TcpStream) -> C,
    C: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve(stream));
                }
                // Out of file descriptors and the like: wait for connections to close rather
                // than spin on the error.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_http(stream: TcpStream, service: Service, shop: Shop, latency: Duration) {
    let handler = service_fn(move |request: Request<Incoming>| {
        let shop = shop.clone();
        async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            Ok::<_, Infallible>(answer(service, &shop, request).await)
        }
    });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), handler)
        .await;
}

/// The HTTP services' routes.
async fn answer(service: Service, shop: &Shop, request: Request<Incoming>) -> Answer {
    match service {
        Service::Users | Service::Stores => {
            catalog::answer(service, shop, request.method(), request.uri().path())
        }
        Service::Products if request.uri().path().starts_with("/inventory/") => {
            inventory::answer(shop, request).await
        }
        Service::Products => catalog::answer(service, shop, request.method(), request.uri().path()),
        Service::Orders => orders::answer(shop, request).await,
        Service::Carts => carts::answer(shop, request).await,
        // `start` serves payments with `serve_grpc`; it never reaches here.
        Service::Payments => crate::http::not_found("no such resource"),
    }
}

async fn serve_grpc(stream: TcpStream, grpc: PaymentsServer<PaymentsService>, latency: Duration) {
    let handler = service_fn(move |request: Request<Incoming>| {
        let mut grpc = grpc.clone();
        async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            // `PaymentsServer` is always ready (its `poll_ready` returns `Ready` at once).
            std::future::poll_fn(|cx| GrpcService::<Request<Incoming>>::poll_ready(&mut grpc, cx))
                .await?;
            grpc.call(request).await
        }
    });
    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), handler)
        .await;
}
