//! The outbound publisher: a change-log consumer that publishes every record to
//! `subject_prefix.<collection>` and commits its cursor once JetStream acknowledged the
//! whole batch.
//!
//! A record's identity is its partition and offset, so the message id (`Nats-Msg-Id`) is
//! `<instance id>:<partition>:<offset>`: JetStream drops a retry inside its duplicate
//! window, and a new data directory never collides with an old one's ids. (The cursor of a
//! record, which the `Sluice-Cursor` header and the payload carry, also holds the other
//! partitions' positions at the time it was read, which depend on timing: it is a resume
//! point, not an identity.) After an outage longer than the window, the publisher reads
//! the stream's last message and skips the records its cursor covers, so a restart
//! neither loses records nor publishes them twice.

use crate::NatsError;
use async_nats::jetstream::{self, message::PublishMessage};
use sluice_core::Cursor;
use sluice_core::config::{OutboundConfig, OutboundStart};
use sluice_engine::Backoff;
use sluice_engine::{ChangesPage, Component, ConsumerOptions, Engine, StartAt};
use std::time::Duration;
use tokio::sync::watch;

pub(crate) async fn run(
    engine: Engine,
    jetstream: jetstream::Context,
    config: OutboundConfig,
    backoff: Backoff,
    request_timeout: Duration,
    mut stopping: watch::Receiver<bool>,
) {
    let component = engine.component(&format!("nats-outbound:{}", config.stream));
    let publisher = Publisher {
        engine: engine.clone(),
        jetstream,
        config,
        request_timeout,
        component,
    };
    crate::supervise(&publisher, backoff, &mut stopping).await;
}

struct Publisher {
    engine: Engine,
    jetstream: jetstream::Context,
    config: OutboundConfig,
    request_timeout: Duration,
    component: Component,
}

/// The header with the cursor after a record: where a reader resumes the change log.
pub const CURSOR_HEADER: &str = "Sluice-Cursor";

/// The message id of the change record at `offset` of `partition` in data directory
/// `instance_id`.
pub fn message_id(instance_id: &str, partition: usize, offset: u64) -> String {
    format!("{instance_id}:{partition}:{offset}")
}

impl crate::Attempt for Publisher {
    fn what(&self) -> &str {
        "publisher"
    }

    fn component(&self) -> &Component {
        &self.component
    }

    async fn attempt(&self, stopping: &mut watch::Receiver<bool>) -> Result<(), NatsError> {
        self.publish_until_stopped(stopping).await
    }
}

impl Publisher {
    /// Ensures the stream, then publishes batch after batch. Returns `Ok` when asked to
    /// stop, an error when NATS failed (the caller backs off and starts over from the
    /// committed cursor).
    async fn publish_until_stopped(
        &self,
        stopping: &mut watch::Receiver<bool>,
    ) -> Result<(), NatsError> {
        if !crate::wait_connected(&self.jetstream, &self.component, stopping).await {
            return Ok(());
        }
        let stream = self.ensure_stream().await?;
        let start = match self.config.start {
            OutboundStart::Beginning => StartAt::Beginning,
            OutboundStart::Now => StartAt::Head,
        };
        let options = ConsumerOptions {
            batch_records_max: self.config.batch_records_max,
            prefetch_batches_max: 2,
            poll_wait_ms: 1_000,
        };
        let mut consumer = self
            .engine
            .consumer(&self.config.consumer, start, options)?;
        let published_through = self.last_published(&stream).await?;
        self.component.set_up(format!(
            "publishing to stream {} from cursor {}",
            self.config.stream,
            consumer.committed()
        ));
        loop {
            let page = tokio::select! {
                page = consumer.next_batch() => page,
                _ = stopping.wait_for(|stop| *stop) => return Ok(()),
            };
            let Some(page) = page else {
                return Ok(());
            };
            let page = page?;
            let next = page.next.clone();
            self.publish_page(page, published_through.as_ref()).await?;
            consumer.commit(&next)?;
        }
    }

    async fn ensure_stream(&self) -> Result<jetstream::stream::Stream, NatsError> {
        let config = jetstream::stream::Config {
            name: self.config.stream.clone(),
            subjects: vec![format!("{}.>", self.config.subject_prefix)],
            duplicate_window: Duration::from_secs(self.config.duplicate_window_s),
            ..Default::default()
        };
        self.jetstream
            .get_or_create_stream(config)
            .await
            .map_err(|error| {
                NatsError::JetStream(format!("stream {}: {error}", self.config.stream))
            })
    }

    /// The cursor of the stream's last message, when this data directory published it.
    async fn last_published(
        &self,
        stream: &jetstream::stream::Stream,
    ) -> Result<Option<Cursor>, NatsError> {
        let mut stream = stream.clone();
        let last_sequence = stream
            .info()
            .await
            .map_err(NatsError::jetstream)?
            .state
            .last_sequence;
        if last_sequence == 0 {
            return Ok(None);
        }
        let message = match stream.get_raw_message(last_sequence).await {
            Ok(message) => message,
            // Removed meanwhile (limits, purge): nothing to resume after.
            Err(error) => {
                tracing::debug!(%error, "Could not read the stream's last message.");
                return Ok(None);
            }
        };
        let header = |name: &str| {
            message
                .headers
                .get(name)
                .map(|value| value.as_str().to_owned())
        };
        let ours = header(async_nats::header::NATS_MESSAGE_ID.as_ref())
            .is_some_and(|id| id.split(':').next() == Some(self.engine.instance_id()));
        if !ours {
            return Ok(None);
        }
        Ok(header(CURSOR_HEADER).and_then(|cursor| self.engine.parse_cursor(&cursor).ok()))
    }

    /// Publishes every record of `page` that `skip_through` does not cover, and waits
    /// for all acknowledgements. A record's position comes with the page and its head is
    /// cut off without scanning the document (`change::split_record`); the record itself
    /// becomes the payload without a copy.
    async fn publish_page(
        &self,
        page: ChangesPage,
        skip_through: Option<&Cursor>,
    ) -> Result<(), NatsError> {
        let instance_id = self.engine.instance_id();
        let ChangesPage {
            records, positions, ..
        } = page;
        debug_assert_eq!(records.len(), positions.len());
        let mut acks = Vec::with_capacity(records.len());
        let mut skipped = 0;
        for (record, (partition, offset)) in records.into_iter().zip(positions) {
            let partition = usize::from(partition);
            if skip_through.is_some_and(|through| offset < through.offset(partition)) {
                skipped += 1;
                continue;
            }
            let malformed = |what: &str| {
                NatsError::Engine(sluice_engine::EngineError::Invalid(format!(
                    "change record {partition}:{offset}: {what}"
                )))
            };
            let members = sluice_core::change::split_record(&record)
                .and_then(|parts| parts.members())
                .ok_or_else(|| malformed("not the shape of a change record"))?;
            let collection = sluice_core::change::json_str_text(members.collection)
                .map_err(|error| malformed(&error.to_string()))?;
            let cursor = std::str::from_utf8(members.cursor)
                .map_err(|_| malformed("a cursor that is not text"))?;
            let subject = format!("{}.{}", self.config.subject_prefix, collection);
            let message = PublishMessage::build()
                .header(CURSOR_HEADER, cursor)
                .message_id(message_id(instance_id, partition, offset))
                .payload(record.into());
            let ack = self
                .jetstream
                .send_publish(subject, message)
                .await
                .map_err(NatsError::jetstream)?;
            acks.push(ack);
        }
        let mut duplicates = 0;
        let count = acks.len() as u64;
        for ack in acks {
            let ack = tokio::time::timeout(self.request_timeout, ack.into_future())
                .await
                .map_err(|_| NatsError::JetStream("no publish acknowledgement in time".into()))?
                .map_err(NatsError::jetstream)?;
            duplicates += u64::from(ack.duplicate);
        }
        self.component.count("published", count - duplicates);
        self.component.count("duplicate", duplicates);
        self.component.count("skipped", skipped);
        self.component.set_up(format!(
            "publishing to stream {}; last batch ended at {}",
            self.config.stream, page.next
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_id_names_the_directory_partition_and_offset() {
        assert_eq!(message_id("ab12", 1, 5), "ab12:1:5");
    }
}
