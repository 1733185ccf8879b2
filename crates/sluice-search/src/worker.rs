//! One partition's index worker: a backfill scan of the source collection, then the
//! partition's change log, with every change routed to a lane.
//!
//! A change waits in its lane at most a quarter of the lane's `max_delay_ms` after it
//! was committed (the rest is for the index commit, whose fsyncs take 35 to 120 ms on a
//! shared disk, the reader's reload and scheduling on a busy machine), or until
//! the lane holds `batch_size` documents. Waiting documents are kept by key with their
//! newest state, so a document changed in two lanes is written once, by whichever lane
//! is due first, with its newest state; a fast lane never waits behind a slow lane's
//! backlog. The shard's commit records the offset of the oldest change still waiting:
//! after a crash the worker reads again from there, and versioned writes make the replay
//! harmless (an already indexed state is [`Outcome::Current`], an older one
//! [`Outcome::Stale`]).

use crate::runtime::{Generation, IndexHandle, Runtime, ShardProgress};
use crate::shard::{Outcome, Shard, ShardError, ShardState, Write};
use serde_json::Value;
use sluice_core::change::split_record;
use sluice_core::config::IndexConfig;
use sluice_core::{Cursor, Key, codec};
use sluice_engine::{Engine, EngineError};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Documents per backfill page read from the store.
const BACKFILL_PAGE_DOCS: usize = 1_000;
/// A backfill commits after this many documents or this long: a commit makes a
/// segment, and segments of a few hundred documents would only be merged again.
const BACKFILL_COMMIT_DOCS: usize = 20_000;
const BACKFILL_COMMIT_MS: u64 = 2_000;
/// Change records read at once.
const READ_RECORDS_MAX: usize = 4_000;
/// Longest wait for new records, so that a stop is noticed.
const IDLE_WAIT_MS: u64 = 1_000;
/// A worker that read past its last commit (records of no consequence, or writes that
/// were all current) records its position at most this often.
const POSITION_COMMIT_MS: u64 = 1_000;
/// The share of a lane's `max_delay_ms` a change waits for company before it is written.
const WAIT_SHARE_PERCENT: u64 = 25;
/// How often a worker records its position for retention (each is a store commit).
const POSITION_RECORD_MS: u64 = 10_000;
/// Retries of a write refused as stale, each from the source's current state.
const STALE_RETRIES_MAX: usize = 8;

/// The engine consumer under which partition `partition` of generation `generation`
/// records how far it has committed, so that retention keeps what it still needs. The
/// shard's own commit is the record it resumes from; this one is a lower bound of it.
pub(crate) fn consumer_name(index: &str, generation: &str, partition: usize) -> String {
    format!("index.{index}.{generation}.p{partition}")
}

/// The index and generation of a name [`consumer_name`] made; `None` for any other
/// consumer. Index names and generation ids have no dots.
pub(crate) fn parse_consumer_name(name: &str) -> Option<(&str, &str)> {
    let (index_and_generation, _) = name.strip_prefix("index.")?.rsplit_once(".p")?;
    index_and_generation.split_once('.')
}

/// A single partition's position as a cursor: the other partitions at `u64::MAX`, since
/// this consumer needs none of their records.
fn partition_position(partitions: usize, partition: usize, offset: u64) -> Cursor {
    let mut offsets = vec![u64::MAX; partitions];
    if let Some(slot) = offsets.get_mut(partition) {
        *slot = offset;
    }
    Cursor::from_offsets(offsets)
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

#[derive(Clone, Debug)]
pub(crate) struct Lane {
    pub name: String,
    pub paths: Vec<String>,
    pub max_delay_ms: u64,
    pub batch_size: usize,
}

/// The lanes of an index, fastest first.
pub(crate) fn lanes(config: &IndexConfig) -> Vec<Lane> {
    let mut lanes: Vec<Lane> = config
        .lanes()
        .into_iter()
        .map(|(name, lane)| Lane {
            name,
            paths: lane.paths,
            max_delay_ms: lane.max_delay_ms,
            batch_size: lane.batch_size,
        })
        .collect();
    lanes.sort_by_key(|lane| lane.max_delay_ms);
    lanes
}

/// `changed` touches `path`: the same path, below it, or a parent of it (`""`, a
/// created or deleted document, is everyone's parent).
fn touches(changed: &str, path: &str) -> bool {
    let below = |longer: &str, shorter: &str| {
        longer.len() > shorter.len()
            && longer.starts_with(shorter)
            && longer.as_bytes().get(shorter.len()) == Some(&b'/')
    };
    changed == path || below(changed, path) || below(path, changed)
}

/// The fastest lane any changed path belongs to, else the catch-all lane.
pub(crate) fn route(lanes: &[Lane], changed: &[String]) -> usize {
    for (position, lane) in lanes.iter().enumerate() {
        if lane
            .paths
            .iter()
            .any(|path| changed.iter().any(|changed| touches(changed, path)))
        {
            return position;
        }
    }
    lanes
        .iter()
        .position(|lane| lane.paths.is_empty())
        .unwrap_or(lanes.len().saturating_sub(1))
}

/// Writes `write`; when the shard holds a newer version, fetches the source's current
/// state (`fetch`) and tries again, up to [`STALE_RETRIES_MAX`] times. A slow writer
/// holding old data is refused and never overwrites newer data.
pub fn write_versioned(
    shard: &Shard,
    mut write: Write,
    mut fetch: impl FnMut() -> Write,
) -> Result<Outcome, ShardError> {
    for _ in 0..STALE_RETRIES_MAX {
        let (outcomes, _) = shard.write(std::slice::from_ref(&write))?;
        match outcomes.first() {
            Some(Outcome::Stale { .. }) => write = fetch(),
            Some(outcome) => return Ok(*outcome),
            None => break,
        }
    }
    let (outcomes, _) = shard.write(std::slice::from_ref(&write))?;
    Ok(outcomes.first().copied().unwrap_or(Outcome::Current))
}

struct Pending {
    version: u64,
    doc: Option<Vec<u8>>,
    lane: usize,
    due: Instant,
    /// The oldest change of this key not yet written.
    since: u64,
    ts_ms: u64,
}

pub(crate) struct Worker {
    pub engine: Engine,
    pub handle: tokio::runtime::Handle,
    pub index: Arc<IndexHandle>,
    pub generation: Arc<Generation>,
    pub partition: usize,
    pub runtime: Weak<Runtime>,
    /// When the position was last recorded for retention, and what it was.
    pub recorded: std::cell::Cell<Option<(Instant, u64)>>,
}

enum Ended {
    Stopped,
    EngineClosed,
}

impl Worker {
    fn shard(&self) -> &Shard {
        &self.generation.shards[self.partition]
    }

    fn progress(&self) -> &ShardProgress {
        &self.generation.progress[self.partition]
    }

    fn stopped(&self) -> bool {
        self.generation.stop.load(Ordering::Acquire)
    }

    fn set_failure(&self, failure: Option<String>) {
        *self
            .progress()
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = failure;
    }

    pub fn run(self, mut state: ShardState) {
        loop {
            match self.run_from(&mut state) {
                Ok(Ended::Stopped | Ended::EngineClosed) => return,
                Err(error) => {
                    let message = error.to_string();
                    tracing::error!(index = %self.index.config.name, partition = self.partition, error = %message, "Index worker failed; retrying in 1 s.");
                    self.set_failure(Some(message));
                    let until = Instant::now() + Duration::from_secs(1);
                    while Instant::now() < until {
                        if self.stopped() {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        }
    }

    fn commit(&self, state: &ShardState) -> Result<(), WorkerError> {
        self.shard().commit(state)?;
        let progress = self.progress();
        progress.commits.fetch_add(1, Ordering::Relaxed);
        progress.last_commit_ms.store(now_ms(), Ordering::Relaxed);
        progress
            .committed_offset
            .store(state.next_offset, Ordering::Release);
        progress.live.store(state.live, Ordering::Release);
        self.record_position(state.next_offset)?;
        if let Some(runtime) = self.runtime.upgrade() {
            runtime.maybe_switch(&self.index);
        }
        Ok(())
    }

    /// Records `next_offset` as this worker's engine consumer position, at most every
    /// [`POSITION_RECORD_MS`]: retention removes no record a shard may read again. A
    /// position recorded late is older than the shard's, which only keeps more.
    fn record_position(&self, next_offset: u64) -> Result<(), WorkerError> {
        let due = match self.recorded.get() {
            None => true,
            Some((at, offset)) => {
                offset != next_offset && at.elapsed() >= Duration::from_millis(POSITION_RECORD_MS)
            }
        };
        if !due {
            return Ok(());
        }
        let partitions = usize::from(self.engine.partitions());
        let name = consumer_name(&self.index.config.name, &self.generation.id, self.partition);
        let position = partition_position(partitions, self.partition, next_offset).to_string();
        self.engine
            .commit_batch(|batch| batch.put_consumer(&name, position.as_bytes()))?;
        self.recorded.set(Some((Instant::now(), next_offset)));
        Ok(())
    }

    fn write(&self, writes: &[Write], state: &mut ShardState) -> Result<(), WorkerError> {
        if writes.is_empty() {
            return Ok(());
        }
        let (outcomes, field_errors) = self.shard().write(writes)?;
        let progress = self.progress();
        let applied = outcomes.iter().filter(|o| **o == Outcome::Applied).count();
        let stale = outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Stale { .. }))
            .count();
        progress.writes.fetch_add(applied as u64, Ordering::Relaxed);
        progress
            .stale_writes
            .fetch_add(stale as u64, Ordering::Relaxed);
        self.record_field_errors(field_errors, state);
        Ok(())
    }

    fn record_field_errors(
        &self,
        field_errors: Vec<(String, crate::schema::FieldError)>,
        state: &mut ShardState,
    ) {
        state.field_errors += field_errors.len() as u64;
        self.index.record_errors(
            field_errors
                .into_iter()
                .map(|(key, error)| {
                    let key = serde_json::from_str(&key).unwrap_or(Value::String(key));
                    (key, error.field, error.message)
                })
                .collect(),
        );
    }

    fn run_from(&self, state: &mut ShardState) -> Result<Ended, WorkerError> {
        if !state.live
            && let Some(ended) = self.backfill(state)?
        {
            return Ok(ended);
        }
        self.set_failure(None);
        self.live(state)
    }

    /// Writes this partition's documents as they are now, page by page, each page
    /// committed with where the scan got to. `Some` when stopped first.
    fn backfill(&self, state: &mut ShardState) -> Result<Option<Ended>, WorkerError> {
        let partitions = self.engine.partitions();
        let source = &self.index.config.source;
        let mut uncommitted = 0;
        let mut last_commit = Instant::now();
        loop {
            if self.stopped() {
                return Ok(Some(Ended::Stopped));
            }
            let after = match &state.scan_after {
                Some(hex) => Some(
                    sluice_core::hex::decode(hex).ok_or(WorkerError::Corrupt("scan position"))?,
                ),
                None => None,
            };
            let page = self
                .engine
                .store()
                .scan_docs(source, after.as_deref(), BACKFILL_PAGE_DOCS)
                .map_err(EngineError::from)?;
            let exhausted = page.len() < BACKFILL_PAGE_DOCS;
            let mut writes = Vec::with_capacity(page.len() / usize::from(partitions) + 1);
            for (encoded, bytes) in &page {
                let key = Key::decode(encoded).map_err(|_| WorkerError::Corrupt("document key"))?;
                if usize::from(key.partition(partitions)) != self.partition {
                    continue;
                }
                let view = codec::decode_view(bytes)
                    .map_err(|_| WorkerError::Corrupt("document record"))?;
                if let Some(doc) = view.doc {
                    writes.push((
                        key.to_json().to_string(),
                        state.scan_version,
                        doc.into_owned(),
                    ));
                }
            }
            self.progress()
                .scanned
                .fetch_add(writes.len() as u64, Ordering::Relaxed);
            uncommitted += writes.len();
            let field_errors = self.shard().append_scanned(&writes)?;
            self.progress()
                .writes
                .fetch_add(writes.len() as u64, Ordering::Relaxed);
            self.record_field_errors(field_errors, state);
            state.scan_after = page.last().map(|(key, _)| sluice_core::hex::encode(key));
            if exhausted {
                state.live = true;
                state.scan_after = None;
            }
            if exhausted
                || uncommitted >= BACKFILL_COMMIT_DOCS
                || last_commit.elapsed() >= Duration::from_millis(BACKFILL_COMMIT_MS)
            {
                self.commit(state)?;
                uncommitted = 0;
                last_commit = Instant::now();
            }
            if exhausted {
                return Ok(None);
            }
        }
    }

    fn live(&self, state: &mut ShardState) -> Result<Ended, WorkerError> {
        let lanes = Arc::clone(&self.index.lanes);
        let source = [self.index.config.source.as_str()];
        let partitions = usize::from(self.engine.partitions());
        let mut pending: HashMap<String, Pending> = HashMap::new();
        let mut by_due: BTreeSet<(Instant, String)> = BTreeSet::new();
        let mut by_since: BTreeSet<(u64, String)> = BTreeSet::new();
        let mut lane_counts = vec![0usize; lanes.len()];
        let mut read = state.next_offset;
        let mut last_commit = Instant::now();
        let mut records: Vec<(u64, Vec<u8>)> = Vec::new();
        loop {
            if self.stopped() {
                return Ok(Ended::Stopped);
            }
            let now = Instant::now();
            let wait = by_due
                .first()
                .map_or(Duration::from_millis(IDLE_WAIT_MS), |(due, _)| {
                    due.saturating_duration_since(now)
                })
                .min(Duration::from_millis(IDLE_WAIT_MS));
            let mut after = Cursor::start(partitions);
            after.set(self.partition, read);
            records.clear();
            let next = self.handle.block_on(self.engine.partition_changes_with(
                self.partition,
                after,
                READ_RECORDS_MAX,
                wait,
                Some(&source),
                |record| {
                    // The record as consumers see it (with its cursor), which
                    // `split_record` reads.
                    let mut full = Vec::with_capacity(record.body.len() + 32);
                    record.write_record(&mut full);
                    records.push((record.offset, full));
                },
            ));
            let next = match next {
                Ok(next) => next,
                Err(EngineError::Closed) => return Ok(Ended::EngineClosed),
                Err(error) => return Err(error.into()),
            };
            let now_wall_ms = now_ms();
            let now = Instant::now();
            for (offset, body) in &records {
                let change = parse_change(body).ok_or(WorkerError::Corrupt("change record"))?;
                let lane = if change.doc.is_none() {
                    0
                } else {
                    route(&lanes, &change.changed)
                };
                let delay_ms = lanes
                    .get(lane)
                    .map_or(0, |lane| lane.max_delay_ms * WAIT_SHARE_PERCENT / 100);
                let due_in_ms = (change.ts_ms + delay_ms).saturating_sub(now_wall_ms);
                let due = now + Duration::from_millis(due_in_ms);
                match pending.get_mut(&change.key) {
                    Some(entry) => {
                        entry.version = *offset;
                        entry.doc = change.doc;
                        if lane < entry.lane {
                            lane_counts[entry.lane] -= 1;
                            lane_counts[lane] += 1;
                            entry.lane = lane;
                        }
                        if due < entry.due {
                            by_due.remove(&(entry.due, change.key.clone()));
                            by_due.insert((due, change.key.clone()));
                            entry.due = due;
                        }
                    }
                    None => {
                        by_due.insert((due, change.key.clone()));
                        by_since.insert((*offset, change.key.clone()));
                        lane_counts[lane] += 1;
                        pending.insert(
                            change.key,
                            Pending {
                                version: *offset,
                                doc: change.doc,
                                lane,
                                due,
                                since: *offset,
                                ts_ms: change.ts_ms,
                            },
                        );
                    }
                }
            }
            read = next.offset(self.partition);
            // What waits is published before the new read position, so that a status
            // showing nothing unread also shows what is still to be written (the ages of
            // the oldest, a walk over everything waiting, once per round, after the
            // writes).
            self.publish_counts(&lane_counts);
            self.progress().read_offset.store(read, Ordering::Release);
            // What is due: every document past its lane's delay, and every document of a
            // lane that reached its batch size.
            let now = Instant::now();
            let mut flush: Vec<String> = by_due
                .iter()
                .take_while(|(due, _)| *due <= now)
                .map(|(_, key)| key.clone())
                .collect();
            for (lane, count) in lane_counts.iter().enumerate() {
                if *count >= lanes[lane].batch_size {
                    flush.extend(
                        pending
                            .iter()
                            .filter(|(_, entry)| entry.lane == lane && entry.due > now)
                            .map(|(key, _)| key.clone()),
                    );
                }
            }
            let mut writes = Vec::with_capacity(flush.len());
            for key in flush {
                let Some(entry) = pending.remove(&key) else {
                    continue;
                };
                by_due.remove(&(entry.due, key.clone()));
                by_since.remove(&(entry.since, key.clone()));
                lane_counts[entry.lane] -= 1;
                writes.push(match entry.doc {
                    Some(doc) => Write::Upsert {
                        key,
                        version: entry.version,
                        doc,
                    },
                    None => Write::Delete {
                        key,
                        version: entry.version,
                    },
                });
            }
            let resume_at = by_since.first().map_or(read, |(since, _)| *since);
            let moved = resume_at != state.next_offset;
            if !writes.is_empty()
                || (moved && last_commit.elapsed() >= Duration::from_millis(POSITION_COMMIT_MS))
            {
                self.write(&writes, state)?;
                state.next_offset = resume_at;
                self.commit(state)?;
                last_commit = Instant::now();
            }
            self.publish_lanes(&pending, &lane_counts);
        }
    }

    fn publish_counts(&self, lane_counts: &[usize]) {
        let progress = self.progress();
        for (lane, count) in lane_counts.iter().enumerate() {
            if let Some(slot) = progress.lane_pending.get(lane) {
                slot.store(*count as u64, Ordering::Relaxed);
            }
        }
    }

    /// Each lane's waiting documents and the commit time of its oldest change.
    fn publish_lanes(&self, pending: &HashMap<String, Pending>, lane_counts: &[usize]) {
        self.publish_counts(lane_counts);
        let progress = self.progress();
        let mut oldest = vec![0u64; lane_counts.len()];
        if pending.len() <= 100_000 {
            for entry in pending.values() {
                if let Some(slot) = oldest.get_mut(entry.lane)
                    && (*slot == 0 || entry.ts_ms < *slot)
                {
                    *slot = entry.ts_ms;
                }
            }
        }
        for (slot, oldest) in progress.lane_oldest_ms.iter().zip(oldest) {
            slot.store(oldest, Ordering::Relaxed);
        }
    }
}

struct Change {
    key: String,
    doc: Option<Vec<u8>>,
    changed: Vec<String>,
    ts_ms: u64,
}

fn parse_change(body: &[u8]) -> Option<Change> {
    let parts = split_record(body)?;
    let members = parts.members()?;
    let key = std::str::from_utf8(members.key).ok()?.to_owned();
    let delete = members.op == b"\"delete\"" || parts.doc == b"null";
    let changed: Vec<String> = serde_json::from_slice(members.changed).ok()?;
    Some(Change {
        key,
        doc: (!delete).then(|| parts.doc.to_vec()),
        changed,
        ts_ms: members.ts_ms,
    })
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum WorkerError {
    #[error(transparent)]
    Shard(#[from] ShardError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("corrupt {0} in the store")]
    Corrupt(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane(name: &str, paths: &[&str], max_delay_ms: u64) -> Lane {
        Lane {
            name: name.into(),
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            max_delay_ms,
            batch_size: 10,
        }
    }

    #[test]
    fn changes_take_the_fastest_lane_they_touch() {
        let lanes = vec![
            lane("high", &["/active", "/availability"], 500),
            lane("low", &[], 900_000),
        ];
        let route = |changed: &[&str]| {
            let changed: Vec<String> = changed.iter().map(|c| (*c).to_owned()).collect();
            lanes[route(&lanes, &changed)].name.clone()
        };
        assert_eq!(route(&["/active"]), "high");
        assert_eq!(route(&["/name", "/availability/3/slot"]), "high");
        assert_eq!(route(&["/name"]), "low");
        assert_eq!(route(&["/activeX"]), "low");
        // A created document (the whole document changed) is urgent.
        assert_eq!(route(&[""]), "high");
        assert_eq!(route(&[]), "low");
    }
}
