//! Scale-out as users run it: three `tessera` processes started from one config file and one
//! plugin directory, sharing one Redis. The rate limit holds across the nodes, a response cached
//! through one node is a hit on another, a plugin dropped into the shared directory is served by
//! all three, and Redis going away and coming back costs what the plugins' fail policy says.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::{Response, StatusCode};
use tessera_tests::*;

/// A `tessera run` process; killed when dropped.
struct Node {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    /// Starts `tessera run config` and waits for its listening address (it listens on port 0,
    /// so every node runs the very same file).
    fn start(config: &Path) -> Self {
        let mut child = Command::new(tessera_binary())
            .arg("run")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting tessera");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if !sent
                    && let Some(addr) = line
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("local_addr="))
                {
                    let _ = tx.send(addr.to_owned());
                    sent = true;
                }
                // Keep draining so the node never blocks on a full pipe.
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the node did not report its address within 60 s")
            .parse()
            .expect("a socket address");
        Self { child, addr }
    }

    async fn get(&self, path: &str) -> Reply {
        fetch(
            http::Request::get(format!("http://{}{path}", self.addr))
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await
    }
}

/// Writes `bytes` to `dir/name` the way deploy tools do: elsewhere, then renamed into place.
fn drop_file(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

const LIMIT: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_limits_cache_and_plugins_through_redis() {
    let mut redis = RedisServer::start();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&hits);
    let upstream = upstream(move |req| {
        let counted = Arc::clone(&counted);
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            Response::builder()
                .header("content-type", "application/json")
                .header("cache-control", "max-age=300")
                .body(full(format!("{{\"path\":\"{}\"}}", req.uri().path())))
                .unwrap()
        }
    })
    .await;

    let dir = workspace_root()
        .join("target")
        .join("tmp")
        .join(format!("scaleout-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for (name, package) in [
        ("rate-limit", "tessera-plugin-rate-limit"),
        ("cache", "tessera-plugin-cache"),
        ("greeter", "tessera-test-version-a"),
    ] {
        drop_file(
            &plugins,
            &format!("{name}.wasm"),
            &std::fs::read(plugin(package)).unwrap(),
        );
    }
    let config = dir.join("tessera.toml");
    // One global counter (`key = []`, one scope) in a window far longer than the test.
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace_ms = 1000\n\
             [access_log]\nformat = \"off\"\n\
             [plugins]\ndirectory = {plugins:?}\ncache_dir = {cache:?}\nmax_instances = 256\n\
             [buckets.limits]\nbackend = \"redis\"\nurl = \"{url}\"\ntimeout_ms = 250\n\
             [buckets.cache]\nbackend = \"redis\"\nurl = \"{url}\"\ntimeout_ms = 250\n\
             [upstreams.app]\ntargets = [\"{upstream}\"]\n\
             [[routes]]\npath = \"/limited\"\nupstream = \"app\"\n\
             [[routes.filters]]\nplugin = \"rate-limit\"\nbuckets = [\"limits\"]\n\
             config = {{ bucket = \"limits\", limit = {LIMIT}, window_secs = 31536000, key = [], fail = \"open\" }}\n\
             [[routes]]\npath = \"/cached/{{id}}\"\nupstream = \"app\"\n\
             [[routes.filters]]\nplugin = \"cache\"\nbuckets = [\"cache\"]\nbuffer_body = true\n\
             config = {{ bucket = \"cache\" }}\n\
             [[routes]]\npath = \"/greet\"\nhandler = {{ plugin = \"greeter\" }}\n",
            plugins = plugins.display().to_string(),
            cache = workspace_root()
                .join("target")
                .join("plugin-cache")
                .display()
                .to_string(),
            url = redis.url(),
        ),
    )
    .unwrap();
    let nodes: Vec<Arc<Node>> = (0..3).map(|_| Arc::new(Node::start(&config))).collect();

    // The limit holds across the nodes: 300 requests spread over three nodes, at most LIMIT
    // allowed (exact with atomic increments; 5 % is the bound the design promises).
    let allowed = limited_round(&nodes, 3 * LIMIT).await;
    assert!(
        allowed.abs_diff(LIMIT) <= LIMIT / 20,
        "{allowed} of {} allowed with a global limit of {LIMIT}",
        3 * LIMIT
    );

    // Cached through one node, a hit on the others.
    let before = hits.load(Ordering::SeqCst);
    let first = nodes[0].get("/cached/7").await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.header("x-cache"), Some("miss"));
    for node in &nodes[1..] {
        let again = node.get("/cached/7").await;
        assert_eq!(again.status, StatusCode::OK);
        assert_eq!(
            again.header("x-cache"),
            Some("hit"),
            "a hit on {}",
            node.addr
        );
        assert_eq!(again.body, first.body);
    }
    assert_eq!(
        hits.load(Ordering::SeqCst) - before,
        1,
        "the upstream answered once"
    );

    // A plugin dropped into the shared directory is served by every node.
    for node in &nodes {
        assert!(node.get("/greet").await.text().contains("version a"));
    }
    drop_file(
        &plugins,
        "greeter.wasm",
        &std::fs::read(plugin("tessera-test-version-b")).unwrap(),
    );
    let dropped = Instant::now();
    for node in &nodes {
        loop {
            if node.get("/greet").await.text().contains("version b") {
                break;
            }
            assert!(
                dropped.elapsed() < Duration::from_secs(10),
                "{} still serves the old plugin",
                node.addr
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let picked_up = dropped.elapsed();
    assert!(picked_up < Duration::from_secs(5), "took {picked_up:?}");

    // Redis gone: `fail = "open"` lets requests through, nothing answers 5xx, nothing hangs.
    redis.kill();
    let started = Instant::now();
    for node in &nodes {
        for path in ["/limited", "/cached/8"] {
            let reply = node.get(path).await;
            assert_eq!(
                reply.status,
                StatusCode::OK,
                "{path} on {} with Redis down",
                node.addr
            );
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "six requests with Redis down took {:?}",
        started.elapsed()
    );

    // Redis back (empty: it keeps nothing): counting starts again and holds the limit again.
    redis.restart();
    let allowed = limited_round(&nodes, 3 * LIMIT).await;
    assert!(
        allowed.abs_diff(LIMIT) <= LIMIT / 20,
        "after Redis came back, {allowed} allowed with a limit of {LIMIT}"
    );
    println!(
        "scale-out: plugin picked up by all three nodes in {picked_up:?}; limit {LIMIT}, allowed {allowed} of {}",
        3 * LIMIT
    );
}

/// Sends `n` requests to `/limited`, round-robin over the nodes, 30 at a time; returns how many
/// were allowed. Every other answer must be a 429.
async fn limited_round(nodes: &[Arc<Node>], n: usize) -> usize {
    let allowed = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..30)
        .map(|_| {
            let (nodes, allowed, next) = (nodes.to_vec(), Arc::clone(&allowed), Arc::clone(&next));
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n {
                        break;
                    }
                    let reply = nodes[i % nodes.len()].get("/limited").await;
                    match reply.status {
                        StatusCode::OK => {
                            allowed.fetch_add(1, Ordering::SeqCst);
                        }
                        StatusCode::TOO_MANY_REQUESTS => {
                            assert!(reply.header("retry-after").is_some());
                        }
                        other => panic!("/limited answered {other}: {}", reply.text()),
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    allowed.load(Ordering::SeqCst)
}
