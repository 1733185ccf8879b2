//! Sluice's embedded storage, on fjall (an LSM tree; see ARCHITECTURE.md for why fjall and
//! not redb). Its keyspaces:
//!
//! | keyspace   | key                                  | value                          |
//! |------------|--------------------------------------|--------------------------------|
//! | `docs`     | collection `\0` encoded key          | `sluice_core::codec` record    |
//! | `changes_P` (one per partition P) | partition u16 BE, first offset u64 BE| a chunk of change record bodies |
//! | `rejected` | collection `\0` seq u64 BE           | rejected event (JSON)          |
//! | `views`    | see `views.rs`: a read model's entries, what each source document owns and read | the read model's bytes |
//! | `meta`     | `partitions`, `stats\0coll\0` p u16, `consumer\0name`, `subscription\0name`, `seen\0coll\0` encoded key, `token\0name` | u16 BE, counters (u64 LE each), cursor, definition (JSON), seen event ids, token record (JSON, SHA-256 of the secret) |
//!
//! The change log is stored in chunks, one per committed batch and partition, so that a
//! batch of thousands of events costs one entry of the LSM tree rather than thousands; a
//! chunk is `count u32 | (len u32 | body)*`.
//!
//! Each partition's change log has a keyspace of its own so that its keys only ever grow:
//! the LSM tree's tables then hold disjoint ranges of offsets, and retention can drop whole
//! tables ([`Store::drop_changes_before`]) instead of waiting for compaction to purge
//! tombstones: with one keyspace shared by the partitions, flushed tables span every
//! partition and are rarely wholly removed; keeping 150 MB of log then took 0.8 to 2.6 GB of
//! disk, against about 350 MB with a keyspace per partition (`benches/change-log-disk/`).
//! Data directories made with the single `changes` keyspace of earlier versions are moved
//! over when opened.
//!
//! Every write goes through one [`Batch`], which is atomic across keyspaces; durability
//! comes from [`Store::sync`], so that several batches share one fsync (group commit).
//! This crate knows the byte layout and nothing about merging, HTTP or tasks.

mod views;

pub use views::VIEW_ID_BYTES_MAX;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use std::path::Path;

/// Bytes read from the store (reference-counted, cheap to clone).
pub type Bytes = fjall::Slice;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine: {0}")]
    Engine(#[from] fjall::Error),
    /// Another process (a running server) has the data directory open.
    #[error("the data directory is in use by another process (a running server?)")]
    Locked,
    #[error(
        "data directory was created with {stored} partitions, config asks for {configured}; partitions cannot change"
    )]
    Partitions { stored: u16, configured: u16 },
    #[error("corrupt {what} in the store")]
    Corrupt { what: &'static str },
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Counters kept per collection and partition, committed with the documents they count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub applied: u64,
    pub noop: u64,
    pub stale: u64,
    pub rejected: u64,
    pub documents: i64,
}

impl Counters {
    const ENCODED_LEN: usize = 40;

    fn encode(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0; Self::ENCODED_LEN];
        let fields = [
            self.applied,
            self.noop,
            self.stale,
            self.rejected,
            self.documents as u64,
        ];
        for (chunk, value) in out.chunks_exact_mut(8).zip(fields) {
            chunk.copy_from_slice(&value.to_le_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != Self::ENCODED_LEN {
            return None;
        }
        let field = |index: usize| {
            let mut word = [0; 8];
            word.copy_from_slice(&bytes[index * 8..index * 8 + 8]);
            u64::from_le_bytes(word)
        };
        Some(Self {
            applied: field(0),
            noop: field(1),
            stale: field(2),
            rejected: field(3),
            documents: field(4) as i64,
        })
    }

    pub fn add(&mut self, other: &Counters) {
        self.applied += other.applied;
        self.noop += other.noop;
        self.stale += other.stale;
        self.rejected += other.rejected;
        self.documents += other.documents;
    }
}

/// Memory the store may use.
#[derive(Clone, Copy, Debug)]
pub struct StoreOptions {
    /// Block cache for reads.
    pub cache_bytes: u64,
    /// Size at which a keyspace's in-memory table is sealed and flushed to disk; bounds
    /// the memory writes take (about three such tables per busy keyspace at peak).
    pub memtable_bytes: u64,
    /// Journal kept before the store forces in-memory tables to disk. Every unflushed
    /// byte of journal is also a byte of memory, so this bounds write memory too.
    pub journal_bytes_max: u64,
}

/// fjall's lower bound for the journal limit.
pub const JOURNAL_BYTES_MIN: u64 = 64 << 20;

/// A consistent view of the documents (see [`Store::snapshot`]).
pub struct StoreSnapshot {
    snapshot: fjall::Snapshot,
    docs: Keyspace,
}

impl StoreSnapshot {
    pub fn get_doc(&self, collection: &str, key: &[u8]) -> Result<Option<Bytes>> {
        use fjall::Readable;
        Ok(self.snapshot.get(&self.docs, doc_key(collection, key))?)
    }
}

#[derive(Clone)]
pub struct Store {
    db: Database,
    docs: Keyspace,
    /// The change log, one keyspace per partition (index = partition).
    changes: Vec<Keyspace>,
    rejected: Keyspace,
    meta: Keyspace,
    /// Read models' own state (`views.rs`).
    views: Keyspace,
    instance_id: String,
}

const META_PARTITIONS: &[u8] = b"partitions";
const META_STATS: &[u8] = b"stats\0";
const META_CONSUMER: &[u8] = b"consumer\0";
const META_SUBSCRIPTION: &[u8] = b"subscription\0";
const META_SEEN: &[u8] = b"seen\0";
const META_TOKEN: &[u8] = b"token\0";
const META_INSTANCE: &[u8] = b"instance";

impl Store {
    /// Opens (or creates) the store and pins the partition count on first use.
    pub fn open(path: &Path, partitions: u16, options: StoreOptions) -> Result<Self> {
        let db = match Database::builder(path)
            .cache_size(options.cache_bytes)
            .open()
        {
            Ok(db) => db,
            Err(fjall::Error::Locked) => return Err(StoreError::Locked),
            Err(error) => return Err(error.into()),
        };
        let memtable_bytes = options.memtable_bytes.max(1 << 20);
        let keyspace_options =
            || KeyspaceCreateOptions::default().max_memtable_size(memtable_bytes);
        let open = |name: &str| db.keyspace(name, keyspace_options);
        // Tables of the change log no bigger than a memtable: retention frees disk in
        // steps of that size. The log is append-only, so small tables are never rewritten
        // for it, only moved down the levels.
        let change_log_compaction = std::sync::Arc::new(
            fjall::compaction::Leveled::default().with_table_target_size(memtable_bytes),
        );
        let changes = (0..partitions)
            .map(|partition| {
                db.keyspace(&format!("changes_{partition}"), || {
                    keyspace_options().compaction_strategy(change_log_compaction.clone())
                })
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let store = Self {
            docs: open("docs")?,
            changes,
            rejected: open("rejected")?,
            meta: open("meta")?,
            views: open("views")?,
            db,
            instance_id: String::new(),
        };
        match store.meta.get(META_PARTITIONS)? {
            Some(bytes) => {
                let stored = <[u8; 2]>::try_from(&*bytes)
                    .map(u16::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt {
                        what: "partition count",
                    })?;
                if stored != partitions {
                    return Err(StoreError::Partitions {
                        stored,
                        configured: partitions,
                    });
                }
            }
            None => {
                store
                    .meta
                    .insert(META_PARTITIONS, partitions.to_be_bytes())?;
                store.sync()?;
            }
        }
        let mut store = store;
        store.move_legacy_change_log()?;
        store.instance_id = match store.meta.get(META_INSTANCE)? {
            Some(bytes) => String::from_utf8(bytes.to_vec()).map_err(|_| StoreError::Corrupt {
                what: "instance id",
            })?,
            None => {
                let id = new_instance_id();
                store.meta.insert(META_INSTANCE, id.as_bytes())?;
                store.sync()?;
                id
            }
        };
        Ok(store)
    }

    /// Moves the change log of a data directory made before the log had a keyspace per
    /// partition (one `changes` keyspace) into the per-partition keyspaces, then deletes
    /// the old keyspace. Copying is idempotent (same keys, same values), so a crash midway
    /// is finished by the next open.
    fn move_legacy_change_log(&self) -> Result<()> {
        const LEGACY: &str = "changes";
        const CHUNKS_PER_BATCH: usize = 256;
        if !self.db.keyspace_exists(LEGACY) {
            return Ok(());
        }
        let legacy = self.db.keyspace(LEGACY, KeyspaceCreateOptions::default)?;
        let mut batch = self.db.batch();
        let mut in_batch = 0;
        let mut moved = 0u64;
        for guard in legacy.iter() {
            let (key, chunk) = guard.into_inner()?;
            let (partition, _) = decode_change_key(&key)?;
            // The partition count was checked against `meta` before: a chunk of a
            // partition beyond it is corrupt, not a configuration change.
            let keyspace = self
                .changes
                .get(usize::from(partition))
                .ok_or(StoreError::Corrupt {
                    what: "change-log key",
                })?;
            batch.insert(keyspace, key, chunk);
            in_batch += 1;
            moved += 1;
            if in_batch == CHUNKS_PER_BATCH {
                batch.commit()?;
                batch = self.db.batch();
                in_batch = 0;
            }
        }
        batch.commit()?;
        self.sync()?;
        self.db.delete_keyspace(legacy)?;
        tracing::info!(
            chunks = moved,
            "Moved the change log to one keyspace per partition."
        );
        Ok(())
    }

    /// A partition's change-log keyspace. Partitions come from the engine, which never
    /// asks for one beyond the count the store was opened with.
    fn changes(&self, partition: u16) -> &Keyspace {
        &self.changes[usize::from(partition)]
    }

    /// A random id given to the data directory when it was created: it tells this
    /// store's change records from those of an earlier data directory (outbound message
    /// ids carry it).
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Makes every committed batch durable (fdatasync of the journal).
    pub fn sync(&self) -> Result<()> {
        Ok(self.db.persist(PersistMode::SyncData)?)
    }

    /// Bytes in the store's in-memory tables (active and waiting to be flushed).
    pub fn write_buffer_bytes(&self) -> u64 {
        self.db.write_buffer_size()
    }

    /// Bytes in the store's block cache (at most the configured `cache_bytes`).
    pub fn block_cache_bytes(&self) -> u64 {
        self.db.cache_size()
    }

    pub fn batch(&self) -> Batch<'_> {
        Batch {
            store: self,
            inner: self.db.batch(),
        }
    }

    pub fn get_doc(&self, collection: &str, key: &[u8]) -> Result<Option<Bytes>> {
        Ok(self.docs.get(doc_key(collection, key))?)
    }

    /// The documents as of now, for reads that must agree with each other (a projection
    /// call's lookups). Old versions are kept while it lives: hold it briefly.
    pub fn snapshot(&self) -> StoreSnapshot {
        StoreSnapshot {
            snapshot: self.db.snapshot(),
            docs: self.docs.clone(),
        }
    }

    /// Documents of a collection in key order, strictly after `after` (an encoded key).
    pub fn scan_docs(
        &self,
        collection: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Bytes)>> {
        scan_after(&self.docs, &collection_prefix(collection), after, limit)
    }

    /// The offset the next change record of `partition` gets.
    pub fn next_change_offset(&self, partition: u16) -> Result<u64> {
        let prefix = partition.to_be_bytes();
        match self.changes(partition).prefix(prefix).next_back() {
            None => Ok(0),
            Some(guard) => {
                let (key, chunk) = guard.into_inner()?;
                let (_, first) = decode_change_key(&key)?;
                Ok(first + u64::from(chunk_count(&chunk)?))
            }
        }
    }

    /// The offset of the oldest change record `partition` still keeps (`next` when it
    /// keeps none).
    pub fn first_change_offset(&self, partition: u16) -> Result<u64> {
        match self
            .changes(partition)
            .prefix(partition.to_be_bytes())
            .next()
        {
            None => self.next_change_offset(partition),
            Some(guard) => Ok(decode_change_key(&guard.key()?)?.1),
        }
    }

    /// The oldest chunks of `partition` that start at or after `from`, in order, up to
    /// `limit`: (first offset, record count, commit time of its newest record in ms since
    /// the epoch). Starting at `from` (where retention stopped) seeks past the tombstones
    /// of removed chunks instead of stepping over them.
    pub fn oldest_chunks(&self, partition: u16, from: u64, limit: usize) -> Result<Vec<ChunkInfo>> {
        let mut out = Vec::new();
        let range = change_key(partition, from)..=change_key(partition, u64::MAX);
        for guard in self.changes(partition).range(range).take(limit) {
            let (key, chunk) = guard.into_inner()?;
            let (_, first_offset) = decode_change_key(&key)?;
            let newest_ts_ms = match ChunkIter::new(&chunk)?.last() {
                Some(body) => sluice_core::change::commit_ts_ms(body?),
                None => 0,
            };
            out.push(ChunkInfo {
                first_offset,
                count: u64::from(chunk_count(&chunk)?),
                newest_ts_ms,
            });
        }
        Ok(out)
    }

    /// Change records of `partition` from offset `from` (inclusive) to `until`
    /// (exclusive), at most `limit`, copied out of their chunks (tests and tools; readers
    /// on the hot path use [`Store::read_change_chunks`] and [`ChangeRecords`]).
    pub fn read_changes(
        &self,
        partition: u16,
        from: u64,
        until: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Bytes)>> {
        let chunks = self.read_change_chunks(partition, from, until, limit)?;
        ChangeRecords::new(&chunks, from, until)
            .take(limit)
            .map(|record| record.map(|(offset, body)| (offset, Bytes::from(body))))
            .collect()
    }

    /// The chunks of `partition` that hold its change records from `from` (inclusive) to
    /// `until` (exclusive), enough of them for `limit` records; [`ChangeRecords`] walks
    /// their records without copying them.
    pub fn read_change_chunks(
        &self,
        partition: u16,
        from: u64,
        until: u64,
        limit: usize,
    ) -> Result<Vec<StoredChunk>> {
        if from >= until || limit == 0 {
            return Ok(Vec::new());
        }
        // Start at the chunk that holds `from`: the last one whose first offset is <= from.
        let start = match self
            .changes(partition)
            .range(change_key(partition, 0)..=change_key(partition, from))
            .next_back()
        {
            Some(guard) => guard.key()?.to_vec(),
            None => change_key(partition, from).to_vec(),
        };
        let mut chunks = Vec::new();
        let mut covered = 0u64;
        for guard in self
            .changes(partition)
            .range(start..change_key(partition, until).to_vec())
        {
            let (key, bytes) = guard.into_inner()?;
            let (_, first) = decode_change_key(&key)?;
            let count = u64::from(chunk_count(&bytes)?);
            // Records before `from` (in the first chunk) do not count towards the limit.
            covered += (first + count).saturating_sub(from.max(first));
            chunks.push(StoredChunk { first, bytes });
            if covered >= limit as u64 {
                break;
            }
        }
        Ok(chunks)
    }

    /// Frees the disk of `partition`'s change records before `offset`, which retention has
    /// already removed (their removal is committed): drops every table of the LSM tree
    /// that holds only such records. Tables that also hold newer records stay until
    /// compaction; readers never see removed records either way.
    pub fn drop_changes_before(&self, partition: u16, offset: u64) -> Result<()> {
        use fjall::AbstractTree;
        self.changes(partition)
            .tree
            .drop_range(change_key(partition, 0)..change_key(partition, offset))
            .map_err(|error| StoreError::Engine(error.into()))
    }

    /// Disk taken by `partition`'s change log (its tables, not the shared journal).
    pub fn change_log_disk_bytes(&self, partition: u16) -> u64 {
        self.changes(partition).disk_space()
    }

    /// The highest rejected-event sequence number of a collection (0 when none).
    pub fn last_rejected_seq(&self, collection: &str) -> Result<u64> {
        let prefix = collection_prefix(collection);
        match self.rejected.prefix(&prefix).next_back() {
            None => Ok(0),
            Some(guard) => decode_seq(&guard.key()?[prefix.len()..]),
        }
    }

    pub fn scan_rejected(
        &self,
        collection: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Bytes)>> {
        let prefix = collection_prefix(collection);
        let start = rejected_key(collection, after_seq.saturating_add(1));
        let mut out = Vec::with_capacity(limit.min(1024));
        for guard in self.rejected.range(start..) {
            let (key, value) = guard.into_inner()?;
            let Some(suffix) = key.strip_prefix(prefix.as_slice()) else {
                break;
            };
            out.push((decode_seq(suffix)?, value));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// A consumer's committed position (opaque to the store).
    pub fn get_consumer(&self, name: &str) -> Result<Option<Bytes>> {
        Ok(self.meta.get(consumer_key(name))?)
    }

    /// Every consumer's committed position: (name, position).
    pub fn consumers(&self) -> Result<Vec<(String, Bytes)>> {
        self.named_entries(META_CONSUMER, "consumer name")
    }

    /// A subscription's definition (opaque to the store).
    pub fn get_subscription(&self, name: &str) -> Result<Option<Bytes>> {
        Ok(self.meta.get(prefixed(META_SUBSCRIPTION, name))?)
    }

    /// Every subscription: (name, definition), in name order.
    pub fn subscriptions(&self) -> Result<Vec<(String, Bytes)>> {
        self.named_entries(META_SUBSCRIPTION, "subscription name")
    }

    /// Every access token record: (name, record), in name order. Records hold a hash of
    /// the secret, never the secret (opaque to the store).
    pub fn tokens(&self) -> Result<Vec<(String, Bytes)>> {
        self.named_entries(META_TOKEN, "token name")
    }

    /// The `meta` entries under `prefix`, keyed by the UTF-8 name after it.
    fn named_entries(&self, prefix: &[u8], what: &'static str) -> Result<Vec<(String, Bytes)>> {
        let mut out = Vec::new();
        for guard in self.meta.prefix(prefix) {
            let (key, value) = guard.into_inner()?;
            let name = std::str::from_utf8(&key[prefix.len()..])
                .map_err(|_| StoreError::Corrupt { what })?;
            out.push((name.to_owned(), value));
        }
        Ok(out)
    }

    /// The event ids recently applied to a document, oldest first (see [`encode_seen_ids`]).
    pub fn get_seen_ids(&self, collection: &str, key: &[u8]) -> Result<Vec<String>> {
        match self.meta.get(seen_key(collection, key))? {
            Some(bytes) => decode_seen_ids(&bytes),
            None => Ok(Vec::new()),
        }
    }

    /// Every stored counter: (collection, partition, counters).
    pub fn load_counters(&self) -> Result<Vec<(String, u16, Counters)>> {
        let mut out = Vec::new();
        for guard in self.meta.prefix(META_STATS) {
            let (key, value) = guard.into_inner()?;
            let corrupt = StoreError::Corrupt { what: "stats key" };
            let rest = &key[META_STATS.len()..];
            let split = rest.iter().position(|byte| *byte == 0).ok_or(corrupt)?;
            let collection = std::str::from_utf8(&rest[..split])
                .map_err(|_| StoreError::Corrupt { what: "stats key" })?;
            let partition = <[u8; 2]>::try_from(&rest[split + 1..])
                .map(u16::from_be_bytes)
                .map_err(|_| StoreError::Corrupt { what: "stats key" })?;
            let counters = Counters::decode(&value).ok_or(StoreError::Corrupt {
                what: "stats value",
            })?;
            out.push((collection.to_owned(), partition, counters));
        }
        Ok(out)
    }
}

/// What retention needs to know about a stored chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkInfo {
    pub first_offset: u64,
    pub count: u64,
    pub newest_ts_ms: u64,
}

/// Change records being gathered into one chunk: `count u32 | (len u32 | body)*`.
#[derive(Debug)]
pub struct ChangeChunk {
    buffer: Vec<u8>,
    count: u32,
}

impl Default for ChangeChunk {
    fn default() -> Self {
        Self {
            buffer: vec![0; 4],
            count: 0,
        }
    }
}

impl ChangeChunk {
    /// Appends one record, written by `write` straight into the chunk.
    pub fn push(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.buffer.len();
        self.buffer.extend_from_slice(&[0; 4]);
        write(&mut self.buffer);
        let length = (self.buffer.len() - start - 4) as u32;
        self.buffer[start..start + 4].copy_from_slice(&length.to_le_bytes());
        self.count += 1;
        self.buffer[..4].copy_from_slice(&self.count.to_le_bytes());
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Empties the chunk, keeping its buffer's capacity.
    pub fn clear(&mut self) {
        self.buffer.truncate(4);
        self.buffer[..4].copy_from_slice(&[0; 4]);
        self.count = 0;
    }
}

/// One atomic write across keyspaces.
pub struct Batch<'a> {
    store: &'a Store,
    inner: fjall::OwnedWriteBatch,
}

impl Batch<'_> {
    pub fn put_doc(&mut self, collection: &str, key: &[u8], record: Vec<u8>) {
        self.inner
            .insert(&self.store.docs, doc_key(collection, key), record);
    }

    /// Removes the chunk of `partition` that starts at `first_offset` (retention).
    pub fn remove_chunk(&mut self, partition: u16, first_offset: u64) {
        self.inner.remove(
            self.store.changes(partition),
            change_key(partition, first_offset),
        );
    }

    /// Appends a chunk of change records, the first at `first_offset`. The chunk's buffer
    /// is copied, so the caller can reuse it.
    pub fn append_chunk(&mut self, partition: u16, first_offset: u64, chunk: &ChangeChunk) {
        if chunk.count == 0 {
            return;
        }
        self.inner.insert(
            self.store.changes(partition),
            change_key(partition, first_offset),
            chunk.buffer.as_slice(),
        );
    }

    pub fn put_rejected(&mut self, collection: &str, seq: u64, record: Vec<u8>) {
        self.inner
            .insert(&self.store.rejected, rejected_key(collection, seq), record);
    }

    pub fn remove_rejected(&mut self, collection: &str, seq: u64) {
        self.inner
            .remove(&self.store.rejected, rejected_key(collection, seq));
    }

    /// Records a consumer's position, atomically with whatever else the batch holds
    /// (a consumer's own output, for exactly-once effects inside the store).
    pub fn put_consumer(&mut self, name: &str, position: &[u8]) {
        self.inner
            .insert(&self.store.meta, consumer_key(name), position);
    }

    pub fn put_subscription(&mut self, name: &str, definition: &[u8]) {
        self.inner.insert(
            &self.store.meta,
            prefixed(META_SUBSCRIPTION, name),
            definition,
        );
    }

    pub fn remove_subscription(&mut self, name: &str) {
        self.inner
            .remove(&self.store.meta, prefixed(META_SUBSCRIPTION, name));
    }

    pub fn put_token(&mut self, name: &str, record: &[u8]) {
        self.inner
            .insert(&self.store.meta, prefixed(META_TOKEN, name), record);
    }

    pub fn remove_token(&mut self, name: &str) {
        self.inner
            .remove(&self.store.meta, prefixed(META_TOKEN, name));
    }

    pub fn remove_consumer(&mut self, name: &str) {
        self.inner.remove(&self.store.meta, consumer_key(name));
    }

    /// Records the event ids recently applied to a document, oldest first.
    pub fn put_seen_ids(&mut self, collection: &str, key: &[u8], ids: &[String]) {
        self.inner.insert(
            &self.store.meta,
            seen_key(collection, key),
            encode_seen_ids(ids),
        );
    }

    pub fn put_counters(&mut self, collection: &str, partition: u16, counters: &Counters) {
        let mut key = META_STATS.to_vec();
        key.extend_from_slice(collection.as_bytes());
        key.push(0);
        key.extend_from_slice(&partition.to_be_bytes());
        self.inner
            .insert(&self.store.meta, key, counters.encode().to_vec());
    }

    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Writes the batch atomically (not yet durable: see [`Store::sync`]).
    pub fn commit(self) -> Result<()> {
        Ok(self.inner.commit()?)
    }
}

fn consumer_key(name: &str) -> Vec<u8> {
    prefixed(META_CONSUMER, name)
}

/// 16 hex digits from the clock and the process: unique enough to tell data directories
/// apart, with no random-number crate.
fn new_instance_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    // RandomState is seeded randomly per process.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

/// Up to `limit` records of `keyspace` under `prefix` in key order, strictly after
/// `prefix + after`, each as (key without the prefix, value).
fn scan_after(
    keyspace: &Keyspace,
    prefix: &[u8],
    after: Option<&[u8]>,
    limit: usize,
) -> Result<Vec<(Vec<u8>, Bytes)>> {
    let mut start = prefix.to_vec();
    if let Some(key) = after {
        start.extend_from_slice(key);
        start.push(0); // the smallest key after `key`
    }
    let mut out = Vec::with_capacity(limit.min(1024));
    for guard in keyspace.range(start..) {
        let (key, value) = guard.into_inner()?;
        let Some(suffix) = key.strip_prefix(prefix) else {
            break;
        };
        out.push((suffix.to_vec(), value));
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

fn prefixed(prefix: &[u8], name: &str) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(name.as_bytes());
    key
}

fn collection_prefix(collection: &str) -> Vec<u8> {
    debug_assert!(!collection.as_bytes().contains(&0));
    let mut prefix = Vec::with_capacity(collection.len() + 1);
    prefix.extend_from_slice(collection.as_bytes());
    prefix.push(0);
    prefix
}

fn doc_key(collection: &str, key: &[u8]) -> Vec<u8> {
    let mut out = collection_prefix(collection);
    out.extend_from_slice(key);
    out
}

fn seen_key(collection: &str, key: &[u8]) -> Vec<u8> {
    let mut out = META_SEEN.to_vec();
    out.extend_from_slice(&doc_key(collection, key));
    out
}

/// Seen event ids: `(len u16 LE | UTF-8 id)*`.
fn encode_seen_ids(ids: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ids.iter().map(|id| id.len() + 2).sum());
    // Producers bound ids far below u16::MAX (CloudEvents ids, message positions); a
    // longer one is left out rather than written with a wrong length.
    for id in ids.iter().filter(|id| id.len() <= usize::from(u16::MAX)) {
        out.extend_from_slice(&(id.len() as u16).to_le_bytes());
        out.extend_from_slice(id.as_bytes());
    }
    out
}

fn decode_seen_ids(mut bytes: &[u8]) -> Result<Vec<String>> {
    let corrupt = || StoreError::Corrupt { what: "seen ids" };
    let mut ids = Vec::new();
    while let Some((length, rest)) = bytes.split_first_chunk::<2>() {
        let (id, rest) = rest
            .split_at_checked(usize::from(u16::from_le_bytes(*length)))
            .ok_or_else(corrupt)?;
        ids.push(String::from_utf8(id.to_vec()).map_err(|_| corrupt())?);
        bytes = rest;
    }
    if !bytes.is_empty() {
        return Err(corrupt());
    }
    Ok(ids)
}

fn rejected_key(collection: &str, seq: u64) -> Vec<u8> {
    let mut out = collection_prefix(collection);
    out.extend_from_slice(&seq.to_be_bytes());
    out
}

fn change_key(partition: u16, offset: u64) -> [u8; 10] {
    let mut out = [0; 10];
    out[..2].copy_from_slice(&partition.to_be_bytes());
    out[2..].copy_from_slice(&offset.to_be_bytes());
    out
}

fn decode_change_key(key: &[u8]) -> Result<(u16, u64)> {
    let corrupt = || StoreError::Corrupt {
        what: "change-log key",
    };
    let partition =
        <[u8; 2]>::try_from(key.get(..2).ok_or_else(corrupt)?).map_err(|_| corrupt())?;
    let offset = <[u8; 8]>::try_from(key.get(2..).ok_or_else(corrupt)?).map_err(|_| corrupt())?;
    Ok((u16::from_be_bytes(partition), u64::from_be_bytes(offset)))
}

fn chunk_count(chunk: &[u8]) -> Result<u32> {
    let count = chunk.get(..4).ok_or(StoreError::Corrupt {
        what: "change-log chunk",
    })?;
    Ok(u32::from_le_bytes([count[0], count[1], count[2], count[3]]))
}

/// One stored chunk of change records (one committed batch of a partition).
pub struct StoredChunk {
    /// The offset of its first record.
    first: u64,
    bytes: Bytes,
}

/// The records of consecutive chunks with offsets in `from..until`, as `(offset, body)`,
/// borrowed from the chunks; a malformed chunk ends the walk with an error.
pub struct ChangeRecords<'a> {
    chunks: std::slice::Iter<'a, StoredChunk>,
    current: Option<(u64, ChunkIter<'a>)>,
    from: u64,
    until: u64,
}

impl<'a> ChangeRecords<'a> {
    pub fn new(chunks: &'a [StoredChunk], from: u64, until: u64) -> Self {
        Self {
            chunks: chunks.iter(),
            current: None,
            from,
            until,
        }
    }

    /// Ends the walk: `until` was reached or a chunk is malformed.
    fn finish(&mut self) {
        self.chunks = [].iter();
        self.current = None;
    }
}

impl<'a> Iterator for ChangeRecords<'a> {
    type Item = Result<(u64, &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((offset, bodies)) = &mut self.current {
                match bodies.next() {
                    Some(Ok(body)) => {
                        let record_offset = *offset;
                        *offset += 1;
                        if record_offset < self.from {
                            continue;
                        }
                        if record_offset >= self.until {
                            self.finish();
                            return None;
                        }
                        return Some(Ok((record_offset, body)));
                    }
                    Some(Err(error)) => {
                        self.finish();
                        return Some(Err(error));
                    }
                    None => self.current = None,
                }
            }
            let chunk = self.chunks.next()?;
            match ChunkIter::new(&chunk.bytes) {
                Ok(bodies) => self.current = Some((chunk.first, bodies)),
                Err(error) => {
                    self.finish();
                    return Some(Err(error));
                }
            }
        }
    }
}

/// The bodies of a change-log chunk, checked against the chunk's length as they are read.
struct ChunkIter<'a> {
    rest: &'a [u8],
    remaining: u32,
}

impl<'a> ChunkIter<'a> {
    fn new(chunk: &'a [u8]) -> Result<Self> {
        Ok(Self {
            remaining: chunk_count(chunk)?,
            rest: &chunk[4..],
        })
    }
}

impl<'a> Iterator for ChunkIter<'a> {
    type Item = Result<&'a [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let corrupt = StoreError::Corrupt {
            what: "change-log chunk",
        };
        let Some((length, rest)) = self.rest.split_first_chunk::<4>() else {
            self.remaining = 0;
            return Some(Err(corrupt));
        };
        let length = u32::from_le_bytes(*length) as usize;
        let Some((body, rest)) = rest.split_at_checked(length) else {
            self.remaining = 0;
            return Some(Err(corrupt));
        };
        self.rest = rest;
        Some(Ok(body))
    }
}

fn decode_seq(bytes: &[u8]) -> Result<u64> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt {
            what: "rejected-event key",
        })
}

#[cfg(test)]
mod tests;
