//! Archive, compaction, SQL and restore on a local directory store.

use crate::{Archiver, Format, SnapshotError, Snapshots};
use proptest::prelude::*;
use serde_json::{Value, json};
use sluice_core::Config;
use sluice_engine::{BodyFormat, Engine};
use std::collections::BTreeMap;
use std::path::Path;

fn config(store: &Path) -> Config {
    Config::from_toml(&format!(
        r#"
[engine]
partitions = 3
[snapshots]
store = "{}"
compact_interval_s = 0
snapshots_kept = 2
query_rows_max = 50
[[collections]]
name = "doctor"
key = ["/doctor_id"]
version = "/v"
columns = {{ specialty = "string", rating = "double", active = "boolean", visits = "long" }}
[[collections]]
name = "slot"
key = ["/doctor_id", "/at"]
[[collections]]
name = "plan"
key = ["/plan_id"]
key_types = ["string"]
"#,
        store.display()
    ))
    .unwrap()
}

struct Fixture {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    store: std::path::PathBuf,
    engine: Engine,
    snapshots: Snapshots,
}

fn fixture() -> Fixture {
    let data = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let config = config(store.path());
    let engine = Engine::open(&config, data.path()).unwrap();
    let snapshots = Snapshots::open(&engine, data.path()).unwrap();
    Fixture {
        store: store.path().to_owned(),
        _dirs: (data, store),
        engine,
        snapshots,
    }
}

/// A new archiver on the fixture's engine, as a restarted process would make.
fn archiver(f: &Fixture) -> Archiver {
    let inner = &f.snapshots.inner;
    Archiver::new(
        &f.engine,
        inner.objects.clone(),
        inner.layouts.clone(),
        inner.config.clone(),
    )
    .unwrap()
}

async fn post(engine: &Engine, collection: &str, ndjson: &str) {
    let inputs = engine
        .parse_body(collection, ndjson.as_bytes(), BodyFormat::Ndjson)
        .unwrap()
        .unwrap();
    engine.submit(collection, inputs).await.unwrap();
}

/// Every live document of a collection, by key text.
fn live(engine: &Engine, collection: &str) -> BTreeMap<String, Value> {
    let (docs, next) = engine.list(collection, None, 10_000).unwrap();
    assert!(next.is_none());
    docs.into_iter()
        .map(|doc| {
            (
                doc.key.to_string(),
                serde_json::from_slice(&doc.doc).unwrap(),
            )
        })
        .collect()
}

async fn sql(snapshots: &Snapshots, query: &str) -> Value {
    let result = snapshots.query(query, None).await.unwrap();
    serde_json::from_slice(&result.render(Format::Json).unwrap()).unwrap()
}

#[tokio::test]
async fn snapshot_holds_the_live_documents_and_answers_sql() {
    let f = fixture();
    post(
        &f.engine,
        "doctor",
        r#"{"doctor_id": 1, "v": 1, "specialty": "cardiology", "rating": 4.5, "active": true, "visits": 3}
{"doctor_id": 2, "v": 1, "specialty": "oncology", "rating": 3}
{"doctor_id": 3, "v": 1, "specialty": "cardiology"}
{"doctor_id": 1, "v": 2, "rating": 4.8}"#,
    )
    .await;
    post(
        &f.engine,
        "slot",
        "{\"doctor_id\": 1, \"at\": \"09:00\", \"free\": true}\n",
    )
    .await;
    let first = f.snapshots.snapshot_now("doctor", &|_| {}).await.unwrap();
    assert_eq!((first.id.as_str(), first.rows), ("0000000001", 3));
    // Updates and a delete after the first snapshot: the second is snapshot ∪ segments.
    post(
        &f.engine,
        "doctor",
        "{\"doctor_id\": 2, \"v\": 2, \"specialty\": \"neurology\"}\n",
    )
    .await;
    let key = sluice_core::Key::from_segments(&["3"], 1).unwrap();
    f.engine
        .submit(
            "doctor",
            vec![sluice_engine::Input::Delete { key, version: None }],
        )
        .await
        .unwrap();
    let second = f.snapshots.snapshot_now("doctor", &|_| {}).await.unwrap();
    assert_eq!((second.id.as_str(), second.rows), ("0000000002", 2));
    assert_eq!(second.cursor, f.engine.head().to_string());

    let rows = sql(&f.snapshots, "SELECT doctor_id, specialty, rating, active, visits, version FROM doctor ORDER BY doctor_id").await;
    assert_eq!(
        rows,
        json!([
            {"doctor_id": 1, "specialty": "cardiology", "rating": 4.8, "active": true, "visits": 3, "version": 2},
            {"doctor_id": 2, "specialty": "neurology", "rating": 3.0, "version": 2}
        ])
    );
    let counts = sql(
        &f.snapshots,
        "SELECT specialty, count(*) AS n FROM doctor GROUP BY 1 ORDER BY 1",
    )
    .await;
    assert_eq!(
        counts,
        json!([{"specialty": "cardiology", "n": 1}, {"specialty": "neurology", "n": 1}])
    );
    // The documents' JSON equals the live documents.
    let docs = sql(&f.snapshots, "SELECT key, doc FROM doctor").await;
    let from_snapshot: BTreeMap<String, Value> = docs
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["key"].as_str().unwrap().to_owned(),
                serde_json::from_str(row["doc"].as_str().unwrap()).unwrap(),
            )
        })
        .collect();
    assert_eq!(from_snapshot, live(&f.engine, "doctor"));
    // An older snapshot stays queryable; a collection without a snapshot is an empty table.
    let old = f
        .snapshots
        .query("SELECT count(*) AS n FROM doctor", Some("0000000001"))
        .await
        .unwrap();
    let old: Value = serde_json::from_slice(&old.render(Format::Json).unwrap()).unwrap();
    assert_eq!(old, json!([{"n": 3}]));
    assert_eq!(
        sql(&f.snapshots, "SELECT count(*) AS n FROM slot").await,
        json!([{"n": 0}])
    );
    let csv = f
        .snapshots
        .query("SELECT doctor_id FROM doctor ORDER BY 1", None)
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(csv.render(Format::Csv).unwrap()).unwrap(),
        "doctor_id\n1\n2\n"
    );
    // Segments covered by the snapshot are gone.
    let segments = f
        .snapshots
        .objects()
        .list(&f.snapshots.objects().segment_dir("doctor"))
        .await
        .unwrap();
    assert!(segments.is_empty(), "{segments:?}");
    // The files are plain Parquet: another reader gets the same rows.
    let manifest = f.snapshots.latest("doctor").await.unwrap().unwrap();
    let mut rows = 0;
    for file in &manifest.files {
        let path = f
            .store
            .join("snapshots/doctor")
            .join(&manifest.id)
            .join(&file.name);
        let reader =
            datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                std::fs::File::open(&path).unwrap(),
            )
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            rows += batch.unwrap().num_rows();
        }
    }
    assert_eq!(rows as u64, manifest.rows);
}

#[tokio::test]
async fn sql_is_read_only_and_bounded() {
    let f = fixture();
    let lines: String = (0..60)
        .map(|id| format!("{{\"doctor_id\": {id}, \"v\": 1}}\n"))
        .collect();
    post(&f.engine, "doctor", &lines).await;
    f.snapshots.snapshot_now("doctor", &|_| {}).await.unwrap();
    let refused = |sql: &'static str, needle: &'static str| {
        let snapshots = f.snapshots.clone();
        async move {
            match snapshots.query(sql, None).await {
                Err(SnapshotError::Sql(message)) => {
                    assert!(message.to_lowercase().contains(needle), "{sql}: {message}")
                }
                Err(other) => panic!("{sql}: {other}"),
                Ok(_) => panic!("{sql} was accepted"),
            }
        }
    };
    refused("CREATE TABLE t AS SELECT 1", "ddl").await;
    refused(
        "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/etc'",
        "ddl",
    )
    .await;
    refused("INSERT INTO doctor SELECT * FROM doctor", "dml").await;
    refused("COPY doctor TO '/tmp/out.parquet'", "dml").await;
    refused("SET datafusion.execution.batch_size = 1", "statement").await;
    refused("SELECT * FROM '/etc/passwd'", "not found").await;
    refused("SELEC 1", "expected").await;
    match f.snapshots.query("SELECT * FROM doctor", None).await {
        Err(SnapshotError::TooManyRows { max: 50 }) => {}
        Err(other) => panic!("{other}"),
        Ok(result) => panic!("{} rows accepted", result.rows),
    }
    assert_eq!(
        sql(&f.snapshots, "SELECT count(*) AS n FROM doctor").await,
        json!([{"n": 60}])
    );
}

/// Regression: `SELECT repeat('x', 1000000000)` drove the server to 7 GB RSS for 30 s
/// although `query_memory_bytes_max` was 512 MiB (the pool does not see scalar values).
#[tokio::test]
async fn regression_repeat_one_gigabyte_is_refused_before_allocating() {
    let f = fixture();
    post(&f.engine, "doctor", "{\"doctor_id\": 1, \"v\": 1}\n").await;
    f.snapshots.snapshot_now("doctor", &|_| {}).await.unwrap();
    for sql in [
        "SELECT repeat('x', 1000000000)",
        "SELECT repeat(doc, 100000000) FROM doctor",
        "SELECT lpad('x', 1000000000)",
        "SELECT rpad(key, 2000000000, 'ab') FROM doctor",
        "SELECT length(repeat(repeat('x', 1000), 1000000))",
    ] {
        let started = std::time::Instant::now();
        match f.snapshots.query(sql, None).await {
            Err(SnapshotError::Sql(message)) => {
                assert!(
                    message.contains("query_value_bytes_max"),
                    "{sql}: {message}"
                )
            }
            Err(other) => panic!("{sql}: {other}"),
            Ok(_) => panic!("{sql} was accepted"),
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{sql}"
        );
    }
    // Values under the bound still work.
    assert_eq!(
        sql(&f.snapshots, "SELECT length(repeat('ab', 1000)) AS n").await,
        json!([{"n": 2000}])
    );
    // Growth that depends on the data is checked on the result.
    match f
        .snapshots
        .query(
            "SELECT replace(repeat('a', 2000), 'a', repeat('b', 1000)) FROM doctor",
            None,
        )
        .await
    {
        Err(SnapshotError::Sql(message)) => assert!(message.contains("replace"), "{message}"),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("a 2 MB value was accepted"),
    }
}

#[tokio::test]
async fn results_are_bounded_in_bytes() {
    let data = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let mut config = config(store.path());
    if let Some(snapshots) = config.snapshots.as_mut() {
        snapshots.query_result_bytes_max = 64 * 1024;
        snapshots.query_rows_max = 1_000_000;
    }
    let engine = Engine::open(&config, data.path()).unwrap();
    let snapshots = Snapshots::open(&engine, data.path()).unwrap();
    let lines: String = (0..2000)
        .map(|id| {
            format!(
                "{{\"doctor_id\": {id}, \"v\": 1, \"bio\": \"{}\"}}\n",
                "x".repeat(100)
            )
        })
        .collect();
    post(&engine, "doctor", &lines).await;
    snapshots.snapshot_now("doctor", &|_| {}).await.unwrap();
    match snapshots.query("SELECT doc FROM doctor", None).await {
        Err(SnapshotError::ResultTooLarge { max }) => assert_eq!(max, 64 * 1024),
        Err(other) => panic!("{other}"),
        Ok(result) => panic!("{} rows accepted", result.rows),
    }
    let small = snapshots
        .query("SELECT count(*) AS n FROM doctor", None)
        .await
        .unwrap();
    assert_eq!(small.rows, 1);
}

#[tokio::test]
async fn a_token_limited_to_some_collections_plans_only_over_them() {
    let f = fixture();
    post(&f.engine, "doctor", "{\"doctor_id\": 1, \"v\": 1}\n").await;
    post(&f.engine, "slot", "{\"doctor_id\": 1, \"at\": \"9:00\"}\n").await;
    f.snapshots.snapshot_now("doctor", &|_| {}).await.unwrap();
    f.snapshots.snapshot_now("slot", &|_| {}).await.unwrap();
    let only_slot = vec!["slot".to_owned()];
    let allowed = f
        .snapshots
        .query_as("SELECT count(*) AS n FROM slot", None, Some(&only_slot))
        .await
        .unwrap();
    assert_eq!(allowed.rows, 1);
    for sql in [
        "SELECT * FROM doctor",
        "SELECT s.* FROM slot s JOIN doctor d ON s.doctor_id = d.doctor_id",
        "SELECT * FROM (SELECT key FROM doctor) t",
        "SELECT * FROM slot WHERE doctor_id IN (SELECT doctor_id FROM doctor)",
        "WITH d AS (SELECT * FROM doctor) SELECT * FROM d",
        "SELECT * FROM public.doctor",
    ] {
        match f.snapshots.query_as(sql, None, Some(&only_slot)).await {
            Err(SnapshotError::Forbidden(message)) => {
                assert!(message.contains("doctor"), "{sql}: {message}")
            }
            Err(other) => panic!("{sql}: {other}"),
            Ok(_) => panic!("{sql} read doctor"),
        }
    }
    // Without a limit, both are there.
    assert_eq!(
        sql(&f.snapshots, "SELECT count(*) AS n FROM doctor").await,
        json!([{"n": 1}])
    );
}

/// The Arrow type of `column` in the Parquet files of `collection`'s latest snapshot, as
/// any other reader (DuckDB, Spark) sees it.
async fn file_column_type(f: &Fixture, collection: &str, column: &str) -> String {
    let manifest = f.snapshots.latest(collection).await.unwrap().unwrap();
    let file = &manifest.files[0];
    let path = f
        .store
        .join("snapshots")
        .join(collection)
        .join(&manifest.id)
        .join(&file.name);
    let builder =
        datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&path).unwrap(),
        )
        .unwrap();
    builder
        .schema()
        .field_with_name(column)
        .unwrap()
        .data_type()
        .to_string()
}

#[tokio::test]
async fn key_columns_are_integers_when_every_key_is_one_or_when_declared() {
    let f = fixture();
    post(
        &f.engine,
        "doctor",
        "{\"doctor_id\": 1, \"v\": 1}\n{\"doctor_id\": 2, \"v\": 1}\n",
    )
    .await;
    post(&f.engine, "slot", "{\"doctor_id\": 2, \"at\": \"09:00\"}\n").await;
    post(&f.engine, "plan", "{\"plan_id\": \"17\"}\n").await;
    for collection in ["doctor", "slot", "plan"] {
        f.snapshots.snapshot_now(collection, &|_| {}).await.unwrap();
    }
    assert_eq!(file_column_type(&f, "doctor", "doctor_id").await, "Int64");
    assert_eq!(file_column_type(&f, "slot", "doctor_id").await, "Int64");
    assert_eq!(file_column_type(&f, "slot", "at").await, "Utf8");
    // Declared text stays text, whatever the values look like.
    assert_eq!(file_column_type(&f, "plan", "plan_id").await, "Utf8");
    // Integer comparisons and arithmetic need no cast.
    assert_eq!(
        sql(
            &f.snapshots,
            "SELECT doctor_id + 1 AS n FROM doctor WHERE doctor_id = 2"
        )
        .await,
        json!([{"n": 3}])
    );
    // A text key arrives: the next snapshot's column is text again, the integer
    // snapshot it merges with is read back as text.
    post(&f.engine, "doctor", "{\"doctor_id\": \"x7\", \"v\": 1}\n").await;
    let manifest = f.snapshots.snapshot_now("doctor", &|_| {}).await.unwrap();
    assert_eq!(manifest.rows, 3);
    assert_eq!(file_column_type(&f, "doctor", "doctor_id").await, "Utf8");
    assert_eq!(
        sql(
            &f.snapshots,
            "SELECT doctor_id FROM doctor ORDER BY doctor_id"
        )
        .await,
        json!([{"doctor_id": "1"}, {"doctor_id": "2"}, {"doctor_id": "x7"}])
    );
}

#[tokio::test]
async fn a_key_of_the_wrong_declared_type_is_rejected() {
    let f = fixture();
    let inputs = f
        .engine
        .parse_body("plan", b"{\"plan_id\": 17}\n", BodyFormat::Ndjson)
        .unwrap()
        .unwrap();
    let results = f.engine.submit("plan", inputs).await.unwrap();
    let result = serde_json::to_value(&results).unwrap();
    assert_eq!(result[0]["status"], "rejected", "{result}");
    assert!(
        result[0]["error"]
            .as_str()
            .is_some_and(|reason| reason.contains("must be a string")),
        "{result}"
    );
}

#[tokio::test]
async fn a_crash_between_writing_and_committing_rewrites_the_same_segment() {
    let f = fixture();
    post(
        &f.engine,
        "doctor",
        "{\"doctor_id\": 1, \"v\": 1}\n{\"doctor_id\": 2, \"v\": 1}\n",
    )
    .await;
    {
        let mut archiver = archiver(&f);
        archiver.read_through(&f.engine.head()).await.unwrap();
        archiver.finish_segment().await.unwrap();
        // Dropped here: the objects are written, the cursor is not committed.
    }
    post(&f.engine, "doctor", "{\"doctor_id\": 3, \"v\": 1}\n").await;
    let mut archiver = archiver(&f);
    archiver.archive_through(&f.engine.head()).await.unwrap();
    let segments = f
        .snapshots
        .objects()
        .list(&f.snapshots.objects().segment_dir("doctor"))
        .await
        .unwrap();
    assert_eq!(
        segments.len(),
        1,
        "the retry rewrote the same object: {segments:?}"
    );
    drop(archiver);
    let manifest = f.snapshots.snapshot_now("doctor", &|_| {}).await.unwrap();
    assert_eq!(manifest.rows, 3);
}

#[tokio::test]
async fn an_object_store_failing_mid_segment_gets_the_whole_range_again_from_the_log() {
    let f = fixture();
    // Three consumer pages: the records were streamed into the segment before it fails.
    let body: String = (0..2_500)
        .map(|id| format!("{{\"doctor_id\": {id}, \"v\": 1}}\n"))
        .collect();
    post(&f.engine, "doctor", &body).await;
    let oldest = f.engine.oldest();
    // A file where the collection's segment directory belongs: the store cannot write.
    let blocked = f.store.join("segments/doctor");
    std::fs::create_dir_all(f.store.join("segments")).unwrap();
    std::fs::write(&blocked, b"not a directory").unwrap();
    let mut archiver = archiver(&f);
    let failed = archiver.archive_through(&f.engine.head()).await;
    assert!(matches!(failed, Err(SnapshotError::Store(_))), "{failed:?}");
    assert_eq!(archiver.committed(), &oldest, "nothing is committed");
    // The store is back: the same archiver reads the range again from the change log
    // (its consumer rewound; without that it would wait for records that never come).
    std::fs::remove_file(&blocked).unwrap();
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        archiver.archive_through(&f.engine.head()),
    )
    .await
    .expect("the retry finished")
    .unwrap();
    assert_eq!(archiver.committed(), &f.engine.head());
    let segments = f
        .snapshots
        .objects()
        .list(&f.snapshots.objects().segment_dir("doctor"))
        .await
        .unwrap();
    assert_eq!(segments.len(), 1, "{segments:?}");
    drop(archiver);
    let manifest = f.snapshots.snapshot_now("doctor", &|_| {}).await.unwrap();
    assert_eq!(manifest.rows, 2_500);
}

#[tokio::test]
async fn corrupt_files_are_named_and_never_replace_a_good_snapshot() {
    let f = fixture();
    post(&f.engine, "doctor", "{\"doctor_id\": 1, \"v\": 1}\n").await;
    let good = f.snapshots.snapshot_now("doctor", &|_| {}).await.unwrap();
    // A truncated segment: compaction fails, naming it, and LATEST stays.
    post(&f.engine, "doctor", "{\"doctor_id\": 2, \"v\": 1}\n").await;
    archiver(&f)
        .archive_through(&f.engine.head())
        .await
        .unwrap();
    let segment_dir = f.store.join("segments/doctor");
    let segment = std::fs::read_dir(&segment_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let bytes = std::fs::read(&segment).unwrap();
    std::fs::write(&segment, &bytes[..bytes.len() / 2]).unwrap();
    let error = f
        .snapshots
        .compact("doctor", &|_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(segment.file_name().unwrap().to_str().unwrap()),
        "{error}"
    );
    assert_eq!(
        f.snapshots.latest("doctor").await.unwrap().unwrap().id,
        good.id
    );
    std::fs::write(&segment, &bytes).unwrap();
    let next = f.snapshots.compact("doctor", &|_| {}).await.unwrap();
    assert_eq!(next.rows, 2);
    // A truncated snapshot file and a broken manifest are reported with their names.
    let part = f
        .store
        .join("snapshots/doctor")
        .join(&next.id)
        .join(&next.files[0].name);
    let bytes = std::fs::read(&part).unwrap();
    std::fs::write(&part, &bytes[..bytes.len() - 10]).unwrap();
    let error = f
        .snapshots
        .query("SELECT count(*) FROM doctor", None)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains(&next.files[0].name), "{error}");
    std::fs::write(&part, &bytes).unwrap();
    let manifest = f
        .store
        .join("snapshots/doctor")
        .join(&next.id)
        .join("manifest.json");
    std::fs::write(&manifest, b"{\"id\": ").unwrap();
    let error = f.snapshots.latest("doctor").await.unwrap_err().to_string();
    assert!(error.contains("manifest.json"), "{error}");
}

#[tokio::test]
async fn restore_rebuilds_an_empty_data_directory() {
    let f = fixture();
    let lines: String = (0..40)
        .map(|id| format!("{{\"doctor_id\": {id}, \"v\": 1, \"specialty\": \"s{}\", \"nested\": {{\"a\": [1, {id}]}}}}\n", id % 3))
        .collect();
    post(&f.engine, "doctor", &lines).await;
    post(
        &f.engine,
        "slot",
        "{\"doctor_id\": 1, \"at\": \"09:00\", \"free\": true}\n",
    )
    .await;
    f.snapshots.snapshot_now("doctor", &|_| {}).await.unwrap();
    f.snapshots.snapshot_now("slot", &|_| {}).await.unwrap();
    // Changes after the snapshot are restored from the segments.
    post(
        &f.engine,
        "doctor",
        "{\"doctor_id\": 5, \"v\": 2, \"specialty\": null}\n",
    )
    .await;
    archiver(&f)
        .archive_through(&f.engine.head())
        .await
        .unwrap();

    let data = tempfile::tempdir().unwrap();
    let engine = Engine::open(&config(&f.store), data.path()).unwrap();
    let snapshots = Snapshots::open(&engine, data.path()).unwrap();
    let report = snapshots.restore(&|_, _| {}).await.unwrap();
    assert_eq!(report[0].documents, 40);
    assert_eq!(report[0].segments, 1);
    assert_eq!(live(&engine, "doctor"), live(&f.engine, "doctor"));
    assert_eq!(live(&engine, "slot"), live(&f.engine, "slot"));
    let again = snapshots.restore(&|_, _| {}).await.unwrap_err();
    assert!(matches!(again, SnapshotError::NotEmpty(_)), "{again}");
}

/// One step of a random history.
#[derive(Clone, Debug)]
enum Step {
    Upsert {
        id: u8,
        version: u8,
        field: u8,
        value: Option<u8>,
    },
    Delete {
        id: u8,
    },
    Snapshot,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0u8..12, 1u8..6, 0u8..3, proptest::option::of(0u8..4))
            .prop_map(|(id, version, field, value)| Step::Upsert { id, version, field, value }),
        1 => (0u8..12).prop_map(|id| Step::Delete { id }),
        1 => Just(Step::Snapshot),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// For random histories (upserts out of order, removals, deletes, snapshots between
    /// them), the snapshot equals the live documents at its cursor.
    #[test]
    fn snapshot_equals_the_live_documents(steps in proptest::collection::vec(step(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async {
            let f = fixture();
            for step in steps.iter().chain([Step::Snapshot].iter()) {
                match step {
                    Step::Upsert { id, version, field, value } => {
                        let value = value.map_or(Value::Null, Value::from);
                        let event = json!({"doctor_id": id, "v": version, format!("f{field}"): value});
                        post(&f.engine, "doctor", &format!("{event}\n")).await;
                    }
                    Step::Delete { id } => {
                        let key = sluice_core::Key::from_segments(&[&id.to_string()], 1).unwrap();
                        f.engine.submit("doctor", vec![sluice_engine::Input::Delete { key, version: None }]).await.unwrap();
                    }
                    Step::Snapshot => {
                        let manifest = f.snapshots.snapshot_now("doctor", &|_| {}).await.unwrap();
                        prop_assert_eq!(&manifest.cursor, &f.engine.head().to_string());
                        let rows = sql(&f.snapshots, "SELECT key, doc FROM doctor").await;
                        let from_snapshot: BTreeMap<String, Value> = rows
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|row| (row["key"].as_str().unwrap().to_owned(), serde_json::from_str(row["doc"].as_str().unwrap()).unwrap()))
                            .collect();
                        prop_assert_eq!(from_snapshot, live(&f.engine, "doctor"));
                    }
                }
            }
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn a_segment_left_behind_by_a_stopped_compaction_does_not_duplicate_keys() {
    let f = fixture();
    post(
        &f.engine,
        "doctor",
        "{\"doctor_id\": 1, \"v\": 1}\n{\"doctor_id\": 2, \"v\": 1}\n{\"doctor_id\": 3, \"v\": 1}\n",
    )
    .await;
    archiver(&f)
        .archive_through(&f.engine.head())
        .await
        .unwrap();
    let segment_dir = f.store.join("segments/doctor");
    let kept: Vec<(std::path::PathBuf, Vec<u8>)> = std::fs::read_dir(&segment_dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    assert!(!kept.is_empty());
    let first = f.snapshots.snapshot_now("doctor", &|_| {}).await.unwrap();
    assert_eq!(first.rows, 3);
    // The compaction stopped after switching LATEST and before deleting its segments:
    // they are listed again, and every row in them is in the snapshot too.
    for (path, bytes) in &kept {
        std::fs::write(path, bytes).unwrap();
    }
    post(
        &f.engine,
        "doctor",
        "{\"doctor_id\": 2, \"v\": 2, \"name\": \"Bo\"}\n",
    )
    .await;
    let second = f.snapshots.snapshot_now("doctor", &|_| {}).await.unwrap();
    assert_eq!(second.rows, 3, "each key once");
    assert_eq!(
        sql(
            &f.snapshots,
            "SELECT doctor_id, version FROM doctor ORDER BY doctor_id"
        )
        .await,
        json!([
            {"doctor_id": 1, "version": 1},
            {"doctor_id": 2, "version": 2},
            {"doctor_id": 3, "version": 1}
        ])
    );
}
