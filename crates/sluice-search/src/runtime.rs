//! The indexes of a server: their generations on disk, the workers that keep them, the
//! switch from a rebuilt generation to the one searched, status, errors and metrics.
//!
//! On disk: `{data_dir}/indexes/{name}/{generation}/p{partition}` (one tantivy index per
//! partition) and `{data_dir}/indexes/{name}/ACTIVE`, the generation searched, replaced
//! atomically (write, fsync, rename). A generation's id ends with the fingerprint of the
//! field definitions it was built with: a changed definition starts a rebuild, and the
//! old generation answers until the new one has caught up.

use crate::request::SearchRequest;
use crate::schema::IndexSchema;
use crate::search;
use crate::shard::{Shard, ShardError};
use crate::worker::{self, Lane};
use serde::Serialize;
use serde_json::{Value, json};
use sluice_core::Cursor;
use sluice_core::config::IndexConfig;
use sluice_engine::Engine;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

/// Field errors kept per index for `GET /v1/indexes/{name}/errors` (the count is kept in
/// full; older entries are dropped first).
const ERRORS_KEPT_MAX: usize = 1_000;
/// A rebuilt generation replaces the searched one once every partition is live and at
/// most this many records behind the head.
const SWITCH_BEHIND_RECORDS_MAX: u64 = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("unknown index {0:?}")]
    UnknownIndex(String),
    #[error("index {0:?} is still being built; retry shortly")]
    NotReady(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Shard(#[from] ShardError),
    #[error("search index files: {0}")]
    Io(String),
    #[error(transparent)]
    Engine(#[from] sluice_engine::EngineError),
}

/// A source value that did not fit its field.
#[derive(Clone, Debug, Serialize)]
pub struct IndexErrorRecord {
    pub seq: u64,
    pub key: Value,
    pub field: String,
    pub message: String,
    pub at_ms: u64,
}

/// One partition's progress, shared by its worker and the status.
#[derive(Default)]
pub(crate) struct ShardProgress {
    pub live: AtomicBool,
    /// The next offset the worker reads.
    pub read_offset: AtomicU64,
    /// What the last commit recorded as the resume point.
    pub committed_offset: AtomicU64,
    pub commits: AtomicU64,
    pub last_commit_ms: AtomicU64,
    pub writes: AtomicU64,
    pub stale_writes: AtomicU64,
    pub scanned: AtomicU64,
    /// Per lane: documents waiting, and the commit time of the oldest (0: none).
    pub lane_pending: Vec<AtomicU64>,
    pub lane_oldest_ms: Vec<AtomicU64>,
    pub failure: Mutex<Option<String>>,
}

pub(crate) struct Generation {
    pub id: String,
    pub dir: PathBuf,
    pub schema: Arc<IndexSchema>,
    pub shards: Vec<Arc<Shard>>,
    pub progress: Vec<Arc<ShardProgress>>,
    pub stop: Arc<AtomicBool>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Generation {
    /// Records between each partition's head and the offset `read` picks, summed.
    fn behind(&self, head: &Cursor, read: impl Fn(&ShardProgress) -> &AtomicU64) -> u64 {
        self.progress
            .iter()
            .enumerate()
            .map(|(partition, p)| {
                head.offset(partition)
                    .saturating_sub(read(p).load(Ordering::Acquire))
            })
            .sum()
    }

    /// A counter of every partition, summed.
    fn total(&self, read: impl Fn(&ShardProgress) -> &AtomicU64) -> u64 {
        self.progress
            .iter()
            .map(|p| read(p).load(Ordering::Relaxed))
            .sum()
    }

    /// Lane `position`'s waiting documents and the age in seconds of its oldest change.
    fn lane(&self, position: usize, now_ms: u64) -> (u64, f64) {
        let pending = self
            .progress
            .iter()
            .map(|p| {
                p.lane_pending
                    .get(position)
                    .map_or(0, |a| a.load(Ordering::Relaxed))
            })
            .sum();
        let oldest = self
            .progress
            .iter()
            .filter_map(|p| {
                let ms = p.lane_oldest_ms.get(position)?.load(Ordering::Relaxed);
                (ms > 0).then_some(ms)
            })
            .min();
        let lag_s = oldest.map_or(0.0, |ms| now_ms.saturating_sub(ms) as f64 / 1000.0);
        (pending, lag_s)
    }

    fn documents(&self) -> u64 {
        self.shards.iter().map(|s| s.documents()).sum()
    }

    fn segments(&self) -> usize {
        self.shards.iter().map(|s| s.segments()).sum()
    }

    fn stop_and_join(&self) {
        self.stop.store(true, Ordering::Release);
        let threads =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

pub(crate) struct IndexHandle {
    pub config: IndexConfig,
    pub lanes: Arc<Vec<Lane>>,
    pub fingerprint: String,
    root: PathBuf,
    active: RwLock<Option<Arc<Generation>>>,
    building: Mutex<Option<Arc<Generation>>>,
    next_generation: AtomicU64,
    errors: Mutex<VecDeque<IndexErrorRecord>>,
    pub errors_total: AtomicU64,
    error_seq: AtomicU64,
}

impl IndexHandle {
    pub fn record_errors(&self, errors: Vec<(Value, String, String)>) {
        if errors.is_empty() {
            return;
        }
        let at_ms = worker::now_ms();
        let mut kept = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        for (key, field, message) in errors {
            self.errors_total.fetch_add(1, Ordering::Relaxed);
            let seq = self.error_seq.fetch_add(1, Ordering::Relaxed) + 1;
            if kept.len() == ERRORS_KEPT_MAX {
                kept.pop_front();
            }
            kept.push_back(IndexErrorRecord {
                seq,
                key,
                field,
                message,
                at_ms,
            });
        }
    }

    fn active(&self) -> Option<Arc<Generation>> {
        self.active
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn building(&self) -> Option<Arc<Generation>> {
        self.building
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

pub struct Runtime {
    engine: Engine,
    indexes: BTreeMap<String, Arc<IndexHandle>>,
    handle: tokio::runtime::Handle,
    limit_max: usize,
    offset_max: usize,
}

fn io_error(path: &Path, error: std::io::Error) -> RuntimeError {
    RuntimeError::Io(format!("{}: {error}", path.display()))
}

/// The fingerprint of what a generation's documents depend on: the fields.
fn fingerprint(config: &IndexConfig) -> String {
    let text = format!("{:?}", config.fields);
    format!("{:016x}", sluice_core::hash::fnv64(text.as_bytes()))
}

impl Runtime {
    /// Opens every configured index under `data_dir` and starts its workers. Must be
    /// called inside a tokio runtime (the workers read the change log through it).
    pub fn start(engine: Engine, data_dir: &Path) -> Result<Arc<Self>, RuntimeError> {
        let config = engine.config();
        let limits = config.limits.clone();
        let handle = tokio::runtime::Handle::try_current().map_err(|_| {
            RuntimeError::Invalid("the search runtime needs a tokio runtime".into())
        })?;
        let mut indexes = BTreeMap::new();
        for index in &config.indexes {
            let root = data_dir.join("indexes").join(&index.name);
            std::fs::create_dir_all(&root).map_err(|error| io_error(&root, error))?;
            let handle = Arc::new(IndexHandle {
                lanes: Arc::new(worker::lanes(index)),
                fingerprint: fingerprint(index),
                config: index.clone(),
                root,
                active: RwLock::new(None),
                building: Mutex::new(None),
                next_generation: AtomicU64::new(1),
                errors: Mutex::new(VecDeque::new()),
                errors_total: AtomicU64::new(0),
                error_seq: AtomicU64::new(0),
            });
            indexes.insert(index.name.clone(), handle);
        }
        let runtime = Arc::new(Self {
            engine,
            indexes,
            handle,
            limit_max: limits.search_limit_max,
            offset_max: limits.search_offset_max,
        });
        // Positions of indexes no longer configured would hold retention forever.
        forget_positions(&runtime.engine, |index, _| {
            !runtime.indexes.contains_key(index)
        })?;
        for index in runtime.indexes.values() {
            runtime.open_index(index)?;
        }
        Ok(runtime)
    }

    fn open_index(self: &Arc<Self>, index: &Arc<IndexHandle>) -> Result<(), RuntimeError> {
        let active_file = index.root.join("ACTIVE");
        let active_id = match std::fs::read_to_string(&active_file) {
            Ok(text) => Some(text.trim().to_owned()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => return Err(io_error(&active_file, error)),
        };
        // Generations are numbered; the next one is after every one on disk.
        let mut highest = 0;
        let entries =
            std::fs::read_dir(&index.root).map_err(|error| io_error(&index.root, error))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(number) = generation_number(&name) {
                highest = highest.max(number);
                if Some(&name) != active_id.as_ref() {
                    // An abandoned build (or an old generation a crash left behind).
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        index.next_generation.store(highest + 1, Ordering::Relaxed);
        let name = index.config.name.as_str();
        if let Err(error) = forget_positions(&self.engine, |index, generation| {
            index == name && Some(generation) != active_id.as_deref()
        }) {
            tracing::warn!(index = name, %error, "Could not remove abandoned generations' positions.");
        }
        if let Some(id) = active_id.filter(|id| index.root.join(id).is_dir()) {
            let schema_matches = id.ends_with(&index.fingerprint);
            let generation = self.open_generation(index, &id)?;
            *index.active.write().unwrap_or_else(PoisonError::into_inner) = Some(generation);
            if !schema_matches {
                tracing::info!(index = %index.config.name, "Index fields changed: rebuilding while the old generation answers.");
                self.begin_build(index)?;
            }
        } else {
            self.begin_build(index)?;
        }
        Ok(())
    }

    /// Opens generation `id` (creating it when new) and starts its workers. A
    /// generation keeps the fields it was built with (`fields.json`), so that one built
    /// before the config changed answers with its own schema until the rebuild is done.
    fn open_generation(
        self: &Arc<Self>,
        index: &Arc<IndexHandle>,
        id: &str,
    ) -> Result<Arc<Generation>, RuntimeError> {
        let dir = index.root.join(id);
        std::fs::create_dir_all(&dir).map_err(|error| io_error(&dir, error))?;
        let fields_file = dir.join("fields.json");
        let mut config = index.config.clone();
        match std::fs::read(&fields_file) {
            Ok(bytes) => {
                config.fields = serde_json::from_slice(&bytes).map_err(|error| {
                    RuntimeError::Io(format!("{}: {error}", fields_file.display()))
                })?;
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let bytes = serde_json::to_vec(&config.fields)
                    .map_err(|error| RuntimeError::Io(error.to_string()))?;
                std::fs::write(&fields_file, bytes)
                    .map_err(|error| io_error(&fields_file, error))?;
            }
            Err(error) => return Err(io_error(&fields_file, error)),
        }
        let schema = Arc::new(IndexSchema::new(&config));
        let dir = index.root.join(id);
        let partitions = usize::from(self.engine.partitions());
        let head = self.engine.head();
        let mut shards = Vec::with_capacity(partitions);
        let mut states = Vec::with_capacity(partitions);
        for partition in 0..partitions {
            let (shard, state) = Shard::open(
                &dir.join(format!("p{partition}")),
                Arc::clone(&schema),
                index.config.writer_memory_bytes,
                index.config.segments_max,
            )?;
            shards.push(Arc::new(shard));
            states.push(state.unwrap_or_else(|| crate::shard::ShardState {
                next_offset: head.offset(partition),
                scan_version: head.offset(partition),
                ..Default::default()
            }));
        }
        let lanes = index.lanes.len();
        let progress: Vec<Arc<ShardProgress>> = states
            .iter()
            .map(|state| {
                Arc::new(ShardProgress {
                    live: AtomicBool::new(state.live),
                    read_offset: AtomicU64::new(state.next_offset),
                    committed_offset: AtomicU64::new(state.next_offset),
                    lane_pending: (0..lanes).map(|_| AtomicU64::new(0)).collect(),
                    lane_oldest_ms: (0..lanes).map(|_| AtomicU64::new(0)).collect(),
                    ..Default::default()
                })
            })
            .collect();
        let generation = Arc::new(Generation {
            id: id.to_owned(),
            dir,
            schema,
            shards,
            progress,
            stop: Arc::new(AtomicBool::new(false)),
            threads: Mutex::new(Vec::new()),
        });
        {
            let mut threads = Vec::with_capacity(partitions);
            for (partition, state) in states.into_iter().enumerate() {
                let work = worker::Worker {
                    engine: self.engine.clone(),
                    handle: self.handle.clone(),
                    index: Arc::clone(index),
                    generation: Arc::clone(&generation),
                    partition,
                    runtime: Arc::downgrade(self),
                    recorded: std::cell::Cell::new(None),
                };
                let thread = std::thread::Builder::new()
                    .name(format!("index-{}-p{partition}", index.config.name))
                    .spawn(move || work.run(state))
                    .map_err(|error| {
                        RuntimeError::Io(format!("starting an index worker: {error}"))
                    })?;
                threads.push(thread);
            }
            *generation
                .threads
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = threads;
        }
        Ok(generation)
    }

    /// Starts building a new generation beside the searched one (unless one is being
    /// built already); returns its id.
    fn begin_build(self: &Arc<Self>, index: &Arc<IndexHandle>) -> Result<String, RuntimeError> {
        let mut building = index
            .building
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(generation) = building.as_ref() {
            return Ok(generation.id.clone());
        }
        let number = index.next_generation.fetch_add(1, Ordering::Relaxed);
        let id = format!("g{number:06}-{}", index.fingerprint);
        let generation = self.open_generation(index, &id)?;
        *building = Some(generation);
        Ok(id)
    }

    /// Called by a worker of a building generation after each commit: swaps it in once
    /// every partition is live and caught up.
    pub(crate) fn maybe_switch(&self, index: &Arc<IndexHandle>) {
        let Some(candidate) = index.building() else {
            return;
        };
        let head = self.engine.head();
        let ready = candidate
            .progress
            .iter()
            .enumerate()
            .all(|(partition, progress)| {
                progress.live.load(Ordering::Acquire)
                    && head
                        .offset(partition)
                        .saturating_sub(progress.read_offset.load(Ordering::Acquire))
                        <= SWITCH_BEHIND_RECORDS_MAX
            });
        if !ready {
            return;
        }
        let mut building = index
            .building
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !building
            .as_ref()
            .is_some_and(|generation| Arc::ptr_eq(generation, &candidate))
        {
            return;
        }
        if let Err(error) = write_active(&index.root, &candidate.id) {
            tracing::error!(index = %index.config.name, %error, "Could not switch to the rebuilt index; it keeps building.");
            return;
        }
        let old = index
            .active
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(Arc::clone(&candidate));
        *building = None;
        drop(building);
        tracing::info!(index = %index.config.name, generation = %candidate.id, "Index generation switched.");
        if let Some(old) = old {
            // The old generation's workers stop; its files go once no searcher maps them
            // (on Linux removing mapped files is safe: the mappings stay valid), and so do
            // the positions that held retention for it.
            let engine = self.engine.clone();
            let name = index.config.name.clone();
            std::thread::spawn(move || {
                old.stop_and_join();
                if let Err(error) = forget_positions(&engine, |index, generation| {
                    index == name && generation == old.id
                }) {
                    tracing::warn!(index = %name, %error, "Could not remove an old generation's positions.");
                }
                let _ = std::fs::remove_dir_all(&old.dir);
            });
        }
    }

    fn index(&self, name: &str) -> Result<&Arc<IndexHandle>, RuntimeError> {
        self.indexes
            .get(name)
            .ok_or_else(|| RuntimeError::UnknownIndex(name.to_owned()))
    }

    fn searched(&self, name: &str) -> Result<Arc<Generation>, RuntimeError> {
        self.index(name)?
            .active()
            .ok_or_else(|| RuntimeError::NotReady(name.to_owned()))
    }

    /// Answers a search request (the API's JSON body).
    pub fn search(&self, name: &str, body: &Value) -> Result<Value, RuntimeError> {
        let generation = self.searched(name)?;
        let request =
            SearchRequest::parse(body, &generation.schema, self.limit_max, self.offset_max)
                .map_err(|error| RuntimeError::Invalid(error.0))?;
        Ok(search::search(
            &generation.shards,
            &generation.schema,
            &request,
        )?)
    }

    pub fn autocomplete(
        &self,
        name: &str,
        field: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Value, RuntimeError> {
        if limit == 0 || limit > search::AUTOCOMPLETE_LIMIT_MAX {
            return Err(RuntimeError::Invalid(format!(
                "limit must be 1..={}",
                search::AUTOCOMPLETE_LIMIT_MAX
            )));
        }
        if prefix.len() > 256 {
            return Err(RuntimeError::Invalid(
                "prefix is longer than 256 bytes".into(),
            ));
        }
        let generation = self.searched(name)?;
        search::autocomplete(&generation.shards, &generation.schema, field, prefix, limit)?
            .map_err(RuntimeError::Invalid)
    }

    /// Field errors after `after` (a sequence number), oldest first.
    pub fn errors(
        &self,
        name: &str,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<IndexErrorRecord>, Option<u64>), RuntimeError> {
        let index = self.index(name)?;
        let kept = index.errors.lock().unwrap_or_else(PoisonError::into_inner);
        let page: Vec<IndexErrorRecord> = kept
            .iter()
            .filter(|error| error.seq > after)
            .take(limit)
            .cloned()
            .collect();
        let next = (page.len() == limit)
            .then(|| page.last().map(|e| e.seq))
            .flatten();
        Ok((page, next))
    }

    /// Starts a rebuild into a new generation (searches keep the current one meanwhile).
    pub fn rebuild(self: &Arc<Self>, name: &str) -> Result<Value, RuntimeError> {
        let index = Arc::clone(self.index(name)?);
        let id = self.begin_build(&index)?;
        Ok(json!({"index": name, "building": id}))
    }

    /// Every index's status.
    pub fn list(&self) -> Value {
        let head = self.engine.head();
        let now = worker::now_ms();
        let mut out = Vec::with_capacity(self.indexes.len());
        for (name, index) in &self.indexes {
            let active = index.active();
            let building = index.building();
            let generation_status = |generation: &Arc<Generation>| {
                // Read before the lanes: a worker publishes its lanes before its read
                // position.
                let behind = generation.behind(&head, |p| &p.read_offset);
                let uncommitted = generation.behind(&head, |p| &p.committed_offset);
                let mut lanes = Vec::with_capacity(index.lanes.len());
                for (position, lane) in index.lanes.iter().enumerate() {
                    let (pending, lag_s) = generation.lane(position, now);
                    lanes.push(json!({
                        "name": lane.name,
                        "max_delay_ms": lane.max_delay_ms,
                        "batch_size": lane.batch_size,
                        "pending": pending,
                        "lag_s": lag_s,
                    }));
                }
                let failures: Vec<String> = generation
                    .progress
                    .iter()
                    .filter_map(|p| {
                        p.failure
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .clone()
                    })
                    .collect();
                json!({
                    "generation": generation.id,
                    "live": generation.progress.iter().all(|p| p.live.load(Ordering::Relaxed)),
                    "documents": generation.documents(),
                    "scanned": generation.total(|p| &p.scanned),
                    "behind_records": behind,
                    "uncommitted_records": uncommitted,
                    "segments": generation.segments(),
                    "last_commit_ms": generation.progress.iter().map(|p| p.last_commit_ms.load(Ordering::Relaxed)).max(),
                    "lanes": lanes,
                    "failures": failures,
                })
            };
            let status = match (&active, &building) {
                (Some(_), Some(_)) => "rebuilding",
                (Some(generation), None) if generation.id.ends_with(&index.fingerprint) => "live",
                (Some(_), None) => "stale",
                (None, _) => "building",
            };
            out.push(json!({
                "name": name,
                "source": index.config.source,
                "status": status,
                "errors": index.errors_total.load(Ordering::Relaxed),
                "active": active.as_ref().map(&generation_status),
                "building": building.as_ref().map(&generation_status),
            }));
        }
        Value::Array(out)
    }

    /// The indexes' Prometheus series.
    pub fn render_metrics(&self, out: &mut String) {
        let head = self.engine.head();
        let now = worker::now_ms();
        let _ = writeln!(
            out,
            "# HELP sluice_index_documents Documents searchable in an index.\n# TYPE sluice_index_documents gauge"
        );
        let mut lines = Vec::new();
        for (name, index) in &self.indexes {
            let Some(generation) = index.active().or_else(|| index.building()) else {
                continue;
            };
            let documents = generation.documents();
            let _ = writeln!(
                out,
                "sluice_index_documents{{index=\"{name}\"}} {documents}"
            );
            let behind = generation.behind(&head, |p| &p.read_offset);
            lines.push(format!(
                "sluice_index_lag_records{{index=\"{name}\"}} {behind}"
            ));
            lines.push(format!(
                "sluice_index_commits_total{{index=\"{name}\"}} {}",
                generation.total(|p| &p.commits)
            ));
            lines.push(format!(
                "sluice_index_writes_total{{index=\"{name}\"}} {}",
                generation.total(|p| &p.writes)
            ));
            lines.push(format!(
                "sluice_index_stale_writes_total{{index=\"{name}\"}} {}",
                generation.total(|p| &p.stale_writes)
            ));
            lines.push(format!(
                "sluice_index_field_errors_total{{index=\"{name}\"}} {}",
                index.errors_total.load(Ordering::Relaxed)
            ));
            lines.push(format!(
                "sluice_index_segments{{index=\"{name}\"}} {}",
                generation.segments()
            ));
            for (position, lane) in index.lanes.iter().enumerate() {
                let (pending, lag_s) = generation.lane(position, now);
                lines.push(format!(
                    "sluice_index_lane_pending{{index=\"{name}\",lane=\"{}\"}} {pending}",
                    lane.name
                ));
                lines.push(format!(
                    "sluice_index_lane_lag_seconds{{index=\"{name}\",lane=\"{}\"}} {lag_s}",
                    lane.name
                ));
            }
        }
        for (metric, help, kind) in [
            (
                "sluice_index_lag_records",
                "Change records not yet read by an index.",
                "gauge",
            ),
            ("sluice_index_commits_total", "Index commits.", "counter"),
            (
                "sluice_index_writes_total",
                "Documents written into an index.",
                "counter",
            ),
            (
                "sluice_index_stale_writes_total",
                "Writes refused because the index held a newer version.",
                "counter",
            ),
            (
                "sluice_index_field_errors_total",
                "Source values that did not fit their field.",
                "counter",
            ),
            ("sluice_index_segments", "Segments of an index.", "gauge"),
            (
                "sluice_index_lane_pending",
                "Documents waiting in a lane.",
                "gauge",
            ),
            (
                "sluice_index_lane_lag_seconds",
                "Age of the oldest change waiting in a lane.",
                "gauge",
            ),
        ] {
            let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} {kind}");
            for line in lines.iter().filter(|line| {
                line.starts_with(metric) && line.as_bytes().get(metric.len()) == Some(&b'{')
            }) {
                let _ = writeln!(out, "{line}");
            }
        }
    }

    /// Stops every worker after its current step.
    pub fn shutdown(&self) {
        for index in self.indexes.values() {
            if let Some(generation) = index.building() {
                generation.stop_and_join();
            }
            if let Some(generation) = index.active() {
                generation.stop_and_join();
            }
        }
    }

    /// Waits until index `name` is searchable with everything durable now written and
    /// committed (tests, and the CLI's rebuild progress through the status); `false` on
    /// timeout.
    pub async fn wait_caught_up(
        &self,
        name: &str,
        timeout: std::time::Duration,
    ) -> Result<bool, RuntimeError> {
        let index = Arc::clone(self.index(name)?);
        let target = self.engine.head();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if index.building().is_none()
                && let Some(generation) = index.active()
                && generation
                    .progress
                    .iter()
                    .enumerate()
                    .all(|(partition, p)| {
                        p.live.load(Ordering::Acquire)
                            && p.committed_offset.load(Ordering::Acquire)
                                >= target.offset(partition)
                    })
            {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            // The workers publish progress in memory only: look again shortly.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// The id of the generation searched now.
    pub fn active_generation(&self, name: &str) -> Result<Option<String>, RuntimeError> {
        Ok(self.index(name)?.active().map(|g| g.id.clone()))
    }
}

/// Removes the retention positions (see [`worker::consumer_name`]) of the generations
/// `gone(index, generation)` picks. A failure leaves them: retention then keeps more,
/// nothing is lost.
fn forget_positions(
    engine: &Engine,
    gone: impl Fn(&str, &str) -> bool,
) -> Result<(), sluice_engine::EngineError> {
    let stale: Vec<String> = engine
        .consumer_names()?
        .into_iter()
        .filter(|consumer| {
            worker::parse_consumer_name(consumer)
                .is_some_and(|(index, generation)| gone(index, generation))
        })
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    engine.commit_batch(|batch| {
        for consumer in &stale {
            batch.remove_consumer(consumer);
        }
    })
}

fn generation_number(name: &str) -> Option<u64> {
    name.strip_prefix('g')?.split('-').next()?.parse().ok()
}

fn write_active(root: &Path, id: &str) -> Result<(), RuntimeError> {
    let partial = root.join("ACTIVE.partial");
    let path = root.join("ACTIVE");
    let mut file = std::fs::File::create(&partial).map_err(|error| io_error(&partial, error))?;
    file.write_all(id.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|error| io_error(&partial, error))?;
    std::fs::rename(&partial, &path).map_err(|error| io_error(&path, error))?;
    std::fs::File::open(root)
        .and_then(|dir| dir.sync_all())
        .map_err(|error| io_error(root, error))?;
    Ok(())
}
