//! SIGTERM stops the server promptly and cleanly, even with an event stream and a long
//! poll open (a graceful shutdown must not wait for clients that never leave).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};
use support::start_server;

/// Waits until the server is handling a `GET /v1/changes` (the long poll): a SIGTERM sent
/// before it has read the request would close an idle connection, not end a poll.
fn await_long_poll(address: &str) {
    let address = address
        .parse()
        .unwrap_or_else(|error| panic!("{address}: {error}"));
    let waiting = "sluice_http_requests_in_flight{method=\"GET\",route=\"/v1/changes\"} 1";
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = support::process::http(address, "GET", "/metrics", None)
            .unwrap_or_else(|error| panic!("/metrics: {error}"));
        assert_eq!(status, 200);
        if String::from_utf8_lossy(&body)
            .lines()
            .any(|line| line == waiting)
        {
            return;
        }
        assert!(Instant::now() < deadline, "the long poll never started");
        std::thread::sleep(Duration::from_millis(10));
    }
}

const CONFIG: &str = "[[collections]]\nname = \"doctor\"\nkey = [\"/doctor_id\"]\n";

fn get(address: &str, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(address).unwrap_or_else(|error| panic!("connect: {error}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap_or_else(|error| panic!("{error}"));
    write!(stream, "GET {path} HTTP/1.1\r\nHost: sluice\r\n\r\n")
        .unwrap_or_else(|error| panic!("{error}"));
    stream
}

#[test]
fn sigterm_ends_streams_and_long_polls() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, CONFIG).unwrap_or_else(|error| panic!("{error}"));
    let (mut child, address) = start_server(&config);

    let mut stream = get(&address, "/v1/changes/stream");
    let mut head = [0u8; 12];
    stream
        .read_exact(&mut head)
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(&head, b"HTTP/1.1 200");
    let mut poll = get(&address, "/v1/changes?after=now&wait_ms=60000");
    await_long_poll(&address);

    let pid = child.id().to_string();
    let (exited, exit) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = exited.send(child.wait());
    });
    let killed = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(killed.is_ok_and(|status| status.success()));
    let status = exit
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("the server did not stop within 10 s"))
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(status.success(), "{status:?}");
    // Both connections were closed by the server, the poll with an (empty) answer.
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .unwrap_or_else(|error| panic!("stream: {error}"));
    let mut answer = String::new();
    poll.read_to_string(&mut answer)
        .unwrap_or_else(|error| panic!("poll: {error}"));
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("\"changes\":[]"),
        "{answer}"
    );
}
