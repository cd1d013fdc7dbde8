//! Test harness: plugins built from source, local upstreams, a gateway on an ephemeral port, and a
//! small HTTP client.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tessera::RunningGateway;
use tessera::config::Config;

pub mod tls;
mod wire;
pub use wire::*;

/// Plugin crates the tests use, built for wasm32-wasip2: the list `cargo xtask` builds.
pub fn plugin_packages() -> impl Iterator<Item = &'static str> {
    include_str!("../../xtask/plugins.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The directory holding the built plugin `.wasm` files. `cargo xtask test` builds them first
/// and sets `TESSERA_PLUGIN_DIR`; otherwise the first call builds them with cargo.
pub fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("TESSERA_PLUGIN_DIR") {
            return PathBuf::from(dir);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace_root())
            .args(["build", "--target", "wasm32-wasip2"]);
        for p in plugin_packages() {
            cmd.args(["-p", p]);
        }
        let status = cmd
            .status()
            .expect("running cargo to build the test plugins");
        assert!(
            status.success(),
            "building the test plugins failed (is the wasm32-wasip2 target installed?)"
        );
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target"));
        target.join("wasm32-wasip2").join("debug")
    })
}

/// The directory of the JavaScript and Python plugins: `js/<name>.wasm` and `python/<name>.wasm`
/// (sources in `examples/js` and `examples/python`). `cargo xtask test` builds them first and
/// sets `TESSERA_POLYGLOT_DIR`; otherwise the first call runs `cargo xtask polyglot`, the same
/// build (it installs the pinned toolchains under `target/polyglot` once and rebuilds only what
/// changed).
pub fn polyglot_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("TESSERA_POLYGLOT_DIR") {
            return PathBuf::from(dir);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let output = Command::new(cargo)
            .current_dir(workspace_root())
            .args(["run", "--quiet", "-p", "xtask", "--", "polyglot"])
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("running cargo xtask polyglot to build the JavaScript and Python plugins");
        assert!(
            output.status.success(),
            "cargo xtask polyglot failed: building the JavaScript and Python plugins"
        );
        // The task prints the directory it built into, as its only output line.
        let dir = String::from_utf8_lossy(&output.stdout);
        PathBuf::from(dir.trim())
    })
}

/// The path of a built JavaScript or Python plugin: `polyglot_plugin("python", "order-details")`.
pub fn polyglot_plugin(language: &str, name: &str) -> PathBuf {
    let path = polyglot_dir().join(language).join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing; run `cargo xtask polyglot`",
        path.display()
    );
    path
}

/// The JavaScript `wasi:http/proxy` component of the tests (`tests/plugins/wasi-http-js`, built
/// with componentize-js's `http` and `fetch-event` features by its `build.mjs`), using the
/// packages `cargo xtask polyglot` installs under `target/polyglot/tools/js`. Built on first use
/// and again only when its sources or the pinned packages change.
pub fn wasi_http_js_plugin() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        use sha2::Digest;
        let polyglot = polyglot_dir();
        let modules = polyglot.join("tools").join("js").join("node_modules");
        let source = workspace_root()
            .join("tests")
            .join("plugins")
            .join("wasi-http-js");
        let out_dir = polyglot.join("wasi-http");
        std::fs::create_dir_all(&out_dir).expect("creating target/polyglot/wasi-http");
        let out = out_dir.join("wasi-http-js.wasm");
        let stamp = out_dir.join("wasi-http-js.inputs");
        let mut inputs = sha2::Sha256::new();
        for file in [
            source.join("app.js"),
            source.join("build.mjs"),
            workspace_root().join("examples/js/package-lock.json"),
        ] {
            let bytes =
                std::fs::read(&file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
            inputs.update(&bytes);
        }
        let fingerprint = format!("{:x}", inputs.finalize());
        // Two test processes at once would write the same files.
        let lock = std::fs::File::create(out_dir.join(".lock")).expect("creating the build lock");
        lock.lock().expect("locking the build");
        if out.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == fingerprint) {
            return out;
        }
        let partial = out_dir.join("wasi-http-js.wasm.partial");
        let status = Command::new("node")
            .arg(source.join("build.mjs"))
            .arg(&modules)
            .arg(&partial)
            .status()
            .expect("running node to build the JavaScript wasi:http component");
        assert!(
            status.success(),
            "building tests/plugins/wasi-http-js failed"
        );
        std::fs::rename(&partial, &out).expect("moving the component into place");
        std::fs::write(&stamp, fingerprint).expect("writing the build stamp");
        out
    })
}

/// The `tessera` binary of this workspace, built if needed (`cargo xtask test` passes it in
/// `TESSERA_BIN`).
pub fn tessera_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("TESSERA_BIN") {
        return PathBuf::from(bin);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["build", "-p", "tessera", "--bin", "tessera"])
        .status()
        .expect("running cargo build -p tessera");
    assert!(status.success(), "building tessera failed");
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("debug")
        .join("tessera")
}

/// `bytes` gzip-compressed.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("compressing into memory");
    encoder.finish().expect("compressing into memory")
}

/// A gzip body decompressed; panics if it is not valid gzip.
pub fn gunzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("a valid gzip body");
    out
}

/// A scratch directory with a `plugins/` directory inside, removed at the end of the test.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    /// A new directory under the system's temporary directory; `name` tells tests apart.
    pub fn new(name: &str) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tessera-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        std::fs::create_dir_all(dir.join("plugins")).expect("creating a scratch directory");
        Self(dir)
    }

    /// `name` inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The `plugins/` directory inside.
    pub fn plugins(&self) -> PathBuf {
        self.path("plugins")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The path of a built plugin, by crate name (`tessera-test-handler`).
pub fn plugin(package: &str) -> PathBuf {
    let path = plugin_dir().join(format!("{}.wasm", package.replace('-', "_")));
    assert!(
        path.exists(),
        "{} is missing; build the plugins first",
        path.display()
    );
    path
}

/// A `[plugins]` section with every test plugin, a shared compile cache and a small pool.
pub fn plugins_section() -> String {
    let cache = workspace_root().join("target").join("plugin-cache");
    let mut s = format!(
        "[plugins]\nmax_instances = 64\ncache_dir = {:?}\nlimits = {{ timeout_ms = 2000, memory_bytes = 33554432, max_calls = 8, max_in_flight = 4 }}\n[plugins.files]\n",
        cache.display().to_string()
    );
    for (name, package) in [
        ("headers", "tessera-plugin-headers"),
        ("jwt", "tessera-plugin-jwt"),
        ("api-key", "tessera-plugin-api-key"),
        ("rate-limit", "tessera-plugin-rate-limit"),
        ("cache", "tessera-plugin-cache"),
        ("cors", "tessera-plugin-cors"),
        ("transform", "tessera-plugin-transform"),
        ("aggregate", "tessera-plugin-aggregate"),
        ("hello", "tessera-example-hello"),
        ("order-details", "tessera-example-order-details"),
        ("order-history", "tessera-example-order-history"),
        ("checkout", "tessera-example-checkout"),
        ("test-filter", "tessera-test-filter"),
        ("test-handler", "tessera-test-handler"),
        ("hostile", "tessera-test-hostile"),
        ("wit-compat", "tessera-test-wit-compat"),
        ("wasi-http", "tessera-test-wasi-http"),
    ] {
        s.push_str(&format!(
            "{name} = {:?}\n",
            plugin(package).display().to_string()
        ));
    }
    s
}

/// Parses a config written by a test. The access log is off unless the test configures one:
/// its lines go to standard output, which the test runner does not capture.
pub fn config(text: &str) -> Config {
    match Config::parse(text, Path::new("test.toml"), &workspace_root()) {
        Ok(mut c) => {
            if !text.contains("[access_log]") {
                c.access_log.format = tessera::config::AccessLogFormat::Off;
            }
            c
        }
        Err(e) => panic!("test config is invalid: {e}\n{text}"),
    }
}

/// Starts a gateway on an ephemeral port. `routes` is TOML for `[upstreams.*]` and `[[routes]]`;
/// the server and plugins sections are added.
pub async fn gateway(routes: &str) -> RunningGateway {
    gateway_with("", routes).await
}

/// Like [`gateway`], with extra `[server]` keys (TOML lines).
pub async fn gateway_with(server: &str, routes: &str) -> RunningGateway {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace_ms = 5000\n{server}\n{}\n{routes}",
        plugins_section()
    );
    let gateway = tessera::Gateway::new(config(&text))
        .await
        .expect("gateway builds");
    gateway.start().await.expect("gateway starts")
}

/// A response body for test upstreams.
pub type TestBody = UnsyncBoxBody<Bytes, Infallible>;

/// A full body.
pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into()).boxed_unsync()
}

/// Starts an HTTP/1.1 upstream on 127.0.0.1 that answers with `handler`.
pub async fn upstream<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("upstream addr");
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                break;
            };
            let handler = Arc::clone(&handler);
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let fut = handler(req);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// An address nothing listens on.
pub async fn dead_address() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    addr
}

/// A finished exchange.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Reply {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A pooled HTTP/1.1 client.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// Sends a request to the gateway and reads the whole response.
pub async fn send(gateway: &RunningGateway, request: Request<Full<Bytes>>) -> Reply {
    let (mut parts, body) = request.into_parts();
    let pq = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    parts.uri = format!("http://{}{pq}", gateway.local_addr())
        .parse()
        .expect("uri");
    fetch(Request::from_parts(parts, body)).await
}

/// Sends `request` (its URI absolute: `http://host:port/path`) and reads the whole response.
pub async fn fetch(request: Request<Full<Bytes>>) -> Reply {
    let uri = request.uri().clone();
    let response = client()
        .request(request)
        .await
        .unwrap_or_else(|e| panic!("{uri} does not answer: {e}"));
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("response body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// `GET path` through the gateway.
pub async fn get(gateway: &RunningGateway, path: &str) -> Reply {
    send(
        gateway,
        Request::get(path).body(Full::default()).expect("request"),
    )
    .await
}

/// A request with a method, path and body.
pub fn request(method: Method, path: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .body(Full::new(body.into()))
        .expect("request")
}

/// Sends raw bytes on a new connection and reads until the server closes it or `wait` passes.
/// Returns what came back.
pub async fn raw_exchange(
    gateway: &RunningGateway,
    request: &[u8],
    wait: std::time::Duration,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(gateway.local_addr())
        .await
        .expect("connect");
    stream.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Resident memory of this process, in MiB (from /proc).
pub fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

/// File descriptors this process has open (from /proc).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// A `redis-server` of this test's own, on 127.0.0.1 and a port picked for it, without
/// persistence; killed when dropped. `cargo xtask test` installs `redis-server` when missing.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<std::process::Child>,
    port: u16,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers `PING`.
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("picking a port for redis-server")
            .port();
        let mut server = Self { child: None, port };
        server.restart();
        server
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (the port stays this server's for [`RedisServer::restart`]).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes (`true`, SIGSTOP) or thaws (`false`, SIGCONT) the server: frozen, it accepts
    /// connections but answers nothing, like an overloaded or partitioned Redis.
    pub fn freeze(&self, frozen: bool) {
        let child = self.child.as_ref().expect("redis-server is running");
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill {signal} redis-server failed");
    }

    /// Starts the server again on the same port, empty, and waits until it answers.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}): run `cargo xtask test`, which installs it")
            });
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !self.answers_ping() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server on port {} did not answer within 10 s",
                self.port
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    fn answers_ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(1)));
        let mut reply = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok()
            && s.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
