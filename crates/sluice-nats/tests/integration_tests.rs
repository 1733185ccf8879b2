//! Against a real NATS server with JetStream: `SLUICE_TEST_NATS_URL` (`.ci/run` sets it);
//! without it every test prints why it is skipped and passes.

#![allow(clippy::unwrap_used)]

mod support;

use async_nats::jetstream::{self, stream};
use serde_json::{Value, json};
use sluice_core::Config;
use sluice_engine::Engine;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use support::{jetstream, nats_url, read_stream, unique};

fn config(nats: &str) -> Config {
    Config::from_toml(&format!(
        "[engine]\npartitions = 2\n\
         [[collections]]\nname = \"doctor\"\nkey = [\"/id\"]\nversion = \"/v\"\n\
         [[collections]]\nname = \"plan\"\nkey = [\"/id\"]\n\
         {nats}"
    ))
    .unwrap()
}

/// Polls `condition` until it holds, failing after 30 s with `what`.
async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn submit(engine: &Engine, collection: &str, ndjson: &str) {
    let inputs = engine
        .parse_body(
            collection,
            ndjson.as_bytes(),
            sluice_engine::BodyFormat::Ndjson,
        )
        .unwrap()
        .unwrap();
    engine.submit(collection, inputs).await.unwrap();
}

fn count(engine: &Engine, component: &str, outcome: &str) -> u64 {
    engine
        .component(component)
        .status()
        .counts
        .get(outcome)
        .copied()
        .unwrap_or(0)
}

#[tokio::test]
async fn outbound_publishes_every_change_once_across_restarts() {
    let Some(url) = nats_url() else { return };
    let stream_name = unique("OUT");
    let prefix = unique("out");
    let section = |consumer: &str| {
        format!(
            "[nats]\nurl = \"{url}\"\n[nats.outbound]\nstream = \"{stream_name}\"\nsubject_prefix = \"{prefix}\"\nconsumer = \"{consumer}\"\nbatch_records_max = 7\n"
        )
    };
    let component = format!("nats-outbound:{stream_name}");
    let dir = tempfile::tempdir().unwrap();
    let js = jetstream(&url).await;
    {
        let engine = Engine::open(&config(&section("pub-a")), dir.path()).unwrap();
        let lines: String = (0..40)
            .map(|id| format!("{{\"id\": {id}, \"v\": 1}}\n"))
            .collect();
        submit(&engine, "doctor", &lines).await;
        submit(&engine, "plan", "{\"id\": \"p1\", \"name\": \"Gold\"}\n").await;
        let nats = engine.config().nats.clone().unwrap();
        let connectors = sluice_nats::start(engine.clone(), nats).await.unwrap();
        eventually("41 published", || async {
            count(&engine, &component, "published") == 41
        })
        .await;
        eventually("the publisher's cursor committed", || async {
            engine.subscriptions().is_ok() && {
                let metrics = engine.render_metrics();
                metrics.contains("sluice_consumer_lag_records{consumer=\"pub-a\"} 0")
            }
        })
        .await;
        connectors.stop().await;
    }
    let messages = read_stream(&js, &stream_name).await;
    assert_eq!(messages.len(), 41);
    let ids: HashSet<&String> = messages.iter().map(|(id, ..)| id).collect();
    assert_eq!(ids.len(), 41, "message ids are unique");
    for (id, cursor, record) in &messages {
        assert_eq!(
            &record["cursor"], cursor,
            "the header carries the record's cursor"
        );
        assert_eq!(id.split(':').count(), 3, "{id}");
    }
    let plans = messages
        .iter()
        .filter(|(_, _, record)| record["collection"] == "plan")
        .count();
    assert_eq!(plans, 1);

    // A restart publishes only what is new.
    let engine = Engine::open(&config(&section("pub-a")), dir.path()).unwrap();
    let nats = engine.config().nats.clone().unwrap();
    let connectors = sluice_nats::start(engine.clone(), nats).await.unwrap();
    submit(
        &engine,
        "doctor",
        "{\"id\": 1, \"v\": 2, \"name\": \"Ana\"}\n",
    )
    .await;
    eventually("the new change", || async {
        count(&engine, &component, "published") == 1
    })
    .await;
    connectors.stop().await;
    assert_eq!(read_stream(&js, &stream_name).await.len(), 42);

    // A publisher without a cursor (a lost position, or an outage longer than the
    // duplicate window) skips what the stream already holds instead of publishing it again.
    let nats = config(&section("pub-b")).nats.unwrap();
    let connectors = sluice_nats::start(engine.clone(), nats).await.unwrap();
    eventually("the stream's records skipped", || async {
        count(&engine, &component, "skipped") == 42
    })
    .await;
    connectors.stop().await;
    assert_eq!(count(&engine, &component, "duplicate"), 0);
    assert_eq!(read_stream(&js, &stream_name).await.len(), 42);
    js.delete_stream(&stream_name).await.unwrap();
}

#[tokio::test]
async fn inbound_applies_events_and_rejects_poison_messages() {
    let Some(url) = nats_url() else { return };
    let stream_name = unique("IN");
    let subject = unique("in");
    let js = jetstream(&url).await;
    js.create_stream(stream::Config {
        name: stream_name.clone(),
        subjects: vec![format!("{subject}.>")],
        ..Default::default()
    })
    .await
    .unwrap();
    let messages: Vec<(String, Vec<u8>)> = vec![
        ("doctor".into(), br#"{"id": 1, "v": 1, "name": "Ana"}"#.to_vec()),
        ("doctor".into(), b"not json".to_vec()),
        ("doctor".into(), br#"{"name": "no key"}"#.to_vec()),
        ("doctor".into(), format!(r#"{{"id": 2, "v": 1, "x": "{}"}}"#, "a".repeat(2000)).into_bytes()),
        ("doctor".into(), br#"{"specversion":"1.0","id":"ce-1","source":"/emr","type":"doctor.moved","time":"2026-11-01T00:00:00Z","data":{"id":3,"v":5,"city":"Oslo"}}"#.to_vec()),
        ("doctor".into(), br#"{"id": 1, "v": 1, "name": "Ana"}"#.to_vec()),
    ];
    for (collection, payload) in &messages {
        js.publish(format!("{subject}.{collection}"), payload.clone().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&format!(
        "[nats]\nurl = \"{url}\"\n[[nats.inbound]]\nstream = \"{stream_name}\"\nsubject = \"{subject}.doctor\"\ncollection = \"doctor\"\nconsumer = \"reader\"\n"
    ));
    config.limits.event_bytes_max = 1024;
    config.limits.request_bytes_max = 1 << 20;
    let engine = Engine::open(&config, dir.path()).unwrap();
    let connectors = sluice_nats::start(engine.clone(), config.nats.clone().unwrap())
        .await
        .unwrap();
    let component = format!("nats-inbound:{stream_name}:reader");
    eventually("six messages handled", || async {
        ["applied", "noop", "stale", "rejected"]
            .iter()
            .map(|outcome| count(&engine, &component, outcome))
            .sum::<u64>()
            == 6
    })
    .await;
    assert_eq!(count(&engine, &component, "applied"), 2);
    assert_eq!(count(&engine, &component, "rejected"), 3);
    assert_eq!(count(&engine, &component, "noop"), 1, "the repeated event");
    let doc = |id: &str| {
        let key = sluice_core::Key::from_segments(&[id], 1).unwrap();
        engine
            .get("doctor", &key)
            .unwrap()
            .map(|stored| serde_json::from_slice::<Value>(&stored.doc).unwrap())
    };
    assert_eq!(doc("1"), Some(json!({"id": 1, "v": 1, "name": "Ana"})));
    assert_eq!(doc("3"), Some(json!({"id": 3, "v": 5, "city": "Oslo"})));
    assert_eq!(doc("2"), None, "the oversized event is rejected");
    let rejected: Vec<Value> = engine
        .rejected("doctor", 0, 10)
        .unwrap()
        .iter()
        .map(|bytes| serde_json::from_slice(bytes).unwrap())
        .collect();
    let mut rejected = rejected;
    // Rejections are spread over the partitions: sort them back into message order.
    rejected.sort_by_key(|r| {
        r["origin"]
            .as_str()
            .unwrap()
            .rsplit(' ')
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    });
    let origins: Vec<&str> = rejected
        .iter()
        .map(|r| r["origin"].as_str().unwrap())
        .collect();
    assert_eq!(
        origins,
        (2..=4)
            .map(|sequence| format!(
                "nats stream {stream_name} subject {subject}.doctor sequence {sequence}"
            ))
            .collect::<Vec<_>>()
    );
    assert!(
        rejected[0]["reason"]
            .as_str()
            .unwrap()
            .contains("malformed JSON")
    );
    assert!(
        rejected[2]["reason"]
            .as_str()
            .unwrap()
            .contains("over the limit")
    );
    // Everything was acknowledged: nothing pending, nothing waiting for an ack.
    let stream = js.get_stream(&stream_name).await.unwrap();
    let consumer: jetstream::consumer::PullConsumer = stream.get_consumer("reader").await.unwrap();
    eventually("every message acknowledged", || {
        let mut consumer = consumer.clone();
        async move {
            let info = consumer.info().await.unwrap();
            info.num_ack_pending == 0 && info.num_pending == 0
        }
    })
    .await;
    connectors.stop().await;
    js.delete_stream(&stream_name).await.unwrap();
}

#[tokio::test]
async fn an_unreachable_server_is_reported_and_retried() {
    if nats_url().is_none() {
        return;
    }
    // A port nothing listens on yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("nats://127.0.0.1:{port}");
    let config = config(&format!(
        "[nats]\nurl = \"{url}\"\nretry_delay_max_ms = 200\n[nats.outbound]\n"
    ));
    let engine = Engine::open(&config, dir.path()).unwrap();
    submit(&engine, "doctor", "{\"id\": 1, \"v\": 1}\n").await;
    // Nothing answers: the connector starts anyway and retries.
    let connectors = sluice_nats::start(engine.clone(), config.nats.clone().unwrap())
        .await
        .unwrap();
    let outbound = "nats-outbound:SLUICE_CHANGES";
    eventually("the outage reported", || async {
        let status = engine.component(outbound).status();
        !status.up && !status.detail.is_empty() && status.detail != "starting"
    })
    .await;
    assert!(!engine.component("nats-connection").status().up);
    // The server comes (back) on the same port: the connector connects and publishes.
    let Some(server) = NatsServer::start(port) else {
        connectors.stop().await;
        return;
    };
    eventually("published after the server came up", || async {
        count(&engine, outbound, "published") == 1
    })
    .await;
    assert!(engine.component("nats-connection").status().up);
    connectors.stop().await;
    drop(server);
}

/// A private nats-server with JetStream on its own port and directory, for outages.
struct NatsServer {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    fn start(port: u16) -> Option<Self> {
        let binary =
            std::env::var("SLUICE_TEST_NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
        let dir = tempfile::tempdir().ok()?;
        let child = std::process::Command::new(&binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        match child {
            Ok(child) => Some(Self { child, _dir: dir }),
            Err(error) => {
                eprintln!("skipped: cannot run {binary} ({error}); set SLUICE_TEST_NATS_SERVER");
                None
            }
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
