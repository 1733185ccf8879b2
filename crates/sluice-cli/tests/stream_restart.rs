//! A real HTTP client follows the change stream (server-sent events), the server is
//! killed and restarted, and the client resumes with `Last-Event-ID`: it sees every
//! record exactly once, in per-partition order, across the restart.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use support::start_server;

const CONFIG: &str =
    "[engine]\npartitions = 2\n[[collections]]\nname = \"doctor\"\nkey = [\"/doctor_id\"]\n";

fn post(address: &str, first: u32, count: u32) {
    let body: String = (first..first + count)
        .map(|id| format!("{{\"doctor_id\": {id}, \"n\": {id}}}\n"))
        .collect();
    let mut stream = TcpStream::connect(address).unwrap_or_else(|error| panic!("{error}"));
    write!(
        stream,
        "POST /v1/collections/doctor/events HTTP/1.1\r\nHost: s\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// A server-sent-event client over a chunked HTTP/1.1 response.
struct EventStream {
    reader: BufReader<TcpStream>,
    text: String,
}

impl EventStream {
    fn open(address: &str, last_event_id: Option<&str>) -> Self {
        let mut stream = TcpStream::connect(address).unwrap_or_else(|error| panic!("{error}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap_or_else(|error| panic!("{error}"));
        let resume = last_event_id
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "GET /v1/changes/stream?after=0.0 HTTP/1.1\r\nHost: s\r\n{resume}\r\n"
        )
        .unwrap_or_else(|error| panic!("{error}"));
        let mut reader = BufReader::new(stream);
        loop {
            let mut line = String::new();
            reader
                .read_line(&mut line)
                .unwrap_or_else(|error| panic!("{error}"));
            if line == "\r\n" {
                break;
            }
        }
        Self {
            reader,
            text: String::new(),
        }
    }

    /// The next `(id, key)` of a change event, skipping heartbeats.
    fn next(&mut self) -> (String, u64) {
        loop {
            if let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                let id = block
                    .lines()
                    .find_map(|line| line.strip_prefix("id: "))
                    .map(str::to_owned);
                let data = block.lines().find_map(|line| line.strip_prefix("data: "));
                if let (Some(id), Some(data)) = (id, data) {
                    let record: serde_json::Value =
                        serde_json::from_str(data).unwrap_or_else(|error| panic!("{error}"));
                    return (
                        id,
                        record["key"]
                            .as_u64()
                            .unwrap_or_else(|| panic!("key in {record}")),
                    );
                }
                continue;
            }
            // One chunk: size line in hex, the bytes, CRLF.
            let mut size = String::new();
            self.reader
                .read_line(&mut size)
                .unwrap_or_else(|error| panic!("{error}"));
            let size = usize::from_str_radix(size.trim(), 16)
                .unwrap_or_else(|error| panic!("chunk size {size:?}: {error}"));
            let mut chunk = vec![0; size + 2];
            self.reader
                .read_exact(&mut chunk)
                .unwrap_or_else(|error| panic!("{error}"));
            self.text.push_str(
                std::str::from_utf8(&chunk[..size]).unwrap_or_else(|error| panic!("{error}")),
            );
        }
    }
}

#[test]
fn sse_client_resumes_across_a_restart() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, CONFIG).unwrap_or_else(|error| panic!("{error}"));

    let (mut server, address) = start_server(&config);
    let mut events = EventStream::open(&address, None);
    post(&address, 0, 40);
    let mut seen: Vec<(String, u64)> = (0..25).map(|_| events.next()).collect();
    // SIGKILL (`Child::kill` on Unix): the stream breaks mid-way.
    server.kill().unwrap_or_else(|error| panic!("{error}"));
    server.wait().unwrap_or_else(|error| panic!("{error}"));

    let (mut server, address) = start_server(&config);
    let last = seen.last().map(|(id, _)| id.clone()).unwrap_or_default();
    let mut events = EventStream::open(&address, Some(&last));
    post(&address, 40, 20);
    seen.extend((0..35).map(|_| events.next()));
    server.kill().unwrap_or_else(|error| panic!("{error}"));
    server.wait().unwrap_or_else(|error| panic!("{error}"));

    let mut keys: Vec<u64> = seen.iter().map(|(_, key)| *key).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        (0..60).collect::<Vec<_>>(),
        "every record exactly once"
    );
    // Ids are cursors: each event moves one partition's offset up by exactly one.
    let mut previous = vec![0u64, 0];
    for (id, _) in &seen {
        let offsets: Vec<u64> = id
            .split('.')
            .map(|part| part.parse().unwrap_or_else(|error| panic!("{error}")))
            .collect();
        let moved: Vec<usize> = (0..2).filter(|p| offsets[*p] != previous[*p]).collect();
        assert_eq!(moved.len(), 1, "{previous:?} -> {offsets:?}");
        assert_eq!(
            offsets[moved[0]],
            previous[moved[0]] + 1,
            "{previous:?} -> {offsets:?}"
        );
        previous = offsets;
    }
}
