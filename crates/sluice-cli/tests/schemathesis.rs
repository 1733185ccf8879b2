//! Schema-driven test of the real server: schemathesis (a property-based API tester, from
//! PyPI) reads the running server's own spec (`GET /v1/openapi.json`), generates requests
//! for every operation, and checks every answer: never a 5xx, and status code, content
//! type, headers and body as the spec declares them.
//!
//! Needs `SLUICE_TEST_SCHEMATHESIS`, the path of the `schemathesis` executable (CI gets it
//! from `.ci/schemathesis.sh`); without it the test is skipped.
#![cfg(unix)]

mod support;

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::process::{IO_TIMEOUT, Rng, START_TIMEOUT, log_tail, parse_response};

/// Two collections, one with a composite key, and small limits so that fuzzed requests
/// stay cheap (long polls end after 100 ms, streams send a heartbeat every 200 ms). The
/// failed-authentication budget is large so that fuzzed logins reach the handler instead
/// of the rate limit.
const CONFIG: &str = r#"
[server]
auth_failures_burst = 1000000
auth_failures_per_s = 1000000

[limits]
event_bytes_max = 16384
request_bytes_max = 65536
request_events_max = 100
changes_limit_max = 100
docs_limit_max = 100
wait_ms_max = 100
stream_heartbeat_ms = 200

[engine]
partitions = 2

[[collections]]
name = "doctor"
key = ["/doctor_id"]
version = "/updated_at"

[[collections]]
name = "availability"
key = ["/location", "/slot"]
ordering = "document"
"#;

/// Generated test cases per operation and phase.
const MAX_EXAMPLES: &str = "30";
/// Seconds per request; an event stream is read for this long, then cut.
const REQUEST_TIMEOUT_S: &str = "3";
/// The whole schemathesis run; past it the run is killed and the test fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// `sluice serve` with the bootstrap admin token in its environment.
struct Server {
    child: Child,
    address: SocketAddr,
}

impl Server {
    fn start(config: &Path, data_dir: &Path, log: &Path, admin_token: &str) -> Server {
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
            .env("SLUICE_ADMIN_TOKEN", admin_token)
            // A panic's message, not its backtrace, should reach the log's tail.
            .env("RUST_BACKTRACE", "0")
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
}

impl Drop for Server {
    fn drop(&mut self) {
        // Never leak a server when a check panics.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request with a bearer token and an optional JSON body; status and body.
fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    bearer: &str,
    json: Option<&str>,
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect_timeout(&address, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nAuthorization: Bearer {bearer}\r\n"
    );
    let body = json.unwrap_or_default();
    if json.is_some() {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    stream.write_all(&out)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    parse_response(&response)
}

/// 64 hex characters, different per run.
fn random_secret() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or_default();
    let mut rng = Rng::new(nanos ^ u64::from(std::process::id()).rotate_left(32));
    (0..4).map(|_| format!("{:016x}", rng.next())).collect()
}

/// The checks to run, among those this schemathesis knows (`response_headers_conformance`
/// is recent).
fn checks(schemathesis: &str) -> String {
    let help = Command::new(schemathesis)
        .args(["run", "--help"])
        .output()
        .unwrap_or_else(|error| panic!("running {schemathesis} run --help: {error}"));
    let help = String::from_utf8_lossy(&help.stdout);
    let mut checks = vec![
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    ];
    if help.contains("response_headers_conformance") {
        checks.push("response_headers_conformance");
    }
    checks.join(",")
}

#[test]
fn the_server_conforms_to_its_openapi_spec() {
    let Some(schemathesis) = std::env::var("SLUICE_TEST_SCHEMATHESIS")
        .ok()
        .filter(|path| !path.trim().is_empty())
    else {
        println!("skipping: SLUICE_TEST_SCHEMATHESIS is not set");
        return;
    };
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, CONFIG).unwrap_or_else(|error| panic!("{error}"));
    let log = dir.path().join("server.log");
    let admin = random_secret();
    let mut server = Server::start(&config, &dir.path().join("data"), &log, &admin);
    let address = server.address;

    // A writer token: schemathesis may ingest and delete, not manage tokens.
    let (status, body) = request(
        address,
        "POST",
        "/v1/tokens",
        &admin,
        Some(r#"{"name":"schemathesis","role":"writer"}"#),
    )
    .unwrap_or_else(|error| {
        panic!(
            "POST /v1/tokens: {error}\n--- server log ---\n{}",
            log_tail(&log)
        )
    });
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 201, "POST /v1/tokens: {text}");
    let created: serde_json::Value =
        serde_json::from_slice(&body).unwrap_or_else(|error| panic!("{error}: {text}"));
    let Some(writer) = created["token"].as_str() else {
        panic!("no token in {text}")
    };

    let checks = checks(&schemathesis);
    let output_path = dir.path().join("schemathesis.out");
    let output = std::fs::File::create(&output_path).unwrap_or_else(|error| panic!("{error}"));
    let errors = output.try_clone().unwrap_or_else(|error| panic!("{error}"));
    let started = Instant::now();
    let mut run = Command::new(&schemathesis)
        .arg("run")
        .arg(format!("http://{address}/v1/openapi.json"))
        .arg("--header")
        .arg(format!("Authorization: Bearer {writer}"))
        .args(["--checks", &checks])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--workers", "1"])
        .args(["--request-timeout", REQUEST_TIMEOUT_S])
        .args(["--generation-database", "none"])
        .arg("--no-color")
        // Nothing of schemathesis's (a config file, a `.hypothesis` directory) comes from
        // or goes into the source tree.
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::from(output))
        .stderr(Stdio::from(errors))
        .spawn()
        .unwrap_or_else(|error| panic!("starting {schemathesis}: {error}"));
    let status = loop {
        match run.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > RUN_TIMEOUT => {
                let _ = run.kill();
                let _ = run.wait();
                panic!(
                    "schemathesis did not finish within {RUN_TIMEOUT:?}\n--- schemathesis ---\n{}\n--- server log ---\n{}",
                    std::fs::read_to_string(&output_path).unwrap_or_default(),
                    log_tail(&log)
                );
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(200)),
            Err(error) => panic!("waiting for schemathesis: {error}"),
        }
    };
    let elapsed = started.elapsed();
    let output = std::fs::read_to_string(&output_path).unwrap_or_default();

    let exited = server
        .child
        .try_wait()
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(
        exited.is_none(),
        "the server exited during the run: {exited:?}\n--- schemathesis ---\n{output}\n--- server log ---\n{}",
        log_tail(&log)
    );
    assert!(
        status.success(),
        "schemathesis found failures ({status}, after {elapsed:?})\n--- schemathesis ---\n{output}\n--- server log ---\n{}",
        log_tail(&log)
    );
    println!("schemathesis passed in {elapsed:?}\n{output}");
}
