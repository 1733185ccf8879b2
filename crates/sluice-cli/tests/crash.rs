//! Crash test: runs the real `sluice` binary, ingests over HTTP from client threads,
//! kills the server with SIGKILL at a random moment, restarts it on the same data
//! directory and checks durability against a reference model:
//!
//! - every acknowledged event (a 200 answer whose results are all applied, noop or stale)
//!   is reflected in the documents, field by field, as field-mode merge defines it;
//! - the change log is contiguous per partition (no gap, no duplicate), and what it held
//!   at the previous check is still there, byte for byte;
//! - the log agrees with the documents (the last record of a key carries its document).
//!
//! A request that failed because of the kill is UNKNOWN: its events may or may not have
//! been applied, so the checks accept either.
#![cfg(unix)]

mod support;

use support::process::{Rng, Server, get_json, http, log_tail};

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Kill and restart cycles.
const ROUNDS: u64 = 25;
/// Concurrent ingest clients.
const CLIENTS: u64 = 2;
const KEYS: u64 = 200;
const PARTITIONS: usize = 4;
/// Events carry some of the fields `f0..f{FIELDS-1}`.
const FIELDS: u64 = 8;
const BATCH_EVENTS_MAX: u64 = 50;
/// The kill comes this long after ingest started (milliseconds, inclusive).
const KILL_DELAY_MS: (u64, u64) = (5, 300);
/// Problems reported per check before the rest are cut.
const PROBLEMS_SHOWN: usize = 30;

const CONFIG: &str = r#"
[engine]
partitions = 4

[[collections]]
name = "doctor"
key = ["/doctor_id"]
version = "/v"
ordering = "field"
"#;

// ---------------------------------------------------------------------------------------
// The reference model.

#[derive(Clone, Debug)]
struct Event {
    key: u64,
    version: u64,
    /// Every member of the event, `doctor_id` and `v` included; `null` removes.
    members: Map<String, Value>,
}

/// One event as sent, with its fate: `Some(status)` when acknowledged, `None` when the
/// request's fate is unknown.
#[derive(Clone, Debug)]
struct Sent {
    event: Event,
    status: Option<String>,
    round: u64,
}

fn random_value(rng: &mut Rng) -> Value {
    match rng.below(10) {
        0 => Value::Null,
        1..=3 => Value::from(rng.below(1000)),
        4..=6 => Value::from(format!("s{}", rng.below(1000))),
        7 => Value::from(rng.below(2) == 0),
        8 => Value::from(vec![rng.below(10), rng.below(10)]),
        _ => Value::from(-(rng.below(1000) as i64)),
    }
}

fn random_event(rng: &mut Rng, versions: &AtomicU64) -> Event {
    let key = rng.below(KEYS);
    let version = versions.fetch_add(1, Ordering::SeqCst) + 1;
    let mut members = Map::new();
    members.insert("doctor_id".into(), Value::from(key));
    members.insert("v".into(), Value::from(version));
    for _ in 0..rng.range(1, 3) {
        members.insert(format!("f{}", rng.below(FIELDS)), random_value(rng));
    }
    Event {
        key,
        version,
        members,
    }
}

/// The statuses of an ingest answer, when it acknowledges all `count` events.
fn acknowledged(body: &[u8], count: usize) -> Result<Vec<String>, String> {
    let text = String::from_utf8_lossy(body);
    let value: Value = serde_json::from_slice(body).map_err(|error| format!("{error}: {text}"))?;
    let results = value["results"]
        .as_array()
        .ok_or_else(|| format!("no results: {text}"))?;
    if results.len() != count {
        return Err(format!(
            "{} results for {count} events: {text}",
            results.len()
        ));
    }
    results
        .iter()
        .map(|result| match result["status"].as_str() {
            Some(status @ ("applied" | "noop" | "stale")) => Ok(status.to_owned()),
            _ => Err(format!("unexpected result {result}")),
        })
        .collect()
}

struct ClientReport {
    sent: Vec<Sent>,
    acked_requests: u64,
    unknown_requests: u64,
}

/// Posts random batches until `stop` is set and a request fails (or `stop` is seen
/// between requests). A failure before `stop` is a test failure.
fn client(
    address: SocketAddr,
    round: u64,
    seed: u64,
    versions: &AtomicU64,
    stop: &AtomicBool,
) -> ClientReport {
    let mut rng = Rng::new(seed);
    let mut report = ClientReport {
        sent: Vec::new(),
        acked_requests: 0,
        unknown_requests: 0,
    };
    while !stop.load(Ordering::SeqCst) {
        let count = rng.range(1, BATCH_EVENTS_MAX) as usize;
        let events: Vec<Event> = (0..count)
            .map(|_| random_event(&mut rng, versions))
            .collect();
        let mut body = String::new();
        for event in &events {
            body.push_str(&Value::Object(event.members.clone()).to_string());
            body.push('\n');
        }
        let answer = http(
            address,
            "POST",
            "/v1/collections/doctor/events",
            Some(("application/x-ndjson", body.as_bytes())),
        );
        let failure = match answer {
            Ok((200, bytes)) => match acknowledged(&bytes, count) {
                Ok(statuses) => {
                    report.acked_requests += 1;
                    for (event, status) in events.iter().zip(statuses) {
                        report.sent.push(Sent {
                            event: event.clone(),
                            status: Some(status),
                            round,
                        });
                    }
                    continue;
                }
                Err(message) => format!("HTTP 200 but {message}"),
            },
            Ok((status, bytes)) => format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)),
            Err(error) => format!("{error}"),
        };
        assert!(
            stop.load(Ordering::SeqCst),
            "round {round}: ingest failed before the kill: {failure}\nbody:\n{body}"
        );
        report.unknown_requests += 1;
        for event in events {
            report.sent.push(Sent {
                event,
                status: None,
                round,
            });
        }
        break;
    }
    report
}

// ---------------------------------------------------------------------------------------
// Checks.

struct StoredDoc {
    version: Value,
    doc: Map<String, Value>,
}

fn fetch_docs(address: SocketAddr) -> Result<BTreeMap<u64, StoredDoc>, String> {
    let mut docs = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(token) => format!("/v1/collections/doctor/docs?limit=1000&after={token}"),
            None => "/v1/collections/doctor/docs?limit=1000".to_owned(),
        };
        let page = get_json(address, &path)?;
        for entry in page["docs"]
            .as_array()
            .ok_or_else(|| format!("no docs in {page}"))?
        {
            let key = entry["key"]
                .as_u64()
                .ok_or_else(|| format!("bad key in {entry}"))?;
            let doc = entry["doc"]
                .as_object()
                .ok_or_else(|| format!("bad doc in {entry}"))?
                .clone();
            if docs
                .insert(
                    key,
                    StoredDoc {
                        version: entry["version"].clone(),
                        doc,
                    },
                )
                .is_some()
            {
                return Err(format!("document {key} listed twice"));
            }
        }
        match &page["next"] {
            Value::String(token) => after = Some(token.clone()),
            Value::Null => return Ok(docs),
            other => return Err(format!("bad next {other}")),
        }
    }
}

/// One change record as read back.
struct Record {
    partition: usize,
    /// The record's exact bytes without its `"cursor"` member (which depends on how
    /// partitions interleave in a page, not on the record).
    body: Vec<u8>,
    value: Value,
}

/// Reads the whole change log from the start and checks that every record advances
/// exactly one partition's offset by one.
fn fetch_changes(address: SocketAddr, problems: &mut Vec<String>) -> Result<Vec<Record>, String> {
    let mut records = Vec::new();
    let mut position = vec![0u64; PARTITIONS];
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(cursor) => format!("/v1/changes?limit=1000&after={cursor}"),
            None => "/v1/changes?limit=1000".to_owned(),
        };
        let (status, body) =
            http(address, "GET", &path, None).map_err(|error| format!("GET {path}: {error}"))?;
        let text = String::from_utf8_lossy(&body);
        if status != 200 {
            return Err(format!("GET {path}: HTTP {status}: {text}"));
        }
        let page: BTreeMap<String, Box<RawValue>> = serde_json::from_slice(&body)
            .map_err(|error| format!("GET {path}: {error}: {text}"))?;
        let changes = page
            .get("changes")
            .ok_or_else(|| format!("no changes in {text}"))?;
        let changes: Vec<Box<RawValue>> =
            serde_json::from_str(changes.get()).map_err(|error| error.to_string())?;
        let next: String = page
            .get("next")
            .and_then(|next| serde_json::from_str(next.get()).ok())
            .ok_or_else(|| format!("no next in {text}"))?;
        if changes.is_empty() {
            let head = join(&position);
            if next != head {
                problems.push(format!(
                    "change log: the last page's next is {next}, the last record's cursor {head}"
                ));
            }
            return Ok(records);
        }
        for raw in changes {
            let index = records.len();
            let text = raw.get();
            let value: Value = serde_json::from_str(text).map_err(|error| error.to_string())?;
            let cursor = value["cursor"]
                .as_str()
                .ok_or_else(|| format!("record {index} has no cursor: {text}"))?;
            let offsets: Vec<u64> = cursor
                .split('.')
                .map(|part| part.parse().unwrap_or(u64::MAX))
                .collect();
            if offsets.len() != PARTITIONS || offsets.contains(&u64::MAX) {
                return Err(format!("record {index}: bad cursor {cursor:?}"));
            }
            let moved: Vec<usize> = (0..PARTITIONS)
                .filter(|&p| offsets[p] != position[p])
                .collect();
            let partition = match moved[..] {
                [partition] if offsets[partition] == position[partition] + 1 => partition,
                _ => {
                    problems.push(format!(
                        "change log record {index}: cursor {} -> {cursor}: not one partition advancing by exactly \
                         one (duplicate or gap): {text}",
                        join(&position)
                    ));
                    return Ok(records);
                }
            };
            position = offsets;
            let prefix = format!("{{\"cursor\":\"{cursor}\",");
            let Some(rest) = text.strip_prefix(&prefix) else {
                return Err(format!(
                    "record {index} does not start with its cursor: {text}"
                ));
            };
            let mut body = b"{".to_vec();
            body.extend_from_slice(rest.as_bytes());
            records.push(Record {
                partition,
                body,
                value,
            });
        }
        after = Some(next);
    }
}

fn join(offsets: &[u64]) -> String {
    offsets
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

fn show(value: Option<&Value>) -> String {
    value.map_or_else(|| "<absent>".to_owned(), Value::to_string)
}

/// Every check after a restart; returns the problems found and the log per partition.
fn check(
    address: SocketAddr,
    sent: &[Sent],
    previous_log: &[Vec<Vec<u8>>],
) -> (Vec<String>, Vec<Vec<Vec<u8>>>) {
    let mut problems = Vec::new();
    let docs = match fetch_docs(address) {
        Ok(docs) => docs,
        Err(error) => {
            return (
                vec![format!("reading documents: {error}")],
                previous_log.to_vec(),
            );
        }
    };
    let mut by_key: BTreeMap<u64, Vec<&Sent>> = BTreeMap::new();
    for item in sent {
        by_key.entry(item.event.key).or_default().push(item);
    }
    for key in docs.keys() {
        if !by_key.contains_key(key) {
            problems.push(format!(
                "key {key}: a document exists but no event was ever sent for it"
            ));
        }
    }

    // (1) Documents against the model.
    for (&key, events) in &by_key {
        let acked: Vec<&&Sent> = events.iter().filter(|item| item.status.is_some()).collect();
        let Some(stored) = docs.get(&key) else {
            if let Some(newest) = acked.iter().max_by_key(|item| item.event.version) {
                problems.push(format!(
                    "key {key}: document missing, but {} events were acknowledged (newest: version {} in round {}: {})",
                    acked.len(),
                    newest.event.version,
                    newest.round,
                    Value::Object(newest.event.members.clone())
                ));
            }
            continue;
        };
        let newest_acked = acked.iter().map(|item| item.event.version).max();
        let version = stored.version.as_u64();
        let known =
            version.is_some_and(|version| events.iter().any(|item| item.event.version == version));
        if !known || version < newest_acked {
            problems.push(format!(
                "key {key}: document version {} is not the version of a sent event at or above the newest \
                 acknowledged one ({newest_acked:?})",
                stored.version
            ));
        }
        let mut names: BTreeSet<&str> = stored.doc.keys().map(String::as_str).collect();
        for item in events {
            names.extend(item.event.members.keys().map(String::as_str));
        }
        for name in names {
            let mentioning: Vec<&&Sent> = events
                .iter()
                .filter(|item| item.event.members.contains_key(name))
                .collect();
            let floor = mentioning
                .iter()
                .filter(|item| item.status.is_some())
                .map(|item| item.event.version)
                .max();
            // Candidates: any event mentioning the field at or above the newest acknowledged
            // one (unknown ones may or may not have been applied); absent when no
            // acknowledged event mentions it.
            let mut candidates: Vec<(String, Option<&Value>)> = mentioning
                .iter()
                .filter(|item| floor.is_none_or(|floor| item.event.version >= floor))
                .map(|item| {
                    let fate = item.status.as_deref().unwrap_or("unknown");
                    let value = item
                        .event
                        .members
                        .get(name)
                        .filter(|value| !value.is_null());
                    (
                        format!("v{} ({fate}, round {})", item.event.version, item.round),
                        value,
                    )
                })
                .collect();
            if floor.is_none() {
                candidates.push(("nothing applied".to_owned(), None));
            }
            let got = stored.doc.get(name);
            if !candidates.iter().any(|(_, value)| *value == got) {
                let listed: Vec<String> = candidates
                    .iter()
                    .map(|(origin, value)| format!("{} from {origin}", show(*value)))
                    .collect();
                problems.push(format!(
                    "key {key} field {name:?}: got {}, expected one of [{}] (newest acknowledged version mentioning \
                     it: {floor:?})",
                    show(got),
                    listed.join(", ")
                ));
            }
        }
    }

    // (2) The change log: contiguous per partition, and an extension of what was seen.
    let records = match fetch_changes(address, &mut problems) {
        Ok(records) => records,
        Err(error) => {
            problems.push(format!("reading the change log: {error}"));
            return (problems, previous_log.to_vec());
        }
    };
    let mut log: Vec<Vec<Vec<u8>>> = vec![Vec::new(); PARTITIONS];
    for record in &records {
        log[record.partition].push(record.body.clone());
    }
    for (partition, (before, now)) in previous_log.iter().zip(&log).enumerate() {
        if now.len() < before.len() {
            problems.push(format!(
                "partition {partition}: the change log shrank from {} to {} records",
                before.len(),
                now.len()
            ));
        }
        if let Some(offset) = before
            .iter()
            .zip(now)
            .position(|(before, now)| before != now)
        {
            problems.push(format!(
                "partition {partition} offset {offset}: the record changed\n  before: {}\n  now:    {}",
                String::from_utf8_lossy(&before[offset]),
                String::from_utf8_lossy(&now[offset])
            ));
        }
    }

    // (3) The log against the documents and the model.
    let mut per_key: BTreeMap<u64, (usize, Option<&Value>)> = BTreeMap::new();
    for (index, record) in records.iter().enumerate() {
        let value = &record.value;
        let Some(key) = value["key"].as_u64() else {
            problems.push(format!("change record {index}: bad key: {value}"));
            continue;
        };
        if value["collection"] != "doctor" || value["op"] != "upsert" || !value["doc"].is_object() {
            problems.push(format!("change record {index}: unexpected record {value}"));
        }
        let entry = per_key.entry(key).or_insert((0, None));
        entry.0 += 1;
        entry.1 = Some(&value["doc"]);
    }
    for key in 0..KEYS {
        let (records, last_doc) = per_key.get(&key).copied().unwrap_or((0, None));
        let stored = docs
            .get(&key)
            .map(|stored| Value::Object(stored.doc.clone()));
        if last_doc != stored.as_ref() {
            problems.push(format!(
                "key {key}: the last change record's doc {} differs from the document {}",
                show(last_doc),
                show(stored.as_ref())
            ));
        }
        let events = by_key.get(&key).map_or(&[][..], Vec::as_slice);
        let applied = events
            .iter()
            .filter(|item| item.status.as_deref() == Some("applied"))
            .count();
        let unknown = events.iter().filter(|item| item.status.is_none()).count();
        if records < applied || records > applied + unknown {
            problems.push(format!(
                "key {key}: {records} change records, but {applied} acknowledged applied events and {unknown} \
                 unknown ones (expected {applied}..={})",
                applied + unknown
            ));
        }
    }
    (problems, log)
}

// ---------------------------------------------------------------------------------------

#[test]
fn sigkill_during_ingest_loses_no_acknowledged_event() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, CONFIG).expect("writing the config");
    let data_dir: PathBuf = dir.path().join("data");
    let log = dir.path().join("server.log");
    let versions = Arc::new(AtomicU64::new(0));
    let mut sent: Vec<Sent> = Vec::new();
    let mut seen_log: Vec<Vec<Vec<u8>>> = vec![Vec::new(); PARTITIONS];
    let mut unknown_total = 0;
    let mut server = Server::start(&config, &data_dir, &log);

    for round in 1..=ROUNDS {
        let round_started = Instant::now();
        let mut rng = Rng::new(round);
        let delay = Duration::from_millis(rng.range(KILL_DELAY_MS.0, KILL_DELAY_MS.1));
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client_index| {
                let (address, versions, stop) =
                    (server.address, Arc::clone(&versions), Arc::clone(&stop));
                let seed = round * 1_000 + client_index;
                std::thread::spawn(move || client(address, round, seed, &versions, &stop))
            })
            .collect();
        // Not synchronization: the random delay decides where in the ingest the kill lands.
        std::thread::sleep(delay);
        stop.store(true, Ordering::SeqCst);
        server.kill(&log);
        let (mut acked_requests, mut unknown_requests, mut events) = (0, 0, 0);
        for handle in clients {
            let report = handle
                .join()
                .expect("a client thread panicked (see its message above)");
            acked_requests += report.acked_requests;
            unknown_requests += report.unknown_requests;
            events += report.sent.len();
            sent.extend(report.sent);
        }
        unknown_total += unknown_requests;

        server = Server::start(&config, &data_dir, &log);
        let (problems, log_now) = check(server.address, &sent, &seen_log);
        let records: usize = log_now.iter().map(Vec::len).sum();
        println!(
            "round {round:2}: kill after {:3} ms, {events:4} events in {acked_requests:3} acknowledged and \
             {unknown_requests} unknown requests; {} events so far, {records} change records; round took \
             {:?}",
            delay.as_millis(),
            sent.len(),
            round_started.elapsed()
        );
        if !problems.is_empty() {
            let kept = dir.keep();
            let shown: Vec<&String> = problems.iter().take(PROBLEMS_SHOWN).collect();
            panic!(
                "round {round} (kill after {} ms): {} problems after the restart (data kept in {}):\n{}\n\
                 --- server log (tail) ---\n{}",
                delay.as_millis(),
                problems.len(),
                kept.display(),
                shown
                    .iter()
                    .map(|problem| format!("- {problem}"))
                    .collect::<Vec<_>>()
                    .join("\n"),
                log_tail(&kept.join("server.log"))
            );
        }
        seen_log = log_now;
    }
    server.kill(&log);
    let acked = sent.iter().filter(|item| item.status.is_some()).count();
    println!(
        "{ROUNDS} rounds, {} events sent ({acked} acknowledged), {unknown_total} requests cut by a kill, in {:?}",
        sent.len(),
        started.elapsed()
    );
    assert!(acked > 0, "no event was ever acknowledged");
    assert!(
        unknown_total > 0,
        "no kill ever landed on a request in flight: the test proved little"
    );
}
