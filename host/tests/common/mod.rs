//! Reading a `tessera` child process's output, shared by the binary's integration tests.

use std::io::{BufRead, BufReader, Read};
use std::sync::mpsc;
use std::time::Duration;

/// Lines of a child's stream, as they come.
pub fn lines(stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line from `rx` containing one of `what`, each line read kept in `seen`; panics
/// with everything seen when none comes within `wait` of the previous line.
pub fn next_matching(
    rx: &mpsc::Receiver<String>,
    what: &[&str],
    seen: &mut Vec<String>,
    wait: Duration,
) -> String {
    loop {
        match rx.recv_timeout(wait) {
            Ok(line) => {
                seen.push(line.clone());
                if what.iter().any(|w| line.contains(w)) {
                    return line;
                }
            }
            Err(_) => panic!("no line with any of {what:?} in: {seen:#?}"),
        }
    }
}
