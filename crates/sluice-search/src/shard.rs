//! One partition's part of an index: a tantivy index updated in place, whose commits
//! carry the partition's cursor (tantivy's commit payload), so that the documents and
//! the position they were built to are one atomic write.
//!
//! Writes are versioned: each carries the change-log offset of the state it was built
//! from, and a write older than what the shard holds for that key is refused
//! ([`Outcome::Stale`]) and never applied; the writer retries from the source's current
//! state. Deletes leave a tombstone with their version, so an older write arriving after
//! a delete is refused too.

use crate::schema::{self, FieldError, IndexSchema};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tantivy::directory::MmapDirectory;
use tantivy::query::{Query, TermQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::{
    DocSet, Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TERMINATED, TantivyDocument,
    Term,
};

/// What a shard's commit records beside its documents.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardState {
    /// The first change-log offset of this partition not yet reflected in the shard:
    /// after a restart, reading resumes here.
    pub next_offset: u64,
    /// The backfill: done, or the scan position (hex of the last document key written).
    pub live: bool,
    pub scan_after: Option<String>,
    /// The version given to the scanned documents (the partition's head when the build
    /// began: each scanned state includes every record before it).
    pub scan_version: u64,
    /// Source values that did not fit their field, counted since the build began.
    pub field_errors: u64,
}

/// One write: a source document's state, or its delete.
#[derive(Clone, Debug)]
pub enum Write {
    Upsert {
        key: String,
        version: u64,
        doc: Vec<u8>,
    },
    Delete {
        key: String,
        version: u64,
    },
}

impl Write {
    pub fn key(&self) -> &str {
        match self {
            Write::Upsert { key, .. } | Write::Delete { key, .. } => key,
        }
    }

    pub fn version(&self) -> u64 {
        match self {
            Write::Upsert { version, .. } | Write::Delete { version, .. } => *version,
        }
    }
}

/// Each write's outcome, in order, and the values that did not fit their fields (with
/// their document's key).
pub type Written = (Vec<Outcome>, Vec<(String, FieldError)>);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// The shard already holds this version.
    Current,
    /// The shard holds a newer version: the write was not applied.
    Stale {
        indexed: u64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("search index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("search index directory: {0}")]
    Directory(String),
    #[error("search index commit record: {0}")]
    Payload(#[from] serde_json::Error),
    #[error("search index read: {0}")]
    Io(#[from] std::io::Error),
}

pub struct Shard {
    schema: Arc<IndexSchema>,
    index: Index,
    writer: Mutex<IndexWriter>,
    reader: IndexReader,
    /// Versions written since the last commit, by key: the committed searcher does not
    /// see them yet.
    uncommitted: Mutex<HashMap<String, u64>>,
    segments_max: usize,
}

/// How long a commit waits for merges to bring the segment count down before it goes on
/// anyway (and says so).
const MERGE_WAIT_MS_MAX: u64 = 30_000;

impl Shard {
    /// Opens the shard in `dir`, creating it when empty; its last committed state.
    pub fn open(
        dir: &Path,
        schema: Arc<IndexSchema>,
        writer_memory_bytes: usize,
        segments_max: usize,
    ) -> Result<(Self, Option<ShardState>), ShardError> {
        std::fs::create_dir_all(dir)
            .map_err(|error| ShardError::Directory(format!("{}: {error}", dir.display())))?;
        let directory = MmapDirectory::open(dir)
            .map_err(|error| ShardError::Directory(format!("{}: {error}", dir.display())))?;
        let index = Index::open_or_create(directory, schema.schema.clone())?;
        let writer = index.writer_with_num_threads(1, writer_memory_bytes)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let state = match index.load_metas()?.payload {
            Some(payload) => Some(serde_json::from_str(&payload)?),
            None => None,
        };
        Ok((
            Self {
                schema,
                index,
                writer: Mutex::new(writer),
                reader,
                uncommitted: Mutex::new(HashMap::new()),
                segments_max,
            },
            state,
        ))
    }

    pub fn schema(&self) -> &IndexSchema {
        &self.schema
    }

    /// The searcher of the last commit.
    pub fn searcher(&self) -> Searcher {
        self.reader.searcher()
    }

    /// The version the shard holds for `key` (a tombstone's too), committed or not.
    pub fn indexed_version(&self, key: &str) -> Result<Option<u64>, ShardError> {
        // Under the writer's lock, as in `write`: no commit between the two looks.
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let uncommitted = self
            .uncommitted
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.version_of(&uncommitted, &self.searcher(), key)
    }

    /// The version of `key` in the writes since the last commit, else in `searcher`.
    fn version_of(
        &self,
        uncommitted: &HashMap<String, u64>,
        searcher: &Searcher,
        key: &str,
    ) -> Result<Option<u64>, ShardError> {
        match uncommitted.get(key) {
            Some(version) => Ok(Some(*version)),
            None => committed_version(searcher, &self.schema, key),
        }
    }

    /// The search document of `doc`, its misfit values added to `field_errors`; `None`
    /// (and an error) when `doc` is not JSON.
    fn document(
        &self,
        key: &str,
        version: u64,
        doc: &[u8],
        field_errors: &mut Vec<(String, FieldError)>,
    ) -> Option<TantivyDocument> {
        match self.schema.document(key, version, doc) {
            Ok((document, errors)) => {
                field_errors.extend(errors.into_iter().map(|e| (key.to_owned(), e)));
                Some(document)
            }
            Err(error) => {
                field_errors.push((
                    key.to_owned(),
                    FieldError {
                        field: String::new(),
                        message: format!("the document is not JSON: {error}"),
                    },
                ));
                None
            }
        }
    }

    /// Applies each write unless the shard holds a newer version of its key. Returns each
    /// write's outcome (in order) and the values that did not fit their fields.
    pub fn write(&self, writes: &[Write]) -> Result<Written, ShardError> {
        let writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut uncommitted = self
            .uncommitted
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Taken under the writer's lock: a commit (which holds it) publishes its writes
        // and forgets them from `uncommitted` at once, so a searcher taken before it
        // would miss them and let an older write through.
        let searcher = self.searcher();
        let mut outcomes = Vec::with_capacity(writes.len());
        let mut field_errors = Vec::new();
        for write in writes {
            let key = write.key();
            let version = write.version();
            let indexed = self.version_of(&uncommitted, &searcher, key)?;
            match indexed {
                Some(indexed) if indexed > version => {
                    outcomes.push(Outcome::Stale { indexed });
                    continue;
                }
                Some(indexed) if indexed == version => {
                    outcomes.push(Outcome::Current);
                    continue;
                }
                _ => {}
            }
            let document = match write {
                // A change record's document is JSON the engine wrote; should one not be,
                // the key keeps its version at least.
                Write::Upsert { doc, .. } => self
                    .document(key, version, doc, &mut field_errors)
                    .unwrap_or_else(|| self.schema.tombstone(key, version)),
                Write::Delete { .. } => self.schema.tombstone(key, version),
            };
            writer.delete_term(self.schema.key_term(key));
            writer.add_document(document)?;
            uncommitted.insert(key.to_owned(), version);
            outcomes.push(Outcome::Applied);
        }
        Ok((outcomes, field_errors))
    }

    /// Adds documents of a backfill scan: keys the shard has never held (a scan yields
    /// each key once, after the scan position of the last commit, and what a crash took
    /// back was never committed), so no version lookup and no delete are needed.
    pub fn append_scanned(
        &self,
        writes: &[(String, u64, Vec<u8>)],
    ) -> Result<Vec<(String, FieldError)>, ShardError> {
        let writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut field_errors = Vec::new();
        for (key, version, doc) in writes {
            if let Some(document) = self.document(key, *version, doc, &mut field_errors) {
                writer.add_document(document)?;
            }
        }
        Ok(field_errors)
    }

    /// Commits every write so far with `state`, makes them searchable, then waits (up to
    /// [`MERGE_WAIT_MS_MAX`]) while merges bring the segments under `segments_max`.
    pub fn commit(&self, state: &ShardState) -> Result<(), ShardError> {
        let payload = serde_json::to_string(state)?;
        {
            let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
            let mut prepared = writer.prepare_commit()?;
            prepared.set_payload(&payload);
            prepared.commit()?;
            self.reader.reload()?;
            self.uncommitted
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
        }
        let started = Instant::now();
        while self.index.searchable_segment_ids()?.len() > self.segments_max {
            if started.elapsed() > Duration::from_millis(MERGE_WAIT_MS_MAX) {
                tracing::warn!(
                    segments_max = self.segments_max,
                    "Search index merges are behind; committing past segments_max."
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Live documents (tombstones excluded) as of the last commit.
    pub fn documents(&self) -> u64 {
        let searcher = self.searcher();
        // A term's document frequency counts replaced documents until they are merged
        // away; a query counts only live ones.
        let tombstones = TermQuery::new(
            Term::from_field_bool(self.schema.tomb, true),
            IndexRecordOption::Basic,
        )
        .count(&searcher)
        .unwrap_or(0) as u64;
        searcher.num_docs().saturating_sub(tombstones)
    }

    pub fn segments(&self) -> usize {
        self.index
            .searchable_segment_ids()
            .map_or(0, |segments| segments.len())
    }
}

/// The newest version of `key` in `searcher` (live documents only: a replaced one is
/// deleted by then).
fn committed_version(
    searcher: &Searcher,
    schema: &IndexSchema,
    key: &str,
) -> Result<Option<u64>, ShardError> {
    let term = schema.key_term(key);
    let mut newest = None;
    for segment in searcher.segment_readers() {
        let inverted = segment.inverted_index(schema.key)?;
        let Some(mut postings) = inverted.read_postings(&term, IndexRecordOption::Basic)? else {
            continue;
        };
        let versions = segment.fast_fields().u64(schema::VERSION)?;
        let mut doc = postings.doc();
        while doc != TERMINATED {
            if segment.is_deleted(doc) {
                doc = postings.advance();
                continue;
            }
            if let Some(version) = versions.first(doc) {
                newest = Some(newest.map_or(version, |newest: u64| newest.max(version)));
            }
            doc = postings.advance();
        }
    }
    Ok(newest)
}
