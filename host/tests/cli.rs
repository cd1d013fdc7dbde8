//! The `tessera` binary as an operator runs it: `tessera run` with its log on a pipe (no colour
//! codes), the access log on standard output, a graceful stop on SIGTERM; `tessera check`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;
use common::{lines, next_matching};

/// How long to wait for each expected line.
const LINE_WAIT: Duration = Duration::from_secs(20);

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tessera-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn run_logs_plain_text_to_a_pipe_writes_access_lines_and_stops_on_sigterm() {
    let dir = scratch("run");
    let config = dir.join("tessera.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace_ms = 2000\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("run")
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = lines(child.stderr.take().unwrap());
    let stdout = lines(child.stdout.take().unwrap());
    let mut log = Vec::new();
    let listening = next_matching(&stderr, &["tessera listening"], &mut log, LINE_WAIT);
    let addr = listening
        .split_whitespace()
        .find_map(|w| w.strip_prefix("local_addr="))
        .unwrap_or_else(|| panic!("no address in {listening:?}"))
        .to_owned();

    let mut stream = TcpStream::connect(&addr).unwrap();
    stream
        .write_all(b"GET /nothing-here HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");

    let mut access = Vec::new();
    let line = next_matching(&stdout, &["/nothing-here"], &mut access, LINE_WAIT);
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["status"], 404);
    assert_eq!(entry["error"], "not_found");

    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "a SIGTERM stop is a clean exit: {status}");
    while let Ok(line) = stderr.recv_timeout(Duration::from_secs(5)) {
        log.push(line);
    }
    assert!(log.iter().any(|l| l.contains("shutting down")), "{log:#?}");
    for line in &log {
        assert!(!line.contains('\u{1b}'), "colour codes on a pipe: {line:?}");
    }
}

#[test]
fn check_names_the_file_key_and_line_of_a_bad_config() {
    let dir = scratch("check");
    let config = dir.join("tessera.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[telemetry]\nsample_ratio = 2.0\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("check")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tessera.toml"), "{err}");
    assert!(err.contains("telemetry.sample_ratio"), "{err}");
    assert!(!err.contains('\u{1b}'), "{err}");
}
