//! One partition of one version of a projection: a thread of its own (the script's
//! runtime is not `Send`, and its stack cap needs a known stack), which first scans the
//! source collection for the documents of its partition (the backfill), then follows the
//! change log as a consumer. Each chunk of work is one commit of entries, owner records,
//! dependency edges, errors, progress and (at the end of a batch) the consumer's cursor.

use super::apply::{Outcome, Writes};
use super::redis::{ApplyOutcome, Outbox};
use super::{Progress, ProjectionMetrics, StoredProgress, VersionState};
use crate::{Lookup, LookupError, Projector};
use sluice_core::Key;
use sluice_core::change::{json_str_text, split_record};
use sluice_engine::{Backoff, ConsumerOptions, DocSnapshot, Engine, EngineError, StartAt};
use sluice_store::StoreError;
use std::collections::HashSet;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

/// Source documents projected per commit: bounds the memory of a batch whose records
/// fan out to many dependents, and the time the view's commit lock is held.
pub(crate) const SOURCES_PER_COMMIT_MAX: usize = 1_000;
/// Documents scanned per backfill step.
const BACKFILL_PAGE_DOCS: usize = 1_000;
/// Dependents read per store scan.
const DEPENDENTS_PAGE: usize = 1_000;
/// How often an idle worker checks that Redis still holds its partition.
const REDIS_CHECK_MS: u64 = 1_000;

/// Resolves after `REDIS_CHECK_MS` with a Redis target; never without one, so that an
/// embedded projection's worker wakes only for records.
async fn idle_check(redis: bool) {
    if redis {
        tokio::time::sleep(Duration::from_millis(REDIS_CHECK_MS)).await;
    } else {
        std::future::pending::<()>().await;
    }
}

pub(crate) fn consumer_name(view: &str, partition: u16) -> String {
    format!("projection.{view}.p{partition}")
}

/// Builds the projector in the worker's thread.
pub(crate) type Factory =
    Arc<dyn Fn() -> Result<Box<dyn Projector>, crate::ScriptError> + Send + Sync>;

pub(crate) struct Worker {
    /// With `target = "redis"`: this worker's connection.
    pub redis: Option<std::cell::RefCell<super::redis::RedisTarget>>,
    /// Whether this worker has brought Redis in step since its version became active.
    pub mirroring: std::cell::Cell<bool>,
    pub engine: Engine,
    pub handle: tokio::runtime::Handle,
    pub source: String,
    pub partition: u16,
    pub factory: Factory,
    pub metrics: Arc<ProjectionMetrics>,
    pub version: Arc<VersionState>,
}

/// Why a worker's loop ended.
enum Ended {
    Stopped,
    EngineClosed,
}

/// Lookups of one chunk, all in one snapshot of the store. The snapshot does not change,
/// so a document read twice in a chunk (a location many doctors name) is read once.
struct SnapshotLookup {
    engine: Engine,
    snapshot: DocSnapshot,
    cache: std::sync::Mutex<std::collections::HashMap<(String, String), Option<String>>>,
}

/// Documents one chunk's lookup cache holds at most.
const LOOKUP_CACHE_DOCS_MAX: usize = 4_096;

impl Lookup for SnapshotLookup {
    fn get(&self, collection: &str, key: &str) -> Result<Option<String>, LookupError> {
        let cache_key = (collection.to_owned(), key.to_owned());
        if let Some(found) = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&cache_key)
        {
            return Ok(found.clone());
        }
        let found = self.read(collection, key)?;
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() < LOOKUP_CACHE_DOCS_MAX {
            cache.insert(cache_key, found.clone());
        }
        Ok(found)
    }
}

impl SnapshotLookup {
    fn read(&self, collection: &str, key: &str) -> Result<Option<String>, LookupError> {
        let spec = self
            .engine
            .collection(collection)
            .map_err(|_| LookupError::UnknownCollection(collection.to_owned()))?;
        // A key the collection cannot have names no document.
        let Ok(parsed) = spec.key_from_text(key) else {
            return Ok(None);
        };
        let store_error = |message: String| LookupError::Store {
            collection: collection.to_owned(),
            key: key.to_owned(),
            message,
        };
        match self.snapshot.get(collection, &parsed) {
            Ok(Some(bytes)) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| store_error("the stored document is not UTF-8".to_owned())),
            Ok(None) => Ok(None),
            Err(error) => Err(store_error(error.to_string())),
        }
    }
}

/// Source documents to project, each once, in the order first seen.
#[derive(Default)]
struct WorkSet {
    keys: Vec<Key>,
    seen: HashSet<Vec<u8>>,
}

impl WorkSet {
    fn insert(&mut self, key: Key) -> bool {
        if self.seen.insert(key.encode()) {
            self.keys.push(key);
            return true;
        }
        false
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    fn take(&mut self) -> Vec<Key> {
        self.seen.clear();
        std::mem::take(&mut self.keys)
    }
}

fn corrupt(what: &'static str) -> EngineError {
    EngineError::Store(StoreError::Corrupt { what })
}

/// A change record's key (raw JSON) as a key.
fn record_key(raw: &[u8]) -> Option<Key> {
    let value: serde_json::Value = serde_json::from_slice(raw).ok()?;
    let parts = match &value {
        serde_json::Value::Array(parts) => parts
            .iter()
            .map(|part| sluice_core::key::KeyPart::from_json(part, "/key").ok())
            .collect::<Option<Vec<_>>>()?,
        scalar => vec![sluice_core::key::KeyPart::from_json(scalar, "/key").ok()?],
    };
    Some(Key::new(parts))
}

impl Worker {
    fn stopped(&self) -> bool {
        *self.version.stop.borrow()
    }

    fn set_failure(&self, failure: Option<String>) {
        let mut status = self.version.partitions[usize::from(self.partition)]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        status.failure = failure;
    }

    fn publish(&self, progress: &Progress) {
        let mut status = self.version.partitions[usize::from(self.partition)]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        status.progress = progress.clone();
    }

    /// The thread's body: builds the projector, then backfills and follows the change
    /// log until stopped, retrying after store errors with a backoff.
    pub fn run(self) {
        let mut projector = match (self.factory)() {
            Ok(projector) => projector,
            Err(error) => {
                tracing::error!(view = %self.version.view, %error, "The projection's script does not load.");
                self.set_failure(Some(format!("the script does not load: {error}")));
                return;
            }
        };
        let backoff = Backoff::new(5_000);
        let mut failures = 0u32;
        loop {
            if self.stopped() {
                return;
            }
            match self.follow(projector.as_mut()) {
                Ok(Ended::Stopped | Ended::EngineClosed) => return,
                Err(error) => {
                    failures = failures.saturating_add(1);
                    tracing::error!(view = %self.version.view, partition = self.partition, %error, "A projection worker failed; it retries.");
                    self.set_failure(Some(error.to_string()));
                    let wait = backoff.delay(failures);
                    let mut stop = self.version.stop.subscribe();
                    self.handle.block_on(async {
                        let _ = tokio::time::timeout(wait, stop.wait_for(|stop| *stop)).await;
                    });
                }
            }
        }
    }

    fn load_progress(&self) -> Result<Progress, EngineError> {
        Ok(
            super::read_progress(&self.engine, &self.version.view, self.partition)?
                .map(|stored| stored.progress)
                .unwrap_or_default(),
        )
    }

    fn follow(&self, projector: &mut dyn Projector) -> Result<Ended, EngineError> {
        let mut progress = self.load_progress()?;
        self.publish(&progress);
        if !progress.live
            && let Some(ended) = self.backfill(&mut progress, projector)?
        {
            return Ok(ended);
        }
        self.mirroring.set(false);
        self.set_failure(None);
        self.live(&mut progress, projector)
    }

    /// Projects the documents of this partition, page by page, each page committed with
    /// where the scan got to. `Some` when stopped before the end.
    fn backfill(
        &self,
        progress: &mut Progress,
        projector: &mut dyn Projector,
    ) -> Result<Option<Ended>, EngineError> {
        let partitions = self.engine.partitions();
        loop {
            if self.stopped() {
                return Ok(Some(Ended::Stopped));
            }
            let after = progress
                .after
                .as_deref()
                .map(|hex| sluice_core::hex::decode(hex).ok_or(corrupt("projection progress")))
                .transpose()?;
            let page = self.engine.store().scan_docs(
                &self.source,
                after.as_deref(),
                BACKFILL_PAGE_DOCS,
            )?;
            let exhausted = page.len() < BACKFILL_PAGE_DOCS;
            let mut keys = Vec::with_capacity(page.len() / usize::from(partitions) + 1);
            for (encoded, _) in &page {
                let key = Key::decode(encoded).map_err(|_| corrupt("document key"))?;
                if key.partition(partitions) == self.partition {
                    keys.push(key);
                }
            }
            progress.scanned += keys.len() as u64;
            progress.after = page.last().map(|(key, _)| sluice_core::hex::encode(key));
            if exhausted {
                progress.live = true;
                progress.after = None;
            }
            self.commit(keys, progress, None, projector)?;
            self.publish(progress);
            if exhausted {
                return Ok(None);
            }
        }
    }

    fn live(
        &self,
        progress: &mut Progress,
        projector: &mut dyn Projector,
    ) -> Result<Ended, EngineError> {
        let name = consumer_name(&self.version.view, self.partition);
        // Large pages while catching up: each is one commit, so the per-commit costs
        // (the fsync, the progress record, reading every partition's log) are shared by
        // more records. A page takes what is there, so a small load still waits for none.
        let options = ConsumerOptions {
            batch_records_max: 4_000,
            prefetch_batches_max: 2,
            poll_wait_ms: 1_000,
        };
        let mut consumer = self
            .handle
            .block_on(async { self.engine.consumer(&name, StartAt::Head, options) })?;
        let mut stop = self.version.stop.subscribe();
        loop {
            self.bring_redis_in_step(progress, false)?;
            let next = self.handle.block_on(async {
                tokio::select! {
                    batch = consumer.next_batch() => Some(Some(batch)),
                    _ = stop.wait_for(|stop| *stop) => None,
                    // Idle: check now and then that Redis still holds the projection.
                    () = idle_check(self.redis.is_some()) => Some(None),
                }
            });
            let page = match next {
                None => {
                    self.handle.block_on(consumer.close());
                    return Ok(Ended::Stopped);
                }
                Some(None) => {
                    self.bring_redis_in_step(progress, true)?;
                    continue;
                }
                Some(Some(None)) => return Ok(Ended::EngineClosed),
                Some(Some(Some(page))) => page?,
            };
            let mut work = WorkSet::default();
            for (record, (record_partition, _)) in page.records.iter().zip(&page.positions) {
                let Some(members) = split_record(record).and_then(|parts| parts.members()) else {
                    return Err(corrupt("change record"));
                };
                let collection =
                    json_str_text(members.collection).map_err(|_| corrupt("change record"))?;
                let is_source = *record_partition == self.partition && collection == self.source;
                let is_read = progress.read_collections.contains(collection.as_ref());
                if !is_source && !is_read {
                    continue;
                }
                let Some(key) = record_key(members.key) else {
                    return Err(corrupt("change record key"));
                };
                if is_source {
                    work.insert(key.clone());
                }
                if !is_read {
                    continue;
                }
                let dependency = key.to_string();
                let mut after: Option<Vec<u8>> = None;
                loop {
                    let dependents = self.engine.store().view_dependents(
                        &self.version.view,
                        self.partition,
                        &collection,
                        dependency.as_bytes(),
                        after.as_deref(),
                        DEPENDENTS_PAGE,
                    )?;
                    let full = dependents.len() == DEPENDENTS_PAGE;
                    for source in &dependents {
                        let key = Key::decode(source).map_err(|_| corrupt("dependency"))?;
                        if work.insert(key) {
                            self.metrics
                                .reruns
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        if work.len() >= SOURCES_PER_COMMIT_MAX {
                            self.commit(work.take(), progress, None, projector)?;
                        }
                    }
                    after = dependents.last().cloned();
                    if !full {
                        break;
                    }
                }
            }
            self.commit(
                work.take(),
                progress,
                Some((&mut consumer, &page.next, page.records.len() as u64)),
                projector,
            )?;
            self.publish(progress);
        }
    }

    /// Projects `keys` (in one snapshot) and commits the outcome, with the consumer's
    /// cursor when `through` is given (and how many records that cursor moves past).
    fn commit(
        &self,
        keys: Vec<Key>,
        progress: &mut Progress,
        through: Option<(&mut sluice_engine::Consumer, &sluice_core::Cursor, u64)>,
        projector: &mut dyn Projector,
    ) -> Result<(), EngineError> {
        let lookup = Arc::new(SnapshotLookup {
            engine: self.engine.clone(),
            snapshot: self.engine.snapshot(),
            cache: std::sync::Mutex::new(std::collections::HashMap::new()),
        });
        let shared: Arc<dyn Lookup> = lookup.clone();
        let mut outcomes = Vec::with_capacity(keys.len());
        for key in keys {
            let outcome = match lookup.snapshot.get(&self.source, &key)? {
                None => Outcome::Deleted,
                Some(doc) => {
                    let text = String::from_utf8(doc).map_err(|_| corrupt("document JSON"))?;
                    let started = Instant::now();
                    let result = projector.project(&text, &shared);
                    self.metrics
                        .call_seconds
                        .observe(started.elapsed().as_secs_f64());
                    self.metrics
                        .calls
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    match result {
                        Ok(projected) => Outcome::Projected(projected),
                        Err(error) => Outcome::Failed(error),
                    }
                }
            };
            outcomes.push((key, outcome));
        }
        drop(shared);
        drop(lookup);
        let now_ms = now_ms();
        let version = &self.version;
        // Entry keys are shared by the partitions: who owns one is decided and written
        // under the view's lock.
        let _guard = version
            .commit_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut writes = Writes::new(
            &self.engine,
            &version.view,
            self.partition,
            &version.script_hash,
            progress.errors,
            self.mirroring.get(),
        );
        for (key, outcome) in outcomes {
            writes.add(&key, outcome, now_ms)?;
        }
        self.metrics
            .errors
            .fetch_add(writes.errors, std::sync::atomic::Ordering::Relaxed);
        let mut next = progress.clone();
        if let Some((_, _, records)) = &through {
            next.records += *records;
        }
        next.entries += writes.entries_delta;
        next.read_collections
            .extend(std::mem::take(&mut writes.read_collections));
        next.errors += writes.errors_delta;
        let outbox = match writes.ops.take() {
            Some(ops) if !ops.is_empty() => {
                next.redis_seq += 1;
                Some(Outbox {
                    seq: next.redis_seq,
                    ops,
                })
            }
            _ => None,
        };
        let outbox_bytes = outbox
            .as_ref()
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|_| corrupt("projection outbox"))?;
        let stored = StoredProgress {
            progress: next.clone(),
            script_hash: version.script_hash.clone(),
        };
        let progress_bytes =
            serde_json::to_vec(&stored).map_err(|_| corrupt("projection progress"))?;
        let (view, partition) = (version.view.as_str(), self.partition);
        let write = |batch: &mut sluice_store::Batch<'_>| {
            writes.write(batch);
            batch.put_view_progress(view, partition, &progress_bytes);
            if let Some(bytes) = &outbox_bytes {
                batch.put_view_outbox(view, partition, bytes);
            }
        };
        match through {
            Some((consumer, cursor, _)) => consumer.commit_with(cursor, write)?,
            None => self.engine.commit_batch(write)?,
        }
        *progress = next;
        drop(_guard);
        if let Some(outbox) = outbox {
            self.apply_to_redis(&outbox, progress)?;
        }
        Ok(())
    }

    /// Applies a committed outbox to Redis; rebuilds the partition there when Redis is
    /// not where the embedded store says it is.
    fn apply_to_redis(&self, outbox: &Outbox, progress: &Progress) -> Result<(), EngineError> {
        let Some(redis) = &self.redis else {
            return Ok(());
        };
        let applied = redis
            .borrow_mut()
            .apply(&self.version.view, self.partition, outbox)?;
        if applied == ApplyOutcome::OutOfStep {
            self.rebuild_redis(progress)?;
        }
        Ok(())
    }

    fn rebuild_redis(&self, progress: &Progress) -> Result<(), EngineError> {
        let Some(redis) = &self.redis else {
            return Ok(());
        };
        let started = Instant::now();
        let written = redis.borrow_mut().rebuild(
            &self.engine,
            &self.version.view,
            self.partition,
            progress.redis_seq,
        )?;
        self.version
            .redis_rebuilds
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(
            view = %self.version.view,
            partition = self.partition,
            entries = written,
            ms = started.elapsed().as_millis() as u64,
            "Redis did not hold this projection's partition (restarted, flushed, or a new version): rebuilt it from the embedded entries."
        );
        Ok(())
    }

    /// Once this version mirrors to Redis (it became active), and on `recheck`: makes
    /// sure Redis is at this partition's last commit, applying the stored outbox that a
    /// crash may have left unapplied, or rebuilding.
    fn bring_redis_in_step(&self, progress: &Progress, recheck: bool) -> Result<(), EngineError> {
        let Some(redis) = &self.redis else {
            return Ok(());
        };
        if !self
            .version
            .mirror
            .load(std::sync::atomic::Ordering::Acquire)
            || (self.mirroring.get() && !recheck)
        {
            return Ok(());
        }
        let view = &self.version.view;
        if !redis
            .borrow_mut()
            .in_step(view, self.partition, progress.redis_seq)?
        {
            let outbox = self
                .engine
                .store()
                .get_view_outbox(view, self.partition)?
                .map(|bytes| {
                    serde_json::from_slice::<Outbox>(&bytes)
                        .map_err(|_| corrupt("projection outbox"))
                })
                .transpose()?;
            match outbox {
                // After a restart, the last commit may not have reached Redis.
                Some(outbox) if outbox.seq == progress.redis_seq => {
                    self.apply_to_redis(&outbox, progress)?
                }
                _ => self.rebuild_redis(progress)?,
            }
        }
        self.mirroring.set(true);
        Ok(())
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}
