//! SIGTERM stops the server promptly and cleanly, even with an event stream and a long
//! poll open (a graceful shutdown must not wait for clients that never leave).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

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
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("spawn: {error}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap_or_else(|error| panic!("{error}"));
    let address = line
        .trim()
        .rsplit("http://")
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(line.contains("listening on"), "{line}");

    let mut stream = get(&address, "/v1/changes/stream");
    let mut head = [0u8; 12];
    stream
        .read_exact(&mut head)
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(&head, b"HTTP/1.1 200");
    let mut poll = get(&address, "/v1/changes?after=now&wait_ms=60000");

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
