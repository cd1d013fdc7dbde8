//! Restart time with a warm compile cache: ten plugins, ten routes, from reading the config to
//! the first request answered. Run with `cargo xtask bench`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PLUGINS: usize = 10;
const RESTARTS: usize = 15;

/// A copy of `component` with a custom section appended, so each copy has its own content hash
/// (and its own cache entry) while behaving the same.
fn variant(component: &[u8], i: usize) -> Vec<u8> {
    let name = b"tessera-bench";
    let payload = i.to_le_bytes();
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(&payload);
    let mut out = component.to_vec();
    out.push(0); // custom section id
    out.push(section.len() as u8); // fits in one LEB128 byte
    out.extend_from_slice(&section);
    out
}

fn first_answer(addr: std::net::SocketAddr) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .write_all(b"GET /p0/bench HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n")
        .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response.lines().next().unwrap_or_default().to_owned()
}

fn main() {
    let plugins = std::env::var_os("TESSERA_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/release")
        });
    let hello =
        std::fs::read(plugins.join("tessera_example_hello.wasm")).expect("run `cargo xtask bench`");
    let dir = std::env::temp_dir().join(format!("tessera-restart-bench-{}", std::process::id()));
    let plugin_dir = dir.join("plugins");
    std::fs::create_dir_all(&plugin_dir).expect("scratch dir");
    let mut config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[plugins]\ndirectory = {:?}\ncache_dir = {:?}\n",
        plugin_dir.display().to_string(),
        dir.join("cache").display().to_string()
    );
    for i in 0..PLUGINS {
        std::fs::write(plugin_dir.join(format!("p{i}.wasm")), variant(&hello, i))
            .expect("plugin file");
        config.push_str(&format!(
            "[[routes]]\npath = \"/p{i}/{{name}}\"\nhandler = {{ plugin = \"p{i}\" }}\n"
        ));
    }
    let path = dir.join("tessera.toml");
    std::fs::write(&path, config).expect("config");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let restart = || {
        rt.block_on(async {
            let started = Instant::now();
            let gateway = tessera::Gateway::from_file(&path)
                .await
                .expect("gateway")
                .start()
                .await
                .expect("start");
            let addr = gateway.local_addr();
            let status = tokio::task::spawn_blocking(move || first_answer(addr))
                .await
                .expect("client");
            let took = started.elapsed();
            assert!(status.contains("200"), "{status}");
            gateway.shutdown().await;
            took
        })
    };
    let cold = restart();
    let mut warm: Vec<Duration> = (0..RESTARTS).map(|_| restart()).collect();
    warm.sort();
    println!(
        "restart with {PLUGINS} plugins: cold (compiling) {:.1} ms; with the cache: median {:.1} ms, max {:.1} ms over {RESTARTS} restarts",
        cold.as_secs_f64() * 1e3,
        warm[RESTARTS / 2].as_secs_f64() * 1e3,
        warm[RESTARTS - 1].as_secs_f64() * 1e3
    );
    let _ = std::fs::remove_dir_all(&dir);
}
