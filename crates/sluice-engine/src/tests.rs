use super::*;
use serde_json::{Value, json};
use sluice_core::ChangeRecord;

fn config(ordering: &str, partitions: u16) -> Config {
    Config::from_toml(&format!(
        r#"
[engine]
partitions = {partitions}
[[collections]]
name = "doctor"
key = ["/id"]
version = "/v"
ordering = "{ordering}"
"#
    ))
    .unwrap()
}

async fn post(engine: &Engine, ndjson: &str) -> Vec<Status> {
    crate::test_support::submit_ndjson(engine, "doctor", ndjson)
        .await
        .into_iter()
        .map(|result| result.status)
        .collect()
}

fn doc(engine: &Engine, id: &str) -> Option<Value> {
    let key = Key::from_segments(&[id], 1).unwrap();
    engine
        .get("doctor", &key)
        .unwrap()
        .map(|stored| serde_json::from_slice(&stored.doc).unwrap())
}

async fn all_changes(engine: &Engine) -> Vec<ChangeRecord> {
    let start = Cursor::start(usize::from(engine.partitions()));
    let page = engine.changes(start, 10_000, Duration::ZERO).await.unwrap();
    page.records
        .iter()
        .map(|record| serde_json::from_slice(record).unwrap())
        .collect()
}

#[tokio::test]
async fn applies_merges_and_reports_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(&config("field", 2), dir.path()).unwrap();
    let statuses = post(
        &engine,
        r#"{"id": 1, "v": 2, "city": "Oslo"}
{"id": 1, "v": 1, "city": "Rome", "name": "Ana"}
{"id": 1, "v": 2, "city": "Oslo"}
{"no_id": 1}
{"id": 2, "v": "2026-01-01T00:00:00Z"}"#,
    )
    .await;
    use Status::*;
    assert_eq!(statuses, vec![Applied, Applied, Noop, Rejected, Applied]);
    assert_eq!(
        doc(&engine, "1"),
        Some(json!({"id": 1, "v": 2, "city": "Oslo", "name": "Ana"}))
    );
    let statuses = post(&engine, r#"{"id": 2, "v": 3}"#).await;
    assert_eq!(statuses, vec![Rejected], "mixed version types");
    let stats = engine.stats("doctor").unwrap();
    assert_eq!(
        (
            stats.applied,
            stats.noop,
            stats.stale,
            stats.rejected,
            stats.documents
        ),
        (3, 1, 0, 2, 2)
    );
    let rejected = engine.rejected("doctor", 0, 10).unwrap();
    assert_eq!(rejected.len(), 2);
    let first: Value = serde_json::from_slice(&rejected[0]).unwrap();
    assert_eq!(first["origin"], "line 4");
    assert!(
        first["reason"]
            .as_str()
            .unwrap()
            .contains("key field /id is missing")
    );
    let changes = all_changes(&engine).await;
    assert_eq!(changes.len(), 3);
    assert!(
        changes
            .iter()
            .any(|change| change.changed == vec!["/name".to_owned()])
    );
}

#[tokio::test]
async fn recovers_everything_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(&config("document", 4), dir.path()).unwrap();
        let lines: String = (0..200)
            .map(|i| format!("{{\"id\": {}, \"v\": {i}, \"n\": {i}}}\n", i % 50))
            .collect();
        post(&engine, &lines).await;
        let key = Key::from_segments(&["7"], 1).unwrap();
        let deleted = engine
            .submit("doctor", vec![Input::Delete { key, version: None }])
            .await
            .unwrap();
        assert_eq!(deleted[0].status, Status::Applied);
    }
    let engine = Engine::open(&config("document", 4), dir.path()).unwrap();
    assert_eq!(doc(&engine, "7"), None);
    assert_eq!(doc(&engine, "8").unwrap()["n"], json!(158));
    let stats = engine.stats("doctor").unwrap();
    assert_eq!(stats.applied, 201);
    assert_eq!(stats.documents, 49);
    let changes = all_changes(&engine).await;
    assert_eq!(changes.len(), 201);
    // Cursors are strictly increasing per partition and resume exactly.
    let middle = engine.parse_cursor(&changes[100].cursor).unwrap();
    let rest = engine
        .changes(middle, 10_000, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(rest.records.len(), 100);
    assert_eq!(rest.next, engine.head());
    // New writes continue the offsets.
    post(&engine, r#"{"id": 1000, "v": 1}"#).await;
    assert_eq!(all_changes(&engine).await.len(), 202);
    let (page, next) = engine.list("doctor", None, 10).unwrap();
    assert_eq!(page.len(), 10);
    let (rest, end) = engine.list("doctor", next.as_deref(), 1000).unwrap();
    assert_eq!(page.len() + rest.len(), 50);
    assert_eq!(end, None);
}

#[tokio::test]
async fn long_poll_wakes_on_new_changes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(&config("field", 2), dir.path()).unwrap();
    let head = engine.head();
    let waiter = {
        let engine = engine.clone();
        tokio::spawn(async move {
            engine
                .changes(head, 10, Duration::from_secs(30))
                .await
                .unwrap()
        })
    };
    post(&engine, r#"{"id": 5, "v": 1}"#).await;
    let page = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page.records.len(), 1);
    let empty = engine
        .changes(page.next, 10, Duration::from_millis(20))
        .await
        .unwrap();
    assert!(empty.records.is_empty());
}

#[tokio::test]
async fn rejected_log_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config("field", 1);
    config.limits.rejected_kept_max = 3;
    let engine = Engine::open(&config, dir.path()).unwrap();
    for _ in 0..5 {
        post(&engine, r#"{"v": 1}"#).await;
    }
    let kept = engine.rejected("doctor", 0, 100).unwrap();
    let seqs: Vec<u64> = kept
        .iter()
        .map(|bytes| {
            serde_json::from_slice::<Value>(bytes).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, vec![3, 4, 5]);
    assert_eq!(engine.stats("doctor").unwrap().rejected, 5);
}

#[test]
fn hex_round_trip() {
    assert_eq!(
        decode_hex(&encode_hex(b"\x00ab\xff")).unwrap(),
        b"\x00ab\xff"
    );
    assert_eq!(decode_hex("abc"), None);
    assert_eq!(decode_hex("zz"), None);
}

#[tokio::test]
async fn cloudevent_ids_drop_redeliveries_without_versions() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml(
        "[engine]\npartitions = 2\nseen_ids_per_document_max = 2\n[[collections]]\nname = \"plan\"\nkey = [\"/id\"]\n",
    )
    .unwrap();
    let ce = |id: &str, name: &str| {
        format!(
            r#"{{"specversion":"1.0","id":"{id}","source":"/t","type":"t","data":{{"id":1,"name":"{name}"}}}}"#
        ) + "\n"
    };
    let statuses = |results: Vec<ItemResult>| -> Vec<Status> {
        results.into_iter().map(|result| result.status).collect()
    };
    use Status::*;
    {
        let engine = Engine::open(&config, dir.path()).unwrap();
        let first = ce("a", "Ana") + &ce("b", "Bo") + &ce("a", "Ana");
        let results = crate::test_support::submit_ndjson(&engine, "plan", &first).await;
        // The redelivered "a" would bring back "Ana" over "Bo" without its id.
        assert_eq!(statuses(results), vec![Applied, Applied, Noop]);
    }
    let engine = Engine::open(&config, dir.path()).unwrap();
    let again = crate::test_support::submit_ndjson(&engine, "plan", &ce("b", "Bo")).await;
    assert_eq!(statuses(again), vec![Noop], "seen ids survive a restart");
    let key = Key::from_segments(&["1"], 1).unwrap();
    let stored = engine.get("plan", &key).unwrap().unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&stored.doc).unwrap()["name"],
        "Bo"
    );
    // Only the last two ids are kept: "a" fell out once "c" and "b" were newer.
    let later = ce("c", "Cy") + &ce("a", "Ana");
    let results = crate::test_support::submit_ndjson(&engine, "plan", &later).await;
    assert_eq!(statuses(results), vec![Applied, Applied]);
    assert_eq!(engine.stats("plan").unwrap().noop, 2);
}

#[tokio::test]
async fn cloudevents_with_versions_are_idempotent_by_version() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(&config("document", 1), dir.path()).unwrap();
    let ce =
        r#"{"specversion":"1.0","id":"x","source":"/t","type":"t","data":{"id":1,"v":3,"a":1}}"#;
    let statuses = post(&engine, &format!("{ce}\n{ce}\n")).await;
    assert_eq!(statuses, vec![Status::Applied, Status::Stale]);
    let doc = doc(&engine, "1").unwrap();
    assert_eq!(
        doc,
        json!({"id": 1, "v": 3, "a": 1}),
        "the envelope is not stored"
    );
}

/// The writers' document caches report what they hold: rewriting one key many times
/// keeps one entry, so the gauge must stay at about one entry's size (it once counted
/// every replaced key again and grew without bound, which also emptied the cache early).
#[tokio::test]
async fn memory_metrics_report_doc_caches_without_drift() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(&config("field", 1), dir.path()).unwrap();
    let doc_cache_bytes = |engine: &Engine| -> u64 {
        let metrics = engine.render_metrics();
        let line = metrics
            .lines()
            .find(|line| line.starts_with("sluice_memory_bytes{owner=\"writer_doc_caches\"}"))
            .expect("doc cache gauge");
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    post(
        &engine,
        r#"{"id": "doctor-with-a-long-key", "v": 0, "n": 0}"#,
    )
    .await;
    let one_entry = doc_cache_bytes(&engine);
    assert!(one_entry > 0, "one cached document");
    for v in 1..=500 {
        post(
            &engine,
            &format!(r#"{{"id": "doctor-with-a-long-key", "v": {v}, "n": {v}}}"#),
        )
        .await;
    }
    let after = doc_cache_bytes(&engine);
    assert!(
        after <= one_entry + 16,
        "one key rewritten 500 times: {after} bytes cached, one entry is {one_entry}"
    );
    let metrics = engine.render_metrics();
    for owner in ["store_write_buffers", "store_block_cache"] {
        assert!(
            metrics.contains(&format!("sluice_memory_bytes{{owner=\"{owner}\"}}")),
            "{owner} gauge in {metrics}"
        );
    }
    #[cfg(target_os = "linux")]
    assert!(metrics.contains("process_resident_memory_bytes "));
}
