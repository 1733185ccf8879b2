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

/// Field ordering: the clock tree, plus the visible document derived from it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldState {
    pub root: Node,
    doc: Option<Map<String, Value>>,
}

impl FieldState {
    pub fn from_root(root: Node) -> Self {
        let doc = root.shows_object().then(|| root.visible_members());
        Self { root, doc }
    }
}

impl DocState {
    pub fn new(ordering: Ordering) -> Self {
        match ordering {
            Ordering::Document => DocState::Document(DocumentState::default()),
            Ordering::Field => DocState::Field(FieldState::default()),
        }
    }

    /// The visible document; `None` when it does not exist (never written, or deleted).
    pub fn doc(&self) -> Option<&Map<String, Value>> {
        match self {
            DocState::Document(state) => state.doc.as_ref(),
            DocState::Field(state) => state.doc.as_ref(),
        }
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
        let outcome = if changed.is_empty() {
            Outcome::Noop
        } else {
            Outcome::Applied
        };
        Applied {
            outcome,
            changed,
            state_changed: true,
        }
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
        let outcome = if changed.is_empty() {
            Outcome::Noop
        } else {
            Outcome::Applied
        };
        Applied {
            outcome,
            changed,
            state_changed,
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
        if !self.root.apply_members(patch, stamp) {
            // Stale: a delete covers the event, or everything it wrote has newer versions.
            let deleted = self.root.reset.is_some_and(|reset| reset >= stamp);
            let older =
                newest_before.is_some_and(|newest| newest.version.total_cmp(stamp.version).is_gt());
            let stale = deleted || older;
            return Applied::unchanged(if stale { Outcome::Stale } else { Outcome::Noop });
        }
        self.refresh_members(patch)
    }

    fn apply_delete(&mut self, stamp: Stamp) -> Applied {
        if !self.root.apply(&Value::Null, stamp) {
            return Applied::unchanged(Outcome::Stale);
        }
        self.refresh()
    }

    fn refresh(&mut self) -> Applied {
        let doc = self
            .root
            .shows_object()
            .then(|| self.root.visible_members());
        let changed = changed_paths(self.doc.as_ref(), doc.as_ref());
        self.doc = doc;
        let outcome = if changed.is_empty() {
            Outcome::Noop
        } else {
            Outcome::Applied
        };
        Applied {
            outcome,
            changed,
            state_changed: true,
        }
    }

    /// After an object patch on a visible document, only the patched members can have
    /// changed: recompute those instead of the whole document.
    fn refresh_members(&mut self, patch: &Map<String, Value>) -> Applied {
        let (Some(doc), true) = (self.doc.as_mut(), self.root.shows_object()) else {
            return self.refresh();
        };
        let mut changed = Vec::new();
        let mut path = String::new();
        for name in patch.keys() {
            let new = self.root.children.get(name).and_then(Node::visible);
            crate::diff::walk_member(&mut path, name, doc.get(name), new.as_ref(), &mut changed);
            match new {
                Some(value) => {
                    if let Some(slot) = doc.get_mut(name) {
                        *slot = value;
                    } else {
                        doc.insert(name.clone(), value);
                    }
                }
                None => {
                    doc.remove(name);
                }
            }
        }
        let outcome = if changed.is_empty() {
            Outcome::Noop
        } else {
            Outcome::Applied
        };
        Applied {
            outcome,
            changed,
            state_changed: true,
        }
    }
}

fn hash_object(members: &Map<String, Value>) -> u64 {
    crate::hash::hash_members(members)
}

#[cfg(test)]
mod tests;
