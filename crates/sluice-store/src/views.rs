//! The `views` keyspace: the state of read models that live in the store (projections),
//! written in the same batch as their consumer's cursor. Three kinds of records, each
//! under a view id (a read model and its version, so that a new version is built beside
//! the old one and the old one is dropped whole):
//!
//! ```text
//! e | view | entry key                                            → the entry (caller's bytes)
//! o | view | partition u16 BE | source key                        → what the source owns and read
//! d | view | partition u16 BE | collection | dep key | source key → (empty): source read dep
//! x | view | partition u16 BE | source key                        → the source's projection error
//! p | view | partition u16 BE                                     → the partition's progress
//! r | view | partition u16 BE                                     → its last writes to an external target
//! a | read model name                                             → its active view id
//! ```
//!
//! `view`, `collection` and `dep key` are each `len u16 BE | bytes`; the last part of a
//! key is left bare, so any bytes are allowed in every part and no key is a prefix of
//! another of a different meaning. Dependencies are kept by the partition of the source
//! that read them, so that each partition's consumer finds the sources it owns.

use crate::{Batch, Bytes, Result, Store};

/// A view id is a prefix of every key of the view.
pub const VIEW_ID_BYTES_MAX: usize = 256;

const ENTRY: u8 = b'e';
const OWNER: u8 = b'o';
const DEPENDENCY: u8 = b'd';
const ERROR: u8 = b'x';
const PROGRESS: u8 = b'p';
const ACTIVE: u8 = b'a';
const OUTBOX: u8 = b'r';

fn push_part(key: &mut Vec<u8>, part: &[u8]) {
    // Callers bound every part far below u16::MAX (view ids, collection names, keys of
    // at most a few hundred bytes); a longer part is cut rather than mis-framed.
    let len = part.len().min(usize::from(u16::MAX));
    key.extend_from_slice(&(len as u16).to_be_bytes());
    key.extend_from_slice(&part[..len]);
}

fn view_prefix(kind: u8, view: &str) -> Vec<u8> {
    debug_assert!(view.len() <= VIEW_ID_BYTES_MAX);
    let mut key = Vec::with_capacity(3 + view.len() + 64);
    key.push(kind);
    push_part(&mut key, view.as_bytes());
    key
}

fn entry_key(view: &str, key: &[u8]) -> Vec<u8> {
    let mut out = view_prefix(ENTRY, view);
    out.extend_from_slice(key);
    out
}

fn owner_key(view: &str, partition: u16, source: &[u8]) -> Vec<u8> {
    let mut out = view_prefix(OWNER, view);
    out.extend_from_slice(&partition.to_be_bytes());
    out.extend_from_slice(source);
    out
}

fn error_key(view: &str, partition: u16, source: &[u8]) -> Vec<u8> {
    let mut out = view_prefix(ERROR, view);
    out.extend_from_slice(&partition.to_be_bytes());
    out.extend_from_slice(source);
    out
}

fn progress_key(view: &str, partition: u16) -> Vec<u8> {
    let mut out = view_prefix(PROGRESS, view);
    out.extend_from_slice(&partition.to_be_bytes());
    out
}

fn outbox_key(view: &str, partition: u16) -> Vec<u8> {
    let mut out = view_prefix(OUTBOX, view);
    out.extend_from_slice(&partition.to_be_bytes());
    out
}

fn dependency_prefix(view: &str, partition: u16, collection: &str, dependency: &[u8]) -> Vec<u8> {
    let mut out = view_prefix(DEPENDENCY, view);
    out.extend_from_slice(&partition.to_be_bytes());
    push_part(&mut out, collection.as_bytes());
    push_part(&mut out, dependency);
    out
}

fn dependency_key(
    view: &str,
    partition: u16,
    collection: &str,
    dependency: &[u8],
    source: &[u8],
) -> Vec<u8> {
    let mut key = dependency_prefix(view, partition, collection, dependency);
    key.extend_from_slice(source);
    key
}

impl Store {
    pub fn get_view_entry(&self, view: &str, key: &[u8]) -> Result<Option<Bytes>> {
        Ok(self.views.get(entry_key(view, key))?)
    }

    /// Entries of `view` in key order, strictly after `after`.
    pub fn scan_view_entries(
        &self,
        view: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Bytes)>> {
        crate::scan_after(&self.views, &view_prefix(ENTRY, view), after, limit)
    }

    /// What source document `source` of `partition` owns and read in `view`.
    pub fn get_view_owner(
        &self,
        view: &str,
        partition: u16,
        source: &[u8],
    ) -> Result<Option<Bytes>> {
        Ok(self.views.get(owner_key(view, partition, source))?)
    }

    /// The source documents of `partition` that read `collection`/`dependency` in `view`,
    /// at most `limit`, in key order, strictly after `after`.
    pub fn view_dependents(
        &self,
        view: &str,
        partition: u16,
        collection: &str,
        dependency: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>> {
        let prefix = dependency_prefix(view, partition, collection, dependency);
        let start = match after {
            Some(source) => {
                let mut start = dependency_key(view, partition, collection, dependency, source);
                start.push(0);
                start
            }
            None => prefix.clone(),
        };
        let mut out = Vec::with_capacity(limit.min(1024));
        for guard in self.views.range(start..) {
            let key = guard.key()?;
            let Some(source) = key.strip_prefix(prefix.as_slice()) else {
                break;
            };
            out.push(source.to_vec());
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Projection errors of `view` (every partition), in key order, strictly after `after`
    /// (a key as this returns it).
    pub fn scan_view_errors(
        &self,
        view: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Bytes)>> {
        crate::scan_after(&self.views, &view_prefix(ERROR, view), after, limit)
    }

    pub fn get_view_error(
        &self,
        view: &str,
        partition: u16,
        source: &[u8],
    ) -> Result<Option<Bytes>> {
        Ok(self.views.get(error_key(view, partition, source))?)
    }

    /// Owner records of `partition`'s sources in `view`, by source key, strictly after
    /// `after` (a source key as this returns it).
    pub fn scan_view_owners(
        &self,
        view: &str,
        partition: u16,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Bytes)>> {
        let mut prefix = view_prefix(OWNER, view);
        prefix.extend_from_slice(&partition.to_be_bytes());
        crate::scan_after(&self.views, &prefix, after, limit)
    }

    pub fn get_view_outbox(&self, view: &str, partition: u16) -> Result<Option<Bytes>> {
        Ok(self.views.get(outbox_key(view, partition))?)
    }

    pub fn get_view_progress(&self, view: &str, partition: u16) -> Result<Option<Bytes>> {
        Ok(self.views.get(progress_key(view, partition))?)
    }

    /// The view id that serves read model `name`, if one was switched to.
    pub fn get_active_view(&self, name: &str) -> Result<Option<Bytes>> {
        Ok(self.views.get(view_prefix(ACTIVE, name))?)
    }

    /// Removes up to `limit` records of `view` (every kind) and says how many went: a
    /// dropped version goes in bounded batches, each atomic and durable.
    pub fn remove_view_records(&self, view: &str, limit: usize) -> Result<usize> {
        let mut batch = self.batch();
        let mut removed = 0;
        for kind in [ENTRY, OWNER, DEPENDENCY, ERROR, PROGRESS, OUTBOX] {
            let prefix = view_prefix(kind, view);
            for guard in self.views.prefix(&prefix) {
                if removed >= limit {
                    break;
                }
                let key = guard.key()?;
                batch.inner.remove(&self.views, key);
                removed += 1;
            }
        }
        batch.commit()?;
        self.sync()?;
        Ok(removed)
    }
}

impl Batch<'_> {
    pub fn put_view_entry(&mut self, view: &str, key: &[u8], entry: &[u8]) {
        self.inner
            .insert(&self.store.views, entry_key(view, key), entry);
    }

    pub fn remove_view_entry(&mut self, view: &str, key: &[u8]) {
        self.inner.remove(&self.store.views, entry_key(view, key));
    }

    pub fn put_view_owner(&mut self, view: &str, partition: u16, source: &[u8], owned: &[u8]) {
        self.inner
            .insert(&self.store.views, owner_key(view, partition, source), owned);
    }

    pub fn remove_view_owner(&mut self, view: &str, partition: u16, source: &[u8]) {
        self.inner
            .remove(&self.store.views, owner_key(view, partition, source));
    }

    pub fn put_view_error(&mut self, view: &str, partition: u16, source: &[u8], error: &[u8]) {
        self.inner
            .insert(&self.store.views, error_key(view, partition, source), error);
    }

    pub fn remove_view_error(&mut self, view: &str, partition: u16, source: &[u8]) {
        self.inner
            .remove(&self.store.views, error_key(view, partition, source));
    }

    pub fn put_view_progress(&mut self, view: &str, partition: u16, progress: &[u8]) {
        self.inner
            .insert(&self.store.views, progress_key(view, partition), progress);
    }

    pub fn put_view_outbox(&mut self, view: &str, partition: u16, outbox: &[u8]) {
        self.inner
            .insert(&self.store.views, outbox_key(view, partition), outbox);
    }

    pub fn put_active_view(&mut self, name: &str, view: &str) {
        self.inner.insert(
            &self.store.views,
            view_prefix(ACTIVE, name),
            view.as_bytes(),
        );
    }

    /// Records that `source` read `collection`/`dependency`.
    pub fn put_view_dependency(
        &mut self,
        view: &str,
        partition: u16,
        collection: &str,
        dependency: &[u8],
        source: &[u8],
    ) {
        let key = dependency_key(view, partition, collection, dependency, source);
        self.inner.insert(&self.store.views, key, []);
    }

    pub fn remove_view_dependency(
        &mut self,
        view: &str,
        partition: u16,
        collection: &str,
        dependency: &[u8],
        source: &[u8],
    ) {
        let key = dependency_key(view, partition, collection, dependency, source);
        self.inner.remove(&self.store.views, key);
    }
}
