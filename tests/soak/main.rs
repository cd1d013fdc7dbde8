//! Soak: normal traffic with 1 % hostile requests mixed in, for `TESSERA_SOAK_SECS` seconds
//! (default 60), on loopback. Zero normal-request failures; descriptors and memory flat.
//!
//! Run with `cargo xtask soak [seconds]`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{Response, StatusCode};
use tessera_tests::*;

const HOSTILE: [&str; 6] = [
    "loop",
    "memory-bomb",
    "recursion",
    "panic",
    "million-headers",
    "header-lf",
];
const NORMAL: [&str; 3] = ["/hello/soak", "/proxy/items/7", "/api/orders/1001"];

/// One GET through a shared client; the status, or why there was none.
async fn fetch(
    http: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
    url: &str,
) -> Result<StatusCode, String> {
    use http_body_util::BodyExt;
    let uri: http::Uri = url.parse().map_err(|e| format!("{e}"))?;
    let request = http::Request::get(uri)
        .body(http_body_util::Full::default())
        .map_err(|e| e.to_string())?;
    let response = http.request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long-running; run with `cargo xtask soak`"]
async fn soak_with_one_percent_hostile_traffic() {
    let seconds: u64 = std::env::var("TESSERA_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let services = tessera_ecommerce_services::start_all(Duration::ZERO)
        .await
        .unwrap();
    let echo =
        upstream(|req| async move { Response::new(full(req.uri().path().to_owned())) }).await;
    let mut routes = format!(
        "{}[upstreams.echo]\ntargets = [\"{echo}\"]\n\
         [[routes]]\npath = \"/hello/{{name}}\"\nhandler = {{ plugin = \"hello\" }}\n\
         [[routes]]\npath = \"/proxy/{{*rest}}\"\nupstream = \"echo\"\n\
         [[routes]]\npath = \"/api/orders/{{id}}\"\nhandler = {{ plugin = \"order-details\", upstreams = [\"orders\", \"users\", \"products\", \"stores\"] }}\n",
        services.upstreams_toml()
    );
    for mode in HOSTILE {
        routes.push_str(&format!(
            "[[routes]]\npath = \"/hostile/{mode}\"\nhandler = {{ plugin = \"hostile\", config = {{ mode = \"{mode}\" }}, limits = {{ timeout_ms = 300 }} }}\n"
        ));
    }
    let gw = Arc::new(gateway(&routes).await);

    // Warm up, then take the baseline.
    for path in NORMAL {
        assert_eq!(get(&gw, path).await.status, StatusCode::OK);
    }
    let (fds_start, rss_start) = (open_fds(), rss_mib());
    let stop = Arc::new(AtomicBool::new(false));
    let normal_ok = Arc::new(AtomicU64::new(0));
    let normal_failed = Arc::new(AtomicU64::new(0));
    let hostile_sent = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    // One pooled client for all workers, as a real client fleet would keep its connections.
    let http = client();
    let base = format!("http://{}", gw.local_addr());
    for w in 0..8u64 {
        let (http, base, stop) = (http.clone(), base.clone(), Arc::clone(&stop));
        let (normal_ok, normal_failed, hostile_sent, failures) = (
            Arc::clone(&normal_ok),
            Arc::clone(&normal_failed),
            Arc::clone(&hostile_sent),
            Arc::clone(&failures),
        );
        workers.push(tokio::spawn(async move {
            let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ (w + 1);
            while !stop.load(Ordering::Relaxed) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                if seed.is_multiple_of(100) {
                    let mode = HOSTILE[(seed / 100) as usize % HOSTILE.len()];
                    hostile_sent.fetch_add(1, Ordering::Relaxed);
                    let _ = fetch(&http, &format!("{base}/hostile/{mode}")).await;
                } else {
                    let path = NORMAL[(seed / 100) as usize % NORMAL.len()];
                    match fetch(&http, &format!("{base}{path}")).await {
                        Ok(StatusCode::OK) => {
                            normal_ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => {
                            normal_failed.fetch_add(1, Ordering::Relaxed);
                            failures.lock().await.push(format!("{path}: {other:?}"));
                        }
                    }
                }
            }
        }));
    }
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(5).min(Duration::from_secs(seconds))).await;
        samples.push((
            started.elapsed().as_secs(),
            open_fds(),
            rss_mib(),
            normal_ok.load(Ordering::Relaxed),
        ));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let (fds_end, rss_end) = (open_fds(), rss_mib());
    // Pools fill up during the first half; after that nothing may keep growing.
    let half = samples.len().div_ceil(2).max(1);
    let fds_steady = samples[..half]
        .iter()
        .map(|s| s.1)
        .max()
        .unwrap_or(fds_start);
    let rss_steady = samples[..half]
        .iter()
        .map(|s| s.2)
        .max()
        .unwrap_or(rss_start);
    let fds_late = samples[half..]
        .iter()
        .map(|s| s.1)
        .max()
        .unwrap_or(fds_end)
        .max(fds_end);
    let ok = normal_ok.load(Ordering::Relaxed);
    let failed = normal_failed.load(Ordering::Relaxed);
    let hostile = hostile_sent.load(Ordering::Relaxed);
    println!("| t (s) | fds | RSS (MiB) | normal ok so far |");
    println!("|---|---|---|---|");
    for (t, fds, rss, n) in &samples {
        println!("| {t} | {fds} | {rss} | {n} |");
    }
    println!(
        "soak {seconds} s: {ok} normal requests ok, {failed} failed, {hostile} hostile; fds {fds_start} → {fds_end}, RSS {rss_start} → {rss_end} MiB"
    );
    assert_eq!(
        failed,
        0,
        "normal requests failed: {:?}",
        &failures.lock().await[..]
    );
    assert!(hostile > 0);
    assert!(
        fds_late <= fds_steady + 8,
        "descriptors kept growing: {fds_steady} → {fds_late}"
    );
    assert!(
        rss_end <= rss_steady + 64,
        "RSS grew {rss_steady} → {rss_end} MiB after warm-up"
    );
    Arc::try_unwrap(gw).unwrap().shutdown().await;
}
