//! `sluice audit` against the real PostgreSQL (`SLUICE_TEST_POSTGRES_URL`): a table and
//! a collection loaded with the same rows agree; after rows change, are deleted and are
//! added in the source, the audit names each kind with counts and exits 1, on the data
//! directory and over HTTP alike. The table has `SLUICE_TEST_AUDIT_ROWS` rows (default
//! 1,000,000), and the audit of them must take under 60 s.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};
use support::process::Server;

const CONFIG: &str =
    "[[collections]]\nname = \"doctor\"\nkey = [\"/doctor_id\"]\n[snapshots]\nenabled = false\n";
const AUDIT_SECONDS_MAX: u64 = 60;

fn postgres_url() -> Option<String> {
    match std::env::var("SLUICE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("skipped: SLUICE_TEST_POSTGRES_URL is not set (.ci/run sets it)");
            None
        }
    }
}

fn psql(runtime: &tokio::runtime::Runtime, url: &str, sql: &str) {
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let connection = tokio::spawn(connection);
        client.batch_execute(sql).await.unwrap();
        drop(client);
        let _ = connection.await;
    });
}

struct Audit {
    code: Option<i32>,
    report: Value,
    stderr: String,
}

fn audit(
    config: &std::path::Path,
    data: &std::path::Path,
    url: &str,
    query: &str,
    extra: &[&str],
) -> Audit {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "audit",
            "--collection",
            "doctor",
            "--format",
            "json",
            "--query",
            query,
        ])
        .args(["--source", url])
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .args(extra)
        .env_remove("SLUICE_TOKEN")
        .env_remove("SLUICE_SERVER")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    Audit {
        code: output.status.code(),
        report: serde_json::from_str(&stdout).unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn audit_finds_missing_extra_and_differing_documents() {
    let Some(url) = postgres_url() else { return };
    let rows: u64 = std::env::var("SLUICE_TEST_AUDIT_ROWS")
        .ok()
        .and_then(|rows| rows.parse().ok())
        .unwrap_or(1_000_000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let table = format!("sluice_audit_{}", std::process::id());
    psql(
        &runtime,
        &url,
        &format!(
            "DROP TABLE IF EXISTS {table};
             CREATE TABLE {table} AS SELECT g AS doctor_id, 'doctor ' || g AS name,
               CASE WHEN g % 3 = 0 THEN 'cardiology' ELSE 'oncology' END AS specialty,
               (g % 50)::float8 / 10 AS rating
             FROM generate_series(1, {rows}) AS g;"
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let data = dir.path().join("data");
    let events = dir.path().join("doctors.ndjson");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&events).unwrap());
    for id in 1..=rows {
        let specialty = if id % 3 == 0 {
            "cardiology"
        } else {
            "oncology"
        };
        let rating = (id % 50) as f64 / 10.0;
        writeln!(
            file,
            "{{\"doctor_id\":{id},\"name\":\"doctor {id}\",\"specialty\":\"{specialty}\",\"rating\":{rating}}}"
        )
        .unwrap();
    }
    file.flush().unwrap();
    drop(file);
    let ingest = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["ingest", "--collection", "doctor"])
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .arg(&events)
        .output()
        .unwrap();
    assert!(
        ingest.status.success(),
        "{}",
        String::from_utf8_lossy(&ingest.stderr)
    );
    let query = format!("SELECT doctor_id, name, specialty, rating FROM {table}");

    let started = Instant::now();
    let clean = audit(&config, &data, &url, &query, &[]);
    let took = started.elapsed();
    assert_eq!(clean.code, Some(0), "{}\n{}", clean.report, clean.stderr);
    assert_eq!(clean.report["matching"], rows, "{}", clean.report);
    assert!(
        took < Duration::from_secs(AUDIT_SECONDS_MAX),
        "the audit of {rows} rows took {took:?}"
    );
    eprintln!(
        "RESULT sluice-audit rows={rows} seconds={:.1}",
        took.as_secs_f64()
    );

    // Two rows change, one goes, one comes, in the source only.
    psql(
        &runtime,
        &url,
        &format!(
            "UPDATE {table} SET name = 'renamed' WHERE doctor_id IN (17, 42);
             UPDATE {table} SET rating = 9.9 WHERE doctor_id = 42;
             DELETE FROM {table} WHERE doctor_id = 5;
             INSERT INTO {table} VALUES ({}, 'new', 'oncology', 1.0);",
            rows + 1
        ),
    );
    let dirty = audit(&config, &data, &url, &query, &[]);
    assert_eq!(dirty.code, Some(1), "{}\n{}", dirty.report, dirty.stderr);
    let report = &dirty.report;
    assert_eq!(report["missing"]["count"], 1, "{report}");
    assert_eq!(report["missing"]["sample"][0], rows + 1, "{report}");
    assert_eq!(report["extra"]["count"], 1, "{report}");
    assert_eq!(report["extra"]["sample"][0], 5, "{report}");
    assert_eq!(report["differing"]["count"], 2, "{report}");
    assert_eq!(report["differing_fields"]["name"], 2, "{report}");
    assert_eq!(report["differing_fields"]["rating"], 1, "{report}");
    assert_eq!(report["matching"], rows - 3, "{report}");

    // Only the fields asked for: the renames are not differences then.
    let specialty = audit(&config, &data, &url, &query, &["--fields", "specialty"]);
    assert_eq!(
        specialty.report["differing"]["count"], 0,
        "{}",
        specialty.report
    );
    assert_eq!(specialty.code, Some(1), "missing and extra still count");

    // Over HTTP, with a server holding the data directory: the same report.
    let log = dir.path().join("server.log");
    let server = Server::start(&config, &data, &log);
    let over_http = audit(&config, &data, &url, &query, &[]);
    assert_eq!(over_http.code, Some(1), "{}", over_http.stderr);
    for field in ["missing", "extra", "differing"] {
        assert_eq!(over_http.report[field], dirty.report[field], "{field}");
    }
    server.stop(&log);

    // A source that does not answer: one line, exit 2.
    let gone = audit(
        &config,
        &data,
        "postgres://nobody@127.0.0.1:1/none",
        &query,
        &[],
    );
    assert_eq!(gone.code, Some(2), "{}", gone.stderr);
    assert!(gone.stderr.contains("does not answer"), "{}", gone.stderr);
    psql(&runtime, &url, &format!("DROP TABLE {table};"));
}
