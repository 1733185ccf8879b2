//! Crash test of the projections: the real `sluice` binary with a projection of doctors
//! and the locations they name, in the embedded store and (with `SLUICE_TEST_REDIS_URL`)
//! in Redis, heavy updates of both from client threads, SIGKILL at a random moment,
//! restart, for every round. At the end each projection must equal the projection
//! recomputed from scratch over the final documents (no entry missing, stale or extra),
//! every change record must have been committed through each partition's cursor exactly
//! once (the runtime counts them in the same commit as the cursor: a record applied
//! twice would count twice), and every commit with writes for Redis must have been
//! applied there exactly once (Redis counts them in the script that applies them).
#![cfg(unix)]

mod support;

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::process::{Rng, Server, documents, get_json, http, log_tail};

const ROUNDS: u64 = 20;
const PARTITIONS: u64 = 4;
const DOCTORS: u64 = 300;
const LOCATIONS: u64 = 20;
const KILL_DELAY_MS: (u64, u64) = (20, 400);
const CATCH_UP: Duration = Duration::from_secs(120);

const CONFIG: &str = r#"
[engine]
partitions = 4

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

/// The same projection into Redis.
fn redis_projection(url: &str, prefix: &str) -> String {
    format!(
        "\n[[projections]]\nname = \"profile_redis\"\nsource = \"doctor\"\nscript = \"profile.js\"\ntarget = \"redis\"\n[projections.redis]\nurl = \"{url}\"\nkey_prefix = \"{prefix}\"\n"
    )
}

/// A doctor with the name of its location, and of that location's parent: lookups two
/// deep, so that renames fan out.
const SCRIPT: &str = r#"
export default function (d, ctx) {
  const l = d.location_id == null ? null : ctx.get("location", d.location_id);
  const parent = l && l.parent != null ? ctx.get("location", l.parent) : null;
  return {key: d.doctor_id, value: {name: d.name ?? null, location: l ? l.name : null, parent: parent ? parent.name : null}};
}
"#;

/// What SCRIPT gives for `doctor`, from the final documents.
fn expected(doctor: &Value, locations: &BTreeMap<String, Value>) -> Value {
    let location = doctor
        .get("location_id")
        .and_then(|id| locations.get(&id.to_string()));
    let parent = location
        .and_then(|location| location.get("parent"))
        .and_then(|id| locations.get(&id.to_string()));
    let name = |document: Option<&Value>| {
        document
            .and_then(|document| document.get("name"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    json!({"name": doctor.get("name").cloned().unwrap_or(Value::Null), "location": name(location), "parent": name(parent)})
}

fn random_event(rng: &mut Rng) -> (&'static str, Value) {
    if rng.below(4) == 0 {
        let id = rng.below(LOCATIONS);
        let parent = match rng.below(3) {
            0 => Value::Null,
            _ => Value::from(rng.below(LOCATIONS)),
        };
        (
            "location",
            json!({"location_id": id, "name": format!("loc{}", rng.below(1000)), "parent": parent}),
        )
    } else {
        let id = rng.below(DOCTORS);
        let mut doctor = json!({"doctor_id": id});
        if rng.below(2) == 0 {
            doctor["name"] = json!(format!("dr{}", rng.below(1000)));
        }
        if rng.below(2) == 0 {
            doctor["location_id"] = match rng.below(5) {
                0 => Value::Null,
                _ => json!(rng.below(LOCATIONS + 2)),
            };
        }
        ("doctor", doctor)
    }
}

/// Posts batches until `stop`; a failure before `stop` is a test failure.
fn client(address: SocketAddr, seed: u64, stop: &AtomicBool) {
    let mut rng = Rng::new(seed);
    while !stop.load(Ordering::SeqCst) {
        let mut batches: BTreeMap<&str, String> = BTreeMap::new();
        for _ in 0..rng.range(1, 40) {
            let (collection, event) = random_event(&mut rng);
            let lines = batches.entry(collection).or_default();
            lines.push_str(&event.to_string());
            lines.push('\n');
        }
        for (collection, body) in batches {
            let path = format!("/v1/collections/{collection}/events");
            let answer = http(
                address,
                "POST",
                &path,
                Some(("application/x-ndjson", body.as_bytes())),
            );
            match answer {
                Ok((200, _)) => {}
                other => {
                    assert!(
                        stop.load(Ordering::SeqCst),
                        "ingest failed before the kill: {other:?}"
                    );
                    return;
                }
            }
        }
    }
}

/// Waits until every projection is live with nothing behind; their statuses then.
fn caught_up(address: SocketAddr, log: &std::path::Path) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let list = get_json(address, "/v1/projections").unwrap_or_else(|error| panic!("{error}"));
        let statuses = list["projections"].as_array().cloned().unwrap_or_default();
        let done = |status: &Value| {
            let version = &status["version"];
            status["status"] == "live"
                && status["building"].is_null()
                && version["lag_records"] == 0
                && version["phase"] == "live"
        };
        if !statuses.is_empty() && statuses.iter().all(done) {
            return statuses;
        }
        let status = Value::from(statuses);
        assert!(
            started.elapsed() < CATCH_UP,
            "the projection did not catch up: {status}\n--- server log ---\n{}",
            log_tail(log)
        );
        // Polls the condition; the server announces nothing to wait on.
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn projections_survive_sigkill_and_equal_a_recomputation() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let config = dir.path().join("sluice.toml");
    let redis_url = std::env::var("SLUICE_TEST_REDIS_URL")
        .ok()
        .filter(|url| !url.trim().is_empty());
    let redis_prefix = format!("sluice-crash-{}:", std::process::id());
    let config_text = match &redis_url {
        Some(url) => format!("{CONFIG}{}", redis_projection(url, &redis_prefix)),
        None => {
            println!("SLUICE_TEST_REDIS_URL is not set: only the embedded projection is checked");
            CONFIG.to_owned()
        }
    };
    std::fs::write(&config, config_text).unwrap_or_else(|error| panic!("{error}"));
    std::fs::write(dir.path().join("profile.js"), SCRIPT).unwrap_or_else(|error| panic!("{error}"));
    let data = dir.path().join("data");
    let log = dir.path().join("server.log");
    let mut rng = Rng::new(0x5eed_0009);
    for round in 0..ROUNDS {
        let server = Server::start(&config, &data, &log);
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..2)
            .map(|index| {
                let stop = Arc::clone(&stop);
                let address = server.address;
                let seed = rng.next() ^ index;
                std::thread::spawn(move || client(address, seed, &stop))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(
            rng.range(KILL_DELAY_MS.0, KILL_DELAY_MS.1),
        ));
        stop.store(true, Ordering::SeqCst);
        server.kill(&log);
        for client in clients {
            client
                .join()
                .unwrap_or_else(|_| panic!("round {round}: a client panicked"));
        }
    }
    let server = Server::start(&config, &data, &log);
    let statuses = caught_up(server.address, &log);
    let doctors = documents(server.address, "doctor");
    let locations = documents(server.address, "location");
    assert!(
        doctors.len() > 50,
        "only {} doctors were written",
        doctors.len()
    );
    let expected: BTreeMap<&String, Value> = doctors
        .iter()
        .map(|(key, doctor)| (key, expected(doctor, &locations)))
        .collect();
    let keys: Vec<&String> = doctors.keys().collect();
    let body = json!({"keys": keys}).to_string();
    let (code, answer) = http(
        server.address,
        "POST",
        "/v1/projections/profile/get",
        Some(("application/json", body.as_bytes())),
    )
    .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&answer));
    let answer: Value = serde_json::from_slice(&answer).unwrap_or_else(|error| panic!("{error}"));
    let mut wrong = Vec::new();
    for (result, (key, want)) in answer["results"]
        .as_array()
        .into_iter()
        .flatten()
        .zip(&expected)
    {
        if &result["value"] != want {
            wrong.push(format!("{key}: got {} want {want}", result["value"]));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} entries differ from a recomputation:\n{}",
        wrong.len(),
        doctors.len(),
        wrong[..wrong.len().min(20)].join("\n")
    );
    for status in &statuses {
        let version = &status["version"];
        assert_eq!(
            version["entries"].as_u64(),
            Some(doctors.len() as u64),
            "entries beyond the doctors: {status}"
        );
        assert_eq!(version["errors"], 0, "{status}");
        // Each partition's consumer commits every record of the log once.
        let log_records = version["log_records"].as_u64().unwrap_or_default();
        assert_eq!(
            version["records_committed"].as_u64(),
            Some(PARTITIONS * log_records),
            "records committed through the cursors vs {PARTITIONS} x {log_records} in the log: {status}"
        );
    }
    if let Some(url) = &redis_url {
        check_redis(url, &redis_prefix, &expected, &statuses, &log);
    }
    server.stop(&log);
}

/// Redis holds the recomputed projection, and applied each commit once.
fn check_redis(
    url: &str,
    prefix: &str,
    expected: &BTreeMap<&String, Value>,
    statuses: &[Value],
    log: &std::path::Path,
) {
    let mut connection = redis::Client::open(url)
        .and_then(|client| client.get_connection())
        .unwrap_or_else(|error| panic!("connecting to Redis: {error}"));
    let status = statuses
        .iter()
        .find(|status| status["name"] == "profile_redis")
        .unwrap_or_else(|| panic!("no profile_redis in {statuses:?}"));
    let commits = status["version"]["redis_commits"]
        .as_u64()
        .unwrap_or_default();
    // Redis gets each commit right after the store does: wait for the last one.
    let started = Instant::now();
    let applied = loop {
        let applied: u64 = (0..PARTITIONS)
            .map(|partition| {
                redis::cmd("GET")
                    .arg(format!("{prefix}profile_redis#applied:{partition}"))
                    .query::<Option<u64>>(&mut connection)
                    .unwrap_or_else(|error| panic!("{error}"))
                    .unwrap_or(0)
            })
            .sum();
        if applied >= commits || started.elapsed() > CATCH_UP {
            break applied;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(commits > 0, "no commit reached Redis: {status}");
    assert_eq!(
        applied,
        commits,
        "commits applied in Redis vs committed with writes for it: {status}\n--- server log ---\n{}",
        log_tail(log)
    );
    let mut wrong = Vec::new();
    for (key, want) in expected {
        let text: Option<String> = redis::cmd("GET")
            .arg(format!("{prefix}profile_redis:{key}"))
            .query(&mut connection)
            .unwrap_or_else(|error| panic!("{error}"));
        let got: Value = text
            .as_deref()
            .map(|text| serde_json::from_str(text).unwrap_or(Value::Null))
            .unwrap_or(Value::Null);
        if &got != want {
            wrong.push(format!("{key}: got {got} want {want}"));
        }
    }
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}profile_redis:*"))
        .query(&mut connection)
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(
        wrong.is_empty() && keys.len() == expected.len(),
        "Redis: {} of {} entries differ, {} keys:\n{}",
        wrong.len(),
        expected.len(),
        keys.len(),
        wrong[..wrong.len().min(20)].join("\n")
    );
    let all: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(&mut connection)
        .unwrap_or_else(|error| panic!("{error}"));
    let _: () = redis::cmd("DEL")
        .arg(&all)
        .query(&mut connection)
        .unwrap_or_else(|error| panic!("{error}"));
}
