//! `sluice token` and `sluice openapi` against the real binary: a token made offline
//! opens a running server, tokens made and revoked over HTTP by the CLI work and stop
//! working at once, and the bootstrap token from the environment is an admin.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;
use support::process::{Server, http_with};

const CONFIG: &str = r#"
[[collections]]
name = "doctor"
key = ["/doctor_id"]
version = "/updated_at"
[[collections]]
name = "location"
key = ["/location_id"]
"#;

fn sluice(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env_remove("SLUICE_TOKEN")
        .env_remove("SLUICE_SERVER")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn status(server: &Server, token: &str, path: &str) -> u16 {
    let header = format!("Authorization: Bearer {token}");
    http_with(server.address, "GET", path, &[header], None)
        .unwrap()
        .0
}

fn write_config(dir: &Path) -> std::path::PathBuf {
    let config = dir.join("sluice.toml");
    std::fs::write(&config, CONFIG).unwrap();
    config
}

#[test]
fn tokens_from_the_cli_work_and_stop_working_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let config = config.to_str().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("server.log");
    // The first token, made offline in the data directory the server will use.
    let (ok, admin, stderr) = sluice(&[
        "token",
        "create",
        "--offline",
        "--config",
        config,
        "--name",
        "ops",
        "--role",
        "admin",
    ]);
    assert!(ok, "{stderr}");
    let admin = admin.trim().to_owned();
    assert!(admin.starts_with("sluice_") && admin.len() == 71, "{admin}");
    assert!(stderr.contains("shown once"), "{stderr}");
    let server = Server::start(Path::new(config), &data, &log);
    let url = format!("http://{}", server.address);
    assert_eq!(status(&server, "sluice_nope", "/v1/changes"), 401);
    assert_eq!(status(&server, &admin, "/v1/changes"), 200);

    let (ok, reader, stderr) = sluice(&[
        "token",
        "create",
        "--server",
        &url,
        "--token",
        &admin,
        "--name",
        "dash",
        "--role",
        "reader",
        "--collections",
        "doctor",
        "--expires-in",
        "90d",
    ]);
    assert!(ok, "{stderr}");
    let reader = reader.trim().to_owned();
    assert_eq!(status(&server, &reader, "/v1/collections/doctor/docs"), 200);
    assert_eq!(
        status(&server, &reader, "/v1/collections/location/docs"),
        403
    );
    let (ok, listed, stderr) = sluice(&["token", "list", "--server", &url, "--token", &admin]);
    assert!(ok, "{stderr}");
    assert!(
        listed.contains("dash") && listed.contains("reader") && listed.contains("doctor"),
        "{listed}"
    );
    assert!(
        !listed.contains(&reader) && !listed.contains(&admin),
        "secrets are never listed"
    );
    // A reader cannot manage tokens.
    let (ok, _, stderr) = sluice(&["token", "list", "--server", &url, "--token", &reader]);
    assert!(!ok && stderr.contains("forbidden"), "{stderr}");
    let (ok, _, stderr) = sluice(&[
        "token", "revoke", "dash", "--server", &url, "--token", &admin,
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(status(&server, &reader, "/v1/collections/doctor/docs"), 401);
    let (ok, _, stderr) = sluice(&[
        "token", "revoke", "dash", "--server", &url, "--token", &admin,
    ]);
    assert!(!ok && stderr.contains("unknown_token"), "{stderr}");
    // The log names tokens, never their secrets.
    drop(server);
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(!log_text.contains(&admin[7..]) && !log_text.contains(&reader[7..]));
}

#[test]
fn the_bootstrap_token_comes_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let secret = "bootstrap-secret-0123456789abcdef0123456789";
    let server = Server::start_with_env(
        &config,
        &dir.path().join("data"),
        &dir.path().join("server.log"),
        &[("SLUICE_ADMIN_TOKEN", secret)],
    );
    assert_eq!(status(&server, secret, "/v1/tokens"), 200);
    assert_eq!(
        status(
            &server,
            "wrong-secret-0123456789abcdef0123456789",
            "/v1/tokens"
        ),
        401
    );
    let (code, _) = http_with(server.address, "GET", "/v1/changes", &[], None).unwrap();
    assert_eq!(code, 401, "a bootstrap token turns auth on");
}

#[test]
fn openapi_prints_the_spec() {
    let (ok, spec, stderr) = sluice(&["openapi"]);
    assert!(ok, "{stderr}");
    let spec: serde_json::Value = serde_json::from_str(&spec).unwrap();
    assert_eq!(spec["openapi"], "3.1.0");
    assert!(spec["paths"]["/v1/collections/{name}/events"]["post"].is_object());
}

#[test]
fn a_short_bootstrap_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env("SLUICE_ADMIN_TOKEN", "short")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("at least 32"), "{stderr}");
    assert!(!stderr.contains("short\n"), "{stderr}");
}
