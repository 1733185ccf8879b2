//! The snapshot compactor: new snapshot = last snapshot ∪ segments since, keeping the
//! newest row per key (the highest offset: a key lives in one partition) and dropping
//! keys whose newest row is a delete. Files first, then the manifest, then `LATEST`: a
//! failed compaction never replaces a good snapshot. Segments are deleted only once the
//! new snapshot that covers them is in place; old snapshots beyond `snapshots_kept` go
//! after that.

use crate::archiver::END_KEY;
use crate::layout::Layout;
use crate::objects::{
    Manifest, ManifestFile, Objects, ROW_GROUP_BYTES_MAX, STORE_URL, snapshot_id,
};
use crate::{SnapshotError, checksum_rows, datafusion_error, session};
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::file::metadata::{FooterTail, ParquetMetaDataReader};
use datafusion::prelude::{DataFrame, ParquetReadOptions, SessionContext};
use futures_util::StreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use sluice_core::Cursor;
use sluice_core::config::SnapshotsConfig;
use std::sync::Arc;

/// Rows per snapshot file.
const FILE_ROWS_MAX: u64 = 1 << 20;

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
    let ctx = session(objects, config)?;
    let inputs = merge_inputs(objects, collection, &segments, previous.as_ref());
    let id = snapshot_id(match &previous {
        Some(previous) => previous.id.parse::<u64>().unwrap_or(0) + 1,
        None => 1,
    });
    let rows = if inputs.is_empty() {
        None
    } else {
        register_changes(&ctx, layout, inputs).await?;
        let integers = integer_key_columns(&ctx, layout).await?;
        let columns: Vec<String> = layout
            .schema
            .fields()
            .iter()
            .map(|field| {
                let name = field.name();
                if integers.contains(name) {
                    format!("CAST(\"{name}\" AS BIGINT) AS \"{name}\"")
                } else {
                    format!("\"{name}\"")
                }
            })
            .collect();
        Some(newest_registered_rows(&ctx, &columns.join(", ")).await?)
    };
    let schema = match &rows {
        Some(frame) => Arc::new(frame.schema().as_arrow().clone()),
        None => Arc::clone(&layout.schema),
    };
    // Leftovers of an attempt that died before its manifest: this id was never visible.
    let directory = objects.snapshot_dir(collection, &id);
    for (path, _) in objects.list(&directory).await? {
        objects.delete(&path).await?;
    }
    let mut files = Vec::new();
    let mut total_rows = 0u64;
    let mut checksum = 0u64;
    if let Some(frame) = rows {
        // One writer per output partition of the plan, each on its own task: Parquet
        // encoding is the last step and would otherwise run on one core.
        let streams = frame
            .execute_stream_partitioned()
            .await
            .map_err(datafusion_error)?;
        let mut writers = Vec::with_capacity(streams.len());
        for (index, stream) in streams.into_iter().enumerate() {
            writers.push(tokio::spawn(write_files(
                objects.clone(),
                directory.clone(),
                Arc::clone(&schema),
                index,
                stream,
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
) -> Vec<String> {
    let mut inputs: Vec<String> = segments
        .iter()
        .map(|(path, _)| format!("{STORE_URL}{path}"))
        .collect();
    if let Some(previous) = previous {
        inputs.extend(previous.files.iter().map(|file| {
            format!(
                "{STORE_URL}{}",
                objects.snapshot_file(collection, &previous.id, file.name.as_str())
            )
        }));
    }
    inputs
}

/// `columns` of the newest row per key among `inputs` (the highest offset: a key lives in
/// one partition), keys whose newest row is a delete left out.
pub(crate) async fn newest_rows(
    ctx: &SessionContext,
    layout: &Layout,
    inputs: Vec<String>,
    columns: &str,
) -> Result<DataFrame, SnapshotError> {
    register_changes(ctx, layout, inputs).await?;
    newest_registered_rows(ctx, columns).await
}

/// Registers `inputs` as the table `changes`, read with the segments' schema (a previous
/// snapshot's integer key columns are read back as text, like the segments have them).
async fn register_changes(
    ctx: &SessionContext,
    layout: &Layout,
    inputs: Vec<String>,
) -> Result<(), SnapshotError> {
    let options = ParquetReadOptions::default().schema(&layout.schema);
    let frame = ctx
        .read_parquet(inputs, options)
        .await
        .map_err(datafusion_error)?;
    ctx.register_table("changes", frame.into_view())
        .map_err(datafusion_error)?;
    Ok(())
}

/// The untyped key columns of `changes` whose every value is an integer in canonical
/// form (`17`, not `017` or `17.0`: key identity is textual, so those are other keys).
async fn integer_key_columns(
    ctx: &SessionContext,
    layout: &Layout,
) -> Result<Vec<String>, SnapshotError> {
    let untyped = layout.untyped_key_columns();
    if untyped.is_empty() {
        return Ok(Vec::new());
    }
    let checks: Vec<String> = untyped
        .iter()
        .map(|name| {
            format!(
                "sum(CASE WHEN \"{name}\" IS NULL THEN 0 \
                   WHEN CAST(try_cast(\"{name}\" AS BIGINT) AS VARCHAR) = \"{name}\" THEN 0 \
                   ELSE 1 END) AS \"{name}\""
            )
        })
        .collect();
    let sql = format!("SELECT {} FROM changes", checks.join(", "));
    let batches = ctx
        .sql(&sql)
        .await
        .map_err(datafusion_error)?
        .collect()
        .await
        .map_err(datafusion_error)?;
    let mut integers = Vec::new();
    let Some(batch) = batches.first() else {
        return Ok(integers);
    };
    for (index, name) in untyped.iter().enumerate() {
        let not_integers = batch
            .column(index)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int64Array>()
            .filter(|values| {
                !values.is_empty() && datafusion::arrow::array::Array::is_valid(*values, 0)
            })
            .map(|values| values.value(0));
        // No rows at all (every value null) keeps the column text.
        if not_integers == Some(0) {
            integers.push((*name).to_owned());
        }
    }
    Ok(integers)
}

/// [`newest_rows`] of the registered `changes`.
async fn newest_registered_rows(
    ctx: &SessionContext,
    columns: &str,
) -> Result<DataFrame, SnapshotError> {
    // The winners are found from `(key, offset)` alone: a hash aggregate keeps one entry
    // per key (memory grows with keys, not rows), and a hash join built on it picks the
    // winning rows while the wide rows stream past (`newest` is the join's left side,
    // the one DataFusion builds). Only the winners are then ranked, to break the tie of a
    // row that is in two inputs (a segment still listed after a compaction already
    // merged it, when that compaction stopped before deleting it). Sorting every wide row
    // by key, as a window over all of them did, took memory in proportion to the rows of
    // the interval and spilled.
    let sql = format!(
        "WITH newest AS (\
           SELECT key AS newest_key, max(\"offset\") AS newest_offset FROM changes GROUP BY key) \
         SELECT {columns} FROM (\
           SELECT c.*, row_number() OVER (PARTITION BY c.key ORDER BY c.\"offset\" DESC) AS sluice_rank \
           FROM newest n JOIN changes c ON c.key = n.newest_key AND c.\"offset\" = n.newest_offset) \
         WHERE sluice_rank = 1 AND op = 'upsert'"
    );
    ctx.sql(&sql).await.map_err(datafusion_error)
}

/// Writes one output partition as files of at most `FILE_ROWS_MAX` rows; returns the
/// files, the rows and their checksum.
async fn write_files(
    objects: Objects,
    directory: Path,
    schema: datafusion::arrow::datatypes::SchemaRef,
    partition: usize,
    mut stream: datafusion::physical_plan::SendableRecordBatchStream,
) -> Result<(Vec<ManifestFile>, u64, u64), SnapshotError> {
    let mut files = Vec::new();
    let mut total_rows = 0u64;
    let mut checksum = 0u64;
    let mut writer: Option<(
        String,
        AsyncArrowWriter<object_store::buffered::BufWriter>,
        u64,
    )> = None;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(datafusion_error)?;
        if batch.num_rows() == 0 {
            continue;
        }
        checksum = checksum.wrapping_add(checksum_rows(&batch)?);
        let (_, current, rows) = match &mut writer {
            Some(open) => open,
            None => {
                let name = format!("part-{partition:03}-{:05}.parquet", files.len());
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
