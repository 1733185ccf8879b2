//! NATS crash test: the real `sluice` binary consumes events from a JetStream stream and
//! publishes its change log to another, and is SIGKILLed at random moments while a
//! producer keeps publishing. After the last restart:
//!
//! - every inbound message was applied exactly once: each message sets a field of its
//!   own, so every document has all its fields, and the change log holds exactly one
//!   record per message (a redelivery is a no-op and writes no record);
//! - the outbound stream holds every change record exactly once (after JetStream's
//!   deduplication): one message per record, ids unique, and the ids are exactly the
//!   (partition, offset) positions of the change log.
//!
//! Needs `SLUICE_TEST_NATS_URL`; skipped with a message without it.
#![cfg(unix)]

#[path = "../../sluice-nats/tests/support/mod.rs"]
mod nats_support;
mod support;

use nats_support::{jetstream, nats_url, read_stream, unique};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use support::process::{Rng, Server, get_json};

const MESSAGES: u64 = 3_000;
const KEYS: u64 = 40;
const ROUNDS: u64 = 6;
const PARTITIONS: usize = 2;
/// The kill comes this long after the server started (milliseconds, inclusive).
const KILL_DELAY_MS: (u64, u64) = (50, 600);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(90);

fn config(url: &str, inbound: &str, subject: &str, outbound: &str, prefix: &str) -> String {
    format!(
        r#"
[engine]
partitions = {PARTITIONS}

[[collections]]
name = "plan"
key = ["/id"]

[nats]
url = "{url}"
retry_delay_max_ms = 500

[nats.outbound]
stream = "{outbound}"
subject_prefix = "{prefix}"
batch_records_max = 100

[[nats.inbound]]
stream = "{inbound}"
subject = "{subject}.plan"
collection = "plan"
consumer = "crash"
fetch_messages_max = 100
ack_wait_ms = 2000
"#
    )
}

#[test]
fn sigkill_while_consuming_and_publishing_loses_and_duplicates_nothing() {
    let Some(url) = nats_url() else { return };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|error| panic!("{error}"));
    let inbound = unique("CRASHIN");
    let subject = unique("crashin");
    let outbound = unique("CRASHOUT");
    let prefix = unique("crashout");
    let js = runtime.block_on(jetstream(&url));
    runtime
        .block_on(js.create_stream(async_nats::jetstream::stream::Config {
            name: inbound.clone(),
            subjects: vec![format!("{subject}.>")],
            ..Default::default()
        }))
        .unwrap_or_else(|error| panic!("creating the inbound stream: {error}"));

    // The producer publishes the whole time; the server comes and goes.
    let producer = {
        let js = js.clone();
        let subject = format!("{subject}.plan");
        runtime.spawn(async move {
            for sequence in 1..=MESSAGES {
                let payload = format!(
                    "{{\"id\": {}, \"f{sequence}\": {sequence}}}",
                    sequence % KEYS
                );
                let ack = js
                    .publish(subject.clone(), payload.into())
                    .await
                    .unwrap_or_else(|error| panic!("publish: {error}"));
                ack.await
                    .unwrap_or_else(|error| panic!("publish ack: {error}"));
                if sequence % 100 == 0 {
                    tokio::time::sleep(Duration::from_millis(15)).await;
                }
            }
        })
    };

    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let config_path = dir.path().join("sluice.toml");
    std::fs::write(
        &config_path,
        config(&url, &inbound, &subject, &outbound, &prefix),
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let data_dir = dir.path().join("data");
    let log = dir.path().join("server.log");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |elapsed| elapsed.as_nanos() as u64);
    let mut rng = Rng::new(seed);
    for _ in 0..ROUNDS {
        let server = Server::start(&config_path, &data_dir, &log);
        let delay = rng.range(KILL_DELAY_MS.0, KILL_DELAY_MS.1);
        std::thread::sleep(Duration::from_millis(delay)); // a random moment, not a wait for a condition
        server.kill(&log);
    }
    runtime
        .block_on(producer)
        .unwrap_or_else(|error| panic!("producer: {error}"));

    let server = Server::start(&config_path, &data_dir, &log);
    let address = server.address;
    let stats = || get_json(address, "/v1/collections/plan/stats");
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let applied = stats().ok().and_then(|stats| stats["applied"].as_u64());
        let published = runtime
            .block_on(async {
                let mut stream = js.get_stream(&outbound).await.ok()?;
                Some(stream.info().await.ok()?.state.messages)
            })
            .unwrap_or(0);
        if applied == Some(MESSAGES) && published >= MESSAGES {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not settled after {SETTLE_TIMEOUT:?}: applied {applied:?}, published {published} of {MESSAGES} (seed {seed})\n{}",
            support::process::log_tail(&log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Every message applied, exactly once.
    let mut docs = Vec::new();
    let mut after = String::new();
    loop {
        let page = get_json(
            address,
            &format!("/v1/collections/plan/docs?limit=1000{after}"),
        )
        .unwrap_or_else(|error| panic!("{error}"));
        docs.extend(page["docs"].as_array().cloned().unwrap_or_default());
        match page["next"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => break,
        }
    }
    assert_eq!(docs.len() as u64, KEYS);
    let mut fields = 0;
    for doc in &docs {
        let key = doc["key"]
            .as_u64()
            .unwrap_or_else(|| panic!("key of {doc}"));
        for (name, value) in doc["doc"].as_object().into_iter().flatten() {
            if let Some(sequence) = name.strip_prefix('f') {
                assert_eq!(sequence.parse::<u64>().ok(), value.as_u64(), "{doc}");
                assert_eq!(value.as_u64().map(|v| v % KEYS), Some(key), "{doc}");
                fields += 1;
            }
        }
    }
    assert_eq!(
        fields, MESSAGES,
        "every inbound message left its field (seed {seed})"
    );
    let stats = stats().unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(stats["applied"], MESSAGES, "{stats}");
    let head = get_json(address, "/v1/changes?after=now&limit=1")
        .unwrap_or_else(|error| panic!("{error}"));
    let offsets: Vec<u64> = head["next"]
        .as_str()
        .unwrap_or_default()
        .split('.')
        .map(|offset| offset.parse().unwrap_or_else(|error| panic!("{error}")))
        .collect();
    assert_eq!(offsets.len(), PARTITIONS);
    assert_eq!(
        offsets.iter().sum::<u64>(),
        MESSAGES,
        "one change record per message"
    );

    // Every change record in the outbound stream, once.
    let messages = runtime.block_on(read_stream(&js, &outbound));
    assert_eq!(messages.len() as u64, MESSAGES, "seed {seed}");
    let ids: BTreeSet<String> = messages.iter().map(|(id, ..)| id.clone()).collect();
    assert_eq!(
        ids.len() as u64,
        MESSAGES,
        "message ids are unique (seed {seed})"
    );
    let instance = ids
        .iter()
        .next()
        .and_then(|id| id.split(':').next())
        .unwrap_or_default()
        .to_owned();
    let expected: BTreeSet<String> = offsets
        .iter()
        .enumerate()
        .flat_map(|(partition, count)| {
            let instance = instance.clone();
            (0..*count).map(move |offset| format!("{instance}:{partition}:{offset}"))
        })
        .collect();
    assert_eq!(
        ids, expected,
        "the stream holds exactly the change log (seed {seed})"
    );
    for (_, cursor, record) in &messages {
        assert_eq!(&record["cursor"], &Value::from(cursor.as_str()));
    }
    drop(server);
    runtime.block_on(async {
        let _ = js.delete_stream(&inbound).await;
        let _ = js.delete_stream(&outbound).await;
    });
}
