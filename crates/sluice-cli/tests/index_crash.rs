//! Crash test of the search index: the real `sluice` binary with an index of doctors fed
//! by two lanes (a fast one for `/active`, a slow one holding everything else back),
//! updates and deletes from client threads, SIGKILL at a random moment, restart, for
//! every round. At the end the index must equal the documents: no document lost, none
//! duplicated or left after its delete, none with a stale field.
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
const DOCTORS: u64 = 300;
const KILL_DELAY_MS: (u64, u64) = (20, 400);
const CATCH_UP: Duration = Duration::from_secs(120);

const CONFIG: &str = r#"
[engine]
partitions = 4

[[collections]]
name = "doctor"
key = ["/doctor_id"]

[[indexes]]
name = "doctors"
source = "doctor"
[indexes.fields]
name = { type = "text" }
specialty = { type = "keyword" }
rating = { type = "float" }
active = { type = "bool" }
[indexes.lanes.high]
paths = ["/active"]
max_delay_ms = 200
batch_size = 100
[indexes.lanes.low]
max_delay_ms = 3000
batch_size = 500
"#;

fn random_doctor(rng: &mut Rng) -> Value {
    let id = rng.below(DOCTORS);
    let mut doctor = json!({"doctor_id": id});
    if rng.below(2) == 0 {
        doctor["name"] = json!(format!("dr{} smith", rng.below(1000)));
    }
    if rng.below(3) == 0 {
        doctor["specialty"] = json!(["cardiology", "oncology", "surgery"][rng.below(3) as usize]);
    }
    if rng.below(3) == 0 {
        doctor["rating"] = json!(rng.below(50) as f64 / 10.0);
    }
    if rng.below(2) == 0 {
        doctor["active"] = json!(rng.below(2) == 0);
    }
    doctor
}

/// Posts batches and deletes until `stop`; a failure before `stop` is a test failure.
fn client(address: SocketAddr, seed: u64, stop: &AtomicBool) {
    let mut rng = Rng::new(seed);
    while !stop.load(Ordering::SeqCst) {
        let answer = if rng.below(10) == 0 {
            let path = format!("/v1/collections/doctor/docs/{}", rng.below(DOCTORS));
            http(address, "DELETE", &path, None)
        } else {
            let body: String = (0..rng.range(1, 40))
                .map(|_| format!("{}\n", random_doctor(&mut rng)))
                .collect();
            http(
                address,
                "POST",
                "/v1/collections/doctor/events",
                Some(("application/x-ndjson", body.as_bytes())),
            )
        };
        match answer {
            Ok((200, _)) => {}
            other => {
                assert!(
                    stop.load(Ordering::SeqCst),
                    "a write failed before the kill: {other:?}"
                );
                return;
            }
        }
    }
}

/// Waits until the index is live with nothing behind and nothing waiting in a lane.
fn caught_up(address: SocketAddr, log: &std::path::Path) -> Value {
    let started = Instant::now();
    loop {
        let list = get_json(address, "/v1/indexes").unwrap_or_else(|error| panic!("{error}"));
        let status = list["indexes"][0].clone();
        let active = &status["active"];
        let idle = active["lanes"]
            .as_array()
            .is_some_and(|lanes| lanes.iter().all(|lane| lane["pending"] == 0));
        if status["status"] == "live" && active["uncommitted_records"] == 0 && idle {
            return status;
        }
        assert!(
            started.elapsed() < CATCH_UP,
            "the index did not catch up: {status}\n--- server log ---\n{}",
            log_tail(log)
        );
        // Polls the condition; the server announces nothing to wait on.
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_index_survives_sigkill_and_equals_the_documents() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, CONFIG).unwrap_or_else(|error| panic!("{error}"));
    let data = dir.path().join("data");
    let log = dir.path().join("server.log");
    let mut rng = Rng::new(0x5eed_0010);
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
    let status = caught_up(server.address, &log);
    let doctors: BTreeMap<u64, Value> = documents(server.address, "doctor")
        .into_iter()
        .map(|(key, doc)| (key.parse().unwrap_or_else(|_| panic!("key {key}")), doc))
        .collect();
    assert!(
        doctors.len() > 50,
        "only {} doctors were written",
        doctors.len()
    );
    let body = json!({"limit": 1000, "fields": ["name", "specialty", "rating", "active"]});
    let (code, answer) = http(
        server.address,
        "POST",
        "/v1/indexes/doctors/search",
        Some(("application/json", body.to_string().as_bytes())),
    )
    .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&answer));
    let answer: Value = serde_json::from_slice(&answer).unwrap_or_else(|error| panic!("{error}"));
    let mut indexed: BTreeMap<u64, Value> = BTreeMap::new();
    for hit in answer["hits"].as_array().into_iter().flatten() {
        let key = hit["key"].as_u64().unwrap_or_else(|| panic!("key {hit}"));
        assert!(
            indexed.insert(key, hit["doc"].clone()).is_none(),
            "doctor {key} is indexed twice"
        );
    }
    assert_eq!(answer["total"], json!(indexed.len()), "{status}");
    let mut wrong = Vec::new();
    for (key, doctor) in &doctors {
        let want: serde_json::Map<String, Value> = ["name", "specialty", "rating", "active"]
            .iter()
            .filter_map(|field| {
                let value = doctor.get(*field)?;
                (!value.is_null()).then(|| ((*field).to_owned(), value.clone()))
            })
            .collect();
        match indexed.get(key) {
            None => wrong.push(format!("{key}: missing")),
            Some(got) if got != &Value::Object(want.clone()) => wrong.push(format!(
                "{key}: indexed {got}, document {}",
                Value::Object(want)
            )),
            Some(_) => {}
        }
    }
    for key in indexed.keys().filter(|key| !doctors.contains_key(key)) {
        wrong.push(format!("{key}: indexed after its delete"));
    }
    assert!(
        wrong.is_empty(),
        "{} of {} doctors differ from the index:\n{}",
        wrong.len(),
        doctors.len(),
        wrong[..wrong.len().min(20)].join("\n")
    );
    server.stop(&log);
}
