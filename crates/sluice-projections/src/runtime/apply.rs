//! Turning a chunk of call outcomes into the records of one commit: entries put and
//! removed, owner records, dependency edges and projection errors, with the rule that
//! the first owner of an entry key keeps it.

use crate::owned::{self, Owned};
use crate::{CallError, Projected, Read};
use sluice_core::Key;
use sluice_engine::{Engine, EngineError};
use sluice_store::{Batch, StoreError};
use std::collections::HashMap;

/// What one source document's call came to.
pub(crate) enum Outcome {
    /// The source document does not exist: its entries go, the function is not called.
    Deleted,
    Projected(Projected),
    Failed(CallError),
}

/// A stored projection error.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct ErrorRecord {
    pub key: serde_json::Value,
    pub error: String,
    pub script_hash: String,
    pub ts_ms: u64,
}

enum Write {
    PutEntry(String, Vec<u8>),
    RemoveEntry(String),
    PutOwner(Vec<u8>, Vec<u8>),
    RemoveOwner(Vec<u8>),
    PutDependency(String, Vec<u8>, Vec<u8>),
    RemoveDependency(String, Vec<u8>, Vec<u8>),
    PutError(Vec<u8>, Vec<u8>),
    RemoveError(Vec<u8>),
}

/// The records of one commit of one partition of one view, and how its counts move.
pub(crate) struct Writes<'a> {
    engine: &'a Engine,
    view: &'a str,
    partition: u16,
    script_hash: &'a str,
    writes: Vec<Write>,
    /// Entry keys written or removed in this commit, with their new owner: later sources
    /// of the same commit see them as committed.
    owners: HashMap<String, Option<String>>,
    pub entries_delta: i64,
    pub errors_delta: i64,
    /// Calls that failed or lost an entry key to another source.
    pub errors: u64,
    /// Collections a source of this commit started to read.
    pub read_collections: std::collections::BTreeSet<String>,
    /// Error records this partition had before this commit: with none, no source of the
    /// commit has one (each source appears once per commit), and the reads are skipped.
    errors_stored: i64,
    /// The entry writes for an external target (Redis), when one mirrors this view.
    pub ops: Option<Vec<super::redis::Op>>,
}

/// A dependency's key as stored: the key's canonical text when the collection's keys
/// parse it (`17` for `"17"` and 17 alike), else the text as the script gave it.
pub(crate) fn dependency_key(engine: &Engine, read: &Read) -> Vec<u8> {
    let parsed = engine
        .collection(&read.collection)
        .ok()
        .and_then(|spec| spec.key_from_text(&read.key).ok());
    if let Some(key) = parsed {
        return key.to_string().into_bytes();
    }
    read.key.clone().into_bytes()
}

fn corrupt(what: &'static str) -> EngineError {
    EngineError::Store(StoreError::Corrupt { what })
}

impl<'a> Writes<'a> {
    pub fn new(
        engine: &'a Engine,
        view: &'a str,
        partition: u16,
        script_hash: &'a str,
        errors_stored: i64,
        mirror: bool,
    ) -> Self {
        Self {
            engine,
            view,
            partition,
            script_hash,
            writes: Vec::new(),
            owners: HashMap::new(),
            entries_delta: 0,
            errors_delta: 0,
            errors: 0,
            read_collections: std::collections::BTreeSet::new(),
            errors_stored,
            ops: mirror.then(Vec::new),
        }
    }

    /// The owner of entry `key` as this commit would leave it.
    fn entry_owner(&self, key: &str) -> Result<Option<String>, EngineError> {
        if let Some(owner) = self.owners.get(key) {
            return Ok(owner.clone());
        }
        let Some(bytes) = self
            .engine
            .store()
            .get_view_entry(self.view, key.as_bytes())?
        else {
            return Ok(None);
        };
        let (owner, _) = owned::decode_entry(&bytes).map_err(|error| corrupt(error.what))?;
        Ok(Some(owner))
    }

    fn has_error(&self, source: &[u8]) -> Result<bool, EngineError> {
        if self.errors_stored <= 0 {
            return Ok(false);
        }
        Ok(self
            .engine
            .store()
            .get_view_error(self.view, self.partition, source)?
            .is_some())
    }

    fn put_error(
        &mut self,
        source_key: &Key,
        source: &[u8],
        message: String,
        now_ms: u64,
    ) -> Result<(), EngineError> {
        self.errors += 1;
        if !self.has_error(source)? {
            self.errors_delta += 1;
        }
        let record = ErrorRecord {
            key: source_key.to_json(),
            error: message,
            script_hash: self.script_hash.to_owned(),
            ts_ms: now_ms,
        };
        let bytes = serde_json::to_vec(&record).map_err(|_| corrupt("projection error"))?;
        self.writes.push(Write::PutError(source.to_vec(), bytes));
        Ok(())
    }

    /// Adds what `outcome` of source document `source_key` changes.
    pub fn add(
        &mut self,
        source_key: &Key,
        outcome: Outcome,
        now_ms: u64,
    ) -> Result<(), EngineError> {
        let source = source_key.encode();
        let source_text = source_key.to_string();
        let projected = match outcome {
            Outcome::Deleted => Projected::default(),
            Outcome::Projected(projected) => projected,
            Outcome::Failed(error) => {
                // The old entries stay (and what they read: a change there retries).
                return self.put_error(source_key, &source, error.to_string(), now_ms);
            }
        };
        let old = match self
            .engine
            .store()
            .get_view_owner(self.view, self.partition, &source)?
        {
            Some(bytes) => Owned::decode(&bytes).map_err(|error| corrupt(error.what))?,
            None => Owned::default(),
        };
        // The first owner of a key keeps it.
        let mut conflicts = Vec::new();
        let mut kept = Projected {
            entries: Vec::with_capacity(projected.entries.len()),
            reads: projected.reads,
        };
        for entry in projected.entries {
            // A key the source owns is its own: no one else can hold it.
            if old.entries.contains(&entry.key) {
                kept.entries.push(entry);
                continue;
            }
            match self.entry_owner(&entry.key)? {
                Some(owner) if owner != source_text => conflicts.push((entry.key, owner)),
                _ => kept.entries.push(entry),
            }
        }
        let delta = owned::delta(&old, &kept);
        for key in &delta.removed_entries {
            self.owners.insert((*key).to_owned(), None);
            self.writes.push(Write::RemoveEntry((*key).to_owned()));
            if let Some(ops) = &mut self.ops {
                ops.push(super::redis::Op::Del((*key).to_owned()));
            }
        }
        for entry in &delta.put_entries {
            if let Some(ops) = &mut self.ops {
                ops.push(super::redis::Op::Set(
                    entry.key.clone(),
                    entry.value.clone(),
                ));
            }
            self.owners
                .insert(entry.key.clone(), Some(source_text.clone()));
            self.writes.push(Write::PutEntry(
                entry.key.clone(),
                owned::encode_entry(&source_text, &entry.value),
            ));
        }
        for read in &delta.removed_reads {
            let dependency = dependency_key(self.engine, read);
            self.writes.push(Write::RemoveDependency(
                read.collection.clone(),
                dependency,
                source.clone(),
            ));
        }
        for read in &delta.added_reads {
            if !self.read_collections.contains(&read.collection) {
                self.read_collections.insert(read.collection.clone());
            }
            let dependency = dependency_key(self.engine, read);
            self.writes.push(Write::PutDependency(
                read.collection.clone(),
                dependency,
                source.clone(),
            ));
        }
        self.entries_delta += kept.entries.len() as i64 - old.entries.len() as i64;
        let owned = Owned::of(&kept);
        if owned.entries.is_empty() && owned.reads.is_empty() {
            if old != Owned::default() {
                self.writes.push(Write::RemoveOwner(source.clone()));
            }
        } else if owned != old {
            // Unchanged (the same keys and reads, the common re-run): nothing to write.
            self.writes
                .push(Write::PutOwner(source.clone(), owned.encode()));
        }
        if let Some((key, owner)) = conflicts.first() {
            let others = conflicts.len() - 1;
            let mut message = format!(
                "entry key {key:?} is produced by source {owner:?} and by source {source_text:?}; {owner:?} keeps it"
            );
            if others > 0 {
                message.push_str(&format!(" ({others} more keys like it)"));
            }
            self.put_error(source_key, &source, message, now_ms)?;
        } else if self.has_error(&source)? {
            self.errors_delta -= 1;
            self.writes.push(Write::RemoveError(source));
        }
        Ok(())
    }

    /// Adds every record to `batch` (the Redis writes, if any, are taken before).
    pub fn write(self, batch: &mut Batch<'_>) {
        let (view, partition) = (self.view, self.partition);
        for write in self.writes {
            match write {
                Write::PutEntry(key, entry) => batch.put_view_entry(view, key.as_bytes(), &entry),
                Write::RemoveEntry(key) => batch.remove_view_entry(view, key.as_bytes()),
                Write::PutOwner(source, owned) => {
                    batch.put_view_owner(view, partition, &source, &owned)
                }
                Write::RemoveOwner(source) => batch.remove_view_owner(view, partition, &source),
                Write::PutDependency(collection, dependency, source) => {
                    batch.put_view_dependency(view, partition, &collection, &dependency, &source)
                }
                Write::RemoveDependency(collection, dependency, source) => {
                    batch.remove_view_dependency(view, partition, &collection, &dependency, &source)
                }
                Write::PutError(source, error) => {
                    batch.put_view_error(view, partition, &source, &error)
                }
                Write::RemoveError(source) => batch.remove_view_error(view, partition, &source),
            }
        }
    }
}
