//! The archiver: a change-log consumer that writes each collection's change records as
//! Parquet segments and commits its cursor only after every segment of the range is in
//! the object store. A segment is named by the cursor it starts at (the committed
//! position), so after a crash the retry writes the same names again: no duplicates,
//! and nothing is lost because the change log still holds every uncommitted record.
//!
//! Records stream into the open segment's writers page by page, so memory follows a
//! page, a row group and an upload part per collection, not a whole segment
//! (`segment_bytes_max`). When the object store fails mid-segment, the segment is
//! dropped and the consumer rewinds to the committed position: the change log, not
//! memory, holds what the retry writes again.

use crate::layout::{ChangeRow, Layout};
use crate::objects::{Objects, ROW_GROUP_BYTES_MAX};
use crate::{Backoff, SnapshotError};
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::file::metadata::KeyValue;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use sluice_core::Cursor;
use sluice_core::config::SnapshotsConfig;
use sluice_engine::{ChangesPage, Component, Consumer, ConsumerOptions, Engine, StartAt};
use std::time::{Duration, Instant};

/// Parquet key-value metadata of a segment: the range of the change log it covers.
pub const START_KEY: &str = "sluice.start";
pub const END_KEY: &str = "sluice.end";

/// On-demand archiving (`archive_through`) gives up after this many object-store
/// failures in a row; the background loop retries until stopped.
const ON_DEMAND_FAILURES_MAX: u32 = 5;

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
    /// The segment being written since the last commit, if any record came since.
    open: Option<OpenSegment>,
}

/// The change log from `start` (the committed position) to `end`, being written as one
/// Parquet object per collection that has records in the range.
struct OpenSegment {
    start: Cursor,
    start_text: String,
    /// The position after the last record written.
    end: Cursor,
    /// By layout index; `None` until that collection's first record.
    writers: Vec<Option<SegmentWriter>>,
    /// Change-record bytes written (what `segment_bytes_max` bounds).
    record_bytes: usize,
    opened: Instant,
}

struct SegmentWriter {
    path: Path,
    parquet: AsyncArrowWriter<BufWriter>,
    rows: u64,
}

impl Archiver {
    pub fn new(
        engine: &Engine,
        objects: Objects,
        layouts: Vec<Layout>,
        config: SnapshotsConfig,
    ) -> Result<Self, SnapshotError> {
        let consumer = open_consumer(engine, &config)?;
        let component = engine.component("snapshot-archiver");
        component.set_up(format!("archiving to {}", objects.shown));
        Ok(Self {
            engine: engine.clone(),
            objects,
            layouts,
            config,
            consumer,
            component,
            open: None,
        })
    }

    /// The position below which every change record is in a segment.
    pub fn committed(&self) -> &Cursor {
        self.consumer.committed()
    }

    /// Reads and archives until the committed position reaches `target` (on demand:
    /// `sluice snapshot`). Rolls a segment whatever its size or age; retries a failing
    /// object store a few times with backoff, then answers its error.
    pub async fn archive_through(&mut self, target: &Cursor) -> Result<(), SnapshotError> {
        let backoff = Backoff::new(self.config.retry_delay_max_ms);
        let mut failures = 0;
        loop {
            let attempt = match self.read_through(target).await {
                Ok(()) => self.roll().await,
                Err(error) => Err(error),
            };
            match attempt {
                Err(SnapshotError::Store(message)) => {
                    failures += 1;
                    self.store_failed(&message, failures).await?;
                    if failures >= ON_DEMAND_FAILURES_MAX {
                        return Err(SnapshotError::Store(message));
                    }
                    tokio::time::sleep(backoff.delay(failures)).await;
                }
                other => return other,
            }
        }
    }

    /// Reads change records until `target` into the open segment, without finishing it
    /// (see `finish_segment`).
    pub async fn read_through(&mut self, target: &Cursor) -> Result<(), SnapshotError> {
        while !covers(self.read_position(), target) {
            match self.consumer.next_batch().await {
                Some(page) => self.write_page(page?).await?,
                None => return Err(SnapshotError::Engine(sluice_engine::EngineError::Closed)),
            }
        }
        Ok(())
    }

    /// Archives forever: rolls when the open segment's records reach `segment_bytes_max`
    /// or it is `segment_age_max_s` old, and takes on-demand requests from `requests`.
    pub async fn run(
        mut self,
        mut requests: tokio::sync::mpsc::Receiver<Request>,
        mut stopping: tokio::sync::watch::Receiver<bool>,
    ) {
        let age_max = Duration::from_secs(self.config.segment_age_max_s);
        let backoff = Backoff::new(self.config.retry_delay_max_ms);
        let mut failures = 0;
        loop {
            let wait = match &self.open {
                Some(open) => age_max.saturating_sub(open.opened.elapsed()),
                None => Duration::from_secs(3600),
            };
            let step = tokio::select! {
                page = self.consumer.next_batch() => match page {
                    Some(Ok(page)) => self.write_page(page).await,
                    Some(Err(error)) => Err(error.into()),
                    None => return,
                },
                request = requests.recv() => {
                    let Some(reply) = request else { return };
                    let head = self.engine.head();
                    let result = self.archive_through(&head).await;
                    let _ = reply.send(result.map(|()| self.committed().clone()).map_err(|error| error.to_string()));
                    continue;
                }
                () = tokio::time::sleep(wait), if self.open.is_some() => Ok(()),
                () = stop_requested(&mut stopping) => return,
            };
            let full = self.open.as_ref().is_some_and(|open| {
                open.record_bytes >= self.config.segment_bytes_max
                    || open.opened.elapsed() >= age_max
            });
            let step = match step {
                Ok(()) if full => self.roll().await,
                other => other,
            };
            match step {
                Ok(()) => {
                    if self.open.is_none() {
                        failures = 0;
                    }
                }
                Err(SnapshotError::Store(message)) => {
                    failures += 1;
                    if let Err(error) = self.store_failed(&message, failures).await {
                        tracing::error!(%error, "The archiver cannot rewind; it stops.");
                        self.component.set_down(format!("stopped: {error}"));
                        return;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff.delay(failures)) => {}
                        () = stop_requested(&mut stopping) => return,
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "The archiver stops.");
                    self.component.set_down(format!("stopped: {error}"));
                    return;
                }
            }
        }
    }

    fn read_position(&self) -> &Cursor {
        self.open
            .as_ref()
            .map_or(self.consumer.committed(), |open| &open.end)
    }

    /// Appends a page of change records to the open segment (opening it at the committed
    /// position if none is open).
    async fn write_page(&mut self, page: ChangesPage) -> Result<(), SnapshotError> {
        if self.open.is_none() {
            let start = self.consumer.committed().clone();
            self.open = Some(OpenSegment {
                start_text: start.to_string(),
                end: start.clone(),
                start,
                writers: self.layouts.iter().map(|_| None).collect(),
                record_bytes: 0,
                opened: Instant::now(),
            });
        }
        let Some(open) = self.open.as_mut() else {
            return Ok(());
        };
        let mut builders: Vec<_> = self.layouts.iter().map(Layout::builder).collect();
        debug_assert_eq!(page.records.len(), page.positions.len());
        for (record, &(partition, offset)) in page.records.iter().zip(&page.positions) {
            let row = ChangeRow::parse(record)?;
            if let Some(builder) = self
                .layouts
                .iter()
                .position(|layout| layout.collection == row.collection)
                .and_then(|index| builders.get_mut(index))
            {
                builder.push(&row, partition, offset)?;
            }
        }
        for ((layout, builder), slot) in self
            .layouts
            .iter()
            .zip(builders)
            .zip(open.writers.iter_mut())
        {
            if builder.rows == 0 {
                continue;
            }
            let rows = builder.rows as u64;
            let batch = builder.finish()?;
            let writer = match slot {
                Some(writer) => writer,
                None => slot.insert(SegmentWriter::create(
                    &self.objects,
                    layout,
                    &open.start_text,
                )?),
            };
            writer.write(&batch).await?;
            writer.rows += rows;
        }
        open.record_bytes += page.records.iter().map(Vec::len).sum::<usize>();
        open.end = page.next;
        Ok(())
    }

    /// Finishes the open segment's objects and returns the range's end (`None` when no
    /// segment is open). Does not commit: a crash after this and before the commit
    /// leaves objects that the retry overwrites. After an error the caller rewinds.
    pub async fn finish_segment(&mut self) -> Result<Option<Cursor>, SnapshotError> {
        let Some(open) = self.open.take() else {
            return Ok(None);
        };
        // The name is the retry's only link to this range: it must be the commit point.
        debug_assert_eq!(&open.start, self.consumer.committed());
        let end_text = open.end.to_string();
        let mut writers = open.writers.into_iter().flatten();
        while let Some(writer) = writers.next() {
            if let Err(error) = writer.finish(&end_text, &self.component).await {
                for unfinished in writers {
                    unfinished.abort().await;
                }
                return Err(error);
            }
        }
        Ok(Some(open.end))
    }

    /// Finishes the open segment and commits its end.
    async fn roll(&mut self) -> Result<(), SnapshotError> {
        let Some(end) = self.finish_segment().await? else {
            return Ok(());
        };
        self.consumer.commit(&end)?;
        self.component.count("segment_rolls", 1);
        self.component.set_up(format!(
            "archiving to {}; committed {end}",
            self.objects.shown
        ));
        Ok(())
    }

    /// After an object-store failure: drops the open segment and rewinds the consumer to
    /// the committed position, so that the retry writes the range again from the log.
    async fn store_failed(&mut self, message: &str, failures: u32) -> Result<(), SnapshotError> {
        tracing::warn!(%message, failures, "Object store failed; the archiver retries with backoff.");
        self.component
            .set_down(format!("object store: {message}; retrying"));
        self.component.count("store_errors", 1);
        if let Some(open) = self.open.take() {
            for writer in open.writers.into_iter().flatten() {
                writer.abort().await;
            }
        }
        let rewound = open_consumer(&self.engine, &self.config)?;
        std::mem::replace(&mut self.consumer, rewound).close().await;
        Ok(())
    }
}

impl SegmentWriter {
    fn create(objects: &Objects, layout: &Layout, start: &str) -> Result<Self, SnapshotError> {
        let path = objects.segment_path(&layout.collection, start);
        let properties = crate::objects::writer_properties()
            .set_key_value_metadata(Some(vec![KeyValue::new(
                START_KEY.to_owned(),
                start.to_owned(),
            )]))
            .build();
        let upload = objects.upload(path.clone());
        let parquet = AsyncArrowWriter::try_new(
            upload,
            std::sync::Arc::clone(&layout.schema),
            Some(properties),
        )
        .map_err(|error| SnapshotError::Store(format!("{path}: {error}")))?;
        Ok(Self {
            path,
            parquet,
            rows: 0,
        })
    }

    async fn write(
        &mut self,
        batch: &datafusion::arrow::array::RecordBatch,
    ) -> Result<(), SnapshotError> {
        self.parquet
            .write(batch)
            .await
            .map_err(|error| SnapshotError::Store(format!("{}: {error}", self.path)))?;
        if self.parquet.in_progress_size() >= ROW_GROUP_BYTES_MAX {
            self.parquet
                .flush()
                .await
                .map_err(|error| SnapshotError::Store(format!("{}: {error}", self.path)))?;
        }
        Ok(())
    }

    /// Writes the footer (with the range's end) and completes the upload.
    async fn finish(mut self, end: &str, component: &Component) -> Result<(), SnapshotError> {
        self.parquet
            .append_key_value_metadata(KeyValue::new(END_KEY.to_owned(), end.to_owned()));
        self.parquet
            .close()
            .await
            .map_err(|error| SnapshotError::Store(format!("{}: {error}", self.path)))?;
        component.count("records", self.rows);
        tracing::debug!(path = %self.path, rows = self.rows, "Segment written.");
        Ok(())
    }

    /// Cancels the upload (a multipart upload left behind would hold storage until the
    /// bucket's lifecycle rule removes it); a failure here changes nothing for the retry.
    async fn abort(self) {
        if let Err(error) = self.parquet.into_inner().abort().await {
            tracing::debug!(path = %self.path, %error, "Aborting a segment upload failed.");
        }
    }
}

fn open_consumer(engine: &Engine, config: &SnapshotsConfig) -> Result<Consumer, SnapshotError> {
    Ok(engine.consumer(
        &config.archiver_consumer,
        StartAt::Beginning,
        ConsumerOptions::default(),
    )?)
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
