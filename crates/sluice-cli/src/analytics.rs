//! `sluice snapshot`, `sluice query`, `sluice restore`, and the HTTP API's SQL and
//! snapshot endpoints, all on `sluice-snapshot`.

use crate::client::{Client, Reach, ServerArgs, SourceArgs, Unreachable, reach};
use crate::runtime;
use anyhow::{Context, Result, bail};
use reqwest::Method;
use serde_json::json;
use sluice_server::analytics::{
    AnalyticsError, AnalyticsErrorKind, BoxFuture, SqlAnswer, SqlRequest,
};
use sluice_snapshot::{Format, Progress, SnapshotError, Snapshots};
use std::io::Write;

/// The HTTP API's view of the snapshots.
pub struct SnapshotApi(pub Snapshots);

impl sluice_server::Analytics for SnapshotApi {
    fn sql(
        &self,
        request: SqlRequest,
        collections: Option<Vec<String>>,
    ) -> BoxFuture<Result<SqlAnswer, AnalyticsError>> {
        let snapshots = self.0.clone();
        Box::pin(async move {
            let format: Format = request
                .format
                .as_deref()
                .unwrap_or("json")
                .parse()
                .map_err(|message| AnalyticsError {
                    kind: AnalyticsErrorKind::InvalidSql,
                    message,
                })?;
            let result = snapshots
                .query_as(
                    &request.sql,
                    request.as_of.as_deref(),
                    collections.as_deref(),
                )
                .await
                .map_err(api_error)?;
            let body = result.render(format).map_err(api_error)?;
            let content_type = match format {
                Format::Json => "application/json",
                Format::Csv => "text/csv; charset=utf-8",
                Format::Table => "text/plain; charset=utf-8",
            };
            Ok(SqlAnswer { content_type, body })
        })
    }

    fn snapshot(&self, collection: String) -> BoxFuture<Result<serde_json::Value, AnalyticsError>> {
        let snapshots = self.0.clone();
        Box::pin(async move {
            let manifest = snapshots
                .snapshot_now(&collection, &|_| {})
                .await
                .map_err(api_error)?;
            serde_json::to_value(manifest).map_err(|error| AnalyticsError {
                kind: AnalyticsErrorKind::Internal,
                message: error.to_string(),
            })
        })
    }
}

fn api_error(error: SnapshotError) -> AnalyticsError {
    use AnalyticsErrorKind::*;
    let kind = match &error {
        SnapshotError::Sql(_) => InvalidSql,
        SnapshotError::TooManyRows { .. } => TooManyRows,
        SnapshotError::Timeout { .. } => QueryTimeout,
        SnapshotError::ResultTooLarge { .. } => ResultTooLarge,
        SnapshotError::Forbidden(_) => Forbidden,
        SnapshotError::UnknownSnapshot(_) => UnknownSnapshot,
        SnapshotError::UnknownCollection(_) => UnknownCollection,
        SnapshotError::NotConfigured => NotConfigured,
        SnapshotError::Store(_) => ObjectStoreUnavailable,
        SnapshotError::Corrupt { .. } | SnapshotError::Verify(_) => SnapshotCorrupt,
        _ => Internal,
    };
    AnalyticsError {
        kind,
        message: error.to_string(),
    }
}

/// The snapshots of `config`, if it has a `[snapshots]` section.
pub fn open(
    engine: &sluice_engine::Engine,
    data_dir: &std::path::Path,
) -> Result<Option<Snapshots>> {
    if engine.config().snapshots.is_none() {
        return Ok(None);
    }
    Snapshots::open(engine, data_dir)
        .map(Some)
        .context("opening the snapshot store")
}

fn required(engine: &sluice_engine::Engine, data_dir: &std::path::Path) -> Result<Snapshots> {
    match open(engine, data_dir)? {
        Some(snapshots) => Ok(snapshots),
        None => bail!("snapshots are off in this config (`[snapshots] enabled = false`)"),
    }
}

/// `sluice snapshot COLLECTION`: archives what is durable and compacts, with a progress
/// bar; over HTTP, asks the running server to.
pub fn snapshot(
    source: &SourceArgs,
    server: &ServerArgs,
    collection: &str,
    archive_only: bool,
) -> Result<()> {
    let (engine, data_dir) = match reach(source, server)? {
        Reach::Server(client) => return snapshot_over_http(&client, collection, archive_only),
        Reach::Local {
            engine, data_dir, ..
        } => (engine, data_dir),
    };
    let snapshots = required(&engine, &data_dir)?;
    snapshots.layout(collection)?;
    let runtime = runtime()?;
    if archive_only {
        let started = std::time::Instant::now();
        runtime.block_on(snapshots.archive_now())?;
        println!(
            "archived through {} in {:.3} s ({})",
            engine.head(),
            started.elapsed().as_secs_f64(),
            snapshots.objects().shown
        );
        return Ok(());
    }
    let started = std::time::Instant::now();
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message(format!("archiving the change log of {collection}"));
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    let shown = bar.clone();
    let progress = move |progress: Progress| match progress {
        Progress::Reading { segments } => shown.set_message(format!(
            "merging the last snapshot with {segments} segments"
        )),
        Progress::Written { rows } => shown.set_message(format!("{rows} rows written")),
    };
    let manifest = runtime
        .block_on(snapshots.snapshot_now(collection, &progress))
        .with_context(|| format!("snapshot of {collection}"))?;
    bar.finish_and_clear();
    print_snapshot(
        &serde_json::to_value(&manifest)?,
        started,
        &snapshots.objects().shown,
    );
    Ok(())
}

fn snapshot_over_http(client: &Client, collection: &str, archive_only: bool) -> Result<()> {
    if archive_only {
        bail!(
            "--archive-only works on a stopped server's data directory; the server at {} archives on its own",
            client.base()
        );
    }
    let started = std::time::Instant::now();
    let url = client.url(&["v1", "collections", collection, "snapshot"], &[]);
    let manifest = client.call(Method::POST, url, None)?.json()?;
    print_snapshot(&manifest, started, client.base());
    Ok(())
}

fn print_snapshot(manifest: &serde_json::Value, started: std::time::Instant, store: &str) {
    println!(
        "snapshot {} of {}: {} rows in {} files, through cursor {}, in {:.3} s ({store})",
        manifest["id"].as_str().unwrap_or("?"),
        manifest["collection"].as_str().unwrap_or("?"),
        manifest["rows"].as_u64().unwrap_or_default(),
        manifest["files"].as_array().map_or(0, Vec::len),
        manifest["cursor"].as_str().unwrap_or("?"),
        started.elapsed().as_secs_f64(),
    );
}

/// `sluice query SQL`: read-only SQL over the latest (or `as_of`) snapshots.
pub fn query(
    source: &SourceArgs,
    server: &ServerArgs,
    sql: &str,
    as_of: Option<&str>,
    format: Format,
    timing: bool,
) -> Result<()> {
    let started = std::time::Instant::now();
    let (out, rows) = match reach(source, server)? {
        Reach::Server(client) => {
            let format = match format {
                Format::Table => "table",
                Format::Json => "json",
                Format::Csv => "csv",
            };
            let body = json!({"sql": sql, "as_of": as_of, "format": format});
            let answer = client.call(Method::POST, client.url(&["v1", "sql"], &[]), Some(&body))?;
            (answer.body, None)
        }
        Reach::Local {
            engine, data_dir, ..
        } => {
            let snapshots = required(&engine, &data_dir)?;
            let result = runtime()?.block_on(snapshots.query(sql, as_of))?;
            (result.render(format)?, Some(result.rows))
        }
    };
    if timing {
        eprintln!(
            "RESULT sluice-query seconds={:.3} rows={}",
            started.elapsed().as_secs_f64(),
            rows.map_or_else(|| "?".to_owned(), |rows| rows.to_string())
        );
    }
    let stdout = std::io::stdout();
    let mut stdout = stdout.lock();
    stdout.write_all(&out)?;
    stdout.flush()?;
    Ok(())
}

/// `sluice restore`: rebuilds an empty data directory from the snapshots.
pub fn restore(source: &SourceArgs, server: &ServerArgs) -> Result<()> {
    let (engine, data_dir) = match reach(source, server)? {
        Reach::Server(client) => {
            return Err(Unreachable(format!(
                "restore rebuilds an empty data directory, and the server at {} is using this one: stop it first",
                client.base()
            ))
            .into());
        }
        Reach::Local {
            engine, data_dir, ..
        } => (engine, data_dir),
    };
    let snapshots = required(&engine, &data_dir)?;
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    let shown = bar.clone();
    let progress = move |collection: &str, documents: u64| {
        shown.set_message(format!("{collection}: {documents} documents restored"))
    };
    let report = runtime()?.block_on(snapshots.restore(&progress))?;
    bar.finish_and_clear();
    for restored in report {
        println!(
            "{}: {} documents from snapshot {} and {} segments, verified (checksum {})",
            restored.collection,
            restored.documents,
            restored.snapshot.as_deref().unwrap_or("none"),
            restored.segments,
            restored.checksum
        );
    }
    Ok(())
}
