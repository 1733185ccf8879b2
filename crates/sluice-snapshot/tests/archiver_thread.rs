//! The running archiver is a thread of its own at the configured CPU priority, takes
//! on-demand requests there, and ends with `Running::stop`. A file of its own, so that
//! its process holds no other test's archiver.
#![allow(clippy::unwrap_used)]

use sluice_core::Config;
use sluice_engine::{BodyFormat, Engine};
use sluice_snapshot::Snapshots;
use std::time::{Duration, Instant};

const THREAD_NAME: &str = "sluice-archiver";

/// The nice value of each thread of this process named `name` (field 19 of
/// `/proc/self/task/*/stat`, counted after the parenthesized name).
fn nice_of_threads_named(name: &str) -> Vec<i64> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| {
            let path = task.ok()?.path();
            let comm = std::fs::read_to_string(path.join("comm")).ok()?;
            if comm.trim_end() != name {
                return None;
            }
            let stat = std::fs::read_to_string(path.join("stat")).ok()?;
            let after_name = &stat[stat.rfind(')')? + 2..];
            // Fields from the 3rd on: state is the 3rd, nice the 19th.
            after_name.split(' ').nth(19 - 3)?.parse().ok()
        })
        .collect()
}

#[tokio::test]
async fn the_archiver_runs_on_a_thread_of_its_own_at_its_priority() {
    if !std::path::Path::new("/proc/self/task").exists() {
        eprintln!("skipped: needs /proc/self/task (Linux) to see the process's threads");
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let config = Config::from_toml(
        r#"
[snapshots]
store = "objects"
compact_interval_s = 0
archiver_nice = 7
[[collections]]
name = "doctor"
key = ["/doctor_id"]
"#,
    )
    .unwrap();
    let engine = Engine::open(&config, data.path()).unwrap();
    let snapshots = Snapshots::open(&engine, data.path()).unwrap();
    let running = snapshots.start().unwrap();
    // The thread lowers its own priority as it starts.
    let deadline = Instant::now() + Duration::from_secs(10);
    while nice_of_threads_named(THREAD_NAME) != [7] {
        assert!(
            Instant::now() < deadline,
            "archiver threads and their nice values: {:?}",
            nice_of_threads_named(THREAD_NAME)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let inputs = engine
        .parse_body(
            "doctor",
            b"{\"doctor_id\": 1}\n{\"doctor_id\": 2}\n",
            BodyFormat::Ndjson,
        )
        .unwrap()
        .unwrap();
    engine.submit("doctor", inputs).await.unwrap();
    // On demand, through the running archiver.
    let manifest = snapshots.snapshot_now("doctor", &|_| {}).await.unwrap();
    assert_eq!(manifest.rows, 2);
    running.stop().await;
    assert!(
        nice_of_threads_named(THREAD_NAME).is_empty(),
        "the archiver thread outlived stop"
    );
}
