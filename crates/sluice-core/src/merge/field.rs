//! Field ordering: a last-writer-wins map CRDT over JSON paths.
//!
//! Every event is a merge patch stamped with `(version, tie)`, where `tie` is a hash of the
//! event's content, so stamps are totally ordered and a function of the event alone. The
//! state keeps, per path, the newest non-object write (`reset`: a value, or a removal) and
//! the newest object write (`obj`). A path shows an object when its newest object write is
//! newer than its newest reset, and the reset's value otherwise. A reset at stamp `s` wipes
//! every write below it that is older than `s`; those writes are pruned, because a later
//! event can never make them visible again.
//!
//! The visible document therefore equals RFC 7386 applied to the events in stamp order,
//! whatever the order in which they arrive, and applying an event twice changes nothing.

use crate::version::Version;
use serde_json::{Map, Value};
use std::cmp::Ordering;
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub version: Version,
    pub tie: u64,
}

impl Ord for Stamp {
    fn cmp(&self, other: &Self) -> Ordering {
        self.version
            .total_cmp(other.version)
            .then(self.tie.cmp(&other.tie))
    }
}

impl PartialOrd for Stamp {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Stamp {
    /// Deletes win over every write of the same version ("removes every path written at
    /// or before v"); event ties never reach `u64::MAX`.
    pub const DELETE_TIE: u64 = u64::MAX;

    pub fn event_tie(hash: u64) -> u64 {
        hash.min(Self::DELETE_TIE - 1)
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Node {
    /// Newest non-object write at this path.
    pub reset: Option<Stamp>,
    /// The value written at `reset`, as compact JSON text; `None` when it was a removal
    /// (`null`). Text, not a `Value`: storing, loading and writing documents are then
    /// copies, and serde_json's output is canonical, so equal text means equal values.
    pub value: Option<Box<str>>,
    /// Newest object write at this path. Children never carry a newer stamp.
    pub obj: Option<Stamp>,
    pub children: BTreeMap<String, Node>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.reset.is_none() && self.obj.is_none() && self.children.is_empty()
    }

    /// Newest stamp at this node (children are never newer than `obj`).
    pub fn newest(&self) -> Option<Stamp> {
        self.reset.max(self.obj)
    }

    /// Applies `patch` at `stamp`; returns whether any register changed.
    pub fn apply(&mut self, patch: &Value, stamp: Stamp) -> bool {
        if self.reset.is_some_and(|reset| reset >= stamp) {
            return false;
        }
        match patch {
            Value::Object(members) => self.apply_members(members, stamp),
            other => {
                self.reset = Some(stamp);
                // Serializing a Value into a String cannot fail.
                self.value = (!other.is_null())
                    .then(|| serde_json::to_string(other).unwrap_or_default().into());
                self.prune_below(stamp);
                true
            }
        }
    }

    /// The object-patch case: marks this path an object at `stamp` and patches children.
    pub fn apply_members(&mut self, members: &Map<String, Value>, stamp: Stamp) -> bool {
        if self.reset.is_some_and(|reset| reset >= stamp) {
            return false;
        }
        let mut touched = false;
        if self.obj.is_none_or(|obj| obj < stamp) {
            self.obj = Some(stamp);
            touched = true;
        }
        for (name, member) in members {
            if let Some(child) = self.children.get_mut(name) {
                touched |= child.apply(member, stamp);
                if child.is_empty() {
                    self.children.remove(name);
                }
                continue;
            }
            let mut child = Node::default();
            if child.apply(member, stamp) {
                touched = true;
                self.children.insert(name.clone(), child);
            }
        }
        touched
    }

    /// Forgets every write older than `stamp` at and below this node, except this node's
    /// own reset (which is `stamp` itself).
    fn prune_below(&mut self, stamp: Stamp) {
        if self.obj.is_some_and(|obj| obj < stamp) {
            self.obj = None;
        }
        self.children.retain(|_, child| {
            child.prune_all_below(stamp);
            !child.is_empty()
        });
    }

    fn prune_all_below(&mut self, stamp: Stamp) {
        if self.reset.is_some_and(|reset| reset < stamp) {
            self.reset = None;
            self.value = None;
        }
        self.prune_below(stamp);
    }

    /// The visible value at this path, if any.
    pub fn visible(&self) -> Option<Value> {
        if self.shows_object() {
            return Some(Value::Object(self.visible_members()));
        }
        self.value
            .as_deref()
            .and_then(|text| serde_json::from_str(text).ok())
    }

    fn is_visible(&self) -> bool {
        self.shows_object() || self.value.is_some()
    }

    /// Appends the paths whose visible value differs between `old` and `new` (the same
    /// path in two versions of the tree): the smallest differing subtrees, as
    /// `diff::walk_member` finds them on built documents.
    pub fn diff_visible(
        path: &mut String,
        name: &str,
        old: Option<&Node>,
        new: Option<&Node>,
        out: &mut Vec<String>,
    ) {
        let old = old.filter(|node| node.is_visible());
        let new = new.filter(|node| node.is_visible());
        let length = path.len();
        match (old, new) {
            (None, None) => return,
            (Some(old), Some(new)) if old.shows_object() && new.shows_object() => {
                path.push('/');
                crate::pointer::push_escaped(path, name);
                let names: std::collections::BTreeSet<&String> =
                    old.children.keys().chain(new.children.keys()).collect();
                for child in names {
                    Node::diff_visible(
                        path,
                        child,
                        old.children.get(child),
                        new.children.get(child),
                        out,
                    );
                }
            }
            (Some(old), Some(new))
                if !old.shows_object() && !new.shows_object() && old.value == new.value =>
            {
                return;
            }
            _ => {
                path.push('/');
                crate::pointer::push_escaped(path, name);
                out.push(path.clone());
            }
        }
        path.truncate(length);
    }

    pub fn shows_object(&self) -> bool {
        match (self.obj, self.reset) {
            (Some(obj), Some(reset)) => obj > reset,
            (Some(_), None) => true,
            _ => false,
        }
    }

    /// Writes the visible object at this node as JSON, byte for byte what serde_json
    /// writes for [`Node::visible_members`], without building it.
    pub fn write_members_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        let mut first = true;
        for (name, child) in &self.children {
            if !child.is_visible() {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            // Writing strings and values into memory cannot fail.
            let _ = serde_json::to_writer(&mut *out, name);
            out.push(b':');
            if child.shows_object() {
                child.write_members_json(out);
            } else if let Some(value) = &child.value {
                out.extend_from_slice(value.as_bytes());
            }
        }
        out.push(b'}');
    }

    pub fn visible_members(&self) -> Map<String, Value> {
        self.children
            .iter()
            .filter_map(|(name, child)| child.visible().map(|value| (name.clone(), value)))
            .collect()
    }
}
