//! `sluice projections ...` against the real server, and the projection endpoints over
//! HTTP: list, get, errors, reload (changed, unchanged, refused), backfill, a metric.
#![cfg(unix)]

mod support;

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::process::{Server, get_json, http};

const CONFIG: &str = r#"
[engine]
partitions = 2
[[collections]]
name = "doctor"
key = ["/doctor_id"]
[[collections]]
name = "location"
key = ["/location_id"]
[[projections]]
name = "profile"
source = "doctor"
script = "profile.js"
"#;

const SCRIPT: &str = r#"
export default function (d, ctx) {
  if (d.name === "boom") throw new Error("no profile for boom");
  const l = ctx.get("location", d.location_id ?? 0);
  return {key: d.doctor_id, value: {name: d.name, city: l ? l.city : null}};
}
"#;

fn sluice(config: &Path, data: &Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["projections"])
        .args(args)
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .env_remove("SLUICE_TOKEN")
        .env_remove("SLUICE_SERVER")
        .output()
        .unwrap_or_else(|error| panic!("running sluice: {error}"));
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn post(server: &Server, collection: &str, body: &str) {
    let path = format!("/v1/collections/{collection}/events");
    let (status, answer) = http(
        server.address,
        "POST",
        &path,
        Some(("application/x-ndjson", body.as_bytes())),
    )
    .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
}

/// Polls the projection's status until `done` holds for it.
fn wait_for(server: &Server, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let list =
            get_json(server.address, "/v1/projections").unwrap_or_else(|error| panic!("{error}"));
        let status = list["projections"][0].clone();
        if done(&status) {
            return status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never {what}: {status}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn projections_over_the_cli_and_http() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, CONFIG).unwrap_or_else(|error| panic!("{error}"));
    let script = dir.path().join("profile.js");
    std::fs::write(&script, SCRIPT).unwrap_or_else(|error| panic!("{error}"));
    let data = dir.path().join("data");
    let log = dir.path().join("server.log");
    let server = Server::start(&config, &data, &log);
    post(
        &server,
        "location",
        "{\"location_id\": 1, \"city\": \"Chicago\"}\n",
    );
    post(
        &server,
        "doctor",
        "{\"doctor_id\": 17, \"name\": \"Kate\", \"location_id\": 1}\n{\"doctor_id\": 18, \"name\": \"boom\"}\n",
    );
    wait_for(&server, "caught up with an error", |status| {
        status["version"]["entries"] == 1 && status["version"]["errors"] == 1
    });

    let (code, out, err) = sluice(&config, &data, &["list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("profile") && out.contains("live"), "{out}");
    let (code, out, err) = sluice(&config, &data, &["get", "profile", "17"]);
    assert_eq!(code, 0, "{err}");
    let value: Value = serde_json::from_str(&out).unwrap_or_else(|error| panic!("{error}: {out}"));
    assert_eq!(
        value,
        serde_json::json!({"name": "Kate", "city": "Chicago"})
    );
    let (code, out, err) = sluice(&config, &data, &["errors", "profile"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("18") && out.contains("no profile for boom"),
        "{out}"
    );
    let (code, _, err) = sluice(&config, &data, &["get", "profile", "99"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("projection_entry_not_found") || err.contains("no entry"),
        "{err}"
    );
    let (code, out, err) = sluice(&config, &data, &["reload", "profile"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("unchanged"), "{out}");

    // Over HTTP: several keys in order, a metric.
    let body = r#"{"keys": [18, "17", "nope"]}"#;
    let (status, answer) = http(
        server.address,
        "POST",
        "/v1/projections/profile/get",
        Some(("application/json", body.as_bytes())),
    )
    .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&answer).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        answer,
        serde_json::json!({"results": [
            {"key": "18", "value": null},
            {"key": "17", "value": {"name": "Kate", "city": "Chicago"}},
            {"key": "nope", "value": null}]})
    );
    let (_, metrics) =
        http(server.address, "GET", "/metrics", None).unwrap_or_else(|error| panic!("{error}"));
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("sluice_projection_calls_total{projection=\"profile\"}"),
        "{metrics}"
    );

    // A broken script is refused, and nothing changes.
    std::fs::write(&script, "export default function (d) { return {key: ; }")
        .unwrap_or_else(|error| panic!("{error}"));
    let (status, answer) = http(
        server.address,
        "POST",
        "/v1/projections/profile/reload",
        None,
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let text = String::from_utf8_lossy(&answer);
    assert_eq!(status, 422, "{text}");
    assert!(
        text.contains("projection_script_refused") && text.contains("profile.js:1"),
        "{text}"
    );

    // A fixed script: rebuilt in the background, the errors re-run.
    std::fs::write(
        &script,
        "export default function (d) { return {key: d.doctor_id, value: {name: d.name, v: 2}}; }",
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let (code, out, err) = sluice(&config, &data, &["reload", "profile"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("building"), "{out}");
    let (code, out, err) = sluice(&config, &data, &["backfill", "profile"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("2 entries") && out.contains("0 errors"),
        "{out}"
    );
    let status = wait_for(&server, "switched", |status| status["building"].is_null());
    assert_eq!(status["version"]["entries"], 2, "{status}");
    let entry = get_json(server.address, "/v1/projections/profile/18")
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(entry["value"], serde_json::json!({"name": "boom", "v": 2}));
    server.stop(&log);
}
