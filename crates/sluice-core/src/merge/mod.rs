//! How an event or a delete changes a document, in both ordering modes.

mod field;
pub mod patch;

pub use field::{Node, Stamp};

use crate::config::Ordering;
use crate::diff::changed_paths;
use crate::version::{Version, VersionError};
use serde_json::{Map, Value};
use std::cmp::Ordering as CmpOrdering;

/// What an event did to its document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The visible document changed: a change record follows.
    Applied,
    /// Nothing visible changed (a duplicate, or values equal to the current ones).
    Noop,
    /// Older than what the document already has: dropped.
    Stale,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Noop => "noop",
            Outcome::Stale => "stale",
        }
    }
}

/// The result of one apply: the outcome, the changed paths (empty unless applied), and
/// whether the stored state changed (a noop may still record field versions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub outcome: Outcome,
    pub changed: Vec<String>,
    pub state_changed: bool,
}

impl Applied {
    /// A stored change; applied when something visible changed.
    fn changed(changed: Vec<String>) -> Self {
        let outcome = if changed.is_empty() {
            Outcome::Noop
        } else {
            Outcome::Applied
        };
        Self {
            outcome,
            changed,
            state_changed: true,
        }
    }

    fn unchanged(outcome: Outcome) -> Self {
        Self {
            outcome,
            changed: Vec::new(),
            state_changed: false,
        }
    }
}

/// Everything stored about one key.
#[derive(Clone, Debug, PartialEq)]
pub enum DocState {
    Document(DocumentState),
    Field(FieldState),
}

/// Document ordering: one version for the whole document; deletes leave a tombstone
/// (`doc: None` with the delete's version) so older events stay stale.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DocumentState {
    pub version: Option<Version>,
    pub doc: Option<Map<String, Value>>,
}

/// Field ordering: the clock tree. The visible document is derived from it when needed
/// (and written as JSON straight from the tree), never stored beside it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldState {
    pub root: Node,
}

impl FieldState {
    pub fn from_root(root: Node) -> Self {
        Self { root }
    }
}

impl DocState {
    pub fn new(ordering: Ordering) -> Self {
        match ordering {
            Ordering::Document => DocState::Document(DocumentState::default()),
            Ordering::Field => DocState::Field(FieldState::default()),
        }
    }

    /// Whether the document exists (it was written and not deleted since).
    pub fn exists(&self) -> bool {
        match self {
            DocState::Document(state) => state.doc.is_some(),
            DocState::Field(state) => state.root.shows_object(),
        }
    }

    /// The visible document, built; `None` when it does not exist.
    pub fn doc(&self) -> Option<Map<String, Value>> {
        match self {
            DocState::Document(state) => state.doc.clone(),
            DocState::Field(state) => state
                .root
                .shows_object()
                .then(|| state.root.visible_members()),
        }
    }

    /// The visible document as JSON (keys in order, as serde_json writes a map); `None`
    /// when it does not exist.
    pub fn doc_json(&self) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(256);
        match self {
            DocState::Document(state) => {
                // Serializing a map into memory cannot fail.
                serde_json::to_writer(&mut out, state.doc.as_ref()?).ok()?;
            }
            DocState::Field(state) => {
                if !state.root.shows_object() {
                    return None;
                }
                state.root.write_members_json(&mut out);
            }
        }
        Some(out)
    }

    /// The newest version this key has seen (including deletes).
    pub fn version(&self) -> Option<Version> {
        match self {
            DocState::Document(state) => state.version,
            DocState::Field(state) => state.root.newest().map(|stamp| stamp.version),
        }
    }

    /// Applies a partial document. `version: None` means arrival order: the event is
    /// newer than everything before it.
    pub fn apply(
        &mut self,
        version: Option<Version>,
        patch: &Map<String, Value>,
    ) -> Result<Applied, VersionError> {
        let version = self.resolve(version)?;
        match self {
            DocState::Document(state) => Ok(state.apply(version, patch)),
            DocState::Field(state) => {
                let tie = Stamp::event_tie(hash_object(patch));
                Ok(state.apply(Stamp { version, tie }, patch))
            }
        }
    }

    /// Deletes the document: everything written at or before `version` goes, and older
    /// events stay stale afterwards. Without a version, the delete is at the newest version
    /// seen, so it covers everything so far and the next event (newer) writes again.
    pub fn delete(&mut self, version: Option<Version>) -> Result<Applied, VersionError> {
        let version = match (version, self.version()) {
            (Some(version), _) => {
                self.check_kind(version)?;
                version
            }
            (None, Some(current)) => current,
            (None, None) => return Ok(Applied::unchanged(Outcome::Noop)),
        };
        match self {
            DocState::Document(state) => Ok(state.delete(version)),
            DocState::Field(state) => {
                let stamp = Stamp {
                    version,
                    tie: Stamp::DELETE_TIE,
                };
                Ok(state.apply_delete(stamp))
            }
        }
    }

    fn resolve(&self, version: Option<Version>) -> Result<Version, VersionError> {
        match version {
            Some(version) => {
                self.check_kind(version)?;
                Ok(version)
            }
            None => Ok(self.version().map_or(Version::Int(1), Version::successor)),
        }
    }

    fn check_kind(&self, version: Version) -> Result<(), VersionError> {
        match self.version() {
            Some(current) => version.compare(current).map(|_| ()),
            None => Ok(()),
        }
    }
}

impl DocumentState {
    fn apply(&mut self, version: Version, patch: &Map<String, Value>) -> Applied {
        if self.is_not_older(version) {
            return Applied::unchanged(Outcome::Stale);
        }
        let mut doc = self.doc.clone().unwrap_or_default();
        patch::merge_members(&mut doc, patch);
        let changed = changed_paths(self.doc.as_ref(), Some(&doc));
        self.version = Some(version);
        self.doc = Some(doc);
        Applied::changed(changed)
    }

    fn delete(&mut self, version: Version) -> Applied {
        let newer_than_current = !self.is_not_older(version);
        let same_as_current = self.version == Some(version);
        if !newer_than_current && !same_as_current {
            return Applied::unchanged(Outcome::Stale);
        }
        // A delete at the document's own version is allowed: it is how a delete without
        // a version is expressed, and it must still beat the write it names.
        let changed = changed_paths(self.doc.as_ref(), None);
        let state_changed = self.doc.is_some() || self.version != Some(version);
        self.doc = None;
        self.version = Some(version);
        Applied {
            state_changed,
            ..Applied::changed(changed)
        }
    }

    fn is_not_older(&self, version: Version) -> bool {
        self.version.is_some_and(|current| {
            version
                .compare(current)
                .is_ok_and(|order| order != CmpOrdering::Greater)
        })
    }
}

impl FieldState {
    fn apply(&mut self, stamp: Stamp, patch: &Map<String, Value>) -> Applied {
        let newest_before = self.root.newest();
        let existed = self.root.shows_object();
        // Only the patched members can change: keep their old state to compare.
        let before: Vec<Option<Node>> = match existed {
            true => patch
                .keys()
                .map(|name| self.root.children.get(name).cloned())
                .collect(),
            false => Vec::new(),
        };
        if !self.root.apply_members(patch, stamp) {
            // Stale: a delete covers the event, or everything it wrote has newer versions.
            let deleted = self.root.reset.is_some_and(|reset| reset >= stamp);
            let older =
                newest_before.is_some_and(|newest| newest.version.total_cmp(stamp.version).is_gt());
            let stale = deleted || older;
            return Applied::unchanged(if stale { Outcome::Stale } else { Outcome::Noop });
        }
        let changed = match (existed, self.root.shows_object()) {
            (true, true) => {
                let mut changed = Vec::new();
                let mut path = String::new();
                for (name, old) in patch.keys().zip(&before) {
                    Node::diff_visible(
                        &mut path,
                        name,
                        old.as_ref(),
                        self.root.children.get(name),
                        &mut changed,
                    );
                }
                changed
            }
            (false, false) => Vec::new(),
            _ => vec![String::new()],
        };
        Applied::changed(changed)
    }

    fn apply_delete(&mut self, stamp: Stamp) -> Applied {
        // Deletes are rare, and one below newer writes can leave the document visible with
        // fewer members, so compare whole documents.
        let before = self
            .root
            .shows_object()
            .then(|| self.root.visible_members());
        if !self.root.apply(&Value::Null, stamp) {
            return Applied::unchanged(Outcome::Stale);
        }
        let after = self
            .root
            .shows_object()
            .then(|| self.root.visible_members());
        Applied::changed(changed_paths(before.as_ref(), after.as_ref()))
    }
}

fn hash_object(members: &Map<String, Value>) -> u64 {
    crate::hash::hash_members(members)
}

#[cfg(test)]
mod tests;
