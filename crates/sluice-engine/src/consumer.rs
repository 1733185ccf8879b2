//! Consumers: whatever follows the change log (subscriptions, publishers, projections,
//! snapshots) with a named, durable cursor.
//!
//! A [`Consumer`] prefetches pages of change records into a bounded channel, hands them
//! out with [`Consumer::next_batch`], and stores its position with [`Consumer::commit`]
//! (or [`Consumer::commit_with`], which writes the consumer's own output in the same
//! atomic, fsynced batch: exactly-once effects inside the store). After a restart it
//! resumes from the committed position, so delivery is at-least-once: whatever was handed
//! out but not committed comes again.

use crate::{ChangesPage, Engine, EngineError};
use sluice_core::Cursor;
use sluice_store::Batch;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Where a consumer with no committed position starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest record retention kept.
    Beginning,
    /// Only records written after the consumer is created.
    Head,
}

#[derive(Clone, Copy, Debug)]
pub struct ConsumerOptions {
    /// Records per batch handed out.
    pub batch_records_max: usize,
    /// Batches read ahead and waiting in memory.
    pub prefetch_batches_max: usize,
    /// How long one read waits for new records before it tries again.
    pub poll_wait_ms: u64,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            batch_records_max: 1_000,
            prefetch_batches_max: 4,
            poll_wait_ms: 1_000,
        }
    }
}

/// How far a consumer's committed position is behind the durable head.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lag {
    pub records: u64,
    /// Age of the oldest record not yet committed; 0 when caught up.
    pub seconds: f64,
}

pub struct Consumer {
    engine: Engine,
    name: String,
    committed: Cursor,
    batches: mpsc::Receiver<Result<ChangesPage, EngineError>>,
    paused: watch::Sender<bool>,
    reader: JoinHandle<()>,
}

/// Consumer names are keys in the store: printable, short, no separators.
const NAME_BYTES_MAX: usize = 128;

/// Checks a consumer or subscription name: it is part of a store key.
pub(crate) fn validate_name(name: &str) -> Result<(), EngineError> {
    let valid = !name.is_empty()
        && name.len() <= NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b));
    if valid {
        return Ok(());
    }
    Err(EngineError::Invalid(format!(
        "name {name:?} must be 1 to {NAME_BYTES_MAX} characters of a-z, A-Z, 0-9, '_', '-', '.', ':'"
    )))
}

/// A stored consumer position back as a cursor; anything else is a corrupt store.
pub(crate) fn decode_position(bytes: &[u8], partitions: usize) -> Result<Cursor, EngineError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| Cursor::parse(text, partitions).ok())
        .ok_or(EngineError::Store(sluice_store::StoreError::Corrupt {
            what: "consumer position",
        }))
}

/// Every stored consumer position, decoded.
pub(crate) fn stored_positions(
    shared: &crate::Shared,
) -> Result<Vec<(String, Cursor)>, EngineError> {
    let partitions = shared.durable.len();
    shared
        .store
        .consumers()?
        .into_iter()
        .map(|(name, position)| Ok((name, decode_position(&position, partitions)?)))
        .collect()
}

impl Engine {
    /// The committed position of consumer `name`, if it has one.
    pub(crate) fn stored_position(&self, name: &str) -> Result<Option<Cursor>, EngineError> {
        let partitions = usize::from(self.partitions());
        self.shared()
            .store
            .get_consumer(name)?
            .map(|bytes| decode_position(&bytes, partitions))
            .transpose()
    }

    /// Every consumer's committed position (subscriptions' included), by name.
    pub(crate) fn consumer_positions(&self) -> Result<Vec<(String, Cursor)>, EngineError> {
        stored_positions(self.shared())
    }

    /// Change records (of all collections) between `position` and the durable head.
    pub(crate) fn records_behind(&self, position: &Cursor) -> u64 {
        self.head()
            .offsets()
            .iter()
            .zip(position.offsets())
            .map(|(head, position)| head.saturating_sub(*position))
            .sum()
    }

    /// Commits a batch of metadata (and a consumer's output) durably.
    pub(crate) fn commit_meta(&self, batch: Batch<'_>) -> Result<(), EngineError> {
        let shared = self.shared();
        if shared.poisoned.load(Ordering::Acquire) {
            return Err(EngineError::Poisoned);
        }
        batch.commit()?;
        shared
            .sync
            .sync(&shared.store, &shared.metrics.sync_seconds)?;
        Ok(())
    }

    /// Opens the consumer `name`, at its committed position if it has one.
    pub fn consumer(
        &self,
        name: &str,
        start: StartAt,
        options: ConsumerOptions,
    ) -> Result<Consumer, EngineError> {
        validate_name(name)?;
        let committed = match self.stored_position(name)? {
            Some(position) => position,
            None => match start {
                StartAt::Beginning => self.oldest(),
                StartAt::Head => self.head(),
            },
        };
        let (sender, batches) = mpsc::channel(options.prefetch_batches_max.max(1));
        let (paused, paused_receiver) = watch::channel(false);
        let reader = tokio::spawn(read_ahead(
            self.clone(),
            committed.clone(),
            options,
            sender,
            paused_receiver,
        ));
        Ok(Consumer {
            engine: self.clone(),
            name: name.to_owned(),
            committed,
            batches,
            paused,
            reader,
        })
    }
}

async fn read_ahead(
    engine: Engine,
    mut position: Cursor,
    options: ConsumerOptions,
    sender: mpsc::Sender<Result<ChangesPage, EngineError>>,
    mut paused: watch::Receiver<bool>,
) {
    let wait = Duration::from_millis(options.poll_wait_ms);
    loop {
        if paused.wait_for(|paused| !paused).await.is_err() {
            return;
        }
        let page = match engine
            .changes(position.clone(), options.batch_records_max, wait)
            .await
        {
            Ok(page) if page.records.is_empty() => continue,
            Ok(page) => page,
            Err(error) => {
                let _ = sender.send(Err(error)).await;
                return;
            }
        };
        position = page.next.clone();
        // A read that began before a pause is held back until the consumer resumes.
        if paused.wait_for(|paused| !paused).await.is_err() || sender.send(Ok(page)).await.is_err()
        {
            return;
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Consumer {
    /// Stops reading ahead and waits until the reader let go of the engine (dropping a
    /// consumer stops it too, without waiting).
    pub async fn close(mut self) {
        self.reader.abort();
        let _ = (&mut self.reader).await;
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The position stored by the last commit.
    pub fn committed(&self) -> &Cursor {
        &self.committed
    }

    /// The next batch of change records (its `next` is the position after it). Waits
    /// while nothing new is durable; `None` once the engine shut down.
    pub async fn next_batch(&mut self) -> Option<Result<ChangesPage, EngineError>> {
        self.batches.recv().await
    }

    /// Stores `through` (a batch's `next`, or a record's cursor) durably as the
    /// consumer's position.
    pub fn commit(&mut self, through: &Cursor) -> Result<(), EngineError> {
        self.commit_with(through, |_| {})
    }

    /// Stores `through` and the consumer's own output (`write` adds it to the batch) in
    /// one atomic, fsynced write.
    pub fn commit_with(
        &mut self,
        through: &Cursor,
        write: impl FnOnce(&mut Batch<'_>),
    ) -> Result<(), EngineError> {
        let mut batch = self.engine.shared().store.batch();
        write(&mut batch);
        batch.put_consumer(&self.name, through.to_string().as_bytes());
        self.engine.commit_meta(batch)?;
        self.committed = through.clone();
        Ok(())
    }

    /// Stops handing out new batches (batches already queued stay available).
    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    pub fn resume(&self) {
        self.paused.send_replace(false);
    }

    /// How far the committed position is behind what is durable.
    pub fn lag(&self) -> Result<Lag, EngineError> {
        self.engine.lag(&self.committed)
    }
}

impl Engine {
    /// How far `position` is behind what is durable: records, and the age of the oldest
    /// record after it.
    pub fn lag(&self, position: &Cursor) -> Result<Lag, EngineError> {
        let records = self.records_behind(position);
        if records == 0 {
            return Ok(Lag {
                records,
                seconds: 0.0,
            });
        }
        let oldest = self.read_changes(position, usize::from(self.partitions()), None)?;
        let now_ms = crate::writer::now_ms();
        let oldest_ms = oldest
            .records
            .iter()
            .map(|record| sluice_core::change::commit_ts_ms(record))
            .min()
            .unwrap_or(now_ms);
        Ok(Lag {
            records,
            seconds: now_ms.saturating_sub(oldest_ms) as f64 / 1000.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::Config;

    fn config() -> Config {
        Config::from_toml("[engine]\npartitions = 3\n[[collections]]\nname = \"doctor\"\nkey = [\"/id\"]\nversion = \"/v\"\n")
            .unwrap()
    }

    async fn post(engine: &Engine, ids: std::ops::Range<u32>, version: u32) {
        let lines: String = ids
            .map(|id| format!("{{\"id\": {id}, \"v\": {version}}}\n"))
            .collect();
        crate::test_support::submit_ndjson(engine, "doctor", &lines).await;
    }

    const OPTIONS: ConsumerOptions = ConsumerOptions {
        batch_records_max: 7,
        prefetch_batches_max: 2,
        poll_wait_ms: 50,
    };

    async fn take(consumer: &mut Consumer, records: usize) -> Cursor {
        let mut seen = 0;
        let mut next = consumer.committed().clone();
        while seen < records {
            let page = consumer.next_batch().await.unwrap().unwrap();
            assert!(page.records.len() <= OPTIONS.batch_records_max);
            seen += page.records.len();
            next = page.next;
        }
        assert_eq!(seen, records);
        next
    }

    #[tokio::test]
    async fn resumes_from_the_committed_position_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = Engine::open(&config(), dir.path()).unwrap();
            post(&engine, 0..30, 1).await;
            let mut consumer = engine
                .consumer("archiver", StartAt::Beginning, OPTIONS)
                .unwrap();
            let through = take(&mut consumer, 30).await;
            assert_eq!(consumer.lag().unwrap().records, 30);
            consumer.commit(&through).unwrap();
            assert_eq!(
                consumer.lag().unwrap(),
                Lag {
                    records: 0,
                    seconds: 0.0
                }
            );
            post(&engine, 0..10, 2).await;
            // Handed out but not committed: comes again after the restart.
            take(&mut consumer, 10).await;
            assert_eq!(consumer.lag().unwrap().records, 10);
            consumer.close().await;
        }
        let engine = Engine::open(&config(), dir.path()).unwrap();
        let mut consumer = engine.consumer("archiver", StartAt::Head, OPTIONS).unwrap();
        assert_eq!(consumer.committed().offsets().iter().sum::<u64>(), 30);
        let through = take(&mut consumer, 10).await;
        consumer.commit(&through).unwrap();
        assert_eq!(through, engine.head());
        let fresh = engine.consumer("late", StartAt::Head, OPTIONS).unwrap();
        assert_eq!(fresh.committed(), &engine.head());
        assert!(engine.consumer("bad name", StartAt::Head, OPTIONS).is_err());
    }

    #[tokio::test]
    async fn pause_stops_reading_ahead_and_output_commits_with_the_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(&config(), dir.path()).unwrap();
        let mut consumer = engine
            .consumer("projection", StartAt::Beginning, OPTIONS)
            .unwrap();
        consumer.pause();
        post(&engine, 0..5, 1).await;
        // While paused, nothing new is read: the channel stays empty past a read's wait.
        let idle = tokio::time::timeout(Duration::from_millis(300), consumer.next_batch()).await;
        assert!(idle.is_err(), "a paused consumer delivered a batch");
        consumer.resume();
        let through = take(&mut consumer, 5).await;
        consumer
            .commit_with(&through, |batch| {
                batch.put_rejected("doctor", 999, b"{\"from\":\"projection\"}".to_vec())
            })
            .unwrap();
        let output = engine.rejected("doctor", 998, 10).unwrap();
        assert_eq!(
            output.len(),
            1,
            "the consumer's output committed with its cursor"
        );
    }
}
