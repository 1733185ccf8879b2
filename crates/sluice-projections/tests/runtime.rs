//! The projection runtime on a real engine: entries follow their source documents and
//! everything they read, owners keep their keys, failing calls become projection errors
//! while the rest flows, reloads switch versions without readers noticing, restarts
//! resume, and random histories end where a recomputation from scratch ends.

// Helpers outside `#[test]` functions may unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use serde_json::{Value, json};
use sluice_core::Config;
use sluice_engine::{Engine, input};
use sluice_projections::Runtime;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn config(script: &str) -> String {
    format!(
        r#"
[engine]
partitions = 3
[[collections]]
name = "doctor"
key = ["/doctor_id"]
[[collections]]
name = "location"
key = ["/location_id"]
[[collections]]
name = "insurance_plan"
key = ["/plan_id"]
[[projections]]
name = "profile"
source = "doctor"
script = "{script}"
call_time_ms_max = 200
"#
    )
}

const PROFILE: &str = include_str!("../../../examples/healthcare/projections/doctor_profile.js");

struct Setup {
    dir: tempfile::TempDir,
    engine: Engine,
    runtime: Arc<Runtime>,
}

impl Setup {
    fn script_path(&self) -> std::path::PathBuf {
        self.dir.path().join("profile.js")
    }
}

fn open(dir: &Path) -> (Engine, Arc<Runtime>) {
    let text = config("profile.js");
    let config = Config::from_toml(&text).unwrap();
    let engine = Engine::open(&config, &dir.join("data")).unwrap();
    let runtime = Runtime::start(engine.clone(), dir).unwrap();
    (engine, runtime)
}

fn setup(script: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("profile.js"), script).unwrap();
    let (engine, runtime) = open(dir.path());
    Setup {
        dir,
        engine,
        runtime,
    }
}

async fn post(engine: &Engine, collection: &str, events: &[Value]) {
    let lines: String = events.iter().map(|event| format!("{event}\n")).collect();
    let spec = engine.collection(collection).unwrap();
    let inputs = input::parse_lines_lenient(spec, &lines, 1, engine.event_limits());
    let queued = engine.submit(collection, inputs).await.unwrap();
    for result in queued {
        assert_ne!(result.status, sluice_engine::Status::Rejected, "{result:?}");
    }
}

async fn caught_up(setup: &Setup) {
    assert!(
        setup.runtime.wait_caught_up("profile", WAIT).await.unwrap(),
        "the projection did not catch up: {:?}",
        setup.runtime.status("profile")
    );
}

fn entry(setup: &Setup, key: &str) -> Option<Value> {
    setup
        .runtime
        .get("profile", key)
        .unwrap()
        .map(|text| serde_json::from_str(&text).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_follow_doctors_and_everything_they_read() {
    let setup = setup(PROFILE);
    post(
        &setup.engine,
        "location",
        &[
            json!({"location_id": 1, "name": "Chicago Hope", "city": "Chicago"}),
            json!({"location_id": 2, "name": "Mercy", "city": "Boston"}),
        ],
    )
    .await;
    post(
        &setup.engine,
        "insurance_plan",
        &[json!({"plan_id": 7, "name": "Gold"})],
    )
    .await;
    let doctors: Vec<Value> = (0..50)
        .map(|id| json!({"doctor_id": id, "name": format!("d{id}"), "location_ids": [1, id % 2 + 1, 3], "plan_ids": [7]}))
        .collect();
    post(&setup.engine, "doctor", &doctors).await;
    caught_up(&setup).await;
    assert_eq!(
        entry(&setup, "4").unwrap(),
        json!({"name": "d4", "locations": [
            {"id": 1, "name": "Chicago Hope", "city": "Chicago"},
            {"id": 1, "name": "Chicago Hope", "city": "Chicago"}],
            "plans": [{"id": 7, "name": "Gold"}]})
    );
    // A rename of a location reaches every profile that shows it, and only those.
    let reruns_before = setup.runtime.status("profile").unwrap().reruns;
    post(
        &setup.engine,
        "location",
        &[json!({"location_id": 2, "name": "Mercy General"})],
    )
    .await;
    caught_up(&setup).await;
    for id in 0..50 {
        let profile = entry(&setup, &id.to_string()).unwrap();
        let names: Vec<&str> = profile["locations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|location| location["name"].as_str().unwrap())
            .collect();
        let expected = if id % 2 == 1 {
            vec!["Chicago Hope", "Mercy General"]
        } else {
            vec!["Chicago Hope", "Chicago Hope"]
        };
        assert_eq!(names, expected, "doctor {id}");
    }
    let reruns = setup.runtime.status("profile").unwrap().reruns - reruns_before;
    assert_eq!(reruns, 25, "only the doctors that read location 2 re-run");
    // A location that was looked up and missing appears: its readers re-run.
    post(
        &setup.engine,
        "location",
        &[json!({"location_id": 3, "name": "St. Eligius", "city": "Boston"})],
    )
    .await;
    caught_up(&setup).await;
    assert_eq!(
        entry(&setup, "10").unwrap()["locations"][2]["name"],
        "St. Eligius"
    );
    // A deleted lookup disappears from its readers; a deleted doctor loses its entry.
    setup
        .engine
        .submit(
            "insurance_plan",
            vec![delete(&setup.engine, "insurance_plan", "7")],
        )
        .await
        .unwrap();
    setup
        .engine
        .submit("doctor", vec![delete(&setup.engine, "doctor", "5")])
        .await
        .unwrap();
    caught_up(&setup).await;
    assert_eq!(entry(&setup, "4").unwrap()["plans"], json!([]));
    assert_eq!(entry(&setup, "5"), None);
    let status = setup.runtime.status("profile").unwrap();
    let version = status.version.unwrap();
    assert_eq!(
        (status.status.as_str(), version.entries, version.errors),
        ("live", 49, 0)
    );
    setup.runtime.shutdown();
}

fn delete(engine: &Engine, collection: &str, key: &str) -> sluice_engine::Input {
    let spec = engine.collection(collection).unwrap();
    let key = sluice_core::Key::from_segments(&[key], spec.key.len()).unwrap();
    sluice_engine::Input::Delete { key, version: None }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_keep_their_keys_and_drop_the_ones_they_no_longer_produce() {
    // Entries keyed by a field of the doctor: changing it moves the entry.
    let setup = setup(
        "export default function (d) { return d.slug == null ? null : {key: d.slug, value: {id: d.doctor_id}}; }",
    );
    post(
        &setup.engine,
        "doctor",
        &[
            json!({"doctor_id": 1, "slug": "kate"}),
            json!({"doctor_id": 2, "slug": "jack"}),
        ],
    )
    .await;
    caught_up(&setup).await;
    post(
        &setup.engine,
        "doctor",
        &[json!({"doctor_id": 1, "slug": "kate-austen"})],
    )
    .await;
    caught_up(&setup).await;
    assert_eq!(entry(&setup, "kate"), None);
    assert_eq!(entry(&setup, "kate-austen").unwrap(), json!({"id": 1}));
    // Two sources, one key: the first owner keeps it, the second has an error naming both.
    post(
        &setup.engine,
        "doctor",
        &[json!({"doctor_id": 3, "slug": "jack"})],
    )
    .await;
    caught_up(&setup).await;
    assert_eq!(entry(&setup, "jack").unwrap(), json!({"id": 2}));
    let (errors, _) = setup.runtime.errors("profile", None, 10).unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].key, json!(3));
    assert!(
        errors[0].error.contains("\"2\"") && errors[0].error.contains("\"3\""),
        "{}",
        errors[0].error
    );
    // The first owner lets go; the second gets it when it runs again.
    post(
        &setup.engine,
        "doctor",
        &[json!({"doctor_id": 2, "slug": null})],
    )
    .await;
    caught_up(&setup).await;
    assert_eq!(entry(&setup, "jack"), None);
    post(
        &setup.engine,
        "doctor",
        &[json!({"doctor_id": 3, "note": "again"})],
    )
    .await;
    caught_up(&setup).await;
    assert_eq!(entry(&setup, "jack").unwrap(), json!({"id": 3}));
    assert!(
        setup
            .runtime
            .errors("profile", None, 10)
            .unwrap()
            .0
            .is_empty()
    );
    setup.runtime.shutdown();
}

const FAILING: &str = r#"
export default function (d) {
  if (d.mode === "throw") throw new Error("no profile for " + d.doctor_id);
  if (d.mode === "loop") { for (;;) {} }
  if (d.mode === "recurse") { const f = (n) => f(n + 1) + 1; return f(0); }
  if (d.mode === "allocate") { const a = []; for (;;) a.push(new Array(1e5).fill(1)); }
  if (d.mode === "shape") return {value: 1};
  return {key: d.doctor_id, value: {v: 1, mode: d.mode ?? null}};
}
"#;

const FIXED: &str = r#"
export default function (d) {
  return {key: d.doctor_id, value: {v: 2, mode: d.mode ?? null}};
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_calls_are_errors_the_rest_flows_and_a_fix_reruns_them() {
    let setup = setup(FAILING);
    let modes = ["throw", "loop", "recurse", "allocate", "shape"];
    let mut doctors: Vec<Value> = modes
        .iter()
        .enumerate()
        .map(|(id, mode)| json!({"doctor_id": id, "mode": mode}))
        .collect();
    doctors.extend((10..30).map(|id| json!({"doctor_id": id})));
    post(&setup.engine, "doctor", &doctors).await;
    caught_up(&setup).await;
    for id in 10..30 {
        assert_eq!(entry(&setup, &id.to_string()).unwrap()["v"], 1);
    }
    let (errors, _) = setup.runtime.errors("profile", None, 100).unwrap();
    let mut by_key: BTreeMap<u64, String> = errors
        .iter()
        .map(|error| (error.key.as_u64().unwrap(), error.error.clone()))
        .collect();
    assert_eq!(by_key.len(), modes.len(), "{by_key:?}");
    assert!(by_key[&0].contains("no profile for 0"), "{}", by_key[&0]);
    assert!(by_key[&1].contains("longer than 200 ms"), "{}", by_key[&1]);
    assert!(by_key[&2].contains("stack"), "{}", by_key[&2]);
    assert!(by_key[&3].contains("memory"), "{}", by_key[&3]);
    assert!(by_key[&4].contains("key"), "{}", by_key[&4]);
    let status = setup.runtime.status("profile").unwrap();
    assert_eq!(status.version.as_ref().unwrap().errors, 5);
    assert!(status.errors_total >= 5);
    let mut metrics = String::new();
    setup.runtime.render_metrics(&mut metrics);
    assert!(
        metrics.contains("sluice_projection_errors_total{projection=\"profile\"}"),
        "{metrics}"
    );
    // Fixing the script and reloading re-runs every document, the failed ones included.
    std::fs::write(setup.script_path(), FIXED).unwrap();
    let outcome = setup.runtime.reload("profile").await.unwrap();
    assert_eq!(outcome.outcome, "building");
    caught_up(&setup).await;
    for id in (0..5).chain(10..30) {
        assert_eq!(
            entry(&setup, &id.to_string()).unwrap()["v"],
            2,
            "doctor {id}"
        );
    }
    by_key.clear();
    assert!(
        setup
            .runtime
            .errors("profile", None, 100)
            .unwrap()
            .0
            .is_empty()
    );
    assert_eq!(
        setup.runtime.reload("profile").await.unwrap().outcome,
        "unchanged"
    );
    // A script that does not compile is refused, and nothing changes.
    std::fs::write(
        setup.script_path(),
        "export default function (d) { return {key: ; }",
    )
    .unwrap();
    let refused = setup
        .runtime
        .reload("profile")
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("profile.js:1"), "{refused}");
    assert_eq!(entry(&setup, "10").unwrap()["v"], 2);
    setup.runtime.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_one_version_or_the_other_throughout_a_reload() {
    let v1 =
        "export default function (d) { return {key: d.doctor_id, value: {v: 1, name: d.name}}; }";
    let v2 = "export default function (d) { return {key: d.doctor_id, value: {v: 2, upper: d.name.toUpperCase()}}; }";
    let setup = setup(v1);
    let doctors: Vec<Value> = (0..2_000)
        .map(|id| json!({"doctor_id": id, "name": format!("doctor {id}")}))
        .collect();
    post(&setup.engine, "doctor", &doctors).await;
    caught_up(&setup).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let runtime = Arc::clone(&setup.runtime);
        let stop = Arc::clone(&stop);
        tokio::task::spawn_blocking(move || {
            let mut reads = 0u64;
            let mut seen_v2 = false;
            let mut id = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                id = (id + 7) % 2_000;
                let key = id.to_string();
                let Some(text) = runtime.get("profile", &key).unwrap() else {
                    panic!("entry {key} missing during the reload (after {reads} reads)");
                };
                let value: Value = serde_json::from_str(&text).unwrap();
                let name = format!("doctor {id}");
                match value["v"].as_u64() {
                    Some(1) => assert_eq!(value, json!({"v": 1, "name": name})),
                    Some(2) => {
                        assert_eq!(value, json!({"v": 2, "upper": name.to_uppercase()}));
                        seen_v2 = true;
                    }
                    _ => panic!("mixed entry {value}"),
                }
                reads += 1;
            }
            (reads, seen_v2)
        })
    };
    std::fs::write(setup.script_path(), v2).unwrap();
    assert_eq!(
        setup.runtime.reload("profile").await.unwrap().outcome,
        "building"
    );
    // Writes keep coming during the build.
    for round in 0..5 {
        let updates: Vec<Value> = (0..100)
            .map(|id| json!({"doctor_id": id * 13 % 2_000, "name": format!("doctor {}", id * 13 % 2_000), "round": round}))
            .collect();
        post(&setup.engine, "doctor", &updates).await;
    }
    caught_up(&setup).await;
    // The reader must see the new version, then stop.
    loop {
        if setup
            .runtime
            .get("profile", "1999")
            .unwrap()
            .is_some_and(|text| text.contains("\"v\":2"))
        {
            break;
        }
        tokio::task::yield_now().await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reads, seen_v2) = reader.await.unwrap();
    assert!(reads > 0 && seen_v2, "{reads} reads");
    let status = setup.runtime.status("profile").unwrap();
    assert!(status.building.is_none());
    assert_eq!(status.version.unwrap().entries, 2_000);
    setup.runtime.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_and_a_changed_script_is_rebuilt_while_the_old_one_serves() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("profile.js"), PROFILE).unwrap();
    {
        let (engine, runtime) = open(dir.path());
        post(
            &engine,
            "location",
            &[json!({"location_id": 1, "name": "Hope"})],
        )
        .await;
        post(
            &engine,
            "doctor",
            &[json!({"doctor_id": 1, "location_id": 1})],
        )
        .await;
        assert!(runtime.wait_caught_up("profile", WAIT).await.unwrap());
        runtime.shutdown();
        // Changes while no runtime runs.
        post(
            &engine,
            "location",
            &[json!({"location_id": 1, "name": "Hope II"})],
        )
        .await;
    }
    let (engine, runtime) = open(dir.path());
    assert!(runtime.wait_caught_up("profile", WAIT).await.unwrap());
    let text = runtime.get("profile", "1").unwrap().unwrap();
    assert!(text.contains("Hope II"), "{text}");
    runtime.shutdown();
    drop(runtime);
    drop(engine);
    // A changed script at start: the old version serves until the new one is built.
    std::fs::write(
        dir.path().join("profile.js"),
        "export default function (d) { return {key: d.doctor_id, value: 'new'}; }",
    )
    .unwrap();
    let (_engine, runtime) = open(dir.path());
    let served = runtime.get("profile", "1").unwrap().unwrap();
    assert!(
        served.contains("Hope II") || served == "\"new\"",
        "{served}"
    );
    assert!(runtime.wait_caught_up("profile", WAIT).await.unwrap());
    assert_eq!(runtime.get("profile", "1").unwrap().unwrap(), "\"new\"");
    runtime.shutdown();
}

/// One step of a random history.
#[derive(Clone, Debug)]
enum Step {
    Doctor {
        id: u8,
        locations: Vec<u8>,
    },
    DeleteDoctor(u8),
    /// A location pointing to another location: lookups two deep.
    Location {
        id: u8,
        name: u8,
        parent: Option<u8>,
    },
    DeleteLocation(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..12u8, prop::collection::vec(0..6u8, 0..3)).prop_map(|(id, locations)| Step::Doctor { id, locations }),
        1 => (0..12u8).prop_map(Step::DeleteDoctor),
        3 => (0..6u8, 0..4u8, prop::option::of(0..6u8)).prop_map(|(id, name, parent)| Step::Location { id, name, parent }),
        1 => (0..6u8).prop_map(Step::DeleteLocation),
    ]
}

/// Two deep: each location and its parent location.
const DEEP: &str = r#"
export default function (d, ctx) {
  const locations = (d.location_ids ?? []).map((id) => {
    const l = ctx.get("location", id);
    if (!l) return null;
    const parent = l.parent == null ? null : ctx.get("location", l.parent);
    return {name: l.name, parent: parent ? parent.name : null};
  });
  return {key: d.doctor_id, value: locations};
}
"#;

/// What DEEP gives over the final documents, from scratch.
fn recompute(
    doctors: &BTreeMap<u8, Vec<u8>>,
    locations: &BTreeMap<u8, (u8, Option<u8>)>,
) -> BTreeMap<String, Value> {
    doctors
        .iter()
        .map(|(id, ids)| {
            let value: Vec<Value> = ids
                .iter()
                .map(|location| match locations.get(location) {
                    None => Value::Null,
                    Some((name, parent)) => {
                        let parent = parent
                            .and_then(|parent| locations.get(&parent))
                            .map(|(name, _)| json!(format!("n{name}")));
                        json!({"name": format!("n{name}"), "parent": parent.unwrap_or(Value::Null)})
                    }
                })
                .collect();
            (id.to_string(), Value::from(value))
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn random_histories_end_as_a_recomputation_from_scratch(history in prop::collection::vec(prop::collection::vec(step(), 1..8), 1..10)) {
        let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        tokio.block_on(async {
            let setup = setup(DEEP);
            let mut doctors = BTreeMap::new();
            let mut locations = BTreeMap::new();
            for (index, batch) in history.iter().enumerate() {
                for step in batch {
                    match step {
                        Step::Doctor { id, locations: ids } => {
                            doctors.insert(*id, ids.clone());
                            post(&setup.engine, "doctor", &[json!({"doctor_id": id, "location_ids": ids})]).await;
                        }
                        Step::DeleteDoctor(id) => {
                            doctors.remove(id);
                            setup.engine.submit("doctor", vec![delete(&setup.engine, "doctor", &id.to_string())]).await.unwrap();
                        }
                        Step::Location { id, name, parent } => {
                            locations.insert(*id, (*name, *parent));
                            // A whole document each time: `parent: null` removes the member.
                            post(&setup.engine, "location", &[json!({"location_id": id, "name": format!("n{name}"), "parent": parent})]).await;
                        }
                        Step::DeleteLocation(id) => {
                            locations.remove(id);
                            setup.engine.submit("location", vec![delete(&setup.engine, "location", &id.to_string())]).await.unwrap();
                        }
                    }
                }
                // Sometimes catch up in the middle, so that later steps re-run entries.
                if index % 3 == 1 {
                    caught_up(&setup).await;
                }
            }
            caught_up(&setup).await;
            let expected = recompute(&doctors, &locations);
            let mut actual = BTreeMap::new();
            for id in 0..12u8 {
                if let Some(value) = entry(&setup, &id.to_string()) {
                    actual.insert(id.to_string(), value);
                }
            }
            assert_eq!(actual, expected, "history {history:?}");
            let status = setup.runtime.status("profile").unwrap();
            assert_eq!(status.version.unwrap().entries, expected.len() as i64);
            setup.runtime.shutdown();
        });
    }
}

// ---------------------------------------------------------------------------------------
// The Redis target, against the real Redis (`SLUICE_TEST_REDIS_URL`).

fn redis_url() -> Option<String> {
    match std::env::var("SLUICE_TEST_REDIS_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            println!("skipping: SLUICE_TEST_REDIS_URL is not set");
            None
        }
    }
}

/// A key prefix no other test run uses.
fn unique_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("sluice-test-{}-{nanos}:", std::process::id())
}

fn open_redis(dir: &Path, url: &str, prefix: &str) -> (Engine, Arc<Runtime>) {
    let text = format!(
        "{}target = \"redis\"\n[projections.redis]\nurl = \"{url}\"\nkey_prefix = \"{prefix}\"\n",
        config("profile.js")
    );
    let config = Config::from_toml(&text).unwrap();
    let engine = Engine::open(&config, &dir.join("data")).unwrap();
    let runtime = Runtime::start(engine.clone(), dir).unwrap();
    (engine, runtime)
}

/// Every `{prefix}profile:*` key of Redis, by entry key.
fn redis_entries(connection: &mut redis::Connection, prefix: &str) -> BTreeMap<String, Value> {
    let pattern = format!("{prefix}profile:*");
    let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(connection).unwrap();
    keys.into_iter()
        .filter_map(|key| {
            // Gone since KEYS listed it (a rebuild or a switch in progress): not there.
            let text: Option<String> = redis::cmd("GET").arg(&key).query(connection).unwrap();
            let entry = key[prefix.len() + "profile:".len()..].to_owned();
            Some((entry, serde_json::from_str(&text?).unwrap()))
        })
        .collect()
}

fn embedded_entries(runtime: &Runtime, keys: impl Iterator<Item = u64>) -> BTreeMap<String, Value> {
    keys.filter_map(|key| {
        let key = key.to_string();
        runtime
            .get("profile", &key)
            .unwrap()
            .map(|text| (key, serde_json::from_str(&text).unwrap()))
    })
    .collect()
}

/// Waits until Redis holds exactly `expected`.
async fn redis_holds(
    connection: &mut redis::Connection,
    prefix: &str,
    expected: &BTreeMap<String, Value>,
) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let actual = redis_entries(connection, prefix);
        if &actual == expected {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Redis never held the projection: {} keys, want {}",
            actual.len(),
            expected.len()
        );
        // Redis announces nothing: poll.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_target_mirrors_once_and_rebuilds_what_redis_lost() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix();
    let mut connection = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("profile.js"), PROFILE).unwrap();
    let (engine, runtime) = open_redis(dir.path(), &url, &prefix);
    post(
        &engine,
        "location",
        &[json!({"location_id": 1, "name": "Hope", "city": "Chicago"})],
    )
    .await;
    let doctors: Vec<Value> = (0..40)
        .map(|id| json!({"doctor_id": id, "name": format!("d{id}"), "location_id": 1}))
        .collect();
    post(&engine, "doctor", &doctors).await;
    assert!(runtime.wait_caught_up("profile", WAIT).await.unwrap());
    let expected = embedded_entries(&runtime, 0..40);
    assert_eq!(expected.len(), 40);
    redis_holds(&mut connection, &prefix, &expected).await;
    // Renames and deletes reach Redis too.
    post(
        &engine,
        "location",
        &[json!({"location_id": 1, "name": "Hope II"})],
    )
    .await;
    engine
        .submit("doctor", vec![delete(&engine, "doctor", "3")])
        .await
        .unwrap();
    assert!(runtime.wait_caught_up("profile", WAIT).await.unwrap());
    let expected = embedded_entries(&runtime, 0..40);
    assert_eq!(expected.len(), 39);
    assert_eq!(expected["7"]["locations"][0]["name"], "Hope II");
    redis_holds(&mut connection, &prefix, &expected).await;
    // Each commit with writes for Redis was applied there once.
    let status = runtime.status("profile").unwrap();
    let commits = status.version.as_ref().unwrap().redis_commits;
    let applied: u64 = (0..3)
        .map(|partition| {
            redis::cmd("GET")
                .arg(format!("{prefix}profile#applied:{partition}"))
                .query::<Option<u64>>(&mut connection)
                .unwrap()
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(applied, commits, "{status:?}");
    // Redis loses everything (a restart without persistence): Sluice notices and rebuilds.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(&mut connection)
        .unwrap();
    let _: () = redis::cmd("DEL").arg(&keys).query(&mut connection).unwrap();
    redis_holds(&mut connection, &prefix, &expected).await;
    let rebuilds = runtime.status("profile").unwrap().redis_rebuilds.unwrap();
    assert!(rebuilds >= 3, "every partition rebuilt: {rebuilds}");
    // And goes on from there.
    post(
        &engine,
        "doctor",
        &[json!({"doctor_id": 7, "name": "seven"})],
    )
    .await;
    assert!(runtime.wait_caught_up("profile", WAIT).await.unwrap());
    let expected = embedded_entries(&runtime, 0..40);
    redis_holds(&mut connection, &prefix, &expected).await;
    // A reload switches Redis to the new version, and keys only the old one had go.
    std::fs::write(
        dir.path().join("profile.js"),
        "export default function (d) { return d.doctor_id % 2 ? null : {key: d.doctor_id, value: {even: d.doctor_id}}; }",
    )
    .unwrap();
    assert_eq!(runtime.reload("profile").await.unwrap().outcome, "building");
    assert!(runtime.wait_caught_up("profile", WAIT).await.unwrap());
    let expected = embedded_entries(&runtime, 0..40);
    assert_eq!(expected.len(), 20);
    assert_eq!(expected["4"], json!({"even": 4}));
    redis_holds(&mut connection, &prefix, &expected).await;
    runtime.shutdown();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(&mut connection)
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(&keys).query(&mut connection).unwrap();
    }
}
