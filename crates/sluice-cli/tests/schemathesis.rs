//! Schema-driven test of the real server: schemathesis (a property-based API tester, from
//! PyPI) reads the running server's own spec (`GET /v1/openapi.json`), generates requests
//! for every operation, and checks every answer: never a 5xx, and status code, content
//! type, headers and body as the spec declares them.
//!
//! Needs `SLUICE_TEST_SCHEMATHESIS`, the path of the `schemathesis` executable (CI gets it
//! from `.ci/schemathesis.sh`); without it the test is skipped.
#![cfg(unix)]

mod support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::process::{Rng, Server, http_with, log_tail};

/// Two collections, one with a composite key, SQL over snapshots, and small limits so
/// that fuzzed requests stay cheap (long polls end after 100 ms, streams send a heartbeat
/// every 200 ms). The failed-authentication and query budgets are large so that fuzzed
/// logins and queries reach their handlers instead of a rate limit.
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

[snapshots]
store = "snapshots"
query_timeout_ms = 2000
queries_per_token_per_s = 1000

[[collections]]
name = "doctor"
key = ["/doctor_id"]
version = "/updated_at"

[[collections]]
name = "availability"
key = ["/location", "/slot"]
ordering = "document"

[[projections]]
name = "profile"
source = "doctor"
script = "profile.js"

[[indexes]]
name = "doctors"
source = "doctor"
[indexes.fields]
name = { type = "text", autocomplete = true }
updated_at = { type = "integer" }
"#;

/// The projection: each doctor with the availability of its clinic.
const PROFILE_SCRIPT: &str = r#"
export default function (doctor, ctx) {
  return {key: doctor.doctor_id, value: {name: doctor.name ?? null, clinic: ctx.get("availability", "clinic-1/2026-11-24T09:00")}};
}
"#;

/// Schemathesis's own config: real collection names, keys, a subscription and queries
/// for most requests to the routes that take them, so that fuzzing gets past `404`s and
/// SQL parse errors to the handlers (the rest stay schema-generated).
const SCHEMATHESIS_CONFIG: &str = r#"
[dictionaries.collections]
values = ["doctor", "availability"]

[dictionaries.keys]
values = ["1", "2", "3", "clinic-1"]

[dictionaries.subscriptions]
values = ["seeded"]

[dictionaries.projections]
values = ["profile"]

[dictionaries.indexes]
values = ["doctors"]

[dictionaries.sql]
values = [
    "SELECT key, doc FROM doctor",
    "SELECT count(*) AS n FROM availability",
    "SELECT * FROM doctor ORDER BY key LIMIT 2",
    "SELECT 1",
]

[[operations]]
include-path-regex = "^/v1/collections/"
parameters = { "path.name" = { dictionary = "collections", probability = 0.8 }, "path.key" = { dictionary = "keys", probability = 0.7 } }

[[operations]]
include-path-regex = "^/v1/subscriptions/"
parameters = { "path.name" = { dictionary = "subscriptions", probability = 0.5 } }

[[operations]]
include-path-regex = "^/v1/projections/"
parameters = { "path.name" = { dictionary = "projections", probability = 0.8 }, "path.key" = { dictionary = "keys", probability = 0.7 } }

[[operations]]
include-path-regex = "^/v1/indexes/"
parameters = { "path.name" = { dictionary = "indexes", probability = 0.8 } }

[[operations]]
include-path = "/v1/sql"
parameters = { "body.sql" = { dictionary = "sql", probability = 0.7 } }
"#;

/// Documents and a subscription for the fuzzed reads to find.
const SEED: &[(&str, &str, &str)] = &[
    (
        "POST",
        "/v1/collections/doctor/events",
        r#"[{"doctor_id":1,"updated_at":1,"name":"Ada"},{"doctor_id":2,"updated_at":1,"name":"Bo"},{"doctor_id":"3","updated_at":2}]"#,
    ),
    (
        "POST",
        "/v1/collections/availability/events",
        r#"[{"location":"clinic-1","slot":"2026-11-24T09:00","free":true},{"location":2,"slot":"x"}]"#,
    ),
    ("PUT", "/v1/subscriptions/seeded", "{}"),
];

/// Generated test cases per operation and phase.
const MAX_EXAMPLES: &str = "30";
/// Seconds per request; an event stream is read for this long, then cut.
const REQUEST_TIMEOUT_S: &str = "3";
/// The whole schemathesis run; past it the run is killed and the test fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// One request with a bearer token and an optional JSON body; status and body.
fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    bearer: &str,
    json: Option<&str>,
) -> std::io::Result<(u16, Vec<u8>)> {
    let authorization = [format!("Authorization: Bearer {bearer}")];
    let body = json.map(|json| ("application/json", json.as_bytes()));
    http_with(address, method, path, &authorization, body)
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
    std::fs::write(dir.path().join("profile.js"), PROFILE_SCRIPT)
        .unwrap_or_else(|error| panic!("{error}"));
    let log = dir.path().join("server.log");
    let admin = random_secret();
    let mut server = Server::start_with_env(
        &config,
        &dir.path().join("data"),
        &log,
        &[("SLUICE_ADMIN_TOKEN", &admin)],
    );
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

    for &(method, path, body) in SEED {
        let (status, answer) = request(address, method, path, writer, Some(body))
            .unwrap_or_else(|error| panic!("{method} {path}: {error}"));
        let answer = String::from_utf8_lossy(&answer);
        assert_eq!(status, 200, "{method} {path}: {answer}");
        assert!(
            !answer.contains(r#""status":"rejected""#),
            "{method} {path}: {answer}"
        );
    }

    let schemathesis_config = dir.path().join("schemathesis.toml");
    std::fs::write(&schemathesis_config, SCHEMATHESIS_CONFIG)
        .unwrap_or_else(|error| panic!("{error}"));
    let checks = checks(&schemathesis);
    let output_path = dir.path().join("schemathesis.out");
    let output = std::fs::File::create(&output_path).unwrap_or_else(|error| panic!("{error}"));
    let errors = output.try_clone().unwrap_or_else(|error| panic!("{error}"));
    let started = Instant::now();
    let mut run = Command::new(&schemathesis)
        .arg("--config-file")
        .arg(&schemathesis_config)
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
        // Nothing of schemathesis's (a `.hypothesis` directory, reports) goes into the
        // source tree.
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

    let exited = server.exit_status();
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
