//! One writer thread per partition. It takes whatever submissions are queued (up to
//! `batch_events_max` events), applies them to the states of their keys, and commits
//! documents, one change-log chunk, rejected events and counters in one atomic batch,
//! then waits for the shared fsync before anyone is answered.

use crate::input::{Input, Rejection};
use crate::{EngineError, ItemResult, Shared, Status};
use serde_json::Value;
use sluice_core::merge::{Applied, DocState, Outcome};
use sluice_core::{Key, VersionError, change, codec};
use sluice_store::{ChangeChunk, Counters};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

pub(crate) type Reply = Result<Vec<(u32, ItemResult)>, EngineError>;

pub(crate) struct Submission {
    pub collection: usize,
    pub items: Vec<(u32, Input)>,
    pub reply: oneshot::Sender<Reply>,
}

/// (collection index, encoded key)
type CacheKey = (usize, Vec<u8>);

pub(crate) struct Writer {
    pub partition: u16,
    pub shared: Arc<Shared>,
    pub receiver: mpsc::Receiver<Submission>,
    pub next_offset: u64,
    /// Encoded states of recently used keys: decoding one is much cheaper than a store
    /// read, and encoded states are small enough to keep many.
    pub cache: HashMap<CacheKey, Vec<u8>>,
    pub cache_bytes: usize,
    pub cache_bytes_max: usize,
    /// Kept between batches for their capacity: fresh memory costs page faults.
    pub spare_working: HashMap<CacheKey, Working>,
    pub spare_chunk: ChangeChunk,
}

/// A key's state while a batch works on it.
pub(crate) struct Working {
    state: DocState,
    /// The stored state changed: write it at the end of the batch.
    dirty: bool,
    /// The visible document's JSON, when the last change already serialized it.
    doc_json: Option<Vec<u8>>,
    /// The stored record, when it was read from the store (worth caching as it is).
    from_store: Option<Vec<u8>>,
    /// Ids of the events last applied to the document, oldest first; loaded on the first
    /// event with an id (only collections without a version field deduplicate by id).
    seen_ids: Option<Vec<String>>,
    seen_ids_dirty: bool,
}

/// What one batch accumulates before its commit.
struct BatchState<'a> {
    store_batch: sluice_store::Batch<'a>,
    /// Every key the batch touched.
    working: HashMap<CacheKey, Working>,
    deltas: Vec<Counters>,
    /// Change records, at offsets from `first_offset` on.
    changes: ChangeChunk,
    first_offset: u64,
    ts_ms: u64,
}

impl Writer {
    pub fn run(mut self) {
        let batch_events_max = self.shared.config.engine.batch_events_max;
        while let Some(first) = self.receiver.blocking_recv() {
            let started = Instant::now();
            let mut events = first.items.len();
            let mut batch = vec![first];
            while events < batch_events_max {
                match self.receiver.try_recv() {
                    Ok(submission) => {
                        events += submission.items.len();
                        batch.push(submission);
                    }
                    Err(_) => break,
                }
            }
            if self.shared.poisoned.load(Ordering::Acquire) {
                reply_error(batch, &EngineError::Poisoned);
                continue;
            }
            match self.process(&mut batch) {
                Ok(results) => {
                    let metrics = &self.shared.metrics;
                    metrics.batch_events.observe(events as f64);
                    metrics
                        .commit_seconds
                        .observe(started.elapsed().as_secs_f64());
                    for (submission, result) in batch.into_iter().zip(results) {
                        // A caller that went away (client disconnected) is not an error.
                        let _ = submission.reply.send(Ok(result));
                    }
                }
                Err(error) => {
                    // The store's state is unknown after a failed commit or fsync: stop
                    // taking writes (see ARCHITECTURE.md, "poisoning").
                    tracing::error!(partition = self.partition, %error, "Commit failed; refusing further writes.");
                    self.shared.poisoned.store(true, Ordering::Release);
                    self.cache.clear();
                    self.cache_bytes = 0;
                    reply_error(batch, &error);
                }
            }
            self.evict_if_full();
            self.shared.doc_cache_bytes[usize::from(self.partition)]
                .store(self.cache_bytes as u64, Ordering::Relaxed);
            // After the answers, so backpressure delays the next batch, not this one.
            self.wait_for_flushes();
        }
    }

    fn process(
        &mut self,
        batch: &mut [Submission],
    ) -> Result<Vec<Vec<(u32, ItemResult)>>, EngineError> {
        let shared = Arc::clone(&self.shared);
        let mut state = BatchState {
            store_batch: shared.store.batch(),
            working: std::mem::take(&mut self.spare_working),
            deltas: vec![Counters::default(); shared.collections.len()],
            changes: std::mem::take(&mut self.spare_chunk),
            first_offset: self.next_offset,
            ts_ms: now_ms(),
        };
        let mut results = Vec::with_capacity(batch.len());
        for submission in batch.iter_mut() {
            let collection = submission.collection;
            let mut items = Vec::with_capacity(submission.items.len());
            for (index, input) in submission.items.drain(..) {
                items.push((index, self.apply(collection, input, &mut state)?));
            }
            results.push(items);
        }
        let wrote_changes = !state.changes.is_empty();
        self.finish(state)?;
        self.shared
            .sync
            .sync(&self.shared.store, &self.shared.metrics.sync_seconds)?;
        // Durable now: readers may see the new records, and waiting readers wake up.
        if wrote_changes {
            self.shared.durable[usize::from(self.partition)]
                .store(self.next_offset, Ordering::Release);
            self.shared
                .changes_notify
                .send_modify(|generation| *generation += 1);
        }
        Ok(results)
    }

    fn apply(
        &mut self,
        collection: usize,
        input: Input,
        batch: &mut BatchState<'_>,
    ) -> Result<ItemResult, EngineError> {
        match input {
            Input::Event(event) => {
                // With a version, redeliveries are idempotent by version; without one,
                // arrival order is the version and only the id tells a redelivery apart.
                let id = event
                    .id
                    .filter(|_| self.shared.collections[collection].spec.version.is_none());
                self.apply_to_key(collection, event.key, id, batch, |state| {
                    state.apply(event.version, &event.patch).map_err(|error| {
                        (
                            error,
                            String::from_utf8(serialize(&event.patch)).unwrap_or_default(),
                        )
                    })
                })
            }
            Input::Delete { key, version } => {
                self.apply_to_key(collection, key, None, batch, |state| {
                    state
                        .delete(version)
                        .map_err(|error| (error, format!("DELETE version={version:?}")))
                })
            }
            Input::Reject(rejection) => Ok(self.reject(collection, None, rejection, batch)),
        }
    }

    fn apply_to_key(
        &mut self,
        collection: usize,
        key: Key,
        id: Option<String>,
        batch: &mut BatchState<'_>,
        operation: impl FnOnce(&mut DocState) -> Result<Applied, (VersionError, String)>,
    ) -> Result<ItemResult, EngineError> {
        let shared = Arc::clone(&self.shared);
        let name = &shared.collections[collection].spec.name;
        let ts_ms = batch.ts_ms;
        let working = load_working(
            &mut batch.working,
            &self.cache,
            &shared,
            (collection, key.encode()),
        )?;
        if let Some(id) = id {
            let seen_ids = match &mut working.seen_ids {
                Some(seen_ids) => seen_ids,
                None => working
                    .seen_ids
                    .insert(shared.store.get_seen_ids(name, &key.encode())?),
            };
            if seen_ids.contains(&id) {
                batch.deltas[collection].noop += 1;
                return Ok(ItemResult {
                    status: Status::Noop,
                    key: Some(key.to_json()),
                    error: None,
                });
            }
            let kept_max = shared.config.engine.seen_ids_per_document_max.max(1);
            if seen_ids.len() >= kept_max {
                seen_ids.drain(..=seen_ids.len() - kept_max);
            }
            seen_ids.push(id);
            working.seen_ids_dirty = true;
        }
        let existed = working.state.exists();
        let applied = match operation(&mut working.state) {
            Ok(applied) => applied,
            Err((error, text)) => {
                let rejection = crate::input::rejection(error.to_string(), &text, "processor");
                return Ok(self.reject(collection, Some(key.to_json()), rejection, batch));
            }
        };
        let delta = &mut batch.deltas[collection];
        if applied.state_changed {
            working.dirty = true;
            working.doc_json = None;
            if applied.outcome == Outcome::Applied {
                let state = &working.state;
                let doc_json = state.doc_json();
                batch.changes.push(|out| {
                    let version = state.version();
                    change::encode_body_into(
                        out,
                        name,
                        &key,
                        version,
                        doc_json.as_deref(),
                        &applied.changed,
                        ts_ms,
                    );
                });
                self.next_offset += 1;
                delta.documents += i64::from(state.exists()) - i64::from(existed);
                working.doc_json = doc_json;
            }
        }
        let status = match applied.outcome {
            Outcome::Applied => {
                delta.applied += 1;
                Status::Applied
            }
            Outcome::Noop => {
                delta.noop += 1;
                Status::Noop
            }
            Outcome::Stale => {
                delta.stale += 1;
                Status::Stale
            }
        };
        Ok(ItemResult {
            status,
            key: Some(key.to_json()),
            error: None,
        })
    }

    fn reject(
        &self,
        collection: usize,
        key: Option<Value>,
        rejection: Rejection,
        batch: &mut BatchState<'_>,
    ) -> ItemResult {
        let shared = &self.shared;
        let entry = &shared.collections[collection];
        let seq = entry.rejected_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let record = serde_json::json!({
            "seq": seq,
            "ts_ms": batch.ts_ms,
            "origin": rejection.origin,
            "reason": rejection.reason,
            "key": key,
            "event": rejection.text,
        });
        batch
            .store_batch
            .put_rejected(&entry.spec.name, seq, serialize(&record));
        let kept_max = shared.config.limits.rejected_kept_max.max(1);
        if seq > kept_max {
            batch
                .store_batch
                .remove_rejected(&entry.spec.name, seq - kept_max);
        }
        batch.deltas[collection].rejected += 1;
        ItemResult {
            status: Status::Rejected,
            key,
            error: Some(rejection.reason),
        }
    }

    /// Writes the final state of every changed key, the change-log chunk and the new
    /// counters, commits, and keeps the touched states in the cache.
    fn finish(&mut self, batch: BatchState<'_>) -> Result<(), EngineError> {
        let BatchState {
            mut store_batch,
            working,
            deltas,
            changes,
            first_offset,
            ..
        } = batch;
        debug_assert_eq!(first_offset + changes.len() as u64, self.next_offset);
        store_batch.append_chunk(self.partition, first_offset, &changes);
        let mut cached = Vec::with_capacity(working.len());
        let mut working = working;
        for (cache_key, working) in working.drain() {
            if working.seen_ids_dirty
                && let Some(seen_ids) = &working.seen_ids
            {
                let name = &self.shared.collections[cache_key.0].spec.name;
                store_batch.put_seen_ids(name, &cache_key.1, seen_ids);
            }
            if working.dirty {
                let record = codec::encode(&working.state, working.doc_json.as_deref());
                let name = &self.shared.collections[cache_key.0].spec.name;
                store_batch.put_doc(name, &cache_key.1, record.clone());
                cached.push((cache_key, record));
            } else if let Some(record) = working.from_store {
                cached.push((cache_key, record));
            }
        }
        let partition = usize::from(self.partition);
        let mut totals = Vec::new();
        for (collection, delta) in deltas.iter().enumerate() {
            if *delta == Counters::default() {
                continue;
            }
            let entry = &self.shared.collections[collection];
            let mut total = *entry.counters[partition]
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            total.add(delta);
            store_batch.put_counters(&entry.spec.name, self.partition, &total);
            totals.push((collection, total));
        }
        let mut changes = changes;
        changes.clear();
        self.spare_chunk = changes;
        self.spare_working = working;
        store_batch.commit()?;
        for (collection, total) in totals {
            *self.shared.collections[collection].counters[partition]
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = total;
        }
        // Only committed states enter the cache.
        for (cache_key, record) in cached {
            let key_bytes = cache_key.1.len();
            self.cache_bytes += record.len() + key_bytes;
            // A replaced entry frees its old record and the new key (the map keeps the
            // old one, of the same length).
            if let Some(old) = self.cache.insert(cache_key, record) {
                self.cache_bytes -= old.len() + key_bytes;
            }
        }
        Ok(())
    }

    /// Backpressure: when writes outpace the store's flushes, its in-memory tables grow
    /// without bound. fjall has no notification for "flushed", so poll briefly, up to a
    /// limit after which the writer goes on (memory then grows, but nothing stops).
    fn wait_for_flushes(&self) {
        const POLL: std::time::Duration = std::time::Duration::from_millis(1);
        const WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(5);
        let budget = self.shared.config.engine.store_write_buffer_bytes_max;
        let started = Instant::now();
        while self.shared.store.write_buffer_bytes() > budget && started.elapsed() < WAIT_MAX {
            std::thread::sleep(POLL);
        }
        let waited = started.elapsed();
        if waited >= POLL {
            self.shared
                .metrics
                .flush_wait_seconds
                .observe(waited.as_secs_f64());
        }
    }

    /// Keeps the cache under its byte budget by dropping arbitrary entries (HashMap order
    /// is effectively random) down to three quarters of it; the store has everything.
    fn evict_if_full(&mut self) {
        if self.cache_bytes <= self.cache_bytes_max {
            return;
        }
        let target = self.cache_bytes_max - self.cache_bytes_max / 4;
        let mut victims = Vec::new();
        let mut freed = 0;
        for (cache_key, record) in &self.cache {
            if self.cache_bytes - freed <= target {
                break;
            }
            freed += record.len() + cache_key.1.len();
            victims.push(cache_key.clone());
        }
        for victim in victims {
            self.cache.remove(&victim);
        }
        self.cache_bytes -= freed;
    }
}

/// The state of a key for this batch: from the batch, the cache, or the store.
fn load_working<'b>(
    working: &'b mut HashMap<CacheKey, Working>,
    cache: &HashMap<CacheKey, Vec<u8>>,
    shared: &Shared,
    cache_key: CacheKey,
) -> Result<&'b mut Working, EngineError> {
    match working.entry(cache_key) {
        Entry::Occupied(entry) => Ok(entry.into_mut()),
        Entry::Vacant(entry) => {
            let (state, from_store) = match cache.get(entry.key()) {
                Some(record) => (codec::decode_state(record)?, None),
                None => {
                    let spec = &shared.collections[entry.key().0].spec;
                    match shared.store.get_doc(&spec.name, &entry.key().1)? {
                        Some(record) => (codec::decode_state(&record)?, Some(record.to_vec())),
                        None => (DocState::new(spec.ordering), None),
                    }
                }
            };
            Ok(entry.insert(Working {
                state,
                dirty: false,
                doc_json: None,
                from_store,
                seen_ids: None,
                seen_ids_dirty: false,
            }))
        }
    }
}

fn reply_error(batch: Vec<Submission>, error: &EngineError) {
    for submission in batch {
        let _ = submission.reply.send(Err(error.clone_for_reply()));
    }
}

fn serialize<T: serde::Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Serializing JSON values into memory cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}
