//! `[nats]`: the NATS JetStream connector. The types live here, beside the rest of
//! `sluice.toml`, so that one struct is validated at start; the connector itself is the
//! `sluice-nats` crate.

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URL(s), comma-separated (`nats://127.0.0.1:4222`). Credentials in the URL
    /// are never logged.
    pub url: String,
    /// Name of an environment variable holding a token for the server, if it needs one.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Time one connection attempt may take.
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Longest pause between two reconnection or retry attempts (backoff doubles up to it).
    #[serde(default = "defaults::retry_delay_max_ms")]
    pub retry_delay_max_ms: u64,
    /// Time a JetStream request (publish acknowledgement, fetch) may take.
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Publish every change record to a stream.
    #[serde(default)]
    pub outbound: Option<OutboundConfig>,
    /// Read events from JetStream consumers.
    #[serde(default)]
    pub inbound: Vec<InboundConfig>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    /// The stream; created (subjects `subject_prefix.>`) if it does not exist.
    #[serde(default = "defaults::outbound_stream")]
    pub stream: String,
    /// Records of collection `c` go to subject `subject_prefix.c`.
    #[serde(default = "defaults::subject_prefix")]
    pub subject_prefix: String,
    /// The stream's deduplication window when Sluice creates it.
    #[serde(default = "defaults::duplicate_window_s")]
    pub duplicate_window_s: u64,
    /// The publisher's consumer name in Sluice (its durable cursor).
    #[serde(default = "defaults::outbound_consumer")]
    pub consumer: String,
    /// Change records published before their acknowledgements are awaited and the
    /// cursor is committed.
    #[serde(default = "defaults::batch_records_max")]
    pub batch_records_max: usize,
    /// Where a publisher without a committed cursor starts: the oldest record kept
    /// (`beginning`) or the head (`now`).
    #[serde(default)]
    pub start: OutboundStart,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OutboundStart {
    #[default]
    Beginning,
    Now,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundConfig {
    /// The stream to read; it must exist (Sluice does not own inbound streams).
    pub stream: String,
    /// Subject filter of the consumer (NATS wildcards allowed); its messages go to
    /// `collection`.
    pub subject: String,
    pub collection: String,
    /// The durable JetStream consumer; created if missing.
    #[serde(default = "defaults::inbound_consumer")]
    pub consumer: String,
    /// Messages fetched, applied and acknowledged together.
    #[serde(default = "defaults::fetch_messages_max")]
    pub fetch_messages_max: usize,
    /// Batches queued in the processor before the oldest is durable (and acknowledged).
    #[serde(default = "defaults::batches_in_flight_max")]
    pub batches_in_flight_max: usize,
    /// How long JetStream waits for an acknowledgement before it redelivers.
    #[serde(default = "defaults::ack_wait_ms")]
    pub ack_wait_ms: u64,
}

mod defaults {
    pub fn connect_timeout_ms() -> u64 {
        5_000
    }
    pub fn retry_delay_max_ms() -> u64 {
        5_000
    }
    pub fn request_timeout_ms() -> u64 {
        10_000
    }
    pub fn outbound_stream() -> String {
        "SLUICE_CHANGES".into()
    }
    pub fn subject_prefix() -> String {
        "sluice.changes".into()
    }
    pub fn duplicate_window_s() -> u64 {
        120
    }
    pub fn outbound_consumer() -> String {
        "nats-outbound".into()
    }
    pub fn batch_records_max() -> usize {
        1_000
    }
    pub fn inbound_consumer() -> String {
        "sluice".into()
    }
    pub fn fetch_messages_max() -> usize {
        1_000
    }
    pub fn batches_in_flight_max() -> usize {
        // Measured: 4 in flight 59k msg/s, 16 94k, 64 87k (BENCHMARKS.md).
        16
    }
    pub fn ack_wait_ms() -> u64 {
        30_000
    }
}

/// Limits that keep a config from asking for unbounded batches.
pub const BATCH_MAX: usize = 10_000;

impl NatsConfig {
    pub(super) fn validate(&self, collections: &[&str]) -> Result<(), String> {
        if self.url.trim().is_empty() {
            return Err("nats.url is empty".into());
        }
        if let Some(outbound) = &self.outbound {
            check_token("nats.outbound.stream", &outbound.stream, false)?;
            for token in outbound.subject_prefix.split('.') {
                check_token("nats.outbound.subject_prefix", token, false)?;
            }
            check_batch(
                "nats.outbound.batch_records_max",
                outbound.batch_records_max,
            )?;
        }
        let mut consumers = std::collections::HashSet::new();
        for inbound in &self.inbound {
            check_token("nats.inbound.stream", &inbound.stream, false)?;
            check_token("nats.inbound.consumer", &inbound.consumer, false)?;
            for token in inbound.subject.split('.') {
                check_token("nats.inbound.subject", token, true)?;
            }
            if !collections.contains(&inbound.collection.as_str()) {
                return Err(format!(
                    "nats.inbound: collection {:?} is not defined",
                    inbound.collection
                ));
            }
            if !consumers.insert((&inbound.stream, &inbound.consumer)) {
                return Err(format!(
                    "nats.inbound: consumer {:?} of stream {:?} is used twice",
                    inbound.consumer, inbound.stream
                ));
            }
            check_batch(
                "nats.inbound.fetch_messages_max",
                inbound.fetch_messages_max,
            )?;
        }
        Ok(())
    }
}

/// A subject token or a stream/consumer name: no separators, wildcards or whitespace.
fn check_token(what: &str, token: &str, wildcards: bool) -> Result<(), String> {
    let wildcard = wildcards && (token == "*" || token == ">");
    let plain = !token.is_empty()
        && token.len() <= 128
        && token
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b".*>/\\".contains(&b));
    if wildcard || plain {
        Ok(())
    } else {
        Err(format!(
            "{what}: {token:?} is not a valid NATS name or subject token"
        ))
    }
}

fn check_batch(what: &str, value: usize) -> Result<(), String> {
    if value == 0 || value > BATCH_MAX {
        return Err(format!("{what} must be 1..={BATCH_MAX}"));
    }
    Ok(())
}
