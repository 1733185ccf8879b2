//! Against an S3-compatible server: `SLUICE_TEST_S3_URL` (`.ci/run` starts moto's server
//! and sets it); without it the test prints why it is skipped and passes.
#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};
use sluice_core::Config;
use sluice_engine::{BodyFormat, Engine};
use sluice_snapshot::{Archiver, Format, Snapshots};
use std::io::{Read, Write};

fn s3_url() -> Option<String> {
    match std::env::var("SLUICE_TEST_S3_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!(
                "skipped: set SLUICE_TEST_S3_URL (e.g. http://127.0.0.1:5055, moto_server) to run the S3 tests"
            );
            None
        }
    }
}

/// Creates `bucket` with a bare HTTP request (moto takes unsigned requests).
fn create_bucket(endpoint: &str, bucket: &str) {
    let address = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "PUT /{bucket} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

fn config(endpoint: &str, bucket: &str) -> Config {
    Config::from_toml(&format!(
        r#"
[engine]
partitions = 2
[snapshots]
store = "s3://{bucket}/sluice/test"
s3_endpoint = "{endpoint}"
s3_region = "us-east-1"
s3_access_key_id = "testing"
s3_secret_access_key = "testing"
s3_allow_http = true
compact_interval_s = 0
[[collections]]
name = "doctor"
key = ["/doctor_id"]
version = "/v"
columns = {{ specialty = "string" }}
"#
    ))
    .unwrap()
}

async fn post(engine: &Engine, ndjson: &str) {
    let inputs = engine
        .parse_body("doctor", ndjson.as_bytes(), BodyFormat::Ndjson)
        .unwrap()
        .unwrap();
    engine.submit("doctor", inputs).await.unwrap();
}

#[tokio::test]
async fn archive_compact_query_and_restore_on_s3() {
    let Some(endpoint) = s3_url() else { return };
    let bucket = format!(
        "sluice-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    create_bucket(&endpoint, &bucket);
    let config = config(&endpoint, &bucket);
    let data = tempfile::tempdir().unwrap();
    let engine = Engine::open(&config, data.path()).unwrap();
    let snapshots = Snapshots::open(&engine, data.path()).unwrap();
    let lines: String = (0..100)
        .map(|id| {
            format!(
                "{{\"doctor_id\": {id}, \"v\": 1, \"specialty\": \"s{}\"}}\n",
                id % 4
            )
        })
        .collect();
    post(&engine, &lines).await;

    // The archiver dies between writing its segment and committing its cursor.
    let new_archiver = || {
        Archiver::new(
            &engine,
            snapshots.objects().clone(),
            vec![snapshots.layout("doctor").unwrap().clone()],
            config.snapshots.clone().unwrap(),
        )
        .unwrap()
    };
    {
        let mut archiver = new_archiver();
        archiver.read_through(&engine.head()).await.unwrap();
        archiver.finish_segment().await.unwrap();
    }
    post(
        &engine,
        "{\"doctor_id\": 7, \"v\": 2, \"specialty\": \"moved\"}\n",
    )
    .await;
    let mut archiver = new_archiver();
    archiver.archive_through(&engine.head()).await.unwrap();
    drop(archiver);
    let segments = snapshots
        .objects()
        .list(&snapshots.objects().segment_dir("doctor"))
        .await
        .unwrap();
    assert_eq!(
        segments.len(),
        1,
        "the retry rewrote the same object: {segments:?}"
    );

    let manifest = snapshots.snapshot_now("doctor", &|_| {}).await.unwrap();
    assert_eq!(manifest.rows, 100);
    let result = snapshots
        .query(
            "SELECT specialty, count(*) AS n FROM doctor GROUP BY 1 ORDER BY 1",
            None,
        )
        .await
        .unwrap();
    let rows: Value = serde_json::from_slice(&result.render(Format::Json).unwrap()).unwrap();
    assert_eq!(
        rows,
        json!([
            {"specialty": "moved", "n": 1},
            {"specialty": "s0", "n": 25},
            {"specialty": "s1", "n": 25},
            {"specialty": "s2", "n": 25},
            {"specialty": "s3", "n": 24}
        ])
    );

    // A new, empty data directory restored from the bucket.
    let fresh = tempfile::tempdir().unwrap();
    let restored_engine = Engine::open(&config, fresh.path()).unwrap();
    let restored = Snapshots::open(&restored_engine, fresh.path())
        .unwrap()
        .restore(&|_, _| {})
        .await
        .unwrap();
    assert_eq!(restored[0].documents, 100);
    assert_eq!(restored[0].checksum, manifest.checksum);
    let stats = restored_engine.stats("doctor").unwrap();
    assert_eq!(stats.documents, 100, "{stats:?}");
}
