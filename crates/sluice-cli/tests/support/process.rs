//! The real `sluice` process for tests: start it, talk HTTP to it, SIGKILL it.

use serde_json::Value;
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const IO_TIMEOUT: Duration = Duration::from_secs(20);
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
const SIGKILL: i32 = 9;

/// xorshift64, deterministic per seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        let state = (seed ^ 0x9E37_79B9_7F4A_7C15).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        Self(if state == 0 { 1 } else { state })
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    /// Uniform in `low..=high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }
}

// ---------------------------------------------------------------------------------------
// A tiny blocking HTTP/1.1 client.

pub fn http(
    address: SocketAddr,
    method: &str,
    path: &str,
    body: Option<(&str, &[u8])>,
) -> std::io::Result<(u16, Vec<u8>)> {
    http_with(address, method, path, &[], body)
}

/// [`http`] with extra header lines (`name: value`).
pub fn http_with(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[String],
    body: Option<(&str, &[u8])>,
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect_timeout(&address, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    let payload = match body {
        Some((content_type, bytes)) => {
            request.push_str(&format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                bytes.len()
            ));
            bytes
        }
        None => &[][..],
    };
    request.push_str("\r\n");
    let mut out = request.into_bytes();
    out.extend_from_slice(payload);
    stream.write_all(&out)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    parse_response(&response)
}

/// Status and body of a whole response; a body shorter than its Content-Length (the
/// server died while answering) is an error, like a reset.
pub fn parse_response(bytes: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let invalid = |message: String| std::io::Error::new(std::io::ErrorKind::InvalidData, message);
    let Some(end) = bytes.windows(4).position(|window| window == b"\r\n\r\n") else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("incomplete response head ({} bytes)", bytes.len()),
        ));
    };
    let head = std::str::from_utf8(&bytes[..end]).map_err(|error| invalid(error.to_string()))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .trim()
                    .parse::<usize>()
                    .map_err(|error| invalid(error.to_string()))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(invalid(format!(
                "transfer-encoding {value:?} is not supported by this client"
            )));
        }
    }
    let body = &bytes[end + 4..];
    let length = length.ok_or_else(|| invalid("response without Content-Length".to_owned()))?;
    if body.len() != length {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("body has {} of {length} bytes", body.len()),
        ));
    }
    Ok((status, body.to_vec()))
}

/// Every document of `collection`, by key text.
pub fn documents(address: SocketAddr, collection: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(token) => format!("/v1/collections/{collection}/docs?limit=1000&after={token}"),
            None => format!("/v1/collections/{collection}/docs?limit=1000"),
        };
        let page = get_json(address, &path).unwrap_or_else(|error| panic!("{path}: {error}"));
        for doc in page["docs"].as_array().into_iter().flatten() {
            let key = match &doc["key"] {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            out.insert(key, doc["doc"].clone());
        }
        match page["next"].as_str() {
            Some(token) => after = Some(token.to_owned()),
            None => return out,
        }
    }
}

pub fn get_json(address: SocketAddr, path: &str) -> Result<Value, String> {
    let (status, body) =
        http(address, "GET", path, None).map_err(|error| format!("GET {path}: {error}"))?;
    let text = String::from_utf8_lossy(&body);
    if status != 200 {
        return Err(format!("GET {path}: HTTP {status}: {text}"));
    }
    serde_json::from_slice(&body).map_err(|error| format!("GET {path}: {error}: {text}"))
}

// ---------------------------------------------------------------------------------------
// The server process.

pub struct Server {
    child: Child,
    pub address: SocketAddr,
}

impl Server {
    pub fn start(config: &Path, data_dir: &Path, log: &Path) -> Server {
        Self::start_with_env(config, data_dir, log, &[])
    }

    /// [`Server::start`] with extra environment variables.
    pub fn start_with_env(
        config: &Path,
        data_dir: &Path,
        log: &Path,
        env: &[(&str, &str)],
    ) -> Server {
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|error| panic!("opening {}: {error}", log.display()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg("127.0.0.1:0")
            // A panic's message, not its backtrace, should reach the log's tail.
            .env("RUST_BACKTRACE", "0")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .unwrap_or_else(|error| panic!("starting {}: {error}", env!("CARGO_BIN_EXE_sluice")));
        let Some(stdout) = child.stdout.take() else {
            panic!("the server's stdout is not piped")
        };
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let result = reader.read_line(&mut line).map(|_| line);
            let _ = sender.send(result);
            // Keep the pipe open and drained until the process ends.
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest);
        });
        let line = match receiver.recv_timeout(START_TIMEOUT) {
            Ok(Ok(line)) => line,
            other => {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "sluice serve did not report its address within {START_TIMEOUT:?} ({other:?}, exit {status:?})\n\
                     --- server log ---\n{}",
                    log_tail(log)
                );
            }
        };
        let address = line
            .trim()
            .strip_prefix("sluice: listening on http://")
            .and_then(|address| address.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "unexpected first line {line:?}\n--- server log ---\n{}",
                    log_tail(log)
                )
            });
        Server { child, address }
    }

    /// How the process ended, if it has (`None`: still running).
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .try_wait()
            .unwrap_or_else(|error| panic!("checking on the server: {error}"))
    }

    /// SIGTERM, and wait for a clean exit.
    pub fn stop(mut self, log: &Path) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(
            sent.is_ok_and(|status| status.success()),
            "kill -TERM {pid}"
        );
        let status = self
            .child
            .wait()
            .unwrap_or_else(|error| panic!("waiting for the stopped server: {error}"));
        assert!(
            status.success(),
            "the server should stop cleanly on SIGTERM, got {status:?}\n--- server log ---\n{}",
            log_tail(log)
        );
    }

    /// SIGKILL, and check that the signal is what ended the process (it did not exit on
    /// its own earlier).
    pub fn kill(mut self, log: &Path) {
        // `Child::kill` sends SIGKILL on Unix: no shutdown hook runs, nothing is flushed.
        if let Err(error) = self.child.kill() {
            panic!("sending SIGKILL: {error}");
        }
        let status = self
            .child
            .wait()
            .unwrap_or_else(|error| panic!("waiting for the killed server: {error}"));
        assert_eq!(
            status.signal(),
            Some(SIGKILL),
            "the server should have died of SIGKILL, got {status:?}\n--- server log ---\n{}",
            log_tail(log)
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Never leak a server when a check panics.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The end of the server's stderr, without color codes.
pub fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip `ESC [ ... m`.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let lines: Vec<&str> = plain.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
