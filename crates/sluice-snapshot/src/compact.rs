//! The snapshot compactor: new snapshot = last snapshot ∪ segments since, keeping the
//! newest row per key (the highest offset: a key lives in one partition) and dropping
//! keys whose newest row is a delete. Files first, then the manifest, then `LATEST`: a
//! failed compaction never replaces a good snapshot. Segments are deleted only once the
//! new snapshot that covers them is in place; old snapshots beyond `snapshots_kept` go
//! after that.

use crate::archiver::END_KEY;
use crate::layout::Layout;
use crate::merge::{self, MergeInput};
use crate::objects::{Manifest, ManifestFile, Objects, ROW_GROUP_BYTES_MAX, snapshot_id};
use crate::{SnapshotError, checksum_rows};
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::file::metadata::{FooterTail, ParquetMetaDataReader};
use futures_util::StreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use sluice_core::Cursor;
use sluice_core::config::SnapshotsConfig;
use std::sync::Arc;

/// Rows per snapshot file.
const FILE_ROWS_MAX: u64 = 1 << 20;
/// Tasks that read and write a compaction's files (this machine class has 2 cores).
pub(crate) const WRITERS: usize = 2;

/// What a compaction reports as it goes.
#[derive(Clone, Debug)]
pub enum Progress {
    Reading { segments: usize },
    Written { rows: u64 },
}

pub async fn compact(
    objects: &Objects,
    layout: &Layout,
    config: &SnapshotsConfig,
    partitions: usize,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Manifest, SnapshotError> {
    let collection = layout.collection.as_str();
    let previous = objects.latest(collection).await?;
    let segments = objects.segments(collection).await?;
    if segments.is_empty()
        && let Some(previous) = previous
    {
        return Ok(previous);
    }
    progress(Progress::Reading {
        segments: segments.len(),
    });
    let mut cursor = match &previous {
        Some(manifest) => {
            Cursor::parse(&manifest.cursor, partitions).map_err(|error| SnapshotError::Corrupt {
                file: objects.manifest_path(collection, &manifest.id).to_string(),
                message: format!("cursor: {error}"),
            })?
        }
        None => Cursor::start(partitions),
    };
    for (path, size) in &segments {
        let end = segment_end(objects, path, *size, partitions).await?;
        cursor = max_cursor(&cursor, &end);
    }
    let inputs = merge_inputs(objects, collection, &segments, previous.as_ref());
    let id = snapshot_id(match &previous {
        Some(previous) => previous.id.parse::<u64>().unwrap_or(0) + 1,
        None => 1,
    });
    let newest = Arc::new(merge::newest(objects, layout, &inputs, WRITERS).await?);
    let schema = layout.snapshot_schema(&newest.integers);
    // Leftovers of an attempt that died before its manifest: this id was never visible.
    let directory = objects.snapshot_dir(collection, &id);
    for (path, _) in objects.list(&directory).await? {
        objects.delete(&path).await?;
    }
    let mut files = Vec::new();
    let mut total_rows = 0u64;
    let mut checksum = 0u64;
    // One writer per group of inputs, each on its own task: Parquet encoding would
    // otherwise run on one core.
    let mut writers = Vec::new();
    for (index, group) in merge::groups(&inputs, WRITERS).into_iter().enumerate() {
        writers.push(tokio::spawn(write_files(
            objects.clone(),
            directory.clone(),
            Arc::clone(&schema),
            index,
            Arc::clone(&newest),
            group,
        )));
    }
    for writer in writers {
        let (written, rows, sum) = writer
            .await
            .map_err(|error| SnapshotError::Internal(format!("a writer task: {error}")))??;
        files.extend(written);
        total_rows += rows;
        checksum = checksum.wrapping_add(sum);
        progress(Progress::Written { rows: total_rows });
    }
    progress(Progress::Written { rows: total_rows });
    let manifest = Manifest {
        id: id.clone(),
        collection: collection.to_owned(),
        created_ms: crate::now_ms(),
        cursor: cursor.to_string(),
        rows: total_rows,
        checksum: format!("{checksum:016x}"),
        files,
        schema: schema
            .fields()
            .iter()
            .map(|field| (field.name().clone(), field.data_type().to_string()))
            .collect(),
    };
    let manifest_bytes = serde_json::to_vec_pretty(&manifest)
        .map_err(|error| SnapshotError::Internal(error.to_string()))?;
    objects
        .put_bytes(&objects.manifest_path(collection, &id), manifest_bytes)
        .await?;
    // Read back before switching: a snapshot that does not check out never becomes LATEST.
    objects.manifest(collection, &id).await?;
    objects
        .put_bytes(&objects.latest_path(collection), id.clone().into_bytes())
        .await?;
    tracing::info!(collection, snapshot = %id, rows = total_rows, cursor = %manifest.cursor, "Snapshot written.");
    for (path, _) in &segments {
        objects.delete(path).await?;
    }
    let ids = objects.snapshot_ids(collection).await?;
    let excess = ids.len().saturating_sub(config.snapshots_kept.max(1));
    for old in &ids[..excess] {
        for (path, _) in objects.list(&objects.snapshot_dir(collection, old)).await? {
            objects.delete(&path).await?;
        }
    }
    Ok(manifest)
}

/// The files a merge of `collection` reads: its segments and the previous snapshot's.
pub(crate) fn merge_inputs(
    objects: &Objects,
    collection: &str,
    segments: &[(Path, u64)],
    previous: Option<&Manifest>,
) -> Vec<MergeInput> {
    let mut inputs: Vec<MergeInput> = segments.to_vec();
    if let Some(previous) = previous {
        inputs.extend(previous.files.iter().map(|file| {
            let path = objects.snapshot_file(collection, &previous.id, file.name.as_str());
            (path, file.bytes)
        }));
    }
    inputs
}

/// Writes the winning rows of one group of inputs as files of at most `FILE_ROWS_MAX`
/// rows; returns the files, the rows and their checksum.
async fn write_files(
    objects: Objects,
    directory: Path,
    schema: datafusion::arrow::datatypes::SchemaRef,
    writer_index: usize,
    newest: Arc<merge::Newest>,
    group: Vec<MergeInput>,
) -> Result<(Vec<ManifestFile>, u64, u64), SnapshotError> {
    let mut files = Vec::new();
    let mut total_rows = 0u64;
    let mut checksum = 0u64;
    let mut writer: Option<(
        String,
        AsyncArrowWriter<object_store::buffered::BufWriter>,
        u64,
    )> = None;
    for input in &group {
        let mut stream =
            std::pin::pin!(merge::winning_rows(&objects, &newest, input, &schema).await?);
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            if batch.num_rows() == 0 {
                continue;
            }
            checksum = checksum.wrapping_add(checksum_rows(&batch)?);
            let (_, current, rows) = match &mut writer {
                Some(open) => open,
                None => {
                    let name = format!("part-{writer_index:03}-{:05}.parquet", files.len());
                    let path = directory.clone().join(name.as_str());
                    let properties = crate::objects::writer_properties().build();
                    let sink = objects.upload(path.clone());
                    let created =
                        AsyncArrowWriter::try_new(sink, Arc::clone(&schema), Some(properties))
                            .map_err(|error| SnapshotError::Store(format!("{path}: {error}")))?;
                    writer.insert((name, created, 0))
                }
            };
            current
                .write(&batch)
                .await
                .map_err(|error| SnapshotError::Store(format!("{directory}: {error}")))?;
            if current.in_progress_size() >= ROW_GROUP_BYTES_MAX {
                current
                    .flush()
                    .await
                    .map_err(|error| SnapshotError::Store(format!("{directory}: {error}")))?;
            }
            *rows += batch.num_rows() as u64;
            total_rows += batch.num_rows() as u64;
            if *rows >= FILE_ROWS_MAX
                && let Some((name, full, rows)) = writer.take()
            {
                files.push(close_file(&objects, &directory, name, full, rows).await?);
            }
        }
    }
    if let Some((name, last, rows)) = writer.take() {
        files.push(close_file(&objects, &directory, name, last, rows).await?);
    }
    Ok((files, total_rows, checksum))
}

async fn close_file(
    objects: &Objects,
    directory: &Path,
    name: String,
    writer: AsyncArrowWriter<object_store::buffered::BufWriter>,
    rows: u64,
) -> Result<ManifestFile, SnapshotError> {
    let path = directory.clone().join(name.as_str());
    writer
        .close()
        .await
        .map_err(|error| SnapshotError::Store(format!("{path}: {error}")))?;
    let bytes = objects
        .store
        .head(&path)
        .await
        .map_err(|error| SnapshotError::Store(format!("{path}: {error}")))?
        .size;
    Ok(ManifestFile { name, bytes, rows })
}

/// The end cursor a segment's footer records; reading it also checks the footer.
pub async fn segment_end(
    objects: &Objects,
    path: &Path,
    size: u64,
    partitions: usize,
) -> Result<Cursor, SnapshotError> {
    let corrupt = |message: String| SnapshotError::Corrupt {
        file: path.to_string(),
        message,
    };
    const FOOTER_BYTES: u64 = 8;
    if size < FOOTER_BYTES + 4 {
        return Err(corrupt(format!("{size} bytes: too short for Parquet")));
    }
    let fetch = |range: std::ops::Range<u64>| objects.store.get_range(path, range);
    let tail = fetch(size - FOOTER_BYTES..size)
        .await
        .map_err(|error| SnapshotError::Store(format!("{path}: {error}")))?;
    let tail: [u8; 8] = tail
        .as_ref()
        .try_into()
        .map_err(|_| corrupt("short read of the footer".into()))?;
    let footer = FooterTail::try_new(&tail).map_err(|error| corrupt(error.to_string()))?;
    let metadata_bytes = footer.metadata_length() as u64;
    if metadata_bytes + FOOTER_BYTES > size {
        return Err(corrupt(format!(
            "the footer claims {metadata_bytes} bytes of metadata in a {size}-byte file"
        )));
    }
    let raw = fetch(size - FOOTER_BYTES - metadata_bytes..size - FOOTER_BYTES)
        .await
        .map_err(|error| SnapshotError::Store(format!("{path}: {error}")))?;
    let metadata =
        ParquetMetaDataReader::decode_metadata(&raw).map_err(|error| corrupt(error.to_string()))?;
    let end = metadata
        .file_metadata()
        .key_value_metadata()
        .and_then(|pairs| pairs.iter().find(|pair| pair.key == END_KEY))
        .and_then(|pair| pair.value.clone())
        .ok_or_else(|| corrupt(format!("no {END_KEY} in the footer: not a Sluice segment")))?;
    Cursor::parse(&end, partitions).map_err(|error| corrupt(format!("{END_KEY}: {error}")))
}

fn max_cursor(a: &Cursor, b: &Cursor) -> Cursor {
    Cursor::from_offsets(
        a.offsets()
            .iter()
            .zip(b.offsets())
            .map(|(a, b)| *a.max(b))
            .collect(),
    )
}
