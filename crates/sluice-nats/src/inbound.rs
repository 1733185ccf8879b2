//! Inbound readers: one durable pull consumer per `[[nats.inbound]]` entry. Messages are
//! taken in batches of what is ready (up to `fetch_messages_max`), applied through the
//! same processor as HTTP bodies, and acknowledged only once `submit` answered, which it
//! does after the fsync. A message that is not a valid event (not JSON, no key, too
//! large, ...) is rejected into the collection's rejected log with its subject and
//! sequence, and acknowledged like the others, so it never blocks the stream.
//!
//! Redeliveries (a crash between the commit and the acknowledgement) are harmless: stale
//! or a no-op by version, or, in collections without a version field, dropped by the
//! event's id: its CloudEvents `id`, else `nats:<stream>:<sequence>`.

use crate::NatsError;
use async_nats::jetstream::{self, consumer::AckPolicy, consumer::pull};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use sluice_core::config::InboundConfig;
use sluice_core::event::{self, CollectionSpec, EventError, Limits};
use sluice_engine::Backoff;
use sluice_engine::input::{self, Input};
use sluice_engine::{Component, Engine, EngineError, ItemResult, Queued, Status};
use std::time::Duration;
use tokio::sync::watch;

pub(crate) async fn run(
    engine: Engine,
    jetstream: jetstream::Context,
    config: InboundConfig,
    backoff: Backoff,
    mut stopping: watch::Receiver<bool>,
) {
    let component = engine.component(&format!(
        "nats-inbound:{}:{}",
        config.stream, config.consumer
    ));
    let reader = Reader {
        engine,
        jetstream,
        config,
        component,
        backoff,
    };
    crate::supervise(&reader, backoff, &mut stopping).await;
}

struct Reader {
    engine: Engine,
    jetstream: jetstream::Context,
    config: InboundConfig,
    component: Component,
    backoff: Backoff,
}

impl crate::Attempt for Reader {
    fn what(&self) -> &str {
        "inbound reader"
    }

    fn component(&self) -> &Component {
        &self.component
    }

    async fn attempt(&self, stopping: &mut watch::Receiver<bool>) -> Result<(), NatsError> {
        self.read_until_stopped(stopping).await
    }
}

impl Reader {
    async fn read_until_stopped(
        &self,
        stopping: &mut watch::Receiver<bool>,
    ) -> Result<(), NatsError> {
        if !crate::wait_connected(&self.jetstream, &self.component, stopping).await {
            return Ok(());
        }
        let config = &self.config;
        let stream = self
            .jetstream
            .get_stream(&config.stream)
            .await
            .map_err(|error| NatsError::JetStream(format!("stream {}: {error}", config.stream)))?;
        let consumer: jetstream::consumer::PullConsumer = stream
            .get_or_create_consumer(
                &config.consumer,
                pull::Config {
                    durable_name: Some(config.consumer.clone()),
                    filter_subject: config.subject.clone(),
                    // Not `All`: messages delivered to an earlier process that died are
                    // still unacknowledged, and acknowledging a later one must not cover
                    // them before they are redelivered and applied.
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: Duration::from_millis(config.ack_wait_ms),
                    // Room for the batches in flight and the next ones being pulled.
                    max_ack_pending: i64::try_from(
                        config.fetch_messages_max * (config.batches_in_flight_max + 2),
                    )
                    .unwrap_or(i64::MAX),
                    ..Default::default()
                },
            )
            .await
            .map_err(|error| {
                NatsError::JetStream(format!("consumer {}: {error}", config.consumer))
            })?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(config.fetch_messages_max)
            .messages()
            .await
            .map_err(NatsError::jetstream)?;
        let mut batches = messages.ready_chunks(config.fetch_messages_max);
        self.component.set_up(format!(
            "reading {} of stream {} into {}",
            config.subject, config.stream, config.collection
        ));
        // Batches queued in the processor and not yet durable, oldest first: queueing the
        // next batch before the last one is durable lets the writers commit several at
        // once, and acknowledging in queue order keeps every message acknowledged only
        // after its own commit.
        let mut in_flight = FuturesOrdered::new();
        let in_flight_max = config.batches_in_flight_max.max(1);
        let mut stopped = false;
        let mut stopping_backoff = stopping.clone();
        loop {
            tokio::select! {
                biased;
                Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                    let (batch, results): (Vec<jetstream::Message>, Result<Vec<ItemResult>, EngineError>) = done;
                    self.count(&results?);
                    for message in &batch {
                        message.ack().await.map_err(NatsError::jetstream)?;
                    }
                }
                () = crate::stop_requested(stopping), if !stopped => stopped = true,
                batch = batches.next(), if !stopped && in_flight.len() < in_flight_max => {
                    let Some(batch) = batch else {
                        return Err(NatsError::JetStream("the message stream ended".into()));
                    };
                    // An error in the batch (a missed heartbeat, say) drops the batch
                    // unacknowledged: JetStream redelivers it to the next reader.
                    let batch: Vec<jetstream::Message> = batch
                        .into_iter()
                        .collect::<Result<_, _>>()
                        .map_err(NatsError::jetstream)?;
                    let queued = self.enqueue(&batch, &mut stopping_backoff).await?;
                    in_flight.push_back(async move { (batch, queued.results().await) });
                }
            }
            if stopped && in_flight.is_empty() {
                return Ok(());
            }
        }
    }

    /// Queues the batch's events in the processor, waiting while it is overloaded (an
    /// overloaded processor is waited for, not a reason to drop anything).
    async fn enqueue(
        &self,
        batch: &[jetstream::Message],
        stopping: &mut watch::Receiver<bool>,
    ) -> Result<Queued, NatsError> {
        let spec = self.engine.collection(&self.config.collection)?;
        let limits = self.engine.event_limits();
        let mut failures = 0;
        loop {
            let inputs = batch
                .iter()
                .map(|message| {
                    let sequence = message.info().map_or(0, |info| info.stream_sequence);
                    inbound_input(
                        spec,
                        limits,
                        &self.config.stream,
                        &message.subject,
                        sequence,
                        &message.payload,
                    )
                })
                .collect();
            match self.engine.enqueue(&self.config.collection, inputs).await {
                Ok(queued) => return Ok(queued),
                Err(EngineError::Overloaded { .. }) => {
                    failures += 1;
                    self.component.count("overloaded", 1);
                    if !crate::sleep(self.backoff, failures, stopping).await {
                        return Err(NatsError::Engine(EngineError::Closed));
                    }
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    fn count(&self, results: &[ItemResult]) {
        for status in [
            Status::Applied,
            Status::Noop,
            Status::Stale,
            Status::Rejected,
        ] {
            let count = results
                .iter()
                .filter(|result| result.status == status)
                .count();
            if count > 0 {
                let name = match status {
                    Status::Applied => "applied",
                    Status::Noop => "noop",
                    Status::Stale => "stale",
                    Status::Rejected => "rejected",
                };
                self.component.count(name, count as u64);
            }
        }
    }
}

/// One inbound message as processor input: an event (bare partial document or
/// CloudEvent) whose id defaults to its stream position, or a rejection that names the
/// subject and sequence.
pub fn inbound_input(
    spec: &CollectionSpec,
    limits: Limits,
    stream: &str,
    subject: &str,
    sequence: u64,
    payload: &[u8],
) -> Input {
    let origin = || format!("nats stream {stream} subject {subject} sequence {sequence}");
    let reject = |error: EventError| {
        let text =
            String::from_utf8_lossy(&payload[..payload.len().min(input::REJECTED_TEXT_BYTES_MAX)]);
        Input::Reject(input::rejection(error.to_string(), &text, &origin()))
    };
    match event::parse(spec, payload, limits) {
        Ok(mut event) => {
            event
                .id
                .get_or_insert_with(|| format!("nats:{stream}:{sequence}"));
            Input::Event(event)
        }
        Err(error) => reject(error),
    }
}
