//! A compaction runs on threads of its own, gone when it returns (their heaps with
//! them), and runs to its end even when its caller stops waiting. A file of its own, so
//! that its process counts no other test's compaction threads.
#![allow(clippy::unwrap_used)]

use sluice_core::Config;
use sluice_engine::{BodyFormat, Engine};
use sluice_snapshot::{Format, Snapshots};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

const THREAD_NAME: &str = "sluice-compact";

/// Threads of this process whose name is `name` (Linux: `/proc/self/task/*/comm`).
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == name)
        .count()
}

async fn post_doctors(engine: &Engine, ids: std::ops::Range<u32>) {
    let ids: Vec<u32> = ids.collect();
    for chunk in ids.chunks(1_000) {
        let ndjson: String = chunk
            .iter()
            .map(|id| format!("{{\"doctor_id\": {id}, \"v\": 1, \"specialty\": \"cardiology\"}}\n"))
            .collect();
        let inputs = engine
            .parse_body("doctor", ndjson.as_bytes(), BodyFormat::Ndjson)
            .unwrap()
            .unwrap();
        engine.submit("doctor", inputs).await.unwrap();
    }
}

async fn count(snapshots: &Snapshots) -> String {
    let result = snapshots
        .query("SELECT count(*) AS n FROM doctor", None)
        .await
        .unwrap();
    String::from_utf8(result.render(Format::Json).unwrap()).unwrap()
}

#[tokio::test]
async fn a_compaction_runs_on_threads_of_its_own_that_end_with_it() {
    if !std::path::Path::new("/proc/self/task").exists() {
        eprintln!("skipped: needs /proc/self/task (Linux) to see the process's threads");
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let config = Config::from_toml(
        r#"
[engine]
partitions = 2
[snapshots]
store = "objects"
compact_interval_s = 0
[[collections]]
name = "doctor"
key = ["/doctor_id"]
version = "/v"
columns = { specialty = "string" }
"#,
    )
    .unwrap();
    let engine = Engine::open(&config, data.path()).unwrap();
    let snapshots = Snapshots::open(&engine, data.path()).unwrap();
    // Enough rows that the compaction is still running when its first step is reported.
    post_doctors(&engine, 0..20_000).await;

    let seen_during = AtomicUsize::new(0);
    let manifest = snapshots
        .snapshot_now("doctor", &|_| {
            seen_during.fetch_max(threads_named(THREAD_NAME), Ordering::Relaxed);
        })
        .await
        .unwrap();
    assert_eq!(manifest.rows, 20_000);
    assert!(
        seen_during.load(Ordering::Relaxed) >= 2,
        "the compaction reported progress while {} {THREAD_NAME} threads ran; it runs on \
         its own thread and its runtime's",
        seen_during.load(Ordering::Relaxed)
    );
    assert_eq!(
        threads_named(THREAD_NAME),
        0,
        "left behind by the compaction"
    );

    // The caller stops waiting once the compaction has started: it goes on, and the next
    // compaction waits for it rather than writing the same snapshot beside it.
    post_doctors(&engine, 20_000..21_000).await;
    let (started, has_started) = tokio::sync::oneshot::channel();
    let started = Mutex::new(Some(started));
    let abandoned = tokio::spawn({
        let snapshots = snapshots.clone();
        async move {
            snapshots
                .snapshot_now("doctor", &move |_| {
                    if let Some(started) = started.lock().unwrap().take() {
                        let _ = started.send(());
                    }
                })
                .await
        }
    });
    has_started.await.unwrap();
    abandoned.abort();
    let next = snapshots.compact("doctor", &|_| {}).await.unwrap();
    assert_eq!(next.rows, 21_000);
    assert_eq!(
        next.id,
        snapshots.latest("doctor").await.unwrap().unwrap().id
    );
    assert!(
        count(&snapshots).await.contains("21000"),
        "{}",
        count(&snapshots).await
    );
    assert_eq!(
        threads_named(THREAD_NAME),
        0,
        "left behind by the compactions"
    );
}
