//! `sluice restore`: rebuilds the documents of an empty data directory from the latest
//! snapshot and every segment after it (the same newest-per-key merge as compaction),
//! then verifies the store against the merged rows' count and checksum, and, when no
//! segment was newer, against the snapshot's manifest.

use crate::compact::merge_inputs;
use crate::merge;
use crate::{SnapshotError, Snapshots, checksum_row, checksum_rows};
use datafusion::arrow::array::{Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use futures_util::StreamExt;
use sluice_core::event;
use sluice_engine::Input;
use std::sync::Arc;

/// Documents submitted to the processor at once.
const RESTORE_BATCH_DOCS: usize = 10_000;

#[derive(Clone, Debug, serde::Serialize)]
pub struct Restored {
    pub collection: String,
    pub snapshot: Option<String>,
    pub segments: usize,
    pub documents: u64,
    pub checksum: String,
}

pub async fn restore(
    snapshots: &Snapshots,
    progress: &(dyn Fn(&str, u64) + Send + Sync),
) -> Result<Vec<Restored>, SnapshotError> {
    let inner = &snapshots.inner;
    let engine = &inner.engine;
    for layout in &inner.layouts {
        let stats = engine.stats(&layout.collection)?;
        if stats.documents != 0 || stats.applied != 0 {
            return Err(SnapshotError::NotEmpty(format!(
                "collection {} already has {} documents and {} applied events",
                layout.collection, stats.documents, stats.applied
            )));
        }
    }
    let mut report = Vec::new();
    for layout in &inner.layouts {
        let collection = layout.collection.as_str();
        let objects = &inner.objects;
        let manifest = objects.latest(collection).await?;
        let segments = objects.segments(collection).await?;
        let inputs = merge_inputs(objects, collection, &segments, manifest.as_ref());
        let mut restored = Restored {
            collection: collection.to_owned(),
            snapshot: manifest.as_ref().map(|manifest| manifest.id.clone()),
            segments: segments.len(),
            documents: 0,
            checksum: format!("{:016x}", 0),
        };
        if inputs.is_empty() {
            report.push(restored);
            continue;
        }
        let newest = Arc::new(merge::newest(objects, layout, &inputs, 2).await?);
        let schema = Arc::new(Schema::new(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("doc", DataType::Utf8, true),
        ]));
        let spec = engine.collection(collection)?.clone();
        let limits = engine.event_limits();
        let mut expected = 0u64;
        let mut pending = Vec::with_capacity(RESTORE_BATCH_DOCS);
        for input in &inputs {
            let mut stream =
                std::pin::pin!(merge::winning_rows(objects, &newest, input, &schema).await?);
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                expected = expected.wrapping_add(checksum_rows(&batch)?);
                let docs = batch
                    .column_by_name("doc")
                    .and_then(|column| column.as_any().downcast_ref::<StringArray>())
                    .ok_or_else(|| SnapshotError::Internal("no doc column".into()))?;
                for row in 0..docs.len() {
                    let value: serde_json::Value =
                        serde_json::from_str(docs.value(row)).map_err(|error| {
                            SnapshotError::Corrupt {
                                file: format!("snapshot of {collection}"),
                                message: format!("a document is not JSON: {error}"),
                            }
                        })?;
                    let event = event::from_value(&spec, value, limits).map_err(|error| {
                        SnapshotError::Corrupt {
                            file: format!("snapshot of {collection}"),
                            message: format!("a document is not a valid event: {error}"),
                        }
                    })?;
                    pending.push(Input::Event(event));
                    restored.documents += 1;
                    if pending.len() == RESTORE_BATCH_DOCS {
                        engine
                            .submit(collection, std::mem::take(&mut pending))
                            .await?;
                        progress(collection, restored.documents);
                    }
                }
            }
        }
        if !pending.is_empty() {
            engine.submit(collection, pending).await?;
        }
        progress(collection, restored.documents);
        restored.checksum = format!("{expected:016x}");
        verify(snapshots, collection, restored.documents, expected).await?;
        if segments.is_empty()
            && let Some(manifest) = &manifest
            && (manifest.rows != restored.documents || manifest.checksum != restored.checksum)
        {
            return Err(SnapshotError::Verify(format!(
                "{collection}: snapshot {} says {} rows, checksum {}; restored {} rows, checksum {}",
                manifest.id,
                manifest.rows,
                manifest.checksum,
                restored.documents,
                restored.checksum
            )));
        }
        report.push(restored);
    }
    Ok(report)
}

/// Reads every document back from the store and compares count and checksum.
async fn verify(
    snapshots: &Snapshots,
    collection: &str,
    rows: u64,
    checksum: u64,
) -> Result<(), SnapshotError> {
    let engine = &snapshots.inner.engine;
    let mut after: Option<String> = None;
    let mut found = 0u64;
    let mut sum = 0u64;
    loop {
        let (docs, next) = engine.list(collection, after.as_deref(), 10_000)?;
        for doc in &docs {
            let text = std::str::from_utf8(&doc.doc).map_err(|_| {
                SnapshotError::Verify(format!("{collection}: a document is not UTF-8"))
            })?;
            sum = sum.wrapping_add(checksum_row(&doc.key.to_string(), text));
            found += 1;
        }
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    if found != rows || sum != checksum {
        return Err(SnapshotError::Verify(format!(
            "{collection}: expected {rows} documents with checksum {checksum:016x}, the store has {found} with {sum:016x}"
        )));
    }
    Ok(())
}
