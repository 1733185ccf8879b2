//! Sluice's processor. Events are routed by `hash(key) mod partitions` to one writer
//! thread per partition (per-key order), applied in batches and committed with the new
//! documents, the change records and the counters in one atomic, fsynced write before
//! any caller is answered. This crate also serves reads: documents, the change log (with
//! long polling), rejected events, stats and metrics.
//!
//! It knows nothing about HTTP: the server and the CLI both drive it through [`Engine`].

mod backoff;
pub mod component;
pub mod consumer;
pub mod input;
pub mod metrics;
mod retention;
pub mod subscription;
mod sync;
pub mod tokens;
mod views;
mod writer;

pub use backoff::Backoff;
pub use component::{Component, ComponentStatus};
pub use consumer::{Consumer, ConsumerOptions, Lag, StartAt};
pub use input::{BodyError, BodyFormat, Input};
pub use sluice_store::Counters;
pub use subscription::{SubscriptionInfo, SubscriptionSpec};
pub use tokens::{Role, TokenCheck, TokenEntry, TokenRecord, TokenSpec};
pub use views::DocSnapshot;

use serde::Serialize;
use sluice_core::event::{CollectionSpec, Limits};
use sluice_core::hex::encode as encode_hex;
use sluice_core::{Config, Cursor, CursorError, Key, Version, codec};
use sluice_store::{Bytes, ChangeRecords, Store, StoreError, StoreOptions};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use metrics::Metrics;
use sync::GroupSync;
use writer::{Submission, Writer};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("unknown collection {0:?}")]
    UnknownCollection(String),
    #[error("the processor is overloaded: queues stayed full for {waited_ms} ms")]
    Overloaded { waited_ms: u64 },
    #[error("a commit failed earlier; the store refuses writes until a restart (see the log)")]
    Poisoned,
    #[error("the processor is shutting down")]
    Closed,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Codec(#[from] codec::CodecError),
    #[error(transparent)]
    Cursor(#[from] CursorError),
    #[error(
        "records from offset {offset} of partition {partition} on were removed by retention (the oldest kept is {oldest}): \
         resync from the documents (GET /v1/collections/NAME/docs) and then follow the change log from `now`"
    )]
    CursorExpired {
        partition: usize,
        offset: u64,
        oldest: u64,
    },
    #[error("invalid config: {0}")]
    Config(String),
    #[error("{0}")]
    Invalid(String),
    #[error("unknown subscription {0:?}")]
    UnknownSubscription(String),
    #[error("a token named {0:?} exists already; revoke it first or pick another name")]
    TokenExists(String),
}

impl EngineError {
    /// Whether opening failed because another process (a running server) holds the data
    /// directory.
    pub fn is_locked(&self) -> bool {
        matches!(self, EngineError::Store(StoreError::Locked))
    }

    /// Writers answer many callers with one error, and store errors are not `Clone`.
    /// Every error a writer meets poisons the engine, so that is what callers learn.
    fn clone_for_reply(&self) -> Self {
        match self {
            EngineError::Closed => EngineError::Closed,
            _ => EngineError::Poisoned,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Applied,
    Noop,
    Stale,
    Rejected,
}

/// What happened to one event of a request.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ItemResult {
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Inputs handed to the writers by [`Engine::enqueue`], not yet known to be durable.
pub struct Queued {
    count: usize,
    replies: Vec<oneshot::Receiver<writer::Reply>>,
}

impl Queued {
    /// One result per input, in input order, once all of them are durable.
    pub async fn results(self) -> Result<Vec<ItemResult>, EngineError> {
        let mut results: Vec<Option<ItemResult>> = vec![None; self.count];
        for receiver in self.replies {
            let items = receiver.await.map_err(|_| EngineError::Closed)??;
            for (index, result) in items {
                results[index as usize] = Some(result);
            }
        }
        debug_assert!(results.iter().all(Option::is_some));
        Ok(results.into_iter().flatten().collect())
    }
}

/// A stored document, as reads return it.
#[derive(Clone, Debug)]
pub struct StoredDoc {
    pub key: serde_json::Value,
    pub version: Option<Version>,
    /// The document's JSON text.
    pub doc: Bytes,
}

/// A page of the change log: each record is a complete JSON object with its cursor.
#[derive(Debug)]
pub struct ChangesPage {
    pub records: Vec<Vec<u8>>,
    /// The partition and offset of each record, in the order of `records` (what a
    /// record's cursor says, without parsing it).
    pub positions: Vec<(u16, u64)>,
    pub next: Cursor,
}

/// One change record as [`Engine::changes_with`] reads it: its body as stored, and the
/// cursor just past it (the record's own `cursor` member).
pub struct ReadRecord<'a> {
    pub partition: u16,
    pub offset: u64,
    pub next: &'a Cursor,
    /// The stored body: the record without its `cursor` member.
    pub body: &'a [u8],
}

impl ReadRecord<'_> {
    /// Appends the full record JSON (the body with its cursor spliced in front).
    pub fn write_record(&self, out: &mut Vec<u8>) {
        sluice_core::change::with_cursor(self.next, self.body, out);
    }

    /// The full record JSON in a buffer of its own.
    pub fn to_record(&self) -> Vec<u8> {
        let mut record = Vec::with_capacity(self.body.len() + 16 + 21 * self.next.offsets().len());
        self.write_record(&mut record);
        record
    }
}

impl ChangesPage {
    /// An empty page at `next`, with room for `limit` records.
    fn with_capacity(limit: usize, next: Cursor) -> Self {
        Self {
            records: Vec::with_capacity(limit),
            positions: Vec::with_capacity(limit),
            next,
        }
    }

    /// Appends a record as [`Engine::changes_with`] read it.
    fn push(&mut self, read: ReadRecord<'_>) {
        self.records.push(read.to_record());
        self.positions.push((read.partition, read.offset));
    }

    /// Keeps the records (and their positions) for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8]) -> bool) {
        debug_assert_eq!(self.records.len(), self.positions.len());
        let mut kept = 0;
        for index in 0..self.records.len() {
            if keep(&self.records[index]) {
                self.records.swap(kept, index);
                self.positions.swap(kept, index);
                kept += 1;
            }
        }
        self.records.truncate(kept);
        self.positions.truncate(kept);
    }
}

pub(crate) struct CollectionEntry {
    pub spec: CollectionSpec,
    pub rejected_seq: AtomicU64,
    /// Committed totals, one per partition.
    pub counters: Vec<Mutex<Counters>>,
}

/// State shared by the engine handle and the writer threads.
pub(crate) struct Shared {
    pub config: Config,
    pub store: Store,
    pub collections: Vec<CollectionEntry>,
    pub sync: GroupSync,
    pub metrics: Metrics,
    /// Per partition: records below this offset are durable and readable.
    pub durable: Vec<AtomicU64>,
    /// Per partition: the oldest offset retention kept; older records are gone.
    pub retained_from: Vec<AtomicU64>,
    /// Bumped whenever new change records become durable.
    pub changes_notify: watch::Sender<u64>,
    pub poisoned: AtomicBool,
    /// Per partition: bytes in the writer's document cache (the writer stores it after
    /// each batch; metrics read it).
    pub doc_cache_bytes: Vec<AtomicU64>,
    pub components: component::Components,
    /// Every access token, by the hash of its secret.
    pub tokens: tokens::TokenTable,
}

struct Inner {
    shared: Arc<Shared>,
    senders: Vec<mpsc::Sender<Submission>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    retention: Mutex<Option<retention::RetentionThread>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        drop(
            self.retention
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        // Closing the queues ends the writers once they drained them.
        self.senders.clear();
        let threads =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        for thread in threads {
            let _ = thread.join();
        }
        if let Err(error) = self.shared.store.sync() {
            tracing::error!(%error, "Final sync failed.");
        }
    }
}

/// The processor handle. Cheap to clone; the last clone dropped shuts the writers down
/// after they drained their queues.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// Opens the store in `data_dir`, recovers offsets and counters, starts the writers.
    pub fn open(config: &Config, data_dir: &Path) -> Result<Self, EngineError> {
        config
            .validate()
            .map_err(|error| EngineError::Config(error.to_string()))?;
        let partitions = config.engine.partitions;
        let options = StoreOptions {
            cache_bytes: config.engine.store_cache_bytes,
            memtable_bytes: config.engine.store_memtable_bytes,
            journal_bytes_max: config.engine.store_journal_bytes_max,
        };
        let store = Store::open(data_dir, partitions, options)?;
        let stored_counters = store.load_counters()?;
        let tokens = tokens::TokenTable::load(store.tokens()?)?;
        let mut collections = Vec::with_capacity(config.collections.len());
        for collection in &config.collections {
            let spec = CollectionSpec::from_config(collection)
                .map_err(|error| EngineError::Config(error.to_string()))?;
            let counters: Vec<Mutex<Counters>> = (0..partitions)
                .map(|partition| {
                    let stored = stored_counters
                        .iter()
                        .find(|(name, p, _)| *name == spec.name && *p == partition)
                        .map(|(_, _, counters)| *counters);
                    Mutex::new(stored.unwrap_or_default())
                })
                .collect();
            let rejected_seq = AtomicU64::new(store.last_rejected_seq(&spec.name)?);
            collections.push(CollectionEntry {
                spec,
                rejected_seq,
                counters,
            });
        }
        let mut next_offsets = Vec::with_capacity(usize::from(partitions));
        let mut first_offsets = Vec::with_capacity(usize::from(partitions));
        for partition in 0..partitions {
            next_offsets.push(store.next_change_offset(partition)?);
            first_offsets.push(AtomicU64::new(store.first_change_offset(partition)?));
        }
        let shared = Arc::new(Shared {
            config: config.clone(),
            store,
            collections,
            sync: GroupSync::default(),
            metrics: Metrics::default(),
            durable: next_offsets
                .iter()
                .map(|offset| AtomicU64::new(*offset))
                .collect(),
            retained_from: first_offsets,
            changes_notify: watch::channel(0).0,
            poisoned: AtomicBool::new(false),
            doc_cache_bytes: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
            components: Default::default(),
            tokens,
        });
        let mut senders = Vec::new();
        let mut threads = Vec::new();
        for (partition, next_offset) in (0..partitions).zip(next_offsets) {
            let (sender, receiver) = mpsc::channel(config.engine.queue_submissions_max);
            let writer = Writer {
                partition,
                shared: Arc::clone(&shared),
                receiver,
                next_offset,
                cache: Default::default(),
                cache_bytes: 0,
                spare_working: Default::default(),
                spare_chunk: Default::default(),
                cache_bytes_max: config.engine.doc_cache_bytes_max / usize::from(partitions),
            };
            let thread = std::thread::Builder::new()
                .name(format!("sluice-writer-{partition}"))
                .spawn(move || writer.run())
                .map_err(|error| {
                    EngineError::Config(format!("cannot start writer thread: {error}"))
                })?;
            senders.push(sender);
            threads.push(thread);
        }
        tracing::info!(partitions, collections = config.collections.len(), data_dir = %data_dir.display(), "Engine open.");
        let retention = retention::RetentionThread::start(
            Arc::downgrade(&shared),
            config.engine.retention_interval_ms,
        )
        .map_err(|error| {
            EngineError::Config(format!("cannot start the retention thread: {error}"))
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                senders,
                threads: Mutex::new(threads),
                retention: Mutex::new(Some(retention)),
            }),
        })
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    pub fn config(&self) -> &Config {
        &self.shared().config
    }

    /// The data directory's id (see [`Store::instance_id`]).
    pub fn instance_id(&self) -> &str {
        self.shared().store.instance_id()
    }

    pub fn partitions(&self) -> u16 {
        self.shared().config.engine.partitions
    }

    pub fn event_limits(&self) -> Limits {
        let limits = &self.shared().config.limits;
        Limits {
            event_bytes_max: limits.event_bytes_max,
            event_depth_max: limits.event_depth_max,
        }
    }

    pub fn collection(&self, name: &str) -> Result<&CollectionSpec, EngineError> {
        self.collection_index(name)
            .map(|index| &self.shared().collections[index].spec)
    }

    fn collection_index(&self, name: &str) -> Result<usize, EngineError> {
        self.shared()
            .collections
            .iter()
            .position(|entry| entry.spec.name == name)
            .ok_or_else(|| EngineError::UnknownCollection(name.to_owned()))
    }

    /// Parses a request body for `collection` (see [`input::parse_body`]).
    pub fn parse_body(
        &self,
        collection: &str,
        body: &[u8],
        format: BodyFormat,
    ) -> Result<Result<Vec<Input>, BodyError>, EngineError> {
        let spec = self.collection(collection)?;
        let events_max = self.shared().config.limits.request_events_max;
        Ok(input::parse_body(
            spec,
            body,
            format,
            self.event_limits(),
            events_max,
        ))
    }

    /// Applies inputs durably; one result per input, in input order. Waits at most
    /// `enqueue_timeout_ms` for queue space, then fails with [`EngineError::Overloaded`].
    pub async fn submit(
        &self,
        collection: &str,
        inputs: Vec<Input>,
    ) -> Result<Vec<ItemResult>, EngineError> {
        self.enqueue(collection, inputs).await?.results().await
    }

    /// The first half of [`Engine::submit`]: once this returns, the inputs are queued
    /// (whole, or not at all) and are applied after everything queued before them, so a
    /// caller can queue its next inputs before these are durable and still keep per-key
    /// order. [`Queued::results`] waits for the durable outcome.
    pub async fn enqueue(
        &self,
        collection: &str,
        inputs: Vec<Input>,
    ) -> Result<Queued, EngineError> {
        let collection = self.collection_index(collection)?;
        if self.shared().poisoned.load(Ordering::Acquire) {
            return Err(EngineError::Poisoned);
        }
        let partitions = self.partitions();
        let count = inputs.len();
        let mut per_partition: Vec<Vec<(u32, Input)>> =
            (0..partitions).map(|_| Vec::new()).collect();
        for (index, input) in inputs.into_iter().enumerate() {
            let partition = match &input {
                Input::Event(event) => event.key.partition(partitions),
                Input::Delete { key, .. } => key.partition(partitions),
                Input::Reject(_) => (index % usize::from(partitions)) as u16,
            };
            per_partition[usize::from(partition)].push((index as u32, input));
        }
        // Reserve room in every queue first, so that a request is either queued whole or
        // refused whole.
        let timeout_ms = self.shared().config.engine.enqueue_timeout_ms;
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        let mut permits = Vec::new();
        for (partition, items) in per_partition.into_iter().enumerate() {
            if items.is_empty() {
                continue;
            }
            match tokio::time::timeout_at(deadline, self.inner.senders[partition].reserve()).await {
                Ok(Ok(permit)) => permits.push((permit, items)),
                Ok(Err(_)) => return Err(EngineError::Closed),
                Err(_) => {
                    self.shared()
                        .metrics
                        .overloaded_total
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(EngineError::Overloaded {
                        waited_ms: timeout_ms,
                    });
                }
            }
        }
        let mut replies = Vec::with_capacity(permits.len());
        for (permit, items) in permits {
            let (reply, receiver) = oneshot::channel();
            permit.send(Submission {
                collection,
                items,
                reply,
            });
            replies.push(receiver);
        }
        Ok(Queued { count, replies })
    }

    pub fn get(&self, collection: &str, key: &Key) -> Result<Option<StoredDoc>, EngineError> {
        let spec = self.collection(collection)?;
        let Some(bytes) = self.shared().store.get_doc(&spec.name, &key.encode())? else {
            return Ok(None);
        };
        stored_doc(spec, &bytes)
    }

    /// Documents in key order after the `after` token; returns the page and the token for
    /// the next page (`None` at the end).
    pub fn list(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<StoredDoc>, Option<String>), EngineError> {
        let spec = self.collection(collection)?;
        let after = after
            .map(|token| {
                decode_hex(token)
                    .ok_or_else(|| CursorError::Malformed(token.chars().take(64).collect()))
            })
            .transpose()?;
        let limit = limit.clamp(1, self.shared().config.limits.docs_limit_max);
        let mut docs = Vec::with_capacity(limit);
        let mut position = after;
        // Tombstones take no room in the page, so scan until the page is full or the end.
        loop {
            let scanned = self
                .shared()
                .store
                .scan_docs(&spec.name, position.as_deref(), limit)?;
            let exhausted = scanned.len() < limit;
            for (key, bytes) in scanned {
                position = Some(key);
                if let Some(doc) = stored_doc(spec, &bytes)? {
                    docs.push(doc);
                    if docs.len() == limit {
                        return Ok((docs, position.map(|key| encode_hex(&key))));
                    }
                }
            }
            if exhausted {
                return Ok((docs, None));
            }
        }
    }

    /// The cursor after everything durable now.
    pub fn head(&self) -> Cursor {
        Cursor::from_offsets(
            self.shared()
                .durable
                .iter()
                .map(|offset| offset.load(Ordering::Acquire))
                .collect(),
        )
    }

    pub fn parse_cursor(&self, token: &str) -> Result<Cursor, EngineError> {
        Ok(Cursor::parse(token, usize::from(self.partitions()))?)
    }

    /// Change records after `after`, at most `limit`, waiting up to `wait` for the first
    /// one. Partitions are interleaved round-robin so none starves.
    pub async fn changes(
        &self,
        after: Cursor,
        limit: usize,
        wait: Duration,
    ) -> Result<ChangesPage, EngineError> {
        self.changes_of(after, limit, wait, None).await
    }

    /// [`Engine::changes`], keeping only the records of `collection` when given (the
    /// cursor still moves past the others).
    pub async fn changes_of(
        &self,
        after: Cursor,
        limit: usize,
        wait: Duration,
        collection: Option<&str>,
    ) -> Result<ChangesPage, EngineError> {
        self.changes_in(
            after,
            limit,
            wait,
            collection.as_ref().map(std::slice::from_ref),
        )
        .await
    }

    /// [`Engine::changes`], keeping only the records of `collections` when given (an
    /// access token limited to some collections reads the change log this way).
    pub async fn changes_in(
        &self,
        after: Cursor,
        limit: usize,
        wait: Duration,
        collections: Option<&[impl AsRef<str>]>,
    ) -> Result<ChangesPage, EngineError> {
        let limit = limit.clamp(1, self.shared().config.limits.changes_limit_max);
        let mut page = ChangesPage::with_capacity(limit, after.clone());
        let next = self
            .changes_with(after, limit, wait, collections, |read| page.push(read))
            .await?;
        page.next = next;
        Ok(page)
    }

    /// [`Engine::changes_in`] without a page: `visit` sees each record as it is read out
    /// of the store, so a reader that writes records somewhere (an event stream) copies
    /// each once. Returns the cursor after the last record read (past skipped records of
    /// other collections too); `visit` is called for at most `limit` records, none when
    /// the wait ended without any.
    pub async fn changes_with(
        &self,
        after: Cursor,
        limit: usize,
        wait: Duration,
        collections: Option<&[impl AsRef<str>]>,
        visit: impl FnMut(ReadRecord<'_>),
    ) -> Result<Cursor, EngineError> {
        self.read_waiting(after, None, limit, wait, collections, visit)
            .await
    }

    /// [`Engine::changes_with`] over one partition's records only: a read model that
    /// keeps one consumer per partition (a search index's shard) reads its own. The
    /// cursor's other offsets are neither checked nor moved.
    pub async fn partition_changes_with(
        &self,
        partition: usize,
        after: Cursor,
        limit: usize,
        wait: Duration,
        collections: Option<&[impl AsRef<str>]>,
        visit: impl FnMut(ReadRecord<'_>),
    ) -> Result<Cursor, EngineError> {
        self.read_waiting(after, Some(partition), limit, wait, collections, visit)
            .await
    }

    async fn read_waiting(
        &self,
        mut after: Cursor,
        only: Option<usize>,
        limit: usize,
        wait: Duration,
        collections: Option<&[impl AsRef<str>]>,
        mut visit: impl FnMut(ReadRecord<'_>),
    ) -> Result<Cursor, EngineError> {
        let prefixes: Option<Vec<Vec<u8>>> = collections.map(|names| {
            names
                .iter()
                .map(|name| sluice_core::change::collection_prefix(name.as_ref()))
                .collect()
        });
        let prefixes = prefixes.as_deref();
        let limit = limit.clamp(1, self.shared().config.limits.changes_limit_max);
        let deadline = Instant::now() + wait;
        let mut notified = self.shared().changes_notify.subscribe();
        loop {
            notified.borrow_and_update();
            let (next, visited) =
                self.read_changes_with(&after, only, limit, prefixes, &mut visit)?;
            if visited > 0 || Instant::now() >= deadline {
                return Ok(next);
            }
            if next != after {
                // Only other collections' records: skip them and look again.
                after = next;
                continue;
            }
            match tokio::time::timeout_at(deadline, notified.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return Err(EngineError::Closed),
                Err(_) => {
                    return Ok(self
                        .read_changes_with(&after, only, limit, prefixes, &mut visit)?
                        .0);
                }
            }
        }
    }

    /// One page of the change log after `after`; `prefixes`, when given, are the
    /// [`sluice_core::change::collection_prefix`]es of the collections whose records are kept.
    pub(crate) fn read_changes(
        &self,
        after: &Cursor,
        limit: usize,
        prefixes: Option<&[Vec<u8>]>,
    ) -> Result<ChangesPage, EngineError> {
        let mut page = ChangesPage::with_capacity(limit, after.clone());
        let (next, _) =
            self.read_changes_with(after, None, limit, prefixes, &mut |read| page.push(read))?;
        page.next = next;
        Ok(page)
    }

    /// Reads up to `limit` records after `after` (round robin over the partitions) and
    /// hands each kept one to `visit`; returns the cursor after the last record read and
    /// how many were visited.
    fn read_changes_with(
        &self,
        after: &Cursor,
        only: Option<usize>,
        limit: usize,
        prefixes: Option<&[Vec<u8>]>,
        visit: &mut impl FnMut(ReadRecord<'_>),
    ) -> Result<(Cursor, usize), EngineError> {
        let shared = self.shared();
        // Per partition: the offsets to read (`from..until`) and the chunks that hold them.
        let mut reads = Vec::with_capacity(shared.durable.len());
        for (partition, durable) in shared.durable.iter().enumerate() {
            let from = after.offset(partition);
            if only.is_some_and(|only| only != partition) {
                reads.push((from, from, Vec::new()));
                continue;
            }
            let until = durable.load(Ordering::Acquire);
            let oldest = shared.retained_from[partition].load(Ordering::Acquire);
            if from < oldest {
                return Err(EngineError::CursorExpired {
                    partition,
                    offset: from,
                    oldest,
                });
            }
            let chunks = shared
                .store
                .read_change_chunks(partition as u16, from, until, limit)?;
            reads.push((from, until, chunks));
        }
        // Records are read out of their chunks straight into the reader's output.
        let mut per_partition: Vec<_> = reads
            .iter()
            .map(|(from, until, chunks)| ChangeRecords::new(chunks, *from, *until))
            .collect();
        let mut next = after.clone();
        let mut visited = 0;
        'fill: loop {
            let mut progressed = false;
            for (partition, iterator) in per_partition.iter_mut().enumerate() {
                if visited == limit {
                    break 'fill;
                }
                if let Some(record) = iterator.next() {
                    let (offset, body) = record?;
                    if offset != next.offset(partition) {
                        // Retention removed the records between: never skip silently.
                        let oldest = shared.retained_from[partition].load(Ordering::Acquire);
                        return Err(EngineError::CursorExpired {
                            partition,
                            offset: next.offset(partition),
                            oldest,
                        });
                    }
                    next.set(partition, offset + 1);
                    progressed = true;
                    if prefixes.is_some_and(|prefixes| {
                        !prefixes.iter().any(|prefix| body.starts_with(prefix))
                    }) {
                        continue;
                    }
                    visit(ReadRecord {
                        partition: partition as u16,
                        offset,
                        next: &next,
                        body,
                    });
                    visited += 1;
                }
            }
            if !progressed {
                break;
            }
        }
        Ok((next, visited))
    }

    /// Rejected events of a collection after sequence number `after`.
    pub fn rejected(
        &self,
        collection: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Bytes>, EngineError> {
        let spec = self.collection(collection)?;
        let limit = limit.clamp(1, self.shared().config.limits.docs_limit_max);
        Ok(self
            .shared()
            .store
            .scan_rejected(&spec.name, after, limit)?
            .into_iter()
            .map(|(_, bytes)| bytes)
            .collect())
    }

    pub fn stats(&self, collection: &str) -> Result<Counters, EngineError> {
        let index = self.collection_index(collection)?;
        Ok(self.collection_counters(index))
    }

    fn collection_counters(&self, index: usize) -> Counters {
        let mut total = Counters::default();
        for counters in &self.shared().collections[index].counters {
            total.add(&counters.lock().unwrap_or_else(PoisonError::into_inner));
        }
        total
    }

    pub fn is_poisoned(&self) -> bool {
        self.shared().poisoned.load(Ordering::Acquire)
    }

    /// The status handle of component `name` (a connector), registered on first use.
    pub fn component(&self, name: &str) -> Component {
        self.shared().components.get(name)
    }

    /// Every registered component's status, by name.
    pub fn components(&self) -> Vec<(String, ComponentStatus)> {
        self.shared().components.statuses()
    }

    /// Prometheus text exposition.
    pub fn render_metrics(&self) -> String {
        let shared = self.shared();
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP sluice_events_total Events processed, by collection and outcome.\n");
        out.push_str("# TYPE sluice_events_total counter\n");
        for (index, entry) in shared.collections.iter().enumerate() {
            let counters = self.collection_counters(index);
            let name = &entry.spec.name;
            for (outcome, value) in [
                ("applied", counters.applied),
                ("noop", counters.noop),
                ("stale", counters.stale),
                ("rejected", counters.rejected),
            ] {
                let _ = writeln!(
                    out,
                    "sluice_events_total{{collection=\"{name}\",outcome=\"{outcome}\"}} {value}"
                );
            }
        }
        out.push_str("# HELP sluice_documents Live documents, by collection.\n# TYPE sluice_documents gauge\n");
        for (index, entry) in shared.collections.iter().enumerate() {
            let documents = self.collection_counters(index).documents;
            let _ = writeln!(
                out,
                "sluice_documents{{collection=\"{}\"}} {documents}",
                entry.spec.name
            );
        }
        out.push_str("# HELP sluice_queue_submissions Submissions waiting, by partition.\n");
        out.push_str("# TYPE sluice_queue_submissions gauge\n");
        for (partition, sender) in self.inner.senders.iter().enumerate() {
            let waiting = sender.max_capacity() - sender.capacity();
            let _ = writeln!(
                out,
                "sluice_queue_submissions{{partition=\"{partition}\"}} {waiting}"
            );
        }
        out.push_str("# HELP sluice_change_log_oldest_offset The oldest change record kept, by partition (retention moves it).\n");
        out.push_str("# TYPE sluice_change_log_oldest_offset gauge\n");
        for (partition, oldest) in shared.retained_from.iter().enumerate() {
            let _ = writeln!(
                out,
                "sluice_change_log_oldest_offset{{partition=\"{partition}\"}} {}",
                oldest.load(Ordering::Acquire)
            );
        }
        out.push_str("# HELP sluice_change_log_disk_bytes Disk taken by the change log's tables, by partition.\n");
        out.push_str("# TYPE sluice_change_log_disk_bytes gauge\n");
        for partition in 0..shared.retained_from.len() {
            let _ = writeln!(
                out,
                "sluice_change_log_disk_bytes{{partition=\"{partition}\"}} {}",
                shared.store.change_log_disk_bytes(partition as u16)
            );
        }
        let overloaded = shared.metrics.overloaded_total.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP sluice_overloaded_total Requests refused because queues were full.\n# TYPE sluice_overloaded_total counter\nsluice_overloaded_total {overloaded}"
        );
        let poisoned = u8::from(self.is_poisoned());
        let _ = writeln!(
            out,
            "# HELP sluice_poisoned 1 when a failed commit stopped writes.\n# TYPE sluice_poisoned gauge\nsluice_poisoned {poisoned}"
        );
        out.push_str("# HELP sluice_subscription_lag_records Change records between a subscription's acknowledged position and the head.\n");
        out.push_str("# TYPE sluice_subscription_lag_records gauge\n");
        match self.subscriptions() {
            Ok(subscriptions) => {
                for subscription in subscriptions {
                    let _ = writeln!(
                        out,
                        "sluice_subscription_lag_records{{subscription=\"{}\"}} {}",
                        subscription.name, subscription.lag_records
                    );
                }
            }
            Err(error) => tracing::warn!(%error, "Could not read subscriptions for metrics."),
        }
        out.push_str("# HELP sluice_consumer_lag_records Change records between a consumer's committed position and the head.\n");
        out.push_str("# TYPE sluice_consumer_lag_records gauge\n");
        match self.consumer_positions() {
            Ok(positions) => {
                for (name, position) in positions {
                    let lag = self.records_behind(&position);
                    let _ = writeln!(
                        out,
                        "sluice_consumer_lag_records{{consumer=\"{name}\"}} {lag}"
                    );
                }
            }
            Err(error) => tracing::warn!(%error, "Could not read consumer positions for metrics."),
        }
        let components = self.components();
        out.push_str("# HELP sluice_component_up 1 while a component (connector) works, 0 while it retries.\n");
        out.push_str("# TYPE sluice_component_up gauge\n");
        for (name, status) in &components {
            let _ = writeln!(
                out,
                "sluice_component_up{{component=\"{name}\"}} {}",
                u8::from(status.up)
            );
        }
        out.push_str(
            "# HELP sluice_component_messages_total Messages a component handled, by outcome.\n",
        );
        out.push_str("# TYPE sluice_component_messages_total counter\n");
        for (name, status) in &components {
            for (outcome, count) in &status.counts {
                let _ = writeln!(
                    out,
                    "sluice_component_messages_total{{component=\"{name}\",outcome=\"{outcome}\"}} {count}"
                );
            }
        }
        self.render_memory(&mut out);
        let metrics = &shared.metrics;
        metrics.commit_seconds.render(
            &mut out,
            "sluice_commit_seconds",
            "Apply, commit and fsync of one batch.",
        );
        metrics
            .sync_seconds
            .render(&mut out, "sluice_sync_seconds", "One group fsync.");
        metrics.batch_events.render(
            &mut out,
            "sluice_batch_events",
            "Events per committed batch.",
        );
        metrics.flush_wait_seconds.render(
            &mut out,
            "sluice_flush_wait_seconds",
            "Writer pauses waiting for the store's flushes (backpressure).",
        );
        out
    }
}

impl Engine {
    /// Memory by owner: what the engine and its store hold, beside what the process and
    /// its allocator took from the OS (their difference is memory no owner accounts for).
    fn render_memory(&self, out: &mut String) {
        let shared = self.shared();
        let doc_caches: u64 = shared
            .doc_cache_bytes
            .iter()
            .map(|bytes| bytes.load(Ordering::Relaxed))
            .sum();
        out.push_str("# HELP sluice_memory_bytes Memory held, by owner.\n");
        out.push_str("# TYPE sluice_memory_bytes gauge\n");
        for (owner, bytes) in [
            ("store_write_buffers", shared.store.write_buffer_bytes()),
            ("store_block_cache", shared.store.block_cache_bytes()),
            ("writer_doc_caches", doc_caches),
        ] {
            let _ = writeln!(out, "sluice_memory_bytes{{owner=\"{owner}\"}} {bytes}");
        }
        if let Some(resident) = sluice_alloc::resident_bytes() {
            let _ = writeln!(
                out,
                "# HELP process_resident_memory_bytes Resident memory of the process.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {resident}"
            );
        }
        if let Some(allocated) = sluice_alloc::allocated_bytes() {
            let _ = writeln!(
                out,
                "# HELP sluice_heap_allocated_bytes Heap bytes allocated and not freed (the resident set minus this is what the allocator keeps, plus stacks and code).\n# TYPE sluice_heap_allocated_bytes gauge\nsluice_heap_allocated_bytes {allocated}"
            );
        }
    }
}

fn stored_doc(spec: &CollectionSpec, bytes: &Bytes) -> Result<Option<StoredDoc>, EngineError> {
    let view = codec::decode_view(bytes)?;
    let Some(doc_json) = view.doc else {
        return Ok(None);
    };
    let doc: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&doc_json)
        .map_err(|_| StoreError::Corrupt {
            what: "document JSON",
        })?;
    let key = spec.key_of(&doc).map_err(|_| StoreError::Corrupt {
        what: "document key",
    })?;
    Ok(Some(StoredDoc {
        key: key.to_json(),
        version: view.version,
        doc: Bytes::from(doc_json.as_ref()),
    }))
}

/// A page token back as a key: hex, and short (a token is input).
fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() > 4096 {
        return None;
    }
    sluice_core::hex::decode(text)
}

#[cfg(test)]
mod tests;

/// Shared by the engine's test modules.
#[cfg(test)]
pub(crate) mod test_support {
    use crate::{BodyFormat, Engine, ItemResult};

    /// Parses `ndjson` for `collection` and submits it, durably.
    pub async fn submit_ndjson(engine: &Engine, collection: &str, ndjson: &str) -> Vec<ItemResult> {
        let inputs = engine
            .parse_body(collection, ndjson.as_bytes(), BodyFormat::Ndjson)
            .unwrap()
            .unwrap();
        engine.submit(collection, inputs).await.unwrap()
    }
}
