//! What read models that keep their state in the store (projections) need from the
//! engine: documents as of one moment, their own keyspace, and commits of their output
//! with their cursors. Documents and the change log stay the writers' alone: read models
//! write only `views` records and consumer positions, through [`Engine::commit_batch`].

use crate::{Engine, EngineError};
use sluice_core::{Cursor, Key, codec};
use sluice_store::{Batch, Store, StoreError, StoreSnapshot};

/// The documents as of one moment: every read through it agrees with the others.
pub struct DocSnapshot {
    snapshot: StoreSnapshot,
}

impl DocSnapshot {
    /// The document's JSON text, or `None` when it does not exist (or was deleted).
    pub fn get(&self, collection: &str, key: &Key) -> Result<Option<Vec<u8>>, EngineError> {
        let Some(bytes) = self.snapshot.get_doc(collection, &key.encode())? else {
            return Ok(None);
        };
        let view = codec::decode_view(&bytes).map_err(|_| StoreError::Corrupt {
            what: "document record",
        })?;
        Ok(view.doc.map(|doc| doc.into_owned()))
    }
}

impl Engine {
    /// The documents as of now (see [`DocSnapshot`]); hold it briefly, as the store keeps
    /// older versions for it.
    pub fn snapshot(&self) -> DocSnapshot {
        DocSnapshot {
            snapshot: self.shared().store.snapshot(),
        }
    }

    /// The store, for reading read models' own records (`views`). Writes go through
    /// [`Engine::commit_batch`] or a consumer's commit, never around the writers.
    pub fn store(&self) -> &Store {
        &self.shared().store
    }

    /// Commits `write`'s records (views records, consumer positions) atomically and
    /// durably.
    pub fn commit_batch(&self, write: impl FnOnce(&mut Batch<'_>)) -> Result<(), EngineError> {
        let mut batch = self.shared().store.batch();
        write(&mut batch);
        self.commit_meta(batch)
    }

    /// The committed position of consumer `name`, if it has one.
    pub fn consumer_position(&self, name: &str) -> Result<Option<Cursor>, EngineError> {
        self.stored_position(name)
    }

    /// The names of every consumer with a committed position (subscriptions' included).
    pub fn consumer_names(&self) -> Result<Vec<String>, EngineError> {
        Ok(self
            .consumer_positions()?
            .into_iter()
            .map(|(name, _)| name)
            .collect())
    }

    /// Change records (of every collection) between `position` and the durable head.
    pub fn lag_records(&self, position: &Cursor) -> u64 {
        self.records_behind(position)
    }
}
