//! Change-log retention. A chunk of change records is removed once every consumer and
//! subscription has passed it, its newest record is older than `changes_kept_min_age_s`,
//! and at least `changes_kept_min_records` newer records remain in its partition. Readers
//! asking for removed records get [`EngineError::CursorExpired`] (HTTP 410), never a
//! silent gap.

use crate::{Engine, EngineError, Shared};
use sluice_core::Cursor;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

/// Chunks removed per committed batch: a pass removes everything it may, one batch of at
/// most this many at a time, so that a pass never holds a huge batch in memory and keeps
/// up with any ingest rate (a cap per pass made retention fall behind at 40,000 events/s:
/// 1,024 chunks per partition per minute were fewer than were written).
const CHUNKS_PER_BATCH_MAX: usize = 1_024;

impl Engine {
    /// The cursor of the oldest records still kept.
    pub fn oldest(&self) -> Cursor {
        Cursor::from_offsets(
            self.shared()
                .retained_from
                .iter()
                .map(|offset| offset.load(Ordering::Acquire))
                .collect(),
        )
    }

    /// Runs one retention pass now; returns how many records it removed.
    pub fn enforce_retention(&self) -> Result<u64, EngineError> {
        enforce(self.shared(), crate::writer::now_ms(), CHUNKS_PER_BATCH_MAX)
    }
}

fn enforce(shared: &Shared, now_ms: u64, chunks_per_batch: usize) -> Result<u64, EngineError> {
    assert!(chunks_per_batch > 0);
    let engine_config = &shared.config.engine;
    // The lowest position any consumer still needs, per partition.
    let mut needed: Vec<u64> = shared
        .durable
        .iter()
        .map(|offset| offset.load(Ordering::Acquire))
        .collect();
    for (name, cursor) in crate::consumer::stored_positions(shared)? {
        for (partition, offset) in cursor.offsets().iter().enumerate() {
            if *offset < needed[partition] {
                tracing::debug!(consumer = %name, partition, offset, "Retention waits for a consumer.");
                needed[partition] = *offset;
            }
        }
    }
    let age_limit_ms =
        now_ms.saturating_sub(engine_config.changes_kept_min_age_s.saturating_mul(1000));
    let mut removed = 0;
    for (partition, needed) in needed.into_iter().enumerate() {
        let head = shared.durable[partition].load(Ordering::Acquire);
        let keep_from = needed.min(head.saturating_sub(engine_config.changes_kept_min_records));
        let removed_before = removed;
        loop {
            let from = shared.retained_from[partition].load(Ordering::Acquire);
            let chunks = shared
                .store
                .oldest_chunks(partition as u16, from, chunks_per_batch)?;
            let listed = chunks.len();
            let mut batch = shared.store.batch();
            let mut retained_from = None;
            let mut eligible = 0;
            for chunk in chunks {
                let end = chunk.first_offset + chunk.count;
                if end > keep_from || chunk.newest_ts_ms > age_limit_ms {
                    break;
                }
                batch.remove_chunk(partition as u16, chunk.first_offset);
                retained_from = Some(end);
                removed += chunk.count;
                eligible += 1;
            }
            let Some(retained_from) = retained_from else {
                break;
            };
            // Readers check this before reading, and check continuity after, so a read
            // racing with the removal fails with CursorExpired rather than skip records.
            shared.retained_from[partition].fetch_max(retained_from, Ordering::AcqRel);
            batch.commit()?;
            if eligible < listed || listed < chunks_per_batch {
                break;
            }
        }
        if removed > removed_before {
            // The tombstones hide the records at once; dropping the tables they filled is
            // what gives their disk back (compaction alone takes far longer).
            let retained_from = shared.retained_from[partition].load(Ordering::Acquire);
            shared
                .store
                .drop_changes_before(partition as u16, retained_from)?;
        }
    }
    if removed > 0 {
        tracing::info!(removed, "Retention removed change records.");
    }
    Ok(removed)
}

/// The background pass; stops when the engine goes away.
pub(crate) struct RetentionThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RetentionThread {
    pub fn start(shared: Weak<Shared>, interval_ms: u64) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("sluice-retention".into())
            .spawn(move || {
                let interval = Duration::from_millis(interval_ms.max(100));
                loop {
                    std::thread::park_timeout(interval);
                    if stopping.load(Ordering::Acquire) {
                        return;
                    }
                    let Some(shared) = shared.upgrade() else {
                        return;
                    };
                    if let Err(error) =
                        enforce(&shared, crate::writer::now_ms(), CHUNKS_PER_BATCH_MAX)
                    {
                        tracing::warn!(%error, "Retention pass failed; the next one retries.");
                    }
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for RetentionThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{StartAt, SubscriptionSpec};
    use sluice_core::Config;

    fn config(min_records: u64) -> Config {
        let text = format!(
            "[engine]\npartitions = 2\nchanges_kept_min_age_s = 0\nchanges_kept_min_records = {min_records}\n\
             retention_interval_ms = 3600000\n[[collections]]\nname = \"doctor\"\nkey = [\"/id\"]\n"
        );
        Config::from_toml(&text).unwrap()
    }

    async fn post(engine: &Engine, ids: std::ops::Range<u32>) {
        let lines: String = ids
            .map(|id| format!("{{\"id\": {id}, \"n\": {id}}}\n"))
            .collect();
        crate::test_support::submit_ndjson(engine, "doctor", &lines).await;
    }

    /// How many change records are readable from the oldest one kept.
    async fn kept_records(engine: &Engine) -> usize {
        engine
            .changes(engine.oldest(), 100, Duration::ZERO)
            .await
            .unwrap()
            .records
            .len()
    }

    #[tokio::test]
    async fn removes_only_what_every_consumer_passed() {
        let dir = tempfile::tempdir().unwrap();
        let start = Cursor::start(2);
        {
            let engine = Engine::open(&config(0), dir.path()).unwrap();
            post(&engine, 0..10).await;
            post(&engine, 10..20).await;
            engine
                .put_subscription("s", SubscriptionSpec::default(), StartAt::Beginning)
                .unwrap();
            assert_eq!(
                engine.enforce_retention().unwrap(),
                0,
                "the subscription still needs everything"
            );
            let head = engine.head();
            engine.ack_subscription("s", &head).unwrap();
            assert_eq!(engine.enforce_retention().unwrap(), 20);
            assert_eq!(engine.oldest(), head);
            let expired = engine.changes(start.clone(), 10, Duration::ZERO).await;
            assert!(
                matches!(expired, Err(EngineError::CursorExpired { .. })),
                "{expired:?}"
            );
            post(&engine, 20..25).await;
            assert_eq!(kept_records(&engine).await, 5);
            // A later pass goes on from where the last one stopped.
            engine.ack_subscription("s", &engine.head()).unwrap();
            assert_eq!(engine.enforce_retention().unwrap(), 5);
            assert_eq!(engine.oldest(), engine.head());
            post(&engine, 25..30).await;
        }
        // After a restart, the retained start is read back from the store.
        let engine = Engine::open(&config(0), dir.path()).unwrap();
        assert_eq!(engine.oldest().offsets().iter().sum::<u64>(), 25);
        assert_eq!(
            kept_records(&engine).await,
            5,
            "the records after the last pass are all kept"
        );
        assert!(matches!(
            engine.changes(start, 10, Duration::ZERO).await,
            Err(EngineError::CursorExpired { .. })
        ));
    }

    #[tokio::test]
    async fn one_pass_removes_everything_it_may_however_many_batches() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(&config(0), dir.path()).unwrap();
        // Ten commits: ten chunks per partition that gets records.
        for round in 0..10 {
            post(&engine, round * 10..round * 10 + 10).await;
        }
        let head = engine.head();
        // Batches of two chunks: one pass needs several of them.
        assert_eq!(
            enforce(engine.shared(), crate::writer::now_ms(), 2).unwrap(),
            100
        );
        assert_eq!(engine.oldest(), head);
        post(&engine, 100..105).await;
        assert_eq!(kept_records(&engine).await, 5);
    }

    #[tokio::test]
    async fn keeps_the_newest_records_and_young_ones() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(&config(1_000), dir.path()).unwrap();
        post(&engine, 0..50).await;
        assert_eq!(
            engine.enforce_retention().unwrap(),
            0,
            "fewer records than changes_kept_min_records"
        );
        drop(engine);
        let mut young = config(0);
        young.engine.changes_kept_min_age_s = 3600;
        let engine = Engine::open(&young, dir.path()).unwrap();
        assert_eq!(
            engine.enforce_retention().unwrap(),
            0,
            "records younger than the minimum age"
        );
    }
}
