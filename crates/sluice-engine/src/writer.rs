//! One writer thread per partition. It takes whatever submissions are queued (up to
//! `batch_events_max` events), applies them against its cache of document states, and
//! commits documents, change records, rejected events and counters in one atomic batch,
//! then waits for the shared fsync before anyone is answered.

use crate::input::{Input, Rejection};
use crate::{EngineError, ItemResult, Shared, Status};
use serde_json::Value;
use sluice_core::merge::{Applied, DocState, Outcome};
use sluice_core::{Key, VersionError, change, codec};
use sluice_store::Counters;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

pub(crate) type Reply = Result<Vec<(u32, ItemResult)>, EngineError>;

pub(crate) struct Submission {
    pub collection: usize,
    pub items: Vec<(u32, Input)>,
    pub reply: oneshot::Sender<Reply>,
}

type CacheKey = (usize, Vec<u8>);

pub(crate) struct Writer {
    pub partition: u16,
    pub shared: Arc<Shared>,
    pub receiver: mpsc::Receiver<Submission>,
    pub next_offset: u64,
    pub cache: HashMap<CacheKey, DocState>,
}

/// What one batch accumulates before its commit.
struct BatchState<'a> {
    store_batch: sluice_store::Batch<'a>,
    /// Keys whose stored state changed, with their document's JSON when already known.
    dirty: HashMap<CacheKey, Option<Vec<u8>>>,
    deltas: Vec<Counters>,
    /// Change record bodies, at offsets from `first_offset` on.
    changes: Vec<Vec<u8>>,
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
                    reply_error(batch, &error);
                }
            }
            self.evict_if_full();
        }
    }

    fn process(
        &mut self,
        batch: &mut [Submission],
    ) -> Result<Vec<Vec<(u32, ItemResult)>>, EngineError> {
        let shared = Arc::clone(&self.shared);
        let mut state = BatchState {
            store_batch: shared.store.batch(),
            dirty: HashMap::new(),
            deltas: vec![Counters::default(); shared.collections.len()],
            changes: Vec::new(),
            first_offset: self.next_offset,
            ts_ms: now_ms(),
        };
        let offset_before = self.next_offset;
        let mut results = Vec::with_capacity(batch.len());
        for submission in batch.iter_mut() {
            let collection = submission.collection;
            let mut items = Vec::with_capacity(submission.items.len());
            for (index, input) in submission.items.drain(..) {
                items.push((index, self.apply(collection, input, &mut state)?));
            }
            results.push(items);
        }
        self.finish(state)?;
        self.shared
            .sync
            .sync(&self.shared.store, &self.shared.metrics.sync_seconds)?;
        // Durable now: readers may see the new records, and waiting readers wake up.
        if self.next_offset != offset_before {
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
            Input::Event(event) => self.apply_to_key(collection, event.key, batch, |state| {
                state.apply(event.version, &event.patch).map_err(|error| {
                    (
                        error,
                        String::from_utf8(serialize(&event.patch)).unwrap_or_default(),
                    )
                })
            }),
            Input::Delete { key, version } => self.apply_to_key(collection, key, batch, |state| {
                state
                    .delete(version)
                    .map_err(|error| (error, format!("DELETE version={version:?}")))
            }),
            Input::Reject(rejection) => Ok(self.reject(collection, None, rejection, batch)),
        }
    }

    fn apply_to_key(
        &mut self,
        collection: usize,
        key: Key,
        batch: &mut BatchState<'_>,
        operation: impl FnOnce(&mut DocState) -> Result<Applied, (VersionError, String)>,
    ) -> Result<ItemResult, EngineError> {
        let shared = Arc::clone(&self.shared);
        let spec = &shared.collections[collection].spec;
        let cache_key = (collection, key.encode());
        let state = match self.cache.entry(cache_key.clone()) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let loaded = match shared.store.get_doc(&spec.name, &cache_key.1)? {
                    Some(bytes) => codec::decode_state(&bytes)?,
                    None => DocState::new(spec.ordering),
                };
                entry.insert(loaded)
            }
        };
        let existed = state.doc().is_some();
        let applied = match operation(state) {
            Ok(applied) => applied,
            Err((error, text)) => {
                let rejection = crate::input::rejection(error.to_string(), &text, "processor");
                return Ok(self.reject(collection, Some(key.to_json()), rejection, batch));
            }
        };
        let delta = &mut batch.deltas[collection];
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
        if applied.state_changed {
            let doc_json = match applied.outcome {
                Outcome::Applied => {
                    let doc_json = state.doc().map(serialize);
                    let body = change::encode_body(
                        &spec.name,
                        &key,
                        state.version(),
                        doc_json.as_deref(),
                        &applied.changed,
                        batch.ts_ms,
                    );
                    batch.changes.push(body);
                    self.next_offset += 1;
                    delta.documents += i64::from(state.doc().is_some()) - i64::from(existed);
                    doc_json
                }
                _ => None,
            };
            match batch.dirty.entry(cache_key) {
                Entry::Occupied(mut entry) => {
                    if doc_json.is_some() {
                        entry.insert(doc_json);
                    }
                }
                Entry::Vacant(entry) => {
                    entry.insert(doc_json);
                }
            }
        }
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

    /// Writes the final state of every dirty key and the new counters, then commits.
    fn finish(&mut self, batch: BatchState<'_>) -> Result<(), EngineError> {
        let BatchState {
            mut store_batch,
            dirty,
            deltas,
            changes,
            first_offset,
            ..
        } = batch;
        debug_assert_eq!(first_offset + changes.len() as u64, self.next_offset);
        store_batch.append_changes(self.partition, first_offset, &changes);
        for ((collection, key_bytes), doc_json) in dirty {
            let Some(state) = self.cache.get(&(collection, key_bytes.clone())) else {
                debug_assert!(false, "a dirty key is always cached");
                continue;
            };
            let doc_json = doc_json.or_else(|| state.doc().map(serialize));
            let record = codec::encode(state, doc_json.as_deref());
            store_batch.put_doc(
                &self.shared.collections[collection].spec.name,
                &key_bytes,
                record,
            );
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
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            total.add(delta);
            store_batch.put_counters(&entry.spec.name, self.partition, &total);
            totals.push((collection, total));
        }
        store_batch.commit()?;
        for (collection, total) in totals {
            *self.shared.collections[collection].counters[partition]
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = total;
        }
        Ok(())
    }

    /// Keeps the cache under its limit by dropping an arbitrary quarter of it (HashMap
    /// order is effectively random); cheap, and the store has everything.
    fn evict_if_full(&mut self) {
        let max = self.shared.config.engine.doc_cache_entries_max;
        if self.cache.len() <= max {
            return;
        }
        let target = max - max / 4;
        let excess = self.cache.len() - target;
        let victims: Vec<CacheKey> = self.cache.keys().take(excess).cloned().collect();
        for victim in victims {
            self.cache.remove(&victim);
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
