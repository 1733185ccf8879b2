//! The archiver: a change-log consumer that writes each collection's change records as
//! Parquet segments and commits its cursor only after every segment of the range is in
//! the object store. A segment is named by the cursor it starts at (the committed
//! position), so after a crash the retry writes the same names again: no duplicates,
//! and nothing is lost because the change log still holds every uncommitted record.

use crate::layout::{ChangeRow, Layout};
use crate::objects::Objects;
use crate::{Backoff, SnapshotError};
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::metadata::KeyValue;
use datafusion::parquet::file::properties::WriterProperties;
use sluice_core::Cursor;
use sluice_core::config::SnapshotsConfig;
use sluice_engine::{ChangesPage, Component, Consumer, ConsumerOptions, Engine, StartAt};
use std::time::{Duration, Instant};

/// Parquet key-value metadata of a segment: the range of the change log it covers.
pub const START_KEY: &str = "sluice.start";
pub const END_KEY: &str = "sluice.end";

/// An on-demand request to the running archiver: archive through the head, answer the
/// committed position (or what failed).
pub type Request = tokio::sync::oneshot::Sender<Result<Cursor, String>>;

pub struct Archiver {
    engine: Engine,
    objects: Objects,
    layouts: Vec<Layout>,
    config: SnapshotsConfig,
    consumer: Consumer,
    component: Component,
    /// Pages read since the last commit.
    pending: Vec<ChangesPage>,
    pending_bytes: usize,
    pending_since: Option<Instant>,
}

impl Archiver {
    pub fn new(
        engine: &Engine,
        objects: Objects,
        layouts: Vec<Layout>,
        config: SnapshotsConfig,
    ) -> Result<Self, SnapshotError> {
        let consumer = engine.consumer(
            &config.archiver_consumer,
            StartAt::Beginning,
            ConsumerOptions::default(),
        )?;
        let component = engine.component("snapshot-archiver");
        component.set_up(format!("archiving to {}", objects.shown));
        Ok(Self {
            engine: engine.clone(),
            objects,
            layouts,
            config,
            consumer,
            component,
            pending: Vec::new(),
            pending_bytes: 0,
            pending_since: None,
        })
    }

    /// The position below which every change record is in a segment.
    pub fn committed(&self) -> &Cursor {
        self.consumer.committed()
    }

    /// Reads and archives until the committed position reaches `target` (on demand:
    /// `sluice snapshot`). Rolls a segment whatever its size or age.
    pub async fn archive_through(&mut self, target: &Cursor) -> Result<(), SnapshotError> {
        self.read_through(target).await?;
        self.roll_with_retry(None).await
    }

    /// Reads change records until `target` without writing them (see `write_segments`).
    pub async fn read_through(&mut self, target: &Cursor) -> Result<(), SnapshotError> {
        while !covers(self.read_position(), target) {
            match self.consumer.next_batch().await {
                Some(page) => self.add(page?),
                None => return Err(SnapshotError::Engine(sluice_engine::EngineError::Closed)),
            }
        }
        Ok(())
    }

    /// Archives forever: rolls when the pending records reach `segment_bytes_max` or the
    /// oldest is `segment_age_max_s` old, and takes on-demand requests from `requests`.
    pub async fn run(
        mut self,
        mut requests: tokio::sync::mpsc::Receiver<Request>,
        mut stopping: tokio::sync::watch::Receiver<bool>,
    ) {
        let age_max = Duration::from_secs(self.config.segment_age_max_s);
        loop {
            let wait = match self.pending_since {
                Some(since) => age_max.saturating_sub(since.elapsed()),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                page = self.consumer.next_batch() => match page {
                    Some(Ok(page)) => self.add(page),
                    Some(Err(error)) => {
                        tracing::error!(%error, "The archiver cannot read the change log; it stops.");
                        self.component.set_down(format!("stopped: {error}"));
                        return;
                    }
                    None => return,
                },
                request = requests.recv() => {
                    let Some(reply) = request else { return };
                    let head = self.engine.head();
                    let result = self.archive_through(&head).await;
                    let _ = reply.send(result.map(|()| self.committed().clone()).map_err(|error| error.to_string()));
                    continue;
                }
                () = tokio::time::sleep(wait), if self.pending_since.is_some() => {}
                () = stop_requested(&mut stopping) => return,
            }
            let old = self
                .pending_since
                .is_some_and(|since| since.elapsed() >= age_max);
            if (self.pending_bytes >= self.config.segment_bytes_max || old)
                && let Err(error) = self.roll_with_retry(Some(&mut stopping)).await
            {
                tracing::error!(%error, "The archiver stops.");
                self.component.set_down(format!("stopped: {error}"));
                return;
            }
        }
    }

    fn read_position(&self) -> &Cursor {
        self.pending
            .last()
            .map_or(self.consumer.committed(), |page| &page.next)
    }

    fn add(&mut self, page: ChangesPage) {
        self.pending_bytes += page.records.iter().map(Vec::len).sum::<usize>();
        self.pending_since.get_or_insert_with(Instant::now);
        self.pending.push(page);
    }

    /// Writes the pending range, retrying the object store with backoff; the change log
    /// keeps the records meanwhile. Gives up only when asked to stop.
    async fn roll_with_retry(
        &mut self,
        mut stopping: Option<&mut tokio::sync::watch::Receiver<bool>>,
    ) -> Result<(), SnapshotError> {
        let backoff = Backoff::new(self.config.retry_delay_max_ms);
        let mut failures = 0;
        loop {
            match self.write_segments().await {
                Ok(Some(end)) => {
                    self.consumer.commit(&end)?;
                    self.pending.clear();
                    self.pending_bytes = 0;
                    self.pending_since = None;
                    self.component.count("segment_rolls", 1);
                    self.component.set_up(format!(
                        "archiving to {}; committed {end}",
                        self.objects.shown
                    ));
                    return Ok(());
                }
                Ok(None) => return Ok(()),
                Err(SnapshotError::Store(message)) => {
                    failures += 1;
                    tracing::warn!(%message, failures, "Object store failed; the archiver retries with backoff.");
                    self.component
                        .set_down(format!("object store: {message}; retrying"));
                    self.component.count("store_errors", 1);
                    let delay = backoff.delay(failures);
                    match stopping.as_deref_mut() {
                        Some(stopping) => {
                            tokio::select! {
                                () = tokio::time::sleep(delay) => {}
                                () = stop_requested(stopping) => return Ok(()),
                            }
                        }
                        None if failures >= 5 => {
                            return Err(SnapshotError::Store(message));
                        }
                        None => tokio::time::sleep(delay).await,
                    }
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Writes one segment per collection with records in the pending range and returns
    /// the range's end (`None` when nothing is pending). Does not commit: a crash after
    /// this and before the commit leaves objects that the retry overwrites.
    pub async fn write_segments(&self) -> Result<Option<Cursor>, SnapshotError> {
        let Some(last) = self.pending.last() else {
            return Ok(None);
        };
        let start = self.consumer.committed().clone();
        let end = last.next.clone();
        let start_text = start.to_string();
        let end_text = end.to_string();
        let mut builders: Vec<_> = self.layouts.iter().map(Layout::builder).collect();
        let mut previous = start.clone();
        for page in &self.pending {
            for record in &page.records {
                let (partition, offset, cursor) = position(&self.engine, &previous, record)?;
                previous = cursor;
                let row: ChangeRow<'_> = serde_json::from_slice(record).map_err(|error| {
                    SnapshotError::Internal(format!("a change record did not parse: {error}"))
                })?;
                if let Some(builder) = self
                    .layouts
                    .iter()
                    .position(|layout| layout.collection == row.collection)
                    .and_then(|index| builders.get_mut(index))
                {
                    builder.push(&row, partition, offset)?;
                }
            }
        }
        for (layout, builder) in self.layouts.iter().zip(builders) {
            if builder.rows == 0 {
                continue;
            }
            let rows = builder.rows as u64;
            let batch = builder.finish()?;
            let path = self.objects.segment_path(&layout.collection, &start_text);
            let properties = WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .set_key_value_metadata(Some(vec![
                    KeyValue::new(START_KEY.to_owned(), start_text.clone()),
                    KeyValue::new(END_KEY.to_owned(), end_text.clone()),
                ]))
                .build();
            let writer = object_store::buffered::BufWriter::new(
                std::sync::Arc::clone(&self.objects.store),
                path.clone(),
            );
            let mut writer = AsyncArrowWriter::try_new(writer, batch.schema(), Some(properties))
                .map_err(|error| SnapshotError::Store(format!("{path}: {error}")))?;
            writer
                .write(&batch)
                .await
                .map_err(|error| SnapshotError::Store(format!("{path}: {error}")))?;
            writer
                .close()
                .await
                .map_err(|error| SnapshotError::Store(format!("{path}: {error}")))?;
            self.component.count("records", rows);
            tracing::debug!(%path, rows, "Segment written.");
        }
        Ok(Some(end))
    }
}

/// Resolves once a stop is asked for (the guard `wait_for` returns must not live across
/// the caller's awaits).
async fn stop_requested(stopping: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await.map(|_| ());
}

/// Whether `position` is at or past `target` in every partition.
pub fn covers(position: &Cursor, target: &Cursor) -> bool {
    position
        .offsets()
        .iter()
        .zip(target.offsets())
        .all(|(position, target)| position >= target)
}

/// The partition and offset of the record after `previous`, and its cursor.
fn position(
    engine: &Engine,
    previous: &Cursor,
    record: &[u8],
) -> Result<(u16, u64, Cursor), SnapshotError> {
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        #[serde(borrow)]
        cursor: std::borrow::Cow<'a, str>,
    }
    let head: Head<'_> = serde_json::from_slice(record).map_err(|error| {
        SnapshotError::Internal(format!("a change record did not parse: {error}"))
    })?;
    let cursor = engine.parse_cursor(&head.cursor)?;
    let (partition, offset) = previous.record_position(&cursor).ok_or_else(|| {
        SnapshotError::Internal(format!("record {cursor} does not follow {previous}"))
    })?;
    Ok((partition as u16, offset, cursor))
}
