//! `cargo xtask bench --compare`: the gateway side by side with its peers, in one run, one table.
//!
//! Every target runs alone on core 0 (`taskset -c 0`); the upstream (nginx serving a 1 KiB file,
//! one worker) and the load generator (`wrk -t1 -c32 -d<secs>s --latency`) run on core 1. Targets:
//! nginx as a reverse proxy (upstream keepalive 64, one worker), `wasmtime serve` with a wasi:http
//! hello component (when `wasmtime` and such a component are at hand), and tessera's proxy route,
//! proxy + `headers` filter with fresh instances and with reuse, and the `hello` handler; then the
//! order-details orchestration against a native aggregator, at 32 connections and at 1,000 with
//! 100 ms services (`tessera-ecommerce-bench`). A second table gives what metrics, traces, the
//! access log and TLS cost on the proxy and filter routes (traces go to nginx standing in for a
//! collector; the certificate is a fresh self-signed one from `openssl`). Ratios are what to
//! read; absolute numbers vary with the machine's other load.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// One measured target.
pub struct Measured {
    /// What was measured.
    pub name: String,
    /// Requests per second.
    pub rps: f64,
    /// 99th percentile latency, in ms.
    pub p99_ms: f64,
    /// Non-2xx or socket errors wrk reported.
    pub errors: u64,
}

/// A child process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
            .map(|dir| dir.join(tool))
            .find(|p| p.is_file())
    })
}

fn wait_for_port(port: u16) -> anyhow::Result<()> {
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if started.elapsed() > Duration::from_secs(30) {
            bail!("nothing listens on 127.0.0.1:{port} after 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn pinned(core: u32, program: &Path) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", &core.to_string()]).arg(program);
    cmd
}

fn start(mut cmd: Command, port: u16) -> anyhow::Result<Running> {
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let running = Running(child);
    wait_for_port(port)?;
    Ok(running)
}

/// Runs wrk on core 1 against `url` and reads its summary.
fn wrk(name: &str, url: &str, seconds: u32) -> anyhow::Result<Measured> {
    let wrk = which("wrk").context("wrk is not installed (apt-get install wrk)")?;
    // A short warm-up so pools and caches are filled before the measured run.
    let _ = pinned(1, &wrk).args(["-t1", "-c32", "-d2s", url]).output();
    let out = pinned(1, &wrk)
        .args(["-t1", "-c32", &format!("-d{seconds}s"), "--latency", url])
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |prefix: &str| {
        text.lines().find_map(|l| {
            l.trim()
                .strip_prefix(prefix)
                .map(str::trim)
                .map(str::to_owned)
        })
    };
    let rps: f64 = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output:\n{text}"))?;
    let p99_ms = field("99%").map_or(f64::NAN, |v| duration_ms(&v));
    let errors = field("Non-2xx or 3xx responses:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
        + field("Socket errors:").map_or(0, |v| {
            v.split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum()
        });
    Ok(Measured {
        name: name.to_owned(),
        rps,
        p99_ms,
        errors,
    })
}

/// `1.23ms`, `456.00us`, `1.02s` → ms.
fn duration_ms(v: &str) -> f64 {
    let (number, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e3)
    } else {
        (v, f64::NAN)
    };
    number.parse::<f64>().map_or(f64::NAN, |n| n * scale)
}

fn nginx_conf(dir: &Path, name: &str, http: &str) -> anyhow::Result<PathBuf> {
    let conf = dir.join(format!("{name}.conf"));
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {dir}/{name}.pid;\nerror_log {dir}/{name}.error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {dir}/tmp;\n  proxy_temp_path {dir}/tmp;\n  {http}\n}}\n",
            dir = dir.display()
        ),
    )?;
    Ok(conf)
}

/// Builds the wasi:http hello component (`xtask/wasi-hello`, outside the workspace) for
/// `wasmtime serve`.
fn wasi_hello(work: &Path) -> anyhow::Result<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("wasi-hello/Cargo.toml");
    let target = work.join("wasi-hello-target");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .context("building the wasi:http hello component")?;
    if !status.success() {
        bail!("building {} failed", manifest.display());
    }
    Ok(target.join("wasm32-wasip2/release/tessera_bench_wasi_hello.wasm"))
}

/// Runs the comparison; `tessera` is the release binary, `plugins` the release plugin directory.
pub fn run(
    tessera: &Path,
    ecommerce: &Path,
    plugins: &Path,
    work: &Path,
    seconds: u32,
) -> anyhow::Result<()> {
    let Some(nginx) = which("nginx") else {
        bail!("nginx is needed as the upstream (apt-get install nginx-light)");
    };
    which("taskset").context("taskset is needed (util-linux)")?;
    std::fs::create_dir_all(work.join("www"))?;
    std::fs::create_dir_all(work.join("tmp"))?;
    std::fs::write(work.join("www").join("1k"), vec![b'x'; 1024])?;
    let (up_port, nginx_port, tessera_port) = (18181, 18182, 18183);

    let upstream_conf = nginx_conf(
        work,
        "upstream",
        // `/v1/traces` stands in for an OTLP collector when traces are on.
        &format!(
            "server {{ listen 127.0.0.1:{up_port}; location / {{ root {}; }} location = /v1/traces {{ return 200; }} }}",
            work.join("www").display()
        ),
    )?;
    let mut cmd = pinned(1, &nginx);
    cmd.arg("-c").arg(&upstream_conf);
    let _upstream = start(cmd, up_port)?;

    let mut results = Vec::new();
    {
        let conf = nginx_conf(
            work,
            "proxy",
            &format!(
                "upstream up {{ server 127.0.0.1:{up_port}; keepalive 64; }}\n  \
                 server {{ listen 127.0.0.1:{nginx_port}; location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}"
            ),
        )?;
        let mut cmd = pinned(0, &nginx);
        cmd.arg("-c").arg(&conf);
        let _proxy = start(cmd, nginx_port)?;
        results.push(wrk(
            "nginx reverse proxy",
            &format!("http://127.0.0.1:{nginx_port}/1k"),
            seconds,
        )?);
    }
    {
        let config = work.join("tessera.toml");
        // Like nginx here, no access log; metrics as by default.
        std::fs::write(
            &config,
            tessera_config(
                plugins,
                tessera_port,
                up_port,
                "[access_log]\nformat = \"off\"\n",
            ),
        )?;
        // The upstream sees /proxy/1k etc.; give nginx those paths too.
        for dir in ["proxy", "filter", "reuse"] {
            std::fs::create_dir_all(work.join("www").join(dir))?;
            std::fs::write(work.join("www").join(dir).join("1k"), vec![b'x'; 1024])?;
        }
        let mut cmd = pinned(0, tessera);
        cmd.arg("run").arg(&config).env("RUST_LOG", "warn");
        let _gateway = start(cmd, tessera_port)?;
        let base = format!("http://127.0.0.1:{tessera_port}");
        results.push(wrk(
            "tessera proxy route",
            &format!("{base}/proxy/1k"),
            seconds,
        )?);
        results.push(wrk(
            "tessera proxy + headers filter (fresh instance)",
            &format!("{base}/filter/1k"),
            seconds,
        )?);
        results.push(wrk(
            "tessera proxy + headers filter (reuse)",
            &format!("{base}/reuse/1k"),
            seconds,
        )?);
        results.push(wrk(
            "tessera hello handler",
            &format!("{base}/hello/bench"),
            seconds,
        )?);
    }
    match (which("wasmtime"), wasi_hello(work)) {
        (Some(wasmtime), Ok(component)) => {
            let port = 18184;
            let mut cmd = pinned(0, &wasmtime);
            cmd.args(["serve", "--addr", &format!("127.0.0.1:{port}"), "-S", "cli"])
                .arg(&component);
            let _serve = start(cmd, port)?;
            results.push(wrk(
                "wasmtime serve, wasi:http hello",
                &format!("http://127.0.0.1:{port}/"),
                seconds,
            )?);
        }
        (None, _) => eprintln!(
            "compare: no `wasmtime` on PATH, skipping `wasmtime serve` (cargo install wasmtime-cli --version 48.0.8 --locked)"
        ),
        (_, Err(e)) => eprintln!("compare: skipping `wasmtime serve`: {e:#}"),
    }
    let by = |name: &str| {
        results
            .iter()
            .find(|r| r.name.starts_with(name))
            .map(|r| r.rps)
    };
    let nginx_rps = by("nginx reverse proxy");
    let proxy_rps = by("tessera proxy route");
    let serve_rps = by("wasmtime serve");
    println!("| target | req/s | p99 | errors | ratio |");
    println!("|---|---|---|---|---|");
    for r in &results {
        let ratio = match r.name.as_str() {
            n if n.starts_with("tessera proxy route") => {
                nginx_rps.map(|b| (r.rps / b, "× nginx".to_owned()))
            }
            n if n.starts_with("nginx") => None,
            n if n.starts_with("wasmtime serve") => None,
            n if n.starts_with("tessera hello") => proxy_rps.map(|b| {
                let versus_serve = serve_rps.map_or(String::new(), |s| {
                    format!(", {:.2}× wasmtime serve", r.rps / s)
                });
                (r.rps / b, format!("× tessera proxy{versus_serve}"))
            }),
            _ => proxy_rps.map(|b| (r.rps / b, "× tessera proxy".to_owned())),
        };
        println!(
            "| {} | {:.0} | {:.2} ms | {} | {} |",
            r.name,
            r.rps,
            r.p99_ms,
            r.errors,
            ratio.map_or(String::from("—"), |(x, what)| format!("{x:.2}{what}"))
        );
    }
    // Orchestration: the order-details plugin vs a native aggregator, at 32 connections with
    // instant services, and the capacity case (1,000 connections, services answering in 100 ms).
    for (connections, latency_ms) in [(32, 0), (1000, 100)] {
        let (gateway, native) =
            orchestration(ecommerce, plugins, seconds, connections, latency_ms)?;
        let ratio = format!("{:.2}× native", gateway.rps / native.rps);
        for (r, ratio) in [(&gateway, ratio.as_str()), (&native, "—")] {
            println!(
                "| {} | {:.0} | {:.2} ms | {} | {ratio} |",
                r.name, r.rps, r.p99_ms, r.errors
            );
        }
    }
    println!(
        "\ncommand: cargo xtask bench --compare ({seconds} s per target; wrk targets on core 0, nginx upstream and wrk on core 1; the order-details rows run gateway, native aggregator, services and load in one process on both cores)"
    );
    overheads(tessera, plugins, work, seconds, up_port, tessera_port)?;
    shared_state(tessera, plugins, work, seconds, up_port, tessera_port)
}

/// The `rate-limit` filter on the proxy route, counting in a memory bucket and in Redis
/// (`redis-server` pinned to core 1 beside nginx), against the route without it. The limit is
/// far above what the run sends, so every request is counted and allowed.
fn shared_state(
    tessera: &Path,
    plugins: &Path,
    work: &Path,
    seconds: u32,
    up_port: u16,
    port: u16,
) -> anyhow::Result<()> {
    let Some(redis) = which("redis-server") else {
        eprintln!(
            "compare: no redis-server, skipping the rate-limit rows (apt-get install redis-server)"
        );
        return Ok(());
    };
    let redis_port = 18190;
    let mut cmd = pinned(1, &redis);
    cmd.args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"]);
    let _redis = start(cmd, redis_port)?;
    for dir in ["rl-memory", "rl-redis"] {
        std::fs::create_dir_all(work.join("www").join(dir))?;
        std::fs::write(work.join("www").join(dir).join("1k"), vec![b'x'; 1024])?;
    }
    let limit = |bucket: &str| {
        format!(
            "filters = [{{ plugin = \"rate-limit\", buckets = [\"{bucket}\"], config = {{ bucket = \"{bucket}\", limit = 1000000000, window_secs = 3600, key = [\"client\"] }} }}]"
        )
    };
    let config = work.join("shared-state.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[access_log]\nformat = \"off\"\n\
             [plugins.files]\nrate-limit = {:?}\n\
             [buckets.memory]\nbackend = \"memory\"\n\
             [buckets.redis]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:{redis_port}\"\n\
             [upstreams.nginx]\ntargets = [\"127.0.0.1:{up_port}\"]\nmax_idle_per_target = 64\n\
             [[routes]]\npath = \"/proxy/{{*rest}}\"\nupstream = \"nginx\"\n\
             [[routes]]\npath = \"/rl-memory/{{*rest}}\"\nupstream = \"nginx\"\n{}\n\
             [[routes]]\npath = \"/rl-redis/{{*rest}}\"\nupstream = \"nginx\"\n{}\n",
            plugins
                .join("tessera_plugin_rate_limit.wasm")
                .display()
                .to_string(),
            limit("memory"),
            limit("redis"),
        ),
    )?;
    let mut cmd = pinned(0, tessera);
    cmd.arg("run").arg(&config).env("RUST_LOG", "warn");
    let _gateway = start(cmd, port)?;
    let base = format!("http://127.0.0.1:{port}");
    let rows = [
        wrk("proxy route", &format!("{base}/proxy/1k"), seconds)?,
        wrk(
            "+ rate-limit, memory bucket",
            &format!("{base}/rl-memory/1k"),
            seconds,
        )?,
        wrk(
            "+ rate-limit, Redis bucket",
            &format!("{base}/rl-redis/1k"),
            seconds,
        )?,
    ];
    println!("\n| rate limiting | req/s | p99 | errors | ratio |");
    println!("|---|---|---|---|---|");
    for m in &rows {
        let ratio = if m.name == "proxy route" {
            "—".to_owned()
        } else {
            format!("{:.2}× proxy route", m.rps / rows[0].rps)
        };
        println!(
            "| {} | {:.0} | {:.2} ms | {} | {ratio} |",
            m.name, m.rps, m.p99_ms, m.errors
        );
    }
    Ok(())
}

/// What metrics, traces, the access log and TLS cost: the proxy route and the proxy + filter
/// route under each setting, against the same routes with all of them off.
fn overheads(
    tessera: &Path,
    plugins: &Path,
    work: &Path,
    seconds: u32,
    up_port: u16,
    port: u16,
) -> anyhow::Result<()> {
    let (cert, key) = (work.join("cert.pem"), work.join("key.pem"));
    let openssl = which("openssl").context("openssl is needed for the TLS row")?;
    let made = Command::new(openssl)
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .context("running openssl")?;
    if !made.status.success() {
        bail!(
            "openssl could not make a certificate: {}",
            String::from_utf8_lossy(&made.stderr)
        );
    }
    let off = "[metrics]\nenabled = false\n[access_log]\nformat = \"off\"\n";
    let metrics = "[access_log]\nformat = \"off\"\n";
    let traces = format!(
        "[access_log]\nformat = \"off\"\n[telemetry]\nenabled = true\nendpoint = \"http://127.0.0.1:{up_port}/v1/traces\"\n"
    );
    let sampled = format!(
        "[access_log]\nformat = \"off\"\n[telemetry]\nenabled = true\nsample_ratio = 0.1\nendpoint = \"http://127.0.0.1:{up_port}/v1/traces\"\n"
    );
    let everything = format!(
        "[access_log]\npath = {:?}\n[telemetry]\nenabled = true\nendpoint = \"http://127.0.0.1:{up_port}/v1/traces\"\n",
        work.join("access.log").display().to_string()
    );
    let tls = format!(
        "[access_log]\nformat = \"off\"\n[[server.tls.certificates]]\ncert_file = {:?}\nkey_file = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    let settings: [(&str, &str, &str); 6] = [
        ("all off", off, "http"),
        ("metrics (default)", metrics, "http"),
        ("metrics + traces (10 % sampled)", &sampled, "http"),
        ("metrics + traces (all sampled)", &traces, "http"),
        ("metrics + traces + JSON access log", &everything, "http"),
        ("TLS (metrics on)", &tls, "https"),
    ];
    let mut rows: Vec<(String, &str, Measured)> = Vec::new();
    for (setting, extra, scheme) in settings {
        let config = work.join("overhead.toml");
        std::fs::write(&config, tessera_config(plugins, port, up_port, extra))?;
        let mut cmd = pinned(0, tessera);
        cmd.arg("run").arg(&config).env("RUST_LOG", "warn");
        let _gateway = start(cmd, port)?;
        let routes: &[&str] = if scheme == "https" {
            &["proxy"]
        } else {
            &["proxy", "filter"]
        };
        for route in routes {
            let m = wrk(
                &format!("{route}, {setting}"),
                &format!("{scheme}://127.0.0.1:{port}/{route}/1k"),
                seconds,
            )?;
            rows.push((route.to_string(), setting, m));
        }
    }
    println!("\n| route, setting | req/s | p99 | errors | ratio |");
    println!("|---|---|---|---|---|");
    for (route, setting, m) in &rows {
        let base = if setting.starts_with("TLS") {
            "metrics (default)"
        } else {
            "all off"
        };
        let baseline = rows
            .iter()
            .find(|(r, s, _)| r == route && *s == base)
            .map(|(_, _, b)| b.rps);
        let ratio = match baseline {
            Some(b) if *setting != base => format!("{:.3}× {route}, {base}", m.rps / b),
            _ => "—".to_owned(),
        };
        println!(
            "| {} | {:.0} | {:.2} ms | {} | {ratio} |",
            m.name, m.rps, m.p99_ms, m.errors
        );
    }
    Ok(())
}

/// The gateway config of the wrk rows, with `extra` sections.
fn tessera_config(plugins: &Path, port: u16, up_port: u16, extra: &str) -> String {
    let plugin = |name: &str| plugins.join(format!("{name}.wasm")).display().to_string();
    let filter =
        "plugin = \"headers\", config = { response = { set = { x-served-by = \"tessera\" } } }";
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n{extra}\
         [plugins.files]\nheaders = {:?}\nhello = {:?}\n\
         [upstreams.nginx]\ntargets = [\"127.0.0.1:{up_port}\"]\nmax_idle_per_target = 64\n\
         [[routes]]\npath = \"/proxy/{{*rest}}\"\nupstream = \"nginx\"\n\
         [[routes]]\npath = \"/filter/{{*rest}}\"\nupstream = \"nginx\"\nfilters = [{{ {filter} }}]\n\
         [[routes]]\npath = \"/reuse/{{*rest}}\"\nupstream = \"nginx\"\nfilters = [{{ {filter}, instances = \"reuse\" }}]\n\
         [[routes]]\npath = \"/hello/{{name}}\"\nhandler = {{ plugin = \"hello\" }}\n",
        plugin("tessera_plugin_headers"),
        plugin("tessera_example_hello"),
    )
}

/// Runs `tessera-ecommerce-bench` and reads its two rows (gateway, native).
fn orchestration(
    bench: &Path,
    plugins: &Path,
    seconds: u32,
    connections: u32,
    latency_ms: u32,
) -> anyhow::Result<(Measured, Measured)> {
    let out = Command::new(bench)
        .arg(plugins)
        .args([
            seconds.to_string(),
            connections.to_string(),
            latency_ms.to_string(),
        ])
        .output()
        .with_context(|| format!("running {}", bench.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let row = |prefix: &str, name: String| -> anyhow::Result<Measured> {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("| {prefix}")))
            .with_context(|| format!("no `{prefix}` row in the order-details bench:\n{text}"))?;
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | name | req/s | p50 | p99 | errors |
        Ok(Measured {
            name,
            rps: cells
                .get(2)
                .and_then(|c| c.parse().ok())
                .unwrap_or(f64::NAN),
            p99_ms: cells
                .get(4)
                .map_or(f64::NAN, |c| duration_ms(&c.replace(' ', ""))),
            errors: cells.get(5).and_then(|c| c.parse().ok()).unwrap_or(0),
        })
    };
    let case = if latency_ms == 0 {
        format!("{connections} connections")
    } else {
        format!("{connections} connections, services answer in {latency_ms} ms")
    };
    Ok((
        row("gateway", format!("order details through tessera ({case})"))?,
        row(
            "native",
            format!("order details, native Rust aggregator ({case})"),
        )?,
    ))
}
