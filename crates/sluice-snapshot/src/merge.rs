//! The newest row per key of a set of Parquet files (a collection's segments and its last
//! snapshot), read straight from the Parquet reader in two passes:
//!
//! 1. [`newest`] reads only `key` and `offset` (and the untyped key columns, to learn
//!    whether they hold integers) and keeps the highest offset per key: the winners. A
//!    key lives in one partition, so its offsets are comparable.
//! 2. [`winning_rows`] reads a file again with a row filter on `(key, offset, op)`: the
//!    other columns, `doc` above all, are decoded only for the rows that win and are
//!    upserts. A row present in two files (a segment still listed after a compaction
//!    that merged it stopped before deleting it) comes out once.
//!
//! Memory follows keys (the winners table) plus a row group per open file, not the rows
//! of the interval: the SQL plan this replaces (an aggregate, a join and a window over
//! every row) peaked at several hundred MB per compaction under a steady load.

use crate::SnapshotError;
use crate::layout::Layout;
use crate::objects::Objects;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, new_null_array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::parquet::arrow::ParquetRecordBatchStreamBuilder;
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::{ArrowPredicateFn, ArrowReaderOptions, RowFilter};
use datafusion::parquet::arrow::async_reader::AsyncFileReader;
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, Stream, StreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A file to merge and its size in bytes.
pub(crate) type MergeInput = (Path, u64);

/// Rows per batch read from a file.
const BATCH_ROWS: usize = 8192;

/// The columns the winners are decided by.
const FILTER_COLUMNS: [&str; 3] = ["key", "offset", "op"];

struct Winner {
    offset: i64,
    /// Set by the first row that matched: a duplicate of it is not a winner again.
    taken: AtomicBool,
}

/// The outcome of the first pass: the winning offset per key, and the untyped key
/// columns whose every value is an integer in canonical form.
pub(crate) struct Newest {
    winners: HashMap<Box<str>, Winner>,
    pub integers: Vec<String>,
}

impl Newest {
    fn wins(&self, key: &str, offset: i64) -> bool {
        self.winners.get(key).is_some_and(|winner| {
            winner.offset == offset && !winner.taken.swap(true, Ordering::Relaxed)
        })
    }
}

/// What one group of inputs says in the first pass.
struct Scan {
    offsets: HashMap<Box<str>, i64>,
    /// Per untyped key column: a non-null value was seen.
    seen: Vec<bool>,
    /// Per untyped key column: a value that is not a canonical integer was seen.
    other: Vec<bool>,
}

impl Scan {
    fn new(columns: usize) -> Self {
        Self {
            offsets: HashMap::new(),
            seen: vec![false; columns],
            other: vec![false; columns],
        }
    }

    fn absorb(&mut self, other: Scan) {
        if other.offsets.len() > self.offsets.len() {
            let smaller = std::mem::replace(&mut self.offsets, other.offsets);
            self.absorb_offsets(smaller);
        } else {
            self.absorb_offsets(other.offsets);
        }
        for (mine, theirs) in self.seen.iter_mut().zip(other.seen) {
            *mine |= theirs;
        }
        for (mine, theirs) in self.other.iter_mut().zip(other.other) {
            *mine |= theirs;
        }
    }

    fn absorb_offsets(&mut self, offsets: HashMap<Box<str>, i64>) {
        for (key, offset) in offsets {
            self.offsets
                .entry(key)
                .and_modify(|newest| *newest = (*newest).max(offset))
                .or_insert(offset);
        }
    }
}

/// `inputs` split into at most `count` groups of about equal bytes (largest file first,
/// each to the lightest group so far); no group is empty.
pub(crate) fn groups(inputs: &[MergeInput], count: usize) -> Vec<Vec<MergeInput>> {
    let mut sorted: Vec<&MergeInput> = inputs.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut groups: Vec<(u64, Vec<MergeInput>)> = vec![(0, Vec::new()); count.max(1)];
    for input in sorted {
        let lightest = groups
            .iter_mut()
            .min_by_key(|(bytes, _)| *bytes)
            .map(|(bytes, group)| {
                *bytes += input.1.max(1);
                group
            });
        if let Some(group) = lightest {
            group.push(input.clone());
        }
    }
    groups
        .into_iter()
        .map(|(_, group)| group)
        .filter(|group| !group.is_empty())
        .collect()
}

/// Pass 1: the winners of `inputs`, read by up to `parallelism` tasks.
pub(crate) async fn newest(
    objects: &Objects,
    layout: &Layout,
    inputs: &[MergeInput],
    parallelism: usize,
) -> Result<Newest, SnapshotError> {
    let untyped: Arc<Vec<String>> = Arc::new(
        layout
            .untyped_key_columns()
            .into_iter()
            .map(str::to_owned)
            .collect(),
    );
    let mut tasks = Vec::new();
    for group in groups(inputs, parallelism) {
        tasks.push(tokio::spawn(scan_group(
            objects.clone(),
            Arc::clone(&untyped),
            group,
        )));
    }
    let mut total = Scan::new(untyped.len());
    for task in tasks {
        let scan = task
            .await
            .map_err(|error| SnapshotError::Internal(format!("a merge task: {error}")))??;
        total.absorb(scan);
    }
    let integers = untyped
        .iter()
        .zip(total.seen.iter().zip(&total.other))
        .filter(|(_, (seen, other))| **seen && !**other)
        .map(|(name, _)| name.clone())
        .collect();
    let winners = total
        .offsets
        .into_iter()
        .map(|(key, offset)| {
            let winner = Winner {
                offset,
                taken: AtomicBool::new(false),
            };
            (key, winner)
        })
        .collect();
    Ok(Newest { winners, integers })
}

async fn scan_group(
    objects: Objects,
    untyped: Arc<Vec<String>>,
    group: Vec<MergeInput>,
) -> Result<Scan, SnapshotError> {
    let mut scan = Scan::new(untyped.len());
    for (path, size) in &group {
        let builder = open(&objects, path, *size).await?;
        let file_schema = Arc::clone(builder.schema());
        let mut wanted = vec![column_index(&file_schema, path, "key")?];
        wanted.push(column_index(&file_schema, path, "offset")?);
        wanted.extend(
            untyped
                .iter()
                .filter_map(|name| file_schema.index_of(name).ok()),
        );
        let mask = ProjectionMask::roots(builder.parquet_schema(), wanted);
        let mut stream = builder
            .with_projection(mask)
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(|error| read_error(path, &error))?;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|error| read_error(path, &error))?;
            scan_batch(&mut scan, &untyped, &batch).map_err(|error| read_error(path, &error))?;
        }
    }
    Ok(scan)
}

fn scan_batch(scan: &mut Scan, untyped: &[String], batch: &RecordBatch) -> Result<(), ArrowError> {
    let keys = column_as(batch, "key", &DataType::Utf8)?;
    let keys = keys.as_string::<i32>();
    let offsets = column_as(batch, "offset", &DataType::Int64)?;
    let offsets = offsets.as_primitive::<Int64Type>();
    for row in 0..batch.num_rows() {
        if keys.is_null(row) || offsets.is_null(row) {
            continue;
        }
        let (key, offset) = (keys.value(row), offsets.value(row));
        match scan.offsets.get_mut(key) {
            Some(newest) => *newest = (*newest).max(offset),
            None => {
                scan.offsets.insert(key.into(), offset);
            }
        }
    }
    for (index, name) in untyped.iter().enumerate() {
        let Some(column) = batch.column_by_name(name) else {
            continue;
        };
        if scan.other[index] || column.null_count() == column.len() {
            continue;
        }
        scan.seen[index] = true;
        // A previous snapshot's column that is already an integer column.
        if column.data_type() == &DataType::Int64 {
            continue;
        }
        let text = cast(column, &DataType::Utf8)?;
        let text = text.as_string::<i32>();
        scan.other[index] = text.iter().flatten().any(|value| !canonical_integer(value));
    }
    Ok(())
}

/// `17`, not `017`, `+17`, `-0` or `17.0`: key identity is textual, so those are other
/// keys, and an integer column would merge them.
fn canonical_integer(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let canonical_digits = match digits.as_bytes() {
        [] => false,
        [b'0'] => !text.starts_with('-'),
        [first, rest @ ..] => (b'1'..=b'9').contains(first) && rest.iter().all(u8::is_ascii_digit),
    };
    canonical_digits && text.parse::<i64>().is_ok()
}

/// Pass 2: the winning upserts of one input, conformed to `schema` (its columns by name,
/// cast where the file has another type, null where it has none).
pub(crate) async fn winning_rows(
    objects: &Objects,
    newest: &Arc<Newest>,
    input: &MergeInput,
    schema: &SchemaRef,
) -> Result<impl Stream<Item = Result<RecordBatch, SnapshotError>> + Send + 'static, SnapshotError>
{
    let (path, size) = input;
    let builder = open(objects, path, *size).await?;
    let file_schema = Arc::clone(builder.schema());
    let mut filter_columns = Vec::with_capacity(FILTER_COLUMNS.len());
    for name in FILTER_COLUMNS {
        filter_columns.push(column_index(&file_schema, path, name)?);
    }
    let wanted: Vec<usize> = schema
        .fields()
        .iter()
        .filter_map(|field| file_schema.index_of(field.name()).ok())
        .collect();
    let projection = ProjectionMask::roots(builder.parquet_schema(), wanted);
    let filter_mask = ProjectionMask::roots(builder.parquet_schema(), filter_columns);
    let winners = Arc::clone(newest);
    let predicate = ArrowPredicateFn::new(filter_mask, move |batch: RecordBatch| {
        is_winner(&winners, &batch)
    });
    let stream = builder
        .with_projection(projection)
        .with_batch_size(BATCH_ROWS)
        .with_row_filter(RowFilter::new(vec![Box::new(predicate)]))
        .build()
        .map_err(|error| read_error(path, &error))?;
    let schema = Arc::clone(schema);
    let path = path.clone();
    Ok(stream.map(move |batch| {
        let batch = batch.map_err(|error| read_error(&path, &error))?;
        conform(&batch, &schema).map_err(|error| read_error(&path, &error))
    }))
}

fn is_winner(newest: &Newest, batch: &RecordBatch) -> Result<BooleanArray, ArrowError> {
    let keys = column_as(batch, "key", &DataType::Utf8)?;
    let keys = keys.as_string::<i32>();
    let offsets = column_as(batch, "offset", &DataType::Int64)?;
    let offsets = offsets.as_primitive::<Int64Type>();
    let ops = column_as(batch, "op", &DataType::Utf8)?;
    let ops = ops.as_string::<i32>();
    let wins: Vec<bool> = (0..batch.num_rows())
        .map(|row| {
            !keys.is_null(row)
                && !offsets.is_null(row)
                && newest.wins(keys.value(row), offsets.value(row))
                && ops.is_valid(row)
                && ops.value(row) == "upsert"
        })
        .collect();
    Ok(BooleanArray::from(wins))
}

fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) if column.data_type() == field.data_type() => Ok(Arc::clone(column)),
            Some(column) => cast(column, field.data_type()),
            None => Ok(new_null_array(field.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<ArrayRef>, ArrowError>>()?;
    RecordBatch::try_new(Arc::clone(schema), columns)
}

/// Column `name` of `batch` as `kind` (cast when the file wrote another type).
fn column_as(batch: &RecordBatch, name: &str, kind: &DataType) -> Result<ArrayRef, ArrowError> {
    let column = batch
        .column_by_name(name)
        .ok_or_else(|| ArrowError::SchemaError(format!("no column {name:?}")))?;
    if column.data_type() == kind {
        Ok(Arc::clone(column))
    } else {
        cast(column, kind)
    }
}

/// A Parquet file in the object store, of a size known from its listing or manifest.
struct StoredFile {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

impl AsyncFileReader for StoredFile {
    fn get_bytes(
        &mut self,
        range: Range<u64>,
    ) -> BoxFuture<'_, datafusion::parquet::errors::Result<bytes::Bytes>> {
        async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(|error| ParquetError::External(Box::new(error)))
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, datafusion::parquet::errors::Result<Vec<bytes::Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(|error| ParquetError::External(Box::new(error)))
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, datafusion::parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

async fn open(
    objects: &Objects,
    path: &Path,
    size: u64,
) -> Result<ParquetRecordBatchStreamBuilder<StoredFile>, SnapshotError> {
    let file = StoredFile {
        store: Arc::clone(&objects.store),
        path: path.clone(),
        size,
    };
    ParquetRecordBatchStreamBuilder::new(file)
        .await
        .map_err(|error| read_error(path, &error))
}

fn column_index(
    schema: &datafusion::arrow::datatypes::Schema,
    path: &Path,
    name: &str,
) -> Result<usize, SnapshotError> {
    schema.index_of(name).map_err(|_| SnapshotError::Corrupt {
        file: path.to_string(),
        message: format!("no {name:?} column: not a Sluice segment or snapshot"),
    })
}

fn read_error(path: &Path, error: &dyn std::fmt::Display) -> SnapshotError {
    SnapshotError::Store(format!("reading {path}: {error}"))
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn canonical_integers_are_the_ones_that_print_back_the_same() {
        for yes in [
            "0",
            "7",
            "17",
            "-17",
            "9223372036854775807",
            "-9223372036854775808",
        ] {
            assert!(canonical_integer(yes), "{yes}");
        }
        for no in [
            "",
            "-",
            "-0",
            "00",
            "017",
            "+17",
            "17.0",
            " 17",
            "1e3",
            "9223372036854775808",
            "\"17\"",
            "x",
        ] {
            assert!(!canonical_integer(no), "{no:?}");
        }
    }

    #[test]
    fn groups_balance_bytes_and_keep_every_input_once() {
        let inputs: Vec<MergeInput> = [50u64, 10, 40, 30, 20, 0]
            .iter()
            .enumerate()
            .map(|(index, size)| (Path::from(format!("f{index}")), *size))
            .collect();
        let split = groups(&inputs, 2);
        assert_eq!(split.len(), 2);
        let bytes: Vec<u64> = split
            .iter()
            .map(|group| group.iter().map(|(_, size)| size).sum())
            .collect();
        assert_eq!(bytes.iter().sum::<u64>(), 150);
        assert!(
            bytes.iter().all(|bytes| (70..=80).contains(bytes)),
            "{bytes:?}"
        );
        let mut all: Vec<&MergeInput> = split.iter().flatten().collect();
        all.sort();
        assert_eq!(all.len(), inputs.len());
        assert!(groups(&inputs[..1], 4).len() == 1);
        assert!(groups(&[], 2).is_empty());
    }
}
