//! JetStream helpers shared by the connector's integration tests and the binary's NATS
//! crash test (which includes this file by path).
#![allow(dead_code, clippy::unwrap_used)]

use async_nats::jetstream::{self, consumer::pull};
use futures_util::StreamExt;
use serde_json::Value;
use std::time::Duration;

/// `SLUICE_TEST_NATS_URL`, or `None` after saying why the test is skipped.
pub fn nats_url() -> Option<String> {
    match std::env::var("SLUICE_TEST_NATS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!(
                "skipped: set SLUICE_TEST_NATS_URL (e.g. nats://127.0.0.1:4222) to run the NATS tests"
            );
            None
        }
    }
}

/// A name no other test run uses, so tests share one server without seeing each other.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    format!("{prefix}{}x{nanos}", std::process::id())
}

pub async fn jetstream(url: &str) -> jetstream::Context {
    jetstream::new(async_nats::connect(url).await.unwrap())
}

/// Every message of `stream`: (message id, cursor header, payload).
pub async fn read_stream(js: &jetstream::Context, name: &str) -> Vec<(String, String, Value)> {
    let mut stream = js.get_stream(name).await.unwrap();
    let count = stream.info().await.unwrap().state.messages as usize;
    if count == 0 {
        return Vec::new();
    }
    let consumer = stream
        .create_consumer(pull::Config {
            // Reading is not consuming: no acknowledgements, so no limit on pending ones.
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut out = Vec::with_capacity(count);
    // One pull returns a bounded batch: pull until the stream is read.
    while out.len() < count {
        let mut messages = consumer
            .fetch()
            .max_messages(count - out.len())
            .expires(Duration::from_secs(5))
            .messages()
            .await
            .unwrap();
        let before = out.len();
        while let Some(message) = messages.next().await {
            let message = message.unwrap();
            let headers = message.headers.clone().unwrap_or_default();
            let header = |name: &str| {
                headers
                    .get(name)
                    .map(|value| value.as_str().to_owned())
                    .unwrap_or_default()
            };
            out.push((
                header("Nats-Msg-Id"),
                header("Sluice-Cursor"),
                serde_json::from_slice(&message.payload).unwrap(),
            ));
        }
        assert!(
            out.len() > before,
            "the stream has {count} messages, read {}",
            out.len()
        );
    }
    out
}
