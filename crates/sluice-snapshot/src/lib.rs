//! Sluice's analytics side, on DataFusion and `object_store` (kept in this crate so the
//! rest of the workspace builds without them):
//!
//! - `archiver.rs`: a change-log consumer writing Parquet segments to the object store,
//!   committing its cursor only once they are durable there;
//! - `compact.rs`: snapshot = last snapshot ∪ segments since, newest row per key, deletes
//!   dropped; files, then manifest, then the `LATEST` pointer;
//! - `query.rs`: read-only SQL over the snapshots, bounded in rows and time;
//! - `restore.rs`: an empty data directory rebuilt from snapshot and segments, verified;
//! - `objects.rs`: the store and its layout; `layout.rs`: the columns.

mod archiver;
mod bounded;
mod compact;
mod layout;
mod members;
mod merge;
mod objects;
mod query;
mod restore;

pub use archiver::{Archiver, covers};
pub use compact::Progress;
pub use layout::Layout;
pub use objects::{Manifest, ManifestFile, Objects};
pub use query::{Format, QueryResult};
pub use restore::Restored;

use datafusion::arrow::array::{Array, RecordBatch, StringArray};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use sluice_core::config::SnapshotsConfig;
pub(crate) use sluice_engine::Backoff;
use sluice_engine::{Engine, EngineError};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("object store: {0}")]
    Store(String),
    #[error("{file}: {message}")]
    Corrupt { file: String, message: String },
    #[error("{0}")]
    Sql(String),
    #[error("the query returned more than {max} rows: add a LIMIT or aggregate")]
    TooManyRows { max: usize },
    #[error("the query took longer than {ms} ms")]
    Timeout { ms: u64 },
    #[error("the query's result is over {max} bytes: select fewer columns or rows, or aggregate")]
    ResultTooLarge { max: usize },
    #[error("{0}")]
    Forbidden(String),
    #[error("unknown snapshot {0:?}")]
    UnknownSnapshot(String),
    #[error("unknown collection {0:?}")]
    UnknownCollection(String),
    #[error("restore needs an empty data directory: {0}")]
    NotEmpty(String),
    #[error("restore verification failed: {0}")]
    Verify(String),
    #[error("snapshots are off (`[snapshots] enabled = false` in sluice.toml)")]
    NotConfigured,
    #[error("invalid config: {0}")]
    Config(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("query engine: {0}")]
    Internal(String),
}

pub(crate) fn datafusion_error(error: datafusion::error::DataFusionError) -> SnapshotError {
    SnapshotError::Internal(error.to_string())
}

/// Snapshots of one engine: the archiver, compaction, SQL and restore. Cheap to clone.
#[derive(Clone)]
pub struct Snapshots {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    config: SnapshotsConfig,
    /// Where a relative `snapshots.store` lives; each compaction opens the store anew.
    data_dir: std::path::PathBuf,
    objects: Objects,
    layouts: Vec<Layout>,
    /// One compaction at a time; held by the compaction's thread until it ends, even
    /// when the caller stops waiting.
    compacting: Arc<tokio::sync::Mutex<()>>,
    /// The running archiver's on-demand requests; `None` until `start`.
    archiver: std::sync::Mutex<Option<mpsc::Sender<archiver::Request>>>,
}

/// The running archiver and compaction schedule.
pub struct Running {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub async fn stop(self) {
        self.stop.send_replace(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

impl Snapshots {
    /// Snapshots as the engine's config says (`[snapshots]`), with the store opened.
    pub fn open(engine: &Engine, data_dir: &Path) -> Result<Self, SnapshotError> {
        let config = engine
            .config()
            .snapshots
            .clone()
            .ok_or(SnapshotError::NotConfigured)?;
        let objects = Objects::open(&config, data_dir)?;
        let layouts = engine
            .config()
            .collections
            .iter()
            .map(Layout::new)
            .collect::<Result<_, _>>()?;
        Ok(Self {
            inner: Arc::new(Inner {
                engine: engine.clone(),
                config,
                data_dir: data_dir.to_path_buf(),
                objects,
                layouts,
                compacting: Arc::new(tokio::sync::Mutex::new(())),
                archiver: std::sync::Mutex::new(None),
            }),
        })
    }

    pub fn objects(&self) -> &Objects {
        &self.inner.objects
    }

    pub fn layout(&self, collection: &str) -> Result<&Layout, SnapshotError> {
        self.inner
            .layouts
            .iter()
            .find(|layout| layout.collection == collection)
            .ok_or_else(|| SnapshotError::UnknownCollection(collection.to_owned()))
    }

    /// Starts the archiver and, unless `compact_interval_s` is 0, scheduled compaction.
    pub fn start(&self) -> Result<Running, SnapshotError> {
        let inner = &self.inner;
        let archiver = Archiver::new(
            &inner.engine,
            inner.objects.clone(),
            inner.layouts.clone(),
            inner.config.clone(),
        )?;
        let (requests, receiver) = mpsc::channel(16);
        *inner
            .archiver
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(requests);
        let (stop, stopping) = watch::channel(false);
        let mut tasks = vec![run_archiver(
            archiver,
            receiver,
            stopping.clone(),
            inner.config.archiver_nice,
        )?];
        if inner.config.compact_interval_s > 0 {
            let snapshots = self.clone();
            let mut stopping = stopping;
            let interval = Duration::from_secs(inner.config.compact_interval_s);
            tasks.push(tokio::spawn(async move {
                let component = snapshots.inner.engine.component("snapshot-compactor");
                component.set_up(format!("every {} s", interval.as_secs()));
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(interval) => {}
                        _ = stopping.wait_for(|stop| *stop) => return,
                    }
                    for layout in &snapshots.inner.layouts {
                        match snapshots.compact(&layout.collection, &|_| {}).await {
                            Ok(manifest) => {
                                component.count("snapshots", 1);
                                component.set_up(format!("{} at snapshot {}", layout.collection, manifest.id));
                            }
                            Err(error) => {
                                tracing::warn!(%error, collection = %layout.collection, "Scheduled compaction failed; the last snapshot stays.");
                                component.set_down(format!("{}: {error}", layout.collection));
                            }
                        }
                    }
                }
            }));
        }
        Ok(Running { stop, tasks })
    }

    /// Archives everything durable now, then compacts `collection`: on demand, a change
    /// acknowledged before the call is in the returned snapshot.
    pub async fn snapshot_now(
        &self,
        collection: &str,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<Manifest, SnapshotError> {
        self.layout(collection)?;
        self.archive_now().await?;
        self.compact(collection, progress).await
    }

    /// Archives every change record durable now (by the running archiver, or here when
    /// none runs).
    pub async fn archive_now(&self) -> Result<(), SnapshotError> {
        let requests = self
            .inner
            .archiver
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        match requests {
            Some(requests) => {
                let (reply, answer) = oneshot::channel();
                requests
                    .send(reply)
                    .await
                    .map_err(|_| SnapshotError::Internal("the archiver stopped".into()))?;
                answer
                    .await
                    .map_err(|_| SnapshotError::Internal("the archiver stopped".into()))?
                    .map_err(SnapshotError::Store)?;
            }
            None => {
                let inner = &self.inner;
                let mut archiver = Archiver::new(
                    &inner.engine,
                    inner.objects.clone(),
                    inner.layouts.clone(),
                    inner.config.clone(),
                )?;
                archiver.archive_through(&inner.engine.head()).await?;
            }
        }
        Ok(())
    }

    /// Compacts what is archived of `collection` into a new snapshot.
    /// Compacts `collection` on threads of its own: a runtime made for this compaction,
    /// with its own connection to the store, all gone when it ends. A compaction
    /// allocates and frees hundreds of MB in a few seconds; on the server's worker
    /// threads that churn was interleaved with their long-lived allocations, and the
    /// allocator kept the pages both shared (the soak's resident set stepped up at each
    /// compaction while the heap in use stayed flat). A thread that exits hands its heap
    /// back instead. The compaction runs to its end even if the caller stops waiting,
    /// and the next one waits for it.
    pub async fn compact(
        &self,
        collection: &str,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<Manifest, SnapshotError> {
        let layout = self.layout(collection)?.clone();
        let one_at_a_time = Arc::clone(&self.inner.compacting).lock_owned().await;
        let objects = Objects::open(&self.inner.config, &self.inner.data_dir)?;
        let config = self.inner.config.clone();
        let partitions = usize::from(self.inner.engine.partitions());
        let (steps, mut steps_received) = mpsc::channel(PROGRESS_STEPS_QUEUED_MAX);
        let thread = std::thread::Builder::new()
            .name("sluice-compact".to_owned())
            .spawn(move || {
                let runtime = compaction_runtime()?;
                let report = |step: Progress| {
                    // Progress is for people watching; a full queue drops a step.
                    let _ = steps.try_send(step);
                };
                let result = runtime.block_on(compact::compact(
                    &objects, &layout, &config, partitions, &report,
                ));
                // Joins the runtime's threads.
                drop(runtime);
                result
            })
            .map_err(|error| {
                SnapshotError::Internal(format!("starting the compaction thread: {error}"))
            })?;
        // The lock goes once the thread has ended, whether or not the caller still waits.
        let (reply, mut answer) = oneshot::channel();
        tokio::spawn(async move {
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            drop(one_at_a_time);
            let _ = reply.send(match joined {
                Ok(Ok(result)) => result,
                _ => Err(SnapshotError::Internal(
                    "the compaction thread panicked".to_owned(),
                )),
            });
        });
        loop {
            tokio::select! {
                Some(step) = steps_received.recv() => progress(step),
                result = &mut answer => {
                    while let Ok(step) = steps_received.try_recv() {
                        progress(step);
                    }
                    return result.map_err(|_| {
                        SnapshotError::Internal("the compaction thread ended without an answer".to_owned())
                    })?;
                }
            }
        }
    }

    pub async fn query(
        &self,
        sql: &str,
        as_of: Option<&str>,
    ) -> Result<QueryResult, SnapshotError> {
        self.query_as(sql, as_of, None).await
    }

    /// [`Snapshots::query`] for a caller limited to `collections`: only those tables
    /// exist for the planner, and naming another collection is `Forbidden`.
    pub async fn query_as(
        &self,
        sql: &str,
        as_of: Option<&str>,
        collections: Option<&[String]>,
    ) -> Result<QueryResult, SnapshotError> {
        query::query(
            &self.inner.objects,
            &self.inner.layouts,
            &self.inner.config,
            sql,
            as_of,
            collections,
        )
        .await
    }

    pub async fn restore(
        &self,
        progress: &(dyn Fn(&str, u64) + Send + Sync),
    ) -> Result<Vec<Restored>, SnapshotError> {
        restore::restore(self, progress).await
    }

    pub async fn latest(&self, collection: &str) -> Result<Option<Manifest>, SnapshotError> {
        self.layout(collection)?;
        self.inner.objects.latest(collection).await
    }
}

/// Runs the archiver on a thread of its own at CPU priority `nice` (see
/// `snapshots.archiver_nice`), so that encoding Parquet never takes a core from ingest
/// under full load; the returned task ends when the archiver's thread has.
fn run_archiver(
    archiver: Archiver,
    requests: mpsc::Receiver<archiver::Request>,
    stopping: watch::Receiver<bool>,
    nice: u8,
) -> Result<tokio::task::JoinHandle<()>, SnapshotError> {
    let thread = std::thread::Builder::new()
        .name("sluice-archiver".to_owned())
        .spawn(move || {
            // Linux keeps a nice value per thread: this lowers only the archiver's thread
            // and the threads it starts.
            if nice > 0
                && let Err(error) = rustix::process::setpriority_process(None, i32::from(nice))
            {
                tracing::warn!(%error, "Could not lower the archiver's CPU priority; it runs at the server's.");
            }
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(archiver.run(requests, stopping)),
                Err(error) => {
                    tracing::error!(%error, "The archiver's runtime did not start; nothing is archived.")
                }
            }
        })
        .map_err(|error| SnapshotError::Internal(format!("starting the archiver thread: {error}")))?;
    Ok(tokio::spawn(async move {
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }))
}

/// Progress steps a compaction may queue for its caller (a compaction reports a few).
const PROGRESS_STEPS_QUEUED_MAX: usize = 64;

/// The runtime one compaction runs on: its reader and writer tasks, on threads of their
/// own (see [`Snapshots::compact`]).
fn compaction_runtime() -> Result<tokio::runtime::Runtime, SnapshotError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(compact::WRITERS)
        .thread_name("sluice-compact")
        .enable_all()
        .build()
        .map_err(|error| SnapshotError::Internal(format!("the compaction runtime: {error}")))
}

/// A DataFusion session over the object store, within the memory budget (operators that
/// can spill do, to a temporary directory).
pub(crate) fn session(
    objects: &Objects,
    config: &SnapshotsConfig,
) -> Result<SessionContext, SnapshotError> {
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(config.query_memory_bytes_max, 1.0)
        .build_arc()
        .map_err(datafusion_error)?;
    let session_config = SessionConfig::new().with_target_partitions(2);
    let ctx = SessionContext::new_with_config_rt(session_config, runtime);
    bounded::install(&ctx, config.query_value_bytes_max);
    let url = url::Url::parse(objects::STORE_URL)
        .map_err(|error| SnapshotError::Internal(error.to_string()))?;
    ctx.register_object_store(&url, Arc::clone(&objects.store));
    Ok(ctx)
}

/// The checksum contribution of one row: its key text and its document's JSON text
/// (Sluice writes a document's JSON deterministically from its content, so the same
/// document has the same text in the change log, the snapshot and a restored store).
/// Rows add up with wrapping addition, so the checksum of a set does not depend on order.
pub fn checksum_row(key: &str, doc: &str) -> u64 {
    let mut hasher = sluice_core::hash::Fnv64::default();
    hasher.write(key.as_bytes());
    hasher.write(&[0]);
    hasher.write(doc.as_bytes());
    hasher.finish()
}

pub(crate) fn checksum_rows(batch: &RecordBatch) -> Result<u64, SnapshotError> {
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .and_then(|column| column.as_any().downcast_ref::<StringArray>())
            .ok_or_else(|| SnapshotError::Internal(format!("no {name} column")))
    };
    let keys = column("key")?;
    let docs = column("doc")?;
    let mut sum = 0u64;
    for row in 0..batch.num_rows() {
        if docs.is_null(row) {
            continue;
        }
        sum = sum.wrapping_add(checksum_row(keys.value(row), docs.value(row)));
    }
    Ok(sum)
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

#[cfg(test)]
mod tests;
