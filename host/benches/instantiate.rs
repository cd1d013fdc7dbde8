//! Per-request plugin cost: a fresh store and instance from the pool, then a trivial call.
//!
//! Run with `cargo xtask bench` (builds the plugins, sets `TESSERA_PLUGIN_DIR`).

use std::path::PathBuf;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use tessera::bindings;
use tessera::config::PluginsConfig;
use tessera::outbound::{OutboundContext, OutboundLimits};
use tessera::plugin::{CallContext, CallLimits, PluginEngine, PluginInstance};
use tessera::upstream::Upstreams;

fn plugin_bytes(file: &str) -> Vec<u8> {
    let dir = std::env::var_os("TESSERA_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/debug")
        });
    let path = dir.join(file);
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run `cargo xtask bench`)", path.display()))
}

fn call_context() -> CallContext {
    CallContext {
        plugin: "hello@bench".into(),
        config_json: "{}".into(),
        request_id: "bench".into(),
        route: "/hello/{name}".into(),
        params: vec![("name".to_owned(), "bench".to_owned())].into(),
        client: std::net::Ipv4Addr::LOCALHOST.into(),
        outbound: Arc::new(OutboundContext {
            plugin: "hello".into(),
            metrics: Default::default(),
            request_id: "bench".into(),
            traceparent: Default::default(),
            granted: Vec::new().into(),
            allow_hosts: Vec::new().into(),
            upstreams: Arc::new(Upstreams::default()),
            limits: OutboundLimits {
                max_calls: 64,
                max_in_flight: 16,
            },
            max_body_bytes: 1 << 20,
            max_header_bytes: 64 << 10,
        }),
        kv: Default::default(),
    }
}

fn request() -> bindings::Request {
    bindings::Request {
        method: "GET".into(),
        path: "/hello/bench".into(),
        query: None,
        headers: Vec::new(),
        body: Some(Vec::new()),
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let engine = Arc::new(PluginEngine::new(&PluginsConfig::default()).expect("engine"));
    let hello = Arc::new(
        rt.block_on(engine.load("hello", plugin_bytes("tessera_example_hello.wasm"), None))
            .expect("load hello"),
    );

    let limits = CallLimits::from_config(&PluginsConfig::default().limits);
    c.bench_function("instantiate", |b| {
        b.iter(|| {
            rt.block_on(async {
                let instance = PluginInstance::new(&engine, &hello, call_context(), &limits)
                    .await
                    .expect("instantiate");
                drop(instance);
            })
        })
    });
    c.bench_function("instantiate_and_handle", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut instance = PluginInstance::new(&engine, &hello, call_context(), &limits)
                    .await
                    .expect("instantiate");
                let response = instance.handle(request()).await.expect("handle");
                assert_eq!(response.status, 200);
            })
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
