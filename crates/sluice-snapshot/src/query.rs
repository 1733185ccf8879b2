//! Read-only SQL over the snapshots: each collection is a table (its latest snapshot, or
//! the newest one not newer than `as_of`). DDL, DML and other statements are refused by
//! DataFusion's `SQLOptions`; no table function or URL table reads files, so only the
//! registered snapshots can be read. Results are bounded in rows and time.

use crate::layout::Layout;
use crate::objects::{Manifest, Objects, STORE_URL};
use crate::{SnapshotError, datafusion_error, session};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::MemTable;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::ParquetReadOptions;
use futures_util::StreamExt;
use sluice_core::config::SnapshotsConfig;
use std::sync::Arc;
use std::time::Duration;

pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub rows: usize,
    /// The snapshot each table was read from.
    pub snapshots: Vec<(String, Option<String>)>,
}

/// Output formats of `sluice query` and `POST /v1/sql`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Csv,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            other => Err(format!("unknown format {other:?}: use table, json or csv")),
        }
    }
}

pub async fn query(
    objects: &Objects,
    layouts: &[Layout],
    config: &SnapshotsConfig,
    sql: &str,
    as_of: Option<&str>,
    allowed: Option<&[String]>,
) -> Result<QueryResult, SnapshotError> {
    let ctx = session(objects, config)?;
    if let Some(allowed) = allowed {
        refuse_other_collections(&ctx, layouts, sql, allowed)?;
    }
    let visible =
        |layout: &&Layout| allowed.is_none_or(|allowed| allowed.contains(&layout.collection));
    let mut snapshots = Vec::new();
    // A caller limited to some collections gets only their tables: the planner cannot
    // resolve the others at all.
    for layout in layouts.iter().filter(visible) {
        let manifest = chosen_snapshot(objects, &layout.collection, as_of).await?;
        let files: Vec<String> = manifest
            .iter()
            .flat_map(|manifest| {
                manifest.files.iter().map(|file| {
                    format!(
                        "{STORE_URL}{}",
                        objects.snapshot_file(&layout.collection, &manifest.id, file.name.as_str())
                    )
                })
            })
            .collect();
        if files.is_empty() {
            let empty = MemTable::try_new(Arc::clone(&layout.schema), vec![vec![]])
                .map_err(datafusion_error)?;
            ctx.register_table(layout.collection.as_str(), Arc::new(empty))
                .map_err(datafusion_error)?;
        } else {
            let schema = manifest.as_ref().map_or_else(
                || Arc::clone(&layout.schema),
                |manifest| layout.schema_of(manifest),
            );
            let frame = ctx
                .read_parquet(files, ParquetReadOptions::default().schema(&schema))
                .await
                .map_err(datafusion_error)?;
            ctx.register_table(layout.collection.as_str(), frame.into_view())
                .map_err(datafusion_error)?;
        }
        snapshots.push((
            layout.collection.clone(),
            manifest.map(|manifest| manifest.id),
        ));
    }
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let frame = ctx
        .sql_with_options(sql, options)
        .await
        .map_err(|error| SnapshotError::Sql(error.to_string()))?;
    let rows_max = config.query_rows_max;
    let frame = frame
        .limit(0, Some(rows_max + 1))
        .map_err(|error| SnapshotError::Sql(error.to_string()))?;
    let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    let timeout_ms = config.query_timeout_ms;
    let bytes_max = config.query_result_bytes_max;
    let collect = async {
        let mut stream = frame
            .execute_stream()
            .await
            .map_err(|error| SnapshotError::Sql(error.to_string()))?;
        let mut batches = Vec::new();
        let mut bytes = 0usize;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|error| SnapshotError::Sql(error.to_string()))?;
            bytes = bytes.saturating_add(batch.get_array_memory_size());
            if bytes > bytes_max {
                return Err(SnapshotError::ResultTooLarge { max: bytes_max });
            }
            batches.push(batch);
        }
        Ok(batches)
    };
    let batches = tokio::time::timeout(Duration::from_millis(timeout_ms), collect)
        .await
        .map_err(|_| SnapshotError::Timeout { ms: timeout_ms })??;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if rows > rows_max {
        return Err(SnapshotError::TooManyRows { max: rows_max });
    }
    Ok(QueryResult {
        schema,
        batches,
        rows,
        snapshots,
    })
}

/// Fails when `sql` names a collection outside `allowed` (tables that are no collection
/// are left to the planner, which does not know them either).
fn refuse_other_collections(
    ctx: &datafusion::prelude::SessionContext,
    layouts: &[Layout],
    sql: &str,
    allowed: &[String],
) -> Result<(), SnapshotError> {
    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    let statement = state
        .sql_to_statement(sql, &dialect)
        .map_err(|error| SnapshotError::Sql(error.to_string()))?;
    let references = state
        .resolve_table_references(&statement)
        .map_err(|error| SnapshotError::Sql(error.to_string()))?;
    for reference in references {
        let table = reference.table();
        let is_collection = layouts.iter().any(|layout| layout.collection == table);
        if is_collection && !allowed.iter().any(|name| name == table) {
            return Err(SnapshotError::Forbidden(format!(
                "this token may not use the collection {table:?}"
            )));
        }
    }
    Ok(())
}

/// The latest snapshot, or the newest whose id is not above `as_of`.
async fn chosen_snapshot(
    objects: &Objects,
    collection: &str,
    as_of: Option<&str>,
) -> Result<Option<Manifest>, SnapshotError> {
    let Some(as_of) = as_of else {
        return objects.latest(collection).await;
    };
    let ids = objects.snapshot_ids(collection).await?;
    match ids.iter().rev().find(|id| id.as_str() <= as_of) {
        Some(id) => objects.manifest(collection, id).await.map(Some),
        None => Ok(None),
    }
}

impl QueryResult {
    pub fn render(&self, format: Format) -> Result<Vec<u8>, SnapshotError> {
        let error = |error: datafusion::arrow::error::ArrowError| {
            SnapshotError::Internal(error.to_string())
        };
        match format {
            Format::Table => {
                let table = datafusion::arrow::util::pretty::pretty_format_batches(&self.batches)
                    .map_err(error)?;
                Ok(format!("{table}\n({} rows)\n", self.rows).into_bytes())
            }
            Format::Json => {
                let mut writer = datafusion::arrow::json::ArrayWriter::new(Vec::new());
                let batches: Vec<&RecordBatch> = self.batches.iter().collect();
                writer.write_batches(&batches).map_err(error)?;
                writer.finish().map_err(error)?;
                let mut out = writer.into_inner();
                if out.is_empty() {
                    out.extend_from_slice(b"[]");
                }
                out.push(b'\n');
                Ok(out)
            }
            Format::Csv => {
                let mut out = Vec::new();
                {
                    let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                        .with_header(true)
                        .build(&mut out);
                    if self.batches.is_empty() {
                        writer
                            .write(&RecordBatch::new_empty(Arc::clone(&self.schema)))
                            .map_err(error)?;
                    }
                    for batch in &self.batches {
                        writer.write(batch).map_err(error)?;
                    }
                }
                Ok(out)
            }
        }
    }
}
