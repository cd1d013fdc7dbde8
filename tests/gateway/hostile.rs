//! Hostile plugins: every case gets its documented status within the deadline, the gateway keeps
//! serving, memory stays bounded, and normal traffic on other routes never fails meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::{Response, StatusCode};
use tessera_tests::*;

/// The test plugins get 2 s per call (see the harness); answers must come within this.
const DEADLINE_WITH_MARGIN: Duration = Duration::from_millis(3000);

#[tokio::test]
async fn hostile_plugins_cost_one_request_each() {
    let target = upstream(|_| async { Response::new(full("ok")) }).await;
    // An upstream that accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let held = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    {
        let held = Arc::clone(&held);
        tokio::spawn(async move {
            while let Ok((s, _)) = silent.accept().await {
                held.lock().await.push(s);
            }
        });
    }
    let (denied_target, denied_connections) = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&count);
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                drop(s);
            }
        });
        (addr, count)
    };
    let port = denied_target.port();
    let disguised = [
        "http://other/".to_owned(),
        format!("http://127.0.0.1:{port}/"),
        format!("http://target@127.0.0.1:{port}/"),
        format!("http://[::1]:{port}/"),
        format!("http://[::ffff:7f00:1]:{port}/"),
        format!("http://2130706433:{port}/"),
        format!("http://0x7f000001:{port}/"),
        format!("http://localhost:{port}/"),
    ];
    let urls: Vec<String> = disguised.iter().map(|u| format!("{u:?}")).collect();
    let modes = [
        "loop",
        "memory-bomb",
        "recursion",
        "panic",
        "huge-body",
        "million-headers",
        "header-cr",
        "header-lf",
        "header-nul",
        "header-name",
        "thousand-calls",
        "disguised",
        "wait-forever",
    ];
    let mut routes = format!(
        "[upstreams.target]\ntargets = [\"{target}\"]\n\
         [upstreams.other]\ntargets = [\"{denied_target}\"]\n\
         [[routes]]\npath = \"/hello/{{name}}\"\nhandler = {{ plugin = \"hello\" }}\n"
    );
    for mode in modes.iter().filter(|m| **m != "wait-forever") {
        let extra = if *mode == "disguised" {
            format!(", urls = [{}]", urls.join(", "))
        } else {
            String::new()
        };
        routes.push_str(&format!(
            "[[routes]]\npath = \"/{mode}\"\nhandler = {{ plugin = \"hostile\", upstreams = [\"target\"], config = {{ mode = \"{mode}\"{extra} }} }}\n"
        ));
    }
    // `wait-forever` calls http://target/; point a dedicated gateway's `target` at the silent one.
    let gw = Arc::new(gateway(&routes).await);
    let gw_silent = gateway(&format!(
        "[upstreams.target]\ntargets = [\"{silent_addr}\"]\nresponse_timeout_ms = 60000\n\
         [[routes]]\npath = \"/wait-forever\"\nhandler = {{ plugin = \"hostile\", upstreams = [\"target\"], config = {{ mode = \"wait-forever\" }} }}\n"
    ))
    .await;

    // Normal traffic on another route, all along.
    let stop = Arc::new(AtomicBool::new(false));
    let normal = {
        let (gw, stop) = (Arc::clone(&gw), Arc::clone(&stop));
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0usize, 0usize);
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                if get(&gw, "/hello/normal").await.status == StatusCode::OK {
                    ok += 1;
                } else {
                    failed += 1;
                }
            }
            (ok, failed)
        })
    };

    let rss_before = rss_mib();
    let mut table = vec![
        "| case | status | answered in | RSS after (MiB) |".to_owned(),
        "|---|---|---|---|".to_owned(),
    ];
    for mode in modes {
        let started = Instant::now();
        let reply = if mode == "wait-forever" {
            get(&gw_silent, "/wait-forever").await
        } else {
            get(&gw, &format!("/{mode}")).await
        };
        let took = started.elapsed();
        table.push(format!(
            "| {mode} | {} | {} ms | {} |",
            reply.status.as_u16(),
            took.as_millis(),
            rss_mib()
        ));
        assert!(took < DEADLINE_WITH_MARGIN, "{mode} took {took:?}");
        let expected = match mode {
            "loop" | "wait-forever" => StatusCode::GATEWAY_TIMEOUT,
            "thousand-calls" | "disguised" => StatusCode::OK,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        assert_eq!(reply.status, expected, "{mode}: {}", reply.text());
        assert!(
            reply.header("x-evil").is_none() && reply.header("set-cookie").is_none(),
            "{mode} leaked a header"
        );
        match mode {
            "thousand-calls" => {
                assert_eq!(reply.json(), serde_json::json!({ "ok": 8, "limited": 992 }))
            }
            "disguised" => {
                for (url, error) in disguised.iter().zip(reply.json().as_array().unwrap()) {
                    let error = error.as_str().unwrap();
                    assert!(
                        error.starts_with("Denied") || error.starts_with("InvalidRequest"),
                        "{url}: {error}"
                    );
                }
            }
            _ => {}
        }
        assert_eq!(
            get(&gw, "/hello/after").await.status,
            StatusCode::OK,
            "gateway stopped serving after {mode}"
        );
    }
    stop.store(true, Ordering::SeqCst);
    let (ok, failed) = normal.await.unwrap();
    let rss_after = rss_mib();
    eprintln!("{}", table.join("\n"));
    eprintln!(
        "normal requests meanwhile: {ok} ok, {failed} failed; RSS {rss_before} → {rss_after} MiB"
    );
    assert_eq!(
        failed, 0,
        "normal requests failed while hostile plugins ran"
    );
    assert!(ok > 10);
    assert_eq!(
        denied_connections.load(Ordering::SeqCst),
        0,
        "a denied or disguised call reached the network"
    );
    // Every instance's memory is capped at 32 MiB and returned to the pool after each request.
    assert!(
        rss_after < rss_before + 512,
        "RSS grew from {rss_before} to {rss_after} MiB"
    );
    Arc::try_unwrap(gw).unwrap().shutdown().await;
    gw_silent.shutdown().await;
}

#[tokio::test]
async fn failing_filter_with_fail_open_lets_the_request_through() {
    let up = upstream(|_| async { Response::new(full("upstream answered")) }).await;
    let gw = gateway(&format!(
        "[upstreams.u]\ntargets = [\"{up}\"]\n\
         [[routes]]\npath = \"/open\"\nupstream = \"u\"\n\
         [[routes.filters]]\nplugin = \"test-filter\"\nfail = \"open\"\nconfig = {{ panic = \"request\" }}\n\
         [[routes]]\npath = \"/open-out\"\nupstream = \"u\"\n\
         [[routes.filters]]\nplugin = \"test-filter\"\nfail = \"open\"\nconfig = {{ panic = \"response\" }}\n\
         [[routes]]\npath = \"/closed\"\nupstream = \"u\"\n\
         [[routes.filters]]\nplugin = \"test-filter\"\nconfig = {{ panic = \"request\" }}\n"
    ))
    .await;
    let reply = get(&gw, "/open").await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (StatusCode::OK, "upstream answered")
    );
    let reply = get(&gw, "/open-out").await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (StatusCode::OK, "upstream answered")
    );
    assert_eq!(
        get(&gw, "/closed").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    gw.shutdown().await;
}
