//! Integration tests: the real gateway, real local upstreams, plugins built from source.

mod auth_plugins;
mod boundary;
mod cache;
mod checkout;
mod compression;
mod config;
mod config_check;
mod cors;
mod demo;
mod ecommerce;
mod edge;
mod grpc;
mod hardening;
mod hostile;
mod keyvalue;
mod observability;
mod orchestration;
mod plugins;
mod probes;
mod proxy;
mod ratelimit;
mod reload;
mod server;
mod tls;
mod transform;
mod wasi_http;
